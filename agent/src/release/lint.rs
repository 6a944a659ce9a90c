//! Lint: a release tree judged before any node sees it, by the rules a
//! node applies. A lint is a list of checks; each check is one function in
//! the stage whose rules it applies (the spec's here, the node's in
//! `node::lint`, the agent config's in `fleet::lint`), and the lists are
//! put together where every check they name is visible. A check returns
//! findings; an error finding is something a node would refuse, a warning
//! one it would accept but that is likely not what was meant.
//!
//! This file holds the vocabulary (findings, checks, the tree being
//! judged) and the release stage's own checks: the spec parses and
//! validates, and every file it names is in the tree as a node reads it.

use serde::Serialize;

use crate::release::spec::{Content, MAX_FILE_LEN, NodeSpec, SpecError};
use crate::release::tree::Release;
use crate::types::TreePath;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A node would accept it, but it is likely a mistake.
    Warning,
    /// A node would refuse it.
    Error,
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check that found it.
    pub check: &'static str,
    /// How bad.
    pub level: Level,
    /// What, one line, naming where and what to do.
    pub message: String,
}

impl Finding {
    /// An error of `check`.
    pub fn error(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            level: Level::Error,
            message: message.into(),
        }
    }

    /// A warning of `check`.
    pub fn warning(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            level: Level::Warning,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.check, self.message)
    }
}

/// A check: its name (shown with each finding), what it checks, and the
/// function that runs it (`F`: a function of the subject, e.g.
/// [`TreeCheck`]).
pub struct Check<F> {
    /// The name, e.g. `spec`, `sources`, `plan`.
    pub name: &'static str,
    /// What it checks, for `driftless lint --list` and the docs.
    pub about: &'static str,
    /// The check itself.
    pub run: F,
}

/// A check of a release tree.
pub type TreeCheck = Check<fn(&Tree<'_>) -> Vec<Finding>>;

/// Runs every check of `checks` on `tree`, in order.
pub fn run_tree(checks: &[TreeCheck], tree: &Tree<'_>) -> Vec<Finding> {
    checks.iter().flat_map(|c| (c.run)(tree)).collect()
}

/// True when some finding is an error: a node would refuse the subject.
pub fn refused(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Error)
}

/// A release tree being judged: its files, where its spec is, and the spec
/// as a node parses it (once, for every check).
pub struct Tree<'a> {
    /// The tree's files.
    pub release: &'a Release<'a>,
    /// Where the node spec is (the agent config's `release.spec`).
    pub spec_path: TreePath,
    /// The spec, or why a node refuses it.
    pub spec: Result<NodeSpec, SpecError>,
    /// The accounts the image gives a node, for resolving owners (see
    /// `node::lint`); `None`: a minimal image with only root.
    pub base: Option<std::path::PathBuf>,
}

impl<'a> Tree<'a> {
    /// Reads and parses the spec at `spec_path` as a node does.
    pub fn new(
        release: &'a Release<'a>,
        spec_path: TreePath,
        base: Option<std::path::PathBuf>,
    ) -> Self {
        let spec = release.spec(&spec_path);
        Self {
            release,
            spec_path,
            spec,
            base,
        }
    }
}

/// The spec reads, parses and validates (unknown keys, paths, modes,
/// duplicates, sizes), with the file, line and column of what is wrong.
pub fn spec(tree: &Tree<'_>) -> Vec<Finding> {
    match &tree.spec {
        Ok(_) => Vec::new(),
        Err(e) if e.reason == "no such file in the release" => vec![Finding::error(
            "spec",
            format!(
                "{}: not in the release tree; a node reads its spec there (set release.spec in the agent config, or --spec, if it lives elsewhere)",
                e.file
            ),
        )],
        Err(e) => vec![Finding::error("spec", e.to_string())],
    }
}

/// Every `source:` the spec names (files and units) is a regular file of
/// the tree, within the size a node accepts: one finding per file.
pub fn sources(tree: &Tree<'_>) -> Vec<Finding> {
    let Ok(spec) = &tree.spec else {
        return Vec::new();
    };
    let named = spec
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match &f.content {
            Content::Source(p) => Some((format!("files[{i}] ({})", f.path), p)),
            _ => None,
        })
        .chain(spec.units.iter().filter_map(|u| match &u.content {
            Some(Content::Source(p)) => Some((format!("unit {}", u.name.as_str()), p)),
            _ => None,
        }));
    let mut out = Vec::new();
    for (origin, path) in named {
        if let Err(e) = tree.release.blob_ref(path, MAX_FILE_LEN) {
            let hint = if e.reason == "no such file in the release" {
                " (commit it, or fix the path: sources are relative to the tree's top)"
            } else {
                ""
            };
            out.push(Finding::error(
                "sources",
                format!("{origin}: source {path}: {}{hint}", e.reason),
            ));
        }
    }
    out
}

/// The spec parses and validates.
pub const SPEC: TreeCheck = Check {
    name: "spec",
    about: "the node spec parses and validates",
    run: spec,
};

/// Every source is in the tree.
pub const SOURCES: TreeCheck = Check {
    name: "sources",
    about: "every source the spec names is a regular file of the tree, within the size limit",
    run: sources,
};

/// Every encrypted source parses as age and names a recipient.
pub const SECRETS: TreeCheck = Check {
    name: "secrets",
    about: "every encrypted source is an age file naming a recipient a node can hold (not decrypted)",
    run: secrets,
};

/// The encrypted sources, checked by `release::sealed` without decrypting.
pub fn secrets(tree: &Tree<'_>) -> Vec<Finding> {
    let Ok(spec) = &tree.spec else {
        return Vec::new();
    };
    match crate::release::sealed::check_sources(tree.release, spec) {
        Ok(_) => Vec::new(),
        Err(e) => vec![Finding::error("secrets", e.to_string())],
    }
}

/// A release a node would refuse, by its lint: the error findings.
#[derive(Debug, thiserror::Error)]
#[error("{}", refusal_line(.0))]
pub struct Refused(pub Vec<Finding>);

fn refusal_line(findings: &[Finding]) -> String {
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .collect();
    match errors.as_slice() {
        [] => "no error found".to_owned(),
        [one] => format!(
            "a node refuses this release: {}: {}",
            one.check, one.message
        ),
        [first, rest @ ..] => format!(
            "a node refuses this release: {}: {} (and {} more; driftless lint lists them)",
            first.check,
            first.message,
            rest.len()
        ),
    }
}
