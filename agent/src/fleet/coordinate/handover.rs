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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Coordinator;
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
    task: tokio::task::JoinHandle<()>,
}

impl Handover {
    /// Starts following the slots of `coordinator`'s group for a node
    /// waiting to go to `release`; `wake` is notified when the node should
    /// decide again.
    pub fn start(coordinator: Arc<Coordinator>, release: &str, wake: Arc<Notify>) -> Self {
        Self::start_with_life(coordinator, release, wake, STREAM_LIFE)
    }

    /// [`Handover::start`] with streams that live `life`.
    fn start_with_life(
        coordinator: Arc<Coordinator>,
        release: &str,
        wake: Arc<Notify>,
        life: Duration,
    ) -> Self {
        let failures = coordinator.failures_prefix(release);
        let following = Arc::new(AtomicBool::new(false));
        let waker = Waker {
            wake,
            last: None,
            woke: false,
            stagger: STAGGER_MIN,
            following: following.clone(),
        };
        let task = tokio::spawn(follow(coordinator, failures, waker, life));
        Self {
            release: release.to_owned(),
            following,
            task,
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
    }
}

/// Opens stream after stream, pausing after each failure.
async fn follow(coordinator: Arc<Coordinator>, failures: String, mut waker: Waker, life: Duration) {
    let mut pause = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let opened = Instant::now();
        let result = stream_once(&coordinator, &failures, &mut waker, life).await;
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

/// One stream: the slot keys read, then followed until its `life` ends
/// (`Ok`) or the stream fails.
async fn stream_once(
    coordinator: &Coordinator,
    failures: &str,
    waker: &mut Waker,
    life: Duration,
) -> Result<(), EtcdError> {
    let slots_prefix = coordinator.slots_prefix();
    let (revision, keys) = coordinator.etcd.keys(&slots_prefix).await?;
    let mut view = View {
        taken: keys.into_iter().collect(),
        max_in_flight: coordinator.max_in_flight as usize,
    };
    view.check()?;
    // Only the slots and this release's failures: the roster's writes
    // (every node's state, under `nodes/`) would wake every waiting node
    // for nothing, N waiting nodes times N writers over a roll.
    let mut stream = coordinator
        .etcd
        .watch(&[&slots_prefix, failures], revision + 1)
        .await?;
    waker.following.store(true, Ordering::Relaxed);
    let end = Instant::now() + life;
    // A slot already free (freed since the last decision): wake, staggered.
    let mut due = view.free().then(|| Instant::now() + waker.pause());
    // A failure was recorded: wake even with every slot taken.
    let mut failed = false;
    // When each slot free now was freed, oldest first (as many as slots).
    let mut freed_at: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    loop {
        let next = due.map(|due| due.max(waker.earliest()));
        tokio::select! {
            () = tokio::time::sleep_until(end) => return Ok(()),
            () = sleep_until_some(next) => {
                due = None;
                if view.free() || failed {
                    waker.woke = view.free();
                    waker.wake_now();
                }
                failed = false;
            }
            events = stream.next() => {
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
                                if due.is_none() && view.free() {
                                    due = Some(Instant::now() + waker.pause());
                                }
                            }
                        }
                    } else if event.kind == EventKind::Put && event.key.starts_with(failures) {
                        // A failure of the release this node waits for:
                        // it may stop the rollout; no stagger.
                        failed = true;
                        due = Some(Instant::now());
                    }
                }
                view.check()?;
            }
        }
    }
}

/// The slot keys etcd holds for the group, as this task last saw them.
struct View {
    taken: BTreeSet<String>,
    max_in_flight: usize,
}

impl View {
    fn free(&self) -> bool {
        self.taken.len() < self.max_in_flight
    }

