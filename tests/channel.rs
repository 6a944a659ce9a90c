//! End-to-end tests of a channel a git host cannot bend: every attack of
//! issue #15 played by a real git server (nginx + git-http-backend, or
//! `git daemon`, on 127.0.0.1) serving the hostile state (refs reset,
//! another branch under the channel's name, a frozen tip past its expiry,
//! a lower or conflicting sequence, a refresh key's commit that changes
//! the release, a release key's commit that moves the channel, a re-signed
//! tag), against the built `driftless apply`, `watch --once`, `status` and
//! `fetch`. Each is refused, no replacement is requested, and status,
//! metrics and the journal's message ids say why.
//!
//! The operator's side is the built `driftless channel`: every happy path
//! (init, promote, rollback, hold, release, refresh) is made with it, and
//! it refuses, in one line and without moving the branch, what a node
//! would refuse. Hostile commits, which the command never makes, are
//! crafted with `git commit -S` on the channel branch's work tree.
//!
//! The clock tests move the node's clock with the documented test hook
//! `DRIFTLESS_TEST_CLOCK_OFFSET` and say whether it is synchronized with
//! `DRIFTLESS_TEST_CLOCK_SYNC`.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use channel::{
    ChannelBranch, ExecAction, Fleet, METRICS_FILE, NodeConfig, Pin, Signing, release_tree,
    watch_json, write_trust,
};
use release::{Key, NodeRoot, PRINCIPAL, REPO, Run, Tagging};
use servers::SmartHttp;

/// Exit code of a refused signature or channel.
const EXIT_VERIFY: i32 = 5;
/// Message id of a refused channel tip.
const REFUSED_ID: &str = "9a1c3e5b7d2f4a6c8e0b1d3f5a7c9e2b";
/// Message id of a conflict (two documents with one sequence).
const CONFLICT_ID: &str = "c47e1a9b2d5f4e08a3b6c9d2e5f8a1b4";
/// Message id of a channel gone stale.
const STALE_ID: &str = "5b8d2f6a9c1e4b7d8f0a3c6e9b2d5f81";
/// Ten days, in seconds: a clock restored from an old snapshot.
const TEN_DAYS: i64 = 10 * 86_400;

/// `driftless watch --once`: its poll went through, and it exits 10
/// exactly when it refused the tip (README, "Exit codes"), else 0.
fn watch_once(root: &NodeRoot, env: &[(&str, &str)]) -> Run {
    let run = root.driftless("watch", &["--once"], env);
    let refused = run.stderr.contains(REFUSED_ID) || run.stderr.contains(CONFLICT_ID);
    let expected = if refused { 10 } else { 0 };
    assert_eq!(run.code, Some(expected), "{}", run.describe());
    run
}

/// The `watch` object of `driftless status --json`.
fn watch_status(root: &NodeRoot) -> serde_json::Value {
    root.status_json()["watch"].clone()
}

/// The human `driftless status` (0, or 10 while the last tip stands
/// refused: README, "Exit codes").
fn status_text(root: &NodeRoot) -> String {
    let run = root.driftless("status", &[], &[]);
    let refused = root.status_json()["watch"]["refusal"].is_object();
    assert_eq!(
        run.code,
        Some(if refused { 10 } else { 0 }),
        "{}",
        run.describe()
    );
    run.stdout
}

/// The line of `text` starting with `key` and a space.
fn line<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// The value of metric `name` (a line `NAME VALUE`, no labels).
fn metric(root: &NodeRoot, name: &str) -> Option<f64> {
    root.read_text(METRICS_FILE)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.parse().expect("a metric value"))
}

/// A fleet served over smart HTTP, and a node of it.
struct Scene {
    fleet: Fleet,
    http: SmartHttp,
    action: ExecAction,
}

impl Scene {
    fn new() -> Self {
        let fleet = Fleet::new();
        let http = SmartHttp::start(&fleet.world.srv()).expect("start smart HTTP");
        let action = ExecAction::new(&fleet.world, "replace", 0);
        Self {
            fleet,
            http,
            action,
        }
    }

