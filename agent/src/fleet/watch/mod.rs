//! The watcher: a small long-running daemon (`driftless watch`, systemd
//! Type=notify) that polls the fleet's signed channel, watches the node for
//! drift, and asks for the node to be replaced when the desired release
//! moves away from the pinned one, when the node drifts (policy `replace`),
//! or when its apply failed (policy `replace`). It never changes the node.
//!
//! Its own record is `/var/lib/driftless/watch.json` (the apply record,
//! `state.json`, is locked): the last channel tip it accepted, so the channel
//! can only move forward; the last poll; any refusal; drift seen; and the
//! replacement request, written before the request is made so that a restart
//! never asks twice but retries a request that failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, DriftPolicy, FailurePolicy};
use crate::fleet::coordinate::{Coordinator, Slot, SlotAnswer};
use crate::fleet::terminate;
use crate::record::detect::Detector;
use crate::record::drift::Difference;
use crate::record::replacement::{Reason, ReplacementRequest};
use crate::record::state::{self, State, Status};
use crate::record::watch_state::{
    DriftRecord, Refusal, ReplacementRecord, RequestStatus, RolloutStatus, WatchState,
};
use crate::release::channel::{self, ChannelState};
use crate::root::Root;
use crate::source::poll::RefPoller;

/// Feeds systemd's watchdog (`WATCHDOG=1`) from a task of its own, at half
/// the interval systemd asks for (`WATCHDOG_USEC`), when it asks. The main
/// loop may wait minutes on a fetch or a replacement request, each bounded
/// by its own deadline; the watchdog is there to catch a process that no
/// longer runs at all (a runtime stuck in a blocking call, a deadlock),
/// which also stops this task, so it can be short (2 min in the unit).
fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = (sd_notify::watchdog_enabled()? / 2).max(Duration::from_millis(1));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }))
}

/// A pause of `base` ±10 %, so a fleet does not poll in step.
fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    base.mul_f64(0.9 + f64::from(byte[0]) / 255.0 * 0.2)
}

/// What the watcher needs to run.
pub struct Watcher {
    root_path: PathBuf,
    root: Root,
    config: AgentConfig,
    applied: State,
    record: WatchState,
    /// What was last written, and when: an unchanged record (but for the
    /// poll time) is rewritten at most every [`REWRITE_UNCHANGED`].
    written: Option<(WatchState, std::time::Instant)>,
    poller: RefPoller,
    node_id: String,
    /// The agent config's path, for the evaluation child.
    config_path: PathBuf,
    /// The program that evaluates a channel tip: this one.
    evaluator: PathBuf,
    /// The rollout coordinator, when the config names one.
    coordinator: Option<Arc<Coordinator>>,
    /// The rollout slot this process holds, and the task renewing it.
    slot: Option<(Slot, tokio::task::JoinHandle<()>)>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((_, task)) = self.slot.take() {
            task.abort();
        }
    }
}

/// How stale `last_poll` in watch.json (and the metrics) may get when nothing
/// else changes: a quiet node does not rewrite and sync a file every poll.
const REWRITE_UNCHANGED: Duration = Duration::from_secs(600);