    fn check(&self) -> Result<(), EtcdError> {
        if self.taken.len() > self.max_in_flight.saturating_add(MAX_EXTRA_SLOT_KEYS) {
            return Err(EtcdError {
                call: "watch",
                reason: format!(
                    "{} keys under the group's slots/ for {} slots; remove the stray ones",
                    self.taken.len(),
                    self.max_in_flight
                ),
            });
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

// What a real etcd sends (a freed slot, a failure recorded, other keys)
// is tested against a real etcd in `tests/handover.rs`. The tests here use
// the fake in `etcd::fake` for streams no real etcd produces: a flood of
// events, a stream that ends at once or goes quiet on an open connection,
// more slot keys than any group has.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::fleet::etcd::fake::{self, FakeEtcd, Watch};

    /// A handover's stream holds two watches: the slots, the failures.
    const WATCHES: usize = 2;

    /// Follows group `g` of the fake for release `v2`; returns the handover
    /// and the times of its wakes since `started`.
    fn follow_fake(server: &FakeEtcd) -> (Handover, Arc<Mutex<Vec<Duration>>>, std::time::Instant) {
        follow_fake_for(server, STREAM_LIFE)
    }

    /// [`follow_fake`] with streams that live `life`.
    fn follow_fake_for(
        server: &FakeEtcd,
        life: Duration,
    ) -> (Handover, Arc<Mutex<Vec<Duration>>>, std::time::Instant) {
        let root = tempfile::tempdir().expect("a temporary root");
        let settings = fake::settings(&server.url, Duration::from_millis(500));
        let coordinator = Coordinator::from_config(root.path(), &settings)
            .expect("a coordinator")
            .expect("etcd");
        let wake = Arc::new(Notify::new());
        let started = std::time::Instant::now();
        let wakes = Arc::new(Mutex::new(Vec::new()));
        let (seen, notified) = (wakes.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                notified.notified().await;
                seen.lock().expect("wakes").push(started.elapsed());
            }
        });
        let handover = Handover::start_with_life(Arc::new(coordinator), "v2", wake, life);
        (handover, wakes, started)
    }

    fn wakes_so_far(wakes: &Mutex<Vec<Duration>>) -> Vec<Duration> {
        wakes.lock().expect("wakes").clone()
    }

    #[tokio::test]
    async fn wakes_are_spaced_whatever_the_stream_says() {
        // Hostile: a slot freed again and again, a message a millisecond.
        let server = FakeEtcd::start(
            &[],
            Watch::Flood {
                chunk: |n| {
                    if n == 0 {
                        fake::created_n(WATCHES)
                    } else {
                        fake::event("DELETE", "/driftless/g/slots/0")
                    }
                },
                every: Duration::from_millis(1),
            },
        )
        .await;
        let (_handover, wakes, _) = follow_fake(&server);
        let window = Duration::from_millis(1000);
        tokio::time::sleep(window).await;
        let wakes = wakes_so_far(&wakes);
        let most = window.as_millis() / MIN_WAKE_GAP.as_millis() + 2;
        assert!(
            (3..=most as usize).contains(&wakes.len()),
            "{} wakes in {window:?}",
            wakes.len()
        );
        // Measured where the wakes arrive: a little timer slack.
        let shortest = wakes.windows(2).map(|w| w[1] - w[0]).min();
        assert!(
            shortest >= Some(MIN_WAKE_GAP * 4 / 5),
            "wakes {shortest:?} apart: {wakes:?}"
        );
    }

    #[tokio::test]
    async fn a_node_that_keeps_losing_the_race_for_a_slot_waits_longer() {
        // The one slot freed and taken again by another node 30 ms later,
        // over and over (a fleet with many waiters, as one of them sees it).
        let server = FakeEtcd::start(
            &["/driftless/g/slots/0"],
            Watch::Flood {
                chunk: |n| match n {
                    0 => fake::created_n(WATCHES),
                    n if n % 2 == 1 => fake::event("DELETE", "/driftless/g/slots/0"),
                    _ => fake::event("PUT", "/driftless/g/slots/0"),
                },
                every: Duration::from_millis(30),
            },
        )
        .await;
        let (_handover, wakes, _) = follow_fake(&server);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        // About 33 slots freed. With a fixed stagger of 50 ms this node
        // would ask for 60 % of them (about 20); doubling after each lost
        // race, for a handful.
        let wakes = wakes_so_far(&wakes);
        assert!(wakes.len() <= 8, "{} wakes: {wakes:?}", wakes.len());
    }

