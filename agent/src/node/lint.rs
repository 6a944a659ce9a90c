//! The node's checks of a release tree, and the whole list a release is
//! linted with ([`CHECKS`]): the release stage's own (the spec, its
//! sources; `release::lint`) and the node's (planning it on a root as apply
//! does, the health checks, the read-only mounts). A check of another
//! stage joins by adding its constant to the list.
//!
//! Planning runs apply's own planner ([`crate::node::apply::plan`]) on a
//! root, so owners, groups, users, homes, unit `[Install]` sections,
//! exclusive directories and the parents of every path are judged by the
//! code a node runs. The root is the image's when one is given (`--base`),
//! which also shows entries of the image in the way of the release; else
//! a scratch root with root's own accounts only, as a minimal image has.

use std::collections::BTreeSet;
use std::path::Path;

use crate::release::lint::{Check, Finding, Tree, TreeCheck};
use crate::release::spec::{NodeSpec, Probe};
use crate::root::Root;
use crate::types::NodePath;

/// The accounts of a minimal image: root alone.
const MINIMAL_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
/// The groups of a minimal image: root alone.
const MINIMAL_GROUP: &str = "root:x:0:\n";

/// Every check a release tree is linted with, in order.
pub const CHECKS: &[TreeCheck] = &[
    crate::release::lint::SPEC,
    crate::release::lint::SOURCES,
    crate::release::lint::SECRETS,
    PLAN,
    HEALTH,
    READ_ONLY,
];

/// Lints the release tree `release` with every check of [`CHECKS`]: the
/// spec at `spec_path`, planned on the image root `base` (a minimal one
/// when `None`).
pub fn release(
    release: &crate::release::tree::Release<'_>,
    spec_path: &crate::types::TreePath,
    base: Option<&Path>,
) -> Vec<Finding> {
    let tree = Tree::new(release, spec_path.clone(), base.map(Path::to_path_buf));
    crate::release::lint::run_tree(CHECKS, &tree)
}

/// Planning the release on a root, as apply does.
pub const PLAN: TreeCheck = Check {
    name: "plan",
    about: "apply's planner accepts the release on the image's root (owners, accounts, units, parents)",
    run: plan,
};

/// The health checks can run.
pub const HEALTH: TreeCheck = Check {
    name: "health",
    about: "health checks can run: a program the release installs is executable; each check gets more than one attempt",
    run: health,
};

/// The read-only mounts can be made.
pub const READ_ONLY: TreeCheck = Check {
    name: "read-only",
    about: "lock.read_only names directories",
    run: read_only,
};

fn plan(tree: &Tree<'_>) -> Vec<Finding> {
    let Ok(spec) = &tree.spec else {
        return Vec::new();
    };
    // A missing source is the sources check's finding; the plan would only
    // say it again.
    if !crate::release::lint::sources(tree).is_empty() {
        return Vec::new();
    }
    match plan_on_root(tree, spec) {
        Ok(()) => Vec::new(),
        Err(e) => {
            let mut message = crate::error::one_line(&e);
            if tree.base.is_none() && message.contains(" is not in /etc/") {
                message.push_str(
                    " (lint knows only root's account: give the image's root with --base DIR to use its accounts)",
                );
            }
            vec![Finding::error("plan", message)]
        }
    }
}

fn plan_on_root(tree: &Tree<'_>, spec: &NodeSpec) -> anyhow::Result<()> {
    let scratch;
    let root_path: &Path = match &tree.base {
        Some(base) => base,
        None => {
            scratch = tempfile::Builder::new()
                .prefix("driftless-lint-")
                .tempdir()?;
            std::fs::create_dir(scratch.path().join("etc"))?;
            std::fs::write(scratch.path().join("etc/passwd"), MINIMAL_PASSWD)?;
            std::fs::write(scratch.path().join("etc/group"), MINIMAL_GROUP)?;
            scratch.path()
        }
    };
    let root = Root::open(root_path)?;
    let mut sealed = crate::node::secrets::Secrets::sealed();
    crate::node::apply::plan(&root, tree.release, spec, &BTreeSet::new(), &mut sealed)?;
    Ok(())
}

fn health(tree: &Tree<'_>) -> Vec<Finding> {
    let Ok(spec) = &tree.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, check) in spec.health.iter().enumerate() {
        if let Probe::Exec(argv) = &check.probe {
            let placed = spec
                .files
                .iter()
                .find(|f| Some(f.path.as_str()) == argv.first().map(String::as_str));
            if let Some(file) = placed.filter(|f| f.mode.0 & 0o111 == 0) {
                out.push(Finding::error(
                    "health",
                    format!(
                        "health[{i}]: runs {}, which the release installs with mode {:04o}: it cannot be run (give it mode \"0755\")",
                        file.path, file.mode.0
                    ),
                ));
            }
        }
        if check.interval.0 >= check.timeout.0 {
            out.push(Finding::warning(
                "health",
                format!(
                    "health[{i}]: interval {:?} is not shorter than timeout {:?}: the check gets one attempt, before the service may be up",
                    check.interval.0, check.timeout.0
                ),
            ));
        }
    }
    out
}

fn read_only(tree: &Tree<'_>) -> Vec<Finding> {
    let Ok(spec) = &tree.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let declared = |path: &NodePath| -> Option<&'static str> {
        if spec.directories.iter().any(|d| d.path == *path) {
            Some("directory")
        } else if spec.files.iter().any(|f| f.path == *path) {
            Some("file")
        } else if spec.links.iter().any(|l| l.path == *path) {
            Some("link")
        } else {
            None
        }
    };
    let mut seen = BTreeSet::new();
    for path in &spec.lock.read_only {
        if !seen.insert(path) {
            continue;
        }
        match declared(path) {
            Some("directory") => {}
            Some(kind) => out.push(Finding::error(
                "read-only",
                format!(
                    "lock.read_only: {path} is a {kind} of the release; only a directory can be mounted read-only"
                ),
            )),
            _ => {
                let on_image = tree.base.as_ref().map(|base| path.under(base).is_dir());
                match on_image {
                    Some(true) => {}
                    Some(false) => out.push(Finding::error(
                        "read-only",
                        format!(
                            "lock.read_only: {path} is neither made by the release nor a directory of the image; the mount would fail (declare it under directories)"
                        ),
                    )),
                    None => out.push(Finding::warning(
                        "read-only",
                        format!(
                            "lock.read_only: {path} is not made by the release: the image must have it as a directory, or the lock fails"
                        ),
                    )),
                }
            }
        }
    }
    out
}