    fn branch(&self) -> ChannelBranch<'_> {
        if self.fleet.world.path("work/channel/.git").is_dir() {
            self.fleet.channel_reopen()
        } else {
            self.fleet.channel()
        }
    }

    /// A node config (metrics on), started from the channel unless `pin`.
    fn config(&self, pin: Option<&str>) -> NodeConfig {
        let mut config = NodeConfig::new(&self.http.http_url(REPO), &self.action.replace_yaml(&[]));
        config.metrics = true;
        if let Some(tag) = pin {
            config.pin = Pin::Tag(tag.to_owned());
        }
        config
    }

    /// Asserts `tip` was refused with a reason holding every needle and
    /// of `kind`; nothing was asked; status, metrics and the journal say so.
    fn assert_refused(&self, root: &NodeRoot, run: &Run, tip: &str, kind: &str, needles: &[&str]) {
        let watch = watch_status(root);
        let refusal = &watch["refusal"];
        assert_eq!(refusal["tip"], tip, "{watch}\n{}", run.describe());
        assert_eq!(refusal["kind"], kind, "{watch}");
        let reason = refusal["reason"].as_str().unwrap_or_default();
        for needle in needles {
            assert!(reason.contains(needle), "reason lacks {needle:?}: {reason}");
        }
        assert!(watch["replacement"].is_null(), "{watch}");
        assert!(self.action.calls().is_empty(), "{}", run.describe());
        let id = if kind == "conflict" {
            CONFLICT_ID
        } else {
            REFUSED_ID
        };
        assert!(
            run.stderr.contains(id),
            "logged with {id}\n{}",
            run.describe()
        );
        let text = status_text(root);
        let refused = line(&text, "refused").unwrap_or_else(|| panic!("no refused line:\n{text}"));
        assert!(
            refused.contains(tip) && refused.contains(&format!("[{kind}]")),
            "{text}"
        );
        assert_eq!(metric(root, "driftless_channel_refused"), Some(1.0));
        let info = format!("driftless_channel_refusal_info{{kind=\"{kind}\",tip=\"{tip}\"}} 1");
        let metrics = root.read_text(METRICS_FILE);
        assert!(metrics.lines().any(|l| l == info), "{info}\n{metrics}");
        assert_eq!(metric(root, "driftless_replacement_requested"), Some(0.0));
    }
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

