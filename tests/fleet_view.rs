//! End-to-end tests of `driftless fleet`: nodes applied and watching with
//! `rollout.coordinator: etcd` against a real etcd (Debian's `etcd-server`
//! on 127.0.0.1, see `support/etcd.rs`) report themselves; the view lists
//! every node by release and state, the slot holders with their node id
//! and hold time, the failures per release (a real failed node's), and the
//! rollout's state. Without etcd, the view is the signed channel, from a
//! node's record or from a clone of the release repository.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use channel::{ExecAction, NodeConfig};
use etcd::EtcdServer;
use release::{NodeRoot, REPO};

const EXIT_HEALTH: i32 = 8;

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

    fn config(&self, rollout: &str) -> NodeConfig {
        let url = format!("file://{}", self.releases.world.srv().join(REPO).display());
        let mut config = NodeConfig::new(&url, &self.action.replace_yaml(&[]));
        config.extra = rollout.to_owned();
        config
    }

    fn node(&self, name: &str, rollout: &str) -> NodeRoot {
        let root = self.releases.node(name, &self.config(rollout));
        root.write("/etc/machine-id", format!("{name}\n"));
        root
    }
}

fn etcd_rollout(url: &str) -> String {
    format!(
        "rollout: {{coordinator: etcd, endpoints: [{url}], group: web, max_in_flight: 1, lease_ttl: 30s, timeout: 2s}}\n"
    )
}

fn fleet_json(root: &NodeRoot) -> serde_json::Value {
    root.driftless("fleet", &["--json"], &[]).ok().json()
}

#[test]
fn the_fleet_view_shows_nodes_slots_failures_and_the_rollout() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = etcd_rollout(&etcd.url());
    let branch = fleet.releases.channel();
    branch.promote(&fleet.releases.key, "v1", "");
    let nodes: Vec<NodeRoot> = ["a", "b", "c"]
        .iter()
        .map(|name| fleet.node(name, &rollout))
        .collect();
    for node in &nodes {
        node.apply().ok();
        node.driftless("watch", &["--once"], &[]).reported();
    }
    let view = fleet_json(&nodes[0]);
    let listed: Vec<(String, String, String)> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().expect("id").to_owned(),
                n["release"].as_str().expect("release").to_owned(),
                n["phase"].as_str().expect("phase").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| (n.to_string(), "v1".to_owned(), "watching".to_owned()))
        .collect();
    assert_eq!(listed, expected, "{view}");
    assert_eq!(view["slots"].as_array().map(Vec::len), Some(0), "{view}");
    assert_eq!(view["rollout"]["state"], "done", "{view}");

    // v2 is promoted: one node takes the group's one slot and asks to go.
    branch.promote(&fleet.releases.key, "v2", "");
    for node in &nodes {
        node.driftless("watch", &["--once"], &[]).reported();
    }
    let view = fleet_json(&nodes[0]);
    let slots = view["slots"].as_array().expect("slots");
    assert_eq!(slots.len(), 1, "{view}");
    let holder = slots[0]["value"]["node"]
        .as_str()
        .expect("holder")
        .to_owned();
    assert!(["a", "b", "c"].contains(&holder.as_str()), "{view}");
    assert_eq!(slots[0]["value"]["to"], "v2", "{view}");
    let held = slots[0]["held_secs"].as_i64().expect("hold time");
    assert!((0..120).contains(&held), "{view}");
    assert_eq!(view["rollout"]["release"], "v2", "{view}");
    assert_eq!(view["rollout"]["state"], "rolling", "{view}");
    assert_eq!(view["rollout"]["in_flight"], 1, "{view}");
    let waiting = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["rollout"] == "waiting-for-slot")
        .count();
    assert_eq!(waiting, 2, "the two others wait for the slot: {view}");
    // The waiting line, as waiting watchers keep it in etcd: listed in the
    // order the nodes joined it, not by name.
    etcd.put("/driftless/web/line/v2/c", "");
    etcd.put("/driftless/web/line/v2/a", "");
    let view = fleet_json(&nodes[0]);
    assert_eq!(view["line"]["v2"], serde_json::json!(["c", "a"]), "{view}");

    // A new node of v3 fails its health check: the failure is listed.
    branch.promote(&fleet.releases.key, "v3", "");
    let d = fleet.node("d", &rollout);
    let failed = d.apply();
    assert_eq!(failed.code, Some(EXIT_HEALTH), "{}", failed.describe());
    let view = fleet_json(&nodes[0]);
    let failures = view["failures"]["v3"].as_array().expect("v3 failures");
    assert_eq!(failures.len(), 1, "{view}");
    assert_eq!(failures[0]["node"], "d", "{view}");
    assert_eq!(failures[0]["stage"], "health", "{view}");

    // The human table says the same. Whoever can write etcd can put a
    // terminal's escape sequences in a key: they are shown, not obeyed.
    etcd.put(
        "/driftless/web/line/v9/evil\u{1b}]0;owned\u{7}\u{1b}[2J",
        "",
    );
    let text = nodes[0].driftless("fleet", &[], &[]).ok().stdout;
    for needle in [
        "group web: 3 nodes report to etcd; 1 of 1 slots taken",
        &format!("held by {holder} (v1 -> v2)"),
        "v3: 1 failed",
        "d at health",
        "line for v2: 2 waiting; next: c, a",
        "line for v9: 1 waiting; next: evil?]0;owned??[2J",
    ] {
        assert!(text.contains(needle), "missing {needle:?}\n{text}");
    }
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the terminal:\n{text:?}"
    );

    // etcd down: the view says so in one line, exit non-zero.
    etcd.stop();
    let down = nodes[0].driftless("fleet", &[], &[]);
    assert_ne!(down.code, Some(0), "{}", down.describe());
    assert!(down.stderr.contains("etcd range"), "{}", down.describe());
}

