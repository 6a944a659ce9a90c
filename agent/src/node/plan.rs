//! Planning: what the node must look like (the desired entries, derived from
//! the spec, the release's files and the node's account files) and the
//! difference from what is there, as an ordered list of steps. Pure: the
//! caller gathers observations and contents; nothing here touches the node.

mod compare;
mod exclusive;

pub use compare::diff;

use std::fmt;

use ring::digest;
use serde::Serialize;

use crate::node::accounts::{self, AccountFiles};
use crate::node::{gate, systemd};
use crate::record::secret::SecretBytes;
use crate::record::state::{LockStatus, ManifestEntry};
use crate::release::spec::{Content, NodeSpec, UnitName};
use crate::release::tree::BlobRef;
use crate::root::{Kind, hex};
use crate::types::{NodePath, TreePath};

/// A spec that cannot be turned into a plan (an owner that does not exist,
/// a unit whose `[Install]` section is invalid, …).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// One entry the node must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Where.
    pub path: NodePath,
    /// What.
    pub entry: Entry,
    /// Where it comes from, for people: `files[2]`, `unit app.service`, `accounts`.
    pub origin: String,
    /// Recorded in the manifest and watched for drift. Shared files the
    /// agent merges into (`/etc/passwd`) are written but not owned.
    pub managed: bool,
    /// Made immutable once the node is up (not for mutable data directories).
    pub lock: bool,
    /// A directory whose every entry is managed.
    pub exclusive: bool,
}

/// How the origin of a directory nobody declared, made because a managed
/// path lies beneath it, begins (`implicit parent of /opt/app`).
pub const IMPLICIT_ORIGIN: &str = "implicit parent of ";

impl Desired {
    /// True for a directory nobody declared (see [`IMPLICIT_ORIGIN`]).
    pub fn is_implicit(&self) -> bool {
        self.origin.starts_with(IMPLICIT_ORIGIN)
    }

    /// An entry the release owns: recorded, locked, watched.
    fn owned(path: NodePath, entry: Entry, origin: String) -> Self {
        Self {
            path,
            entry,
            origin,
            managed: true,
            lock: true,
            exclusive: false,
        }
    }
}

/// The desired state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Directory {
        /// Permission bits.
        mode: u32,
        /// Owner id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
    /// A regular file.
    File {
        /// The bytes, or where to read them when the file is written.
        content: Bytes,
        /// SHA-256 of the bytes; `None` for a release blob not read yet
        /// (it is hashed as it is written, so each blob is read once). For
        /// a secret, its keyed digest instead (see `record::secret`).
        sha256: Option<[u8; 32]>,
        /// Permission bits.
        mode: u32,
        /// Owner id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
    /// A symbolic link.
    Link {
        /// The target, as written.
        target: String,
    },
}

impl Entry {
    /// The kind of filesystem entry.
    pub fn kind(&self) -> Kind {
        match self {
            Entry::Directory { .. } => Kind::Directory,
            Entry::File { .. } => Kind::File,
            Entry::Link { .. } => Kind::Link,
        }
    }

    fn file(content: Vec<u8>, mode: u32, uid: u32, gid: u32) -> Self {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest::digest(&digest::SHA256, &content).as_ref());
        Entry::File {
            content: Bytes::Held(content),
            sha256: Some(sha256),
            mode,
            uid,
            gid,
        }
    }
}

/// A file's bytes: held in memory (small, generated content), or a blob of
/// the release read only when the file is written, so an apply never holds
/// the whole release in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    /// The bytes themselves.
    Held(Vec<u8>),
    /// A blob of the release's object database.
    Blob {
        /// Its object id.
        id: String,
        /// Its size.
        len: u64,
    },
    /// A secret: sealed in the release until planning opens it.
    Secret(SecretBytes),
}

impl Bytes {
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Bytes::Held(b) => b.len() as u64,
            Bytes::Blob { len, .. } => *len,
            Bytes::Secret(s) => s.len(),
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A path as found on the node, with what is needed to compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// SHA-256 of a regular file's content.
    pub sha256: Option<[u8; 32]>,
    /// A symlink's target.
    pub target: Option<String>,
}

