//! Slots handed over at once: running watchers (`driftless watch`, the
//! daemon) with a long poll interval, one real etcd (Debian's
//! `etcd-server`, see `support/etcd.rs`) and releases served as `file://`.
//!
//! What must hold: a node waiting for a rollout slot takes the slot a new
//! node gives back well within one poll interval (the poll here is a
//! minute: without the watch it would wait for it); it learns at once that
//! a new node failed and the rollout stopped; and when its watch is
//! refused it still goes, at its next poll, and says so once.
//!
//! Every wait is bounded; every watcher is killed when its test ends.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use channel::{Daemon, ExecAction, NodeConfig, watch_json};
use etcd::EtcdServer;
use release::{NodeRoot, REPO};
use servers::wait_for;

/// The poll interval of the waiting node: a test that waits for it fails.
const LONG_POLL: &str = "60s";
/// "At once", on a loaded CI machine: a small fraction of [`LONG_POLL`].
const AT_ONCE: Duration = Duration::from_secs(5);
/// How long a watcher may take to poll the channel and settle.
const SETTLE: Duration = Duration::from_secs(30);
/// Exit code of a failed health check.
const EXIT_HEALTH: i32 = 8;

/// The releases (v1, v2; v3 fails its health check) and the exec action
/// that records who asked to be replaced.
struct Fleet {
    releases: channel::Fleet,
    action: ExecAction,
}

impl Fleet {
    fn new() -> Self {
        let releases = channel::Fleet::new();
        releases.publish("v3", "/bin/false");
        let action = ExecAction::new(&releases.world, "replace", 0);
        Self { releases, action }
    }

    /// Node `name` (also its machine id) with `rollout` and `poll`.
    fn node(&self, name: &str, rollout: &str, poll: &str) -> NodeRoot {
        let url = format!("file://{}", self.releases.world.srv().join(REPO).display());
        let mut config = NodeConfig::new(&url, &self.action.replace_yaml(&[]));
        config.poll_interval = poll.to_owned();
        config.extra = rollout.to_owned();
        let root = self.releases.node(name, &config);
        root.write("/etc/machine-id", format!("{name}\n"));
        root
    }

    /// Nodes `a` and `b` on v1 (b polling every `poll`), then the channel
    /// names `to`, and `a` takes the group's only slot and asks.
    fn a_goes_b_waits(&self, rollout: &str, poll: &str, to: &str) -> (NodeRoot, NodeRoot) {
        let branch = self.releases.channel();
        branch.promote(&self.releases.key, "v1", "");
        let a = self.node("a", rollout, LONG_POLL);
        let b = self.node("b", rollout, poll);
        a.apply().ok();
        b.apply().ok();
        branch.promote(&self.releases.key, to, "");
        a.driftless("watch", &["--once"], &[]).ok();
        assert_eq!(self.replaced(), ["a"]);
        (a, b)
    }

