//! Slots handed over at once. While a node waits for a rollout slot, a
//! task follows its group's keys in etcd through a watch and wakes the
//! watcher's loop when a slot is freed or a failure of the release it waits
//! for is recorded; the loop then decides again exactly as after a poll
//! (failures counted, a slot taken by the same create-if-absent
//! transaction). The watch only ever wakes: it decides nothing, so a
//! stream that lies, breaks or stalls can cost time, never a slot. Polls go
//! on underneath, so a node whose watch is down waits as it did without
//! one: at most a poll interval.
//!
//! The task's view is the set of slot keys, read once (with the store's
//! revision) and then kept up to date by the events of a watch that starts
//! one revision later, so nothing between the read and the watch is missed.
//! Every waiting node of the group sees a freed slot at the same moment;
//! to keep them from all asking etcd at once, each waits a random pause
//! below its stagger and asks only if its view still shows a free slot: the
//! first to ask takes the slot, and the others see it taken (its create
//! comes back on their watch) before their pause ends. The stagger starts
//! at [`STAGGER_MIN`] (a lone waiter goes within milliseconds) and doubles,
//! up to [`STAGGER_MAX`], each time the node was woken and another node
//! took the slot: with many waiters, the pauses spread until about one asks
//! per freed slot, and the first pause of many is still a few
//! milliseconds. It halves (down to [`STAGGER_MIN`]) each time another node
//! took a freed slot more than [`SLOW_TAKEOVER`] after it was freed while
//! this node had not woken: as the waiting nodes get fewer towards the end
//! of a roll, the pauses shrink again instead of keeping a handful of
//! nodes waiting up to a second for each freed slot. Wakes are at least
//! [`MIN_WAKE_GAP`] apart, whatever the stream says.
//!
//! The pauses are the fallback. A waiting node also stands in the line of
//! its release ([`super::line`]): it counts the nodes ahead of it when the
//! stream opens and follows the line's deletes (each with the deleted key's
//! create revision), so when a slot is freed the first nodes of the line,
//! as many as slots are free, wake at once, and the others only after
//! [`HEAD_START`] and their pause, in case the head is gone or slow. A node
//! that cannot join the line (etcd refused the key, or a delete came
//! without its create revision) waits with the pauses alone.
//!
//! While a stream is up, [`Handover::following`] is true: the watcher's
//! polls need not ask etcd again (a freed slot or a failure would have
//! woken it). A stream that is up but silent delays the node by at most
//! its life; with no stream, polls ask etcd as they did without one.
//!
//! Bounds: a stream lives at most [`STREAM_LIFE`] and is then opened
//! afresh (a connection that went quiet without closing is caught by
//! that); a stream that fails is reopened after a pause that doubles from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; a view of more than
//! `max_in_flight` + [`MAX_EXTRA_SLOT_KEYS`] slot keys ends the stream like
//! a failure; message and stream sizes are bounded in `etcd::watch`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Coordinator;
use super::line::Place;
use crate::fleet::etcd::EtcdError;
use crate::fleet::etcd::watch::EventKind;

/// The first longest random pause between seeing a freed slot and waking.
pub const STAGGER_MIN: Duration = Duration::from_millis(20);
/// The longest it grows to after races lost to other waiting nodes.
pub const STAGGER_MAX: Duration = Duration::from_secs(1);
/// A freed slot taken by another node later than this after it was freed,
/// while this node had not woken for it: the waiting nodes' pauses are
/// longer than their number needs, and this node's stagger halves.
pub const SLOW_TAKEOVER: Duration = Duration::from_millis(60);
/// The shortest time between two wakes.
pub const MIN_WAKE_GAP: Duration = Duration::from_millis(50);
/// The longest one watch stream is kept before it is opened afresh.
pub const STREAM_LIFE: Duration = Duration::from_secs(60);
/// The first pause after a failed stream.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest pause after failed streams.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that lived this long resets the pause to [`BACKOFF_MIN`].
const HEALTHY_LIFE: Duration = Duration::from_secs(10);
/// How long the nodes at the head of the line have to take a freed slot
/// before the others may ask too: a few of a slot's etcd requests, with
/// room for a loaded node.
pub const HEAD_START: Duration = Duration::from_millis(200);
/// How long a node that could not join the line waits outside it before
/// it tries again.
pub const REJOIN_AFTER: Duration = Duration::from_secs(300);
/// Slot keys beyond `max_in_flight` the view tolerates (keys an operator
/// or another tool left under `slots/`); more ends the stream.
pub const MAX_EXTRA_SLOT_KEYS: usize = 64;

/// Follows the group's slots for one release while it lives; dropping it
/// stops the task (and closes its stream).
#[derive(Debug)]
pub struct Handover {
    release: String,
    /// A stream is up (created, its view within bounds).
    following: Arc<AtomicBool>,
    /// This node's place in the line, while it has one.
    place: Arc<Mutex<Option<Place>>>,
    coordinator: Arc<Coordinator>,
    task: tokio::task::JoinHandle<()>,
}

