//! The real `git`, for the unit tests that make repositories and packs:
//! isolated from the user's and the system's configuration.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `git ARGS` in `dir`, which must succeed; returns its stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}");
    out.stdout
}
