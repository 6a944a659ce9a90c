//! End-to-end tests of fleet rollout coordination: the built binary
//! (`driftless apply`, `driftless watch --once`, `driftless status`) on
//! several node roots that share one signed release repository (served as
//! `file://`) and, with `rollout.coordinator: etcd`, one real etcd started
//! by the test on 127.0.0.1 (Debian's `etcd-server`; see
//! `support/etcd.rs`).
//!
//! What must hold: at most `max_in_flight` nodes of a group ask to be
//! replaced until new nodes give slots back; a slot whose holder vanished
//! frees itself with its lease; a new node whose release fails records the
//! failure and the rollout stops at `max_failures` until the channel names
//! another release (with etcd, and with the signed failures file without
//! it); etcd out of reach means nobody asks to be replaced; a bad rollout
//! config is refused in one line before anything changes.
//!
//! Every node has its own machine id; replacement goes through an `exec`
//! action that records its calls. Every wait is bounded.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use channel::{ExecAction, NodeConfig, watch_json};
use etcd::EtcdServer;
use release::{NodeRoot, REPO, Run};

/// Exit code of a config error.
const EXIT_CONFIG: i32 = 3;
/// Exit code of a failed health check.
const EXIT_HEALTH: i32 = 8;
/// The lease of the lease-expiry test (etcd's minimum is about 2 s).
const SHORT_LEASE: Duration = Duration::from_secs(3);

/// One test's fleet: the shared [`channel::Fleet`] (releases v1 and v2,
/// healthy), v3 (its health check fails), all signed by one key, and the
/// exec action that replaces its nodes.
struct Fleet {
    releases: channel::Fleet,
    action: ExecAction,
}

impl std::ops::Deref for Fleet {
    type Target = channel::Fleet;

    fn deref(&self) -> &channel::Fleet {
        &self.releases
    }
}

impl Fleet {
    fn new() -> Self {
        let releases = channel::Fleet::new();
        releases.publish("v3", "/bin/false");
        let action = ExecAction::new(&releases.world, "replace", 0);
        Self { releases, action }
    }

    /// A node root `NAME` (also its machine id) with `rollout` appended to
    /// its config.
    fn node(&self, name: &str, rollout: &str) -> NodeRoot {
        let root = self.releases.node(name, &self.config(rollout));
        root.write("/etc/machine-id", format!("{name}\n"));
        root
    }

    /// A node's config with `rollout` appended.
    fn config(&self, rollout: &str) -> NodeConfig {
        let url = format!("file://{}", self.world.srv().join(REPO).display());
        let mut config = NodeConfig::new(&url, &self.action.replace_yaml(&[]));
        config.extra = rollout.to_owned();
        config
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
}

/// A `rollout:` section for etcd at `url`.
fn etcd_rollout(url: &str, max_in_flight: u32, lease_ttl: &str) -> String {
    format!(
        "rollout: {{coordinator: etcd, endpoints: [{url}], group: web, max_in_flight: {max_in_flight}, lease_ttl: {lease_ttl}, timeout: 2s}}\n"
    )
}

fn watch_once(root: &NodeRoot) -> Run {
    root.driftless("watch", &["--once"], &[]).reported()
}

/// The `rollout` object of `driftless status --json`.
fn rollout_status(root: &NodeRoot) -> serde_json::Value {
    root.status_json()["watch"]["rollout"].clone()
}

/// The `rollout` line of the human `driftless status`.
fn rollout_line(root: &NodeRoot) -> String {
    let text = root.driftless("status", &[], &[]).reported().stdout;
    text.lines()
        .find(|l| l.starts_with("rollout "))
        .unwrap_or_else(|| panic!("no rollout line:\n{text}"))
        .to_owned()
}

/// The slots of group `web`: (key, parsed value).
fn slots(etcd: &EtcdServer) -> Vec<(String, serde_json::Value)> {
    etcd.get_prefix("/driftless/web/slots/")
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).expect("a slot value is JSON")))
        .collect()
}

/// Nodes `a`, `b`, `c` on v1 with `rollout`, then the channel moves to `to`.
fn three_nodes_then_promote(fleet: &Fleet, rollout: &str, to: &str) -> Vec<NodeRoot> {
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");
    let nodes: Vec<NodeRoot> = ["a", "b", "c"]
        .iter()
        .map(|name| fleet.node(name, rollout))
        .collect();
    for node in &nodes {
        node.apply().ok();
        assert_eq!(node.status_json()["release"]["tag"], "v1");
        assert_eq!(
            node.status_json()["release"]["commit"],
            fleet.v1.commit.as_str()
        );
    }
    branch.promote(&fleet.key, to, "");
    nodes
}