#[test]
fn with_the_roster_off_only_the_rollout_touches_etcd() {
    let etcd = EtcdServer::start().expect("start etcd");
    let fleet = Fleet::new();
    let rollout = etcd_rollout(&etcd.url()).replace("timeout: 2s}", "timeout: 2s, roster: false}");
    let branch = fleet.releases.channel();
    branch.promote(&fleet.releases.key, "v1", "");
    let nodes: Vec<NodeRoot> = ["a", "b"]
        .iter()
        .map(|name| fleet.node(name, &rollout))
        .collect();
    for node in &nodes {
        node.apply().ok();
        node.driftless("watch", &["--once"], &[]).reported();
    }
    // Idle on the channel's release: nothing of theirs in etcd.
    assert_eq!(etcd.get_prefix("/driftless/"), Vec::new());

    // v2: the slot is still taken through etcd, and the view shows it.
    branch.promote(&fleet.releases.key, "v2", "");
    for node in &nodes {
        node.driftless("watch", &["--once"], &[]).reported();
    }
    let keys: Vec<String> = etcd
        .get_prefix("/driftless/web/")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(keys, vec!["/driftless/web/slots/0".to_owned()]);
    let view = fleet_json(&nodes[0]);
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(0), "{view}");
    assert_eq!(view["slots"].as_array().map(Vec::len), Some(1), "{view}");
}

#[test]
fn without_etcd_the_fleet_view_is_the_signed_channel() {
    let fleet = Fleet::new();
    let branch = fleet.releases.channel();
    branch.promote(&fleet.releases.key, "v1", "");
    let node = fleet.node("a", "");
    node.apply().ok();
    branch.promote(&fleet.releases.key, "v2", "max_failures: 2\n");
    branch.channel(&fleet.releases.key, &["failed", "v2", "node-x"], &[]);
    branch.push();
    node.driftless("watch", &["--once"], &[]).reported();
    let view = fleet_json(&node);
    assert_eq!(view["coordinator"], "none", "{view}");
    assert_eq!(view["rollout"]["release"], "v2", "{view}");
    assert_eq!(view["rollout"]["failures"], 1, "{view}");
    assert_eq!(view["rollout"]["state"], "rolling", "{view}");
    // From a clone of the release repository instead of the node's record.
    let clone = fleet.releases.world.path("clone");
    let srv = fleet.releases.world.srv().join(REPO);
    fleet.releases.world.tool(
        fleet
            .releases
            .world
            .git()
            .args(["clone", "-q", "--bare"])
            .arg(&srv)
            .arg(&clone),
    );
    let from_clone = node
        .driftless(
            "fleet",
            &["--json", "--repo", &clone.display().to_string()],
            &[],
        )
        .ok()
        .json();
    assert_eq!(from_clone["rollout"], view["rollout"], "{from_clone}");
    assert_eq!(from_clone["tip"], view["tip"], "{from_clone}");
}

#[test]
fn status_and_watch_once_exit_with_codes_a_script_can_branch_on() {
    let fleet = Fleet::new();
    let branch = fleet.releases.channel();
    branch.promote(&fleet.releases.key, "v1", "");
    let node = fleet.node("a", "");
    node.apply().ok();
    assert_eq!(node.driftless("status", &[], &[]).code, Some(0));
    // An unsigned channel tip: refused, 10 from the poll and from status.
    let signed = branch.head();
    let unsigned = branch.next_document(&[("release", "v2")]);
    branch.commit(&unsigned, channel::Signing::Unsigned, "unsigned");
    branch.push();
    let refused = node.driftless("watch", &["--once"], &[]);
    assert_eq!(refused.code, Some(10), "{}", refused.describe());
    assert_eq!(node.driftless("status", &[], &[]).code, Some(10));
    // The operator puts the signed tip back, then moves on.
    branch.reset_hard(&signed);
    branch.force_push();
    // A node whose health check failed: status exits with the health code.
    branch.promote(&fleet.releases.key, "v3", "");
    let d = fleet.node("d", "");
    assert_eq!(d.apply().code, Some(EXIT_HEALTH));
    let status = d.driftless("status", &[], &[]);
    assert_eq!(status.code, Some(EXIT_HEALTH), "{}", status.describe());
    assert!(
        status.stdout.contains("FAILED at health"),
        "{}",
        status.describe()
    );
    // A replacement action that fails: 11 from the poll and from status.
    let failing = ExecAction::new(&fleet.releases.world, "failing", 1);
    let url = format!("file://{}", fleet.releases.world.srv().join(REPO).display());
    let mut config = NodeConfig::new(&url, &failing.replace_yaml(&[]));
    config.pin = channel::Pin::Tag("v1".into());
    let e = fleet.releases.node("e", &config);
    e.apply().ok();
    let asked = e.driftless("watch", &["--once"], &[]);
    assert_eq!(asked.code, Some(11), "{}", asked.describe());
    assert_eq!(e.driftless("status", &[], &[]).code, Some(11));
}
