//! The node's life as one state machine:
//!
//! ```text
//! fresh ─▶ fetched ─▶ verified ─▶ applied ─▶ healthy ─▶ locked ─▶ watching ─▶ drifted
//!   │         │          │           │          │                    │           │
//!   └─────────┴──────────┴───────────┴──────────┴─▶ failed           ▼           ▼
//!                                                      └──────▶ replacement requested
//! ```
//!
//! (drawn in full, with the watcher's restarts and a withdrawn request, in
//! docs/design.md)
//!
//! Apply walks a run from `fresh` to `locked` (or `failed`), the watcher
//! from there on; both advance through [`Phase::next`], which refuses a
//! step the picture does not have, so a bug that would, say, start
//! watching a node whose locks were never taken stops instead of running.
//! [`Phase::of_records`] reads where a node stands from what it wrote
//! (`state.json`, `failure.json`, `watch.json`), for `status` and for the
//! watcher's start. Pure: no I/O here.

use std::fmt;

use crate::record::state::{EarlyFailure, LockStatus, State, Status};
use crate::record::watch_state::WatchState;

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing recorded yet: a first boot before its release is known.
    Fresh,
    /// The release's objects are on the node, not yet trusted.
    Fetched,
    /// The tag, its signer and the pin verified; the node is being written
    /// (a run interrupted here is finished by the next one).
    Verified,
    /// Every managed path is written and the release's units are started.
    Applied,
    /// The release's health checks passed.
    Healthy,
    /// The applied configuration is locked (or `lock.mode: off` left it
    /// unlocked by choice).
    Locked,
    /// The watcher runs: polls the channel, watches for drift.
    Watching,
    /// The node differs from its manifest.
    Drifted,
    /// The node asked to be replaced (the request may still be pending).
    ReplacementRequested,
    /// The node could not be brought up; its release's units stay stopped.
    Failed(FailedAt),
}

/// The step a node failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedAt {
    /// The release could not be fetched.
    Fetch,
    /// A signature, pin or channel tip was refused.
    Verify,
    /// The release's node spec is invalid.
    Spec,
    /// Writing the node or starting its units failed.
    Apply,
    /// A health check did not pass.
    Health,
    /// Locking failed.
    Lock,
}

/// What happened to a node: the input of [`Phase::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The release's objects arrived.
    Fetched,
    /// They verified.
    Verified,
    /// The node was written and its units started.
    Written,
    /// The health checks passed.
    HealthPassed,
    /// The locks were taken (or `lock.mode: off` skipped them).
    Locked,
    /// The watcher started.
    WatchStarted,
    /// The node was seen to differ from its manifest.
    DriftSeen,
    /// The node asked to be replaced.
    ReplacementRequested,
    /// A request not yet made was taken back (the channel named this
    /// node's release again).
    ReplacementWithdrawn,
    /// A step failed.
    Failed(FailedAt),
}

/// A step the lifecycle does not have: a bug, never a node's condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error: a node that is {from} cannot take the step {event:?}")]
pub struct InvalidTransition {
    /// Where the node stood.
    pub from: Phase,
    /// The step refused.
    pub event: Event,
}

impl FailedAt {
    /// The name records use: `fetch`, `verify`, `spec`, `apply`, `health`, `lock`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailedAt::Fetch => "fetch",
            FailedAt::Verify => "verify",
            FailedAt::Spec => "spec",
            FailedAt::Apply => "apply",
            FailedAt::Health => "health",
            FailedAt::Lock => "lock",
        }
    }

    /// Reads a recorded stage name; an unknown one (a record written by
    /// another version) counts as `apply`, the widest.
    pub fn from_record(name: &str) -> Self {
        [
            FailedAt::Fetch,
            FailedAt::Verify,
            FailedAt::Spec,
            FailedAt::Health,
            FailedAt::Lock,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
        .unwrap_or(FailedAt::Apply)
    }

    /// The phases a failure at this step can come from: each step fails
    /// only while it is the one being taken.
    fn may_follow(self, phase: Phase) -> bool {
        use Phase::*;
        match self {
            FailedAt::Fetch => phase == Fresh,
            FailedAt::Verify => matches!(phase, Fresh | Fetched),
            FailedAt::Spec => phase == Verified,
            // Whatever else goes wrong on the node's side, from the start
            // (a cache that cannot be opened) to starting its units.
            FailedAt::Apply => matches!(phase, Fresh | Fetched | Verified | Applied),
            FailedAt::Health => phase == Applied,
            FailedAt::Lock => phase == Healthy,
        }
    }
}