impl Handover {
    /// Starts following the slots of `coordinator`'s group for `node`,
    /// waiting to go to `release`; `wake` is notified when the node should
    /// decide again.
    pub fn start(
        coordinator: Arc<Coordinator>,
        release: &str,
        node: &str,
        wake: Arc<Notify>,
    ) -> Self {
        Self::start_with_life(coordinator, release, node, wake, STREAM_LIFE)
    }

    /// [`Handover::start`] with streams that live `life`.
    fn start_with_life(
        coordinator: Arc<Coordinator>,
        release: &str,
        node: &str,
        wake: Arc<Notify>,
        life: Duration,
    ) -> Self {
        let following = Arc::new(AtomicBool::new(false));
        let place = Arc::new(Mutex::new(None));
        let waker = Waker {
            wake,
            last: None,
            woke: false,
            stagger: STAGGER_MIN,
            following: following.clone(),
        };
        let waiting = Waiting {
            coordinator: coordinator.clone(),
            release: release.to_owned(),
            node: node.to_owned(),
            place: place.clone(),
            renewed: None,
            refused: None,
        };
        let task = tokio::spawn(follow(waiting, waker, life));
        Self {
            release: release.to_owned(),
            following,
            place,
            coordinator,
            task,
        }
    }

    /// This node's place in the line, while it stands in it: the slot it
    /// takes lives on the place's lease, and the transaction that takes
    /// the slot deletes the place's key.
    pub fn place(&self) -> Option<Place> {
        lock(&self.place).clone()
    }

    /// This node took a slot on `lease`: when that is its place's lease,
    /// the lease is the slot's now, and is neither renewed as a place nor
    /// revoked when this handover ends.
    pub fn slot_taken(&self, lease: i64) {
        let mut place = lock(&self.place);
        if place.as_ref().is_some_and(|p| p.lease == lease) {
            *place = None;
        }
    }

    /// True while a stream is up: a freed slot or a failure of the release
    /// wakes the node without a poll.
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    /// The release the node waits to go to.
    pub fn release(&self) -> &str {
        &self.release
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        self.task.abort();
        // Out of the line at once rather than when the lease ends (its key
        // is gone already when this node took a slot).
        let Some(place) = lock(&self.place).take() else {
            return;
        };
        let coordinator = self.coordinator.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = coordinator.etcd.revoke(place.lease).await {
                    tracing::debug!("{e}; this node's place in the line ends with its lease");
                }
            });
        }
    }
}

fn lock(place: &Mutex<Option<Place>>) -> std::sync::MutexGuard<'_, Option<Place>> {
    place
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node waiting for a slot, and its place in the line.
struct Waiting {
    coordinator: Arc<Coordinator>,
    release: String,
    node: String,
    place: Arc<Mutex<Option<Place>>>,
    /// When the place's lease was last granted or renewed.
    renewed: Option<Instant>,
    /// When joining the line last failed: said once, and tried again
    /// only after [`REJOIN_AFTER`] (each try costs etcd a few requests).
    refused: Option<Instant>,
}

impl Waiting {
    /// This node's place: kept (renewed when due) or taken anew; `None`
    /// when etcd refuses it.
    async fn place(&mut self) -> Option<Place> {
        let held = lock(&self.place).clone();
        if let Some(place) = held {
            let due = self
                .renewed
                .is_none_or(|at| at.elapsed() >= self.coordinator.renew_every());
            if !due || self.renew(&place).await {
                return Some(place);
            }
        }
        if self.refused.is_some_and(|at| at.elapsed() < REJOIN_AFTER) {
            return None;
        }
        match self.coordinator.join_line(&self.release, &self.node).await {
            Ok(place) => {
                self.renewed = Some(Instant::now());
                *lock(&self.place) = Some(place.clone());
                Some(place)
            }
            Err(e) => {
                if self.refused.is_some() {
                    tracing::debug!("{e}; waiting for a slot outside the line");
                } else {
                    tracing::info!(
                        "{e}; waiting for a slot outside the line of {}, with random pauses (grant the node read-write access to {})",
                        self.release,
                        self.coordinator.line_prefix(&self.release)
                    );
                }
                self.refused = Some(Instant::now());
                None
            }
        }
    }

    /// Renews `place`'s lease; false when the place is gone (the lease
    /// ended), true when renewed or when etcd could not be asked.
    async fn renew(&mut self, place: &Place) -> bool {
        match self.coordinator.etcd.keep_alive(place.lease).await {
            Ok(true) => {
                self.renewed = Some(Instant::now());
                true
            }
            Ok(false) => {
                self.lost();
                false
            }
            Err(e) => {
                tracing::debug!("{e}; renewing this node's place in the line again later");
                true
            }
        }
    }

