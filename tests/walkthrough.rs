//! The README's walkthrough, "From a commit to the fleet", run as written:
//! the shell block between its `<!-- walkthrough -->` markers, line by
//! line under `bash -e -x` (the first failing line stops it and is named),
//! in a fresh HOME whose git config holds only the user's identity, with
//! the built `driftless` first on PATH. What each step prints is checked
//! where it says something a node decided.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use release::World;
use servers::{isolate_git_env, run_bounded};

/// The shell block of the README's walkthrough.
fn walkthrough() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("the README has the walkthrough's start marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("the README has the walkthrough's end marker");
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(body, _)| body)
        .expect("a ```sh block between the markers");
    body.to_owned()
}

#[test]
fn the_readme_walkthrough_runs_line_by_line() {
    let script = walkthrough();
    assert!(
        script.lines().any(|l| l.starts_with("driftless release")),
        "{script}"
    );
    let world = World::new();
    let home = world.home();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Release Engineer\n\temail = release@example.com\n",
    )
    .expect("write the user's git identity");
    let file = world.path("walkthrough.sh");
    std::fs::write(&file, &script).expect("write the script");
    let bin = Path::new(env!("CARGO_BIN_EXE_driftless"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    isolate_git_env(&mut cmd, &home);
    cmd.arg("-e")
        .arg("-x")
        .arg(&file)
        .current_dir(&home)
        .env("PATH", path)
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("DRIFTLESS_LOG", "warn");
    let done = run_bounded(&mut cmd, Duration::from_secs(300)).expect("run the walkthrough");
    assert!(
        done.success(),
        "the walkthrough stopped\n{}",
        done.describe()
    );
    for expected in [
        "good: a node accepts this release",
        "good signature on tag v1",
        "good signature on tag v2",
        "good: a node accepts this config",
        "applied release v1",
        "-port=8080",
        "+port=9090",
        "status     applied",
        "desired    v2",
        "replace    requested (v1 -> v2)",
        "no coordinator: the fleet is what its signed channel says",
        "rollout  v2 rolling",
    ] {
        assert!(
            done.stdout.contains(expected),
            "the walkthrough's output lacks {expected:?}\n{}",
            done.describe()
        );
    }
}