/// What a step does to its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "change", content = "what")]
pub enum Change {
    /// The path is missing.
    Create,
    /// The path exists; these aspects differ (`content`, `mode`, `owner`, `group`, `target`, `kind`).
    Update(Vec<&'static str>),
    /// Nothing to do.
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create => f.write_str("create"),
            Change::Update(what) => write!(f, "change {}", what.join(", ")),
            Change::Unchanged => f.write_str("unchanged"),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The desired entry.
    pub desired: Desired,
    /// What must happen.
    pub change: Change,
}

/// Everything the spec asks for, in the order it must be applied: account
/// files, directories (parents first), files, links.
pub fn desired(
    spec: &NodeSpec,
    accounts: &AccountFiles,
    read: &mut dyn FnMut(&TreePath) -> Result<Vec<u8>, String>,
    blob: &mut dyn FnMut(&TreePath) -> Result<BlobRef, String>,
) -> Result<(Vec<Desired>, accounts::AccountsPlan), PlanError> {
    let plan = accounts::plan_accounts(&spec.groups, &spec.users, accounts).map_err(PlanError)?;
    let new = &plan.files;
    let uid = |p: &crate::release::spec::Principal| {
        accounts::resolve_uid(p, &new.passwd).map_err(PlanError)
    };
    let gid = |p: &crate::release::spec::Principal| {
        accounts::resolve_gid(p, &new.group).map_err(PlanError)
    };
    let mut out = Vec::new();
    let node = |s: &str| NodePath::new(s).map_err(PlanError);
    let account_files = [
        ("/etc/group", Some(&new.group), Some(&accounts.group)),
        (
            "/etc/gshadow",
            new.gshadow.as_ref(),
            accounts.gshadow.as_ref(),
        ),
        ("/etc/passwd", Some(&new.passwd), Some(&accounts.passwd)),
        ("/etc/shadow", new.shadow.as_ref(), accounts.shadow.as_ref()),
    ];
    for (path, after, before) in account_files {
        if let Some(after) = after {
            if Some(after) != before {
                let private = path.ends_with("shadow");
                out.push(Desired {
                    path: node(path)?,
                    entry: Entry::file(
                        after.clone().into_bytes(),
                        if private { 0o640 } else { 0o644 },
                        0,
                        0,
                    ),
                    origin: "accounts".into(),
                    managed: false,
                    lock: false,
                    exclusive: false,
                });
            }
        }
    }
    let mut directories: Vec<_> = spec.directories.iter().enumerate().collect();
    directories.sort_by_key(|(_, d)| d.path.as_str().matches('/').count());
    for (i, d) in directories {
        out.push(Desired {
            path: d.path.clone(),
            entry: Entry::Directory {
                mode: d.mode.0,
                uid: uid(&d.owner)?,
                gid: gid(&d.group)?,
            },
            origin: format!("directories[{i}]"),
            managed: true,
            lock: !d.mutable,
            exclusive: d.exclusive,
        });
    }
    for user in &spec.users {
        if user.ssh_authorized_keys.is_empty() {
            continue;
        }
        let principal = crate::release::spec::Principal::Name(user.name.clone());
        let u = uid(&principal)?;
        let g = passwd_field(&new.passwd, &user.name, 3)?
            .parse()
            .map_err(|_| {
                PlanError(format!(
                    "user {}: invalid primary group id",
                    user.name.as_str()
                ))
            })?;
        let home = passwd_field(&new.passwd, &user.name, 5)?;
        if home == "/nonexistent" {
            return Err(PlanError(format!(
                "user {} has ssh_authorized_keys but no home directory; set home",
                user.name.as_str()
            )));
        }
        let home = node(&home)?;
        let ssh = home.join(".ssh").map_err(PlanError)?;
        let keys: String = user
            .ssh_authorized_keys
            .iter()
            .map(|k| format!("{}\n", k.trim_end()))
            .collect();
        let origin = format!("user {}", user.name.as_str());
        out.push(Desired::owned(
            home.clone(),
            Entry::Directory {
                mode: 0o750,
                uid: u,
                gid: g,
            },
            origin.clone(),
        ));
        out.push(Desired::owned(
            ssh.clone(),
            Entry::Directory {
                mode: 0o700,
                uid: u,
                gid: g,
            },
            origin.clone(),
        ));
        out.push(Desired {
            path: ssh.join("authorized_keys").map_err(PlanError)?,
            entry: Entry::file(keys.into_bytes(), 0o600, u, g),
            origin,
            managed: true,
            lock: true,
            exclusive: false,
        });
    }
    for (i, f) in spec.files.iter().enumerate() {
        let (mode, uid, gid) = (f.mode.0, uid(&f.owner)?, gid(&f.group)?);
        let entry = match &f.content {
            Content::Inline(text) => Entry::file(text.clone().into_bytes(), mode, uid, gid),
            Content::Encrypted(p) => Entry::File {
                content: Bytes::Secret(SecretBytes::sealed(p, f.tmpfs)),
                sha256: None,
                mode,
                uid,
                gid,
            },
            Content::Source(p) => {
                let b = blob(p).map_err(PlanError)?;
                Entry::File {
                    content: Bytes::Blob {
                        id: b.id,
                        len: b.len,
                    },
                    sha256: None,
                    mode,
                    uid,
                    gid,
                }
            }
        };
        gate::outside_unit_dirs(&f.path, true)
            .map_err(|e| PlanError(format!("files[{i}]: {e}")))?;
        out.push(Desired::owned(f.path.clone(), entry, format!("files[{i}]")));
    }
    for (i, l) in spec.links.iter().enumerate() {
        gate::outside_unit_dirs(&l.path, false)
            .map_err(|e| PlanError(format!("links[{i}]: {e}")))?;
        out.push(Desired::owned(
            l.path.clone(),
            Entry::Link {
                target: l.target.as_str().to_owned(),
            },
            format!("links[{i}]"),
        ));
    }
    for unit in &spec.units {
        out.extend(unit_entries(unit, read)?);
    }
    exclusive::settle(&mut out, &spec.exclusive)?;
    Ok((out, plan))
}

/// Field `index` (0-based) of `name`'s line in passwd text.
fn passwd_field(
    passwd: &str,
    name: &crate::release::spec::AccountName,
    index: usize,
) -> Result<String, PlanError> {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() == 7 && f[0] == name.as_str())
        .map(|f| f[index].to_owned())
        .ok_or_else(|| PlanError(format!("user {} is not in /etc/passwd", name.as_str())))
}

