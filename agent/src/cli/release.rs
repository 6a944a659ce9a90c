//! `driftless release TAG`: lint the commit to be released with the node's
//! rules, make the annotated tag signed with the user's own git SSH signing
//! settings (driftless supplies `gpg.format=ssh`, since a node accepts SSH
//! signatures only), then verify the new tag exactly as a node will. A tag
//! that does not verify is deleted again, so a refused release leaves no
//! tag behind. Nothing is pushed unless `--push` says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Args;
use git2::Repository;
use jiff::Timestamp;

use crate::config::{ConfigError, TagName};
use crate::exit::ExitCode;
use crate::release::lint::{Refused, refused};
use crate::release::local;
use crate::release::tree::Release;
use crate::types::TreePath;
use crate::verify::{self, Trust};

/// Arguments of `driftless release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The new release's tag, e.g. v1.4.2.
    #[arg(value_name = "TAG")]
    tag: String,
    /// The release repository (a work tree, or a directory in it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// The commit to release.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    rev: String,
    /// The tag's message (default: "release TAG").
    #[arg(long, short = 'm', value_name = "TEXT")]
    message: Option<String>,
    /// The nodes' allowed_signers file, to verify the new tag with (default:
    /// git's gpg.ssh.allowedSignersFile).
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// The nodes' revoked-keys file.
    #[arg(long, value_name = "FILE")]
    revoked_keys: Option<PathBuf>,
    /// Sign with this key (a file, or `key::ssh-ed25519 …`) instead of
    /// git's user.signingKey.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<String>,
    /// The node spec in the tree (the nodes' release.spec).
    #[arg(long, value_name = "PATH", default_value = "driftless.yaml")]
    spec: String,
    /// The image's root, whose accounts resolve the spec's owners.
    #[arg(long, value_name = "DIR")]
    base: Option<PathBuf>,
    /// Push the tag to REMOTE (default origin) once it verified.
    #[arg(long, value_name = "REMOTE", num_args = 0..=1, default_missing_value = "origin")]
    push: Option<String>,
}

/// Runs `driftless release`.
pub fn run(args: ReleaseArgs) -> ExitCode {
    match release(&args) {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

fn release(args: &ReleaseArgs) -> anyhow::Result<()> {
    let tag = TagName::new(&args.tag).map_err(|reason| ConfigError {
        path: "TAG".into(),
        reason,
    })?;
    let spec = TreePath::new(&args.spec).map_err(|reason| ConfigError {
        path: "--spec".into(),
        reason,
    })?;
    let repo = local::open(&args.repo, true)?;
    let tag_ref = format!("refs/tags/{}", tag.as_str());
    if repo.find_reference(&tag_ref).is_ok() {
        bail!(
            "tag {} already exists: a release is never tagged again; pick a new name",
            tag.as_str()
        );
    }
    let commit = repo
        .revparse_single(&args.rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| anyhow::anyhow!("{}: not a commit: {}", args.rev, e.message()))?;
    let trust = load_trust(&repo, args)?;
    let signing_key = signing_key(&repo, args)?;

    // 1. The commit's tree, judged as a node will judge it.
    let label = format!("commit {}", commit.id());
    let release = Release::unsigned(&repo, commit.tree_id(), &label)?;
    let findings = crate::node::lint::release(&release, &spec, args.base.as_deref());
    super::lint::print_findings(&findings);
    if refused(&findings) {
        return Err(anyhow::Error::new(Refused(findings)).context(format!("{label}: not tagged")));
    }
    if args.rev == "HEAD" && repo.workdir().is_some() {
        let worktree = local::worktree_tree(&repo)?;
        if worktree != commit.tree_id() {
            outln!(
                "warning: the work tree has changes that are not committed; the tag takes {label}, not them"
            );
        }
    }

    // 2. The signed tag, with the user's own signing settings.
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| format!("release {}", tag.as_str()));
    let mut cmd = crate::cli::git::signing(repo.path(), repo.workdir(), signing_key.as_deref());
    cmd.args(["tag", "-s", "-m", &message, tag.as_str()])
        .arg(commit.id().to_string());
    crate::cli::git::run(&mut cmd, "git tag -s (signing the release)")?;

    // 3. The tag, verified with the node's rules; deleted if it does not.
    let verified = verify::verify_tag(&repo, tag.as_str(), &trust, Timestamp::now())
        .map_err(anyhow::Error::from)
        .and_then(|v| {
            let release = Release::open(&repo, v.clone())?;
            let findings = crate::node::lint::release(&release, &spec, args.base.as_deref());
            if refused(&findings) {
                return Err(Refused(findings).into());
            }
            Ok(v)
        });
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let deleted = repo.tag_delete(tag.as_str());
            let what = match deleted {
                Ok(()) => "the tag was deleted again".to_owned(),
                Err(d) => format!(
                    "deleting the tag failed too ({}): delete it with git tag -d {}",
                    d.message(),
                    tag.as_str()
                ),
            };
            return Err(e.context(format!(
                "tag {}: made, but a node would refuse it; {what}",
                tag.as_str()
            )));
        }
    };
    outln!("good signature on tag {}", verified.name);
    outln!("tag        {} ({})", verified.name, verified.object);
    outln!("commit     {}", verified.commit);
    outln!("principal  {}", verified.principal);
    outln!("key        {}", verified.fingerprint);
    outln!(
        "lint       a node accepts its tree ({} checks)",
        crate::node::lint::CHECKS.len()
    );

    // 4. Pushed only when asked.
    match &args.push {
        Some(remote) => {
            let mut cmd = git(&repo);
            cmd.args(["push", "-q", remote.as_str(), &tag_ref]);
            crate::cli::git::run(&mut cmd, "git push")
                .with_context(|| format!("tag {} is made and good, but", tag.as_str()))?;
            outln!("pushed     {tag_ref} to {remote}");
        }
        None => outln!(
            "not pushed: git push origin {} (or --push next time)",
            tag.as_str()
        ),
    }
    Ok(())
}

