//! A verified release, read straight from its objects: the node spec and the
//! bytes of every file it names. Nothing is checked out, and only the
//! verified commit's tree is ever read, either from the cache (libgit2's
//! object database) or from the objects a streamed fetch received.

use std::cell::OnceCell;
use std::collections::HashMap;

use git2::{ObjectType, Repository};

use crate::release::spec::{MAX_FILE_LEN, MAX_SPEC_LEN, NodeSpec, SpecError};
use crate::root::{Root, Staged};
use crate::source::pack::{
    MAX_TREE_ENTRIES, ObjectFormat, ObjectId, ObjectKind, TreeIndex, index_tree,
};
use crate::source::stream::{Incoming, Streamed};
use crate::types::{NodePath, TreePath};
use crate::verify::Verified;

/// A file the spec names cannot be read from the release tree.
#[derive(Debug, thiserror::Error)]
#[error("release {tag}: {path}: {reason}")]
pub struct ReleaseError {
    /// The release tag.
    pub tag: String,
    /// The path in the release tree.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A release file as planning needs it: where its bytes are and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob's object id.
    pub id: String,
    /// Its size.
    pub len: u64,
}

/// Objects read some other way than libgit2 (a SHA-256 repository on the
/// operator's machine, which libgit2 cannot open).
pub trait ObjectSource {
    /// The object `id`: its kind and bytes, whose id was computed from them
    /// and found to be `id` before this returns.
    fn object(&self, id: &ObjectId) -> Result<(ObjectKind, Vec<u8>), String>;
}

