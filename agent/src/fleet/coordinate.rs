//! The rollout coordinator on etcd (`rollout.coordinator: etcd`): at most
//! `max_in_flight` nodes of a group away at once, and a rollout that stops
//! itself when new nodes fail. The policy that decides *whether* a node may
//! go (canary, waves, windows, hold, failures) stays pure in
//! [`crate::fleet::rollout`]; this module only keeps the shared counts.
//!
//! Keys, under `/driftless/<group>/`:
//!
//! | key | value | life |
//! |---|---|---|
//! | `slots/<0..max_in_flight-1>` | JSON: node, from, to, at | a lease of `lease_ttl`, renewed while the holder runs |
//! | `failures/<release>/<node-id>` | JSON: node, release, stage, reason, at | until an operator deletes it |
//! | `line/<release>/<node-id>` | empty | a lease of `lease_ttl`, while the node waits for a slot ([`line`]) |
//!
//! A node that wants to be replaced for a new release first takes a free
//! slot (a transaction that creates the key only if absent), keeps its lease
//! alive while it still runs (through drain and power-off), and then asks to
//! be replaced. The new node, once applied and healthy, deletes one slot
//! whose `to` is its release: the group's count of nodes away goes down by
//! one. A node that vanishes holds its slot at most `lease_ttl` longer.
//! Release names and node ids are escaped (`%` and `/`) in keys.
//!
//! A node waiting for a slot follows the group's keys through a watch
//! ([`handover`]), so it tries again the moment a slot is freed instead of
//! at its next poll; the waiting nodes stand in a line ([`line`]) so that
//! the oldest asks first and the others do not all ask at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, Coordinator as Kind, RolloutSettings};
use crate::fleet::etcd::{Etcd, EtcdError, KeyValue};
use line::Place;

pub mod handover;
pub mod line;

/// The prefix of every driftless key in etcd.
pub const KEY_PREFIX: &str = "/driftless";

/// The coordinator of one group.
#[derive(Debug)]
pub struct Coordinator {
    etcd: Etcd,
    group: String,
    max_in_flight: u32,
    lease_ttl: Duration,
}

/// A slot's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotValue {
    /// The node away (or about to be).
    pub node: String,
    /// The release it ran.
    pub from: String,
    /// The release it is replaced for.
    pub to: String,
    /// When the slot was taken.
    pub at: Timestamp,
}

/// A slot this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The key.
    pub key: String,
    /// Its lease.
    pub lease: i64,
}

/// The answer to "may this node take a slot?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAnswer {
    /// The node holds this slot (just taken, or taken before a restart).
    Held(Slot),
    /// Every slot is taken.
    Full {
        /// Slots taken.
        in_flight: u32,
        /// Slots in the group.
        max_in_flight: u32,
    },
}

/// What a waiting node's decision reads from etcd.
#[derive(Debug)]
pub struct Survey {
    /// Failures recorded for the release it would go to.
    pub failures: u32,
    /// The slots taken, with their values.
    slots: Vec<(KeyValue, Option<SlotValue>)>,
}

/// A failure value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureValue {
    /// The node that failed.
    pub node: String,
    /// The release it failed on.
    pub release: String,
    /// The stage (`spec`, `apply`, `health`, `lock`).
    pub stage: String,
    /// Why, one line.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// `/` and `%` escaped, so a release or node id is one key segment.
pub(crate) fn segment(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2F")
}

impl Coordinator {
    /// The coordinator the config names, or `None` without one.
    pub fn from_config(root: &Path, settings: &RolloutSettings) -> anyhow::Result<Option<Self>> {
        if settings.coordinator == Kind::None {
            return Ok(None);
        }
        Ok(Some(Self {
            etcd: Etcd::new(root, settings)?,
            group: settings.group.clone(),
            max_in_flight: settings.max_in_flight,
            lease_ttl: settings.lease_ttl.0,
        }))
    }

    fn slots_prefix(&self) -> String {
        format!("{KEY_PREFIX}/{}/slots/", self.group)
    }

    fn failures_prefix(&self, release: &str) -> String {
        format!("{KEY_PREFIX}/{}/failures/{}/", self.group, segment(release))
    }

    /// The slots taken, with their values (unreadable values are counted,
    /// never reused).
    async fn slots(&self) -> Result<Vec<(KeyValue, Option<SlotValue>)>, EtcdError> {
        Ok(with_values(self.etcd.range(&self.slots_prefix()).await?))
    }