/// The trust a node has: `--allowed-signers`, else git's own
/// `gpg.ssh.allowedSignersFile`.
fn load_trust(repo: &Repository, args: &ReleaseArgs) -> anyhow::Result<Trust> {
    let configured = || {
        repo.config()
            .ok()?
            .get_path("gpg.ssh.allowedSignersFile")
            .ok()
    };
    let Some(allowed) = args.allowed_signers.clone().or_else(configured) else {
        return Err(ConfigError {
            path: "--allowed-signers".into(),
            reason: "no trust to verify the new tag with: give --allowed-signers FILE (the nodes' allowed_signers), or set git config gpg.ssh.allowedSignersFile".into(),
        }
        .into());
    };
    Ok(Trust::load(&allowed, args.revoked_keys.as_deref())?)
}

/// The key to sign with, when driftless must name it: `--signing-key`,
/// else `None` when git's settings name one (user.signingKey, or
/// gpg.ssh.defaultKeyCommand). Without any, says how to set one before
/// anything is made.
fn signing_key(repo: &Repository, args: &ReleaseArgs) -> anyhow::Result<Option<String>> {
    if let Some(key) = &args.signing_key {
        return Ok(Some(expand_home(key)));
    }
    let config = repo.config()?;
    let set = |name: &str| config.get_string(name).is_ok_and(|v| !v.trim().is_empty());
    if set("user.signingKey") || set("gpg.ssh.defaultKeyCommand") {
        return Ok(None);
    }
    Err(ConfigError {
        path: "git config".into(),
        reason: "no SSH signing key: set git config user.signingKey ~/.ssh/release_ed25519.pub (or give --signing-key)".into(),
    }
    .into())
}

/// `~/x` as git would read it from its config.
fn expand_home(key: &str) -> String {
    match (key.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest).display().to_string(),
        _ => key.to_owned(),
    }
}

/// `git --git-dir=…` of the repository.
fn git(repo: &Repository) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(repo.path());
    if let Some(dir) = repo.workdir() {
        cmd.arg("--work-tree").arg(dir);
    }
    cmd
}
