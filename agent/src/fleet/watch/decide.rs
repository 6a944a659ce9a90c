//! Whether this node goes now: the rollout policy, a slot of the
//! coordinator (taken, renewed, given back when the channel rolls back) and
//! the report of how the apply ended. Apart from the watcher's loop, which
//! only asks `decide` after each poll, and when the watch of the group's
//! slots wakes it (a slot freed, a failure recorded) while it waits for one;
//! while that watch is up, a poll that saw no new channel tip does not ask.

use std::sync::Arc;

use super::Watcher;
use crate::fleet::coordinate::handover::Handover;
use crate::fleet::coordinate::{Coordinator, Slot, SlotAnswer};
use crate::record::lifecycle::Event;
use crate::record::replacement::Reason;
use crate::record::watch_state::{RequestStatus, RolloutStatus};

/// The rollout state of a node that may go but finds every slot taken.
const WAITING_FOR_SLOT: &str = "waiting-for-slot";

impl Watcher {
    /// Asks for replacement when the accepted channel names another
    /// release and the rollout lets this node go: the policy (canary,
    /// waves, windows, hold, failures) and, with a coordinator, a slot of
    /// its group. With the coordinator out of reach it fails closed: it
    /// does not ask, and tries again at the next poll. While it waits for a
    /// slot, it follows the group's slots (see [`Handover`]).
    pub(super) async fn decide(&mut self) {
        self.decide_now().await;
        self.follow_slots();
    }

    /// The watch of the group's slots woke the loop: decide again, as
    /// after a poll, if the node still waits for a slot.
    pub(super) async fn on_wake(&mut self) {
        if self.handover.is_some() {
            self.decide().await;
        }
    }

    /// True when this node waits for a slot, has reported its own apply,
    /// and the watch of the group's slots is up: a poll that saw the same
    /// channel tip need not ask etcd again.
    pub(super) fn slots_followed(&self) -> bool {
        let reported = crate::fleet::coordinate::report_kind(&self.applied.status)
            .is_none_or(|kind| self.record.rollout_reported.as_deref() == Some(kind));
        reported && self.handover.as_ref().is_some_and(Handover::following)
    }

    /// Follows the group's slots while this node waits for one (and the
    /// loop runs), and stops following them otherwise.
    fn follow_slots(&mut self) {
        let waiting_for = self
            .record
            .rollout
            .as_ref()
            .filter(|r| r.state == WAITING_FOR_SLOT && !self.already_going())
            .map(|r| r.release.clone());
        let (Some(release), Some(coordinator), Some(wake)) =
            (waiting_for, self.coordinator.clone(), self.wake.clone())
        else {
            self.handover = None;
            return;
        };
        if self
            .handover
            .as_ref()
            .is_none_or(|h| h.release() != release)
        {
            self.handover = Some(Handover::start(coordinator, &release, &self.node_id, wake));
        }
    }

    async fn decide_now(&mut self) {
        self.report_apply().await;
        let Some(seen) = self.record.channel.clone() else {
            return;
        };
        if self.channel_stale() {
            // A stale channel is never acted on: no request, no withdrawal.
            let why = format!(
                "the channel is stale since {}: nothing is done on it until a fresh one comes",
                seen.file.expires
            );
            if self.record.waiting.as_deref() != Some(why.as_str()) {
                self.record.waiting = Some(why);
                self.save();
            }
            return;
        }
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
        let survey = match &self.coordinator {
            Some(coordinator) => match coordinator.survey(&seen.release).await {
                Ok(survey) => Some(survey),
                Err(e) => return self.unreachable(status, &e),
            },
            None => None,
        };
        if let Some(survey) = &survey {
            status.failures = status.failures.saturating_add(survey.failures);
        }
        // The rollout decides when: canary, waves, windows, hold, failures.
        let decision = crate::fleet::rollout::decide(
            &self.node_id,
            &seen.file,
            seen.file.moved_at,
            self.record
                .freshness
                .as_ref()
                .map_or_else(crate::release::clock::system_now, |f| f.judged.at),
            status.failures,
        );
        status.state = decision.name().to_owned();
        if decision != crate::fleet::rollout::Decision::Go {
            return self.wait(status, decision.to_string());
        }
        if let (Some(coordinator), Some(survey)) = (self.coordinator.clone(), &survey) {
            let handover = self
                .handover
                .as_ref()
                .filter(|h| h.release() == seen.release);
            let place = handover.and_then(Handover::place);
            match coordinator
                .take_slot(
                    survey,
                    &self.node_id,
                    &pinned.tag,
                    &seen.release,
                    place.as_ref(),
                )
                .await
            {
                Ok(SlotAnswer::Held(slot)) => {
                    if let Some(handover) = handover {
                        handover.slot_taken(slot.lease);
                    }
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
                    status.state = WAITING_FOR_SLOT.into();
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
        self.step(Event::ReplacementWithdrawn);
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
}
