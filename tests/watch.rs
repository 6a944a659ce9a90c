//! End-to-end tests of `driftless watch`: the built binary watches a
//! fleet's signed channel (`channel.yaml` on `refs/heads/channel` of a
//! release repository made at run time with the real `git` and
//! `ssh-keygen`), served by nginx + git-http-backend or `git daemon` on
//! 127.0.0.1, and asks to be replaced, exactly once, when the channel names
//! another release than the node's.
//!
//! Replacement goes through `replace.action: exec` (a shell script that
//! records its argv and environment) or `webhook` (a receiver in the test
//! that checks the HMAC with ring). Refused channel tips (unsigned, signed
//! by a stranger, moved backwards or sideways, naming a missing or
//! untrusted tag) and `hold: true` must never cause a replacement and must
//! show in `driftless status`.
//!
//! Every test has its own temporary directory, keys, repositories, roots
//! and servers (ephemeral 127.0.0.1 ports), so tests run in parallel. Every
//! driftless run has a time limit; the daemon tests assert how soon the
//! watcher acts.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;
#[path = "support/webhook.rs"]
mod webhook;

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use channel::{
    ChannelBranch, ExecAction, Fleet, METRICS_FILE, NodeConfig, Pin, SECRET_FILE, Signing,
    expected_request_id, release_tree, watch_json,
};
use release::{MACHINE_ID, NodeRoot, PRINCIPAL, Published, REPO, Run, Tagging, World};
use servers::{GitDaemon, SmartHttp, wait_for};
use webhook::Receiver;

/// Exit code of a failed health check.
const EXIT_HEALTH: i32 = 8;
/// The channel poll interval of every node here (`channel.poll_interval`).
const POLL: Duration = Duration::from_secs(1);
/// The longest a poll interval lasts with the watcher's ±10 % jitter.
const POLL_MAX: Duration = Duration::from_millis(1100);
/// Time a poll that sees a new tip may take on top of the interval: fetch
/// the channel and the tag, verify both, run the action (a loaded CI
/// machine included).
const EVALUATION: Duration = Duration::from_secs(2);
/// The longest the watcher may take to act on a change: a couple of poll
/// intervals, plus the evaluation.
const PROMPT: Duration = POLL_MAX.saturating_mul(2).saturating_add(EVALUATION);
/// How long a test waits for something that should happen promptly before
/// calling it missing.
const PATIENCE: Duration = Duration::from_secs(20);
/// `PATH` of every command the watcher runs.
const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The webhook secret the node and the receiver share.
const SECRET: &str = "correct horse battery staple";
/// A variable in the watcher's environment that must not reach the action.
const CANARY: (&str, &str) = ("WATCH_TEST_CANARY", "leaked");

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// `driftless watch --once --root ROOT`, which must succeed.
fn watch_once(root: &NodeRoot) -> Run {
    root.driftless("watch", &["--once"], &[]).reported()
}

/// The `watch` object of `driftless status --json`.
fn watch_status(root: &NodeRoot) -> serde_json::Value {
    root.status_json()["watch"].clone()
}

/// The human `driftless status` output.
fn status_text(root: &NodeRoot) -> String {
    root.driftless("status", &[], &[]).reported().stdout
}

/// The line of `text` starting with `key` and a space.
fn line<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// Asserts the node is applied at `release`.
fn assert_pinned(root: &NodeRoot, release: &Published, tag: &str) {
    let status = root.status_json();
    assert_eq!(status["status"]["state"], "applied", "{status}");
    assert_eq!(status["release"]["tag"], tag, "{status}");
    assert_eq!(
        status["release"]["commit"],
        release.commit.as_str(),
        "{status}"
    );
}

/// Asserts `call` is one release-changed request from `pinned` to `desired`.
fn assert_release_changed_call(
    call: &channel::Call,
    fixed_args: &[&str],
    pinned: (&str, &Published),
    desired: &str,
) {
    let (pinned_tag, pinned_release) = pinned;
    let mut want: Vec<String> = fixed_args.iter().map(|a| (*a).to_owned()).collect();
    want.push(format!("release-changed: {pinned_tag} -> {desired}"));
    assert_eq!(
        call.args, want,
        "argv: the reason is the last argument: {call:?}"
    );
    assert_eq!(call.var("DRIFTLESS_NODE_ID"), MACHINE_ID, "{call:?}");
    assert_eq!(call.var("DRIFTLESS_REASON"), "release-changed", "{call:?}");
    assert_eq!(call.var("DRIFTLESS_PINNED"), pinned_tag, "{call:?}");
    assert_eq!(
        call.var("DRIFTLESS_PINNED_COMMIT"),
        pinned_release.commit,
        "{call:?}"
    );
    assert_eq!(call.var("DRIFTLESS_DESIRED"), desired, "{call:?}");
    assert_eq!(
        call.var("DRIFTLESS_REQUEST_ID"),
        expected_request_id(
            MACHINE_ID,
            &pinned_release.commit,
            desired,
            "release-changed"
        ),
        "{call:?}"
    );
    assert_eq!(call.var("PATH"), COMMAND_PATH, "{call:?}");
    for leak in [CANARY.0, "HOME"] {
        assert!(
            !call.env.contains_key(leak),
            "{leak} leaked into the action: {call:?}"
        );
    }
}

/// The requests the smart-HTTP server logged after the first `mark`.
fn requests_since(http: &SmartHttp, mark: usize) -> Vec<servers::AccessEntry> {
    let log = http.access_log().expect("read the access log");
    log.get(mark..).map(<[_]>::to_vec).unwrap_or_default()
}

