//! The node's record, `/var/lib/driftless/state.json` under the root: which
//! release the node is pinned to and who signed it, what happened, and a
//! manifest of every managed path with its digest. Written atomically; read
//! by `status`, later boots and drift checks.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::effective::Effective;
use crate::root::{Kind, Root, RootError};
use crate::types::NodePath;
use crate::verify::Verified;

/// Where the state lives on the node.
pub const STATE_PATH: &str = "/var/lib/driftless/state.json";
/// State files larger than this are refused.
pub const MAX_STATE_LEN: u64 = 64 * 1024 * 1024;

/// The whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The node's id when the release was applied.
    pub node_id: String,
    /// The pinned release.
    pub release: PinnedRelease,
    /// What happened.
    pub status: Status,
    /// When the apply started.
    pub started_at: Timestamp,
    /// When it ended (applied or failed).
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// Every managed path.
    pub manifest: Vec<ManifestEntry>,
    /// Directories bind-mounted read-only (spec and config `lock.read_only`).
    #[serde(default)]
    pub read_only: Vec<MountRecord>,
    /// The rest of the node's effective configuration (unit overrides,
    /// accounts, extended attributes, mounts), recorded for drift checks.
    #[serde(default, skip_serializing_if = "Effective::is_empty")]
    pub effective: Effective,
}

/// The release, as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedRelease {
    /// The tag.
    pub tag: String,
    /// The tag object id.
    pub tag_object: String,
    /// The commit.
    pub commit: String,
    /// The commit's tree.
    pub tree: String,
    /// The allowed_signers principals that vouched for it.
    pub signer: String,
    /// The signing key's fingerprint.
    pub fingerprint: String,
    /// The signer's claimed time.
    pub signed_at: Timestamp,
}

impl From<&Verified> for PinnedRelease {
    fn from(v: &Verified) -> Self {
        Self {
            tag: v.name.clone(),
            tag_object: v.object.clone(),
            commit: v.commit.clone(),
            tree: v.tree.clone(),
            signer: v.principal.clone(),
            fingerprint: v.fingerprint.clone(),
            signed_at: v.signed_at,
        }
    }
}

/// Where the node stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    /// An apply is under way (or was interrupted; the next run finishes it).
    Applying,
    /// The node is exactly what the release says and passed its health checks.
    Applied,
    /// The node could not be brought up; the release's services stay stopped.
    Failed {
        /// The stage that failed: `spec`, `apply`, `health`.
        stage: String,
        /// One line, for people.
        reason: String,
    },
}

/// The lock state of one managed path, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum LockStatus {
    /// Not locked yet (`--no-lock`, or `lock.mode: off`).
    Pending,
    /// Immutable.
    Locked,
    /// Not lockable: a symlink cannot carry the attribute (its locked parent
    /// directory, if managed, still protects it), or the path is mutable by design.
    Exempt(String),
    /// The filesystem refused (best-effort mode).
    Failed(String),
}

/// A directory that is to be a read-only bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRecord {
    /// The directory.
    pub path: NodePath,
    /// Whether the mount is in place.
    pub lock: LockStatus,
}

/// One managed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// The node path.
    pub path: NodePath,
    /// Its kind.
    pub kind: Kind,
    /// Permission bits, as octal text (directories and files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// SHA-256 of the content, hex (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where it came from in the spec.
    pub origin: String,
    /// Whether it is locked.
    pub lock: LockStatus,
    /// A directory whose every entry is managed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// A secret: compared by keyed digest, never by `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::record::secret::SecretRecord>,
}

fn state_path() -> NodePath {
    NodePath::new(STATE_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

/// Reads the state, if the node has any.
pub fn load(root: &Root) -> Result<Option<State>, RootError> {
    read_record(root, &state_path(), MAX_STATE_LEN, "state")
}

/// Reads a JSON record of the agent's, if there is one.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
    root: &Root,
    path: &NodePath,
    limit: u64,
    what: &str,
) -> Result<Option<T>, RootError> {
    let Some(bytes) = root.read_optional(path, limit)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RootError {
            path: path.to_string(),
            reason: format!("unreadable {what}: {e}"),
        })
}

/// Writes a JSON record of the agent's atomically (0644 root:root), making
/// its directory when missing.
pub(crate) fn write_record<T: Serialize>(
    root: &Root,
    path: &NodePath,
    record: &T,
) -> Result<(), RootError> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|e| RootError {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    if let Some(parent) = path.parent() {
        if root.observe(&parent)?.is_none() {
            root.ensure_dir(&parent, 0o755, 0, 0)?;
        }
    }
    root.write_file(path, &bytes, 0o644, 0, 0)
}

/// Writes the state atomically (0644 root:root; it holds no secrets). A
/// state file the agent locked earlier is unlocked for the write and locked
/// again after it.
pub fn save(root: &Root, state: &State) -> Result<(), RootError> {
    let path = state_path();
    let was_locked = matches!(
        crate::root::attr::is_immutable(root, &path, Kind::File),
        Ok(true)
    );
    if was_locked {
        crate::root::attr::clear_for_rewrite(root, &path)?;
    }
    write_record(root, &path, state)?;
    if was_locked {
        lock_state_file(root)?;
    }
    Ok(())
}

/// Where apply records why it failed before any release was verified
/// (fetch, signature, pin): there is no release to put in [`State`] yet,
/// but `status` must still say why the node is not up.
pub const FAILURE_PATH: &str = "/var/lib/driftless/failure.json";

/// A failure before any release was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyFailure {
    /// The stage that failed: `fetch`, `verify`, `apply`.
    pub stage: String,
    /// One line, for people.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

fn failure_path() -> NodePath {
    NodePath::new(FAILURE_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

/// Records an [`EarlyFailure`] atomically (0644 root:root).
pub fn save_early_failure(root: &Root, failure: &EarlyFailure) -> Result<(), RootError> {
    write_record(root, &failure_path(), failure)
}

/// The recorded [`EarlyFailure`], if any.
pub fn load_early_failure(root: &Root) -> Result<Option<EarlyFailure>, RootError> {
    read_record(root, &failure_path(), 1024 * 1024, "failure record")
}

/// Forgets an [`EarlyFailure`] once a release was verified: from then on
/// [`State`] tells.
pub fn clear_early_failure(root: &Root) -> Result<(), RootError> {
    root.remove_file(&failure_path())
}

/// Makes the state file immutable (once the node is locked).
pub fn lock_state_file(root: &Root) -> Result<(), RootError> {
    let path = state_path();
    crate::root::attr::set_immutable(root, &path, Kind::File, true).map_err(|e| RootError {
        path: path.to_string(),
        reason: format!("cannot lock: {e}"),
    })
}
