//! A delta bomb as a channel move: a hostile mirror answers the watcher's
//! channel with a tip it made up and a pack of a few KB whose deltas each
//! rebuild a large zero blob. libgit2's indexer would resolve those deltas
//! for minutes, beyond any deadline (it calls nothing back while it does);
//! driftless reads the pack with its own bounded reader first, so `watch
//! --once` refuses it in one line, well within `fetch.deadline`, asks for
//! no replacement, and leaves no quarantine behind.
//!
//! Served as the static channel bundle (`source.kind: static`, nginx) and
//! by a hand-written protocol-v2 git server (`support/hostile.rs`: no real
//! git server sends such a pack). The node, its release, its channel and
//! its first boot are real.

#[path = "support/channel.rs"]
mod channel;
#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::process::Command;
use std::time::Duration;

use channel::{CHANNEL_REF, Fleet, NodeConfig, watch_json};
use hostile::{HostileV2, Kind, PackWriter, copying_delta, delta_size};
use release::{NodeRoot, REPO, Run};
use servers::{SmartHttp, isolate_git_env, run_bounded};

/// Exit code of `watch --once`: the channel could not be polled or fetched.
const EXIT_FETCH: i32 = 4;
/// The tests' `fetch.deadline` (`release::FAST_FETCH`).
const DEADLINE: Duration = Duration::from_secs(8);
/// What a refusal may take: the deadline and room for a slow machine; the
/// code before the check ran until its evaluation child was killed, 76 s.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);
/// A tip the hostile server makes up.
const MADE_UP_TIP: &str = "0badc0de0badc0de0badc0de0badc0de0badc0de";

/// The bomb of the report: a 64 MiB zero blob and 200 deltas each copying
/// it whole (12.6 GiB from about 70 KB). Refused where it is first seen:
/// an object over a channel's largest, or (in a release's pack) the same
/// object twice.
fn big_bomb() -> Vec<u8> {
    bomb(64 << 20, 200)
}

/// A bomb each of whose objects is small enough for a channel (1 MiB),
/// with enough deltas (64 MiB) to cross the nodes' `fetch.channel_max_bytes`
/// ([`CHANNEL_MAX`]), each delta's result a different object (the base
/// copied, then its own number), so that no object comes twice.
fn small_bomb() -> Vec<u8> {
    // The results are 1 MiB, the most a channel's object may be.
    let len: u64 = (1 << 20) - 4;
    let mut pack = PackWriter::new();
    let base = pack.object(Kind::Blob, &vec![0u8; len as usize]);
    for n in 0..64u32 {
        let mut delta = Vec::new();
        delta_size(len, &mut delta);
        delta_size(len + 4, &mut delta);
        // Copy the whole base (offset 0, size in three bytes), then insert
        // four bytes.
        delta.push(0x80 | 0x70);
        delta.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        delta.push(4);
        delta.extend_from_slice(&n.to_le_bytes());
        pack.ofs_delta(base, &delta);
    }
    pack.finish()
}

/// The nodes' `fetch.channel_max_bytes`: lower than the default (256 MiB)
/// so that a debug build crosses it long before the deadline (what the
/// deadline stops is a unit test of `source::checked`).
const CHANNEL_MAX: &str = "16MiB";

fn bomb(len: u64, deltas: u64) -> Vec<u8> {
    let mut pack = PackWriter::new();
    let base = pack.object(Kind::Blob, &vec![0u8; len as usize]);
    for _ in 0..deltas {
        pack.ofs_delta(base, &copying_delta(len, len));
    }
    pack.finish()
}

/// A fleet whose channel names `v1`, published as static files too
/// (`srv/static`, by `driftless publish`).
fn fleet() -> Fleet {
    let fleet = Fleet::new();
    let branch = fleet.channel();
    branch.promote(&fleet.key, "v1", "");
    publish(&fleet);
    fleet
}

/// `driftless publish --channel channel` into `srv/static`.
fn publish(fleet: &Fleet) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
    isolate_git_env(&mut cmd, &fleet.world.home());
    cmd.arg("publish")
        .arg("--out")
        .arg(fleet.world.srv().join("static"))
        .arg("--repo")
        .arg(fleet.world.srv().join(REPO))
        .arg("--allowed-signers")
        .arg(fleet.world.path("keys").join("allowed_signers"))
        .args(["--channel", "channel"]);
    let done = run_bounded(&mut cmd, Duration::from_secs(60)).expect("driftless publish");
    Run::from_finished("driftless publish".into(), done).ok();
}

