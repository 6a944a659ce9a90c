//! The node the `check` and `poll` benchmarks run, made with the real `git`
//! and `ssh-keygen`: an ed25519 release key ([`ReleaseKey`]) that signs a
//! release's tag and the `channel` branch naming it, a node root following
//! that release ([`write_node_root`]), and `driftless` run against the root
//! in a cleared environment ([`driftless`]).
//!
//! Included after `common/mod.rs` and `tests/support/servers.rs`:
//! `#[path = "common/node.rs"] mod node;`.

#![allow(dead_code)] // not every benchmark uses every helper

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use crate::common::{PRINCIPAL, allowed_line};
use crate::servers::{Finished, git_command, run_bounded};

/// The node id (`/etc/machine-id`).
pub const MACHINE_ID: &str = "0b5e4c3a2d1f4e6a8b7c9d0e1f2a3b4c";
/// Time limit of every fixture command.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a fixture command within [`TOOL_TIMEOUT`]; exit 0 required.
pub fn tool(cmd: &mut Command, what: &str) -> Result<Finished> {
    let done = run_bounded(cmd, TOOL_TIMEOUT).with_context(|| what.to_owned())?;
    ensure!(done.success(), "{what} failed: {}", done.describe());
    Ok(done)
}

/// An ed25519 key made by `ssh-keygen`, trusted as [`PRINCIPAL`], and the
/// git that signs with it.
pub struct ReleaseKey {
    /// HOME of every command.
    home: PathBuf,
    /// `user.signingKey=PRIVATE`.
    signing: String,
    /// The allowed_signers line trusting the key.
    pub allowed: String,
}

impl ReleaseKey {
    /// Makes the key `dir/release_ed25519` with HOME `home`.
    pub fn create(dir: &Path, home: &Path) -> Result<Self> {
        let key = dir.join("release_ed25519");
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f"])
            .arg(&key)
            .env("HOME", home);
        tool(&mut keygen, "ssh-keygen (is openssh-client installed?)")?;
        Ok(Self {
            home: home.to_path_buf(),
            signing: format!("user.signingKey={}", key.display()),
            allowed: allowed_line(&key)?,
        })
    }

    /// Runs `git -C DIR ARGS…` as the release bot, signing (when asked)
    /// with the key, in UTC; returns its trimmed stdout.
    pub fn git(&self, dir: &Path, args: &[&str], what: &str) -> Result<String> {
        let mut cmd = git_command(&self.home);
        cmd.arg("-C")
            .arg(dir)
            .args(["-c", "gpg.format=ssh", "-c", &self.signing])
            .args(args)
            .env("GIT_AUTHOR_NAME", "Release Bot")
            .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
            .env("GIT_COMMITTER_NAME", "Release Bot")
            .env("GIT_COMMITTER_EMAIL", PRINCIPAL)
            .env("TZ", "UTC");
        Ok(tool(&mut cmd, what)?.stdout.trim().to_owned())
    }

    /// Makes the work tree `work` (its files already written) a repository
    /// on `main` with one commit and the signed tag `tag`; returns the
    /// commit.
    pub fn release(&self, work: &Path, tag: &str) -> Result<String> {
        self.git(work, &["init", "-q", "-b", "main"], "git init")?;
        self.git(work, &["add", "-A"], "git add")?;
        self.git(work, &["commit", "-q", "-m", "release 1"], "git commit")?;
        self.git(work, &["tag", "-s", "-m", "release 1", tag], "git tag -s")?;
        self.git(work, &["rev-parse", "HEAD"], "git rev-parse HEAD")
    }

    /// Makes the work tree `channel` with one signed commit whose
    /// `channel.yaml` (the first document of channel `channel`, fleet
    /// `default`, fresh for 30 days) names `tag` of the repository `repo`,
    /// and pushes it to `refs/heads/channel` there.
    pub fn channel(&self, channel: &Path, tag: &str, repo: &Path) -> Result<()> {
        fs::create_dir_all(channel).context("creating the channel work tree")?;
        let tag_object = self.git(
            repo,
            &["rev-parse", &format!("refs/tags/{tag}")],
            "git rev-parse (the tag object)",
        )?;
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())?;
        let expires = now.checked_add(jiff::SignedDuration::from_hours(30 * 24))?;
        fs::write(
            channel.join("channel.yaml"),
            format!(
                "channel: channel\nfleet: default\nsequence: 1\nrelease: {tag}\n\
                 tag_object: {tag_object}\nmoved_at: {now}\nexpires: {expires}\n"
            ),
        )
        .context("writing channel.yaml")?;
        self.git(
            channel,
            &["init", "-q", "-b", "channel"],
            "git init (channel)",
        )?;
        self.git(channel, &["add", "channel.yaml"], "git add (channel)")?;
        self.git(
            channel,
            &["commit", "-q", "-S", "-m", &format!("promote {tag}")],
            "git commit -S (channel)",
        )?;
        let repo = repo.to_str().context("the temporary path is not UTF-8")?;
        self.git(
            channel,
            &["push", "-q", repo, "channel:refs/heads/channel"],
            "git push (channel)",
        )?;
        Ok(())
    }
}

/// The agent config of a node that applies `tag` from `url` (not locked)
/// and polls the channel every `poll_interval`, asking to be replaced with
/// `/bin/true`.
pub fn agent_yaml(url: &str, tag: &str, poll_interval: &str) -> Result<String> {
    let url = serde_json::to_string(url)?;
    Ok(format!(
        "source:\n  url: {url}\n\
         trust:\n  allowed_signers: /etc/driftless/allowed_signers\n\
         release:\n  tag: {tag}\n\
         lock:\n  mode: \"off\"\n\
         channel:\n  poll_interval: {poll_interval}\n\
         replace:\n  action: exec\n  command: [/bin/true]\n"
    ))
}

/// Writes the node root `root`: `/etc/machine-id` ([`MACHINE_ID`]),
/// `/etc/passwd` and `/etc/group`, the trust file (`allowed`) and
/// `agent.yaml` (`agent`) in `/etc/driftless`, and an empty `/var/lib`.
pub fn write_node_root(
    root: &Path,
    passwd: &str,
    group: &str,
    allowed: &str,
    agent: &str,
) -> Result<()> {
    for d in ["etc/driftless", "var/lib"] {
        fs::create_dir_all(root.join(d)).with_context(|| format!("creating {d}"))?;
    }
    let etc = root.join("etc");
    fs::write(etc.join("machine-id"), format!("{MACHINE_ID}\n"))?;
    fs::write(etc.join("passwd"), passwd)?;
    fs::write(etc.join("group"), group)?;
    fs::write(etc.join("driftless/allowed_signers"), allowed)?;
    fs::write(etc.join("driftless/agent.yaml"), agent).context("writing agent.yaml")?;
    Ok(())
}

/// `program` with a cleared environment (PATH, HOME `home`, C locale,
/// UTC), run in `home`.
pub fn command(home: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .current_dir(home);
    cmd
}

/// `driftless ARGS… --root ROOT` in a [`command`] environment, logging
/// warnings only.
pub fn driftless(home: &Path, root: &Path, args: &[&str]) -> Command {
    let mut cmd = command(home, env!("CARGO_BIN_EXE_driftless"));
    cmd.args(args)
        .arg("--root")
        .arg(root)
        .env("DRIFTLESS_LOG", "warn");
    cmd
}
