//! Asking to be replaced. A locked node never changes, so when the fleet's
//! desired release moves on, or the node drifts or cannot be brought up, it
//! asks whatever runs the fleet for a fresh node, in one of three ways
//! ([`ReplaceAction`]):
//!
//! * `poweroff`: `systemctl poweroff --no-block` (with a cloud's "shutdown
//!   means terminate" or an autoscaling health check, that replaces it);
//! * `exec`: a command (e.g. a cloud CLI marking the instance unhealthy),
//!   given the one-line reason as its last argument;
//! * `webhook`: a JSON [`ReplacementRequest`] POSTed to a URL and signed with
//!   HMAC-SHA256 (`X-Driftless-Signature: sha256=HEX`).
//!
//! Order of a request ([`request_replacement`]):
//!
//! 1. the settings are checked ([`validate`]), and everything the action
//!    needs is prepared (webhook secret, CA bundle, HTTP client): a request
//!    that cannot be made fails here, *before* the node is drained;
//! 2. the optional `drain` command runs, within `timeout`. A drain that
//!    fails or times out is logged as a warning and does **not** stop the
//!    request, nor change its result: the node must go either way, and what
//!    a caller does next (retry, mark the node failed) depends only on
//!    whether the replacement was requested. Drain commands should therefore
//!    be idempotent, since a retried request drains again;
//! 3. the action runs, within `timeout` again; its failure is the error.
//!
//! Nothing is retried here; the caller retries, and a webhook receiver
//! deduplicates by [`ReplacementRequest::request_id`], which is the same for
//! every request about the same node, release and reason.
//!
//! Commands (`drain`, `exec`, `systemctl`) are host programs, run with an
//! absolute path, stdin from `/dev/null`, working directory `/`, and a
//! cleared environment: `PATH=/usr/sbin:/usr/bin:/sbin:/bin` and the
//! `DRIFTLESS_*` variables of [`command_env`]. Each runs in its own process
//! group; on timeout, or when the request future is dropped, the whole group
//! is killed (SIGKILL), so a shell script's children do not outlive it.
//!
//! The webhook secret is read from `secret_file` beneath the root, never
//! logged and never part of an error; with `ca_file`, only that CA bundle is
//! trusted. Redirects are not followed; any status but 2xx is an error.
//!
//! This file holds the request itself, its order of steps and its errors;
//! the settings checks ([`validate`]), the running of commands and the
//! webhook each have a file of their own.

use std::path::Path;
use std::time::Duration;

use crate::config::{ReplaceAction, ReplaceSettings};
use crate::error::clip;
use crate::record::replacement::{MAX_SUMMARY_CHARS, ReplacementRequest};

mod command;
mod validate;
mod webhook;

pub use command::{COMMAND_PATH, CommandFailure};
pub use validate::validate;
pub use webhook::{MAX_CA_LEN, MAX_SECRET_LEN, REQUEST_ID_HEADER, SIGNATURE_HEADER, signature};
pub(crate) use webhook::{error_chain, read_ca_bundle};

use command::run_command;
use webhook::Webhook;

/// Where `systemctl` is looked for, in order.
pub const SYSTEMCTL_CANDIDATES: [&str; 2] = ["/usr/bin/systemctl", "/bin/systemctl"];

/// Most characters of a command's stderr line or a receiver's answer quoted
/// in an error.
const QUOTE_CHARS: usize = 300;

/// The environment of the `drain` and `exec` commands, besides `PATH`:
/// `DRIFTLESS_NODE_ID`, `DRIFTLESS_REASON` (`release-changed`, ...),
/// `DRIFTLESS_PINNED` (tag), `DRIFTLESS_PINNED_COMMIT`, `DRIFTLESS_DESIRED`
/// (tag, empty when unknown), `DRIFTLESS_DETAIL` and `DRIFTLESS_REQUEST_ID`.
pub fn command_env(request: &ReplacementRequest) -> Vec<(&'static str, String)> {
    vec![
        ("DRIFTLESS_NODE_ID", request.node_id.clone()),
        ("DRIFTLESS_REASON", request.reason.as_str().to_owned()),
        ("DRIFTLESS_PINNED", request.pinned.clone()),
        ("DRIFTLESS_PINNED_COMMIT", request.pinned_commit.clone()),
        (
            "DRIFTLESS_DESIRED",
            request.desired.clone().unwrap_or_default(),
        ),
        ("DRIFTLESS_DETAIL", clip(&request.detail, MAX_SUMMARY_CHARS)),
        ("DRIFTLESS_REQUEST_ID", request.request_id.clone()),
    ]
}

/// The command line of `poweroff`, given where `systemctl` is.
pub fn poweroff_command(systemctl: &str) -> Vec<String> {
    vec![
        systemctl.to_owned(),
        "poweroff".to_owned(),
        "--no-block".to_owned(),
    ]
}

/// The first of [`SYSTEMCTL_CANDIDATES`] for which `exists` holds; the first
/// candidate when none does (running it then fails with "not found").
pub fn find_systemctl(exists: impl Fn(&Path) -> bool) -> &'static str {
    SYSTEMCTL_CANDIDATES
        .into_iter()
        .find(|c| exists(Path::new(c)))
        .unwrap_or(SYSTEMCTL_CANDIDATES[0])
}