/// A node of `url` (a static source when `kind` says), booted from it.
fn booted(fleet: &Fleet, name: &str, url: &str, kind: Option<&str>) -> NodeRoot {
    let config = NodeConfig::new(url, "{action: exec, command: [/bin/true]}");
    let root = fleet.node(name, &config);
    if let Some(kind) = kind {
        let text = config
            .render()
            .replacen("\ntrust:", &format!("\n  kind: {kind}\ntrust:"), 1);
        root.write("/etc/driftless/agent.yaml", text);
    }
    let fast = release::FAST_FETCH;
    edit_config(
        &root,
        fast,
        &fast.replacen('{', &format!("{{channel_max_bytes: {CHANNEL_MAX}, "), 1),
    );
    root.apply().ok();
    root
}

/// Replaces `from` with `to` in `root`'s config (a source turned
/// hostile, a setting).
fn edit_config(root: &NodeRoot, from: &str, to: &str) {
    let text = root.read_text("/etc/driftless/agent.yaml");
    assert!(text.contains(from), "{text}");
    root.write("/etc/driftless/agent.yaml", text.replace(from, to));
}

/// The channel ref in the node's cache.
fn cached_tip(root: &NodeRoot) -> String {
    let cache = root.host("/var/lib/driftless/cache.git");
    let repo = git2::Repository::open_bare(cache).expect("the cache");
    repo.refname_to_id("refs/driftless/channel")
        .expect("the cached channel")
        .to_string()
}

/// Runs `watch --once` on `root` and asserts the bomb refused: one error
/// line with every needle, within [`REFUSED_WITHIN`], no replacement asked,
/// the quarantine gone, the cache's channel where it was.
fn assert_refused(what: &str, root: &NodeRoot, needles: &[&str]) -> Duration {
    let before = cached_tip(root);
    let run = root.driftless("watch", &["--once"], &[]);
    eprintln!("{what}: exit {:?} after {:?}", run.code, run.elapsed);
    assert_eq!(run.code, Some(EXIT_FETCH), "{what}\n{}", run.describe());
    // The watcher goes on after a failed poll: its one line is a warning.
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("channel poll failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: one line\n{}", run.describe());
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{what}: lacks {needle:?}\n{}",
            run.describe()
        );
    }
    assert_refused_in_time(what, root, &run);
    assert_eq!(cached_tip(root), before, "{what}: the cache's channel");
    run.elapsed
}

/// `# v2 git bundle`, the made-up tip as the channel, then `pack`.
fn hostile_bundle(pack: &[u8]) -> Vec<u8> {
    let mut bundle = format!("# v2 git bundle\n{MADE_UP_TIP} {CHANNEL_REF}\n\n").into_bytes();
    bundle.extend_from_slice(pack);
    bundle
}

#[test]
fn a_bomb_in_the_static_channel_bundle_is_refused_within_the_deadline() {
    let fleet = fleet();
    let http = SmartHttp::start(&fleet.world.srv()).expect("nginx");
    let url = http.static_url("static");
    let root = booted(&fleet, "node", &url, Some("static"));
    let bundle = fleet.world.srv().join("static/channels/channel.bundle");
    for (what, pack, needles) in [
        (
            "the 64 MiB bomb in the bundle",
            big_bomb(),
            &["channel.bundle", "an object of 64MiB", "(not retried)"][..],
        ),
        (
            "deltas of a 1 MiB blob past fetch.channel_max_bytes",
            small_bomb(),
            &["fetch.channel_max_bytes (16MiB)", "(not retried)"][..],
        ),
    ] {
        eprintln!("{what}: a bundle of {} bytes", pack.len() + 60);
        std::fs::write(&bundle, hostile_bundle(&pack)).expect("the hostile bundle");
        assert_refused(what, &root, needles);
    }
}

#[test]
fn a_bomb_from_a_v2_git_server_is_refused_within_the_deadline() {
    let fleet = fleet();
    let http = SmartHttp::start(&fleet.world.srv()).expect("nginx");
    let url = http.http_url(REPO);
    let root = booted(&fleet, "node", &url, None);
    for (what, pack, needles) in [
        (
            "the 64 MiB bomb from git",
            big_bomb(),
            &["an object of 64MiB", "(not retried)"][..],
        ),
        (
            "deltas of a 1 MiB blob from git",
            small_bomb(),
            &["fetch.channel_max_bytes (16MiB)", "(not retried)"][..],
        ),
    ] {
        // The same server over smart HTTP, then as git daemon (`git://`).
        for daemon in [false, true] {
            let server = HostileV2::start_ref(CHANNEL_REF, MADE_UP_TIP, pack.clone());
            let hostile = if daemon {
                server.git_url()
            } else {
                server.url()
            };
            let what = format!("{what} ({hostile})");
            edit_config(&root, &url, &hostile);
            assert_refused(&what, &root, needles);
            assert_eq!(server.fetches(), 1, "{what}: a refusal is not retried");
            edit_config(&root, &hostile, &url);
        }
    }
}