impl Watcher {
    /// Prepares the watcher for the node under `root_path`.
    pub fn new(
        root_path: &Path,
        config_path: &Path,
        config: AgentConfig,
        node_id: String,
    ) -> anyhow::Result<Self> {
        let root = Root::open(root_path)?;
        let applied = state::load(&root)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no release has been applied under {}; run driftless apply first",
                root_path.display()
            )
        })?;
        terminate::validate(&config.replace).map_err(anyhow::Error::msg)?;
        let record = WatchState::load(&root)?;
        let poller = crate::source::poll::poller_for(
            root_path,
            &config,
            config.fetch.io_timeout.0 + config.fetch.connect_timeout.0,
        )?;
        let coordinator = Coordinator::from_config(root_path, &config.rollout)?.map(Arc::new);
        Ok(Self {
            root_path: root_path.to_path_buf(),
            root,
            config,
            applied,
            record,
            written: None,
            poller,
            node_id,
            config_path: config_path.to_path_buf(),
            evaluator: this_program(),
            coordinator,
            slot: None,
        })
    }

    /// Runs until SIGTERM or SIGINT. Between polls and events nothing runs.
    pub async fn run(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        // From the start: retrying a pending request below may take longer
        // than the watchdog interval.
        let watchdog = spawn_watchdog();
        let (drift_tx, mut drift_rx) = tokio::sync::mpsc::channel::<Vec<Difference>>(16);
        self.start_detector(drift_tx)?;
        if self.applied.status != Status::Applied {
            let reason = match &self.applied.status {
                Status::Failed { stage, reason } => format!("apply failed at {stage}: {reason}"),
                _ => "apply did not finish".to_owned(),
            };
            if self.config.failure.policy == FailurePolicy::Replace {
                self.want_replacement(Reason::ApplyFailed, None, reason)
                    .await;
            }
        }
        self.resume_pending().await;
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("watching"),
        ]);
        let mut next_poll = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = tokio::time::sleep_until(next_poll) => {
                    self.poll_once().await;
                    next_poll = tokio::time::Instant::now() + jittered(self.config.channel.poll_interval.0);
                    self.resume_pending().await;
                }
                Some(differences) = drift_rx.recv() => self.on_drift(differences).await,
            }
        }
        if let Some(task) = watchdog {
            task.abort();
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopping");
        Ok(())
    }

    fn start_detector(&self, tx: tokio::sync::mpsc::Sender<Vec<Difference>>) -> anyhow::Result<()> {
        let root = Root::open(&self.root_path)?;
        let mut detector = Detector::new(
            root,
            self.applied.clone(),
            self.config.drift.rescan_interval.0,
        )?;
        std::thread::Builder::new()
            .name("drift".into())
            .spawn(move || {
                let first = detector.rescan();
                if !first.is_empty() && tx.blocking_send(first).is_err() {
                    return;
                }
                loop {
                    match detector.poll(Duration::from_secs(3600)) {
                        Ok(found) if found.is_empty() => {}
                        Ok(found) => {
                            if tx.blocking_send(found).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!("{e}; drift detection stopped");
                            return;
                        }
                    }
                }
            })?;
        Ok(())
    }

    async fn on_drift(&mut self, differences: Vec<Difference>) {
        for d in &differences {
            tracing::warn!(message_id = crate::events::DRIFT, "drift: {d}");
            let line = d.to_string();
            if !self.record.drift.iter().any(|r| r.line == line) {
                self.record.drift.push(DriftRecord {
                    line,
                    first_seen: Timestamp::now(),
                });
            }
        }
        self.save();
        if self.config.drift.policy == DriftPolicy::Replace {
            let detail = differences
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            self.want_replacement(Reason::Drift, None, detail).await;
        }
    }

    /// One poll: one cheap request for the channel ref; only when its tip
    /// changed, a fetch of the new commits, their verification, and the
    /// desired release's verification.
    pub async fn poll_once(&mut self) {
        let channel_ref = self.config.channel_ref();
        let answer = self.poller.ls_ref(&channel_ref).await;
        self.record.last_poll = Some(Timestamp::now());
        let tip = match answer {
            Ok(answer) => match answer.oid {
                Some(oid) => oid,
                None => {
                    self.poll_failed(format!("the source has no {channel_ref}"));
                    return;
                }
            },
            Err(e) => {
                self.poll_failed(e.to_string());
                return;
            }
        };
        self.record.last_poll_error = None;
        if self.record.channel.as_ref().is_some_and(|c| c.tip == tip) {
            // Back on the accepted tip (a refused force-push was undone).
            self.record.refusal = None;
        }
        let known = self.record.channel.as_ref().is_some_and(|c| c.tip == tip)
            || self.record.refusal.as_ref().is_some_and(|r| r.tip == tip);
        if !known {
            self.evaluate_tip().await;
        }
        self.save();
        self.decide().await;
    }

    fn poll_failed(&mut self, error: String) {
        tracing::warn!("channel poll failed: {error}");
        self.record.poll_errors += 1;
        self.record.last_poll_error = Some(error);
        self.save();
    }

    async fn evaluate_tip(&mut self) {
        let last_seen = self.record.channel.as_ref().map(|c| c.tip.clone());
        match self.evaluate_in_child(last_seen.as_deref()).await {
            Verdict::Accepted {
                state,
                release_commit,
            } => {
                tracing::info!(
                    message_id = crate::events::CHANNEL_MOVED,
                    "channel moved to {} (signed by {}): release {}{}",
                    state.tip,
                    state.signer,
                    state.file.release.as_str(),
                    if state.file.hold { ", on hold" } else { "" }
                );
                self.record.accept(&state, Some(release_commit));
            }
            Verdict::Refused { tip, reason } => {
                tracing::error!(message_id = crate::events::CHANNEL_REFUSED, "{reason}");
                self.record.refusal = Some(Refusal {
                    tip,
                    reason,
                    at: Timestamp::now(),
                });
            }
            // A network or cache failure says nothing about the tip: retried next poll.
            Verdict::Failed { reason } => self.poll_failed(reason),
        }
    }

    /// Evaluates the channel's new tip in a child process
    /// (`driftless evaluate-channel`): fetching and verifying with libgit2
    /// (and its OpenSSL) happens there and its memory goes with it, so the
    /// watcher stays small for the node's whole life, and the hostile
    /// input (a pack from the network) is parsed outside the long-lived
    /// process.
    async fn evaluate_in_child(&self, last_seen: Option<&str>) -> Verdict {
        let failed = |reason: String| Verdict::Failed { reason };
        let mut cmd = tokio::process::Command::new(&self.evaluator);
        cmd.arg("evaluate-channel")
            .arg("--root")
            .arg(&self.root_path)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        if let Some(tip) = last_seen {
            cmd.arg("--last-seen").arg(tip);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return failed(format!(
                    "cannot start the channel evaluation ({}): {e}",
                    self.evaluator.display()
                ));
            }
        };
        // The fetches inside keep their own deadline; this only bounds a child that hangs.
        let limit = self.config.fetch.deadline.0.saturating_mul(2) + Duration::from_secs(60);
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Err(_) => {
                return failed(format!(
                    "the channel evaluation did not finish within {}s; it was stopped",
                    limit.as_secs()
                ));
            }
            Ok(Err(e)) => return failed(format!("the channel evaluation failed: {e}")),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            return failed(format!(
                "the channel evaluation ended with {} (its log above says why)",
                output.status
            ));
        }
        let line = output
            .stdout
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        serde_json::from_slice(line).unwrap_or_else(|e| {
            failed(format!(
                "the channel evaluation answered something unreadable: {e}"
            ))
        })
    }

    /// Asks for replacement when the accepted channel names another
    /// release and the rollout lets this node go: the policy (canary,
    /// waves, windows, hold, failures) and, with a coordinator, a slot of
    /// its group. With the coordinator out of reach it fails closed: it
    /// does not ask, and tries again at the next poll.
    async fn decide(&mut self) {
        self.report_apply().await;
        let Some(seen) = self.record.channel.clone() else {
            return;
        };
        let pinned = self.applied.release.clone();
        let same = seen.release_commit.as_deref() == Some(pinned.commit.as_str());
        if same {
            self.record.waiting = None;
            self.record.rollout = None;
            self.withdraw_pending_request().await;
            return;
        }
        if self.already_going() {
            // Asked (or asking) already: finish that, keep the slot alive.
            self.keep_own_slot(&seen.release).await;
            let detail = format!("{} -> {}", pinned.tag, seen.release);
            self.want_replacement(Reason::ReleaseChanged, Some(seen.release.clone()), detail)
                .await;
            return;
        }
        let max_failures = seen.file.max_failures.unwrap_or(1);
        let mut status = RolloutStatus {
            release: seen.release.clone(),
            state: String::new(),
            failures: seen.failures.count(&seen.release),
            max_failures,
            in_flight: None,
            max_in_flight: self.coordinator.as_ref().map(|c| c.max_in_flight()),
        };
        if let Some(coordinator) = self.coordinator.clone() {
            match coordinator.failures(&seen.release).await {
                Ok(n) => status.failures = status.failures.saturating_add(n),
                Err(e) => return self.unreachable(status, &e),
            }
        }
        // The rollout decides when: canary, waves, windows, hold, failures.
        let decision = crate::fleet::rollout::decide(
            &self.node_id,
            &seen.file,
            seen.committed_at,
            Timestamp::now(),
            status.failures,
        );
        status.state = decision.name().to_owned();
        if decision != crate::fleet::rollout::Decision::Go {
            return self.wait(status, decision.to_string());
        }
        if let Some(coordinator) = self.coordinator.clone() {
            match coordinator
                .take_slot(&self.node_id, &pinned.tag, &seen.release)
                .await
            {
                Ok(SlotAnswer::Held(slot)) => {
                    tracing::info!(
                        "took rollout slot {} of group {}",
                        slot.key,
                        self.config.rollout.group
                    );
                    self.hold_slot(&coordinator, slot);
                }
                Ok(SlotAnswer::Full {
                    in_flight,
                    max_in_flight,
                }) => {
                    status.state = "waiting-for-slot".into();
                    status.in_flight = Some(in_flight);
                    return self.wait(
                        status,
                        format!(
                            "waiting for a rollout slot ({in_flight} of {max_in_flight} in flight)"
                        ),
                    );
                }
                Err(e) => return self.unreachable(status, &e),
            }
        }
        self.record.waiting = None;
        self.record.rollout = Some(status);
        let detail = format!("{} -> {}", pinned.tag, seen.release);
        self.want_replacement(Reason::ReleaseChanged, Some(seen.release.clone()), detail)
            .await;
    }

    /// The channel names this node's own release again (a rollback) before
    /// its request to be replaced for another release went through: the
    /// request is no longer wanted, so it is dropped, with its rollout
    /// slot. A request already made cannot be taken back.
    async fn withdraw_pending_request(&mut self) {
        let pending = self.record.replacement.as_ref().is_some_and(|r| {
            r.status == RequestStatus::Pending && r.request.reason == Reason::ReleaseChanged
        });
        if !pending {
            return;
        }
        self.record.replacement = None;
        tracing::info!(
            "the channel names this node's release again: its replacement request, not yet made, is withdrawn"
        );
        if let Some((slot, task)) = self.slot.take() {
            task.abort();
            if let Some(coordinator) = &self.coordinator {
                if let Err(e) = coordinator.release(&slot).await {
                    // The lease runs out by itself.
                    tracing::warn!(
                        "{e}; rollout slot {} frees itself when its lease ends",
                        slot.key
                    );
                }
            }
        }
        self.save();
    }

    /// True once a replacement is recorded: nothing is gated any more.
    fn already_going(&self) -> bool {
        self.record.replacement.is_some()
    }

    /// Records why the node does not go yet (logged when it changes).
    fn wait(&mut self, status: RolloutStatus, why: String) {
        if self.record.waiting.as_deref() != Some(why.as_str()) {
            tracing::info!("release {} is desired; {why}", status.release);
        }
        self.record.waiting = Some(why);
        self.record.rollout = Some(status);
        self.save();
    }

    /// The coordinator could not be asked: fail closed.
    fn unreachable(&mut self, mut status: RolloutStatus, error: &crate::fleet::etcd::EtcdError) {
        tracing::warn!("{error}; not asking to be replaced, trying again at the next poll");
        status.state = "coordinator-unreachable".into();
        self.wait(
            status,
            format!("the rollout coordinator cannot be reached, so this node does not go: {error}"),
        );
    }

    /// Renews `slot` from now on, while this process runs.
    fn hold_slot(&mut self, coordinator: &Arc<Coordinator>, slot: Slot) {
        if self.slot.as_ref().is_some_and(|(held, _)| *held == slot) {
            return;
        }
        if let Some((_, task)) = self.slot.take() {
            task.abort();
        }
        let task = crate::fleet::coordinate::keep_alive_task(coordinator.clone(), slot.clone());
        self.slot = Some((slot, task));
    }

    /// After a restart: finds and renews the slot this node took for `release`.
    async fn keep_own_slot(&mut self, release: &str) {
        let Some(coordinator) = self.coordinator.clone() else {
            return;
        };
        if self.slot.is_some() {
            return;
        }
        match coordinator.own_slot(&self.node_id, release).await {
            Ok(Some(slot)) => self.hold_slot(&coordinator, slot),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; looking for this node's rollout slot again later"),
        }
    }

    /// Tells the coordinator how this node's apply ended, until that worked
    /// once (`driftless apply` tries first; etcd may have been out of reach).
    async fn report_apply(&mut self) {
        let Some(coordinator) = self.coordinator.clone() else {
            return;
        };
        let Some(kind) = crate::fleet::coordinate::report_kind(&self.applied.status) else {
            return;
        };
        if self.record.rollout_reported.as_deref() == Some(kind) {
            return;
        }
        match crate::fleet::coordinate::report(&coordinator, &self.applied).await {
            Ok(()) => {
                self.record.rollout_reported = Some(kind.to_owned());
                self.save();
            }
            Err(e) => tracing::warn!("{e}; reporting this node's apply again at the next poll"),
        }
    }

    /// Records the request (once), then makes it.
    async fn want_replacement(&mut self, reason: Reason, desired: Option<String>, detail: String) {
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
    async fn resume_pending(&mut self) {
        let Some(record) = self.record.replacement.clone() else {
            return;
        };
        if record.status == RequestStatus::Done {
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

    fn save(&mut self) {
        let unchanged = self.written.as_ref().is_some_and(|(before, at)| {
            at.elapsed() < REWRITE_UNCHANGED
                && WatchState {
                    last_poll: self.record.last_poll,
                    ..before.clone()
                } == self.record
        });
        if unchanged {
            return;
        }
        self.written = Some((self.record.clone(), std::time::Instant::now()));
        if let Err(e) = self.record.save(&self.root) {
            tracing::error!("cannot record the watcher's state: {e}");
        }
        if let Some(path) = &self.config.metrics_file {
            if let Err(e) =
                crate::fleet::metrics::write(&self.root, path, &self.applied, &self.record)
            {
                tracing::warn!("cannot write metrics: {e}");
            }
        }
    }
}

/// This program, for the evaluation child: `/proc/self/exe` names it even
/// if its file was replaced since it started.
fn this_program() -> PathBuf {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        own
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("driftless"))
    }
}

