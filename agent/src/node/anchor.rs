//! Anchoring the record in the signed release. `state.json` is only a
//! file: whoever can clear its immutable attribute can rewrite a digest to
//! match a changed file, and every comparison with it then reports clean.
//! So apply keeps the release's signed tag, its commit, its trees and the
//! blobs planning reads ([`objects`]), and [`verify`] checks the signature
//! again, plans the release again from those objects, and compares the
//! result with the recorded manifest, and each release file on the node
//! with its blob in the signed tree (by git's blob id). It runs at every
//! boot (apply on an applied node), in `driftless check`, and in the
//! watcher at its start and every `drift.verify_interval`; the last run is
//! recorded in `/var/lib/driftless/verified.json` for `driftless status`.
//!
//! What it cannot anchor: the agent's own config and trust files (the
//! signature is checked against them) and what apply took from the node
//! (ids allocated in the account files, the image's accounts, mounts).
//! Those rest on the record and on their locks.

pub mod objects;

use std::io::Read as _;
use std::os::fd::AsFd as _;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::node::accounts::AccountFiles;
use crate::node::effective::NODE_ORIGINS;
use crate::node::plan;
use crate::node::stage::ApplyError;
use crate::record::drift::Difference;
use crate::record::state::{LockStatus, ManifestEntry, State};
use crate::release::spec::{MAX_SPEC_LEN, NodeSpec};
use crate::release::tree::{BlobRef, Release};
use crate::root::{Kind, Root};
use crate::source::pack::{ObjectFormat, ObjectId, TreeEntries};
use crate::types::{NodePath, TreePath};
use objects::OBJECTS_PATH;

/// Where the last verification is recorded.
pub const VERIFIED_PATH: &str = "/var/lib/driftless/verified.json";

/// The last verification of the record against the signed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// When it ran.
    pub at: Timestamp,
    /// Who ran it: `apply` or `watch`.
    pub by: String,
    /// The release it verified against.
    pub release: String,
    /// How many differences it found.
    pub differences: usize,
    /// The first of them, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

fn node_path(text: &str) -> Result<NodePath, ApplyError> {
    NodePath::new(text).map_err(ApplyError)
}

/// Reads the account files under the root, as planning does.
fn account_files(root: &Root) -> Result<AccountFiles, String> {
    let read = |p: &str| -> Result<Option<String>, String> {
        let path = NodePath::new(p)?;
        root.read_optional(&path, 16 * 1024 * 1024)
            .map_err(|e| e.to_string())?
            .map(|b| String::from_utf8(b).map_err(|_| format!("{p} is not UTF-8")))
            .transpose()
    };
    Ok(AccountFiles {
        passwd: read("/etc/passwd")?.unwrap_or_default(),
        group: read("/etc/group")?.unwrap_or_default(),
        shadow: read("/etc/shadow")?,
        gshadow: read("/etc/gshadow")?,
    })
}

