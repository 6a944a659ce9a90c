//! What the node remembers of its secrets, without remembering them: each
//! secret's manifest entry records an HMAC-SHA256 of its plaintext under a
//! key of this node's own (`secret-digest.key`, 32 random bytes made at the
//! first apply, root-only, locked), never a plain digest, so a world-
//! readable `state.json` does not let anyone test guesses of a short secret
//! offline. Also here: the drift check of a secret, and the process
//! protection taken before any plaintext is read (no core dumps).

use std::io::Read as _;

use nix::fcntl::OFlag;
use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::release::sealed::Plaintext;
use crate::root::{Root, RootError, hex};
use crate::types::{NodePath, TreePath};

/// The node's digest key.
pub const DIGEST_KEY_PATH: &str = "/var/lib/driftless/secret-digest.key";
/// Where the ciphertext of each secret on a tmpfs is kept, to put it back
/// at boot.
pub const SEALED_DIR: &str = "/var/lib/driftless/sealed";
/// The digest key's length.
pub const DIGEST_KEY_LEN: usize = 32;

/// A secret's part of its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRecord {
    /// The encrypted source in the release tree.
    pub source: String,
    /// HMAC-SHA256 of the plaintext under the node's digest key, hex.
    pub hmac_sha256: String,
    /// For a secret on a tmpfs: where its ciphertext is kept, to be put
    /// back at every boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<NodePath>,
}

/// A secret as a plan holds it: sealed (the age file in the release) until
/// the node opens it, then its plaintext and what the manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretBytes {
    /// Not opened yet.
    Sealed {
        /// The encrypted source in the release tree.
        source: TreePath,
        /// The spec requires the target to be on a tmpfs.
        tmpfs: bool,
    },
    /// Opened with the node's identity.
    Open {
        /// The plaintext (never printed).
        plain: Plaintext,
        /// Its keyed digest and, on a tmpfs, its sealed copy.
        record: SecretRecord,
    },
}

impl SecretBytes {
    /// A secret not opened yet.
    pub fn sealed(source: &TreePath, tmpfs: bool) -> Self {
        Self::Sealed {
            source: source.clone(),
            tmpfs,
        }
    }

    /// The encrypted source in the release tree.
    pub fn source(&self) -> &str {
        match self {
            Self::Sealed { source, .. } => source.as_str(),
            Self::Open { record, .. } => &record.source,
        }
    }

    /// The plaintext's length (0 until opened).
    pub fn len(&self) -> u64 {
        match self {
            Self::Sealed { .. } => 0,
            Self::Open { plain, .. } => plain.len(),
        }
    }

    /// True when there are no bytes (or none opened yet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the manifest records, once opened.
    pub fn record(&self) -> Option<&SecretRecord> {
        match self {
            Self::Sealed { .. } => None,
            Self::Open { record, .. } => Some(record),
        }
    }

    /// How a plan line shows it: never its size or a digest.
    pub fn describe(&self) -> &'static str {
        match self.record() {
            Some(r) if r.sealed.is_some() => "secret on tmpfs",
            _ => "secret",
        }
    }
}

/// The node's key for digests of secrets.
pub struct DigestKey(hmac::Key);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(<secret>)")
    }
}

/// The digest key's path.
pub fn digest_key_path() -> NodePath {
    NodePath::new(DIGEST_KEY_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

impl DigestKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The node's key, if apply made one.
    pub fn load(root: &Root) -> Result<Option<Self>, RootError> {
        Ok(Self::load_bytes(root)?.map(|bytes| Self::from_bytes(&bytes)))
    }

    /// The bytes of the node's key, if apply made one.
    pub fn load_bytes(root: &Root) -> Result<Option<Zeroizing<Vec<u8>>>, RootError> {
        let path = digest_key_path();
        let Some(bytes) = root.read_optional(&path, DIGEST_KEY_LEN as u64)? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        if bytes.len() != DIGEST_KEY_LEN {
            return Err(RootError {
                path: path.to_string(),
                reason: format!("not a {DIGEST_KEY_LEN}-byte key"),
            });
        }
        Ok(Some(bytes))
    }

    /// The keyed digest of `bytes`.
    pub fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, bytes).as_ref());
        out
    }

    /// The keyed digest of the regular file `path`, streamed through a
    /// buffer that is zeroed afterwards (the process is made undumpable
    /// first: the file holds a plaintext).
    pub fn digest_file(&self, root: &Root, path: &NodePath) -> Result<[u8; 32], RootError> {
        let fail = |what: &str, e: String| RootError {
            path: path.to_string(),
            reason: format!("{what}: {e}"),
        };
        protect_process().map_err(|e| fail("cannot protect the process", e))?;
        let fd = root
            .open_raw(path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            .map_err(|e| fail("cannot open", e.desc().to_owned()))?;
        let mut file = std::fs::File::from(fd);
        let mut ctx = hmac::Context::with_key(&self.0);
        let mut buffer = Zeroizing::new(vec![0u8; 64 * 1024]);
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => ctx.update(&buffer[..n]),
                Err(e) => return Err(fail("cannot read", e.to_string())),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        Ok(out)
    }
}

/// Makes this process undumpable (`PR_SET_DUMPABLE` 0: no core dump, and
/// no ptrace or `/proc/PID/mem` for anyone but root) and sets its core size
/// limit to 0, before it holds any plaintext. Idempotent.
pub fn protect_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    // A sandbox may forbid setrlimit; then the unit must have set it
    // (LimitCORE=0, as driftless's units do).
    match setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        Ok(()) => Ok(()),
        Err(_) if matches!(getrlimit(Resource::RLIMIT_CORE), Ok((0, _))) => Ok(()),
        Err(e) => Err(format!("setrlimit(RLIMIT_CORE): {e}")),
    }
}

/// How a secret's file differs from its record: `None` when its keyed
/// digest matches, else what was found (a keyed digest, or why none could
/// be taken). Never a plain digest.
pub fn content_differs(root: &Root, path: &NodePath, record: &SecretRecord) -> Option<String> {
    let key = match DigestKey::load(root) {
        Ok(Some(key)) => key,
        Ok(None) => return Some(format!("no digest key ({DIGEST_KEY_PATH} is missing)")),
        Err(e) => return Some(e.to_string()),
    };
    match key.digest_file(root, path) {
        Ok(d) if hex(&d) == record.hmac_sha256 => None,
        Ok(d) => Some(format!("hmac-sha256 {}", hex(&d))),
        Err(e) => Some(e.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digests_depend_on_the_key_and_are_streamed_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        std::fs::write(dir.path().join("s"), b"hunter2").expect("write");
        let a = DigestKey::from_bytes(&[1u8; 32]);
        let b = DigestKey::from_bytes(&[2u8; 32]);
        let path = NodePath::new("/s").expect("path");
        assert_eq!(
            a.digest(b"hunter2"),
            a.digest_file(&root, &path).expect("read")
        );
        assert_ne!(a.digest(b"hunter2"), b.digest(b"hunter2"));
        assert_ne!(a.digest(b"hunter2"), crate::root::sha256_of(b"hunter2"));
        assert!(
            !format!("{a:?}").contains('1'),
            "the key never prints: {a:?}"
        );
    }
}
