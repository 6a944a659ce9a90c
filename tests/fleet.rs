//! A fleet on one machine (see `support/fleet.rs`): N nodes, each a root
//! with its own node id running the built `driftless apply` and
//! `driftless watch`, one nginx + `git-http-backend` serving the signed
//! releases and channel, one real etcd (`rollout.coordinator: etcd`), and
//! an autoscaler loop in the test that replaces every node that asks by a
//! new node built from the channel.
//!
//! What must hold:
//! * the channel moves to v2: every node ends on v2, never more than
//!   `max_in_flight` nodes away at once (sampled on every tick of the
//!   autoscaler; "away" is defined in `support/fleet.rs`) and never more
//!   slot keys than `max_in_flight` in etcd;
//! * the channel moves to a release whose health check fails: the rollout
//!   stops after `max_failures` failed new nodes, the rest of the fleet
//!   stays on the old release (checked past the lease time, when the
//!   failed nodes' slots have expired) and says it stopped;
//! * etcd is stopped and restarted mid-rollout, and a whole wave of nodes
//!   vanishes while holding slots: the fleet still converges, stalling no
//!   longer than the lease time.
//!
//! `DRIFTLESS_FLEET_NODES` sets N (default 50, as in CI; at least 20, the
//! last scenario losing a wave of 5 and needing waves before and after;
//! all three take about 1.5 to 2 minutes at 50 on 2 CPUs). The scenarios
//! run one at a time (a lock), each on its own servers and directories;
//! every wait is bounded and every child is killed when a fleet is
//! dropped, also when a test fails.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use channel::watch_json;
use fleet::{Fleet, FleetOptions, FleetSource, Stats};

/// Nodes in CI.
const DEFAULT_NODES: usize = 50;
/// The longest one wave of replacements may take here: the ask (a poll),
/// the boot delay, `driftless apply` of the debug build (fetch, verify,
/// write, health check, slot given back), on a loaded CI machine.
const WAVE_BUDGET: Duration = Duration::from_secs(10);
/// Slack on top of every bound.
const SLACK: Duration = Duration::from_secs(30);
/// How long etcd stays stopped mid-rollout.
const ETCD_DOWN: Duration = Duration::from_secs(3);

/// One fleet at a time: each runs up to N watchers.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// N, from `DRIFTLESS_FLEET_NODES`.
fn nodes() -> usize {
    match std::env::var("DRIFTLESS_FLEET_NODES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("DRIFTLESS_FLEET_NODES={text:?}: {e}")),
        Err(_) => DEFAULT_NODES,
    }
}

/// How long rolling `nodes` nodes `max_in_flight` at a time may take.
fn roll_limit(nodes: usize, max_in_flight: u32) -> Duration {
    let waves = u32::try_from(nodes.div_ceil(max_in_flight as usize)).expect("a few waves");
    WAVE_BUDGET * waves + SLACK
}

/// The original nodes' ids: `n0001` … `nNNNN`.
fn original_ids(nodes: usize) -> Vec<String> {
    (1..=nodes).map(|i| format!("n{i:04}")).collect()
}