fn unit_entries(
    unit: &crate::release::spec::UnitSpec,
    read: &mut dyn FnMut(&TreePath) -> Result<Vec<u8>, String>,
) -> Result<Vec<Desired>, PlanError> {
    let origin = format!("unit {}", unit.name.as_str());
    let link = |(path, target): (NodePath, String)| Desired {
        path,
        entry: Entry::Link { target },
        origin: origin.clone(),
        managed: true,
        lock: true,
        exclusive: false,
    };
    if unit.masked {
        return Ok(vec![link(systemd::mask_link(&unit.name))]);
    }
    let content = match &unit.content {
        Some(Content::Inline(text)) => text.clone().into_bytes(),
        Some(Content::Source(p)) => read(p).map_err(PlanError)?,
        Some(Content::Encrypted(_)) => return Err(PlanError(format!("{origin}: not a secret"))),
        None => return Err(PlanError(format!("{origin}: no content"))),
    };
    let mut out = vec![Desired::owned(
        unit_path(&unit.name)?,
        Entry::file(content.clone(), 0o644, 0, 0),
        origin.clone(),
    )];
    // Recorded, locked and watched like the unit file itself: removing it
    // would let the unit start on a failed node.
    let (dropin, text) =
        gate::dropin(&unit.name).map_err(|e| PlanError(format!("{origin}: {e}")))?;
    out.push(Desired::owned(
        dropin,
        Entry::file(text.as_bytes().to_vec(), 0o644, 0, 0),
        origin.clone(),
    ));
    if unit.enabled {
        let text =
            String::from_utf8(content).map_err(|_| PlanError(format!("{origin}: not UTF-8")))?;
        let install =
            systemd::parse_install(&text).map_err(|e| PlanError(format!("{origin}: {e}")))?;
        let links = systemd::enablement_links(&unit.name, &install)
            .map_err(|e| PlanError(format!("{origin}: {e}")))?;
        out.extend(links.into_iter().map(link));
    }
    Ok(out)
}

/// Where a unit file is installed.
pub fn unit_path(name: &UnitName) -> Result<NodePath, PlanError> {
    NodePath::new(&format!("{}/{}", systemd::UNIT_DIR, name.as_str())).map_err(PlanError)
}

/// The manifest records what the plan wanted, as the node must keep it.
impl From<&Desired> for ManifestEntry {
    fn from(d: &Desired) -> Self {
        let mut e = ManifestEntry {
            path: d.path.clone(),
            kind: d.entry.kind(),
            mode: None,
            uid: None,
            gid: None,
            sha256: None,
            target: None,
            origin: d.origin.clone(),
            lock: match (d.lock, d.is_implicit()) {
                (true, _) => LockStatus::Pending,
                (false, true) => LockStatus::Exempt("implicit parent directory".into()),
                (false, false) => LockStatus::Exempt("mutable directory".into()),
            },
            exclusive: d.exclusive,
            secret: None,
        };
        match &d.entry {
            Entry::Directory { mode, uid, gid } => {
                (e.mode, e.uid, e.gid) = (Some(format!("{mode:04o}")), Some(*uid), Some(*gid));
            }
            Entry::File {
                sha256,
                mode,
                uid,
                gid,
                content,
            } => {
                (e.mode, e.uid, e.gid) = (Some(format!("{mode:04o}")), Some(*uid), Some(*gid));
                e.sha256 = sha256.map(|s| hex(&s));
                if let Bytes::Secret(s) = content {
                    // Never a plain digest of a secret: its keyed one.
                    (e.sha256, e.secret) = (None, s.record().cloned());
                }
            }
            Entry::Link { target } => e.target = Some(target.clone()),
        }
        e
    }
}