    #[test]
    fn the_stagger_grows_with_races_lost_and_shrinks_with_slow_takeovers() {
        let mut stagger = STAGGER_MIN;
        for _ in 0..10 {
            stagger = next_stagger(stagger, true, false);
        }
        assert_eq!(stagger, STAGGER_MAX, "races lost: up to the most");
        assert_eq!(
            next_stagger(stagger, false, false),
            STAGGER_MAX,
            "a slot taken quickly by another: as it was"
        );
        // Towards the end of a roll: few nodes wait, and each freed slot
        // is taken long after it was freed.
        let mut steps = 0;
        while stagger > STAGGER_MIN {
            stagger = next_stagger(stagger, false, true);
            steps += 1;
        }
        assert_eq!(stagger, STAGGER_MIN);
        // As many halvings as doublings took it up, no more.
        let most = (STAGGER_MAX.as_secs_f64() / STAGGER_MIN.as_secs_f64())
            .log2()
            .ceil() as usize;
        assert!(steps <= most, "{steps} slow takeovers to come back down");
        assert_eq!(next_stagger(STAGGER_MIN, false, true), STAGGER_MIN);
        assert_eq!(
            next_stagger(STAGGER_MIN, true, true),
            STAGGER_MIN * 2,
            "a race lost counts first"
        );
    }

    #[tokio::test]
    async fn a_failing_watch_is_reopened_after_growing_pauses() {
        // Hostile (or a proxy in the way): every stream ends right after
        // it was created.
        let server =
            FakeEtcd::start(&[], Watch::ChunksThenClose(vec![fake::created_n(WATCHES)])).await;
        let (_handover, _wakes, _) = follow_fake(&server);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        // Pauses of 0.5, 1 and 2 s (±25 %): streams at 0, ~0.5, ~1.5, ~3.5 s.
        let streams = server.watch_count();
        assert!((2..=4).contains(&streams), "{streams} streams in 3 s");
    }

    #[tokio::test]
    async fn a_quiet_stream_is_reopened_when_its_life_ends() {
        // A connection gone quiet without closing (a peer that vanished
        // behind a middlebox): created, then silence.
        let server = FakeEtcd::start(
            &["/driftless/g/slots/0"],
            Watch::Chunks(vec![fake::created_n(WATCHES)]),
        )
        .await;
        let life = Duration::from_millis(300);
        let (_handover, wakes, _) = follow_fake_for(&server, life);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let streams = server.watch_count();
        assert!((3..=5).contains(&streams), "{streams} streams in 1 s");
        assert!(wakes_so_far(&wakes).is_empty(), "every slot taken: no wake");
    }

    #[tokio::test]
    async fn a_flood_of_slot_keys_ends_the_stream() {
        // Hostile: ever new keys under slots/, far more than the group has
        // slots. Without the bound, the view would grow with the stream.
        let server = FakeEtcd::start(
            &[],
            Watch::Flood {
                chunk: |n| {
                    if n == 0 {
                        fake::created_n(WATCHES)
                    } else {
                        fake::event("PUT", &format!("/driftless/g/slots/{n}"))
                    }
                },
                every: Duration::from_millis(1),
            },
        )
        .await;
        let (_handover, _wakes, _) = follow_fake(&server);
        // 1 + 64 keys end the first stream well within 0.5 s; the next
        // opens after a pause of 0.5 s (±25 %).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let streams = server.watch_count();
        assert!(streams >= 2, "{streams} streams: the flood was never cut");
    }

    #[tokio::test]
    async fn dropping_the_handover_closes_its_stream() {
        let server =
            FakeEtcd::start(&[], Watch::ChunksThenClose(vec![fake::created_n(WATCHES)])).await;
        let (handover, _wakes, _) = follow_fake(&server);
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(handover);
        let streams = server.watch_count();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(server.watch_count(), streams, "no stream after the drop");
    }
}