/// A replacement that could not be requested. Messages are one line, name
/// the action and what failed, and never contain the webhook secret.
#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    /// The settings are invalid (see [`validate`]).
    #[error("replace: {0}")]
    Invalid(String),
    /// `poweroff` was asked while working on a root other than `/`: that
    /// would power off the host, not the node being worked on.
    #[error(
        "replace by poweroff: refusing to power off this host while working on root {0} (not /)"
    )]
    NotHostRoot(String),
    /// The `exec` command, or `systemctl` for `poweroff`, failed.
    #[error("replace by {}: {program} {failure}", action_name(*.action))]
    Command {
        /// The action.
        action: ReplaceAction,
        /// The program run.
        program: String,
        /// How it failed.
        failure: CommandFailure,
    },
    /// The webhook's secret or CA file is unusable.
    #[error("replace by webhook: {what} {path}: {reason}")]
    File {
        /// `secret_file` or `ca_file`.
        what: &'static str,
        /// The node path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The webhook request did not get an answer (connection, TLS, timeout).
    #[error("replace by webhook: POST {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The webhook receiver answered with a status other than 2xx.
    #[error("replace by webhook: POST {url} answered {}{}", status_text(*.status), quote(.answer))]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The first line of a plain-text answer; empty otherwise.
        answer: String,
    },
}

/// `500 Internal Server Error`.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn quote(answer: &str) -> String {
    if answer.is_empty() {
        String::new()
    } else {
        format!(": {answer}")
    }
}

/// The action's name as written in the config.
pub fn action_name(action: ReplaceAction) -> &'static str {
    match action {
        ReplaceAction::Poweroff => "poweroff",
        ReplaceAction::Exec => "exec",
        ReplaceAction::Webhook => "webhook",
    }
}

/// Asks for this node to be replaced, as `settings` say (see the module
/// documentation for the order of steps). `root` is where the node's files
/// are (`secret_file` and `ca_file` are read beneath it); `poweroff` is
/// refused unless it is `/`.
///
/// `Ok(())` means the request was made: `systemctl` accepted the power-off,
/// the command exited 0, or the receiver answered 2xx. A failed drain is
/// logged, never returned.
pub async fn request_replacement(
    root: &Path,
    settings: &ReplaceSettings,
    request: &ReplacementRequest,
) -> Result<(), TerminateError> {
    validate(settings).map_err(TerminateError::Invalid)?;
    let limit = settings.timeout.0;
    let summary = request.summary();
    let env = command_env(request);
    let prepared = match settings.action {
        ReplaceAction::Poweroff => {
            check_host_root(root)?;
            Prepared::Command(poweroff_command(find_systemctl(Path::exists)))
        }
        ReplaceAction::Exec => {
            let mut argv = settings.command.clone();
            argv.push(summary.clone());
            Prepared::Command(argv)
        }
        ReplaceAction::Webhook => Prepared::Webhook(Webhook::prepare(root, settings, request)?),
    };
    tracing::info!(
        request_id = %request.request_id,
        "asking to be replaced by {}: {summary}",
        action_name(settings.action)
    );
    if let Some(drain) = settings.drain.first() {
        match run_command(&settings.drain, &env, limit).await {
            Ok(()) => tracing::info!("drain {drain} finished"),
            Err(failure) => {
                tracing::warn!("drain {drain} {failure}; asking to be replaced anyway")
            }
        }
    }
    match prepared {
        Prepared::Command(argv) => {
            run_command(&argv, &env, limit)
                .await
                .map_err(|failure| TerminateError::Command {
                    action: settings.action,
                    program: argv.first().cloned().unwrap_or_default(),
                    failure,
                })?
        }
        Prepared::Webhook(webhook) => webhook.send(limit).await?,
    }
    tracing::info!(
        request_id = %request.request_id,
        "replacement requested by {}",
        action_name(settings.action)
    );
    Ok(())
}

/// Refuses a `root` other than the host's `/`.
pub fn check_host_root(root: &Path) -> Result<(), TerminateError> {
    match std::fs::canonicalize(root) {
        Ok(real) if real == Path::new("/") => Ok(()),
        _ => Err(TerminateError::NotHostRoot(root.display().to_string())),
    }
}

enum Prepared {
    Command(Vec<String>),
    Webhook(Webhook),
}

/// The first non-empty line of `bytes`, as one clean line of at most
/// [`QUOTE_CHARS`] characters.
fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| clip(l, QUOTE_CHARS))
}

/// A duration as people write it (`2s`, `1m 30s`, `250ms`).
fn human(d: Duration) -> String {
    match jiff::SignedDuration::try_from(d) {
        Ok(s) => format!("{s:#}"),
        Err(_) => format!("{d:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poweroff_is_systemctl_without_blocking() {
        assert_eq!(
            poweroff_command("/usr/bin/systemctl"),
            ["/usr/bin/systemctl", "poweroff", "--no-block"]
        );
        assert_eq!(find_systemctl(|_| true), "/usr/bin/systemctl");
        assert_eq!(
            find_systemctl(|p| p == Path::new("/bin/systemctl")),
            "/bin/systemctl"
        );
        assert_eq!(find_systemctl(|_| false), "/usr/bin/systemctl");
    }

    #[test]
    fn poweroff_is_refused_beneath_another_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = check_host_root(dir.path()).expect_err("not the host root");
        assert!(err.to_string().contains("refusing to power off"), "{err}");
        assert!(check_host_root(Path::new("/")).is_ok());
    }
}
