//! Writing beneath a [`Root`]: directories made, files and links staged
//! beside their targets and renamed into place, entries removed. Apart from
//! the reading side because it owns the durability protocol (temporary
//! names, owner and mode before the rename, the syncs) that reading never
//! needs.

use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode as NixMode;
use nix::unistd::{Gid, Uid};
use ring::digest;

use super::{Kind, Root, RootError, describe, err};
use crate::types::NodePath;

impl Root {
    /// Creates `path` as a directory if it is missing (parents too, as root
    /// 0755), then sets its owner and mode. An existing non-directory there
    /// is an error: the agent never deletes what it does not understand.
    pub fn ensure_dir(
        &self,
        path: &NodePath,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), RootError> {
        if path.as_str() == "/" {
            return Ok(());
        }
        match self.observe(path)? {
            Some(o) if o.kind == Kind::Directory => {}
            Some(o) => {
                return Err(err(
                    path,
                    "cannot create directory",
                    format!("a {:?} is in the way", o.kind).to_lowercase(),
                ));
            }
            None => {
                if let Some(parent) = path.parent() {
                    if self.observe(&parent)?.is_none() {
                        self.ensure_dir(&parent, 0o755, 0, 0)?;
                    }
                }
                let (dir, name) = self.parent(path)?;
                match nix::sys::stat::mkdirat(dir.as_fd(), name, NixMode::from_bits_truncate(0o700))
                {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(path, "cannot create directory", e)),
                }
                nix::unistd::fsync(dir.as_fd()).map_err(|e| err(path, "cannot sync parent", e))?;
            }
        }
        let fd = self
            .open_beneath(
                path.relative(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            )
            .map_err(|e| err(path, "cannot open directory", describe(e)))?;
        set_owner_mode(&fd, path, mode, uid, gid)
    }

    /// Replaces `path` with a regular file holding `bytes`, atomically and durably.
    pub fn write_file(
        &self,
        path: &NodePath,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), RootError> {
        let staged = self.stage_file(path, bytes, mode, uid, gid)?;
        let dir = self.open_dir(&staged.parent)?;
        let tmp = nix::fcntl::openat(
            dir.as_fd(),
            staged.tmp.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            NixMode::empty(),
        )
        .map_err(|e| err(path, "cannot reopen temporary file", e))?;
        nix::unistd::fsync(tmp.as_fd()).map_err(|e| err(path, "cannot sync", e))?;
        self.put_in_place(&staged)?;
        nix::unistd::fsync(dir.as_fd()).map_err(|e| err(path, "cannot sync directory", e))
    }

