//! The watcher's entry in its group's roster in etcd (see
//! [`crate::fleet::roster`]): after each poll, where this node stands, for
//! `driftless fleet`. Best effort: a failure is logged and retried at the
//! next poll; nothing the node does depends on it.

use super::Watcher;
use crate::fleet::roster::NodeEntry;
use crate::record::watch_state::RequestStatus;

impl Watcher {
    /// Writes this node's roster entry when it changed or is due (unless
    /// `rollout.roster` is off).
    pub(super) async fn report_roster(&mut self) {
        let Some(coordinator) = self.coordinator.clone() else {
            return;
        };
        if !self.config.rollout.roster {
            return;
        }
        let entry = NodeEntry {
            node: self.node_id.clone(),
            release: self.applied.release.tag.clone(),
            phase: self.phase.name().to_owned(),
            desired: self.record.channel.as_ref().map(|c| c.release.clone()),
            rollout: self.record.rollout.as_ref().map(|r| r.state.clone()),
            drift: self.record.drift.len(),
            replacement: self.record.replacement.as_ref().map(|r| {
                match r.status {
                    RequestStatus::Pending => "pending",
                    RequestStatus::Done => "done",
                }
                .to_owned()
            }),
            at: jiff::Timestamp::now(),
        };
        let result = self
            .roster
            .report(
                coordinator.etcd(),
                coordinator.group(),
                coordinator.lease_ttl(),
                entry,
            )
            .await;
        if let Err(e) = result {
            tracing::debug!("{e}; the fleet view shows this node again after the next poll");
        }
    }
}
