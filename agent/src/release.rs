//! A verified release, read straight from the object database: the node
//! spec and the bytes of every file it names. Nothing is checked out, and
//! only the verified commit's tree is ever read.

use std::path::Path;

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
            verified,
        })
    }

    /// Reads a regular file of the release, refusing anything else (a
    /// symlink, a submodule, a directory) and anything over `limit` bytes.
    pub fn read(&self, path: &TreePath, limit: u64) -> Result<Vec<u8>, ReleaseError> {
        let fail = |reason: String| ReleaseError {
            tag: self.verified.name.clone(),
            path: path.to_string(),
            reason,
        };
        let entry = self
            .tree
            .get_path(Path::new(path.as_str()))
            .map_err(|_| fail("no such file in the release".into()))?;
        let mode = entry.filemode();
        if entry.kind() != Some(ObjectType::Blob) || !(mode == 0o100644 || mode == 0o100755) {
            return Err(fail(format!("not a regular file (git mode {mode:o})")));
        }
        let odb = self.repo.odb().map_err(|e| fail(e.message().to_owned()))?;
        let (size, _) = odb
            .read_header(entry.id())
            .map_err(|e| fail(e.message().to_owned()))?;
        if size as u64 > limit {
            return Err(fail(format!("{size} bytes; at most {limit} are allowed")));
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| fail(e.message().to_owned()))?;
        Ok(blob.content().to_vec())
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