    /// Writes `bytes` to the temporary file beside `path`, with its final
    /// owner and mode, without syncing: the caller makes a batch durable with
    /// [`Root::sync`] before [`Root::put_in_place`], so a crash never leaves
    /// a renamed file whose data is not on disk.
    pub fn stage_file(
        &self,
        path: &NodePath,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Staged, RootError> {
        let (dir, name) = self.parent(path)?;
        let tmp = temp_name(name);
        remove_if_present(&dir, &tmp)
            .map_err(|e| err(path, "cannot remove stale temporary file", e))?;
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            NixMode::from_bits_truncate(0o600),
        )
        .map_err(|e| err(path, "cannot create temporary file", e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
            .map_err(|e| err(path, "cannot write", e))?;
        set_owner_mode(&file, path, mode, uid, gid)?;
        Ok(Staged::new(path, tmp))
    }

    /// Moves the file `from_name` of the directory `from_dir` beside `path`
    /// with its mode and owner, to be put in place like a staged file.
    /// `None` when the two are on different filesystems: the caller copies.
    pub fn stage_moved(
        &self,
        path: &NodePath,
        from_dir: BorrowedFd<'_>,
        from_name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Option<Staged>, RootError> {
        let (dir, name) = self.parent(path)?;
        let tmp = temp_name(name);
        remove_if_present(&dir, &tmp)
            .map_err(|e| err(path, "cannot remove stale temporary file", e))?;
        match nix::fcntl::renameat(from_dir, from_name, dir.as_fd(), tmp.as_str()) {
            Err(Errno::EXDEV) => return Ok(None),
            Err(e) => return Err(err(path, "cannot move the received file", e)),
            Ok(()) => {}
        }
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            tmp.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            NixMode::empty(),
        )
        .map_err(|e| err(path, "cannot open temporary file", e))?;
        set_owner_mode(&fd, path, mode, uid, gid)?;
        Ok(Some(Staged::new(path, tmp)))
    }

    /// Creates the symlink beside `path`, to be put in place like a staged file.
    pub fn stage_link(&self, path: &NodePath, target: &str) -> Result<Staged, RootError> {
        let (dir, name) = self.parent(path)?;
        let tmp = temp_name(name);
        remove_if_present(&dir, &tmp)
            .map_err(|e| err(path, "cannot remove stale temporary file", e))?;
        nix::unistd::symlinkat(target, dir.as_fd(), tmp.as_str())
            .map_err(|e| err(path, "cannot create link", e))?;
        Ok(Staged::new(path, tmp))
    }

    /// Replaces `path` with a symlink to `target`, atomically and durably.
    pub fn write_link(&self, path: &NodePath, target: &str) -> Result<(), RootError> {
        let staged = self.stage_link(path, target)?;
        self.put_in_place(&staged)?;
        let dir = self.open_dir(&staged.parent)?;
        nix::unistd::fsync(dir.as_fd()).map_err(|e| err(path, "cannot sync directory", e))
    }

    /// Renames a staged entry over its target (atomic; durable after [`Root::sync`]).
    pub fn put_in_place(&self, staged: &Staged) -> Result<(), RootError> {
        let path = &staged.path;
        let dir = self.open_dir(&staged.parent)?;
        if let Some(o) = self.observe(path)? {
            if o.kind == Kind::Directory {
                let _ = remove_if_present(&dir, &staged.tmp);
                return Err(err(path, "cannot replace", "a directory is in the way"));
            }
        }
        nix::fcntl::renameat(
            dir.as_fd(),
            staged.tmp.as_str(),
            dir.as_fd(),
            path.file_name(),
        )
        .map_err(|e| err(path, "cannot rename into place", e))
    }

    /// Makes everything written under the root so far durable (`syncfs`).
    pub fn sync(&self) -> Result<(), RootError> {
        nix::unistd::syncfs(self.fd.as_fd()).map_err(|e| RootError {
            path: "/".into(),
            reason: format!("cannot sync the filesystem: {e}"),
        })
    }

    /// Removes the file or link `path`, if it is there, durably.
    pub fn remove_file(&self, path: &NodePath) -> Result<(), RootError> {
        let (dir, name) = match self.parent(path) {
            Ok(found) => found,
            Err(_) if self.missing_parent(path) => return Ok(()),
            Err(e) => return Err(e),
        };
        remove_if_present(&dir, name).map_err(|e| err(path, "cannot remove", e))?;
        nix::unistd::fsync(dir.as_fd()).map_err(|e| err(path, "cannot sync directory", e))
    }

    /// Removes leftovers of an interrupted write of `path`, if any.
    pub fn clean_temp(&self, path: &NodePath) -> Result<(), RootError> {
        let Ok((dir, name)) = self.parent(path) else {
            return Ok(());
        };
        remove_if_present(&dir, &temp_name(name))
            .map_err(|e| err(path, "cannot remove stale temporary file", e))
    }
}

/// An entry written beside its target, waiting for [`Root::put_in_place`].
#[derive(Debug)]
pub struct Staged {
    path: NodePath,
    parent: NodePath,
    tmp: String,
}

impl Staged {
    fn new(path: &NodePath, tmp: String) -> Self {
        let parent = path.parent().unwrap_or_else(|| path.clone());
        Self {
            path: path.clone(),
            parent,
            tmp,
        }
    }

    /// The target path.
    pub fn path(&self) -> &NodePath {
        &self.path
    }
}

fn set_owner_mode(
    fd: &impl AsFd,
    path: &NodePath,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), RootError> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| err(path, "cannot stat", e))?;
    if st.st_uid != uid || st.st_gid != gid {
        nix::unistd::fchown(
            fd.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| err(path, &format!("cannot set owner {uid}:{gid}"), describe(e)))?;
    }
    // After chown, which clears set-id bits.
    nix::sys::stat::fchmod(fd.as_fd(), NixMode::from_bits_truncate(mode))
        .map_err(|e| err(path, "cannot set mode", e))
}

fn remove_if_present(dir: &OwnedFd, name: &str) -> nix::Result<()> {
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The temporary name used while writing `name`: hidden, bounded in length,
/// and the same on every run, so a later run finds an interrupted one's file.
pub fn temp_name(name: &str) -> String {
    let hash = digest::digest(&digest::SHA256, name.as_bytes());
    let hex: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(".driftless-tmp-{hex}")
}
