//! A closed stdout or stderr (`driftless status | head -3`, a reader that
//! went away): every subcommand that prints ends quietly, killed by
//! `SIGPIPE` as any Unix tool is, without a panic or a backtrace; one whose
//! stderr is gone still exits with its own code. Each command first runs
//! with its output read, to show that it does print, then with the read
//! end of its stdout closed before it starts, so that its first write
//! fails (`EPIPE`).

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use release::{Config, Release, TAG, Tagging, World};

/// `SIGPIPE`.
const SIGPIPE: i32 = 13;
/// Longest any command here may run.
const LIMIT: Duration = Duration::from_secs(120);

/// How a command with a closed output ended.
struct Ended {
    status: ExitStatus,
    stderr: String,
}

/// Runs `driftless ARGS` with `RUST_BACKTRACE=1` (a panic would print its
/// backtrace), stdout to a pipe nobody reads (its read end closed before
/// the start), and stderr read, or closed likewise when `close_stderr`.
fn closed(args: &[&str], close_stderr: bool) -> Ended {
    let closed_pipe = || {
        let (reader, writer) = nix::unistd::pipe().expect("pipe");
        drop(reader);
        Stdio::from(writer)
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(if close_stderr {
            closed_pipe()
        } else {
            Stdio::piped()
        });
    let mut child = cmd.spawn().expect("spawn driftless");
    let reader = child.stderr.take().map(|mut pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("driftless {args:?} ran longer than {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader
        .map(|r| r.join().expect("stderr reader"))
        .unwrap_or_default();
    Ended { status, stderr }
}

/// Runs `driftless ARGS` normally; its exit code and stdout.
fn normally(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run driftless");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Asserts a quiet end by `SIGPIPE`: no panic, no backtrace.
fn assert_quiet(args: &[&str], ended: &Ended) {
    assert_eq!(
        ended.status.signal(),
        Some(SIGPIPE),
        "driftless {args:?} is ended by SIGPIPE ({:?})\n{}",
        ended.status,
        ended.stderr
    );
    for needle in ["panicked", "backtrace", "Broken pipe"] {
        assert!(
            !ended.stderr.contains(needle),
            "driftless {args:?}: {needle:?} on stderr\n{}",
            ended.stderr
        );
    }
}

#[test]
fn every_command_that_prints_ends_quietly_on_a_closed_stdout() {
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new("files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n");
    let published = world.publish("release.git", &release, TAG, Tagging::Signed(&key));
    let node = world.configured_root("node", &key, &Config::new(&published.file_url()));
    let root = node.path().to_str().expect("UTF-8 root");
    let signers = node.host("/etc/driftless/allowed_signers");
    let signers = signers.to_str().expect("UTF-8 path");
    let repo = published.bare.to_str().expect("UTF-8 path");

    // apply first: it does its work, then prints, and that write ends it.
    let apply = ["apply", "--root", root];
    assert_quiet(&apply, &closed(&apply, false));
    let state = node
        .state()
        .expect("apply recorded the node before printing");
    assert_eq!(state["status"]["state"], "applied", "{state}");

    let commands: Vec<Vec<&str>> = vec![
        vec!["apply", "--root", root],
        vec!["plan", "--root", root],
        vec!["plan", "--root", root, "--json"],
        vec!["check", "--root", root, "--json"],
        vec!["status", "--root", root],
        vec!["status", "--root", root, "--json"],
        vec!["fetch", "--root", root],
        vec!["evaluate-channel", "--root", root],
        vec!["verify", "--repo", repo, "--allowed-signers", signers, TAG],
        vec![
            "verify",
            "--repo",
            repo,
            "--allowed-signers",
            signers,
            "--json",
            TAG,
        ],
        vec!["--help"],
        vec!["status", "--help"],
    ];
    for args in &commands {
        let (_, stdout) = normally(args);
        assert!(!stdout.is_empty(), "driftless {args:?} prints something");
        assert_quiet(args, &closed(args, false));
    }
    // The demo prints from its first step on (it needs root, as the tests).
    assert_quiet(&["demo"], &closed(&["demo"], false));
    assert!(
        Path::new(root).join("etc/motd").exists(),
        "the node is still there"
    );
}

#[test]
fn a_refusal_whose_stderr_is_gone_keeps_its_exit_code() {
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new("files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n");
    let published = world.publish("release.git", &release, TAG, Tagging::Signed(&key));
    let node = world.configured_root("node", &key, &Config::new(&published.file_url()));
    let signers = node.host("/etc/driftless/allowed_signers");
    let repo = published.bare.to_str().expect("UTF-8 path");
    let args = [
        "verify",
        "--repo",
        repo,
        "--allowed-signers",
        signers.to_str().expect("UTF-8 path"),
        "v9.9.9",
    ];
    let (code, _) = normally(&args);
    assert!(
        code.is_some_and(|c| c != 0 && c != 101),
        "a refusal with its own code ({code:?})"
    );
    let ended = closed(&args, true);
    assert_eq!(
        (ended.status.code(), ended.status.signal()),
        (code, None),
        "the same exit code, no panic (101), no signal"
    );
    let gate = closed(
        &["gate", "--root", node.path().to_str().expect("UTF-8")],
        true,
    );
    assert_eq!(
        (gate.status.code(), gate.status.signal()),
        (Some(1), None),
        "the gate's refusal to a closed stderr"
    );
}
