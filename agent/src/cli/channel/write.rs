//! The writing commands of `driftless channel`: compose the next document
//! from the branch's current one, write it into a signed commit (`git
//! commit-tree -S`, so git's own SSH signing settings sign it), check that
//! commit with the node's rules, and only then move the branch (and push
//! it, when asked). A refused commit is left unreferenced: git's garbage
//! collection removes it.

use std::process::Command;

use anyhow::{Context as _, bail};
use git2::Oid;
use jiff::{SignedDuration, Timestamp};

use super::{Action, Context, RolloutArgs, WriteArgs, now};
use crate::config::TagName;
use crate::release::channel::{ChannelFile, Share};
use crate::types::Interval;

/// Runs a writing subcommand.
pub(super) fn write(ctx: &Context, action: &Action) -> anyhow::Result<()> {
    let now = now();
    let (write, parent, file, what) = compose(ctx, action, now)?;
    let failures = match action {
        Action::Failed { release, nodes, .. } => Some(failures_with(ctx, parent, release, nodes)?),
        _ => None,
    };
    let tree = tree_with(ctx, parent, &file, failures.as_deref())?;
    let message = write.message.clone().unwrap_or_else(|| {
        format!(
            "channel {}: {what} (sequence {})",
            file.channel, file.sequence
        )
    });
    let commit = commit_tree(ctx, tree, parent, &message, write.signing_key.as_deref())?;
    let after = parent.map(|p| (p, file.sequence.saturating_sub(1)));
    let state = ctx
        .node_verdict(commit, &file.fleet, after, now)
        .context("nodes would refuse it, so the branch was not moved")?;
    move_branch(ctx, parent, commit)?;
    let pushed = match &write.push {
        Some(remote) => {
            push(ctx, remote)?;
            format!("pushed to {remote}")
        }
        None => format!("not pushed: git push origin {}, or --push", ctx.branch),
    };
    outln!(
        "channel {} (fleet {}) sequence {}: {what}; commit {commit} signed by {} ({} signer); expires {}; {pushed}",
        file.channel,
        file.fleet,
        file.sequence,
        state.signer,
        state.role.name(),
        file.expires
    );
    Ok(())
}

/// The next document, the commit it follows, and what it does.
fn compose<'a>(
    ctx: &Context,
    action: &'a Action,
    now: Timestamp,
) -> anyhow::Result<(&'a WriteArgs, Option<Oid>, ChannelFile, String)> {
    let expires = |write: &WriteArgs| -> anyhow::Result<Timestamp> {
        let span = SignedDuration::try_from(write.expires_in)?;
        Ok(now.checked_add(span)?)
    };
    if let Action::Init {
        tag,
        fleet,
        write,
        rollout,
    } = action
    {
        let parent = ctx.tip();
        if let Some(p) = parent {
            if let Ok(Some((f, _))) = ctx.documents(p) {
                if f.channel == ctx.branch {
                    bail!(
                        "branch {} already holds channel {} (fleet {}, sequence {}): use promote, rollback, hold, release or refresh",
                        ctx.branch,
                        f.channel,
                        f.fleet,
                        f.sequence
                    );
                }
            }
        }
        if !crate::config::is_valid_fleet_name(fleet) {
            bail!("--fleet {fleet:?} is not a fleet name (1 to 64 letters, digits, -, _, .)");
        }
        let (release, tag_object) = tag_of(ctx, tag)?;
        let mut file = ChannelFile {
            channel: ctx.branch.clone(),
            fleet: fleet.clone(),
            sequence: 1,
            release,
            tag_object,
            moved_at: now,
            expires: expires(write)?,
            hold: false,
            canary: None,
            waves: None,
            wave_interval: None,
            windows: Vec::new(),
            max_failures: None,
        };
        apply_rollout(&mut file, rollout)?;
        return Ok((write, parent, file, format!("init at {tag}")));
    }
    let (parent, current) = ctx.current()?;
    let mut file = current.clone();
    file.sequence = current.sequence.saturating_add(1);
    let (write, what) = match action {
        Action::Promote {
            tag,
            write,
            rollout,
        }
        | Action::Rollback {
            tag,
            write,
            rollout,
        } => {
            let rollback = matches!(action, Action::Rollback { .. });
            let widening = !rollback && rollout.given();
            if tag == current.release.as_str() && !widening {
                bail!(
                    "the channel already names {tag} (give --canary, --waves, --wave-interval or --max-failures to change its rollout)"
                );
            }
            if rollback && !named_before(ctx, parent, tag)? {
                bail!("the channel never named {tag} before: that is a promote, not a rollback");
            }
            let (release, tag_object) = tag_of(ctx, tag)?;
            file.release = release;
            file.tag_object = tag_object;
            file.moved_at = now;
            apply_rollout(&mut file, rollout)?;
            let verb = if rollback { "roll back to" } else { "promote" };
            (write, format!("{verb} {tag}"))
        }
        Action::Hold { write } => {
            if current.hold {
                bail!("the channel is already on hold");
            }
            file.hold = true;
            file.moved_at = now;
            (write, "hold".to_owned())
        }
        Action::Release { write } => {
            if !current.hold {
                bail!("the channel is not on hold");
            }
            file.hold = false;
            file.moved_at = now;
            (write, "release the hold".to_owned())
        }
        Action::Failed {
            release,
            nodes,
            write,
        } => (write, format!("{} failed on {release}", nodes.join(", "))),
        Action::Refresh { write } => (write, "refresh".to_owned()),
        Action::Init { .. } | Action::Show { .. } => unreachable!("handled by the caller"),
    };
    file.expires = expires(write)?;
    Ok((write, Some(parent), file, what))
}

