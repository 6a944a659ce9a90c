//! What a node of one release would become with another: both releases
//! planned by the node's own planner ([`crate::node::plan::desired`]) on
//! the same image accounts, and compared path by path (added, removed,
//! changed: kind, mode, owner, group, content, link target), with the
//! spec's other parts (units, users, groups, health checks, read-only
//! mounts, exclusive directories, attributes) compared by name. Text
//! content gets a unified diff; anything else its sizes and digests.
//! Nothing here writes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::node::accounts::AccountFiles;
use crate::node::plan::{self, Bytes, Desired, Entry};
use crate::record::secret::SecretBytes;
use crate::release::sealed::MAX_SEALED_LEN;
use crate::release::spec::NodeSpec;
use crate::release::tree::Release;
use crate::root::{Kind, Root, hex, sha256_of};
use crate::source::pack::ObjectId;
use crate::types::{NodePath, TreePath};

/// Text larger than this is compared by digest, not line by line.
pub const MAX_TEXT_DIFF: usize = 1024 * 1024;

/// How one path changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// The node path.
    pub path: NodePath,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The entry's kind in the new release (the old one's when removed).
    pub kind: Kind,
    /// What changed, one item each: `mode 0644 -> 0600`, `content`, …;
    /// for an added or removed entry, what it is.
    pub what: Vec<String>,
    /// The content's change, when the content changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentChange>,
    /// Where the entry comes from in the spec (`files[2]`, `unit app.service`).
    pub origin: String,
}

/// A file's content change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum ContentChange {
    /// Both sides are text: a unified diff.
    Text {
        /// The diff, with `---`/`+++` headers.
        unified: String,
    },
    /// Not text, or too large: sizes and digests.
    Binary {
        /// Old size.
        old_len: u64,
        /// New size.
        new_len: u64,
        /// Old SHA-256.
        old_sha256: String,
        /// New SHA-256.
        new_sha256: String,
    },
}

/// A change of the spec beyond its paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecChange {
    /// `unit`, `user`, `group`, `health`, `read-only`, `exclusive`, `xattrs`.
    pub section: &'static str,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// Its name (a unit, an account, a check, a path).
    pub name: String,
    /// What changed (`enabled true -> false`), or what it is.
    pub detail: String,
}

/// Everything that differs between two releases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseDiff {
    /// Paths, in path order.
    pub paths: Vec<PathChange>,
    /// The spec's other parts.
    pub spec: Vec<SpecChange>,
}

impl ReleaseDiff {
    /// True when the releases make the same node.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.spec.is_empty()
    }
}

/// The account files of the image root `base` (absent files read as
/// empty), or of a minimal image with root alone.
pub fn image_accounts(base: Option<&Path>) -> anyhow::Result<AccountFiles> {
    let Some(base) = base else {
        return Ok(AccountFiles {
            passwd: "root:x:0:0:root:/root:/bin/sh\n".into(),
            group: "root:x:0:\n".into(),
            shadow: None,
            gshadow: None,
        });
    };
    let root = Root::open(base)?;
    let read = |p: &str| -> anyhow::Result<Option<String>> {
        let path = NodePath::new(p).map_err(anyhow::Error::msg)?;
        Ok(root
            .read_optional(&path, 16 * 1024 * 1024)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    Ok(AccountFiles {
        passwd: read("/etc/passwd")?.unwrap_or_default(),
        group: read("/etc/group")?.unwrap_or_default(),
        shadow: read("/etc/shadow")?,
        gshadow: read("/etc/gshadow")?,
    })
}

/// One release, parsed and planned.
struct Side<'a> {
    release: &'a Release<'a>,
    spec: NodeSpec,
    desired: BTreeMap<NodePath, Desired>,
}

fn side<'a>(
    release: &'a Release<'a>,
    spec_path: &TreePath,
    accounts: &AccountFiles,
) -> anyhow::Result<Side<'a>> {
    let spec = release.spec(spec_path)?;
    let mut read = |p: &TreePath| release.content(p).map_err(|e| e.to_string());
    let mut blob = |p: &TreePath| {
        release
            .blob_ref(p, crate::release::spec::MAX_FILE_LEN)
            .map_err(|e| e.to_string())
    };
    let (desired, _) = plan::desired(&spec, accounts, &mut read, &mut blob)?;
    let desired = desired
        .into_iter()
        // The account files follow from the users and groups, compared below.
        .filter(|d| d.managed)
        .map(|d| (d.path.clone(), d))
        .collect();
    Ok(Side {
        release,
        spec,
        desired,
    })
}