#[test]
fn slots_are_taken_up_to_max_in_flight_and_refused_beyond() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let nodes = three_nodes_then_promote(&fleet, &etcd_rollout(&etcd.url(), 2, "10m"), "v2");
    for node in &nodes {
        watch_once(node);
    }
    assert_eq!(fleet.replaced(), ["a", "b"], "two of three go");
    let taken = slots(&etcd);
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(taken[0].0, "/driftless/web/slots/0");
    assert_eq!(taken[1].0, "/driftless/web/slots/1");
    for (_, value) in &taken {
        assert_eq!(value["from"], "v1", "{value}");
        assert_eq!(value["to"], "v2", "{value}");
    }
    let holders: Vec<&str> = taken
        .iter()
        .filter_map(|(_, v)| v["node"].as_str())
        .collect();
    assert!(
        holders.contains(&"a") && holders.contains(&"b"),
        "{holders:?}"
    );

    let third = &nodes[2];
    let status = rollout_status(third);
    assert_eq!(status["state"], "waiting-for-slot", "{status}");
    assert_eq!(status["in_flight"], 2, "{status}");
    assert_eq!(status["max_in_flight"], 2, "{status}");
    assert!(
        rollout_line(third).contains("waiting for a rollout slot (2 of 2 in flight)"),
        "{}",
        rollout_line(third)
    );
    assert!(watch_json(third)["replacement"].is_null());

    // Polling again takes nothing more, and asks nothing twice.
    for node in &nodes {
        watch_once(node);
    }
    assert_eq!(fleet.replaced(), ["a", "b"]);
    assert_eq!(slots(&etcd).len(), 2);
}

#[test]
fn a_healthy_new_node_gives_one_slot_back() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = etcd_rollout(&etcd.url(), 1, "10m");
    let nodes = three_nodes_then_promote(&fleet, &rollout, "v2");
    for node in &nodes {
        watch_once(node);
    }
    assert_eq!(fleet.replaced(), ["a"]);
    assert_eq!(slots(&etcd).len(), 1);

    // The autoscaler's replacement for a: a new node, built from the channel.
    let new_a = fleet.node("a2", &rollout);
    new_a.apply().ok();
    assert_eq!(new_a.status_json()["release"]["tag"], "v2");
    assert!(slots(&etcd).is_empty(), "the new node gave the slot back");
    assert_eq!(watch_json(&new_a)["rollout_reported"], "applied");

    watch_once(&nodes[1]);
    assert_eq!(fleet.replaced(), ["a", "b"], "b takes the freed slot");
    let taken = slots(&etcd);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1["node"], "b");

    // Giving back is once per node: a second apply (a reboot) or the new
    // node's watcher does not free b's slot.
    new_a.apply().ok();
    watch_once(&new_a);
    assert_eq!(slots(&etcd).len(), 1, "b's slot stays taken");
    watch_once(&nodes[2]);
    assert_eq!(fleet.replaced(), ["a", "b"], "c still waits");
}

#[test]
fn a_slot_expires_with_its_lease() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let ttl = format!("{}s", SHORT_LEASE.as_secs());
    let nodes = three_nodes_then_promote(&fleet, &etcd_rollout(&etcd.url(), 1, &ttl), "v2");
    // a takes the slot and vanishes (watch --once exits: nobody renews it).
    watch_once(&nodes[0]);
    let taken_at = Instant::now();
    watch_once(&nodes[1]);
    assert_eq!(fleet.replaced(), ["a"]);
    assert_eq!(rollout_status(&nodes[1])["state"], "waiting-for-slot");

    let limit = SHORT_LEASE * 4;
    while fleet.replaced().len() < 2 && taken_at.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(500));
        watch_once(&nodes[1]);
    }
    let waited = taken_at.elapsed();
    assert_eq!(fleet.replaced(), ["a", "b"], "b goes once a's lease ended");
    eprintln!("slot freed by its lease after {waited:?} (lease {SHORT_LEASE:?})");
    assert!(
        waited >= SHORT_LEASE - Duration::from_millis(500),
        "freed before the lease could end: {waited:?}"
    );
    let taken = slots(&etcd);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1["node"], "b");
}