/// Promotes `v2` on the channel (a real, signed move) and returns the
/// tag object `v2` names.
fn promote_v2(fleet: &Fleet) -> String {
    fleet.channel_reopen().promote(&fleet.key, "v2", "");
    fleet.v2.tag_object.clone()
}

/// Runs `watch --once` on `root` after a signed move to v2 whose release
/// pack is a bomb: refused within [`REFUSED_WITHIN`] in one line naming
/// `needle`, nothing asked, no quarantine left.
fn assert_release_refused(what: &str, root: &NodeRoot, needle: &str) -> Run {
    let run = root.driftless("watch", &["--once"], &[]);
    eprintln!("{what}: exit {:?} after {:?}", run.code, run.elapsed);
    assert_ne!(run.code, Some(0), "{what}\n{}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "{what}: one line\n{}", run.describe());
    assert_refused_in_time(what, root, &run);
    run
}

/// `run` ended within [`REFUSED_WITHIN`], asked for no replacement, and
/// left no quarantine.
fn assert_refused_in_time(what: &str, root: &NodeRoot, run: &Run) {
    assert!(
        run.elapsed < REFUSED_WITHIN,
        "{what}: took {:?}; fetch.deadline is {DEADLINE:?}\n{}",
        run.elapsed,
        run.describe()
    );
    let record = watch_json(root);
    assert!(
        record["replacement"].is_null(),
        "{what}: no replacement: {record}"
    );
    assert!(
        !root.host("/var/lib/driftless/quarantine.git").exists(),
        "{what}: the quarantine is removed"
    );
}

#[test]
fn a_bomb_as_the_static_release_of_a_signed_channel_move_is_refused_within_the_deadline() {
    let fleet = fleet();
    let http = SmartHttp::start(&fleet.world.srv()).expect("nginx");
    let root = booted(&fleet, "node", &http.static_url("static"), Some("static"));
    // The channel's move is real and signed; the mirror swaps the head
    // and the pack of the release it names for the bomb. The head is
    // refused within its own bound, then the pack within the release's.
    let tag_object = promote_v2(&fleet);
    publish(&fleet);
    let releases = fleet.world.srv().join("static/releases");
    let bomb = big_bomb();
    for file in [
        format!("{tag_object}.head.pack"),
        format!("{tag_object}.pack"),
    ] {
        std::fs::write(releases.join(file), &bomb).expect("the hostile release files");
    }
    let run = assert_release_refused("the 64 MiB bomb as v2's head and pack", &root, "twice");
    assert!(
        run.stderr.lines().any(|l| l.contains(".head.pack")
            && l.contains("an object of 64MiB in the release's head")
            && l.contains("fetching the whole release instead")),
        "the head was refused within its bound\n{}",
        run.describe()
    );
}

#[test]
fn a_bomb_as_the_git_release_of_a_signed_channel_move_is_refused_within_the_deadline() {
    let fleet = fleet();
    let http = SmartHttp::start(&fleet.world.srv()).expect("nginx");
    let url = http.http_url(REPO);
    let root = booted(&fleet, "node", &url, None);
    // A second node for the same move over git://.
    let daemon_root = booted(&fleet, "daemon-node", &url, None);
    let tag_object = promote_v2(&fleet);
    // The channel's real history, as git packs it.
    let bare = fleet.world.srv().join(REPO);
    let tip = fleet
        .world
        .tool(
            fleet
                .world
                .git()
                .arg("--git-dir")
                .arg(&bare)
                .args(["rev-parse", CHANNEL_REF]),
        )
        .trim()
        .to_owned();
    let mut pack_objects = fleet.world.git();
    pack_objects
        .arg("--git-dir")
        .arg(&bare)
        .args(["pack-objects", "--revs", "--stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = pack_objects.spawn().expect("git pack-objects");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{tip}").expect("the tip");
    }
    let out = child.wait_with_output().expect("git pack-objects");
    assert!(out.status.success(), "git pack-objects");
    let server = HostileV2::start_refs(vec![
        (CHANNEL_REF, tip.as_str(), out.stdout.clone()),
        ("refs/tags/v2", tag_object.as_str(), big_bomb()),
    ]);
    edit_config(&root, &url, &server.url());
    let _ = assert_release_refused("the 64 MiB bomb as v2 from git", &root, "twice");
    assert_eq!(server.fetches(), 2, "the channel, then the release once");
    // The same over git://, to a node that has not seen the move.
    let root = daemon_root;
    let server = HostileV2::start_refs(vec![
        (CHANNEL_REF, tip.as_str(), out.stdout),
        ("refs/tags/v2", tag_object.as_str(), big_bomb()),
    ]);
    edit_config(&root, &url, &server.git_url());
    let _ = assert_release_refused("the 64 MiB bomb as v2 over git://", &root, "twice");
    assert_eq!(server.fetches(), 2, "the channel, then the release once");
}
