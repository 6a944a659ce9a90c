//! The watcher's verification of the node's record against the signed
//! release ([`crate::node::anchor`]): at its start and every
//! `drift.verify_interval`, on the drift thread, each difference reported
//! once until a later run no longer finds it. Apart from the loop, which
//! only asks when the next run is due.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::AgentConfig;
use crate::node::anchor;
use crate::record::drift::Difference;
use crate::record::state::State;
use crate::root::Root;

/// The schedule and what the last run found.
pub(super) struct Anchor {
    root: Root,
    state: State,
    config: AgentConfig,
    every: Duration,
    next: Instant,
    reported: BTreeSet<(String, &'static str)>,
}

impl Anchor {
    pub(super) fn new(root: &Path, state: &State, config: &AgentConfig) -> anyhow::Result<Self> {
        Ok(Self {
            root: Root::open(root)?,
            state: state.clone(),
            config: config.clone(),
            every: config.drift.verify_interval.0,
            next: Instant::now(),
            reported: BTreeSet::new(),
        })
    }

    /// How long until the next run.
    pub(super) fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Runs the verification when it is due; returns what it found that
    /// was not reported before.
    pub(super) fn when_due(&mut self) -> Vec<Difference> {
        if Instant::now() < self.next {
            return Vec::new();
        }
        self.next = Instant::now() + self.every;
        let found = anchor::verify(&self.root, &self.state, &self.config);
        anchor::note(&self.root, &self.state, "watch", &found);
        let now: BTreeSet<(String, &'static str)> =
            found.iter().map(|d| (d.path.clone(), d.aspect)).collect();
        let fresh = found
            .into_iter()
            .filter(|d| !self.reported.contains(&(d.path.clone(), d.aspect)))
            .collect();
        self.reported = now;
        fresh
    }
}