/// What a node of `old` would become with `new`: both planned with the
/// spec at `spec_path` on the image `accounts`.
pub fn between(
    old: &Release<'_>,
    new: &Release<'_>,
    spec_path: &TreePath,
    accounts: &AccountFiles,
) -> anyhow::Result<ReleaseDiff> {
    let (old, new) = (
        side(old, spec_path, accounts)?,
        side(new, spec_path, accounts)?,
    );
    let mut paths = Vec::new();
    let all: BTreeSet<&NodePath> = old.desired.keys().chain(new.desired.keys()).collect();
    for path in all {
        match (old.desired.get(path), new.desired.get(path)) {
            (None, Some(n)) => paths.push(PathChange {
                path: path.clone(),
                change: "added",
                kind: n.entry.kind(),
                what: vec![describe(&n.entry)],
                content: None,
                origin: n.origin.clone(),
            }),
            (Some(o), None) => paths.push(PathChange {
                path: path.clone(),
                change: "removed",
                kind: o.entry.kind(),
                what: vec![describe(&o.entry)],
                content: None,
                origin: o.origin.clone(),
            }),
            (Some(o), Some(n)) => {
                if let Some(change) = changed(path, (&old, o), (&new, n))? {
                    paths.push(change);
                }
            }
            (None, None) => {}
        }
    }
    Ok(ReleaseDiff {
        paths,
        spec: spec_changes(&old.spec, &new.spec),
    })
}

/// An entry for people: `file, 0644 0:0, 12 bytes`.
fn describe(entry: &Entry) -> String {
    match entry {
        Entry::Directory { mode, uid, gid } => format!("directory, {mode:04o} {uid}:{gid}"),
        Entry::File {
            content,
            mode,
            uid,
            gid,
            ..
        } => format!("file, {mode:04o} {uid}:{gid}, {} bytes", content.len()),
        Entry::Link { target } => format!("link -> {target}"),
    }
}

fn changed(
    path: &NodePath,
    (old_side, old): (&Side<'_>, &Desired),
    (new_side, new): (&Side<'_>, &Desired),
) -> anyhow::Result<Option<PathChange>> {
    let mut what = Vec::new();
    let mut content = None;
    let mut owner = |name: &str, a: u32, b: u32, octal: bool| {
        if a != b {
            what.push(if octal {
                format!("{name} {a:04o} -> {b:04o}")
            } else {
                format!("{name} {a} -> {b}")
            });
        }
    };
    match (&old.entry, &new.entry) {
        (
            Entry::Directory {
                mode: m1,
                uid: u1,
                gid: g1,
            },
            Entry::Directory {
                mode: m2,
                uid: u2,
                gid: g2,
            },
        ) => {
            owner("mode", *m1, *m2, true);
            owner("owner", *u1, *u2, false);
            owner("group", *g1, *g2, false);
        }
        (
            Entry::File {
                content: c1,
                mode: m1,
                uid: u1,
                gid: g1,
                ..
            },
            Entry::File {
                content: c2,
                mode: m2,
                uid: u2,
                gid: g2,
                ..
            },
        ) => {
            owner("mode", *m1, *m2, true);
            owner("owner", *u1, *u2, false);
            owner("group", *g1, *g2, false);
            let same_blob = matches!((c1, c2), (Bytes::Blob { id: a, .. }, Bytes::Blob { id: b, .. }) if a == b);
            if matches!(c1, Bytes::Secret(_)) || matches!(c2, Bytes::Secret(_)) {
                // Never a secret's content: only whether its ciphertext moved.
                if ciphertext(old_side.release, c1)? != ciphertext(new_side.release, c2)? {
                    what.push(
                        "secret (its ciphertext changed; contents are never shown)".to_owned(),
                    );
                }
            } else if !same_blob {
                let a = bytes(old_side.release, c1)?;
                let b = bytes(new_side.release, c2)?;
                if a != b {
                    what.push("content".to_owned());
                    content = Some(content_change(path, old_side, new_side, &a, &b));
                }
            }
        }
        (Entry::Link { target: t1 }, Entry::Link { target: t2 }) => {
            if t1 != t2 {
                what.push(format!("target {t1} -> {t2}"));
            }
        }
        (o, n) => what.push(format!("kind {} -> {}", describe(o), describe(n))),
    }
    if old.lock != new.lock {
        what.push(if new.lock {
            "now locked (no longer mutable)".to_owned()
        } else {
            "now mutable (no longer locked)".to_owned()
        });
    }
    if old.exclusive != new.exclusive {
        what.push(format!("exclusive {} -> {}", old.exclusive, new.exclusive));
    }
    if what.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathChange {
        path: path.clone(),
        change: "changed",
        kind: new.entry.kind(),
        what,
        content,
        origin: new.origin.clone(),
    }))
}

/// A secret's ciphertext as the release holds it (any other file's bytes,
/// so that a file that became a secret differs).
fn ciphertext(release: &Release<'_>, content: &Bytes) -> anyhow::Result<Vec<u8>> {
    match content {
        Bytes::Secret(SecretBytes::Sealed { source, .. }) => {
            Ok(release.read(source, MAX_SEALED_LEN)?)
        }
        Bytes::Secret(SecretBytes::Open { .. }) => {
            anyhow::bail!("a secret was opened for a diff: diffs never decrypt")
        }
        other => bytes(release, other),
    }
}

