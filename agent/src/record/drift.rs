//! Comparing the node with the manifest recorded when the release was
//! applied: content, kind, mode, owner, group, link target, presence, the
//! immutable attribute and security attributes of each path, the entries of
//! exclusive directories, and the rest of the effective configuration
//! (`accounts`, unit `units` overrides, `xattrs`, `mounts`: one file each).
//! Used by later boots, `driftless check` and the detector.

pub mod accounts;
pub mod mounts;
pub mod units;
pub mod xattrs;

use std::collections::HashSet;

use serde::Serialize;

use crate::record::state::LockStatus;
use crate::record::state::{ManifestEntry, State};
use crate::root::attr as lock;
use crate::root::{Kind, Root, hex};
use crate::types::NodePath;

/// One way the node differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The node path.
    pub path: String,
    /// What differs: `missing`, `kind`, `content`, `secret`, `mode`, `owner`,
    /// `group`, `target`, `lock`, `mount`, `unmanaged`, or `path` (the way to
    /// it now passes a symlink or a directory someone else owns).
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
            "path" => write!(f, "{}: cannot be checked: {}", self.path, self.found),
            "mounted" => write!(
                f,
                "{}: what is mounted there changed ({}, expected {})",
                self.path, self.found, self.expected
            ),
            "override" => write!(
                f,
                "{}: {}, overriding {}",
                self.path, self.found, self.expected
            ),
            "added" => write!(f, "{}: added ({})", self.path, self.found),
            "xattr" => write!(
                f,
                "{}: security attributes changed ({}, expected {})",
                self.path, self.found, self.expected
            ),
            "record" => write!(
                f,
                "{}: the record differs from the signed release ({}, the release says {})",
                self.path, self.found, self.expected
            ),
            "release" => write!(
                f,
                "{}: differs from the signed release ({}, the release has {})",
                self.path, self.found, self.expected
            ),
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

/// The parts of the effective configuration beyond the manifest's paths,
/// each compared as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Unit files and drop-ins that override a managed unit.
    Units,
    /// The account tables.
    Accounts,
    /// The mounts at, under and above managed paths (read-only ones included).
    Mounts,
}

/// The node paths the manifest manages, for the checks that need to tell
/// a managed path from another.
pub fn managed_paths(state: &State) -> HashSet<String> {
    state.manifest.iter().map(|e| e.path.to_string()).collect()
}

/// Compares the node under `root` with its recorded state: every manifest
/// entry, the entries of exclusive directories, and every [`Part`].
/// Paths are resolved strictly, with the owners the manifest records for
/// its directories (see [`declare`]).
pub fn compare(root: &Root, state: &State) -> Vec<Difference> {
    declare(root, state);
    let managed = managed_paths(state);
    let entries: Vec<&ManifestEntry> = state.manifest.iter().collect();
    let mut out = compare_entries(root, state, &entries, &managed);
    for part in [Part::Units, Part::Accounts, Part::Mounts] {
        out.extend(compare_part(root, state, part, &managed));
    }
    out
}

/// Tells `root` who may own the directories on the way to managed paths:
/// root, and the owner the manifest records for each managed directory.
/// [`compare_entries`] and [`compare_part`] rely on it having been called
/// with the whole state.
pub fn declare(root: &Root, state: &State) {
    root.declare_owners(
        state
            .manifest
            .iter()
            .filter(|e| e.kind == Kind::Directory)
            .filter_map(|e| e.uid.map(|uid| (e.path.clone(), uid))),
    );
}

/// Compares some manifest entries (each on its own, and the listing of
/// those that are exclusive directories against every managed path).
pub fn compare_entries(
    root: &Root,
    state: &State,
    entries: &[&ManifestEntry],
    managed: &HashSet<String>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend(compare_one(root, entry));
        if entry.lock != LockStatus::Exempt("mutable directory".into()) {
            let recorded = state.effective.xattrs.get(entry.path.as_str());
            out.extend(xattrs::compare_entry(root, entry, recorded));
        }
        if entry.exclusive && entry.kind == Kind::Directory {
            out.extend(unmanaged_in(root, &entry.path, managed));
        }
    }
    out
}

/// Compares one [`Part`] of the effective configuration.
pub fn compare_part(
    root: &Root,
    state: &State,
    part: Part,
    managed: &HashSet<String>,
) -> Vec<Difference> {
    let effective = &state.effective;
    match part {
        Part::Units => units::compare(root, &effective.units, &effective.overrides, &|p: &str| {
            managed.contains(p)
        }),
        Part::Accounts => effective
            .accounts
            .as_ref()
            .map(|a| accounts::compare(root, a))
            .unwrap_or_default(),
        Part::Mounts => {
            let mut out = read_only_mounts(root, state);
            if let Some(recorded) = &effective.mounts {
                out.extend(mounts::compare(root, state, recorded));
            }
            out
        }
    }
}

/// The read-only mounts that are not (or no longer) read-only.
fn read_only_mounts(root: &Root, state: &State) -> Vec<Difference> {
    let mut out = Vec::new();
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

/// Entries inside the exclusive directory `dir` that are not managed
/// paths. `managed` is every managed path of the node, not only those filed
/// under `dir`: a check of part of the manifest must not take the rest for
/// strangers.
pub fn unmanaged_in(root: &Root, dir: &NodePath, managed: &HashSet<String>) -> Vec<Difference> {
    let Ok(names) = root.list_dir(dir) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|name| dir.join(&name).ok())
        .filter(|child| !managed.contains(child.as_str()))
        .map(|child| Difference {
            path: child.to_string(),
            aspect: "unmanaged",
            expected: format!("nothing unmanaged in exclusive directory {dir}"),
            found: "an entry".into(),
        })
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
        Err(err) => {
            let expected = format!("a {} reached without symlinks", kind_name(e.kind));
            return vec![diff("path", expected, err.reason)];
        }
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