    /// The node ids the action was called for, sorted.
    fn replaced(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .action
            .calls()
            .iter()
            .map(|c| c.var("DRIFTLESS_NODE_ID").to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// `driftless watch` of `node`, logging at `level`.
    fn watcher(&self, node: &NodeRoot, name: &str, level: &str) -> Daemon {
        self.releases
            .daemon(node, &format!("logs/{name}"), &[("DRIFTLESS_LOG", level)])
    }
}

/// A `rollout:` section: etcd at `url`, group `web`, one slot, and `more`.
fn rollout(url: &str, more: &str) -> String {
    format!(
        "rollout: {{coordinator: etcd, endpoints: [{url}], group: web, max_in_flight: 1, lease_ttl: 10m, timeout: 2s{more}}}\n"
    )
}

/// The watcher's rollout state, once `watch.json` has one.
fn state(node: &NodeRoot) -> Option<String> {
    watch_json(node)["rollout"]["state"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until `node`'s rollout state is `wanted`; panics with the
/// watcher's log otherwise.
fn wait_for_state(node: &NodeRoot, watcher: &Daemon, wanted: &str, limit: Duration) {
    if wait_for(limit, || {
        (state(node).as_deref() == Some(wanted)).then_some(())
    })
    .is_none()
    {
        panic!(
            "rollout state {:?}, not {wanted:?}, after {limit:?}:\n{}",
            state(node),
            watcher.stderr()
        );
    }
}

/// The holders of the group's slots.
fn holders(etcd: &EtcdServer) -> Vec<String> {
    etcd.get_prefix("/driftless/web/slots/")
        .iter()
        .map(|(_, v)| {
            let value: serde_json::Value = serde_json::from_str(v).expect("a slot value is JSON");
            value["node"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn a_freed_slot_is_taken_by_a_waiting_node_well_within_one_poll_interval() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = rollout(&etcd.url(), "");
    let (_a, b) = fleet.a_goes_b_waits(&rollout, LONG_POLL, "v2");
    let watcher = fleet.watcher(&b, "b", "debug");
    wait_for_state(&b, &watcher, "waiting-for-slot", SETTLE);
    assert_eq!(holders(&etcd), ["a"]);
    wait_for(AT_ONCE, || {
        (line(&etcd) == ["/driftless/web/line/v2/b"]).then_some(())
    })
    .unwrap_or_else(|| panic!("b is not in the line: {:?}", line(&etcd)));
    let place_lease = etcd
        .lease_of("/driftless/web/line/v2/b")
        .expect("b's place is on a lease");

    // a's replacement comes up on v2 and gives the slot back as its apply ends.
    let new_a = fleet.node("a2", &rollout, LONG_POLL);
    new_a.apply().ok();
    let freed = Instant::now();
    let asked = fleet.action.wait_for_calls(2, AT_ONCE);
    let took = freed.elapsed();
    assert!(
        asked.is_some(),
        "b did not take the freed slot within {AT_ONCE:?} (its poll interval is {LONG_POLL}):\n{}",
        watcher.stderr()
    );
    eprintln!("a freed slot was taken {took:?} after the new node gave it back");
    assert_eq!(fleet.replaced(), ["a", "b"]);
    assert_eq!(holders(&etcd), ["b"], "b holds the one slot");
    assert_eq!(
        line(&etcd),
        [] as [String; 0],
        "taking the slot took b out of the line"
    );
    assert_eq!(
        etcd.lease_of("/driftless/web/slots/0"),
        Some(place_lease),
        "b's slot lives on the lease of its place in the line"
    );
    // b no longer waits: its place's lease, now its slot's, stays.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(holders(&etcd), ["b"], "b still holds the slot");
    assert_eq!(
        watch_json(&b)["replacement"]["request"]["reason"],
        "release-changed"
    );
}

#[test]
fn a_waiting_node_learns_at_once_that_the_rollout_stopped() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = rollout(&etcd.url(), "");
    let (_a, b) = fleet.a_goes_b_waits(&rollout, LONG_POLL, "v3");
    let watcher = fleet.watcher(&b, "b", "info");
    wait_for_state(&b, &watcher, "waiting-for-slot", SETTLE);

    // a's replacement fails its health check and records the failure.
    let new_a = fleet.node("a2", &rollout, LONG_POLL);
    new_a.apply().refused(EXIT_HEALTH, &["health"]);
    let recorded = Instant::now();
    wait_for_state(&b, &watcher, "stopped", AT_ONCE);
    eprintln!(
        "the waiting node said the rollout stopped {:?} after the failed apply exited",
        recorded.elapsed()
    );
    let rollout = &watch_json(&b)["rollout"];
    assert_eq!(rollout["failures"], 1, "{rollout}");
    assert_eq!(rollout["release"], "v3", "{rollout}");
    assert_eq!(fleet.replaced(), ["a"], "nobody else goes");
    assert_eq!(holders(&etcd), ["a"], "a failed node gives nothing back");
    wait_for(AT_ONCE, || line(&etcd).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("b stopped waiting but stays in the line: {:?}", line(&etcd)));
}

#[test]
fn a_node_granted_only_the_slots_and_failures_follows_them_and_goes_at_once() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let secret = "fleet-password-2b7e51";
    // The least a node needs: the slots and the failures, not the group's
    // whole prefix (the roster under `nodes/` is not granted).
    etcd.enable_auth("driftless", secret, "/driftless/web/slots/")
        .expect("enable etcd authentication");
    etcd.grant_prefix("/driftless/web/failures/")
        .expect("grant the failures");
    let fleet = Fleet::new();
    let rollout = rollout(
        &etcd.url(),
        ", username: driftless, password_file: /etc/driftless/etcd-password, roster: false",
    );
    // A long poll: only the watch can make b go within AT_ONCE.
    let poll = Duration::from_secs(30);
    let branch = fleet.releases.channel();
    branch.promote(&fleet.releases.key, "v1", "");
    let nodes: Vec<NodeRoot> = ["a", "b", "a2"]
        .iter()
        .map(|name| {
            let node = fleet.node(name, &rollout, &format!("{}s", poll.as_secs()));
            node.write("/etc/driftless/etcd-password", format!("{secret}\n"));
            node
        })
        .collect();
    let [a, b, new_a] = &nodes[..] else {
        unreachable!()
    };
    a.apply().ok();
    b.apply().ok();
    branch.promote(&fleet.releases.key, "v2", "");
    a.driftless("watch", &["--once"], &[]).ok();
    assert_eq!(fleet.replaced(), ["a"]);

    let watcher = fleet.watcher(b, "b", "info");
    wait_for_state(b, &watcher, "waiting-for-slot", SETTLE);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fleet.replaced(), ["a"], "no slot, no ask");
    new_a.apply().ok();
    let freed = Instant::now();
    let asked = fleet.action.wait_for_calls(2, AT_ONCE);
    assert!(
        asked.is_some(),
        "b did not go within {AT_ONCE:?} of the slot freed:\n{}",
        watcher.stderr()
    );
    eprintln!("b went {:?} after the slot was freed", freed.elapsed());
    assert_eq!(holders(&etcd), ["b"]);

    let log = watcher.stop().stderr;
    assert!(
        !log.lines()
            .any(|l| l.contains("etcd watch") && l.contains("WARN")),
        "the watch was refused:\n{log}"
    );
    assert!(!log.contains(secret), "the password leaked:\n{log}");
}

/// The library's coordinator of group `web` (one slot) on `etcd`.
fn web_coordinator(etcd: &EtcdServer) -> driftless::fleet::coordinate::Coordinator {
    use driftless::config::{Coordinator as Kind, RolloutSettings};
    let settings = RolloutSettings {
        coordinator: Kind::Etcd,
        endpoints: vec![etcd.url()],
        group: "web".into(),
        max_in_flight: 1,
        timeout: driftless::types::Interval(Duration::from_secs(2)),
        ..RolloutSettings::default()
    };
    let root = tempfile::tempdir().expect("a temporary root");
    driftless::fleet::coordinate::Coordinator::from_config(root.path(), &settings)
        .expect("a coordinator")
        .expect("etcd")
}

/// The handover task of the library, on its own thread and runtime,
/// following group `web` of a real etcd for release v2; it records when
/// it woke the (absent) watcher loop.
struct Following {
    wakes: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Following {
    /// Node `node`, waiting for group `web`'s one slot.
    fn start(etcd: &EtcdServer, node: &str) -> Self {
        use driftless::fleet::coordinate::handover::Handover;
        let coordinator = web_coordinator(etcd);
        let wakes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let seen = wakes.clone();
        let node = node.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let wake = std::sync::Arc::new(tokio::sync::Notify::new());
                let handover = Handover::start(coordinator.into(), "v2", &node, wake.clone());
                loop {
                    tokio::select! {
                        () = wake.notified() => seen.lock().expect("wakes").push(Instant::now()),
                        _ = &mut stopped => break,
                    }
                }
                // A watcher's runtime goes on after its handover ends (the
                // node stopped waiting); here a moment stands in for it.
                drop(handover);
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        });
        Self {
            wakes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The wakes so far.
    fn wakes(&self) -> Vec<Instant> {
        self.wakes.lock().expect("wakes").clone()
    }

    /// Waits for wake number `n` (from 1); when it came.
    fn wait_for_wake(&self, n: usize, limit: Duration) -> Option<Instant> {
        wait_for(limit, || self.wakes().get(n - 1).copied())
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_watch_wakes_a_waiting_node_for_a_freed_slot_or_its_release_failing_and_nothing_else() {
    let etcd = EtcdServer::start().expect("start etcd");
    let following = Following::start(&etcd, "n1");
    // The group's only slot is free when the watch starts: one wake, once
    // the stream is open.
    following
        .wait_for_wake(1, SETTLE)
        .expect("a slot free from the start wakes the node");

    etcd.put("/driftless/web/slots/0", "{}");
    etcd.put("/driftless/web/other", "x");
    etcd.put("/driftless/web/failures/v1/n1", "{}");
    etcd.put("/driftless/db/slots/0", "{}");
    etcd.put("/driftless/db/failures/v2/n1", "{}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        following.wakes().len(),
        1,
        "a slot taken, another key, another release's or another group's failure: no wake"
    );

    let freed = Instant::now();
    etcd.delete("/driftless/web/slots/0");
    let woken = following
        .wait_for_wake(2, AT_ONCE)
        .expect("a freed slot wakes the node");
    let took = woken - freed;
    eprintln!("a freed slot woke the waiting node after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    etcd.put("/driftless/web/slots/0", "{}");
    std::thread::sleep(Duration::from_millis(300));
    let recorded = Instant::now();
    etcd.put("/driftless/web/failures/v2/n2", "{}");
    let woken = following
        .wait_for_wake(3, AT_ONCE)
        .expect("a failure of v2 wakes the node with every slot taken");
    let took = woken - recorded;
    eprintln!("a failure of its release woke the waiting node after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(following.wakes().len(), 3, "nothing else woke it");
}

#[test]
fn a_waiting_node_is_sent_no_roster_writes() {
    // Every node of a group writes its state under `nodes/`; a waiting node
    // that watched the whole group would be sent each of those writes:
    // N waiting nodes times N writers over a roll.
    let etcd = EtcdServer::start().expect("start etcd");
    let following = Following::start(&etcd, "n1");
    following
        .wait_for_wake(1, SETTLE)
        .expect("the watch is up (a free slot woke the node)");
    let before = etcd.load().expect("etcd's metrics");
    for n in 0..20 {
        etcd.put(&format!("/driftless/web/nodes/n{n}"), "{}");
    }
    etcd.put("/driftless/web/slots/0", "{}");
    etcd.put("/driftless/web/failures/v2/n1", "{}");
    following
        .wait_for_wake(2, AT_ONCE)
        .expect("the failure of v2 wakes the node");
    let sent = etcd.load().expect("etcd's metrics").since(before).events;
    assert_eq!(
        sent, 2,
        "etcd sent the waiting node {sent} events for a slot taken and a failure among 20 roster writes"
    );
}

/// The keys of the lines in group `web`.
fn line(etcd: &EtcdServer) -> Vec<String> {
    etcd.get_prefix("/driftless/web/line/")
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

/// Frees the group's slot; how long after it each of `waiting` woke for
/// the `n`-th time.
fn free_the_slot(etcd: &EtcdServer, waiting: &[Following], n: usize) -> Vec<Duration> {
    let freed = Instant::now();
    etcd.delete("/driftless/web/slots/0");
    waiting
        .iter()
        .map(|w| {
            w.wait_for_wake(n, AT_ONCE)
                .expect("a freed slot wakes every waiting node")
                - freed
        })
        .collect()
}

#[test]
fn the_oldest_waiting_node_asks_first_and_the_others_after_its_head_start() {
    use driftless::fleet::coordinate::handover::HEAD_START;
    let etcd = EtcdServer::start().expect("start etcd");
    etcd.put("/driftless/web/slots/0", "{}");
    // Three nodes start to wait, one after another: a, b, c is the line.
    let mut waiting = Vec::new();
    for (n, name) in ["a", "b", "c"].into_iter().enumerate() {
        waiting.push(Following::start(&etcd, name));
        wait_for(SETTLE, || (line(&etcd).len() == n + 1).then_some(()))
            .unwrap_or_else(|| panic!("{name} joined no line: {:?}", line(&etcd)));
    }
    // Their streams open right after they joined.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.iter().all(|w| w.wakes().is_empty()),
        "every slot taken: nobody woke"
    );

    // The slot is freed: only the head of the line wakes at once.
    let after = free_the_slot(&etcd, &waiting, 1);
    eprintln!("a, b, c woke {after:?} after the slot was freed");
    assert!(
        after[0] < after[1] && after[0] < after[2],
        "the head of the line woke first: {after:?}"
    );
    assert!(
        after[1] >= HEAD_START && after[2] >= HEAD_START,
        "the others waited out the head start: {after:?}"
    );

    // a takes the slot (its key leaves the line in the same transaction in
    // the real thing) and gives it back later: now b is the head.
    etcd.put("/driftless/web/slots/0", "{}");
    etcd.delete("/driftless/web/line/v2/a");
    std::thread::sleep(Duration::from_millis(500));
    let after = free_the_slot(&etcd, &waiting[1..], 2);
    eprintln!("b, c woke {after:?} after the slot was freed again");
    assert!(
        after[0] < after[1] && after[1] >= HEAD_START,
        "b, now the head, first; c after the head start: {after:?}"
    );

    // A node that stops waiting leaves the line at once.
    drop(waiting.pop());
    wait_for(AT_ONCE, || (line(&etcd).len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("c is still in the line: {:?}", line(&etcd)));
}

#[test]
fn a_place_whose_lease_is_gone_takes_the_slot_on_a_lease_of_its_own() {
    use driftless::fleet::coordinate::SlotAnswer;
    let etcd = EtcdServer::start().expect("start etcd");
    let coordinator = web_coordinator(&etcd);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (place, slot) = runtime.block_on(async {
        let place = coordinator
            .join_line("v2", "a")
            .await
            .expect("a joins the line");
        // etcd lost the place's lease (it ran out before its renewal, or
        // etcd was restored from an older snapshot): the key went with it.
        coordinator
            .etcd()
            .revoke(place.lease)
            .await
            .expect("revoke the place's lease");
        let survey = coordinator.survey("v2").await.expect("survey");
        let answer = coordinator
            .take_slot(&survey, "a", "v1", "v2", Some(&place))
            .await
            .expect("a place whose lease is gone does not keep the node from going");
        let SlotAnswer::Held(slot) = answer else {
            panic!("the free slot was not taken: {answer:?}");
        };
        (place, slot)
    });
    assert_ne!(slot.lease, place.lease, "the slot is on a lease of its own");
    assert_eq!(
        etcd.lease_of(&slot.key),
        Some(slot.lease.to_string()),
        "the slot lives on its new lease"
    );
}