/// A file's bytes: held by the plan, or read from the release.
fn bytes(release: &Release<'_>, content: &Bytes) -> anyhow::Result<Vec<u8>> {
    match content {
        Bytes::Held(b) => Ok(b.clone()),
        Bytes::Secret(_) => anyhow::bail!("a secret's content is never read for a diff"),
        Bytes::Blob { id, .. } => {
            let oid =
                ObjectId::from_hex(id).ok_or_else(|| anyhow::anyhow!("{id:?} is not a blob id"))?;
            release.blob_bytes(&oid).map_err(anyhow::Error::msg)
        }
    }
}

fn content_change(
    path: &NodePath,
    old: &Side<'_>,
    new: &Side<'_>,
    a: &[u8],
    b: &[u8],
) -> ContentChange {
    match (text(a), text(b)) {
        (Some(x), Some(y)) => {
            let unified = similar::TextDiff::from_lines(x, y)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("{}:{path}", old.release.verified.name),
                    &format!("{}:{path}", new.release.verified.name),
                )
                .to_string();
            ContentChange::Text { unified }
        }
        _ => ContentChange::Binary {
            old_len: a.len() as u64,
            new_len: b.len() as u64,
            old_sha256: hex(&sha256_of(a)),
            new_sha256: hex(&sha256_of(b)),
        },
    }
}

/// `bytes` as text, when they are: UTF-8 without NUL, not too large.
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_TEXT_DIFF || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The spec's parts beyond paths, compared by name.
fn spec_changes(old: &NodeSpec, new: &NodeSpec) -> Vec<SpecChange> {
    let mut out = Vec::new();
    let units = |s: &NodeSpec| -> BTreeMap<String, serde_json::Value> {
        s.units
            .iter()
            .map(|u| {
                (
                    u.name.as_str().to_owned(),
                    serde_json::json!({ "enabled": u.enabled, "started": u.started, "masked": u.masked }),
                )
            })
            .collect()
    };
    by_name(&mut out, "unit", &units(old), &units(new));
    let users = |s: &NodeSpec| -> BTreeMap<String, serde_json::Value> {
        s.users
            .iter()
            .map(|u| (u.name.as_str().to_owned(), json_of(u)))
            .collect()
    };
    by_name(&mut out, "user", &users(old), &users(new));
    let groups = |s: &NodeSpec| -> BTreeMap<String, serde_json::Value> {
        s.groups
            .iter()
            .map(|g| (g.name.as_str().to_owned(), json_of(g)))
            .collect()
    };
    by_name(&mut out, "group", &groups(old), &groups(new));
    let health = |s: &NodeSpec| -> BTreeMap<String, serde_json::Value> {
        s.health
            .iter()
            .map(|h| {
                (
                    crate::node::health::describe(&h.probe),
                    serde_json::json!({ "timeout": h.timeout, "interval": h.interval }),
                )
            })
            .collect()
    };
    by_name(&mut out, "health", &health(old), &health(new));
    let paths = |list: &[NodePath]| -> BTreeMap<String, serde_json::Value> {
        list.iter()
            .map(|p| (p.to_string(), serde_json::Value::Null))
            .collect()
    };
    by_name(
        &mut out,
        "read-only",
        &paths(&old.lock.read_only),
        &paths(&new.lock.read_only),
    );
    by_name(
        &mut out,
        "exclusive",
        &paths(&old.exclusive),
        &paths(&new.exclusive),
    );
    let xattrs = |s: &NodeSpec| -> BTreeMap<String, serde_json::Value> {
        s.xattrs
            .iter()
            .map(|x| (json_of(x).to_string(), serde_json::Value::Null))
            .collect()
    };
    by_name(&mut out, "xattrs", &xattrs(old), &xattrs(new));
    out
}

fn json_of<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Added, removed and changed names between two maps of `section`; a
/// change lists the fields that differ (`enabled true -> false`).
fn by_name(
    out: &mut Vec<SpecChange>,
    section: &'static str,
    old: &BTreeMap<String, serde_json::Value>,
    new: &BTreeMap<String, serde_json::Value>,
) {
    // What is set: defaults (null, false, empty lists) left out.
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| {
                !matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false))
                    && v.as_array().is_none_or(|a| !a.is_empty())
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    };
    for (name, value) in new.iter().filter(|(n, _)| !old.contains_key(*n)) {
        out.push(SpecChange {
            section,
            change: "added",
            name: name.clone(),
            detail: show(value),
        });
    }
    for (name, value) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        out.push(SpecChange {
            section,
            change: "removed",
            name: name.clone(),
            detail: show(value),
        });
    }
    for (name, a) in old {
        let Some(b) = new.get(name).filter(|b| *b != a) else {
            continue;
        };
        let fields = match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter()
                    .filter(|k| x.get(*k) != y.get(*k))
                    .map(|k| {
                        let v = |m: &serde_json::Map<String, serde_json::Value>| {
                            m.get(k).map_or("none".to_owned(), ToString::to_string)
                        };
                        format!("{k} {} -> {}", v(x), v(y))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            (a, b) => format!("{a} -> {b}"),
        };
        out.push(SpecChange {
            section,
            change: "changed",
            name: name.clone(),
            detail: fields,
        });
    }
}