/// What the evaluation of a channel tip concluded: the answer of
/// `driftless evaluate-channel` to the watcher, one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verdict {
    /// The tip verified, and so did the release it names.
    Accepted {
        /// The channel at the tip.
        state: Box<ChannelState>,
        /// The commit the named release's tag points at.
        release_commit: String,
    },
    /// The tip is refused for good: signature, ancestry, channel file, or a
    /// release that is missing or does not verify.
    Refused {
        /// The tip.
        tip: String,
        /// Why, one line.
        reason: String,
    },
    /// Something failed on the way (network, cache): the next poll retries.
    Failed {
        /// Why, one line.
        reason: String,
    },
}

/// Fetches and verifies the channel tip, then the release it names.
pub fn evaluate_channel(
    root_path: &Path,
    config: &AgentConfig,
    last_seen: Option<&str>,
) -> Verdict {
    match evaluate(root_path, config, last_seen) {
        Ok((state, release_commit)) => Verdict::Accepted {
            state: Box::new(state),
            release_commit,
        },
        Err(verdict) => verdict,
    }
}

fn evaluate(
    root_path: &Path,
    config: &AgentConfig,
    last_seen: Option<&str>,
) -> Result<(ChannelState, String), Verdict> {
    let failed = |reason: String| Verdict::Failed { reason };
    let trust = config
        .load_trust(root_path)
        .map_err(anyhow::Error::from)
        .map_err(|e| failed(crate::error::one_line(&e)))?;
    let repo = crate::source::fetch::open_cache(root_path).map_err(|e| failed(e.to_string()))?;
    let tip = channel::fetch_tip(&repo, root_path, config).map_err(|e| failed(e.to_string()))?;
    let last = last_seen.and_then(|l| git2::Oid::from_str(l).ok());
    let now = Timestamp::now();
    let refused = |reason: String| Verdict::Refused {
        tip: tip.to_string(),
        reason,
    };
    let state = channel::evaluate(&repo, &trust, tip, last, &config.channel, now)
        .map_err(|e| refused(e.to_string()))?;
    let tag = &state.file.release;
    match crate::source::fetch::fetch_tag(&repo, root_path, &config.source, tag, &config.fetch) {
        Ok(()) => {}
        Err(crate::source::fetch::FetchError::NoSuchRef { .. }) => {
            return Err(refused(format!(
                "channel tip {tip} names release {}, which the source does not have",
                tag.as_str()
            )));
        }
        Err(e) => {
            return Err(failed(format!(
                "fetching release {} named by channel tip {tip}: {e}",
                tag.as_str()
            )));
        }
    }
    let verified = crate::verify::verify_tag(&repo, tag.as_str(), &trust, now).map_err(|e| {
        refused(format!(
            "channel tip {tip} names release {}, which does not verify: {e}",
            tag.as_str()
        ))
    })?;
    Ok((state, verified.commit))
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