    /// The place is gone: the next stream takes a new one. Its lease is
    /// left to end by itself: it may carry the slot this node just took.
    fn lost(&mut self) {
        self.renewed = None;
        *lock(&self.place) = None;
    }
}

/// Opens stream after stream, pausing after each failure.
async fn follow(mut waiting: Waiting, mut waker: Waker, life: Duration) {
    let mut pause = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let opened = Instant::now();
        let result = stream_once(&mut waiting, &mut waker, life).await;
        waker.following.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => {
                pause = BACKOFF_MIN;
                failing = false;
            }
            Err(e) => {
                if opened.elapsed() >= HEALTHY_LIFE {
                    pause = BACKOFF_MIN;
                }
                if failing {
                    tracing::debug!("{e}; watching the rollout slots again in {pause:?}");
                } else {
                    tracing::warn!(
                        "{e}; a freed rollout slot is seen at the next poll until the watch works again (retried in {pause:?})"
                    );
                }
                failing = true;
                // The next stream reads the slots afresh: nothing the lost
                // one missed stays unseen.
                tokio::time::sleep(jittered(pause)).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Wakes the watcher's loop, never more often than [`MIN_WAKE_GAP`].
struct Waker {
    wake: Arc<Notify>,
    last: Option<Instant>,
    /// Woken for a freed slot, and no slot taken since.
    woke: bool,
    /// The longest random pause before waking for a freed slot.
    stagger: Duration,
    following: Arc<AtomicBool>,
}

impl Waker {
    /// When the next wake may be.
    fn earliest(&self) -> Instant {
        self.last
            .map_or_else(Instant::now, |last| last + MIN_WAKE_GAP)
    }

    fn wake_now(&mut self) {
        self.last = Some(Instant::now());
        self.wake.notify_one();
    }

    /// A random pause below the stagger.
    fn pause(&self) -> Duration {
        self.stagger.mul_f64(random_fraction())
    }

    /// Another node took a slot, `after` it was freed (when this task saw
    /// it freed). When this node was woken for it (and still waits, or
    /// this task would be gone), that node was quicker: wait longer. When
    /// it took long and this node had not woken, the waiting nodes waited
    /// longer than their number needs: wait less.
    fn slot_taken(&mut self, after: Option<Duration>) {
        self.stagger = next_stagger(
            self.stagger,
            std::mem::take(&mut self.woke),
            after.is_some_and(|after| after > SLOW_TAKEOVER),
        );
    }
}

/// The stagger after another node took a freed slot: doubled when this
/// node had woken for it (a race lost), halved when the take was slow and
/// this node had not woken, kept otherwise; within
/// [`STAGGER_MIN`]..=[`STAGGER_MAX`].
fn next_stagger(stagger: Duration, woke: bool, slow: bool) -> Duration {
    if woke {
        (stagger * 2).min(STAGGER_MAX)
    } else if slow {
        (stagger / 2).max(STAGGER_MIN)
    } else {
        stagger
    }
}

/// One stream: the slot keys (and this node's place in the line) read,
/// then followed until its `life` ends (`Ok`) or the stream fails.
async fn stream_once(
    waiting: &mut Waiting,
    waker: &mut Waker,
    life: Duration,
) -> Result<(), EtcdError> {
    let coordinator = waiting.coordinator.clone();
    let slots_prefix = coordinator.slots_prefix();
    let failures = coordinator.failures_prefix(&waiting.release);
    let line_prefix = coordinator.line_prefix(&waiting.release);
    let place = waiting.place().await;
    let (revision, keys) = coordinator.etcd.keys(&slots_prefix).await?;
    let mut view = View {
        taken: keys.into_iter().collect(),
        max_in_flight: coordinator.max_in_flight as usize,
        line: None,
    };
    view.check()?;
    if let Some(place) = place {
        match coordinator
            .ahead_in_line(&waiting.release, &place, revision)
            .await
        {
            Ok(ahead) => view.line = Some(Line { place, ahead }),
            Err(e) => tracing::debug!("{e}; waiting outside the line until the next stream"),
        }
    }
    // Only the slots, this release's failures and the deletes of its
    // line: the roster's writes (every node's state, under `nodes/`)
    // would wake every waiting node for nothing, N waiting nodes times N
    // writers over a roll, and so would each node joining the line.
    let deletes_of: &[&str] = if view.line.is_some() {
        &[&line_prefix]
    } else {
        &[]
    };
    let mut stream = coordinator
        .etcd
        .watch(&[&slots_prefix, &failures], deletes_of, revision + 1)
        .await?;
    waker.following.store(true, Ordering::Relaxed);
    let end = Instant::now() + life;
    let renew_every = coordinator.renew_every();
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    // A slot already free (freed since the last decision): wake, staggered.
    let mut due = view.free().then(|| Instant::now() + view.delay(waker));
    // A failure was recorded: wake even with every slot taken.
    let mut failed = false;
    // When each slot free now was freed, oldest first (as many as slots).
    let mut freed_at: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    loop {
        let next = due.map(|due| due.max(waker.earliest()));
        tokio::select! {
            () = tokio::time::sleep_until(end) => return Ok(()),
            _ = renew.tick(), if view.line.is_some() => {
                if let Some(line) = &view.line
                    && !waiting.renew(&line.place).await
                {
                    view.line = None;
                }
            }
            () = sleep_until_some(next) => {
                due = None;
                if view.free() || failed {
                    waker.woke = view.free();
                    waker.wake_now();
                }
                failed = false;
            }
            events = stream.next() => {
                let mut moved = false;
                for event in events? {
                    if event.key.starts_with(&slots_prefix) {
                        match event.kind {
                            EventKind::Put => {
                                if view.taken.insert(event.key) {
                                    let after = freed_at.pop_front().map(|at| at.elapsed());
                                    waker.slot_taken(after);
                                }
                            }
                            EventKind::Delete => {
                                // A delete of a key the view did not hold
                                // frees nothing.
                                if view.taken.remove(&event.key)
                                    && freed_at.len() < view.max_in_flight
                                {
                                    freed_at.push_back(Instant::now());
                                }
                                moved = true;
                            }
                        }
                    } else if event.key.starts_with(&line_prefix) {
                        if event.kind == EventKind::Delete {
                            match view.line_left(&event.key, event.created) {
                                LineMove::Up => moved = true,
                                LineMove::PlaceLost => waiting.lost(),
                                LineMove::None => {}
                            }
                        }
                    } else if event.kind == EventKind::Put && event.key.starts_with(&failures) {
                        // A failure of the release this node waits for:
                        // it may stop the rollout; no stagger.
                        failed = true;
                        due = Some(Instant::now());
                    }
                }
                view.check()?;
                if moved && view.free() {
                    // At the head: at once. Otherwise one pause a freed
                    // slot, as drawn when it was freed.
                    let delay = view.delay(waker);
                    if delay.is_zero() || due.is_none() {
                        due = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }
}

/// What a delete in the line did to this node's place.
#[derive(Debug, PartialEq, Eq)]
enum LineMove {
    /// A node ahead left: one fewer ahead.
    Up,
    /// This node's own key is gone.
    PlaceLost,
    /// Nothing that moves it (a node behind left, or the line's state is
    /// unknown from now on).
    None,
}

/// This node's place in the line and how many stand before it.
struct Line {
    place: Place,
    ahead: u64,
}

/// The slot keys etcd holds for the group, and this node's place in the
/// line, as this task last saw them.
struct View {
    taken: BTreeSet<String>,
    max_in_flight: usize,
    /// `None`: outside the line (or its state unknown) for this stream.
    line: Option<Line>,
}

impl View {
    fn free(&self) -> bool {
        self.taken.len() < self.max_in_flight
    }

    /// How long after a slot is freed this node asks: at once at the head
    /// of the line, after the head start and a pause behind it, after a
    /// pause outside it.
    fn delay(&self, waker: &Waker) -> Duration {
        let free = self.max_in_flight.saturating_sub(self.taken.len()) as u64;
        match &self.line {
            Some(line) if line.ahead < free => Duration::ZERO,
            Some(_) => HEAD_START + waker.pause(),
            None => waker.pause(),
        }
    }

    /// A key of the line was deleted (`key`, created at revision
    /// `created`, 0 when the stream did not say). Another node ahead of
    /// this one left: it moves up. Its own key gone (it took a slot, or
    /// someone deleted it), or a delete that does not say when its key was
    /// created: outside the line until the next stream.
    fn line_left(&mut self, key: &str, created: i64) -> LineMove {
        let Some(line) = &mut self.line else {
            return LineMove::None;
        };
        if key == line.place.key {
            self.line = None;
            LineMove::PlaceLost
        } else if created <= 0 {
            self.line = None;
            LineMove::None
        } else if created < line.place.created {
            line.ahead = line.ahead.saturating_sub(1);
            LineMove::Up
        } else {
            LineMove::None
        }
    }

    fn check(&self) -> Result<(), EtcdError> {
        if self.taken.len() > self.max_in_flight.saturating_add(MAX_EXTRA_SLOT_KEYS) {
            return Err(EtcdError::new(
                "watch",
                format!(
                    "{} keys under the group's slots/ for {} slots; remove the stray ones",
                    self.taken.len(),
                    self.max_in_flight
                ),
            ));
        }
        Ok(())
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `base` ±25 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.75 + random_fraction() / 2.0)
}

/// A random number in [0, 1).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests;