/// Keeps the release's objects on the node (0600: the spec may hold
/// inline secrets) and returns the file's manifest entry, to be locked
/// with the rest.
pub fn keep(
    root: &Root,
    release: &Release<'_>,
    spec: &NodeSpec,
    spec_path: &TreePath,
) -> Result<ManifestEntry, ApplyError> {
    let id = |hex: &str| {
        ObjectId::from_hex(hex).ok_or_else(|| ApplyError(format!("{hex:?} is not an object id")))
    };
    let raw = |oid: &ObjectId| {
        release
            .raw_object(oid)
            .map_err(|e| ApplyError(format!("keeping object {oid} of the release: {e}")))
    };
    let mut file = Vec::new();
    let verified = &release.verified;
    for hex in [&verified.object, &verified.commit] {
        let (kind, bytes) = raw(&id(hex)?)?;
        objects::encode(&mut file, kind, &bytes);
    }
    let mut trees = vec![id(&verified.tree)?];
    let mut walked = 0usize;
    while let Some(tree) = trees.pop() {
        let (kind, bytes) = raw(&tree)?;
        for entry in TreeEntries::new(&bytes, tree.format()) {
            let (mode, _, child) = entry.map_err(|e| ApplyError(format!("tree {tree}: {e}")))?;
            walked += 1;
            if mode == 0o40000 && walked <= crate::source::pack::MAX_TREE_ENTRIES {
                trees.push(child);
            }
        }
        objects::encode(&mut file, kind, &bytes);
    }
    // The blobs planning reads: the spec, and what it reads while planning.
    let mut read_paths = vec![spec_path.clone()];
    let accounts = account_files(root).map_err(ApplyError)?;
    let mut read = |p: &TreePath| {
        read_paths.push(p.clone());
        release.content(p).map_err(|e| e.to_string())
    };
    let mut blob = |p: &TreePath| {
        release
            .blob_ref(p, crate::release::spec::MAX_FILE_LEN)
            .map_err(|e| e.to_string())
    };
    plan::desired(spec, &accounts, &mut read, &mut blob).map_err(|e| ApplyError(e.0))?;
    read_paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    read_paths.dedup_by(|a, b| a.as_str() == b.as_str());
    for path in &read_paths {
        let blob = release
            .blob_ref(path, crate::release::spec::MAX_FILE_LEN)
            .map_err(|e| ApplyError(e.to_string()))?;
        let (kind, bytes) = raw(&id(&blob.id)?)?;
        objects::encode(&mut file, kind, &bytes);
    }
    if file.len() as u64 > objects::MAX_OBJECTS_LEN {
        return Err(ApplyError(format!(
            "the release's trees, spec and unit files take {} bytes, more than the {} kept to \
             re-verify the node",
            file.len(),
            objects::MAX_OBJECTS_LEN
        )));
    }
    let path = node_path(OBJECTS_PATH)?;
    crate::root::attr::clear_for_rewrite(root, &path).map_err(|e| ApplyError(e.to_string()))?;
    root.write_file(&path, &file, 0o600, 0, 0)
        .map_err(|e| ApplyError(e.to_string()))?;
    Ok(ManifestEntry {
        path,
        kind: Kind::File,
        mode: Some("0600".into()),
        uid: Some(0),
        gid: Some(0),
        sha256: Some(crate::root::hex(&crate::root::sha256_of(&file))),
        target: None,
        origin: "agent".into(),
        lock: LockStatus::Pending,
        exclusive: false,
        secret: None,
    })
}

/// A difference that says the record could not be checked at all.
fn unverifiable(reason: String) -> Difference {
    Difference {
        path: OBJECTS_PATH.into(),
        aspect: "record",
        expected: "the signed release's objects, verifying".into(),
        found: reason,
    }
}

/// Verifies the record against the signed release: the kept tag's
/// signature (at the time apply verified it), the release it names, the
/// manifest planned again from the kept spec, and each release file on the
/// node against its blob. Every disagreement is a difference.
pub fn verify(root: &Root, state: &State, config: &AgentConfig) -> Vec<Difference> {
    match verify_inner(root, state, config) {
        Ok(found) => found,
        Err(reason) => vec![unverifiable(reason)],
    }
}

fn verify_inner(
    root: &Root,
    state: &State,
    config: &AgentConfig,
) -> Result<Vec<Difference>, String> {
    let path = NodePath::new(OBJECTS_PATH)?;
    let data = root
        .read(&path, objects::MAX_OBJECTS_LEN)
        .map_err(|e| e.reason)?;
    let pinned = &state.release;
    let tag_id = ObjectId::from_hex(&pinned.tag_object).ok_or_else(|| {
        format!(
            "the record's tag object {:?} is not an id",
            pinned.tag_object
        )
    })?;
    // Every kept object is hashed in the format of the signed tag's id.
    let kept = objects::decode(&data, tag_id.format())?;
    let trust = config
        .load_trust(root.path())
        .map_err(|e| format!("trust files: {e}"))?;
    let tag = objects::get(&kept, &tag_id, "tag")?;
    let verified = crate::verify::verify_tag_raw(
        &pinned.tag,
        &pinned.tag_object,
        "tag",
        tag,
        |commit| {
            let id = ObjectId::from_hex_in(tag_id.format(), commit)?;
            let raw = objects::get(&kept, &id, "commit").ok()?;
            crate::verify::object::commit_tree(raw, tag_id.format()).ok()
        },
        &trust,
        state.started_at,
    )
    .map_err(|e| format!("tag {}: {e}", pinned.tag))?;
    let mut out = Vec::new();
    let record = |what: &str, found: &str, expected: &str| Difference {
        path: crate::record::state::STATE_PATH.into(),
        aspect: "record",
        expected: format!("{what} {expected}"),
        found: format!("{what} {found}"),
    };
    for (what, found, expected) in [
        ("commit", &pinned.commit, &verified.commit),
        ("tree", &pinned.tree, &verified.tree),
        ("signer", &pinned.fingerprint, &verified.fingerprint),
    ] {
        if found != expected {
            out.push(record(what, found, expected));
        }
    }
    let tree = ObjectId::from_hex_in(tag_id.format(), &verified.tree).ok_or("a bad tree id")?;
    let index = objects::index(&kept, &tree)?;
    let read = |p: &TreePath, limit: usize| -> Result<Vec<u8>, String> {
        let (id, _) = index
            .get(p.as_str())
            .ok_or_else(|| format!("{p}: not in the signed tree"))?;
        let bytes = objects::get(&kept, id, "blob")?;
        if bytes.len() > limit {
            return Err(format!("{p}: larger than {limit} bytes"));
        }
        Ok(bytes.to_vec())
    };
    let spec_text = read(&config.release.spec, MAX_SPEC_LEN)?;
    let spec = NodeSpec::parse(
        &String::from_utf8_lossy(&spec_text),
        config.release.spec.as_str(),
    )
    .map_err(|e| e.to_string())?;
    let accounts = account_files(root)?;
    let mut read_content = |p: &TreePath| read(p, crate::release::spec::MAX_FILE_LEN as usize);
    let mut blob = |p: &TreePath| {
        index
            .get(p.as_str())
            .map(|(id, _)| BlobRef {
                id: id.to_hex(),
                len: 0,
            })
            .ok_or_else(|| format!("{p}: not in the signed tree"))
    };
    let (desired, _) = plan::desired(&spec, &accounts, &mut read_content, &mut blob)
        .map_err(|e| format!("planning the signed release again: {}", e.0))?;
    out.extend(compare_manifest(root, state, &desired));
    Ok(out)
}

