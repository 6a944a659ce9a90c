//! The trust core: verifies SSH-signed git tags and commits in process,
//! against an `allowed_signers` file, exactly as a node will before it acts.
//!
//! A release is an annotated tag signed with `git tag -s` and
//! `gpg.format=ssh`; a channel tip is a commit signed with `git commit -S`.
//! driftless checks what `git verify-tag` checks and more (see
//! `docs/security.md`): the namespace is exactly `git`, the tag's own name and
//! type are read from the signed bytes and must match, and a key must be valid
//! both when the signer says it signed and now.

pub mod allowed_signers;
pub mod object;
pub mod roles;
pub mod sshkey;
pub mod sshsig;
pub mod wire;

use std::path::Path;

use git2::{ObjectType, Oid, Repository};
use jiff::Timestamp;
use serde::Serialize;

use crate::types::ObjectFormat;
use allowed_signers::CheckTime;
pub use allowed_signers::{AllowedSigners, NotTrusted, RevokedKeys, TrustFileError};
use object::ObjectError;
pub use roles::{ChannelRole, Roles};
use sshsig::{SshSig, SshSigError};

/// The SSHSIG namespace git signs in; nothing else is accepted.
pub const GIT_NAMESPACE: &str = "git";

/// The node's trust: who may sign, and which keys are revoked.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The allowed signers.
    pub allowed: AllowedSigners,
    /// Keys refused whatever `allowed` says.
    pub revoked: RevokedKeys,
}

