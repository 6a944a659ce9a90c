//! Running the `git` command line for the commands that write to a
//! release repository (`release`, `channel`): git signs with the user's
//! own settings, which libgit2 cannot read.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// `git --git-dir=GIT_DIR [--work-tree=WORK_TREE]`, signing with SSH
/// (a node accepts nothing else) and `key` when given (else the user's
/// `user.signingKey`).
pub fn signing(git_dir: &Path, work_tree: Option<&Path>, key: Option<&str>) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir);
    if let Some(dir) = work_tree {
        cmd.arg("--work-tree").arg(dir);
    }
    cmd.args(["-c", "gpg.format=ssh"]);
    if let Some(key) = key {
        cmd.arg("-c").arg(format!("user.signingKey={key}"));
    }
    cmd
}

/// Runs a git command and returns its stdout; when it fails, the last
/// line of its stderr says why.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run git ({what})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("{what} failed: {}", last.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