/// Where the release's objects are.
enum Objects<'r> {
    /// Read through an [`ObjectSource`] that checks every id.
    Local(&'r dyn ObjectSource),
    /// The cache, through libgit2 (which checks each object against its id
    /// as it reads it).
    Cache(&'r Repository),
    /// Received by a streamed fetch, every id computed as it arrived.
    Streamed(&'r Incoming),
}

/// The verified commit's tree.
pub struct Release<'r> {
    objects: Objects<'r>,
    tree: ObjectId,
    /// Every entry of the tree by path (blob id and git mode), from one walk
    /// instead of one walk from the root per file.
    index: OnceCell<Result<TreeIndex, String>>,
    /// The verification that admitted this release.
    pub verified: Verified,
}

impl<'r> Release<'r> {
    /// Opens the tree of a verified tag or commit in the cache.
    pub fn open(repo: &'r Repository, verified: Verified) -> Result<Self, ReleaseError> {
        let release = Self::new(Objects::Cache(repo), verified)?;
        let oid = git2::Oid::from_bytes(release.tree.as_bytes())
            .map_err(|e| release.error_at("/", e.message().to_owned()))?;
        repo.find_tree(oid).map_err(|e| {
            release.error_at("/", format!("tree missing from the cache: {}", e.message()))
        })?;
        Ok(release)
    }

    /// A tree that nothing verified, in `repo` (a work tree as it would be
    /// committed, or a tag's tree before its signature is checked), for
    /// the operator's commands that judge or compare releases (`lint`,
    /// `diff`) and never write a node. `label` names it in messages; the
    /// signer fields of its [`Verified`] are empty.
    pub fn unsigned(
        repo: &'r Repository,
        tree: git2::Oid,
        label: &str,
    ) -> Result<Self, ReleaseError> {
        let verified = Verified {
            kind: crate::verify::Kind::Commit,
            name: label.to_owned(),
            object: tree.to_string(),
            commit: String::new(),
            tree: tree.to_string(),
            principal: String::new(),
            key_type: "",
            fingerprint: String::new(),
            signed_at: jiff::Timestamp::UNIX_EPOCH,
        };
        Self::open(repo, verified)
    }

    /// The tree of a verified tag or commit whose objects `source` reads.
    pub fn local(source: &'r dyn ObjectSource, verified: Verified) -> Result<Self, ReleaseError> {
        Self::new(Objects::Local(source), verified)
    }

    /// The tree of a verified tag whose objects a streamed fetch received
    /// (which checked that every object of the tree arrived).
    pub fn streamed(streamed: &'r Streamed) -> Result<Self, ReleaseError> {
        let release = Self::new(
            Objects::Streamed(&streamed.incoming),
            streamed.verified.clone(),
        )?;
        let _ = release.index.set(Ok(streamed.index.clone()));
        Ok(release)
    }

    fn new(objects: Objects<'r>, verified: Verified) -> Result<Self, ReleaseError> {
        let tree = ObjectId::from_hex(&verified.tree).ok_or_else(|| ReleaseError {
            tag: verified.name.clone(),
            path: "/".into(),
            reason: format!("{:?} is not a tree id", verified.tree),
        })?;
        Ok(Self {
            objects,
            tree,
            index: OnceCell::new(),
            verified,
        })
    }

    /// Reads a regular file of the release, refusing anything else (a
    /// symlink, a submodule, a directory) and anything over `limit` bytes.
    pub fn read(&self, path: &TreePath, limit: u64) -> Result<Vec<u8>, ReleaseError> {
        let (id, _) = self.regular_file(path, limit)?;
        self.blob_bytes(&id)
            .map_err(|reason| self.error(path, reason))
    }

    /// A regular file's blob: its id and size, from the object header alone
    /// (the bytes are read once, when the file is written).
    pub fn blob_ref(&self, path: &TreePath, limit: u64) -> Result<BlobRef, ReleaseError> {
        let (id, len) = self.regular_file(path, limit)?;
        Ok(BlobRef {
            id: id.to_hex(),
            len,
        })
    }

    /// The bytes of the blob `id`.
    pub fn blob_bytes(&self, id: &ObjectId) -> Result<Vec<u8>, String> {
        match self.objects {
            Objects::Cache(repo) => {
                let oid =
                    git2::Oid::from_bytes(id.as_bytes()).map_err(|e| e.message().to_owned())?;
                let blob = repo.find_blob(oid).map_err(|e| e.message().to_owned())?;
                Ok(blob.content().to_vec())
            }
            Objects::Streamed(incoming) => incoming.blob_bytes(id).map_err(|e| e.to_string()),
            Objects::Local(source) => match source.object(id)? {
                (ObjectKind::Blob, bytes) => Ok(bytes),
                (kind, _) => Err(format!("object {id} is a {}, not a blob", kind.as_str())),
            },
        }
    }

    /// Any object of the release as git stores it: its type name and bytes
    /// (for keeping the verified tag, commit and trees on the node).
    pub fn raw_object(&self, id: &ObjectId) -> Result<(&'static str, Vec<u8>), String> {
        match self.objects {
            Objects::Cache(repo) => {
                let oid =
                    git2::Oid::from_bytes(id.as_bytes()).map_err(|e| e.message().to_owned())?;
                let odb = repo.odb().map_err(|e| e.message().to_owned())?;
                let raw = odb.read(oid).map_err(|e| e.message().to_owned())?;
                let kind = match raw.kind() {
                    ObjectType::Tag => "tag",
                    ObjectType::Commit => "commit",
                    ObjectType::Tree => "tree",
                    ObjectType::Blob => "blob",
                    other => return Err(format!("object {id} is a {other}")),
                };
                Ok((kind, raw.data().to_vec()))
            }
            Objects::Streamed(incoming) => match incoming.held(id) {
                Some((kind, bytes)) => Ok((kind.as_str(), bytes.to_vec())),
                None => incoming
                    .blob_bytes(id)
                    .map(|b| ("blob", b))
                    .map_err(|e| e.to_string()),
            },
            Objects::Local(source) => source.object(id).map(|(kind, b)| (kind.as_str(), b)),
        }
    }

    /// SHA-256 of a blob, when it is known without reading it again.
    pub fn known_sha256(&self, id: &ObjectId) -> Option<[u8; 32]> {
        match self.objects {
            Objects::Cache(_) | Objects::Local(_) => None,
            Objects::Streamed(incoming) => incoming.blob(id).map(|b| b.sha256),
        }
    }

    /// Writes blob `id` beside `path` (see [`Root::stage_file`]) and returns
    /// the staged entry and the content's SHA-256. A received blob is moved
    /// there when `last_use` says no other path needs it, else copied.
    pub fn stage_blob(
        &self,
        root: &Root,
        path: &NodePath,
        id: &ObjectId,
        owner: (u32, u32, u32),
        last_use: bool,
    ) -> anyhow::Result<(Staged, [u8; 32])> {
        let (mode, uid, gid) = owner;
        if let (Objects::Streamed(incoming), true) = (&self.objects, last_use) {
            if let Some(blob) = incoming.blob(id) {
                let moved = root.stage_moved(path, blob.dir, blob.name, mode, uid, gid)?;
                if let Some(staged) = moved {
                    return Ok((staged, blob.sha256));
                }
            }
        }
        let bytes = self.blob_bytes(id).map_err(|reason| ReleaseError {
            tag: self.verified.name.clone(),
            path: path.to_string(),
            reason,
        })?;
        let sha256 = crate::root::sha256_of(&bytes);
        let staged = root.stage_file(path, &bytes, mode, uid, gid)?;
        Ok((staged, sha256))
    }

    fn error(&self, path: &TreePath, reason: String) -> ReleaseError {
        self.error_at(path.as_str(), reason)
    }

    fn error_at(&self, path: &str, reason: String) -> ReleaseError {
        ReleaseError {
            tag: self.verified.name.clone(),
            path: path.to_owned(),
            reason,
        }
    }

    /// Every entry of the tree, by path.
    fn index(&self) -> Result<&TreeIndex, ReleaseError> {
        self.index
            .get_or_init(|| match self.objects {
                Objects::Cache(repo) => cache_index(repo, &self.tree),
                Objects::Streamed(incoming) => incoming.index(&self.tree),
                Objects::Local(source) => index_tree(&self.tree, |id| match source.object(id)? {
                    (ObjectKind::Tree, bytes) => Ok(bytes),
                    (kind, _) => Err(format!("object {id} is a {}, not a tree", kind.as_str())),
                }),
            })
            .as_ref()
            .map_err(|reason| self.error_at("/", reason.clone()))
    }

    /// The blob id of `path`, which must be a regular file of at most `limit` bytes.
    fn regular_file(&self, path: &TreePath, limit: u64) -> Result<(ObjectId, u64), ReleaseError> {
        let (id, mode) = *self
            .index()?
            .get(path.as_str())
            .ok_or_else(|| self.error(path, "no such file in the release".into()))?;
        if !(mode == 0o100644 || mode == 0o100755) {
            return Err(self.error(path, format!("not a regular file (git mode {mode:o})")));
        }
        let size = match self.objects {
            Objects::Cache(repo) => {
                let odb = repo
                    .odb()
                    .map_err(|e| self.error(path, e.message().to_owned()))?;
                let oid = git2::Oid::from_bytes(id.as_bytes())
                    .map_err(|e| self.error(path, e.message().to_owned()))?;
                let (size, kind) = odb
                    .read_header(oid)
                    .map_err(|e| self.error(path, e.message().to_owned()))?;
                if kind != ObjectType::Blob {
                    return Err(self.error(path, "not a file".into()));
                }
                size as u64
            }
            Objects::Streamed(incoming) => {
                incoming
                    .blob(&id)
                    .ok_or_else(|| self.error(path, "its blob did not arrive".into()))?
                    .size
            }
            Objects::Local(_) => {
                // Read whole (an operator's command, bounded by the source).
                let bytes = self.blob_bytes(&id).map_err(|e| self.error(path, e))?;
                bytes.len() as u64
            }
        };
        if size > limit {
            return Err(self.error(path, format!("{size} bytes; at most {limit} are allowed")));
        }
        Ok((id, size))
    }

    /// Reads and validates the node spec.
    pub fn spec(&self, path: &TreePath) -> Result<NodeSpec, SpecError> {
        let file = path.to_string();
        let bytes = self
            .read(path, MAX_SPEC_LEN as u64)
            .map_err(|e| SpecError {
                file: file.clone(),
                reason: e.reason,
            })?;
        let text = String::from_utf8(bytes).map_err(|_| SpecError {
            file: file.clone(),
            reason: "not UTF-8".into(),
        })?;
        NodeSpec::parse(&text, &file)
    }

    /// Reads a file the spec names as content.
    pub fn content(&self, path: &TreePath) -> Result<Vec<u8>, ReleaseError> {
        self.read(path, MAX_FILE_LEN)
    }
}

fn cache_index(repo: &Repository, tree: &ObjectId) -> Result<TreeIndex, String> {
    let oid = git2::Oid::from_bytes(tree.as_bytes()).map_err(|e| e.message().to_owned())?;
    let tree = repo.find_tree(oid).map_err(|e| e.message().to_owned())?;
    let mut map = HashMap::new();
    let mut too_many = false;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if map.len() >= MAX_TREE_ENTRIES {
            too_many = true;
            return git2::TreeWalkResult::Abort;
        }
        let id = ObjectId::from_bytes(ObjectFormat::Sha1, entry.id().as_bytes());
        if let (Ok(name), Some(id)) = (entry.name(), id) {
            map.insert(
                format!("{dir}{name}"),
                (id, u32::try_from(entry.filemode()).unwrap_or(0)),
            );
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| e.message().to_owned())?;
    if too_many {
        return Err(format!("the tree has more than {MAX_TREE_ENTRIES} entries"));
    }
    Ok(map)
}