impl Trust {
    /// Loads an allowed-signers file and an optional revoked-keys file.
    pub fn load(
        allowed_signers: &Path,
        revoked_keys: Option<&Path>,
    ) -> Result<Self, TrustFileError> {
        Ok(Self {
            allowed: AllowedSigners::load(allowed_signers)?,
            revoked: revoked_keys
                .map(RevokedKeys::load)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// What was verified: a tag or a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An annotated tag (a release).
    Tag,
    /// A commit (a channel tip).
    Commit,
}

/// A good signature, and everything a caller needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Tag or commit.
    pub kind: Kind,
    /// The tag name, or the revision asked for.
    pub name: String,
    /// The signed object's id (the tag object, or the commit).
    pub object: String,
    /// The commit the release is (for a tag, the commit it names).
    pub commit: String,
    /// The commit's tree.
    pub tree: String,
    /// The principals field of the allowed_signers line that matched.
    pub principal: String,
    /// The key type, e.g. `ssh-ed25519`.
    pub key_type: &'static str,
    /// The key's fingerprint as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The signer's claimed time (tagger or committer date).
    pub signed_at: Timestamp,
}

/// Why a tag or commit was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No such tag or revision.
    #[error("not found in the repository")]
    NotFound,
    /// `refs/tags/NAME` names a commit directly.
    #[error("is a lightweight tag; a release must be an annotated, signed tag (git tag -s)")]
    Lightweight,
    /// The ref is symbolic or names something other than a tag or commit.
    #[error("refs/tags entry names a {0}, not a tag object")]
    NotATag(String),
    /// The tag object's own name differs from the ref it was found under.
    #[error("tag object is named {found:?} in its signed header; refusing it under another name")]
    NameMismatch {
        /// The name inside the tag object.
        found: String,
    },
    /// The tag does not tag a commit (for example a tag of a tag).
    #[error("tags a {0}, not a commit (tags of tags and of trees are refused)")]
    NotACommit(String),
    /// The tagged commit is absent.
    #[error("names commit {0}, which is not in the repository")]
    MissingCommit(String),
    /// The object's structure or signature placement.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The SSH signature itself.
    #[error(transparent)]
    Signature(#[from] SshSigError),
    /// The key is revoked.
    #[error("signed by revoked key {0}")]
    Revoked(String),
    /// No allowed_signers line vouches for the key.
    #[error(transparent)]
    NotTrusted(#[from] NotTrusted),
    /// A channel commit signed by a key that holds neither the channel
    /// nor the refresh role.
    #[error("signed by {fingerprint}, {}", if *release_key {
        format!("a release key that may not move the channel (it is not in {lists})")
    } else {
        format!("a key not in {lists}")
    })]
    WrongRole {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// Whether the key may sign releases.
        release_key: bool,
        /// The lists that were searched, for the message.
        lists: &'static str,
    },
    /// The repository could not be read.
    #[error("cannot read the repository: {0}")]
    Repository(#[from] git2::Error),
}

/// Verifies the annotated tag `name` (`refs/tags/NAME`) at time `now`.
pub fn verify_tag(
    repo: &Repository,
    name: &str,
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let reference = match repo.find_reference(&format!("refs/tags/{name}")) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(VerifyError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let id = reference
        .target()
        .ok_or_else(|| VerifyError::NotATag("symbolic reference".into()))?;
    verify_tag_object(repo, name, id, trust, now)
}

/// Verifies the tag object `id`, which must call itself `name`.
pub fn verify_tag_object(
    repo: &Repository,
    name: &str,
    id: Oid,
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let odb = repo.odb()?;
    let raw = odb.read(id)?;
    verify_tag_raw(
        name,
        &id.to_string(),
        raw.kind().str(),
        raw.data(),
        |commit| commit_tree(repo, Oid::from_str(commit).ok()?),
        trust,
        now,
    )
}

/// Verifies a tag object from its bytes: `id` is its (computed) id and
/// `kind` the object type it was stored as; `tree_of` gives the tree of a
/// commit present in the same object database, or `None`.
pub fn verify_tag_raw(
    name: &str,
    id: &str,
    kind: &str,
    raw: &[u8],
    tree_of: impl FnOnce(&str) -> Option<String>,
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    match kind {
        "tag" => {}
        "commit" => return Err(VerifyError::Lightweight),
        other => return Err(VerifyError::NotATag(other.to_owned())),
    }
    let tag = object::parse_tag(raw)?;
    let format = ObjectFormat::of_hex_len(id.len());
    if ObjectFormat::of_hex_len(tag.object.len()) != format {
        return Err(ObjectError::Malformed {
            kind: "tag",
            reason: format!(
                "names {}, an id of another object format than the tag's own",
                tag.object
            ),
        }
        .into());
    }
    let (signer, key) = check_signature(tag.payload, tag.signature, tag.tagger.when, trust, now)?;
    // Only now that the bytes are known to be the signer's are their claims used.
    if tag.name != name {
        return Err(VerifyError::NameMismatch { found: tag.name });
    }
    if tag.target_type != "commit" {
        return Err(VerifyError::NotACommit(tag.target_type));
    }
    let tree =
        tree_of(&tag.object).ok_or_else(|| VerifyError::MissingCommit(tag.object.clone()))?;
    Ok(Verified {
        kind: Kind::Tag,
        name: name.to_owned(),
        object: id.to_owned(),
        commit: tag.object,
        tree,
        principal: signer.principals.clone(),
        key_type: key.algorithm(),
        fingerprint: key.fingerprint(),
        signed_at: tag.tagger.when,
    })
}

/// Verifies the commit that `rev` names (a revision git understands).
pub fn verify_commit(
    repo: &Repository,
    rev: &str,
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let object = match repo.revparse_single(rev) {
        Ok(o) => o,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(VerifyError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let commit = object.peel_to_commit()?;
    verify_commit_object(repo, rev, commit.id(), trust, now)
}

/// Verifies the commit `id`; `name` is how the caller refers to it.
pub fn verify_commit_object(
    repo: &Repository,
    name: &str,
    id: Oid,
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let odb = repo.odb()?;
    let raw = odb.read(id)?;
    if raw.kind() != ObjectType::Commit {
        return Err(VerifyError::NotACommit(raw.kind().str().to_owned()));
    }
    verify_commit_raw(name, &id.to_string(), raw.data(), trust, now)
}

/// Verifies a commit object from its bytes: `id` is its (computed) id,
/// whose length says the repository's object format (and so which header
/// holds the signature).
pub fn verify_commit_raw(
    name: &str,
    id: &str,
    raw: &[u8],
    trust: &Trust,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let format = ObjectFormat::of_hex_len(id.len()).ok_or_else(|| ObjectError::Malformed {
        kind: "commit",
        reason: format!("{id:?} is not an object id"),
    })?;
    let commit = object::parse_commit(raw, format)?;
    let (signer, key) = check_signature(
        &commit.payload,
        &commit.signature,
        commit.committer.when,
        trust,
        now,
    )?;
    Ok(Verified {
        kind: Kind::Commit,
        name: name.to_owned(),
        object: id.to_owned(),
        commit: id.to_owned(),
        tree: commit.tree,
        principal: signer.principals.clone(),
        key_type: key.algorithm(),
        fingerprint: key.fingerprint(),
        signed_at: commit.committer.when,
    })
}

/// Checks an armored SSH signature over `payload`: cryptography first, then
/// revocation, then whether an allowed_signers line vouches for the key, by
/// git's rule at the signer's claimed time, and also at `now`.
pub fn check_signature<'t>(
    payload: &[u8],
    armored: &[u8],
    signed_at: Timestamp,
    trust: &'t Trust,
    now: Timestamp,
) -> Result<(&'t allowed_signers::Signer, sshkey::PublicKey), VerifyError> {
    let sig = SshSig::from_armored(armored)?;
    sig.verify(GIT_NAMESPACE, payload)?;
    if trust.revoked.contains(&sig.public_key) {
        return Err(VerifyError::Revoked(sig.public_key.fingerprint()));
    }
    // Whole seconds: the claimed time has no more, and messages stay stable.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let signer_time = CheckTime {
        at: signed_at,
        what: "the signer's time",
    };
    let current = CheckTime {
        at: now,
        what: "the current time",
    };
    // The first is git's verify time: the signer's time, except that git
    // passes none to ssh-keygen (which then uses the current time) for 0.
    let times = if signed_at == Timestamp::UNIX_EPOCH {
        [current, signer_time]
    } else {
        [signer_time, current]
    };
    let signer = trust
        .allowed
        .authorize(&sig.public_key, GIT_NAMESPACE, &times)?;
    Ok((signer, sig.public_key))
}

fn commit_tree(repo: &Repository, id: Oid) -> Option<String> {
    let commit = repo.find_commit(id).ok()?;
    Some(commit.tree_id().to_string())
}