#[test]
fn replay_at_first_boot_below_the_images_bake_record_is_refused() {
    let s = Scene::new();
    let branch = s.branch();
    let old = branch.promote(&s.fleet.key, "v1", "");
    branch.promote(&s.fleet.key, "v2", "");
    let baked = branch.promote(&s.fleet.key, "v2", "");
    // Baking: the release and the channel's floor go into the image.
    let image = s.fleet.node("image", &s.config(None));
    let fetch = image.driftless("fetch", &[], &[]).ok();
    assert!(fetch.stdout.contains("sequence 3"), "{}", fetch.describe());
    let floor: serde_json::Value =
        serde_json::from_str(&image.read_text("/var/lib/driftless/channel-floor.json"))
            .expect("the floor is JSON");
    assert_eq!(floor["sequence"], 3, "{floor}");
    assert_eq!(floor["tip"], baked.as_str(), "{floor}");
    assert_eq!(floor["recorded_by"], "bake", "{floor}");

    // The mirror resets the channel to an older signed tip, still fresh.
    branch.reset_hard(&old);
    branch.force_push();
    let run = image.apply();
    run.refused(EXIT_VERIFY, &[&old, "sequence 1, below 3", "bake record"]);
    let status = image.status_json();
    assert!(
        status["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("served again")),
        "{status}"
    );
    assert!(
        !image.host("/etc/motd").exists(),
        "nothing of v1 was written"
    );

    // The current tip boots.
    let branch = s.branch();
    branch.reset_hard(&baked);
    branch.force_push();
    image.apply().ok();
    assert_eq!(image.status_json()["release"]["tag"], "v2");
}

#[test]
fn replay_of_an_expired_tip_at_first_boot_is_refused() {
    let s = Scene::new();
    let branch = s.branch();
    let old = branch.channel(&s.fleet.key, &["init", "v1", "--expires-in", "2s"], &[]);
    branch.push();
    let current = branch.promote(&s.fleet.key, "v2", "");
    std::thread::sleep(Duration::from_secs(3));
    // A node without any floor: the old tip is refused for its age alone.
    branch.reset_hard(&old);
    branch.force_push();
    let node = s.fleet.node("node", &s.config(None));
    let run = node.apply();
    run.refused(EXIT_VERIFY, &[&old, "expired", "never acted on"]);
    branch.reset_hard(&current);
    branch.force_push();
    node.apply().ok();
    assert_eq!(node.status_json()["release"]["tag"], "v2");
}

#[test]
fn replay_to_a_running_node_built_from_a_fixed_tag_is_refused() {
    let s = Scene::new();
    let branch = s.branch();
    let old = branch.promote(&s.fleet.key, "v1", "");
    let seen = branch.promote(&s.fleet.key, "v2", "");
    // Over HTTP (and git://) the release streams without libgit2: the
    // floor is the tip.
    let streamed = s.fleet.node("streamed", &s.config(Some("v2")));
    streamed.apply().ok();
    let floor: serde_json::Value =
        serde_json::from_str(&streamed.read_text("/var/lib/driftless/channel-floor.json"))
            .expect("the floor is JSON");
    assert_eq!(floor["tip"], seen.as_str(), "{floor}");
    assert_eq!(floor["recorded_by"], "apply", "{floor}");
    // Over file:// libgit2 fetches it: the floor is verified, with its
    // sequence.
    let mut config = s.config(Some("v2"));
    config.url = format!("file://{}", s.fleet.world.srv().join(REPO).display());
    let fetched = s.fleet.node("fetched", &config);
    fetched.apply().ok();
    let floor: serde_json::Value =
        serde_json::from_str(&fetched.read_text("/var/lib/driftless/channel-floor.json"))
            .expect("the floor is JSON");
    assert_eq!(floor["sequence"], 2, "{floor}");

    // The host serves the older tip, which names v1, to both.
    branch.reset_hard(&old);
    branch.force_push();
    let run = watch_once(&streamed, &[]);
    s.assert_refused(&streamed, &run, &old, "not-forward", &["applied"]);
    let run = watch_once(&fetched, &[]);
    s.assert_refused(
        &fetched,
        &run,
        &old,
        "replay",
        &["sequence 1, below 2", "applied"],
    );
}

// ---------------------------------------------------------------------------
// Mix and match
// ---------------------------------------------------------------------------

#[test]
fn another_channel_or_fleet_served_under_the_channels_name_is_refused() {
    let s = Scene::new();
    let branch = s.branch();
    branch.promote(&s.fleet.key, "v1", "");
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();

    // The staging channel's signed tip, served as refs/heads/channel.
    let staging = ChannelBranch::new(&s.fleet.world, REPO, "staging");
    staging
        .driftless(&s.fleet.key, &["init", "v2"], &["--branch", "staging"])
        .ok();
    let work = s.fleet.world.path("work/staging");
    let tip = s.fleet.world.tool(
        s.fleet
            .world
            .git()
            .arg("-C")
            .arg(&work)
            .args(["rev-parse", "refs/heads/staging"]),
    );
    s.fleet.world.tool(
        s.fleet
            .world
            .git()
            .arg("-C")
            .arg(&work)
            .args(["push", "-q", "--force"])
            .arg(s.fleet.world.srv().join(REPO))
            .arg("refs/heads/staging:refs/heads/channel"),
    );
    let run = watch_once(&node, &[]);
    s.assert_refused(
        &node,
        &run,
        &tip,
        "binding",
        &["channel \"staging\", not \"channel\""],
    );

    // Another fleet's channel of the same name.
    let other = ChannelBranch::new(&s.fleet.world, REPO, "other-fleet");
    let tip = other.channel(&s.fleet.key, &["init", "v2", "--fleet", "db"], &[]);
    other.force_push();
    let run = watch_once(&node, &[]);
    s.assert_refused(
        &node,
        &run,
        &tip,
        "binding",
        &["fleet \"db\", not \"default\""],
    );
}

// ---------------------------------------------------------------------------
// Freeze
// ---------------------------------------------------------------------------

#[test]
fn a_frozen_channel_goes_stale_and_nothing_is_done_on_it() {
    let s = Scene::new();
    let branch = s.branch();
    branch.channel(&s.fleet.key, &["init", "v1", "--expires-in", "4s"], &[]);
    branch.push();
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();
    watch_once(&node, &[]);
    assert_eq!(metric(&node, "driftless_channel_fresh"), Some(1.0));
    // The host freezes: the refresh job's commits never show.
    branch.channel(&s.fleet.key, &["refresh"], &[]);
    std::thread::sleep(Duration::from_secs(5));
    let run = watch_once(&node, &[]);
    assert!(run.stderr.contains(STALE_ID), "{}", run.describe());
    let watch = watch_status(&node);
    assert_eq!(watch["freshness"]["fresh"], false, "{watch}");
    let text = status_text(&node);
    let channel_line = line(&text, "channel").unwrap_or_else(|| panic!("{text}"));
    assert!(channel_line.contains("STALE since"), "{text}");
    assert_eq!(metric(&node, "driftless_channel_fresh"), Some(0.0));
    assert!(metric(&node, "driftless_channel_stale_seconds").is_some_and(|v| v >= 1.0));

    // A promotion that reaches the node only after it expired is refused.
    let frozen = branch.channel(&s.fleet.key, &["promote", "v2", "--expires-in", "2s"], &[]);
    std::thread::sleep(Duration::from_secs(3));
    branch.push();
    let run = watch_once(&node, &[]);
    s.assert_refused(
        &node,
        &run,
        &frozen,
        "expired",
        &["expired at", "never acted on"],
    );
    assert!(s.action.calls().is_empty());

    // A refresh that reaches it renews the channel: fresh again, and the
    // promotion it carries is acted on.
    let fresh = branch.channel(&s.fleet.key, &["refresh"], &[]);
    branch.push();
    let run = watch_once(&node, &[]);
    let watch = watch_status(&node);
    assert_eq!(
        watch["channel"]["tip"],
        fresh.as_str(),
        "{watch}\n{}",
        run.describe()
    );
    assert_eq!(watch["freshness"]["fresh"], true, "{watch}");
    assert_eq!(s.action.calls().len(), 1, "{}", run.describe());
}

// ---------------------------------------------------------------------------
// Sequences
// ---------------------------------------------------------------------------

#[test]
fn a_lower_sequence_on_top_of_the_accepted_tip_is_refused() {
    let s = Scene::new();
    let branch = s.branch();
    branch.promote(&s.fleet.key, "v1", "");
    let accepted = branch.promote(&s.fleet.key, "v1", "");
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();
    // Signed by the channel key and descending from the accepted tip,
    // but with a sequence going back: git's history alone would pass it.
    let text = branch.next_document(&[
        ("sequence", "1"),
        ("release", "v2"),
        ("tag_object", &s.fleet.v2.tag_object),
    ]);
    let tip = branch.commit(&text, Signing::Signed(&s.fleet.key), "sequence 1 again");
    branch.push();
    assert!(branch.is_ancestor(&accepted, &tip));
    let run = watch_once(&node, &[]);
    s.assert_refused(&node, &run, &tip, "replay", &["sequence 1, below 2"]);
}

#[test]
fn a_conflicting_sequence_is_refused_loudly() {
    let s = Scene::new();
    let branch = s.branch();
    let base = branch.promote(&s.fleet.key, "v1", "");
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();
    let shown = branch.channel(&s.fleet.key, &["refresh"], &[]);
    branch.push();
    watch_once(&node, &[]);
    assert_eq!(watch_status(&node)["channel"]["tip"], shown.as_str());
    // Another history from the same point with the same sequence: a host
    // showing some nodes one and others the other.
    branch.reset_hard(&base);
    let other = branch.channel(&s.fleet.key, &["promote", "v2"], &[]);
    branch.force_push();
    let run = watch_once(&node, &[]);
    s.assert_refused(
        &node,
        &run,
        &other,
        "conflict",
        &["CONFLICT", "sequence 2", &shown],
    );
    assert_eq!(metric(&node, "driftless_channel_conflict"), Some(1.0));
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

/// A scene whose nodes trust separate keys: `release` signs releases,
/// `mover` moves the channel, `refresher` only refreshes it.
struct Roles {
    s: Scene,
    mover: Key,
    refresher: Key,
    node: NodeRoot,
    /// `--channel-signers … --refresh-signers …` for `driftless channel`.
    flags: Vec<String>,
}

impl Roles {
    fn new() -> Self {
        let s = Scene::new();
        let mover = s.fleet.world.keygen("mover");
        let refresher = s.fleet.world.keygen("refresher");
        let channel_signers = write_trust(&s.fleet.world, "channel_signers", &[&mover]);
        let refresh_signers = write_trust(&s.fleet.world, "refresh_signers", &[&refresher]);
        let flags = vec![
            "--channel-signers".to_owned(),
            channel_signers.display().to_string(),
            "--refresh-signers".to_owned(),
            refresh_signers.display().to_string(),
        ];
        let mut config = s.config(None);
        config.channel_signers = Some(vec![mover.allowed(PRINCIPAL)]);
        config.refresh_signers = Some(vec![refresher.allowed("refresh-job@example.com")]);
        let node = s.fleet.node("node", &config);
        let roles = Self {
            s,
            mover,
            refresher,
            node,
            flags,
        };
        let branch = roles.s.branch();
        roles.run(&roles.mover, &["init", "v1"]).ok();
        branch.push();
        roles.node.apply().ok();
        roles
    }

    fn run(&self, key: &Key, args: &[&str]) -> Run {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.s.branch().driftless(key, args, &flags)
    }
}

#[test]
fn a_refresh_key_renews_the_channel_and_nothing_else() {
    let r = Roles::new();
    let branch = r.s.branch();
    // Twice: the node walks the refreshes back to the mover's commit.
    r.run(&r.refresher, &["refresh"]).ok();
    let refreshed = {
        r.run(&r.refresher, &["refresh"]).ok();
        branch.head()
    };
    branch.push();
    let run = watch_once(&r.node, &[]);
    let watch = watch_status(&r.node);
    assert_eq!(
        watch["channel"]["tip"],
        refreshed.as_str(),
        "{watch}\n{}",
        run.describe()
    );
    assert_eq!(watch["channel"]["role"], "refresh", "{watch}");
    assert_eq!(watch["channel"]["file"]["sequence"], 3, "{watch}");
    let fresh_node = r.s.fleet.node("fresh", &r.s.config(None));
    // (A first boot with the same trust walks the chain too.)
    let mut config = r.s.config(None);
    config.channel_signers = Some(vec![r.mover.allowed(PRINCIPAL)]);
    config.refresh_signers = Some(vec![r.refresher.allowed("refresh-job@example.com")]);
    config.install(&fresh_node, &r.s.fleet.key);
    fresh_node.apply().ok();
    assert_eq!(
        watch_json(&fresh_node)["channel"]["base"],
        watch["channel"]["base"]
    );

    // The command refuses a refresh key's promotion, leaving the branch.
    let refused = r.run(&r.refresher, &["promote", "v2"]);
    refused.refused(EXIT_VERIFY, &["refresh", "changes", "release"]);
    assert_eq!(branch.head(), refreshed, "a refused command moves nothing");
    // Crafted by hand and served, nodes refuse it.
    let text = branch.next_document(&[("release", "v2"), ("tag_object", &r.s.fleet.v2.tag_object)]);
    let tip = branch.commit(&text, Signing::Signed(&r.refresher), "refresh, and more");
    branch.push();
    let run = watch_once(&r.node, &[]);
    r.s.assert_refused(
        &r.node,
        &run,
        &tip,
        "refresh",
        &["changes release, tag_object", "only the expiry"],
    );
}

#[test]
fn a_release_key_cannot_move_the_channel() {
    let r = Roles::new();
    let branch = r.s.branch();
    let before = branch.head();
    let refused = r.run(&r.s.fleet.key, &["promote", "v2"]);
    refused.refused(
        EXIT_VERIFY,
        &["a release key that may not move the channel"],
    );
    let text = branch.next_document(&[("release", "v2"), ("tag_object", &r.s.fleet.v2.tag_object)]);
    let tip = branch.commit(
        &text,
        Signing::Signed(&r.s.fleet.key),
        "a release key's promote",
    );
    branch.push();
    let run = watch_once(&r.node, &[]);
    r.s.assert_refused(
        &r.node,
        &run,
        &tip,
        "signature",
        &["release key", "channel_signers"],
    );
    // The channel key moves it.
    branch.reset_hard(&before);
    r.run(&r.mover, &["promote", "v2"]).ok();
    branch.force_push();
    watch_once(&r.node, &[]);
    assert_eq!(r.s.action.calls().len(), 1);
}

// ---------------------------------------------------------------------------
// The release by tag and tag object
// ---------------------------------------------------------------------------

#[test]
fn a_re_signed_tag_of_the_same_name_is_not_the_release() {
    let s = Scene::new();
    let branch = s.branch();
    branch.promote(&s.fleet.key, "v1", "");
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();
    let tip = branch.promote(&s.fleet.key, "v2", "");
    // The host swaps v2 for another tag of that name, signed by the same
    // key (a retagged release), on another commit.
    let swapped = s.fleet.world.publish(
        REPO,
        &release_tree("v2", "/bin/true"),
        "v2-new",
        Tagging::Signed(&s.fleet.key),
    );
    let work = s.fleet.world.path("work").join(REPO);
    let mut retag = s.fleet.world.git();
    retag
        .arg("-C")
        .arg(&work)
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("user.signingKey={}", s.fleet.key.private.display()))
        .args([
            "tag",
            "-f",
            "-s",
            "-m",
            "release v2, again",
            "v2",
            &swapped.commit,
        ]);
    s.fleet.world.tool(&mut retag);
    s.fleet.world.tool(
        s.fleet
            .world
            .git()
            .arg("-C")
            .arg(&work)
            .args(["push", "-q", "--force"])
            .arg(&swapped.bare)
            .arg("refs/tags/v2"),
    );
    let run = watch_once(&node, &[]);
    s.assert_refused(
        &node,
        &run,
        &tip,
        "release",
        &["tag object", &s.fleet.v2.tag_object, "swapped"],
    );
}

// ---------------------------------------------------------------------------
// The clock
// ---------------------------------------------------------------------------

#[test]
fn a_clock_behind_is_held_at_the_newest_signed_time() {
    let s = Scene::new();
    let branch = s.branch();
    let tip = branch.channel(&s.fleet.key, &["init", "v1", "--expires-in", "2s"], &[]);
    branch.push();
    std::thread::sleep(Duration::from_secs(3));
    // Released after the channel expired; the node runs it, with a clock
    // ten days behind, and the host never refreshes the channel.
    let v3 = s.fleet.publish("v3", "/bin/true");
    let node = s.fleet.node("node", &s.config(Some("v3")));
    node.apply().ok();
    let behind = (-TEN_DAYS).to_string();
    let env = [("DRIFTLESS_TEST_CLOCK_OFFSET", behind.as_str())];
    let run = watch_once(&node, &env);
    s.assert_refused(
        &node,
        &run,
        &tip,
        "expired",
        &["newest signed time seen", "release v3", "is behind it"],
    );
    let _ = v3;
    let text = status_text(&node);
    assert!(
        line(&text, "refused").is_some_and(|l| l.contains("is behind it")),
        "{text}"
    );
}

#[test]
fn a_clock_ahead_sees_the_channel_stale_and_does_nothing() {
    let s = Scene::new();
    let branch = s.branch();
    branch.promote(&s.fleet.key, "v1", "");
    let ahead = (4 * 86_400).to_string();
    let env = [("DRIFTLESS_TEST_CLOCK_OFFSET", ahead.as_str())];
    let node = s.fleet.node("node", &s.config(None));
    let run = node.driftless("apply", &[], &env);
    run.refused(EXIT_VERIFY, &["expired", "by the system clock"]);
    node.apply().ok();
    let tip = branch.promote(&s.fleet.key, "v2", "");
    let run = watch_once(&node, &env);
    s.assert_refused(&node, &run, &tip, "expired", &["by the system clock"]);
    let run = watch_once(&node, &[]);
    assert_eq!(s.action.calls().len(), 1, "{}", run.describe());
}

#[test]
fn a_first_boot_waits_for_a_synchronized_clock_as_configured() {
    let s = Scene::new();
    s.branch().promote(&s.fleet.key, "v1", "");
    let mut config = s.config(None);
    config.clock = "{sync: require, sync_timeout: 2s}".to_owned();
    let node = s.fleet.node("node", &config);
    let started = Instant::now();
    let run = node.driftless("apply", &[], &[("DRIFTLESS_TEST_CLOCK_SYNC", "no")]);
    run.refused(
        EXIT_VERIFY,
        &[
            "not known to be synchronized after 2s",
            "clock.sync is require",
        ],
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{}",
        run.describe()
    );
    // Waiting, it goes on after the timeout and says so; synchronized, at once.
    config.clock = "{sync: wait, sync_timeout: 2s}".to_owned();
    let waiting = s.fleet.node("waiting", &config);
    let run = waiting
        .driftless("apply", &[], &[("DRIFTLESS_TEST_CLOCK_SYNC", "no")])
        .ok();
    assert!(
        run.stderr.contains("waiting up to 2s") && run.stderr.contains("not synchronized after"),
        "{}",
        run.describe()
    );
    let run = node
        .driftless("apply", &[], &[("DRIFTLESS_TEST_CLOCK_SYNC", "yes")])
        .ok();
    assert!(!run.stderr.contains("waiting up to"), "{}", run.describe());
    assert_eq!(node.status_json()["release"]["tag"], "v1");
}

// ---------------------------------------------------------------------------
// The operator's command
// ---------------------------------------------------------------------------

#[test]
fn driftless_channel_refuses_what_a_node_would_and_moves_nothing() {
    let s = Scene::new();
    let branch = s.branch();
    let stranger = s.fleet.world.keygen("stranger");
    s.fleet.world.publish(
        REPO,
        &release_tree("v3", "/bin/true"),
        "v3",
        Tagging::Signed(&stranger),
    );
    let tip = branch.promote(&s.fleet.key, "v1", "");
    let k = &s.fleet.key;
    for (args, code, needles) in [
        (vec!["init", "v2"], 1, vec!["already holds channel channel"]),
        (vec!["promote", "v1"], 1, vec!["already names v1"]),
        (vec!["promote", "v9"], 1, vec!["no tag v9"]),
        (
            vec!["promote", "v3"],
            EXIT_VERIFY,
            vec!["v3", "not in allowed_signers"],
        ),
        (vec!["rollback", "v2"], 1, vec!["never named v2"]),
        (vec!["release"], 1, vec!["not on hold"]),
        (
            vec!["refresh", "--expires-in", "0s"],
            2,
            vec!["at least 1s"],
        ),
    ] {
        let run = branch.driftless(k, &args, &[]);
        if code == 2 {
            assert_eq!(run.code, Some(2), "{}", run.describe());
        } else {
            run.refused(code, &needles);
        }
        assert_eq!(branch.head(), tip, "{args:?} moved the branch");
    }
    let run = branch.driftless(&stranger, &["refresh"], &[]);
    run.refused(
        EXIT_VERIFY,
        &["nodes would refuse it", "not in allowed_signers"],
    );
    assert_eq!(branch.head(), tip);

    // The happy paths, shown as nodes see them.
    branch.channel(
        k,
        &["promote", "v2", "--canary", "10%", "--waves", "2"],
        &[],
    );
    branch.channel(k, &["hold"], &[]);
    branch.channel(k, &["release"], &[]);
    branch.channel(k, &["rollback", "v1"], &[]);
    branch.channel(k, &["refresh", "--expires-in", "3d"], &[]);
    assert_eq!(branch.field("sequence"), "6");
    assert_eq!(branch.field("release"), "v1");
    assert_eq!(branch.field("canary"), "10%");
    let show = branch.driftless(k, &["show", "--json"], &[]).ok().json();
    assert_eq!(show["accepted"], true, "{show}");
    assert_eq!(show["document"]["sequence"], 6, "{show}");
    assert!(
        show["expires_in_seconds"]
            .as_i64()
            .is_some_and(|s| s > 2 * 86_400),
        "{show}"
    );
    let text = branch.driftless(k, &["show"], &[]).ok().stdout;
    assert!(
        line(&text, "verdict").is_some_and(|l| l.contains("nodes accept it")),
        "{text}"
    );
    assert!(
        line(&text, "nodes").is_some_and(|l| l.contains("canary 10.00%")),
        "{text}"
    );
}

#[test]
fn an_idle_poll_is_still_one_small_request() {
    let s = Scene::new();
    s.branch().promote(&s.fleet.key, "v1", "");
    let node = s.fleet.node("node", &s.config(None));
    node.apply().ok();
    watch_once(&node, &[]);
    let mark = s.http.access_log().expect("access log").len();
    for _ in 0..3 {
        watch_once(&node, &[]);
    }
    let log = s.http.access_log().expect("access log");
    let polls = &log[mark..];
    assert_eq!(polls.len(), 3, "one request per poll: {polls:?}");
    for p in polls {
        assert!(p.uri.ends_with("/git-upload-pack"), "{p:?}");
        eprintln!(
            "idle poll: {} bytes down, {} up",
            p.bytes_sent, p.request_length
        );
        assert!(p.bytes_sent < 1024 && p.request_length < 1024, "{p:?}");
    }
}

/// A node's place in the rollout of `release` (as `fleet::rollout::bucket`).
fn bucket(node_id: &str, release: &str) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(node_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(release.as_bytes());
    let hash = ctx.finish();
    let b = hash.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % 10_000
}

#[test]
fn an_accepted_channel_that_expired_is_not_acted_on_when_its_wave_comes() {
    let s = Scene::new();
    let branch = s.branch();
    branch.promote(&s.fleet.key, "v1", "");
    // A node in the second of two waves for v2.
    let id = (0..)
        .map(|i| format!("node-{i}"))
        .find(|id| bucket(id, "v2") >= 5_000)
        .expect("some id");
    let node = s.fleet.node("node", &s.config(None));
    node.write("/etc/machine-id", format!("{id}\n"));
    node.apply().ok();
    branch.channel(
        &s.fleet.key,
        &[
            "promote",
            "v2",
            "--waves",
            "2",
            "--wave-interval",
            "1h",
            "--expires-in",
            "30m",
        ],
        &[],
    );
    branch.push();
    let run = watch_once(&node, &[]);
    let watch = watch_status(&node);
    assert_eq!(
        watch["rollout"]["state"],
        "wait",
        "{watch}\n{}",
        run.describe()
    );
    // Two hours on: its wave has come, but the document expired.
    let later = (2 * 3600).to_string();
    let run = watch_once(&node, &[("DRIFTLESS_TEST_CLOCK_OFFSET", later.as_str())]);
    assert!(run.stderr.contains(STALE_ID), "{}", run.describe());
    assert!(s.action.calls().is_empty(), "{}", run.describe());
    let watch = watch_status(&node);
    assert!(
        watch["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("stale")),
        "{watch}"
    );
    assert!(watch["replacement"].is_null(), "{watch}");
}
