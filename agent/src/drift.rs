//! Comparing the node with the manifest recorded when the release was
//! applied: content, kind, mode, owner, group, link target, presence. Used
//! by later boots and `driftless check`.

use serde::Serialize;

use crate::root::{Kind, Root, hex};
use crate::state::ManifestEntry;

/// One way the node differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The node path.
    pub path: String,
    /// What differs: `missing`, `kind`, `content`, `mode`, `owner`, `group`, `target`.
    pub aspect: &'static str,
    /// What the manifest says.
    pub expected: String,
    /// What the node has.
    pub found: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.aspect {
            "missing" => write!(f, "{}: missing (expected a {})", self.path, self.expected),
            "content" => write!(
                f,
                "{}: content changed (sha256 {}, expected {})",
                self.path, self.found, self.expected
            ),
            aspect => write!(
                f,
                "{}: {aspect} changed ({}, expected {})",
                self.path, self.found, self.expected
            ),
        }
    }
}

/// Compares every manifest entry with the node under `root`.
pub fn compare(root: &Root, manifest: &[ManifestEntry]) -> Vec<Difference> {
    manifest
        .iter()
        .flat_map(|entry| compare_one(root, entry))
        .collect()
}

fn compare_one(root: &Root, e: &ManifestEntry) -> Vec<Difference> {
    let diff = |aspect: &'static str, expected: String, found: String| Difference {
        path: e.path.to_string(),
        aspect,
        expected,
        found,
    };
    let observed = match root.observe(&e.path) {
        Ok(Some(o)) => o,
        Ok(None) => return vec![diff("missing", kind_name(e.kind).into(), "nothing".into())],
        Err(err) => return vec![diff("missing", kind_name(e.kind).into(), err.reason)],
    };
    if observed.kind != e.kind {
        return vec![diff(
            "kind",
            kind_name(e.kind).into(),
            kind_name(observed.kind).into(),
        )];
    }
    let mut out = Vec::new();
    if let Some(mode) = &e.mode {
        let found = format!("{:04o}", observed.mode);
        if &found != mode {
            out.push(diff("mode", mode.clone(), found));
        }
    }
    if let Some(uid) = e.uid.filter(|u| *u != observed.uid) {
        out.push(diff("owner", uid.to_string(), observed.uid.to_string()));
    }
    if let Some(gid) = e.gid.filter(|g| *g != observed.gid) {
        out.push(diff("group", gid.to_string(), observed.gid.to_string()));
    }
    if let Some(expected) = &e.sha256 {
        let found = root
            .sha256(&e.path)
            .map(|d| hex(&d))
            .unwrap_or_else(|err| err.reason);
        if &found != expected {
            out.push(diff("content", expected.clone(), found));
        }
    }
    if let Some(expected) = &e.target {
        let found = root.read_link(&e.path).unwrap_or_else(|err| err.reason);
        if &found != expected {
            out.push(diff("target", expected.clone(), found));
        }
    }
    out
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Directory => "directory",
        Kind::Link => "symlink",
        Kind::Other => "special file",
    }
}