/// The tag `name` in this clone, and its object id.
fn tag_of(ctx: &Context, name: &str) -> anyhow::Result<(TagName, String)> {
    let tag = TagName::new(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = ctx
        .repo
        .refname_to_id(&format!("refs/tags/{name}"))
        .map_err(|_| anyhow::anyhow!("there is no tag {name} in this clone (git fetch --tags?)"))?;
    Ok((tag, id.to_string()))
}

/// Whether a document on the first-parent history of `tip` named `tag`.
fn named_before(ctx: &Context, tip: Oid, tag: &str) -> anyhow::Result<bool> {
    let mut walk = ctx.repo.revwalk()?;
    walk.push(tip)?;
    walk.simplify_first_parent()?;
    for id in walk.take(crate::release::channel::MAX_REFRESH_CHAIN * 2) {
        if let Ok(Some((f, _))) = ctx.documents(id?) {
            if f.release.as_str() == tag {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Sets the rollout settings the command line gives.
fn apply_rollout(file: &mut ChannelFile, rollout: &RolloutArgs) -> anyhow::Result<()> {
    if let Some(share) = &rollout.canary {
        let share: Share = serde_yaml::from_str(&format!("{share:?}"))
            .map_err(|e| anyhow::anyhow!("--canary: {e}"))?;
        file.canary = (share.0 < 10_000).then_some(share);
    }
    if let Some(waves) = rollout.waves {
        if waves == 0 {
            bail!("--waves must be at least 1");
        }
        file.waves = (waves > 1).then_some(waves);
    }
    if let Some(interval) = &rollout.wave_interval {
        let interval: Interval = serde_yaml::from_str(&format!("{interval:?}"))
            .map_err(|e| anyhow::anyhow!("--wave-interval: {e}"))?;
        file.wave_interval = Some(interval);
    }
    if let Some(n) = rollout.max_failures {
        file.max_failures = Some(n);
    }
    Ok(())
}

/// The failures file of `parent` with `nodes` added under `release`.
fn failures_with(
    ctx: &Context,
    parent: Option<Oid>,
    release: &str,
    nodes: &[String],
) -> anyhow::Result<String> {
    TagName::new(release).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut failures = match parent {
        Some(p) => ctx.documents(p)?.map(|(_, f)| f).unwrap_or_default(),
        None => Default::default(),
    };
    let ids = failures.0.entry(release.to_owned()).or_default();
    for node in nodes {
        if !ids.contains(node) {
            ids.push(node.clone());
        }
    }
    let text = format!(
        "# New nodes that failed, by release: written by `driftless channel failed`.\n{}",
        serde_yaml::to_string(&failures)?
    );
    // What nodes will read, checked the same way.
    crate::release::channel::Failures::parse(&text, ctx.settings.failures_file.as_str())?;
    Ok(text)
}

/// The tree of `parent` (or an empty one) with the channel file (and the
/// failures file, when given) replaced.
fn tree_with(
    ctx: &Context,
    parent: Option<Oid>,
    file: &ChannelFile,
    failures: Option<&str>,
) -> anyhow::Result<Oid> {
    let repo = &ctx.repo;
    let blob = repo.blob(file.render().as_bytes())?;
    let base = match parent {
        Some(p) => repo.find_commit(p)?.tree()?,
        None => repo.find_tree(repo.treebuilder(None)?.write()?)?,
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    update.upsert(ctx.settings.file.as_str(), blob, git2::FileMode::Blob);
    if let Some(text) = failures {
        let blob = repo.blob(text.as_bytes())?;
        update.upsert(
            ctx.settings.failures_file.as_str(),
            blob,
            git2::FileMode::Blob,
        );
    }
    Ok(update.create_updated(repo, &base)?)
}

/// `git commit-tree -S`: signed with git's SSH signing settings.
fn commit_tree(
    ctx: &Context,
    tree: Oid,
    parent: Option<Oid>,
    message: &str,
    key: Option<&str>,
) -> anyhow::Result<Oid> {
    let mut cmd = crate::cli::git::signing(ctx.repo.path(), None, key);
    cmd.args(["commit-tree", "-S"]).arg(tree.to_string());
    if let Some(p) = parent {
        cmd.arg("-p").arg(p.to_string());
    }
    cmd.arg("-m").arg(message);
    let out = crate::cli::git::run(&mut cmd, "git commit-tree -S (signing the channel commit)")?;
    Oid::from_str(out.trim()).with_context(|| format!("git commit-tree printed {out:?}"))
}

/// Moves the branch from `old` to `new`: a fast-forward of the work tree
/// that has it checked out, else the ref alone, only if it still is `old`.
fn move_branch(ctx: &Context, old: Option<Oid>, new: Oid) -> anyhow::Result<()> {
    if let Some(worktree) = checked_out_in(ctx)? {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&worktree)
            .args(["merge", "--ff-only", "-q"])
            .arg(new.to_string());
        crate::cli::git::run(
            &mut cmd,
            "git merge --ff-only (the checked-out channel branch)",
        )?;
        return Ok(());
    }
    let message = "driftless channel";
    match old {
        Some(old) => ctx
            .repo
            .reference_matching(&ctx.branch_ref, new, true, old, message)?,
        None => ctx.repo.reference(&ctx.branch_ref, new, false, message)?,
    };
    Ok(())
}

/// The work tree that has the branch checked out, if one does.
fn checked_out_in(ctx: &Context) -> anyhow::Result<Option<String>> {
    let listing = crate::cli::git::run(
        git(ctx).args(["worktree", "list", "--porcelain"]),
        "git worktree list",
    )?;
    let mut current = None;
    for line in listing.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            current = Some(path.to_owned());
        } else if line.strip_prefix("branch ") == Some(ctx.branch_ref.as_str()) {
            return Ok(current);
        }
    }
    Ok(None)
}

/// `git push REMOTE BRANCH:BRANCH`.
fn push(ctx: &Context, remote: &str) -> anyhow::Result<()> {
    let spec = format!("{0}:{0}", ctx.branch_ref);
    crate::cli::git::run(
        git(ctx).arg("push").arg("-q").arg(remote).arg(spec),
        "git push",
    )?;
    Ok(())
}

/// `git --git-dir=… ` of the clone.
fn git(ctx: &Context) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(ctx.repo.path());
    cmd
}
