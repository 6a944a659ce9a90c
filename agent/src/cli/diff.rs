//! `driftless diff OLD NEW`: what a node of release OLD would become with
//! release NEW (both tags of a local repository, or with `--node ROOT` the
//! release a node was built from and a tag), computed by the node's own
//! planner (`node::diff`). With `--allowed-signers`, both tags are
//! verified first, as a node would.

use std::path::PathBuf;

use clap::Args;
use jiff::Timestamp;
use serde_json::json;

use crate::config::ConfigError;
use crate::exit::ExitCode;
use crate::node::diff::{self, ContentChange, ReleaseDiff};
use crate::release::local;
use crate::release::tree::Release;
use crate::root::Root;
use crate::types::TreePath;
use crate::verify::Trust;

/// Arguments of `driftless diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// OLD and NEW tags; with --node only NEW.
    #[arg(value_name = "TAG", required = true, num_args = 1..=2)]
    tags: Vec<String>,
    /// The release repository holding the tags.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// OLD is the release the node under ROOT was built from (its state).
    #[arg(long, value_name = "ROOT")]
    node: Option<PathBuf>,
    /// Verify both tags with this allowed_signers file first.
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// The node spec in the trees (the nodes' release.spec).
    #[arg(long, value_name = "PATH", default_value = "driftless.yaml")]
    spec: String,
    /// The image's root, whose accounts both releases are planned on.
    #[arg(long, value_name = "DIR")]
    base: Option<PathBuf>,
    /// Print the changes as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `driftless diff`.
pub fn run(args: DiffArgs) -> ExitCode {
    match compare(&args) {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

fn compare(args: &DiffArgs) -> anyhow::Result<()> {
    let usage = |reason: &str| ConfigError {
        path: "driftless diff".into(),
        reason: reason.to_owned(),
    };
    let (old_tag, new_tag, pinned) = match (&args.node, args.tags.as_slice()) {
        (Some(root), [new]) => {
            let root = Root::open(root)?;
            let state = crate::record::state::load(&root)?.ok_or_else(|| {
                usage("--node: no release has been applied under that root; nothing to compare")
            })?;
            (
                state.release.tag.clone(),
                new.clone(),
                Some(state.release.commit),
            )
        }
        (Some(_), _) => return Err(usage("with --node, give only the NEW tag").into()),
        (None, [old, new]) => (old.clone(), new.clone(), None),
        (None, _) => return Err(usage("give OLD and NEW tags (or --node ROOT and NEW)").into()),
    };
    let spec = TreePath::new(&args.spec).map_err(|reason| ConfigError {
        path: "--spec".into(),
        reason,
    })?;
    let repo = local::open(&args.repo, true)?;
    let trust = args
        .allowed_signers
        .as_deref()
        .map(|f| Trust::load(f, None))
        .transpose()?;
    let open = |tag: &str| -> anyhow::Result<(String, git2::Oid)> {
        let (commit, tree) = local::tag_tree(&repo, tag)?;
        if let Some(trust) = &trust {
            crate::verify::verify_tag(&repo, tag, trust, Timestamp::now())
                .map_err(|e| anyhow::Error::from(e).context(format!("tag {tag}")))?;
        }
        Ok((commit.to_string(), tree))
    };
    let (old_commit, old_tree) = open(&old_tag)?;
    if let Some(pinned) = pinned.filter(|p| *p != old_commit) {
        anyhow::bail!(
            "the node was built from release {old_tag} at commit {pinned}, but tag {old_tag} in {} names {old_commit}: the tag moved, or this is another repository",
            args.repo.display()
        );
    }
    let (new_commit, new_tree) = open(&new_tag)?;
    let old = Release::unsigned(&repo, old_tree, &old_tag)?;
    let new = Release::unsigned(&repo, new_tree, &new_tag)?;
    let accounts = diff::image_accounts(args.base.as_deref())?;
    let changes = diff::between(&old, &new, &spec, &accounts)?;
    if args.json {
        outln!(
            "{}",
            json!({
                "old": { "tag": old_tag, "commit": old_commit },
                "new": { "tag": new_tag, "commit": new_commit },
                "verified": trust.is_some(),
                "paths": changes.paths,
                "spec": changes.spec,
            })
        );
    } else {
        outln!("diff {old_tag} (commit {old_commit}) -> {new_tag} (commit {new_commit})");
        if trust.is_none() {
            outln!("(signatures not checked: --allowed-signers FILE checks them as a node does)");
        }
        print_human(&changes);
    }
    Ok(())
}

/// One line per change, a unified diff under each text change.
pub(super) fn print_human(changes: &ReleaseDiff) {
    for p in &changes.paths {
        let kind = match p.kind {
            crate::root::Kind::Directory => "directory",
            crate::root::Kind::File => "file",
            crate::root::Kind::Link => "link",
            crate::root::Kind::Other => "entry",
        };
        outln!(
            "{:<8} {kind} {} ({}): {}",
            p.change,
            p.path,
            p.origin,
            p.what.join(", ")
        );
        match &p.content {
            Some(ContentChange::Text { unified }) => {
                for line in unified.lines() {
                    outln!("    {line}");
                }
            }
            Some(ContentChange::Binary {
                old_len,
                new_len,
                old_sha256,
                new_sha256,
            }) => outln!(
                "    binary: {old_len} bytes sha256 {old_sha256} -> {new_len} bytes sha256 {new_sha256}"
            ),
            None => {}
        }
    }
    for s in &changes.spec {
        let detail = if s.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", s.detail)
        };
        outln!("{:<8} {} {}{detail}", s.change, s.section, s.name);
    }
    if changes.is_empty() {
        outln!("no differences: a node of either release is the same");
    } else {
        outln!(
            "{} paths and {} other parts of the spec differ",
            changes.paths.len(),
            changes.spec.len()
        );
    }
}