    /// What a decision reads: the failures recorded for `release` and the
    /// group's slots, in one request.
    pub async fn survey(&self, release: &str) -> Result<Survey, EtcdError> {
        let (failures, slots) = self
            .etcd
            .count_and_range(&self.failures_prefix(release), &self.slots_prefix())
            .await?;
        Ok(Survey {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            slots: with_values(slots),
        })
    }

    /// Takes a free slot for `node` going from `from` to `to`, or finds the
    /// one it already holds for `to`, by the slots of `survey`. A node in
    /// the waiting line passes its place: the slot lives on the place's
    /// lease (one lease a node, and no grant between a freed slot and its
    /// taking), and the transaction that takes it also deletes the place.
    /// A place whose lease is gone gets a lease of its own.
    pub async fn take_slot(
        &self,
        survey: &Survey,
        node: &str,
        from: &str,
        to: &str,
        place: Option<&Place>,
    ) -> Result<SlotAnswer, EtcdError> {
        let slots = &survey.slots;
        if let Some(own) = own_slot(slots, node, to) {
            return Ok(SlotAnswer::Held(own));
        }
        let taken: Vec<&str> = slots.iter().map(|(kv, _)| kv.key.as_str()).collect();
        let in_flight = u32::try_from(taken.len()).unwrap_or(u32::MAX);
        let full = SlotAnswer::Full {
            in_flight,
            max_in_flight: self.max_in_flight,
        };
        if in_flight >= self.max_in_flight {
            return Ok(full);
        }
        let value = serde_json::to_string(&SlotValue {
            node: node.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            at: Timestamp::now(),
        })
        .map_err(|e| EtcdError::new("txn", e.to_string()))?;
        let (mut lease, mut own_lease) = match place {
            Some(place) => (place.lease, false),
            None => (self.etcd.grant(self.lease_ttl).await?, true),
        };
        let place_key = place.map(|place| place.key.as_str());
        for index in 0..self.max_in_flight {
            let key = format!("{}{index}", self.slots_prefix());
            if taken.contains(&key.as_str()) {
                continue;
            }
            // Another node may take it between the survey and here: the
            // transaction only creates a key that does not exist.
            let created = match self.etcd.create(&key, &value, lease, place_key).await {
                Err(e) if !own_lease && e.lease_not_found() => {
                    // The place's lease ended (etcd lost it, or it ran out
                    // before its renewal): the slot goes on a lease of its
                    // own rather than waiting for the line to notice.
                    lease = self.etcd.grant(self.lease_ttl).await?;
                    own_lease = true;
                    self.etcd.create(&key, &value, lease, place_key).await?
                }
                other => other?,
            };
            if created {
                return Ok(SlotAnswer::Held(Slot { key, lease }));
            }
        }
        if own_lease {
            // Others were quicker: give the unused lease back.
            if let Err(e) = self.etcd.revoke(lease).await {
                tracing::debug!("{e}; the unused lease expires by itself");
            }
        }
        Ok(full)
    }

    /// The slot `node` holds for `to`, if any (after a restart).
    pub async fn own_slot(&self, node: &str, to: &str) -> Result<Option<Slot>, EtcdError> {
        Ok(own_slot(&self.slots().await?, node, to))
    }

    /// Renews a slot's lease; `false` when the slot is gone.
    pub async fn keep_alive(&self, slot: &Slot) -> Result<bool, EtcdError> {
        self.etcd.keep_alive(slot.lease).await
    }

    /// Frees a slot this node holds but no longer needs: revoking its
    /// lease deletes the key.
    pub async fn release(&self, slot: &Slot) -> Result<(), EtcdError> {
        self.etcd.revoke(slot.lease).await
    }

    /// Gives back one slot of the group taken for `release` (by a node
    /// replaced to make room for this one). Returns the key deleted, if any.
    pub async fn give_back(&self, release: &str) -> Result<Option<String>, EtcdError> {
        // A few rounds: another new node may delete the same slot first.
        for _ in 0..5 {
            let slots = self.slots().await?;
            let Some((kv, _)) = slots
                .iter()
                .filter(|(_, v)| v.as_ref().is_some_and(|v| v.to == release))
                .min_by_key(|(kv, _)| kv.mod_revision)
            else {
                return Ok(None);
            };
            if self
                .etcd
                .delete_if_unchanged(&kv.key, kv.mod_revision)
                .await?
            {
                return Ok(Some(kv.key.clone()));
            }
        }
        Ok(None)
    }