#[test]
fn failures_stop_the_rollout_until_the_channel_names_another_release() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = etcd_rollout(&etcd.url(), 1, "10m");
    let nodes = three_nodes_then_promote(&fleet, &rollout, "v3");
    watch_once(&nodes[0]);
    assert_eq!(fleet.replaced(), ["a"], "the first node goes");

    // Its replacement boots v3, whose health check fails.
    let new_a = fleet.node("a2", &rollout);
    new_a.apply().refused(EXIT_HEALTH, &["health"]);
    let failures = etcd.get_prefix("/driftless/web/failures/v3/");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "/driftless/web/failures/v3/a2");
    let value: serde_json::Value = serde_json::from_str(&failures[0].1).expect("JSON");
    assert_eq!(value["stage"], "health", "{value}");
    assert_eq!(value["release"], "v3", "{value}");
    assert_eq!(slots(&etcd).len(), 1, "a failed node gives nothing back");

    // Even with a free slot, nobody else goes for v3.
    etcd.put("/driftless/web/unrelated", "x");
    let free = etcd_rollout(&etcd.url(), 5, "10m");
    for node in &nodes[1..] {
        node.write("/etc/driftless/agent.yaml", fleet.config(&free).render());
        watch_once(node);
        let status = rollout_status(node);
        assert_eq!(status["state"], "stopped", "{status}");
        assert_eq!(status["failures"], 1, "{status}");
        assert_eq!(status["max_failures"], 1, "{status}");
        assert!(
            rollout_line(node).contains("rollout stopped: 1 new nodes failed"),
            "{}",
            rollout_line(node)
        );
    }
    assert_eq!(fleet.replaced(), ["a"]);

    // The channel names v2: the rollout resumes.
    fleet.channel_reopen().promote(&fleet.key, "v2", "");
    watch_once(&nodes[1]);
    assert_eq!(fleet.replaced(), ["a", "b"]);
    assert_eq!(rollout_status(&nodes[1])["failures"], 0);
}

#[test]
fn without_a_coordinator_the_signed_failures_file_stops_the_rollout() {
    let fleet = Fleet::new();
    let nodes = three_nodes_then_promote(&fleet, "", "v1");
    let branch = fleet.channel_reopen();
    let key = &fleet.key;
    branch.channel(key, &["promote", "v2", "--max-failures", "2"], &[]);
    branch.channel(key, &["failed", "v2", "i-failed-1"], &[]);
    branch.push();
    watch_once(&nodes[0]);
    assert_eq!(fleet.replaced(), ["a"], "1 failure of 2 allowed: it goes");

    branch.channel(key, &["failed", "v2", "i-failed-2", "i-failed-1"], &[]);
    branch.push();
    watch_once(&nodes[1]);
    assert_eq!(fleet.replaced(), ["a"], "2 of 2: the rollout stopped");
    let status = rollout_status(&nodes[1]);
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["failures"], 2, "{status}");
    assert!(status.get("max_in_flight").is_none(), "{status}");

    branch.promote(key, "v3", "");
    watch_once(&nodes[1]);
    assert_eq!(fleet.replaced(), ["a", "b"], "another release resumes it");

    // A failures file that does not parse refuses the tip, in one line
    // (crafted by hand: driftless channel writes none such).
    branch.stage("failures.yaml", "v3: not-a-list\n");
    let text = branch.next_document(&[("release", "v1"), ("tag_object", &fleet.v1.tag_object)]);
    branch.commit(
        &text,
        channel::Signing::Signed(key),
        "a broken failures file",
    );
    branch.push();
    watch_once(&nodes[2]);
    let refusal = watch_json(&nodes[2])["refusal"]["reason"].clone();
    assert!(
        refusal
            .as_str()
            .is_some_and(|r| r.contains("failures.yaml") && !r.contains('\n')),
        "{refusal}"
    );
    assert_eq!(fleet.replaced(), ["a", "b"]);
}

#[test]
fn with_etcd_out_of_reach_nobody_asks_to_be_replaced() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let nodes = three_nodes_then_promote(&fleet, &etcd_rollout(&etcd.url(), 3, "10m"), "v2");
    etcd.stop();
    let started = Instant::now();
    watch_once(&nodes[0]);
    let took = started.elapsed();
    assert!(fleet.replaced().is_empty(), "fail closed");
    let status = rollout_status(&nodes[0]);
    assert_eq!(status["state"], "coordinator-unreachable", "{status}");
    let line = rollout_line(&nodes[0]);
    assert!(
        line.contains("cannot be reached") && line.contains(&etcd.url()),
        "names the endpoint: {line}"
    );
    assert!(
        took < Duration::from_secs(20),
        "every request has a time limit: {took:?}"
    );

    etcd.restart().expect("restart etcd");
    watch_once(&nodes[0]);
    assert_eq!(fleet.replaced(), ["a"], "back in reach: the next poll goes");
}

#[test]
fn endpoints_are_tried_in_turn() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let dead = format!(
        "http://127.0.0.1:{}",
        servers::closed_port().expect("a port")
    );
    let both = format!("{dead}, {}", etcd.url());
    let nodes = three_nodes_then_promote(&fleet, &etcd_rollout(&both, 1, "10m"), "v2");
    watch_once(&nodes[0]);
    assert_eq!(fleet.replaced(), ["a"]);
    assert_eq!(slots(&etcd).len(), 1);
}