impl Phase {
    /// The phase after `event`, or why there is none.
    pub fn next(self, event: Event) -> Result<Phase, InvalidTransition> {
        use Phase::*;
        let next = match (self, event) {
            (Fresh, Event::Fetched) => Some(Fetched),
            (Fetched, Event::Verified) => Some(Verified),
            (Verified, Event::Written) => Some(Applied),
            (Applied, Event::HealthPassed) => Some(Healthy),
            (Healthy, Event::Locked) => Some(Locked),
            // A node baked with `--no-lock` is watched before its next
            // boot's apply locks it only if someone starts a watcher by hand.
            (Healthy | Locked, Event::WatchStarted) => Some(Watching),
            // A restarted watcher resumes where the last one left off; the
            // watcher of a failed node runs only to ask for its replacement
            // (failure.policy: replace).
            (Watching | Drifted | ReplacementRequested | Failed(_), Event::WatchStarted) => {
                Some(self)
            }
            (Watching | Drifted, Event::DriftSeen) => Some(Drifted),
            // Drift on a node that is going anyway changes nothing.
            (ReplacementRequested | Failed(_), Event::DriftSeen) => Some(self),
            (ReplacementRequested, Event::ReplacementWithdrawn) => Some(Watching),
            (
                Watching | Drifted | Failed(_) | ReplacementRequested,
                Event::ReplacementRequested,
            ) => Some(ReplacementRequested),
            (from, Event::Failed(at)) if at.may_follow(from) => Some(Failed(at)),
            _ => None,
        };
        next.ok_or(InvalidTransition { from: self, event })
    }

    /// Advances in place; see [`Phase::next`].
    pub fn advance(&mut self, event: Event) -> Result<(), InvalidTransition> {
        *self = self.next(event)?;
        Ok(())
    }

    /// Where a node stands by its records: the apply record (if any), an
    /// early failure (before any release verified), and the watcher's
    /// record. `watching` says whether a watcher has run on this node
    /// since its apply (it has polled at least once).
    pub fn of_records(
        state: Option<&State>,
        early: Option<&EarlyFailure>,
        watch: &WatchState,
    ) -> Phase {
        let base = match (state, early) {
            (None, None) => Phase::Fresh,
            (None, Some(failure)) => Phase::Failed(FailedAt::from_record(&failure.stage)),
            (Some(state), _) => match &state.status {
                Status::Applying => Phase::Verified,
                Status::Failed { stage, .. } => Phase::Failed(FailedAt::from_record(stage)),
                Status::Applied if locks_pending(state) => Phase::Healthy,
                Status::Applied => Phase::Locked,
            },
        };
        if watch.replacement.is_some() {
            return Phase::ReplacementRequested;
        }
        match base {
            Phase::Healthy | Phase::Locked if !watch.drift.is_empty() => Phase::Drifted,
            Phase::Healthy | Phase::Locked if watch.last_poll.is_some() => Phase::Watching,
            other => other,
        }
    }

    /// The name `status` shows, in kebab case.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Fresh => "fresh",
            Phase::Fetched => "fetched",
            Phase::Verified => "verified",
            Phase::Applied => "applied",
            Phase::Healthy => "healthy",
            Phase::Locked => "locked",
            Phase::Watching => "watching",
            Phase::Drifted => "drifted",
            Phase::ReplacementRequested => "replacement-requested",
            Phase::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Failed(at) => write!(f, "failed at {}", at.as_str()),
            other => f.write_str(other.name()),
        }
    }
}

