//! `driftless demo`: the whole life of a node, on this machine, in a
//! temporary directory: a signing key, a release repository with a signed
//! tag and a signed channel, first boot (apply, lock), status, a promotion,
//! and the node asking to be replaced. Uses the `git` and `ssh-keygen` a
//! release engineer already has.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::exit::ExitCode;

/// Arguments of `driftless demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary directory and print its path (its locks are
    /// removed first, so that it can be deleted).
    #[arg(long)]
    keep: bool,
}

/// Runs `driftless demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    match demo(&args) {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

fn step(text: &str) {
    outln!("\n== {text}");
}

fn tool(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown} (the demo needs git and ssh-keygen)"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd.args([
        "-c",
        "user.name=Release Team",
        "-c",
        "user.email=release@example.com",
        "-c",
        "gpg.format=ssh",
    ]);
    cmd.arg("-c").arg(format!(
        "user.signingKey={}",
        home.join("release_key").display()
    ));
    cmd.arg("-C").arg(dir);
    cmd
}

fn driftless(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let exe = std::env::current_exe().context("cannot find the driftless binary")?;
    Ok(Command::new(exe)
        .args(args)
        .env("DRIFTLESS_LOG", "warn")
        .output()?)
}

/// `driftless channel ARGS… --repo REPO` with the release team's git
/// settings (the repository's own config) and the image's trust.
fn channel(home: &Path, repo: &Path, trust: &Path, args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the driftless binary")?;
    let output = Command::new(exe)
        .arg("channel")
        .args(args)
        .arg("--repo")
        .arg(repo)
        .arg("--allowed-signers")
        .arg(trust)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    show(&output);
    if !output.status.success() {
        bail!("driftless channel {} failed", args.join(" "));
    }
    Ok(())
}