#[test]
fn bad_rollout_configs_are_refused_in_one_line_and_change_nothing() {
    let fleet = Fleet::new();
    fleet.channel().promote(&fleet.key, "v1", "");
    for (rollout, needle) in [
        (
            "rollout: {coordinator: etcd}\n",
            "rollout.endpoints is empty",
        ),
        (
            "rollout: {coordinator: etcd, endpoints: [http://127.0.0.1:2379], max_in_flight: 0}\n",
            "max_in_flight must be at least 1",
        ),
        ("rollout: {coordinator: zookeeper}\n", "zookeeper"),
        ("rollout: {max_inflight: 2}\n", "max_inflight"),
        (
            "rollout: {coordinator: etcd, endpoints: ['ftp://127.0.0.1:2379']}\n",
            "must be http(s)://",
        ),
        (
            "rollout: {coordinator: etcd, endpoints: ['http://root:pw@127.0.0.1:2379']}\n",
            "without a path or credentials",
        ),
        (
            "rollout: {endpoints: ['http://127.0.0.1:2379']}\n",
            "coordinator is none",
        ),
        (
            "rollout: {coordinator: etcd, endpoints: ['http://127.0.0.1:2379'], username: root}\n",
            "password_file",
        ),
        ("rollout: {group: 'a/b'}\n", "rollout.group"),
    ] {
        let root = fleet.node("bad", rollout);
        let run = root.apply();
        let line = run.refused(EXIT_CONFIG, &[needle, "agent.yaml"]);
        assert!(!line.contains('\n'), "{line}");
        assert!(root.state().is_none(), "{rollout}: nothing applied");
        assert!(fleet.replaced().is_empty());
        std::fs::remove_dir_all(root.path()).expect("remove the root");
    }
}

#[test]
fn the_password_is_never_logged() {
    let fleet = Fleet::new();
    let dead = format!(
        "http://127.0.0.1:{}",
        servers::closed_port().expect("a port")
    );
    let nodes = three_nodes_then_promote(
        &fleet,
        &format!(
            "rollout: {{coordinator: etcd, endpoints: [{dead}], username: driftless, password_file: /etc/driftless/etcd-password, timeout: 1s}}\n"
        ),
        "v2",
    );
    let secret = "hunter2-very-secret";
    nodes[0].write("/etc/driftless/etcd-password", format!("{secret}\n"));
    let run = nodes[0].driftless("watch", &["--once"], &[("DRIFTLESS_LOG", "debug")]);
    let status = nodes[0].driftless("status", &["--json"], &[]);
    for text in [&run.stdout, &run.stderr, &status.stdout] {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
    assert!(run.stderr.contains(&dead), "{}", run.stderr);
    assert!(fleet.replaced().is_empty());
}

#[test]
fn with_etcd_authentication_a_node_logs_in_and_a_wrong_password_is_refused() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let secret = "fleet-password-6f1d2c";
    let wrong = "not-the-password-93ab";
    etcd.enable_auth("driftless", secret, "/driftless/")
        .expect("enable etcd authentication");
    let fleet = Fleet::new();
    let rollout = format!(
        "rollout: {{coordinator: etcd, endpoints: [{}], group: web, max_in_flight: 2, lease_ttl: 10m, timeout: 2s, username: driftless, password_file: /etc/driftless/etcd-password}}\n",
        etcd.url()
    );
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");
    let good = fleet.node("a", &rollout);
    good.write("/etc/driftless/etcd-password", format!("{secret}\n"));
    let bad = fleet.node("b", &rollout);
    bad.write("/etc/driftless/etcd-password", format!("{wrong}\n"));
    for node in [&good, &bad] {
        node.apply().ok();
    }
    branch.promote(&fleet.key, "v2", "");

    watch_once(&good);
    let refused = bad.driftless("watch", &["--once"], &[("DRIFTLESS_LOG", "debug")]);
    assert_eq!(fleet.replaced(), ["a"], "only the node that logged in goes");
    let taken = slots(&etcd);
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].1["node"], "a", "{taken:?}");
    assert!(
        refused
            .stderr
            .contains("check rollout.username and rollout.password_file"),
        "the refusal says what to check\n{}",
        refused.describe()
    );
    let status = bad.driftless("status", &["--json"], &[]);
    for text in [&refused.stdout, &refused.stderr, &status.stdout] {
        assert!(
            !text.contains(secret) && !text.contains(wrong),
            "a password leaked: {text}"
        );
    }
}