/// The ids of the nodes that asked, sorted.
fn askers(stats: &Stats) -> Vec<String> {
    let mut ids: Vec<String> = stats.asks.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn the_fleet_rolls_to_the_new_release_never_more_than_max_in_flight_away() {
    rolls_never_more_than_max_in_flight_away(FleetSource::Git);
}

#[test]
fn a_fleet_on_static_files_rolls_the_same_way() {
    // `driftless publish`'s files, published again after each channel
    // commit: the same refresh, hold, promote and roll, the same bounds.
    rolls_never_more_than_max_in_flight_away(FleetSource::Static);
}

fn rolls_never_more_than_max_in_flight_away(source: FleetSource) {
    let _serial = serial();
    const MAX_IN_FLIGHT: u32 = 5;
    let n = nodes();
    let started = Instant::now();
    // At most max_in_flight away holds while replacements come up within
    // the lease, counted from the old node's last renewal before it
    // stopped (so at least 2/3 of it): a long lease keeps one slow apply on
    // a loaded machine from letting another node go early. Nothing here
    // waits for a lease to end.
    let mut options = FleetOptions::new(n, MAX_IN_FLIGHT);
    options.lease_ttl = Duration::from_secs(30);
    options.source = source;
    let mut fleet = Fleet::start(options);
    eprintln!("{n} nodes up on v1 in {:?} ({source:?})", started.elapsed());
    fleet.stats = Stats::default();

    // The refresh job renews the channel: every node accepts it, nobody goes.
    let refresher = fleet.refresher.clone();
    let refreshed = fleet.channel(&refresher, &["refresh"]);
    let poll = fleet.options.poll_interval;
    fleet.run_until(poll * 10 + SLACK, "every node accepts the refresh", |f| {
        f.nodes
            .values()
            .all(|n| watch_json(&n.root)["channel"]["tip"] == refreshed.as_str())
    });
    for node in fleet.nodes.values() {
        let channel = &watch_json(&node.root)["channel"];
        assert_eq!(channel["role"], "refresh", "{}: {channel}", node.id);
    }
    // Held, then promoted: everyone learns of v2, nobody goes.
    let key = fleet.key.clone();
    fleet.channel(&key, &["hold"]);
    let held = fleet.channel(&key, &["promote", "v2"]);
    fleet.run_until(poll * 10 + SLACK, "every node sees the held v2", |f| {
        f.nodes.values().all(|n| {
            let record = watch_json(&n.root);
            record["channel"]["tip"] == held.as_str()
                && record["waiting"]
                    .as_str()
                    .is_some_and(|w| w.contains("hold"))
        })
    });
    fleet.run_for(poll * 3);
    assert!(
        fleet.stats.asks.is_empty(),
        "asked while held: {:?}",
        askers(&fleet.stats)
    );

    let rolling = Instant::now();
    fleet.channel(&key, &["release"]);
    fleet.run_until(roll_limit(n, MAX_IN_FLIGHT), "every node on v2", |f| {
        f.converged("v2")
    });
    let took = rolling.elapsed();
    let stats = &fleet.stats;
    eprintln!(
        "{source:?}: rolled {n} nodes, {MAX_IN_FLIGHT} at a time, in {took:?}; {} samples, max away {}, max slots {}",
        stats.samples, stats.max_away, stats.max_slots
    );

    assert_eq!(fleet.nodes.len(), n, "{}", fleet.describe());
    let census = fleet.census();
    assert_eq!(
        census.get(&("v2".to_owned(), "applied".to_owned())),
        Some(&n),
        "{census:?}"
    );
    assert_eq!(askers(stats), original_ids(n), "every old node asked once");
    assert!(
        stats.max_away <= MAX_IN_FLIGHT as usize,
        "{} nodes were away at once (max_in_flight {MAX_IN_FLIGHT})",
        stats.max_away
    );
    assert!(
        stats.max_slots <= MAX_IN_FLIGHT as usize,
        "{} slots in etcd at once",
        stats.max_slots
    );
    if n >= MAX_IN_FLIGHT as usize {
        assert_eq!(
            stats.max_away, MAX_IN_FLIGHT as usize,
            "the rollout used all its slots (and the sampling saw it)"
        );
    }
    assert_eq!(stats.etcd_unanswered, 0);
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    // Every healthy replacement gave its slot back: none is left to expire.
    assert_eq!(fleet.slots(), Some(0), "{}", fleet.describe());

    // Every request went where the source says: nothing else was asked.
    let log = fleet.http.access_log().expect("nginx's access log");
    let on_static = log.iter().filter(|e| e.uri.starts_with("/static/")).count();
    match source {
        FleetSource::Git => assert_eq!(on_static, 0),
        FleetSource::Static => {
            assert_eq!(on_static, log.len(), "requests beside the static files");
            let polls_unchanged = log.iter().filter(|e| e.status == 304).count();
            assert!(
                polls_unchanged > n,
                "{polls_unchanged} polls answered 304 for {n} nodes"
            );
        }
    }
}

#[test]
fn a_release_that_fails_its_health_check_stops_the_rollout_at_max_failures() {
    let _serial = serial();
    const MAX_IN_FLIGHT: u32 = 2;
    const MAX_FAILURES: usize = 2;
    let n = nodes();
    assert!(
        n > MAX_FAILURES,
        "DRIFTLESS_FLEET_NODES must exceed {MAX_FAILURES}"
    );
    let mut fleet = Fleet::start(FleetOptions::new(n, MAX_IN_FLIGHT));
    fleet.stats = Stats::default();

    fleet.promote("v3", &format!("max_failures: {MAX_FAILURES}\n"));
    fleet.run_until(
        roll_limit(MAX_FAILURES, MAX_IN_FLIGHT),
        "max_failures new nodes fail",
        |f| f.stats.failed.len() >= MAX_FAILURES,
    );
    assert_eq!(fleet.failures("v3"), MAX_FAILURES, "{}", fleet.describe());

    // The old nodes' slots end with their leases (their watchers were
    // killed, their replacements give nothing back): from then on a
    // rollout that did not stop would send more nodes. Watch past that.
    let lease = fleet.options.lease_ttl;
    let watch = lease * 2 + fleet.options.poll_interval * 3;
    fleet.run_for(watch);
    let stats = &fleet.stats;
    assert_eq!(
        stats.asks.len(),
        MAX_FAILURES,
        "nodes asked after the rollout stopped: {:?}",
        askers(stats)
    );
    assert_eq!(stats.failed.len(), MAX_FAILURES);
    assert_eq!(fleet.failures("v3"), MAX_FAILURES);
    assert_eq!(fleet.slots(), Some(0), "the slots ended with their leases");
    let census = fleet.census();
    let on = |tag: &str, status: &str| {
        census
            .get(&(tag.to_owned(), status.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(on("v1", "applied"), n - MAX_FAILURES, "{census:?}");
    assert_eq!(on("v3", "failed"), MAX_FAILURES, "{census:?}");

    // Every old node's watcher says why it stays; `driftless status` too.
    let old: Vec<&fleet::Node> = fleet
        .nodes
        .values()
        .filter(|n| n.replaces.is_none())
        .collect();
    assert_eq!(old.len(), n - MAX_FAILURES);
    let old_ids: Vec<String> = old.iter().map(|n| n.id.clone()).collect();
    for node in &old {
        let rollout = &watch_json(&node.root)["rollout"];
        assert_eq!(rollout["state"], "stopped", "{}: {rollout}", node.id);
    }
    let status = old[0].root.status_json()["watch"]["rollout"].clone();
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["release"], "v3", "{status}");
    assert_eq!(status["failures"], MAX_FAILURES, "{status}");
    assert_eq!(status["max_failures"], MAX_FAILURES, "{status}");

    // The failed new nodes are terminated; the channel rolls back to v1:
    // every node accepts it and stays, nobody asks.
    let failed = fleet.stats.failed.clone();
    for id in &failed {
        fleet.remove(id);
    }
    let key = fleet.key.clone();
    let back = fleet.channel(&key, &["rollback", "v1"]);
    let poll = fleet.options.poll_interval;
    fleet.run_until(poll * 10 + SLACK, "every node accepts the rollback", |f| {
        f.nodes
            .values()
            .all(|n| watch_json(&n.root)["channel"]["tip"] == back.as_str())
    });
    fleet.run_for(poll * 3);
    assert_eq!(
        fleet.stats.asks.len(),
        MAX_FAILURES,
        "nobody asked after the rollback"
    );
    let census = fleet.census();
    assert_eq!(
        census.get(&("v1".to_owned(), "applied".to_owned())),
        Some(&(n - MAX_FAILURES)),
        "{census:?}"
    );
    for node in &old_ids {
        assert!(fleet.nodes.contains_key(node), "{node} stayed on v1");
    }
}

#[test]
fn a_rollout_survives_etcd_restarting_and_a_wave_of_nodes_vanishing() {
    let _serial = serial();
    const MAX_IN_FLIGHT: u32 = 5;
    let n = nodes();
    let m = MAX_IN_FLIGHT as usize;
    assert!(
        n >= 4 * m,
        "DRIFTLESS_FLEET_NODES must be at least {}",
        4 * m
    );
    let mut fleet = Fleet::start(FleetOptions::new(n, MAX_IN_FLIGHT));
    fleet.stats = Stats::default();
    let lease = fleet.options.lease_ttl;
    let poll = fleet.options.poll_interval;

    fleet.promote("v2", "");
    let rolling = Instant::now();
    fleet.run_until(roll_limit(2 * m, MAX_IN_FLIGHT), "two waves", |f| {
        f.stats.healthy.len() >= 2 * m
    });

    // etcd goes away mid-rollout and comes back on the same data and port.
    fleet.etcd.stop();
    fleet.run_for(ETCD_DOWN);
    assert!(fleet.stats.etcd_unanswered > 0, "etcd was stopped");
    fleet.etcd.restart().expect("restart etcd");

    // The next wave of nodes that ask vanish while holding their slots:
    // nothing gives those back; only their leases end them.
    fleet.crash_next(m);
    fleet.run_until(roll_limit(m, MAX_IN_FLIGHT), "a wave vanishes", |f| {
        f.stats.crashed.len() == m
    });
    let asks_then = fleet.stats.asks.len();
    let stall_limit = lease + poll * 2 + Duration::from_secs(5);
    let stalled = fleet.run_until(stall_limit, "an ask after the wave vanished", |f| {
        f.stats.asks.len() > asks_then
    });
    eprintln!("after {m} nodes vanished with their slots, the next ask came {stalled:?} later");

    let bound = roll_limit(n, MAX_IN_FLIGHT) + ETCD_DOWN + lease;
    fleet.run_until(
        bound.saturating_sub(rolling.elapsed()),
        "every remaining node on v2",
        |f| f.converged("v2"),
    );
    eprintln!(
        "converged {:?} after the channel moved (bound {bound:?})",
        rolling.elapsed()
    );
    let stats = &fleet.stats;
    assert_eq!(fleet.nodes.len(), n - m, "{}", fleet.describe());
    assert_eq!(askers(stats), original_ids(n), "every old node asked once");
    assert!(
        stats.max_slots <= m,
        "{} slots in etcd at once",
        stats.max_slots
    );
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    // Slots still held end with their leases.
    fleet.run_until(lease + Duration::from_secs(3), "no slot left", |f| {
        f.slots() == Some(0)
    });
}