fn show(output: &std::process::Output) {
    out!("{}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        out!("{stderr}");
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("driftless-demo-")
        .tempdir()?;
    let base = dir.path().to_path_buf();
    let result = life(&base);
    // The demo's node was locked: unlock it so the directory can go.
    let _ = Command::new("chattr")
        .arg("-R")
        .arg("-i")
        .arg(&base)
        .output();
    if args.keep {
        let kept = dir.keep();
        outln!(
            "\nkept {} (unlocked: its immutable attributes were removed with chattr -R -i, so the node is no longer locked and the directory can be deleted)",
            kept.display()
        );
    }
    result
}

fn life(base: &Path) -> anyhow::Result<()> {
    let home = base.to_path_buf();
    let repo = base.join("release");
    let root = base.join("node");
    step("1. The release team has an SSH signing key (ssh-keygen)");
    tool(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "release@example.com",
                "-f",
            ])
            .arg(home.join("release_key")),
    )?;
    let public = std::fs::read_to_string(home.join("release_key.pub"))?;
    outln!("{}", public.trim());

    step("2. A release: a node spec and its files, tagged v1 with a signed tag");
    std::fs::create_dir_all(repo.join("files"))?;
    tool(
        Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(&repo),
    )?;
    std::fs::write(repo.join("files/app.conf"), "greeting=hello from v1\n")?;
    std::fs::write(
        repo.join("driftless.yaml"),
        "directories:\n  - { path: /etc/app, mode: \"0755\" }\nfiles:\n  - { path: /etc/app/app.conf, source: files/app.conf, mode: \"0644\" }\n  - { path: /etc/motd, content: \"Built by driftless from a signed release. Do not edit: replace.\\n\" }\nlinks:\n  - { path: /etc/app/current, target: /etc/app/app.conf }\n",
    )?;
    tool(git(&home, &repo).args(["add", "-A"]))?;
    tool(git(&home, &repo).args(["commit", "-q", "-m", "release v1"]))?;
    tool(git(&home, &repo).args(["tag", "-s", "-m", "release v1", "v1"]))?;
    outln!(
        "{}",
        tool(git(&home, &repo).args(["log", "--oneline", "-1", "--decorate"]))?
    );

    step("3. A node's trust, baked into the image: who may sign");
    std::fs::create_dir_all(root.join("etc/driftless"))?;
    std::fs::write(root.join("etc/machine-id"), "demo-node-0001\n")?;
    let trust = root.join("etc/driftless/allowed_signers");
    std::fs::write(&trust, format!("release@example.com {public}"))?;
    outln!("{}", std::fs::read_to_string(&trust)?.trim());

    step("4. The fleet's channel: driftless channel init writes its first signed document");
    for (key, value) in [
        ("user.name", "Release Team"),
        ("user.email", "release@example.com"),
        ("gpg.format", "ssh"),
    ] {
        tool(git(&home, &repo).args(["config", key, value]))?;
    }
    let signing_key = home.join("release_key").display().to_string();
    tool(git(&home, &repo).args(["config", "user.signingKey", &signing_key]))?;
    channel(&home, &repo, &trust, &["init", "v1", "--fleet", "demo"])?;
    outln!(
        "$ git show channel:channel.yaml\n{}",
        tool(git(&home, &repo).args(["show", "channel:channel.yaml"]))?
    );
    let log = base.join("replacement-requests.log");
    let privileged = nix::unistd::geteuid().is_root();
    let config = format!(
        "source:\n  url: file://{repo}\ntrust:\n  allowed_signers: /etc/driftless/allowed_signers\nrelease:\n  channel: channel\nchannel:\n  fleet: demo\nclock:\n  sync: ignore\nlock:\n  mode: {lock}\nreplace:\n  action: exec\n  command: [/bin/sh, -c, 'echo \"$DRIFTLESS_NODE_ID asks to be replaced: $1\" >> {log}', driftless]\n",
        repo = repo.display(),
        log = log.display(),
        lock = if privileged { "best-effort" } else { "off" },
    );
    std::fs::write(root.join("etc/driftless/agent.yaml"), &config)?;
    out!("{config}");
    if !privileged {
        outln!(
            "(not running as root: the node cannot be locked with the immutable attribute, so lock.mode is off)"
        );
    }

    let root_arg = root.to_string_lossy().into_owned();
    step("5. First boot: driftless apply (fetch, verify, apply, lock)");
    show(&driftless(&["apply", "--root", &root_arg])?);
    let conf = root.join("etc/app/app.conf");
    outln!(
        "$ cat {}\n{}",
        conf.display(),
        std::fs::read_to_string(&conf)?.trim()
    );
    if privileged {
        match std::fs::OpenOptions::new().append(true).open(&conf) {
            Err(e) => outln!("writing to it as root: {e} (locked)"),
            Ok(_) => outln!(
                "writing to it as root succeeded: this filesystem has no immutable attribute"
            ),
        }
    }

    step("6. driftless status");
    show(&driftless(&["status", "--root", &root_arg])?);

    step("7. The team promotes v2: a new signed tag, and driftless channel promote");
    std::fs::write(repo.join("files/app.conf"), "greeting=hello from v2\n")?;
    tool(git(&home, &repo).args(["commit", "-q", "-am", "release v2"]))?;
    tool(git(&home, &repo).args(["tag", "-s", "-m", "release v2", "v2"]))?;
    channel(&home, &repo, &trust, &["promote", "v2"])?;

    step(
        "8. The node's watcher polls the channel: it never upgrades in place, it asks to be replaced",
    );
    show(&driftless(&["watch", "--once", "--root", &root_arg])?);
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    outln!("$ cat replacement-requests.log\n{}", requests.trim());
    show(&driftless(&["status", "--root", &root_arg])?);
    if requests.is_empty() {
        bail!("the node did not ask to be replaced");
    }
    outln!("\nThe replacement boots with v2; this node, built from v1, goes away unchanged.");
    Ok(())
}