/// The recorded manifest against the manifest planned from the signed
/// release, and each release file on the node against its blob.
fn compare_manifest(root: &Root, state: &State, desired: &[plan::Desired]) -> Vec<Difference> {
    let mut out = Vec::new();
    let diff = |path: &str, aspect: &'static str, expected: String, found: String| Difference {
        path: path.to_owned(),
        aspect,
        expected,
        found,
    };
    let recorded: std::collections::HashMap<&str, &ManifestEntry> = state
        .manifest
        .iter()
        .filter(|e| !NODE_ORIGINS.contains(&e.origin.as_str()))
        .filter(|e| !crate::node::secrets::is_node_entry(e))
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for d in desired.iter().filter(|d| d.managed) {
        let path = d.path.as_str();
        seen.insert(path);
        let want = ManifestEntry::from(d);
        let Some(have) = recorded.get(path) else {
            out.push(diff(
                path,
                "record",
                "a managed path".into(),
                "not recorded".into(),
            ));
            continue;
        };
        let fields = [
            (
                "kind",
                format!("{:?}", want.kind),
                format!("{:?}", have.kind),
            ),
            (
                "mode",
                format!("{:?}", want.mode),
                format!("{:?}", have.mode),
            ),
            (
                "owner",
                format!("{:?}", want.uid),
                format!("{:?}", have.uid),
            ),
            (
                "group",
                format!("{:?}", want.gid),
                format!("{:?}", have.gid),
            ),
            (
                "target",
                format!("{:?}", want.target),
                format!("{:?}", have.target),
            ),
            (
                "exclusive",
                want.exclusive.to_string(),
                have.exclusive.to_string(),
            ),
            (
                "locked",
                d.lock.to_string(),
                (have.lock != LockStatus::Exempt("mutable directory".into())).to_string(),
            ),
        ];
        for (what, expected, found) in fields {
            if expected != found {
                out.push(diff(
                    path,
                    "record",
                    format!("{what} {expected}"),
                    format!("{what} {found}"),
                ));
            }
        }
        if let plan::Entry::File {
            content, sha256, ..
        } = &d.entry
        {
            match (sha256, content) {
                (Some(digest), _) => {
                    let expected = crate::root::hex(digest);
                    if have.sha256.as_deref() != Some(expected.as_str()) {
                        out.push(diff(
                            path,
                            "record",
                            format!("sha256 {expected}"),
                            format!("sha256 {}", have.sha256.as_deref().unwrap_or("none")),
                        ));
                    }
                }
                (None, plan::Bytes::Blob { id, .. }) => {
                    out.extend(compare_blob(root, &d.path, id, have));
                }
                // A secret's digest is keyed and its plaintext is the
                // node's: the record must name the release's ciphertext.
                (None, plan::Bytes::Secret(secret)) => {
                    let expected = secret.source();
                    let found = have.secret.as_ref().map(|s| s.source.as_str());
                    if found != Some(expected) {
                        out.push(diff(
                            path,
                            "record",
                            format!("secret from {expected}"),
                            format!("secret from {}", found.unwrap_or("none")),
                        ));
                    }
                }
                (None, plan::Bytes::Held(_)) => {}
            }
        }
    }
    // The parents apply made for the release's paths (root 0755, not
    // locked) are the node's, not the release's: recorded, and allowed
    // exactly as apply makes them.
    let ancestors: std::collections::HashSet<NodePath> = desired
        .iter()
        .filter(|d| d.managed)
        .flat_map(|d| d.path.ancestors())
        .collect();
    for (path, have) in recorded.iter().filter(|(p, _)| !seen.contains(*p)) {
        if is_implicit_parent(have, &ancestors) {
            continue;
        }
        out.push(diff(
            path,
            "record",
            "not managed by the release".into(),
            "recorded".into(),
        ));
    }
    out
}

