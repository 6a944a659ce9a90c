//! The release's secrets, opened on the node: every encrypted source the
//! plan names is read and checked, the node's identity loaded once, each
//! secret decrypted in process into zeroed memory and given its keyed
//! digest, all before anything is written, so that a node without the
//! identity fails closed with nothing changed. A secret whose target is on
//! a tmpfs also gets a sealed copy of its ciphertext under
//! `/var/lib/driftless/sealed/` (to be put back at every boot, see
//! `restore`) and its release's services a drop-in ordering them after
//! `driftless-secrets.service`.
//!
//! Beside it: `identity` (where the node's age identity comes from) and
//! `restore` (putting the secrets a boot emptied back).

mod identity;
mod restore;

pub use identity::{Identity, MAX_IDENTITY_LEN};
pub use restore::restore;

use std::collections::BTreeSet;

use zeroize::Zeroizing;

pub use crate::config::IdentityError;
use crate::config::SecretSettings;
use crate::node::plan::{Bytes, Desired, Entry};
use crate::node::stage::ApplyError;
use crate::node::systemd;
use crate::record::secret::{
    DIGEST_KEY_LEN, DigestKey, SEALED_DIR, SecretBytes, SecretRecord, digest_key_path,
    protect_process,
};
use crate::release::sealed::{self, MAX_SEALED_LEN, MAX_SEALED_TOTAL, Plaintext, SealedError};
use crate::release::spec::NodeSpec;
use crate::release::tree::Release;
use crate::root::{Kind, Root, RootError, hex, sha256_of};
use crate::types::NodePath;

/// The name of the drop-in that orders a service after
/// `driftless-secrets.service`.
pub const SECRETS_DROPIN_NAME: &str = "50-driftless-secrets.conf";

/// Its text. `Requires=`: a boot that could not put the secrets back does
/// not start the service (at first boot the unit is skipped by its
/// condition, which does not fail the service).
pub const SECRETS_DROPIN: &str = "\
# Written by driftless: this release keeps secrets on a tmpfs, which every
# boot empties; driftless-secrets.service (`driftless restore`) puts them
# back from their sealed copies before this service starts.
[Unit]
Requires=driftless-secrets.service
After=driftless-secrets.service
";

/// The node's means to open secrets: its identity and its digest key,
/// each loaded at most once, and only when a release has secrets.
pub struct Secrets<'c> {
    /// `None`: nothing is opened (a lint plans the release with its
    /// secrets sealed; their sources are checked by `release::lint`).
    settings: Option<&'c SecretSettings>,
    identity: Option<Identity>,
    /// The digest key and its bytes (made here when the node has none yet;
    /// the plan then writes it).
    key: Option<(DigestKey, Zeroizing<Vec<u8>>)>,
}

impl<'c> Secrets<'c> {
    /// Nothing loaded yet.
    pub fn new(settings: &'c SecretSettings) -> Self {
        Self {
            settings: Some(settings),
            identity: None,
            key: None,
        }
    }

    /// Opens nothing: a plan made with it keeps every secret sealed, to be
    /// written (for `driftless lint`, which never decrypts).
    pub fn sealed() -> Self {
        Self {
            settings: None,
            identity: None,
            key: None,
        }
    }

    /// The keyed digest of a secret's file on the node (see
    /// [`crate::record::secret`]); only after [`Secrets::open`] found secrets.
    pub fn digest_file(&self, root: &Root, path: &NodePath) -> Result<[u8; 32], RootError> {
        let (key, _) = self.key.as_ref().ok_or_else(|| RootError {
            path: path.to_string(),
            reason: "no digest key loaded".into(),
        })?;
        key.digest_file(root, path)
    }

