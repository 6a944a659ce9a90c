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

use std::fmt;
use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Child, ChildStderr, ExitStatus, Stdio};
use std::time::Duration;

use crate::config::{ReplaceAction, ReplaceSettings};
use crate::error::clip;
use crate::record::replacement::{MAX_SUMMARY_CHARS, ReplacementRequest};
use crate::root::{Root, hex};
use crate::types::NodePath;

/// The `PATH` of every command run here.
pub const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Where `systemctl` is looked for, in order.
pub const SYSTEMCTL_CANDIDATES: [&str; 2] = ["/usr/bin/systemctl", "/bin/systemctl"];
/// Webhook secret files larger than this are refused.
pub const MAX_SECRET_LEN: u64 = 64 * 1024;
/// Webhook CA bundles larger than this are refused.
pub const MAX_CA_LEN: u64 = 1024 * 1024;
/// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Driftless-Signature";
/// Header carrying [`ReplacementRequest::request_id`].
pub const REQUEST_ID_HEADER: &str = "X-Driftless-Request-Id";

/// Most stderr bytes kept from a command (only its first line is reported).
const STDERR_KEEP: usize = 8 * 1024;
/// Most characters of a command's stderr line or a receiver's answer quoted
/// in an error.
const QUOTE_CHARS: usize = 300;
/// Most bytes of a webhook receiver's error answer read.
const ANSWER_KEEP: usize = 4 * 1024;
/// Longest pause between two looks at a running command.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long a killed command is waited for before it is left to init.
const REAP_WAIT: Duration = Duration::from_millis(500);

/// The webhook signature header's value: `sha256=` and the lowercase hex
/// HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

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

/// How a command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ended unsuccessfully; `stderr` is the first non-empty line it
    /// wrote there, if any.
    Exit {
        /// Its exit status.
        status: ExitStatus,
        /// First line of its stderr.
        stderr: Option<String>,
    },
    /// It was still running at the time limit and was killed.
    Timeout(Duration),
    /// Waiting for it failed.
    Wait(std::io::Error),
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::Spawn(e) => write!(f, "cannot be started: {e}"),
            CommandFailure::Exit { status, stderr } => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => write!(f, "exited with status {code}")?,
                    (None, Some(signal)) => write!(f, "was killed by signal {signal}")?,
                    (None, None) => write!(f, "ended with {status}")?,
                }
                match stderr {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
            CommandFailure::Timeout(limit) => {
                write!(f, "did not finish within {}; killed", human(*limit))
            }
            CommandFailure::Wait(e) => write!(f, "cannot be waited for: {e}"),
        }
    }
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

