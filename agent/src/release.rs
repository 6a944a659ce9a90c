//! A verified release, read straight from the object database: the node
//! spec and the bytes of every file it names. Nothing is checked out, and
//! only the verified commit's tree is ever read.

use git2::{ObjectType, Repository, Tree};

use crate::spec::{MAX_FILE_LEN, MAX_SPEC_LEN, NodeSpec, SpecError};
use crate::types::TreePath;
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

/// The verified commit's tree.
pub struct Release<'r> {
    tree: Tree<'r>,
    repo: &'r Repository,
    /// Every blob of the tree by path, from one walk (instead of one walk
    /// from the root per file).
    index: std::cell::OnceCell<std::collections::HashMap<String, (git2::Oid, i32)>>,
    /// The verification that admitted this release.
    pub verified: Verified,
}

impl<'r> Release<'r> {
    /// Opens the tree of a verified tag or commit.
    pub fn open(repo: &'r Repository, verified: Verified) -> Result<Self, ReleaseError> {
        let fail = |reason: String| ReleaseError {
            tag: verified.name.clone(),
            path: "/".into(),
            reason,
        };
        let oid = git2::Oid::from_str(&verified.tree).map_err(|e| fail(e.message().to_owned()))?;
        let tree = repo
            .find_tree(oid)
            .map_err(|e| fail(format!("tree missing from the cache: {}", e.message())))?;
        Ok(Self {
            tree,
            repo,
            index: std::cell::OnceCell::new(),
            verified,
        })
    }

    /// Reads a regular file of the release, refusing anything else (a
    /// symlink, a submodule, a directory) and anything over `limit` bytes.
    pub fn read(&self, path: &TreePath, limit: u64) -> Result<Vec<u8>, ReleaseError> {
        let (id, _) = self.regular_file(path, limit)?;
        self.blob_bytes(id)
            .map_err(|reason| self.error(path, reason))
    }

    /// A regular file's blob: its id and size, from the object header alone
    /// (the bytes are read once, when the file is written).
    pub fn blob_ref(
        &self,
        path: &TreePath,
        limit: u64,
    ) -> Result<crate::plan::BlobRef, ReleaseError> {
        let (id, len) = self.regular_file(path, limit)?;
        Ok(crate::plan::BlobRef {
            id: id.to_string(),
            len,
        })
    }

    /// The bytes of the blob `id` (read from the object database, which
    /// checks them against their id).
    pub fn blob_bytes(&self, id: git2::Oid) -> Result<Vec<u8>, String> {
        let blob = self
            .repo
            .find_blob(id)
            .map_err(|e| e.message().to_owned())?;
        Ok(blob.content().to_vec())
    }

    fn error(&self, path: &TreePath, reason: String) -> ReleaseError {
        ReleaseError {
            tag: self.verified.name.clone(),
            path: path.to_string(),
            reason,
        }
    }

    /// The blob id of `path`, which must be a regular file of at most `limit` bytes.
    fn regular_file(&self, path: &TreePath, limit: u64) -> Result<(git2::Oid, u64), ReleaseError> {
        let index = self.index.get_or_init(|| {
            let mut map = std::collections::HashMap::new();
            let _ = self.tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                if let Ok(name) = entry.name() {
                    map.insert(format!("{dir}{name}"), (entry.id(), entry.filemode()));
                }
                git2::TreeWalkResult::Ok
            });
            map
        });
        let (id, mode) = *index
            .get(path.as_str())
            .ok_or_else(|| self.error(path, "no such file in the release".into()))?;
        if !(mode == 0o100644 || mode == 0o100755) {
            return Err(self.error(path, format!("not a regular file (git mode {mode:o})")));
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| self.error(path, e.message().to_owned()))?;
        let (size, kind) = odb
            .read_header(id)
            .map_err(|e| self.error(path, e.message().to_owned()))?;
        if kind != ObjectType::Blob {
            return Err(self.error(path, "not a file".into()));
        }
        if size as u64 > limit {
            return Err(self.error(path, format!("{size} bytes; at most {limit} are allowed")));
        }
        Ok((id, size as u64))
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
