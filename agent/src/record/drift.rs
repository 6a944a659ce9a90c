//! Comparing the node with the manifest recorded when the release was
//! applied: content, kind, mode, owner, group, link target, presence. Used
//! by later boots and `driftless check`.

use serde::Serialize;

use crate::record::state::LockStatus;
use crate::record::state::{ManifestEntry, State};
use crate::root::attr as lock;
use crate::root::{Kind, Root, hex};

/// One way the node differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The node path.
    pub path: String,
    /// What differs: `missing`, `kind`, `content`, `secret`, `mode`, `owner`, `group`, `target`.
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
            "unmanaged" => write!(f, "{}: not managed, inside exclusive directory", self.path),
            "lock" => write!(
                f,
                "{}: lock removed (immutable attribute cleared)",
                self.path
            ),
            "mount" => write!(f, "{}: no longer a read-only mount", self.path),
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

/// Compares the node under `root` with its recorded state: every manifest
/// entry, the entries of exclusive directories, and the read-only mounts.
pub fn compare(root: &Root, state: &State) -> Vec<Difference> {
    let mut out: Vec<Difference> = state
        .manifest
        .iter()
        .flat_map(|entry| compare_one(root, entry))
        .collect();
    out.extend(unmanaged_entries(root, &state.manifest));
    for mount in state
        .read_only
        .iter()
        .filter(|m| m.lock == LockStatus::Locked)
    {
        if !lock::is_read_only_mount(root, &mount.path) {
            out.push(Difference {
                path: mount.path.to_string(),
                aspect: "mount",
                expected: "read-only bind mount".into(),
                found: "not mounted read-only".into(),
            });
        }
    }
    out
}

/// Entries inside exclusive directories that the manifest does not list.
fn unmanaged_entries(root: &Root, manifest: &[ManifestEntry]) -> Vec<Difference> {
    let managed: std::collections::BTreeSet<&str> =
        manifest.iter().map(|e| e.path.as_str()).collect();
    let mut out = Vec::new();
    for dir in manifest
        .iter()
        .filter(|e| e.exclusive && e.kind == Kind::Directory)
    {
        let Ok(names) = root.list_dir(&dir.path) else {
            continue;
        };
        for name in names {
            let Ok(child) = dir.path.join(&name) else {
                continue;
            };
            if !managed.contains(child.as_str()) {
                out.push(Difference {
                    path: child.to_string(),
                    aspect: "unmanaged",
                    expected: format!("nothing unmanaged in exclusive directory {}", dir.path),
                    found: "an entry".into(),
                });
            }
        }
    }
    out
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
    if let Some(secret) = &e.secret {
        if let Some(found) = crate::record::secret::content_differs(root, &e.path, secret) {
            let expected = format!("hmac-sha256 {}", secret.hmac_sha256);
            out.push(diff("secret", expected, found));
        }
    }
    if e.lock == LockStatus::Locked && matches!(e.kind, Kind::File | Kind::Directory) {
        match lock::is_immutable(root, &e.path, e.kind) {
            Ok(true) => {}
            Ok(false) => out.push(diff("lock", "immutable".into(), "mutable".into())),
            Err(err) => out.push(diff("lock", "immutable".into(), err.desc().into())),
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
