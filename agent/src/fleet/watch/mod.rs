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
//!
//! This file holds the daemon: its state and its loop (polls, drift,
//! signals). Evaluating a channel tip in a child process, deciding when the
//! node goes (rollout, slots) and the replacement request's bookkeeping
//! each have a file of their own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{AgentConfig, DriftPolicy, FailurePolicy};
use crate::fleet::coordinate::handover::Handover;
use crate::fleet::coordinate::{Coordinator, Slot};
use crate::fleet::terminate;
use crate::record::detect::Detector;
use crate::record::drift::Difference;
use crate::record::floor::{self, ChannelFloor};
use crate::record::lifecycle::{Event, FailedAt, Phase};
use crate::record::replacement::Reason;
use crate::record::state::{self, State, Status};
use crate::record::watch_state::{DriftRecord, Freshness, Refusal, WatchState};
use crate::release::clock;
use crate::root::Root;

mod anchor;
mod decide;
mod evaluate;
mod replacement;
mod roster;
mod source;

pub use evaluate::{
    EVALUATION_NAME, EVALUATION_NICENESS, Verdict, evaluate_channel, lower_priority,
    name_evaluation,
};
pub use replacement::replace_after_failed_apply;

use anchor::Anchor;
use evaluate::this_program;

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
    source: source::ChannelSource,
    node_id: String,
    /// The agent config's path, for the evaluation child.
    config_path: PathBuf,
    /// The program that evaluates a channel tip: this one.
    evaluator: PathBuf,
    /// The rollout coordinator, when the config names one.
    coordinator: Option<Arc<Coordinator>>,
    /// The rollout slot this process holds, and the task renewing it.
    slot: Option<(Slot, tokio::task::JoinHandle<()>)>,
    /// What wakes the loop to decide again before the next poll (a freed
    /// slot, a failure recorded); `None` outside [`Watcher::run`].
    wake: Option<Arc<tokio::sync::Notify>>,
    /// The watch of the group's slots while this node waits for one.
    handover: Option<Handover>,
    /// Where the node stands in its lifecycle (see [`Phase`]).
    phase: Phase,
    /// The channel floor of the image or the apply (`record::floor`).
    floor: Option<ChannelFloor>,
    /// This node's entry in its group's roster in etcd (with a coordinator).
    roster: crate::fleet::roster::Reporter,
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
        let floor = ChannelFloor::load(&root)?;
        let source = source::ChannelSource::new(
            root_path,
            &config,
            config.fetch.io_timeout.0 + config.fetch.connect_timeout.0,
        )?;
        let coordinator = Coordinator::from_config(root_path, &config.rollout)?.map(Arc::new);
        let mut phase = Phase::of_records(Some(&applied), None, &record);
        if phase == Phase::Verified {
            // An apply that never finished counts as failed: the watcher
            // does not wait for a run that no one will make.
            phase.advance(Event::Failed(FailedAt::Apply))?;
        }
        phase.advance(Event::WatchStarted)?;
        Ok(Self {
            root_path: root_path.to_path_buf(),
            root,
            config,
            applied,
            record,
            written: None,
            source,
            node_id,
            config_path: config_path.to_path_buf(),
            evaluator: this_program(),
            coordinator,
            slot: None,
            wake: None,
            handover: None,
            phase,
            floor,
            roster: Default::default(),
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
        self.announce();
        let wake = Arc::new(tokio::sync::Notify::new());
        self.wake = Some(wake.clone());
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
                () = wake.notified() => self.on_wake().await,
            }
        }
        if let Some(task) = watchdog {
            task.abort();
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopping");
        Ok(())
    }

    /// The watcher's record as it stands (for `watch --once`'s exit code).
    pub fn record(&self) -> &WatchState {
        &self.record
    }

    /// Says, once at start, what is watched and how often.
    pub fn announce(&self) {
        let c = &self.config;
        let rollout = match &self.coordinator {
            Some(co) => format!(
                "etcd group {} (at most {} away)",
                co.group(),
                co.max_in_flight()
            ),
            None => {
                "no coordinator (the channel's canary, waves, windows and failures file)".into()
            }
        };
        tracing::info!(
            "watching node {} (release {}, {}): channel {} of {} every {:?} (±10 %); drift by inotify, a rescan every {:?}, the record against the signed release every {:?} (drift.policy {:?}); replacement by {}; rollout: {rollout}",
            self.node_id,
            self.applied.release.tag,
            self.phase,
            c.channel_ref(),
            c.source.url.redacted(),
            c.channel.poll_interval.0,
            c.drift.rescan_interval.0,
            c.drift.verify_interval.0,
            c.drift.policy,
            terminate::action_name(c.replace.action),
        );
    }

    fn start_detector(&self, tx: tokio::sync::mpsc::Sender<Vec<Difference>>) -> anyhow::Result<()> {
        let root = Root::open(&self.root_path)?;
        let mut detector = Detector::new(
            root,
            self.applied.clone(),
            self.config.drift.rescan_interval.0,
        )?;
        let mut anchor = Anchor::new(&self.root_path, &self.applied, &self.config)?;
        std::thread::Builder::new()
            .name("drift".into())
            .spawn(move || {
                let first = detector.rescan();
                if !first.is_empty() && tx.blocking_send(first).is_err() {
                    return;
                }
                loop {
                    let found = anchor.when_due();
                    if !found.is_empty() && tx.blocking_send(found).is_err() {
                        return;
                    }
                    match detector.poll(anchor.until_due().min(Duration::from_secs(3600))) {
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

    /// Moves the node's phase on; a step the lifecycle does not have is a
    /// bug, logged, and the watcher goes on (it only ever watches).
    fn step(&mut self, event: Event) {
        if let Err(e) = self.phase.advance(event) {
            tracing::error!("{e}");
        }
    }

    async fn on_drift(&mut self, differences: Vec<Difference>) {
        self.step(Event::DriftSeen);
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
        let answer = self
            .source
            .tip(&channel_ref, &mut self.record.channel_etag)
            .await;
        self.record.last_poll = Some(Timestamp::now());
        let tip = match answer {
            Ok(tip) => tip,
            Err(e) => {
                self.poll_failed(e);
                return;
            }
        };
        self.record.last_poll_error = None;
        if self.record.channel.as_ref().is_some_and(|c| c.tip == tip) {
            // Back on the accepted tip (a refused force-push was undone).
            self.record.refusal = None;
        }
        // A tip refused as expired is judged again when the clock went
        // back since (a clock that was ahead, corrected): nothing else
        // about a refused tip changes with time.
        let known = self.record.channel.as_ref().is_some_and(|c| c.tip == tip)
            || self.record.refusal.as_ref().is_some_and(|r| {
                r.tip == tip && !(r.kind == "expired" && clock::system_now() < r.at)
            });
        if !known {
            self.evaluate_tip().await;
        }
        self.judge_freshness();
        self.save();
        if known && self.slots_followed() {
            // Nothing moved that the watch of the slots would not have
            // woken this node for.
            return;
        }
        self.decide().await;
        self.report_roster().await;
    }

    fn poll_failed(&mut self, error: String) {
        tracing::warn!("channel poll failed: {error}");
        self.record.poll_errors += 1;
        self.record.last_poll_error = Some(error);
        // A source that stalls is judged like one that freezes.
        self.judge_freshness();
        self.save();
    }

    /// Judges whether the accepted channel is still fresh, at the system
    /// clock held no earlier than the newest signed time this node has
    /// seen; logs when it turns stale, and when it is fresh again.
    fn judge_freshness(&mut self) {
        let Some(seen) = &self.record.channel else {
            self.record.freshness = None;
            return;
        };
        let signed = floor::signed_times(self.floor.as_ref(), &self.record, Some(&self.applied));
        let judged = clock::judge(&signed, clock::synchronized(false));
        let expires = seen.file.expires;
        let fresh = judged.at < expires;
        let was_fresh = self.record.freshness.as_ref().map(|f| f.fresh);
        if !fresh && was_fresh != Some(false) {
            tracing::error!(
                message_id = crate::events::CHANNEL_STALE,
                "the channel expired at {expires} (judged at {} {}): nothing is done on it until a fresh document comes; the source may be frozen, or the refresh job stopped",
                judged.at,
                judged.by()
            );
        } else if fresh && was_fresh == Some(false) {
            tracing::info!("the channel is fresh again (expires {expires})");
        }
        self.record.freshness = Some(Freshness {
            fresh,
            expires,
            judged,
        });
    }

    /// Whether the accepted channel was judged stale at the last poll.
    pub(super) fn channel_stale(&self) -> bool {
        self.record.freshness.as_ref().is_some_and(|f| !f.fresh)
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
                    "channel {} to {} (sequence {}, signed by {}, {} role, expires {}): release {}{}",
                    if state.role == crate::verify::ChannelRole::Refresh {
                        "refreshed"
                    } else {
                        "moved"
                    },
                    state.tip,
                    state.file.sequence,
                    state.signer,
                    state.role.name(),
                    state.file.expires,
                    state.file.release.as_str(),
                    if state.file.hold { ", on hold" } else { "" }
                );
                self.record.accept(&state, Some(release_commit));
            }
            Verdict::Refused { tip, kind, reason } => {
                if kind == "conflict" {
                    tracing::error!(message_id = crate::events::CHANNEL_CONFLICT, "{reason}");
                } else {
                    tracing::error!(message_id = crate::events::CHANNEL_REFUSED, "{reason}");
                }
                self.record.refusal = Some(Refusal {
                    tip,
                    kind,
                    reason,
                    at: clock::system_now(),
                });
            }
            // A network or cache failure says nothing about the tip: retried next poll.
            Verdict::Failed { reason } => self.poll_failed(reason),
        }
    }

    fn save(&mut self) {
        let unchanged = self.written.as_ref().is_some_and(|(before, at)| {
            at.elapsed() < REWRITE_UNCHANGED && before.same_but_times(&self.record)
        });
        if unchanged {
            if self.channel_stale() {
                // How long it has been stale grows: the metrics say so each poll.
                self.write_metrics();
            }
            return;
        }
        self.written = Some((self.record.clone(), std::time::Instant::now()));
        if let Err(e) = self.record.save(&self.root) {
            tracing::error!("cannot record the watcher's state: {e}");
        }
        self.write_metrics();
    }

    fn write_metrics(&self) {
        if let Some(path) = &self.config.metrics_file {
            if let Err(e) =
                crate::fleet::metrics::write(&self.root, path, &self.applied, &self.record)
            {
                tracing::warn!("cannot write metrics: {e}");
            }
        }
    }
}