/// Checks the settings (at startup, and again before each request). The
/// message names the `replace.` key at fault.
pub fn validate(settings: &ReplaceSettings) -> Result<(), String> {
    if settings.timeout.0.is_zero() {
        return Err("replace.timeout must be longer than zero".into());
    }
    if !settings.drain.is_empty() {
        check_argv("replace.drain", &settings.drain)?;
    }
    let action = action_name(settings.action);
    let unused = |key: &str, hint: &str| {
        Err(format!(
            "replace.{key} is set but replace.action is {action} ({hint})"
        ))
    };
    match settings.action {
        ReplaceAction::Poweroff | ReplaceAction::Webhook if !settings.command.is_empty() => {
            return unused("command", "it is only used with action: exec");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.url.is_some() => {
            return unused("url", "it is only used with action: webhook");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.secret_file.is_some() => {
            return unused("secret_file", "it is only used with action: webhook");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.ca_file.is_some() => {
            return unused("ca_file", "it is only used with action: webhook");
        }
        _ => {}
    }
    match settings.action {
        ReplaceAction::Poweroff => Ok(()),
        ReplaceAction::Exec => {
            if settings.command.is_empty() {
                return Err(
                    "replace.action is exec but replace.command is empty (give the program's absolute path and its arguments)"
                        .into(),
                );
            }
            check_argv("replace.command", &settings.command)
        }
        ReplaceAction::Webhook => {
            let Some(url) = &settings.url else {
                return Err("replace.action is webhook but replace.url is not set".into());
            };
            let https = check_url(url)?;
            if settings.secret_file.is_none() {
                return Err(
                    "replace.action is webhook but replace.secret_file is not set (requests must be signed)"
                        .into(),
                );
            }
            if settings.ca_file.is_some() && !https {
                return Err(format!(
                    "replace.ca_file is set but replace.url {url:?} is not https://"
                ));
            }
            Ok(())
        }
    }
}

fn check_argv(key: &str, argv: &[String]) -> Result<(), String> {
    let program = argv.first().map(String::as_str).unwrap_or("");
    if !program.starts_with('/') {
        return Err(format!(
            "{key}: the program {program:?} must be an absolute path"
        ));
    }
    if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("{key}: argument {arg:?} contains a NUL byte"));
    }
    Ok(())
}

/// Checks a webhook URL; true when it is `https://`.
fn check_url(text: &str) -> Result<bool, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("replace.url {text:?} is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "replace.url {:?} must not contain credentials (requests are signed with replace.secret_file)",
            redact(&url)
        ));
    }
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(true),
        "http" if is_loopback(&url) => Ok(false),
        "http" => Err(format!(
            "replace.url {text:?} must be https:// (http:// is only accepted for 127.0.0.1 and localhost)"
        )),
        _ => Err(format!("replace.url {text:?} must be an https:// URL")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
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

/// A webhook request ready to send.
struct Webhook {
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
    signature: String,
    request_id: String,
}

impl Webhook {
    fn prepare(
        root: &Path,
        settings: &ReplaceSettings,
        request: &ReplacementRequest,
    ) -> Result<Self, TerminateError> {
        // `validate` has checked both are set.
        let url = settings.url.clone().unwrap_or_default();
        let secret_file = settings
            .secret_file
            .as_ref()
            .ok_or_else(|| TerminateError::Invalid("replace.secret_file is not set".into()))?;
        let root = Root::open(root).map_err(|e| TerminateError::File {
            what: "secret_file",
            path: secret_file.to_string(),
            reason: e.to_string(),
        })?;
        let secret = read_secret(&root, secret_file)?;
        let body = serde_json::to_vec(request).map_err(|e| TerminateError::Http {
            url: url.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let signature = signature(&secret, &body);
        let limit = settings.timeout.0;
        let mut builder = crate::source::tls::client_builder()
            .user_agent(concat!("driftless/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limit)
            .timeout(limit);
        if let Some(ca_file) = &settings.ca_file {
            builder = builder.tls_certs_only(read_ca(&root, ca_file)?);
        }
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| TerminateError::Invalid(e.to_string()))?;
        if is_loopback(&parsed) {
            // A receiver on this node is never reached through a proxy.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| TerminateError::Http {
            url: url.clone(),
            reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Self {
            client,
            url,
            body,
            signature,
            request_id: request.request_id.clone(),
        })
    }

    async fn send(self, limit: Duration) -> Result<(), TerminateError> {
        let Webhook {
            client,
            url,
            body,
            signature,
            request_id,
        } = self;
        let failed = |e: reqwest::Error| TerminateError::Http {
            url: url.clone(),
            reason: if e.is_timeout() {
                format!("no answer within {}", human(limit))
            } else {
                error_chain(&e.without_url())
            },
        };
        let mut response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(REQUEST_ID_HEADER, request_id)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The first line of a plain-text answer helps whoever reads the log
        // (HTML is left out); a receiver that does not finish it in time
        // only loses that.
        let plain = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/plain")
            });
        let mut answer = Vec::new();
        while plain && answer.len() < ANSWER_KEEP {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        answer.truncate(ANSWER_KEEP);
        Err(TerminateError::Status {
            url,
            status: status.as_u16(),
            answer: first_line(&answer).unwrap_or_default(),
        })
    }
}

fn read_secret(root: &Root, path: &NodePath) -> Result<Vec<u8>, TerminateError> {
    let bad = |reason: String| TerminateError::File {
        what: "secret_file",
        path: path.to_string(),
        reason,
    };
    // RootError names the path and the system's reason, never the content.
    let mut secret = root.read(path, MAX_SECRET_LEN).map_err(|e| bad(e.reason))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(bad("the secret is empty".into()));
    }
    Ok(secret)
}

fn read_ca(root: &Root, path: &NodePath) -> Result<Vec<reqwest::Certificate>, TerminateError> {
    read_ca_bundle(root, path).map_err(|reason| TerminateError::File {
        what: "ca_file",
        path: path.to_string(),
        reason,
    })
}

/// Reads a PEM CA bundle under the root: at least one certificate, or why not.
pub(crate) fn read_ca_bundle(
    root: &Root,
    path: &NodePath,
) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = root.read(path, MAX_CA_LEN).map_err(|e| e.reason)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM CA bundle: {}", error_chain(&e)))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// An error and its sources on one short line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    clip(&parts.join(": "), 2 * QUOTE_CHARS)
}

/// Runs `argv` (absolute program) with a cleared environment plus `env`,
/// killing its process group at `limit`.
async fn run_command(
    argv: &[String],
    env: &[(&'static str, String)],
    limit: Duration,
) -> Result<(), CommandFailure> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        CommandFailure::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ))
    })?;
    let child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(CommandFailure::Spawn)?;
    let mut running = Running {
        child,
        finished: false,
    };
    let mut stderr = Capture::new(running.child.stderr.take());
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        stderr.pump();
        match running.child.try_wait() {
            Ok(Some(status)) => {
                running.finished = true;
                stderr.pump();
                return if status.success() {
                    Ok(())
                } else {
                    Err(CommandFailure::Exit {
                        status,
                        stderr: first_line(&stderr.kept),
                    })
                };
            }
            Ok(None) => {}
            Err(e) => return Err(CommandFailure::Wait(e)),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            running.kill();
            return Err(CommandFailure::Timeout(limit));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// A started command; dropped unfinished (timeout, error, or the request
/// future dropped), its process group is killed.
struct Running {
    child: Child,
    finished: bool,
}

impl Running {
    fn kill(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        // The child leads its own group (`process_group(0)`) and is not yet
        // reaped, so the group id cannot have been reused.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        // Reap it; a process stuck in the kernel is left to init.
        let until = std::time::Instant::now() + REAP_WAIT;
        while std::time::Instant::now() < until {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        tracing::warn!("command {} did not end after SIGKILL", self.child.id());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command's stderr, read without blocking; the first [`STDERR_KEEP`]
/// bytes are kept, the rest discarded (so the command never blocks on a
/// full pipe while it is watched).
struct Capture {
    pipe: Option<std::fs::File>,
    kept: Vec<u8>,
}

impl Capture {
    fn new(stderr: Option<ChildStderr>) -> Self {
        let pipe = stderr.and_then(|s| {
            let fd = std::os::fd::OwnedFd::from(s);
            let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
            Some(std::fs::File::from(fd))
        });
        Self {
            pipe,
            kept: Vec::new(),
        }
    }

    /// Reads what is there now (a bounded number of reads).
    fn pump(&mut self) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }
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

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn command_failures_read_well() {
        use std::os::unix::process::ExitStatusExt as _;
        let exit = CommandFailure::Exit {
            status: ExitStatus::from_raw(3 << 8),
            stderr: Some("no route to the API".into()),
        };
        assert_eq!(
            exit.to_string(),
            "exited with status 3: no route to the API"
        );
        let killed = CommandFailure::Exit {
            status: ExitStatus::from_raw(9),
            stderr: None,
        };
        assert_eq!(killed.to_string(), "was killed by signal 9");
        assert_eq!(
            CommandFailure::Timeout(Duration::from_millis(1500)).to_string(),
            "did not finish within 1s 500ms; killed"
        );
    }
}