    /// Records that `node` failed on `release` (idempotent: one key per node).
    pub async fn record_failure(&self, value: &FailureValue) -> Result<(), EtcdError> {
        let key = format!(
            "{}{}",
            self.failures_prefix(&value.release),
            segment(&value.node)
        );
        let text =
            serde_json::to_string(value).map_err(|e| EtcdError::new("put", e.to_string()))?;
        self.etcd.put(&key, &text).await
    }

    /// The etcd client (for the fleet view's reads and a node's roster entry).
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The lease of a slot (and of a node's roster entry).
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The group's slot count.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// How often a held slot's lease is renewed: a third of its life.
    pub fn renew_every(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_secs(1))
    }
}

/// Slot keys with their values read (`None`: unreadable).
fn with_values(slots: Vec<KeyValue>) -> Vec<(KeyValue, Option<SlotValue>)> {
    slots
        .into_iter()
        .map(|kv| {
            let value = serde_json::from_str(&kv.value).ok();
            (kv, value)
        })
        .collect()
}

fn own_slot(slots: &[(KeyValue, Option<SlotValue>)], node: &str, to: &str) -> Option<Slot> {
    slots.iter().find_map(|(kv, v)| {
        v.as_ref()
            .filter(|v| v.node == node && v.to == to)
            .map(|_| Slot {
                key: kv.key.clone(),
                lease: kv.lease,
            })
    })
}

/// Renews `slot` every [`Coordinator::renew_every`] until dropped or the slot is gone.
pub fn keep_alive_task(coordinator: Arc<Coordinator>, slot: Slot) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(coordinator.renew_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match coordinator.keep_alive(&slot).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("rollout slot {} expired; no longer renewed", slot.key);
                    return;
                }
                Err(e) => tracing::warn!("{e}; renewing rollout slot {} again later", slot.key),
            }
        }
    })
}

/// What [`report`] reports for a node in `status`: `applied` (a slot
/// given back) or `failed` (a failure recorded); `None` while applying.
pub fn report_kind(status: &crate::record::state::Status) -> Option<&'static str> {
    match status {
        crate::record::state::Status::Applied => Some("applied"),
        crate::record::state::Status::Failed { .. } => Some("failed"),
        crate::record::state::Status::Applying => None,
    }
}

/// Tells the group how this node's apply ended: a healthy new node gives
/// one slot of its release back; a node whose release failed to apply or
/// become healthy records the failure under its group and release.
pub async fn report(
    coordinator: &Coordinator,
    state: &crate::record::state::State,
) -> Result<(), EtcdError> {
    let release = &state.release.tag;
    match &state.status {
        crate::record::state::Status::Applied => match coordinator.give_back(release).await? {
            Some(key) => tracing::info!("rollout slot {key} given back: release {release} is up"),
            None => tracing::debug!("no rollout slot for {release} to give back"),
        },
        crate::record::state::Status::Failed { stage, reason } => {
            coordinator
                .record_failure(&FailureValue {
                    node: state.node_id.clone(),
                    release: release.clone(),
                    stage: stage.clone(),
                    reason: reason.clone(),
                    at: Timestamp::now(),
                })
                .await?;
            tracing::warn!(
                "recorded the failure of release {release} on this node in rollout group {}",
                coordinator.group
            );
        }
        crate::record::state::Status::Applying => {}
    }
    Ok(())
}

/// [`report`] for `driftless apply`, once per outcome (remembered in the
/// watcher's record, so the watcher retries when etcd could not be
/// reached). Without a coordinator, or before a release was reached,
/// there is nothing to report.
pub fn report_apply(root_path: &Path, config: &AgentConfig) -> anyhow::Result<()> {
    if config.rollout.coordinator == Kind::None {
        return Ok(());
    }
    let root = crate::root::Root::open(root_path)?;
    let Some(state) = crate::record::state::load(&root)? else {
        return Ok(());
    };
    let mut watch = crate::record::watch_state::WatchState::load(&root)?;
    let Some(kind) = report_kind(&state.status) else {
        return Ok(());
    };
    if watch.rollout_reported.as_deref() == Some(kind) {
        return Ok(());
    }
    let Some(coordinator) = Coordinator::from_config(root_path, &config.rollout)? else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(report(&coordinator, &state))?;
    watch.rollout_reported = Some(kind.to_owned());
    watch.save(&root)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segments_cannot_nest() {
        assert_eq!(segment("release/v2"), "release%2Fv2");
        assert_eq!(segment("50%/x"), "50%25%2Fx");
        assert_eq!(segment("i-0abc"), "i-0abc");
    }
}
