//! What a real etcd sends (a freed slot, a failure recorded, other keys)
//! is tested against a real etcd in `tests/handover.rs`. The tests here use
//! the fake in `etcd::fake` for streams no real etcd produces: a flood of
//! events, a stream that ends at once or goes quiet on an open connection,
//! more slot keys than any group has. The fake answers no lease grant:
//! the node waits outside the line, with random pauses alone.

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
    let handover = Handover::start_with_life(Arc::new(coordinator), "v2", "n1", wake, life);
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
    let server = FakeEtcd::start(&[], Watch::ChunksThenClose(vec![fake::created_n(WATCHES)])).await;
    let (_handover, _wakes, _) = follow_fake(&server);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // Pauses of 0.5, 1 and 2 s (±25 %): streams at 0, ~0.5, ~1.5, ~3.5 s.
    let streams = server.watch_count();
    assert!((2..=4).contains(&streams), "{streams} streams in 3 s");
}

#[tokio::test]
async fn a_node_refused_a_place_in_the_line_does_not_ask_again_at_every_stream() {
    // etcd refuses the lease (the node's user may not write `line/`, say):
    // every stream ends at once and is opened again.
    let server = FakeEtcd::start(&[], Watch::ChunksThenClose(vec![fake::created_n(WATCHES)])).await;
    let (_handover, _wakes, _) = follow_fake(&server);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let streams = server.watch_count();
    assert!(streams >= 2, "{streams} streams");
    assert_eq!(
        server.grants.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one try at the line in {streams} streams"
    );
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
    let server = FakeEtcd::start(&[], Watch::ChunksThenClose(vec![fake::created_n(WATCHES)])).await;
    let (handover, _wakes, _) = follow_fake(&server);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(handover);
    let streams = server.watch_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.watch_count(), streams, "no stream after the drop");
}

#[test]
fn deletes_in_the_line_move_a_node_up_only_when_they_were_ahead_of_it() {
    let place = Place {
        key: "/driftless/g/line/v2/n5".into(),
        lease: 7,
        created: 50,
    };
    let mut view = View {
        taken: BTreeSet::new(),
        max_in_flight: 1,
        line: Some(Line { place, ahead: 2 }),
    };
    let ahead = |view: &View| view.line.as_ref().map(|l| l.ahead);
    assert_eq!(
        view.line_left("/driftless/g/line/v2/n9", 60),
        LineMove::None
    );
    assert_eq!(ahead(&view), Some(2), "a node behind left");
    assert_eq!(view.line_left("/driftless/g/line/v2/n1", 10), LineMove::Up);
    assert_eq!(ahead(&view), Some(1));
    assert_eq!(view.line_left("/driftless/g/line/v2/n2", 20), LineMove::Up);
    assert_eq!(view.line_left("/driftless/g/line/v2/n3", 30), LineMove::Up);
    assert_eq!(ahead(&view), Some(0), "never below none ahead");
    // A delete that does not say when its key was created: whether it was
    // ahead is unknown, so the node waits outside the line.
    assert_eq!(view.line_left("/driftless/g/line/v2/n4", 0), LineMove::None);
    assert_eq!(ahead(&view), None);

    let place = Place {
        key: "/driftless/g/line/v2/n5".into(),
        lease: 7,
        created: 50,
    };
    view.line = Some(Line { place, ahead: 3 });
    assert_eq!(
        view.line_left("/driftless/g/line/v2/n5", 50),
        LineMove::PlaceLost
    );
    assert_eq!(ahead(&view), None);
}