/// True for a recorded parent that apply made for one of the release's
/// paths, with the owner, mode and lock apply gives such a parent.
fn is_implicit_parent(
    entry: &ManifestEntry,
    ancestors: &std::collections::HashSet<NodePath>,
) -> bool {
    entry.origin.starts_with(plan::IMPLICIT_ORIGIN)
        && entry.kind == Kind::Directory
        && ancestors.contains(&entry.path)
        && entry.mode.as_deref() == Some("0755")
        && (entry.uid, entry.gid) == (Some(0), Some(0))
        && entry.lock != LockStatus::Locked
}

/// A release file on the node against its blob in the signed tree: a file
/// that is not the blob is drift whatever the record says; one that is
/// must have the digest the record gives it.
fn compare_blob(root: &Root, path: &NodePath, blob: &str, have: &ManifestEntry) -> Vec<Difference> {
    let Ok(fd) = root.open_raw(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOFOLLOW,
    ) else {
        // Missing or not a file: the manifest's own comparison says so.
        return Vec::new();
    };
    let Ok(stat) = nix::sys::stat::fstat(fd.as_fd()) else {
        return Vec::new();
    };
    let mut file = std::fs::File::from(fd);
    let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    // The blob's own format: a record of a SHA-256 release names 64 digits.
    let format = ObjectFormat::of_hex_len(blob.len()).unwrap_or_default();
    let id = objects::blob_id(format, stat.st_size as u64, &mut |sink| {
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            sha256.update(&buf[..n]);
            sink(&buf[..n]);
        }
        if total != stat.st_size as u64 {
            return Err(std::io::Error::other("the file changed while it was read"));
        }
        Ok(())
    });
    let Ok(id) = id else {
        return Vec::new();
    };
    if id.to_hex() != blob {
        return vec![Difference {
            path: path.to_string(),
            aspect: "release",
            expected: format!("git blob {blob}"),
            found: format!("git blob {}", id.to_hex()),
        }];
    }
    let digest = crate::root::hex(sha256.finish().as_ref());
    if have.sha256.as_deref() != Some(digest.as_str()) {
        return vec![Difference {
            path: path.to_string(),
            aspect: "record",
            expected: format!("sha256 {digest}"),
            found: format!("sha256 {}", have.sha256.as_deref().unwrap_or("none")),
        }];
    }
    Vec::new()
}

/// Records a verification's outcome for `driftless status` (best effort:
/// a failure to write is logged).
pub fn note(root: &Root, state: &State, by: &str, found: &[Difference]) {
    let record = Verification {
        at: Timestamp::now(),
        by: by.to_owned(),
        release: state.release.tag.clone(),
        differences: found.len(),
        first: found.first().map(ToString::to_string),
    };
    let written = NodePath::new(VERIFIED_PATH)
        .map_err(|e| e.to_string())
        .and_then(|path| {
            let mut bytes = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
            bytes.push(b'\n');
            root.write_file(&path, &bytes, 0o644, 0, 0)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!("cannot record the verification against the signed release: {e}");
    }
}

/// The last verification recorded, if any.
pub fn last(root: &Root) -> Option<Verification> {
    let path = NodePath::new(VERIFIED_PATH).ok()?;
    let bytes = root.read_optional(&path, 64 * 1024).ok()??;
    serde_json::from_slice(&bytes).ok()
}
