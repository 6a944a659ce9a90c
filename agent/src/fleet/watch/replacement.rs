//! Asking to be replaced, with a record that outlives a crash: the request
//! is written to watch.json before it is made, then made (and retried with
//! backoff) until it succeeds, never twice. Apart from the watcher's loop
//! because the apply unit uses the same bookkeeping after a failed apply,
//! where no watcher runs.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use super::Watcher;
use crate::config::AgentConfig;
use crate::fleet::terminate;
use crate::record::lifecycle::Event;
use crate::record::replacement::{Reason, ReplacementRequest};
use crate::record::state;
use crate::record::watch_state::{ReplacementRecord, RequestStatus, WatchState};
use crate::root::Root;

impl Watcher {
    /// Records the request (once), then makes it.
    pub(super) async fn want_replacement(
        &mut self,
        reason: Reason,
        desired: Option<String>,
        detail: String,
    ) {
        if self.record.replacement.is_some() {
            // Already recorded: finish it if it is still pending (after a crash).
            self.resume_pending().await;
            return;
        }
        let request = ReplacementRequest::new(
            &self.node_id,
            &self.applied.release.tag,
            &self.applied.release.commit,
            desired.as_deref(),
            reason,
            &detail,
        );
        self.record.replacement = Some(ReplacementRecord {
            request,
            status: RequestStatus::Pending,
            attempts: 0,
            last_error: None,
            last_attempt: None,
        });
        self.step(Event::ReplacementRequested);
        // Recorded before it is made: a crash from here on retries, never doubles.
        self.save();
        if std::env::var_os("DRIFTLESS_TEST_KILL_BEFORE_REQUEST").is_some() {
            // Test hook: die between recording the request and making it.
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        }
        self.resume_pending().await;
    }

    /// Makes a recorded request that has not succeeded yet, with backoff.
    pub(super) async fn resume_pending(&mut self) {
        let Some(record) = self.record.replacement.clone() else {
            return;
        };
        if record.status == RequestStatus::Done {
            return;
        }
        if record.request.reason == Reason::ReleaseChanged && self.channel_stale() {
            // Asked for a channel that has gone stale since: not retried on it.
            return;
        }
        let backoff = Duration::from_secs(5).saturating_mul(1 << record.attempts.min(6));
        if let Some(last) = record.last_attempt {
            let since = Timestamp::now().duration_since(last);
            if since.as_secs() >= 0 && (since.unsigned_abs()) < backoff {
                return;
            }
        }
        let result =
            terminate::request_replacement(&self.root_path, &self.config.replace, &record.request)
                .await;
        let Some(entry) = self.record.replacement.as_mut() else {
            return;
        };
        entry.attempts += 1;
        entry.last_attempt = Some(Timestamp::now());
        match result {
            Ok(()) => {
                entry.status = RequestStatus::Done;
                entry.last_error = None;
                tracing::warn!(
                    message_id = crate::events::REPLACEMENT_REQUESTED,
                    "asked to be replaced: {}",
                    record.request.detail
                );
                let _ =
                    sd_notify::notify(&[sd_notify::NotifyState::Status("replacement requested")]);
            }
            Err(e) => {
                tracing::error!(
                    "replacement request failed (attempt {}): {e}",
                    entry.attempts
                );
                entry.last_error = Some(e.to_string());
            }
        }
        self.save();
    }
}

/// After a failed apply with `failure.policy: replace`: records the request
/// in the watcher's state (once) and makes it, for the apply unit itself,
/// since no watcher runs on a node that failed to come up.
pub fn replace_after_failed_apply(
    root_path: &Path,
    config: &AgentConfig,
    node_id: &str,
    detail: &str,
) -> anyhow::Result<()> {
    let root = Root::open(root_path)?;
    // The release the node was meant to be: from state when the apply got
    // that far, else from the config.
    let (pinned, pinned_commit) = match state::load(&root)? {
        Some(applied) => (applied.release.tag, applied.release.commit),
        None => (
            config
                .release
                .tag
                .as_ref()
                .map_or("unknown", |t| t.as_str())
                .to_owned(),
            String::new(),
        ),
    };
    terminate::validate(&config.replace).map_err(anyhow::Error::msg)?;
    let mut record = WatchState::load(&root)?;
    if record
        .replacement
        .as_ref()
        .is_some_and(|r| r.status == RequestStatus::Done)
    {
        return Ok(());
    }
    let attempts = record.replacement.as_ref().map_or(0, |r| r.attempts);
    let request = record
        .replacement
        .as_ref()
        .map(|r| r.request.clone())
        .unwrap_or_else(|| {
            ReplacementRequest::new(
                node_id,
                &pinned,
                &pinned_commit,
                None,
                Reason::ApplyFailed,
                detail,
            )
        });
    record.replacement = Some(ReplacementRecord {
        request: request.clone(),
        status: RequestStatus::Pending,
        attempts,
        last_error: None,
        last_attempt: None,
    });
    record.save(&root)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(terminate::request_replacement(
        root_path,
        &config.replace,
        &request,
    ));
    if let Some(entry) = record.replacement.as_mut() {
        entry.attempts += 1;
        entry.last_attempt = Some(Timestamp::now());
        match &result {
            Ok(()) => entry.status = RequestStatus::Done,
            Err(e) => entry.last_error = Some(e.to_string()),
        }
    }
    record.save(&root)?;
    result?;
    tracing::warn!(
        message_id = crate::events::REPLACEMENT_REQUESTED,
        "asked to be replaced: {}",
        request.detail
    );
    Ok(())
}