    /// Opens every secret `desired` names (each [`SecretBytes::Sealed`]
    /// becomes [`SecretBytes::Open`]) and adds what the secrets
    /// need written: the digest key, the sealed copies of the secrets on a
    /// tmpfs, and the drop-ins of the spec's services. Fails before
    /// anything is written.
    pub fn open(
        &mut self,
        root: &Root,
        release: &Release<'_>,
        spec: &NodeSpec,
        desired: &mut Vec<Desired>,
    ) -> anyhow::Result<()> {
        let sealed: Vec<usize> = (0..desired.len())
            .filter(|&i| {
                matches!(
                    desired[i].entry,
                    Entry::File {
                        content: Bytes::Secret(SecretBytes::Sealed { .. }),
                        ..
                    }
                )
            })
            .collect();
        let Some(settings) = self.settings.filter(|_| !sealed.is_empty()) else {
            return Ok(());
        };
        protect_process().map_err(|e| ApplyError(format!("cannot protect the process: {e}")))?;
        // Every ciphertext read and checked first.
        let mut total = 0u64;
        let mut read = Vec::new();
        for &i in &sealed {
            let d = &desired[i];
            let (source, _) = sealed_source(d);
            let what = |reason: String| {
                SealedError(format!(
                    "{} ({}): secret {source}: {reason}",
                    d.path, d.origin
                ))
            };
            let bytes = release
                .read(source, MAX_SEALED_LEN)
                .map_err(|e| what(e.reason))?;
            total += bytes.len() as u64;
            if total > MAX_SEALED_TOTAL {
                return Err(what(format!(
                    "the release's secrets together pass {MAX_SEALED_TOTAL} bytes"
                ))
                .into());
            }
            let header = sealed::inspect(&bytes).map_err(what)?;
            read.push((i, bytes, header));
        }
        // The identity, once; without it nothing is opened or written.
        if self.identity.is_none() {
            let (i, _, header) = &read[0];
            let d = &desired[*i];
            let identity = identity::load(root, settings).map_err(|e| {
                IdentityError(format!(
                    "{} ({}): secret {} cannot be opened: {e}; it is encrypted to {}",
                    d.path,
                    d.origin,
                    sealed_source(d).0,
                    header.describe()
                ))
            })?;
            self.identity = Some(identity);
        }
        self.load_key(root)?;
        let (identity, (key, key_bytes)) = match (&self.identity, &self.key) {
            (Some(identity), Some(key)) => (identity, key),
            _ => unreachable!("both loaded above"),
        };
        let mut extra = Vec::new();
        let mut copies = Vec::new();
        for (i, bytes, header) in read {
            let d = &mut desired[i];
            let (source, tmpfs) = sealed_source(d);
            let (source, tmpfs) = (source.clone(), tmpfs);
            let plain = decrypt(&bytes, identity).map_err(|failure| -> anyhow::Error {
                match failure {
                    Failure::NotForThisNode => IdentityError(format!(
                        "{} ({}): secret {source} is not encrypted to this node's identity ({}); it is encrypted to {}",
                        d.path,
                        d.origin,
                        identity.public(),
                        header.describe()
                    ))
                    .into(),
                    Failure::Broken(reason) => SealedError(format!(
                        "{} ({}): secret {source} cannot be decrypted: {reason}",
                        d.path, d.origin
                    ))
                    .into(),
                }
            })?;
            let on_tmpfs = on_tmpfs(root, &d.path)?;
            if tmpfs && !on_tmpfs {
                return Err(ApplyError(format!(
                    "{} ({}): the spec puts this secret on a tmpfs, but its directory is on a persistent filesystem here",
                    d.path, d.origin
                ))
                .into());
            }
            let sealed_copy = on_tmpfs.then(|| sealed_copy_path(&d.path)).transpose()?;
            let digest = key.digest(plain.bytes());
            let record = SecretRecord {
                source: source.to_string(),
                hmac_sha256: hex(&digest),
                sealed: sealed_copy.clone(),
            };
            if let Entry::File {
                content, sha256, ..
            } = &mut d.entry
            {
                *content = Bytes::Secret(SecretBytes::Open { plain, record });
                *sha256 = Some(digest);
            }
            if let Some(path) = sealed_copy {
                copies.push(root_file(
                    path,
                    bytes,
                    0o600,
                    format!("{} (sealed copy)", d.origin),
                ));
            }
        }
        extra.push(root_file(
            digest_key_path(),
            key_bytes.to_vec(),
            0o600,
            "secrets (digest key)".into(),
        ));
        if !copies.is_empty() {
            extra.push(Desired {
                path: node_path(SEALED_DIR)?,
                entry: Entry::Directory {
                    mode: 0o700,
                    uid: 0,
                    gid: 0,
                },
                origin: "secrets (sealed copies)".into(),
                managed: true,
                lock: true,
                exclusive: false,
            });
            extra.append(&mut copies);
            extra.extend(dropins(spec)?);
        }
        desired.extend(extra);
        Ok(())
    }

    /// The node's digest key, or a new one (which the plan writes).
    fn load_key(&mut self, root: &Root) -> Result<(), RootError> {
        if self.key.is_some() {
            return Ok(());
        }
        let bytes = match DigestKey::load_bytes(root)? {
            Some(bytes) => bytes,
            None => {
                let mut bytes = Zeroizing::new(vec![0u8; DIGEST_KEY_LEN]);
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| RootError {
                        path: digest_key_path().to_string(),
                        reason: "the system's random source failed".into(),
                    })?;
                bytes
            }
        };
        self.key = Some((DigestKey::from_bytes(&bytes), bytes));
        Ok(())
    }
}