/// Waits until the watcher has recorded a poll (a `last_poll` other than
/// `before`); returns it.
fn wait_for_poll(root: &NodeRoot, before: &serde_json::Value) -> serde_json::Value {
    wait_for(PATIENCE, || {
        let poll = watch_json(root)["last_poll"].clone();
        (!poll.is_null() && poll != *before).then_some(poll)
    })
    .unwrap_or_else(|| panic!("the watcher did not poll within {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------
// 1. Promote
// ---------------------------------------------------------------------------

#[test]
fn promote_runs_the_exec_action_once_and_promptly() {
    let fleet = Fleet::new();
    let http = SmartHttp::start(&fleet.world.srv()).expect("start smart HTTP");
    let branch = fleet.channel();
    let tip1 = branch.promote(&fleet.key, "v1", "");
    let action = ExecAction::new(&fleet.world, "replace", 0);
    let fixed = ["--fleet", "blue"];
    let mut config = NodeConfig::new(&http.http_url(REPO), &action.replace_yaml(&fixed));
    config.metrics = true;
    let root = fleet.node("node", &config);

    // The node starts from the channel: v1, and the tip it was built from.
    root.apply().ok();
    assert_pinned(&root, &fleet.v1, "v1");
    let record = watch_json(&root);
    assert_eq!(record["channel"]["tip"], tip1.as_str(), "{record}");
    assert_eq!(record["channel"]["release"], "v1", "{record}");

    let daemon = fleet.daemon(&root, "daemon-1", &[CANARY]);
    let first_poll = wait_for_poll(&root, &serde_json::Value::Null);
    // Same release: the first polls ask for nothing.
    std::thread::sleep(POLL_MAX);
    assert!(action.calls().is_empty(), "{}", daemon.stderr());
    assert!(
        watch_json(&root)["refusal"].is_null(),
        "{}",
        watch_json(&root)
    );

    let tip2 = branch.promote(&fleet.key, "v2", "");
    let pushed = Instant::now();
    let calls = action
        .wait_for_calls(1, PATIENCE)
        .unwrap_or_else(|| panic!("no replacement request\n{}", daemon.stderr()));
    let elapsed = pushed.elapsed();
    eprintln!("push of v2 -> exec action run: {elapsed:?}");
    assert!(
        elapsed <= PROMPT,
        "the watcher took {elapsed:?} to act (poll interval {POLL:?})\n{}",
        daemon.stderr()
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_release_changed_call(&calls[0], &fixed, ("v1", &fleet.v1), "v2");

    // A few more intervals: still one request, and each poll is one
    // protocol v2 request for the channel ref (no fetch: the tip stands).
    let mark = http.access_log().expect("access log").len();
    let quiet = Instant::now();
    std::thread::sleep(4 * POLL);
    let quiet_polls = requests_since(&http, mark);
    assert_eq!(action.calls().len(), 1, "{}", daemon.stderr());
    let exit = daemon.stop();
    assert_eq!(exit.status.code(), Some(0), "{}", exit.describe());
    assert!(!exit.killed, "{}", exit.describe());
    let most = usize::try_from(quiet.elapsed().as_millis() / 900 + 1).expect("small");
    assert!(
        (2..=most).contains(&quiet_polls.len()),
        "{} requests in {:?} of idle polling: {quiet_polls:?}",
        quiet_polls.len(),
        quiet.elapsed()
    );
    for entry in &quiet_polls {
        assert_eq!(entry.method, "POST", "{entry:?}");
        assert!(entry.uri.ends_with("/git-upload-pack"), "{entry:?}");
        assert_eq!(
            entry.git_protocol.as_deref(),
            Some("version=2"),
            "{entry:?}"
        );
    }
    assert!(
        exit.stderr.contains("e2d4f6a8c0b1e3d5f7a9c2e4b6d8f0a1"),
        "the request is logged with its message id\n{}",
        exit.describe()
    );

    // Status: the desired release, and the request made.
    let watch = watch_status(&root);
    assert_ne!(watch["last_poll"], first_poll, "{watch}");
    assert_eq!(watch["channel"]["tip"], tip2.as_str(), "{watch}");
    assert_eq!(watch["channel"]["release"], "v2", "{watch}");
    assert_eq!(watch["channel"]["hold"], false, "{watch}");
    assert_eq!(watch["channel"]["signer"], PRINCIPAL, "{watch}");
    assert!(watch["refusal"].is_null(), "{watch}");
    assert!(watch["last_poll_error"].is_null(), "{watch}");
    assert_eq!(watch["replacement"]["status"], "done", "{watch}");
    assert_eq!(watch["replacement"]["attempts"], 1, "{watch}");
    assert_eq!(watch["replacement"]["request"]["desired"], "v2", "{watch}");
    assert_eq!(watch["replacement"]["request"]["pinned"], "v1", "{watch}");
    assert_eq!(root.status_json()["phase"], "replacement-requested");
    let text = status_text(&root);
    let desired = line(&text, "desired").unwrap_or_else(|| panic!("no desired line:\n{text}"));
    assert!(
        desired.contains("v2") && desired.contains(&tip2) && desired.contains(PRINCIPAL),
        "{text}"
    );
    let replace = line(&text, "replace").unwrap_or_else(|| panic!("no replace line:\n{text}"));
    assert!(
        replace.contains("requested") && replace.contains("v1 -> v2"),
        "{text}"
    );
    assert!(line(&text, "refused").is_none(), "{text}");

    // Metrics: what the node is, what the channel wants, the request.
    let metrics = root.read_text(METRICS_FILE);
    let release_info = format!(
        "driftless_release_info{{tag=\"v1\",commit=\"{}\",signer_fingerprint=\"{}\"}} 1",
        fleet.v1.commit, fleet.key.fingerprint
    );
    assert!(
        metrics.lines().any(|l| l == release_info),
        "{release_info}\n{metrics}"
    );
    let desired_info =
        format!("driftless_desired_release_info{{tag=\"v2\",channel_tip=\"{tip2}\"}} 1");
    assert!(
        metrics.lines().any(|l| l == desired_info),
        "{desired_info}\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "driftless_replacement_requested 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "driftless_channel_refused 0"),
        "{metrics}"
    );

    // A restarted watcher never asks again.
    let before = watch_json(&root)["last_poll"].clone();
    let daemon = fleet.daemon(&root, "daemon-2", &[]);
    wait_for_poll(&root, &before);
    std::thread::sleep(2 * POLL);
    let exit = daemon.stop();
    assert_eq!(exit.status.code(), Some(0), "{}", exit.describe());
    assert_eq!(action.calls().len(), 1, "{}", exit.describe());
}

#[test]
fn promote_posts_one_signed_webhook() {
    let fleet = Fleet::new();
    let http = SmartHttp::start(&fleet.world.srv()).expect("start smart HTTP");
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");
    let receiver = Receiver::start(SECRET);
    let replace = format!(
        "{{action: webhook, url: {}, secret_file: {SECRET_FILE}, timeout: 5s}}",
        serde_json::to_string(&receiver.url()).expect("string")
    );
    let config = NodeConfig::new(&http.http_url(REPO), &replace);
    let root = fleet.node("node", &config);
    root.write(SECRET_FILE, SECRET);
    root.apply().ok();
    assert_pinned(&root, &fleet.v1, "v1");

    let daemon = fleet.daemon(&root, "daemon", &[]);
    wait_for_poll(&root, &serde_json::Value::Null);
    assert!(receiver.hooks().is_empty(), "{}", daemon.stderr());

    let tip2 = branch.promote(&fleet.key, "v2", "");
    let pushed = Instant::now();
    let hooks = receiver
        .wait_for_hooks(1, PATIENCE)
        .unwrap_or_else(|| panic!("no webhook request\n{}", daemon.stderr()));
    let elapsed = pushed.elapsed();
    eprintln!("push of v2 -> webhook received: {elapsed:?}");
    assert!(
        elapsed <= PROMPT,
        "the watcher took {elapsed:?} to act\n{}",
        daemon.stderr()
    );
    std::thread::sleep(4 * POLL);
    let exit = daemon.stop();
    assert_eq!(exit.status.code(), Some(0), "{}", exit.describe());
    let hooks_after = receiver.hooks();
    assert_eq!(
        hooks_after.len(),
        1,
        "exactly one request: {hooks_after:?}\n{}",
        exit.describe()
    );

    let hook = &hooks[0];
    assert_eq!(hook.method, "POST", "{hook:?}");
    assert_eq!(hook.path, "/hook", "{hook:?}");
    assert!(hook.signature_ok, "the HMAC must verify: {hook:?}");
    let body = hook.json();
    let request_id = expected_request_id(MACHINE_ID, &fleet.v1.commit, "v2", "release-changed");
    assert_eq!(body["node_id"], MACHINE_ID, "{body}");
    assert_eq!(body["pinned"], "v1", "{body}");
    assert_eq!(body["pinned_commit"], fleet.v1.commit.as_str(), "{body}");
    assert_eq!(body["desired"], "v2", "{body}");
    assert_eq!(body["reason"], "release-changed", "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert_eq!(
        hook.headers
            .get("x-driftless-request-id")
            .map(String::as_str),
        Some(request_id.as_str()),
        "{hook:?}"
    );
    assert!(
        hook.headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{hook:?}"
    );
    let body_text = String::from_utf8_lossy(&hook.body);
    assert!(
        !body_text.contains(SECRET),
        "the secret is never sent: {body_text}"
    );

    let watch = watch_status(&root);
    assert_eq!(watch["channel"]["tip"], tip2.as_str(), "{watch}");
    assert_eq!(watch["replacement"]["status"], "done", "{watch}");
    assert_eq!(
        watch["replacement"]["request"]["request_id"],
        request_id.as_str(),
        "{watch}"
    );
    let text = status_text(&root);
    assert!(
        line(&text, "replace").is_some_and(|l| l.contains("requested")),
        "{text}"
    );
    assert!(!exit.stderr.contains(SECRET), "{}", exit.describe());

    // Another --once run: still one request.
    watch_once(&root);
    assert_eq!(receiver.hooks().len(), 1);
}

#[test]
fn a_node_pinned_by_tag_takes_the_first_tip_as_its_starting_point() {
    let fleet = Fleet::new();
    let http = SmartHttp::start(&fleet.world.srv()).expect("start smart HTTP");
    let branch = fleet.channel();
    let tip1 = branch.promote(&fleet.key, "v1", "");
    let action = ExecAction::new(&fleet.world, "replace", 0);
    let mut config = NodeConfig::new(&http.http_url(REPO), &action.replace_yaml(&[]));
    config.pin = Pin::Tag("v1".to_owned());
    let root = fleet.node("node", &config);
    root.apply().ok();
    assert_pinned(&root, &fleet.v1, "v1");
    assert!(
        watch_json(&root)["channel"].is_null(),
        "{}",
        watch_json(&root)
    );

    watch_once(&root);
    let watch = watch_status(&root);
    assert_eq!(watch["channel"]["tip"], tip1.as_str(), "{watch}");
    assert!(watch["refusal"].is_null(), "{watch}");
    assert!(watch["replacement"].is_null(), "{watch}");
    assert!(action.calls().is_empty());

    let tip2 = branch.promote(&fleet.key, "v2", "");
    watch_once(&root);
    let calls = action.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_release_changed_call(&calls[0], &[], ("v1", &fleet.v1), "v2");
    assert_eq!(watch_status(&root)["channel"]["tip"], tip2.as_str());
}

// ---------------------------------------------------------------------------
// 2. Refusals
// ---------------------------------------------------------------------------

/// A node applied at v1 from a channel with two signed commits naming v1
/// (`older`, then `accepted`, the tip the node was built from), replaced
/// by an exec action, with metrics.
struct Watched {
    fleet: Fleet,
    /// The server (taken away to play a server that is down).
    http: Option<SmartHttp>,
    action: ExecAction,
    root: NodeRoot,
    /// The first channel commit.
    older: String,
    /// The channel tip the node accepted.
    accepted: String,
}

impl Watched {
    fn new() -> Self {
        let fleet = Fleet::new();
        let http = SmartHttp::start(&fleet.world.srv()).expect("start smart HTTP");
        let branch = fleet.channel();
        let older = branch.promote(&fleet.key, "v1", "");
        let accepted = branch.promote(&fleet.key, "v1", "hold: false\n");
        let action = ExecAction::new(&fleet.world, "replace", 0);
        let mut config = NodeConfig::new(&http.http_url(REPO), &action.replace_yaml(&[]));
        config.metrics = true;
        let root = fleet.node("node", &config);
        root.apply().ok();
        assert_pinned(&root, &fleet.v1, "v1");
        assert_eq!(watch_json(&root)["channel"]["tip"], accepted.as_str());
        Self {
            fleet,
            http: Some(http),
            action,
            root,
            older,
            accepted,
        }
    }

    fn branch(&self) -> ChannelBranch<'_> {
        // The work tree exists already; reopen it without re-initialising.
        self.fleet.channel_reopen()
    }

    /// Runs `watch --once` twice (the second sees a known tip) and asserts
    /// `tip` was refused for a reason containing every needle, nothing was
    /// asked, and status shows it.
    fn assert_refused(&self, tip: &str, needles: &[&str]) {
        for round in 0..2 {
            let run = watch_once(&self.root);
            let watch = watch_status(&self.root);
            let refusal = &watch["refusal"];
            assert_eq!(refusal["tip"], tip, "{watch}\n{}", run.describe());
            let reason = refusal["reason"].as_str().unwrap_or_default();
            for needle in needles {
                assert!(reason.contains(needle), "reason lacks {needle:?}: {watch}");
            }
            assert_eq!(watch["channel"]["tip"], self.accepted.as_str(), "{watch}");
            assert_eq!(watch["channel"]["release"], "v1", "{watch}");
            assert!(watch["replacement"].is_null(), "{watch}");
            assert!(watch["last_poll_error"].is_null(), "{watch}");
            assert!(self.action.calls().is_empty(), "{}", run.describe());
            if round == 0 {
                assert!(
                    run.stderr.contains("9a1c3e5b7d2f4a6c8e0b1d3f5a7c9e2b"),
                    "a refusal is logged with its message id\n{}",
                    run.describe()
                );
            }
        }
        let text = status_text(&self.root);
        let refused = line(&text, "refused").unwrap_or_else(|| panic!("no refused line:\n{text}"));
        assert!(refused.contains(tip), "{text}");
        assert!(line(&text, "replace").is_none(), "{text}");
        let metrics = self.root.read_text(METRICS_FILE);
        assert!(
            metrics.lines().any(|l| l == "driftless_channel_refused 1"),
            "{metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l == "driftless_replacement_requested 0"),
            "{metrics}"
        );
    }

    /// The next document naming `tag` (whose tag object is `tag_object`),
    /// as a hand-crafted commit would carry it.
    fn crafted(&self, tag: &str, tag_object: &str) -> String {
        self.branch()
            .next_document(&[("release", tag), ("tag_object", tag_object)])
    }

    /// A proper signed commit naming v2 on top of the accepted tip, pushed
    /// (forced, whatever the branch holds now): accepted, and the node asks
    /// to be replaced, once.
    fn assert_recovers(&self) {
        let branch = self.branch();
        branch.reset_hard(&self.accepted);
        let tip = branch.channel(&self.fleet.key, &["promote", "v2"], &[]);
        branch.force_push();
        assert!(branch.is_ancestor(&self.accepted, &tip));
        let run = watch_once(&self.root);
        let watch = watch_status(&self.root);
        assert_eq!(
            watch["channel"]["tip"],
            tip.as_str(),
            "{watch}\n{}",
            run.describe()
        );
        assert_eq!(watch["channel"]["release"], "v2", "{watch}");
        assert!(watch["refusal"].is_null(), "{watch}");
        assert_eq!(watch["replacement"]["status"], "done", "{watch}");
        let calls = self.action.calls();
        assert_eq!(calls.len(), 1, "{calls:?}\n{}", run.describe());
        assert_release_changed_call(&calls[0], &[], ("v1", &self.fleet.v1), "v2");
        watch_once(&self.root);
        assert_eq!(self.action.calls().len(), 1);
    }
}

#[test]
fn an_unsigned_tip_is_refused() {
    let w = Watched::new();
    let text = w.crafted("v2", &w.fleet.v2.tag_object);
    let tip = w
        .branch()
        .commit(&text, Signing::Unsigned, "unsigned promote");
    w.branch().push();
    w.assert_refused(&tip, &[&tip]);
    w.assert_recovers();
}

#[test]
fn refused_tips_leave_nothing_in_the_cache() {
    // Three unsigned tips, each carrying 30 MiB that does not compress,
    // served by nginx + git-http-backend: each is fetched into quarantine,
    // refused and discarded; the cache neither grows nor names them.
    let w = Watched::new();
    // git-http-backend takes a while to pack 30 MB on a loaded machine:
    // more patience than the fault tests' settings.
    let config = w.root.read_text("/etc/driftless/agent.yaml").replace(
        release::FAST_FETCH,
        "{connect_timeout: 5s, io_timeout: 30s, deadline: 120s}",
    );
    w.root.write("/etc/driftless/agent.yaml", config);
    let cache = w.root.host("/var/lib/driftless/cache.git");
    let quarantine = w.root.host("/var/lib/driftless/quarantine.git");
    let size = |dir: &std::path::Path| {
        let (mut bytes, mut files, mut budget) = (0, 0, 1_000_000);
        hostile::usage(dir, &mut bytes, &mut files, &mut budget);
        bytes
    };
    let cache_ref = || {
        let mut cmd = servers::git_command(&w.fleet.world.home());
        cmd.arg("--git-dir")
            .arg(&cache)
            .args(["rev-parse", "refs/driftless/channel"]);
        let done = servers::run_bounded(&mut cmd, Duration::from_secs(30)).expect("git");
        done.stdout.trim().to_owned()
    };
    let before = size(&cache);
    assert_eq!(cache_ref(), w.accepted);
    let branch = w.branch();
    for round in 0..3u64 {
        // Each on top of the accepted tip, as a server would offer them.
        branch.reset_hard(&w.accepted);
        // In objects of 768 KiB: a channel's pack holds none over 1 MiB
        // (a larger one is refused before it is indexed, tests/channel_bomb.rs).
        for part in 0..40u64 {
            branch.stage(
                &format!("junk{round}-{part}.bin"),
                servers::noise(768 << 10, 0xBAD + round * 64 + part),
            );
        }
        let tip = branch.commit("release: v2\n", Signing::Unsigned, "junk");
        branch.force_push();
        let m = hostile::measure(&w.root, &w.fleet.world.home(), "watch", &["--once"]);
        eprintln!(
            "unsigned tip {round}: exit {:?} after {:?}; peak under /var/lib/driftless {} \
             bytes in {} files (cache before: {before} bytes); peak RSS {} KiB",
            m.code, m.elapsed, m.peak_bytes, m.peak_files, m.peak_rss_kib
        );
        // 10: this poll refused the tip (README, "Exit codes").
        assert_eq!(m.code, Some(10), "{}", m.stderr);
        let watch = watch_status(&w.root);
        assert_eq!(watch["refusal"]["tip"], tip.as_str(), "{watch}");
        assert_eq!(watch["channel"]["tip"], w.accepted.as_str(), "{watch}");
        assert_eq!(
            cache_ref(),
            w.accepted,
            "the cache ref never names a refused tip"
        );
        let after = size(&cache);
        assert!(
            after <= before,
            "round {round}: the cache grew from {before} to {after} bytes"
        );
        assert!(!quarantine.exists(), "the quarantine is discarded");
        // What the quarantine held was what the server sent for this move,
        // within fetch.max_bytes.
        assert!(m.peak_bytes >= (30 << 20) && m.peak_bytes <= before + (2 << 30));
    }
    assert!(w.action.calls().is_empty());
    // The watcher goes on: a signed tip is accepted and acted on, and the
    // cache takes it, with its release, and still none of the junk.
    w.assert_recovers();
    assert_ne!(cache_ref(), w.accepted);
    assert!(
        size(&cache) < before + (1 << 20),
        "the cache holds the new tip and its release, not the junk: {} bytes",
        size(&cache)
    );
}

#[test]
fn a_tip_signed_by_a_stranger_is_refused() {
    let w = Watched::new();
    let stranger = w.fleet.world.keygen("stranger");
    let text = w.crafted("v2", &w.fleet.v2.tag_object);
    let tip = w
        .branch()
        .commit(&text, Signing::Signed(&stranger), "stranger's promote");
    w.branch().push();
    w.assert_refused(&tip, &[&tip]);
    w.assert_recovers();
}

#[test]
fn a_branch_moved_backwards_is_refused() {
    let w = Watched::new();
    let branch = w.branch();
    branch.reset_hard(&w.older);
    branch.force_push();
    assert_eq!(branch.served_tip(), w.older);
    w.assert_refused(
        &w.older,
        &[&w.older, "sequence 1, below 2", &w.accepted, "served again"],
    );
    w.assert_recovers();
}

#[test]
fn a_branch_moved_sideways_is_refused() {
    let w = Watched::new();
    // Another history, signed all along, one sequence ahead.
    let side = ChannelBranch::new(&w.fleet.world, REPO, "channel-side");
    side.channel(&w.fleet.key, &["init", "v1"], &[]);
    side.channel(&w.fleet.key, &["promote", "v2"], &[]);
    let tip = side.channel(&w.fleet.key, &["refresh"], &[]);
    side.force_push();
    w.assert_refused(&tip, &[&tip, "does not descend", &w.accepted]);
    w.assert_recovers();
}

#[test]
fn a_tip_naming_a_missing_tag_is_refused() {
    let w = Watched::new();
    // driftless channel refuses a tag the clone lacks: crafted by hand.
    let text = w.crafted("v9", &w.fleet.v2.tag_object);
    let tip = w
        .branch()
        .commit(&text, Signing::Signed(&w.fleet.key), "promote v9");
    w.branch().push();
    w.assert_refused(&tip, &[&tip, "v9"]);
    w.assert_recovers();
}

#[test]
fn a_tip_naming_a_tag_signed_by_a_stranger_is_refused() {
    let w = Watched::new();
    let stranger = w.fleet.world.keygen("stranger");
    w.fleet.world.publish(
        REPO,
        &release_tree("v3", "/bin/true"),
        "v3",
        Tagging::Signed(&stranger),
    );
    // driftless channel refuses a tag that does not verify: crafted by hand.
    let v3 = w.branch().driftless(&w.fleet.key, &["promote", "v3"], &[]);
    v3.refused(5, &["v3", "not in allowed_signers"]);
    let stranger_v3 = w.fleet.world.tool(
        w.fleet
            .world
            .git()
            .arg("--git-dir")
            .arg(w.fleet.world.srv().join(REPO))
            .args(["rev-parse", "refs/tags/v3"]),
    );
    let text = w.crafted("v3", &stranger_v3);
    let tip = w
        .branch()
        .commit(&text, Signing::Signed(&w.fleet.key), "promote v3");
    w.branch().push();
    w.assert_refused(&tip, &[&tip, "v3", "does not verify"]);
    w.assert_recovers();
}

#[test]
fn hold_stops_the_replacement_until_lifted() {
    let w = Watched::new();
    let branch = w.branch();
    let held = branch.promote(&w.fleet.key, "v2", "hold: true\n");
    for _ in 0..2 {
        let run = watch_once(&w.root);
        let watch = watch_status(&w.root);
        assert_eq!(
            watch["channel"]["tip"],
            held.as_str(),
            "{watch}\n{}",
            run.describe()
        );
        assert_eq!(watch["channel"]["release"], "v2", "{watch}");
        assert_eq!(watch["channel"]["hold"], true, "{watch}");
        assert!(watch["refusal"].is_null(), "{watch}");
        assert!(watch["replacement"].is_null(), "{watch}");
        assert!(
            watch["waiting"]
                .as_str()
                .is_some_and(|w| w.contains("hold")),
            "status says why the node waits: {watch}"
        );
        assert!(w.action.calls().is_empty(), "{}", run.describe());
    }
    let text = status_text(&w.root);
    assert!(
        line(&text, "desired").is_some_and(|l| l.contains("v2, on hold")),
        "{text}"
    );
    assert!(
        line(&text, "rollout").is_some_and(|l| l.contains("hold")),
        "{text}"
    );
    assert!(line(&text, "refused").is_none(), "{text}");
    assert!(line(&text, "replace").is_none(), "{text}");
    let metrics = w.root.read_text(METRICS_FILE);
    assert!(
        metrics.lines().any(|l| l == "driftless_channel_hold 1"),
        "{metrics}"
    );

    // Lifting the hold is a forward commit like any other.
    let lifted = branch.promote(&w.fleet.key, "v2", "hold: false\n");
    watch_once(&w.root);
    let watch = watch_status(&w.root);
    assert_eq!(watch["channel"]["tip"], lifted.as_str(), "{watch}");
    assert_eq!(watch["channel"]["hold"], false, "{watch}");
    assert!(watch["waiting"].is_null(), "{watch}");
    let calls = w.action.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_release_changed_call(&calls[0], &[], ("v1", &w.fleet.v1), "v2");
}

// ---------------------------------------------------------------------------
// 3. Rollback
// ---------------------------------------------------------------------------

#[test]
fn rollback_is_a_forward_commit_over_git_daemon() {
    let fleet = Fleet::new();
    let daemon = GitDaemon::start(&fleet.world.srv()).expect("start git daemon");
    let url = daemon.url(REPO);
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");

    // A node built while the channel named v1.
    let action_a = ExecAction::new(&fleet.world, "replace-a", 0);
    let node_a = fleet.node("a", &NodeConfig::new(&url, &action_a.replace_yaml(&[])));
    node_a.apply().ok();
    assert_pinned(&node_a, &fleet.v1, "v1");

    // Promote v2: node a asks to go; a new node b is built at v2.
    let tip2 = branch.promote(&fleet.key, "v2", "");
    watch_once(&node_a);
    assert_eq!(action_a.calls().len(), 1);
    assert_release_changed_call(&action_a.calls()[0], &[], ("v1", &fleet.v1), "v2");
    let action_b = ExecAction::new(&fleet.world, "replace-b", 0);
    let node_b = fleet.node("b", &NodeConfig::new(&url, &action_b.replace_yaml(&[])));
    node_b.apply().ok();
    assert_pinned(&node_b, &fleet.v2, "v2");
    assert_eq!(watch_json(&node_b)["channel"]["tip"], tip2.as_str());
    watch_once(&node_b);
    assert!(
        action_b.calls().is_empty(),
        "node b runs what the channel names"
    );

    // Roll back: a new signed commit naming v1, pushed without --force.
    let tip3 = branch.promote(&fleet.key, "v1", "");
    assert!(branch.is_ancestor(&tip2, &tip3));
    watch_once(&node_b);
    let calls = action_b.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_release_changed_call(&calls[0], &[], ("v2", &fleet.v2), "v1");
    let watch = watch_status(&node_b);
    assert_eq!(watch["channel"]["tip"], tip3.as_str(), "{watch}");
    assert_eq!(watch["replacement"]["request"]["desired"], "v1", "{watch}");
    assert!(watch["refusal"].is_null(), "{watch}");

    // Node a asked once already and never asks again.
    watch_once(&node_a);
    assert_eq!(action_a.calls().len(), 1);
    assert!(daemon.connections() > 0, "everything came over git://");
}

#[test]
fn a_rollback_withdraws_a_request_that_has_not_gone_through() {
    let fleet = Fleet::new();
    let daemon = GitDaemon::start(&fleet.world.srv()).expect("start git daemon");
    let url = daemon.url(REPO);
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");
    // The cloud's API is failing: every request to be replaced fails.
    let failing = ExecAction::new(&fleet.world, "replace-failing", 1);
    let node = fleet.node("a", &NodeConfig::new(&url, &failing.replace_yaml(&[])));
    node.apply().ok();
    assert_pinned(&node, &fleet.v1, "v1");

    branch.promote(&fleet.key, "v2", "");
    watch_once(&node);
    assert_eq!(failing.calls().len(), 1, "the request was tried");
    let watch = watch_status(&node);
    assert_eq!(watch["replacement"]["status"], "pending", "{watch}");
    assert_eq!(node.status_json()["phase"], "replacement-requested");

    // Rolled back to v1 before the request went through: nothing to replace.
    branch.promote(&fleet.key, "v1", "");
    let run = watch_once(&node);
    let watch = watch_status(&node);
    assert!(
        watch["replacement"].is_null(),
        "{watch}\n{}",
        run.describe()
    );
    assert!(run.stderr.contains("withdrawn"), "{}", run.describe());
    assert_eq!(node.status_json()["phase"], "watching");
    watch_once(&node);
    assert_eq!(failing.calls().len(), 1, "never tried again");
}

// ---------------------------------------------------------------------------
// 4. A crash between recording and making the request
// ---------------------------------------------------------------------------

/// `DRIFTLESS_TEST_KILL_BEFORE_REQUEST`: the watcher SIGKILLs itself right
/// after recording the request.
const KILL_BEFORE_REQUEST: (&str, &str) = ("DRIFTLESS_TEST_KILL_BEFORE_REQUEST", "1");

/// Asserts `root`'s request is recorded, pending, not yet made.
fn assert_pending(root: &NodeRoot, action: &ExecAction) {
    let record = watch_json(root);
    let replacement = &record["replacement"];
    assert_eq!(replacement["status"], "pending", "{record}");
    assert_eq!(replacement["attempts"], 0, "{record}");
    assert_eq!(replacement["request"]["desired"], "v2", "{record}");
    assert!(
        action.calls().is_empty(),
        "the action must not have run yet"
    );
    let text = status_text(root);
    assert!(
        line(&text, "replace").is_some_and(|l| l.contains("PENDING")),
        "{text}"
    );
}

/// Asserts the request was made exactly once and is done.
fn assert_done_once(root: &NodeRoot, action: &ExecAction, fleet: &Fleet) {
    let calls = action.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_release_changed_call(&calls[0], &[], ("v1", &fleet.v1), "v2");
    let record = watch_json(root);
    assert_eq!(record["replacement"]["status"], "done", "{record}");
    assert_eq!(record["replacement"]["attempts"], 1, "{record}");
}

/// How a watcher is run.
#[derive(Clone, Copy, Debug)]
enum Runner {
    /// `driftless watch --once`.
    Once,
    /// The daemon, `driftless watch`, stopped with SIGTERM.
    Daemon,
}

/// Promotes v2 and lets the watcher, run as `runner` with
/// [`KILL_BEFORE_REQUEST`], die between recording the request and making
/// it; asserts it died by SIGKILL with the request pending.
fn crash(w: &Watched, runner: Runner) {
    match runner {
        Runner::Once => {
            w.branch().promote(&w.fleet.key, "v2", "");
            let crashed = w
                .root
                .driftless("watch", &["--once"], &[KILL_BEFORE_REQUEST]);
            assert_eq!(crashed.signal, Some(9), "{}", crashed.describe());
        }
        Runner::Daemon => {
            let mut crashing = w
                .fleet
                .daemon(&w.root, "daemon-crashing", &[KILL_BEFORE_REQUEST]);
            wait_for_poll(&w.root, &serde_json::Value::Null);
            w.branch().promote(&w.fleet.key, "v2", "");
            let exit = crashing.wait_exit(PATIENCE).unwrap_or_else(|| {
                panic!("the watcher did not kill itself\n{}", crashing.stderr())
            });
            assert_eq!(exit.status.signal(), Some(9), "{}", exit.describe());
        }
    }
    assert_pending(&w.root, &w.action);
}

/// Runs the watcher again as `runner` (without the crash hook): it makes
/// the recorded request, once; a third run (`--once`) asks nothing more.
fn complete(w: &Watched, runner: Runner) {
    match runner {
        Runner::Once => {
            let second = watch_once(&w.root);
            assert_eq!(
                w.action.calls().len(),
                1,
                "the second run makes the request\n{}",
                second.describe()
            );
        }
        Runner::Daemon => {
            let restarted = Instant::now();
            let daemon = w.fleet.daemon(&w.root, "daemon-restarted", &[]);
            w.action.wait_for_calls(1, PATIENCE).unwrap_or_else(|| {
                panic!("the restarted watcher made no request\n{}", daemon.stderr())
            });
            let elapsed = restarted.elapsed();
            eprintln!("restart -> pending request made: {elapsed:?}");
            assert!(
                elapsed <= PROMPT,
                "the restarted watcher took {elapsed:?}\n{}",
                daemon.stderr()
            );
            std::thread::sleep(3 * POLL);
            let exit = daemon.stop();
            assert_eq!(exit.status.code(), Some(0), "{}", exit.describe());
        }
    }
    assert_done_once(&w.root, &w.action, &w.fleet);
    let third = watch_once(&w.root);
    assert_eq!(w.action.calls().len(), 1, "{}", third.describe());
    assert_done_once(&w.root, &w.action, &w.fleet);
}

#[test]
fn a_crashed_once_run_is_completed_by_the_next_once_run() {
    let w = Watched::new();
    crash(&w, Runner::Once);
    complete(&w, Runner::Once);
}

#[test]
fn a_crashed_once_run_is_completed_by_the_daemon() {
    let w = Watched::new();
    crash(&w, Runner::Once);
    complete(&w, Runner::Daemon);
}

#[test]
fn a_crashed_daemon_is_completed_by_the_restarted_daemon() {
    let w = Watched::new();
    crash(&w, Runner::Daemon);
    complete(&w, Runner::Daemon);
}

// ---------------------------------------------------------------------------
// 5. A failed apply with failure.policy: replace
// ---------------------------------------------------------------------------

#[test]
fn a_failed_apply_asks_to_be_replaced_once() {
    let world = World::new();
    let key = world.keygen("release");
    let v1 = world.publish(
        REPO,
        &release_tree("v1", "/bin/false"),
        "v1",
        Tagging::Signed(&key),
    );
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let action = ExecAction::new(&world, "replace", 0);
    let mut config = NodeConfig::new(&http.http_url(REPO), &action.replace_yaml(&["--why"]));
    config.pin = Pin::Tag("v1".to_owned());
    config.failure_replace = true;
    let root = world.root("node");
    config.install(&root, &key);

    let run = root.apply();
    assert_eq!(run.code, Some(EXIT_HEALTH), "{}", run.describe());
    let calls = action.calls();
    assert_eq!(calls.len(), 1, "{calls:?}\n{}", run.describe());
    let call = &calls[0];
    assert_eq!(call.args.len(), 2, "{call:?}");
    assert_eq!(call.args[0], "--why", "{call:?}");
    let reason = &call.args[1];
    assert!(reason.starts_with("apply-failed: "), "{call:?}");
    assert!(
        reason.contains("/bin/false") && reason.ends_with("(v1)"),
        "{call:?}"
    );
    assert_eq!(call.var("DRIFTLESS_REASON"), "apply-failed", "{call:?}");
    assert_eq!(call.var("DRIFTLESS_PINNED"), "v1", "{call:?}");
    assert_eq!(call.var("DRIFTLESS_PINNED_COMMIT"), v1.commit, "{call:?}");
    assert_eq!(call.var("DRIFTLESS_DESIRED"), "", "{call:?}");
    assert_eq!(call.var("DRIFTLESS_NODE_ID"), MACHINE_ID, "{call:?}");
    assert_eq!(
        call.var("DRIFTLESS_REQUEST_ID"),
        expected_request_id(MACHINE_ID, &v1.commit, "", "apply-failed"),
        "{call:?}"
    );

    let status = root.status_json();
    assert_eq!(status["status"]["state"], "failed", "{status}");
    assert_eq!(status["status"]["stage"], "health", "{status}");
    assert_eq!(status["watch"]["replacement"]["status"], "done", "{status}");
    assert_eq!(
        status["watch"]["replacement"]["request"]["reason"], "apply-failed",
        "{status}"
    );

    // The next boot fails the same way and does not ask again.
    let again = root.apply();
    assert_eq!(again.code, Some(EXIT_HEALTH), "{}", again.describe());
    assert_eq!(action.calls().len(), 1, "{}", again.describe());
}

// ---------------------------------------------------------------------------
// 6. A channel server that is down
// ---------------------------------------------------------------------------

#[test]
fn a_server_that_is_down_is_a_poll_error_not_a_replacement() {
    let mut w = Watched::new();
    // A new release waits on the channel, but the server goes away.
    w.branch().promote(&w.fleet.key, "v2", "");
    drop(w.http.take());
    let run = watch_once(&w.root);
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.describe());
    let watch = watch_status(&w.root);
    assert!(!watch["last_poll"].is_null(), "{watch}");
    let error = watch["last_poll_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{watch}\n{}", run.describe());
    assert_eq!(watch["poll_errors"], 1, "{watch}");
    assert_eq!(watch["channel"]["tip"], w.accepted.as_str(), "{watch}");
    assert!(watch["refusal"].is_null(), "{watch}");
    assert!(watch["replacement"].is_null(), "{watch}");
    assert!(w.action.calls().is_empty(), "{}", run.describe());
    let text = status_text(&w.root);
    assert!(
        line(&text, "last poll").is_some_and(|l| l.contains("FAILED")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// 7. systemd's watchdog
// ---------------------------------------------------------------------------

/// Counts the processes that open the FIFO at `path` to read it (each
/// open blocks until a writer comes: this thread comes, writes nothing and
/// closes, so the reader sees an empty file and goes on) until `stop`, for
/// at most 5 minutes.
fn count_readers(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::thread::spawn(move || {
        let mut readers = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(writer) => {
                    readers += 1;
                    drop(writer);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        readers
    })
}

#[test]
fn a_plain_http_source_never_reads_the_systems_ca_bundle() {
    // Reading and parsing the system's roots costs a few milliseconds of
    // CPU in every process that builds an HTTP client: the watcher, each
    // evaluation child, each apply. A source on plain http:// never needs
    // them. The bundle is a FIFO here, so every open of it is seen.
    let w = Watched::new();
    let bundle = w.fleet.world.path("ca-bundle.pem");
    nix::unistd::mkfifo(
        &bundle,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .expect("mkfifo");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = count_readers(bundle.clone(), stop.clone());
    let env = [("SSL_CERT_FILE", bundle.to_str().expect("UTF-8 path"))];
    let tip = w.branch().promote(&w.fleet.key, "v2", "");
    // The watcher's poll, its evaluation child (the channel and the
    // release fetched), the replacement asked for; and a first boot.
    let watched = w.root.driftless("watch", &["--once"], &env);
    let url = w.http.as_ref().expect("the server").http_url(REPO);
    let fresh = w
        .fleet
        .node("fresh", &NodeConfig::new(&url, &w.action.replace_yaml(&[])));
    let applied = fresh.driftless("apply", &[], &env);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let readers = readers.join().expect("the FIFO thread");
    let watched = watched.reported();
    assert_eq!(
        watch_json(&w.root)["channel"]["tip"],
        tip.as_str(),
        "{}",
        watched.describe()
    );
    assert_eq!(w.action.calls().len(), 1, "{}", watched.describe());
    applied.ok();
    assert_eq!(readers, 0, "processes that read SSL_CERT_FILE");
}

/// The niceness of process `pid` (field 19 of `/proc/PID/stat`).
fn niceness(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_name
        .split(' ')
        .nth(16)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no niceness in {stat:?}"))
}

/// Points `w`'s node at a channel server that accepts connections and
/// never answers; returns its listener.
fn stall_the_channel(w: &Watched) -> std::net::TcpListener {
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the stalled server");
    let url = format!(
        "http://{}/{REPO}",
        stalled.local_addr().expect("stalled server address")
    );
    NodeConfig::new(&url, &w.action.replace_yaml(&[])).install(&w.root, &w.fleet.key);
    stalled
        .set_nonblocking(true)
        .expect("non-blocking listener");
    stalled
}

/// The first connection to `stalled`, within 10 s.
fn first_connection(stalled: &std::net::TcpListener) -> std::io::Result<std::net::TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stalled.accept() {
            Ok((connection, _)) => return Ok(connection),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn the_channel_evaluation_runs_at_a_lower_cpu_priority_under_its_own_name() {
    let w = Watched::new();
    // A server that accepts and never answers holds the evaluation child
    // at its first fetch, so its priority can be read while it runs.
    let stalled = stall_the_channel(&w);
    // Started as the watcher starts it, by a path whose last part is `exe`.
    let exe = w.fleet.world.path("exe");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_driftless"), &exe).expect("link as exe");
    let mut child = std::process::Command::new(&exe)
        .args(["evaluate-channel", "--root"])
        .arg(w.root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start driftless evaluate-channel");
    let connected = first_connection(&stalled).ok();
    let (child_nice, own_nice) = (niceness(child.id()), niceness(std::process::id()));
    let name = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(connected.is_some(), "the evaluation never fetched");
    assert_eq!(
        name.trim_end(),
        driftless::fleet::watch::EVALUATION_NAME
            .to_str()
            .expect("UTF-8"),
        "what ps and top call the evaluation child"
    );
    assert_eq!(
        child_nice,
        driftless::fleet::watch::EVALUATION_NICENESS.max(own_nice),
        "the evaluation child's niceness (the caller's: {own_nice})"
    );
}

#[test]
fn the_watchdog_is_fed_while_a_poll_stalls() {
    use std::os::unix::net::UnixDatagram;

    let w = Watched::new();
    // The channel server now accepts connections and never answers: the
    // first poll waits for its I/O timeout (2 s), far longer than the
    // watchdog interval.
    let stalled = stall_the_channel(&w);
    let socket_path = w.fleet.world.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let socket_env = socket_path.to_str().expect("UTF-8 path");
    // 400 ms: a ping every 200 ms.
    let daemon = w.fleet.daemon(
        &w.root,
        "daemon",
        &[("NOTIFY_SOCKET", socket_env), ("WATCHDOG_USEC", "400000")],
    );
    let _connection = first_connection(&stalled)
        .unwrap_or_else(|e| panic!("the watcher never polled: {e}\n{}", daemon.stderr()));
    // What was sent before the poll started does not count.
    let mut buf = [0u8; 4096];
    socket.set_nonblocking(true).expect("non-blocking socket");
    let mut before = String::new();
    while let Ok(n) = socket.recv(&mut buf) {
        before.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    socket.set_nonblocking(false).expect("blocking socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("socket timeout");
    let stalled_at = Instant::now();
    let mut pings = 0;
    while stalled_at.elapsed() < Duration::from_millis(1200) {
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(
        pings >= 4,
        "{pings} watchdog pings in 1.2 s of a stalled poll (one every 200 ms expected)\n\
         before the poll: {before:?}\n{}",
        daemon.stderr()
    );
    assert!(
        !daemon.stderr().contains("poll failed"),
        "the poll was still stalled while counting\n{}",
        daemon.stderr()
    );
}
