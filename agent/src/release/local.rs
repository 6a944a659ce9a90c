//! Release trees on the operator's machine: the tree a commit of the work
//! tree would have, or the tree a tag names, in a local repository, for
//! the commands that judge or compare releases before a node sees them
//! (`lint`, `diff`, `release`). Nothing here verifies a signature (that is
//! `verify`'s), and nothing is written to the repository: the work tree's
//! objects are made in memory only.

use std::path::Path;

use anyhow::Context as _;
use git2::{Oid, Repository, RepositoryOpenFlags};

use crate::config::ConfigError;
use crate::verify::VerifyError;

/// Opens the repository at `dir` (a work tree or a bare repository);
/// with `search`, also from a directory inside a work tree, as git does.
pub fn open(dir: &Path, search: bool) -> Result<Repository, ConfigError> {
    let flags = if search {
        RepositoryOpenFlags::empty()
    } else {
        RepositoryOpenFlags::NO_SEARCH
    };
    Repository::open_ext(dir, flags, std::iter::empty::<&str>()).map_err(|e| ConfigError {
        path: dir.display().to_string(),
        reason: if e.message().contains("object format") && e.message().contains("sha256") {
            "a SHA-256 repository, which this command reads with libgit2, which cannot read \
             SHA-256; driftless verify checks its tags and commits, and nodes boot from it over \
             smart HTTP(S)"
                .to_owned()
        } else {
            format!(
                "not a git repository ({}); a release is a git repository: run git init there, or give the right directory",
                e.message()
            )
        },
    })
}

/// The tree `git add -A && git commit` would make of the work tree: the
/// files git would take (ignored ones left out, executable bits and
/// symlinks as git records them), written to an in-memory object store
/// added to `repo`, so the repository on disk and its index are left as
/// they were. The objects stay readable through `repo` while it lives.
pub fn worktree_tree(repo: &Repository) -> anyhow::Result<Oid> {
    let dir = repo
        .workdir()
        .context("the repository has no work tree (a bare repository): give a tag with --tag")?
        .to_path_buf();
    let odb = repo.odb()?;
    // Above the loose and packed backends (priorities 1 and 2): every
    // object written from here goes to memory.
    odb.add_new_mempack_backend(1000)?;
    // The on-disk index, read for its stat cache and changed only in
    // memory: it is never written back.
    let mut index = repo.index()?;
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .and_then(|()| index.update_all(["*"], None))
        .with_context(|| format!("reading the work tree {}", dir.display()))?;
    Ok(index.write_tree()?)
}

/// The commit and tree tag `name` names (annotated or not; its signature
/// is not checked here).
pub fn tag_tree(repo: &Repository, name: &str) -> anyhow::Result<(Oid, Oid)> {
    let reference = repo
        .find_reference(&format!("refs/tags/{name}"))
        .map_err(|_| VerifyError::NotFound)
        .with_context(|| format!("tag {name}"))?;
    let commit = reference
        .peel_to_commit()
        .map_err(|e| anyhow::anyhow!("tag {name}: does not name a commit: {}", e.message()))?;
    Ok((commit.id(), commit.tree_id()))
}