/// The encrypted source and `tmpfs` flag of a sealed secret's entry.
fn sealed_source(d: &Desired) -> (&crate::types::TreePath, bool) {
    match &d.entry {
        Entry::File {
            content: Bytes::Secret(SecretBytes::Sealed { source, tmpfs }),
            ..
        } => (source, *tmpfs),
        _ => unreachable!("only sealed entries are opened"),
    }
}

/// Why a secret did not open.
pub(crate) enum Failure {
    /// None of the node's identities is a recipient.
    NotForThisNode,
    /// The file is damaged (or was altered: age authenticates every chunk).
    Broken(String),
}

/// Decrypts an age file (armored or not) with the node's identity, into
/// zeroed memory no larger than the ciphertext.
pub(crate) fn decrypt(bytes: &[u8], identity: &Identity) -> Result<Plaintext, Failure> {
    let binary = sealed::dearmor(bytes).map_err(Failure::Broken)?;
    let decryptor =
        age::Decryptor::new_buffered(&binary[..]).map_err(|e| Failure::Broken(e.to_string()))?;
    let reader = decryptor.decrypt(identity.keys()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => Failure::NotForThisNode,
        e => Failure::Broken(e.to_string()),
    })?;
    Plaintext::read_from(reader, binary.len()).map_err(|e| Failure::Broken(e.to_string()))
}

/// Whether `path` (or, when it does not exist yet, its nearest existing
/// directory) is on a tmpfs (or ramfs): memory, not a disk.
pub fn on_tmpfs(root: &Root, path: &NodePath) -> Result<bool, RootError> {
    const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);
    let mut dir = path.parent();
    while let Some(p) = dir {
        match root.observe(&p)? {
            Some(o) if o.kind == Kind::Directory => {
                let dir = root.dir(&p)?;
                let fs = nix::sys::statfs::fstatfs(dir.fd()).map_err(|e| RootError {
                    path: p.to_string(),
                    reason: format!("cannot statfs: {e}"),
                })?;
                let kind = fs.filesystem_type();
                return Ok(kind == nix::sys::statfs::TMPFS_MAGIC || kind == RAMFS_MAGIC);
            }
            Some(_) => return Ok(false),
            None => dir = p.parent(),
        }
    }
    Ok(false)
}

/// Where the sealed copy of the secret at `target` is kept.
pub fn sealed_copy_path(target: &NodePath) -> Result<NodePath, RootError> {
    let name = &hex(&sha256_of(target.as_str().as_bytes()))[..32];
    node_path(&format!("{SEALED_DIR}/{name}.age"))
}

/// A root-owned file the release's secrets need written.
fn root_file(path: NodePath, bytes: Vec<u8>, mode: u32, origin: String) -> Desired {
    let digest = sha256_of(&bytes);
    Desired {
        path,
        entry: Entry::File {
            content: Bytes::Held(bytes),
            sha256: Some(digest),
            mode,
            uid: 0,
            gid: 0,
        },
        origin,
        managed: true,
        lock: true,
        exclusive: false,
    }
}

/// Whether a manifest entry is one the secrets add for the node (the
/// digest key, the sealed copies and their directory, the services'
/// drop-ins): the node's, not the release's, so the anchor does not look
/// for them in the signed release (which holds no ciphertext to check
/// them by). Recognised by path and origin together.
pub fn is_node_entry(e: &crate::record::state::ManifestEntry) -> bool {
    let path = e.path.as_str();
    let origin = e.origin.as_str();
    (path == digest_key_path().as_str() && origin == "secrets (digest key)")
        || (path == SEALED_DIR && origin == "secrets (sealed copies)")
        || (e.path.parent().is_some_and(|p| p.as_str() == SEALED_DIR)
            && origin.ends_with(" (sealed copy)"))
        || (e.path.file_name() == SECRETS_DROPIN_NAME
            && origin.starts_with("unit ")
            && origin.ends_with(" (secrets)"))
}

/// The drop-ins ordering every service of the spec after
/// `driftless-secrets.service`.
fn dropins(spec: &NodeSpec) -> Result<Vec<Desired>, RootError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for unit in spec.units.iter().filter(|u| !u.masked) {
        let name = unit.name.as_str();
        if !name.ends_with(".service") || !seen.insert(name) {
            continue;
        }
        let path = node_path(&format!(
            "{}/{name}.d/{SECRETS_DROPIN_NAME}",
            systemd::UNIT_DIR
        ))?;
        out.push(root_file(
            path,
            SECRETS_DROPIN.as_bytes().to_vec(),
            0o644,
            format!("unit {name} (secrets)"),
        ));
    }
    Ok(out)
}

fn node_path(path: &str) -> Result<NodePath, RootError> {
    NodePath::new(path).map_err(|reason| RootError {
        path: path.to_owned(),
        reason,
    })
}