/// True while a managed path or mount still waits for its lock (a node
/// baked with `--no-lock`, before the boot that locks it).
fn locks_pending(state: &State) -> bool {
    state
        .manifest
        .iter()
        .map(|e| &e.lock)
        .chain(state.read_only.iter().map(|m| &m.lock))
        .any(|l| *l == LockStatus::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of a first boot up to a running watcher, in order.
    const UP: [Event; 6] = [
        Event::Fetched,
        Event::Verified,
        Event::Written,
        Event::HealthPassed,
        Event::Locked,
        Event::WatchStarted,
    ];

    const ALL_EVENTS: [Event; 15] = [
        UP[0],
        UP[1],
        UP[2],
        UP[3],
        UP[4],
        UP[5],
        Event::DriftSeen,
        Event::ReplacementRequested,
        Event::ReplacementWithdrawn,
        Event::Failed(FailedAt::Fetch),
        Event::Failed(FailedAt::Verify),
        Event::Failed(FailedAt::Spec),
        Event::Failed(FailedAt::Apply),
        Event::Failed(FailedAt::Health),
        Event::Failed(FailedAt::Lock),
    ];

    fn walk(events: &[Event]) -> Result<Phase, InvalidTransition> {
        events.iter().try_fold(Phase::Fresh, |p, e| p.next(*e))
    }

    #[test]
    fn a_first_boot_walks_to_watching_and_on_to_replacement() {
        assert_eq!(walk(&UP), Ok(Phase::Watching));
        let mut life = UP.to_vec();
        life.extend([
            Event::DriftSeen,
            Event::DriftSeen,
            Event::ReplacementRequested,
            Event::DriftSeen,
            Event::ReplacementRequested,
        ]);
        assert_eq!(walk(&life), Ok(Phase::ReplacementRequested));
    }

    #[test]
    fn steps_cannot_be_skipped_or_taken_backwards() {
        assert!(walk(&[Event::Verified]).is_err(), "verified before fetched");
        assert!(
            walk(&[Event::Fetched, Event::Written]).is_err(),
            "unverified"
        );
        let err = walk(&[Event::Fetched, Event::Verified, Event::Locked]).expect_err("unwritten");
        assert_eq!(err.from, Phase::Verified);
        assert!(err.to_string().contains("verified"), "{err}");
        // An unhealthy node is never watched as if it were up.
        assert!(
            walk(&[
                Event::Fetched,
                Event::Verified,
                Event::Written,
                Event::WatchStarted
            ])
            .is_err()
        );
        // Drift is a watcher's finding: a node not yet up has none.
        assert!(walk(&[Event::Fetched, Event::DriftSeen]).is_err());
    }

    #[test]
    fn each_step_fails_only_while_it_is_taken() {
        assert_eq!(
            walk(&[Event::Failed(FailedAt::Fetch)]),
            Ok(Phase::Failed(FailedAt::Fetch))
        );
        assert!(walk(&[Event::Fetched, Event::Failed(FailedAt::Fetch)]).is_err());
        assert_eq!(
            walk(&[Event::Fetched, Event::Failed(FailedAt::Verify)]),
            Ok(Phase::Failed(FailedAt::Verify))
        );
        let written = [Event::Fetched, Event::Verified, Event::Written];
        let mut health = written.to_vec();
        health.push(Event::Failed(FailedAt::Health));
        assert_eq!(walk(&health), Ok(Phase::Failed(FailedAt::Health)));
        let mut late = written.to_vec();
        late.extend([
            Event::HealthPassed,
            Event::Locked,
            Event::Failed(FailedAt::Apply),
        ]);
        assert!(
            walk(&late).is_err(),
            "a locked node does not fail its apply"
        );
        // A failed node stays failed until it is replaced.
        let failed = Phase::Failed(FailedAt::Spec);
        for event in ALL_EVENTS {
            let allowed = matches!(
                event,
                Event::WatchStarted | Event::DriftSeen | Event::ReplacementRequested
            );
            assert_eq!(failed.next(event).is_ok(), allowed, "{event:?}");
            if let Ok(next) = failed.next(event) {
                let going = event == Event::ReplacementRequested;
                assert_eq!(next == Phase::ReplacementRequested, going, "{event:?}");
                assert!(going || next == failed, "{event:?}");
            }
        }
    }

    #[test]
    fn replacement_is_final_unless_withdrawn_before_it_was_made() {
        for event in ALL_EVENTS {
            if let Ok(next) = Phase::ReplacementRequested.next(event) {
                let expected = if event == Event::ReplacementWithdrawn {
                    Phase::Watching
                } else {
                    Phase::ReplacementRequested
                };
                assert_eq!(next, expected, "{event:?}");
            }
        }
        assert!(Phase::Watching.next(Event::ReplacementWithdrawn).is_err());
    }

    #[test]
    fn stage_names_read_back() {
        for at in [
            FailedAt::Fetch,
            FailedAt::Verify,
            FailedAt::Spec,
            FailedAt::Apply,
            FailedAt::Health,
            FailedAt::Lock,
        ] {
            assert_eq!(FailedAt::from_record(at.as_str()), at);
        }
        assert_eq!(FailedAt::from_record("tomorrow's stage"), FailedAt::Apply);
        assert_eq!(
            Phase::Failed(FailedAt::Health).to_string(),
            "failed at health"
        );
    }

    fn record(status: Status, lock: LockStatus) -> State {
        use crate::record::state::{ManifestEntry, PinnedRelease};
        let path = crate::types::NodePath::new("/etc/app.conf").expect("path");
        State {
            version: 1,
            node_id: "n".into(),
            release: PinnedRelease {
                tag: "v1".into(),
                tag_object: "t".into(),
                commit: "c".into(),
                tree: "r".into(),
                signer: "s".into(),
                fingerprint: "f".into(),
                signed_at: jiff::Timestamp::UNIX_EPOCH,
            },
            status,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: None,
            manifest: vec![ManifestEntry {
                path,
                kind: crate::root::Kind::File,
                mode: None,
                uid: None,
                gid: None,
                sha256: None,
                target: None,
                origin: "files".into(),
                lock,
                exclusive: false,
                secret: None,
            }],
            read_only: Vec::new(),
            effective: Default::default(),
        }
    }

    #[test]
    fn the_records_say_where_a_node_stands() {
        let quiet = WatchState::default();
        assert_eq!(Phase::of_records(None, None, &quiet), Phase::Fresh);
        let early = EarlyFailure {
            stage: "verify".into(),
            reason: "bad signature".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
        };
        assert_eq!(
            Phase::of_records(None, Some(&early), &quiet),
            Phase::Failed(FailedAt::Verify)
        );
        let locked = record(Status::Applied, LockStatus::Locked);
        assert_eq!(
            Phase::of_records(Some(&locked), None, &quiet),
            Phase::Locked
        );
        let baked = record(Status::Applied, LockStatus::Pending);
        assert_eq!(
            Phase::of_records(Some(&baked), None, &quiet),
            Phase::Healthy
        );
        let applying = record(Status::Applying, LockStatus::Pending);
        assert_eq!(
            Phase::of_records(Some(&applying), None, &quiet),
            Phase::Verified
        );
        let failed = record(
            Status::Failed {
                stage: "health".into(),
                reason: "r".into(),
            },
            LockStatus::Pending,
        );
        assert_eq!(
            Phase::of_records(Some(&failed), None, &quiet),
            Phase::Failed(FailedAt::Health)
        );
        let polled = WatchState {
            last_poll: Some(jiff::Timestamp::UNIX_EPOCH),
            ..WatchState::default()
        };
        assert_eq!(
            Phase::of_records(Some(&locked), None, &polled),
            Phase::Watching
        );
        let drifted = WatchState {
            drift: vec![crate::record::watch_state::DriftRecord {
                line: "x".into(),
                first_seen: jiff::Timestamp::UNIX_EPOCH,
            }],
            ..polled.clone()
        };
        assert_eq!(
            Phase::of_records(Some(&locked), None, &drifted),
            Phase::Drifted
        );
        // Drift on a failed node does not make it look up.
        assert_eq!(
            Phase::of_records(Some(&failed), None, &drifted),
            Phase::Failed(FailedAt::Health)
        );
    }
}
