//! Writing beneath a [`Root`]: directories made, files and links staged
//! beside their targets and renamed into place, entries removed. Apart from
//! the reading side because it owns the durability protocol (temporary
//! names, owner and mode before the rename, the syncs) that reading never
//! needs.

use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::{Mode as NixMode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use ring::digest;

use super::failpoint::hit;
use super::walk::Dir;
use super::{Root, RootError, describe, err};
use crate::types::NodePath;

impl Root {
    /// Makes `path` a directory with exactly this owner and mode. A missing
    /// directory appears with them or not at all: it is made under a
    /// temporary name, given its owner and mode, and renamed into place. Missing parents are made the same way (root, 0755; the caller
    /// in an unprivileged run). An existing directory gets its owner and
    /// mode set again. Anything else in the way is an error: the agent never
    /// deletes what it does not understand.
    pub fn ensure_dir(
        &self,
        path: &NodePath,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), RootError> {
        self.make_dir(path, mode, uid, gid).map(drop)
    }

    fn make_dir(&self, path: &NodePath, mode: u32, uid: u32, gid: u32) -> Result<Dir, RootError> {
        let Some(parent) = path.parent() else {
            return Ok(self.top());
        };
        let dir = match self.parent_of(path)? {
            Some((dir, _)) => dir,
            None => {
                let (euid, egid) = caller();
                self.make_dir(&parent, 0o755, euid, egid)?
            }
        };
        dir_in(&dir, path, mode, uid, gid)
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
        let (staged, file) = self.stage(path, bytes, mode, uid, gid)?;
        nix::unistd::fsync(file.as_fd()).map_err(|e| err(path, "cannot sync", e))?;
        drop(file);
        self.put_in_place(&staged)?;
        staged.sync_dir()
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
        self.stage(path, bytes, mode, uid, gid)
            .map(|(staged, _)| staged)
    }

    fn stage(
        &self,
        path: &NodePath,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Staged, std::fs::File), RootError> {
        let (dir, name) = self.parent_dir(path)?;
        let tmp = temp_name(name);
        remove_stale(&dir, &tmp, path)?;
        let fd = dir
            .create(&tmp)
            .map_err(|e| err(path, "cannot create temporary file", e))?;
        hit("create", Some(path));
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
            .map_err(|e| err(path, "cannot write", e))?;
        hit("write", Some(path));
        set_owner_mode(&file, path, mode, uid, gid)?;
        Ok((Staged::new(path, dir, tmp), file))
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
        let (dir, name) = self.parent_dir(path)?;
        let tmp = temp_name(name);
        remove_stale(&dir, &tmp, path)?;
        match nix::fcntl::renameat(from_dir, from_name, dir.fd(), tmp.as_str()) {
            Err(Errno::EXDEV) => return Ok(None),
            Err(e) => return Err(err(path, "cannot move the received file", e)),
            Ok(()) => hit("move", Some(path)),
        }
        let fd = dir
            .open(&tmp, OFlag::O_RDONLY)
            .map_err(|e| err(path, "cannot open temporary file", e))?;
        set_owner_mode(&fd, path, mode, uid, gid)?;
        Ok(Some(Staged::new(path, dir, tmp)))
    }

    /// Creates the symlink beside `path`, to be put in place like a staged file.
    pub fn stage_link(&self, path: &NodePath, target: &str) -> Result<Staged, RootError> {
        let (dir, name) = self.parent_dir(path)?;
        let tmp = temp_name(name);
        remove_stale(&dir, &tmp, path)?;
        nix::unistd::symlinkat(target, dir.fd(), tmp.as_str())
            .map_err(|e| err(path, "cannot create link", e))?;
        hit("symlink", Some(path));
        Ok(Staged::new(path, dir, tmp))
    }

    /// Replaces `path` with a symlink to `target`, atomically and durably.
    pub fn write_link(&self, path: &NodePath, target: &str) -> Result<(), RootError> {
        let staged = self.stage_link(path, target)?;
        self.put_in_place(&staged)?;
        staged.sync_dir()
    }

    /// Renames a staged entry over its target (atomic; durable after
    /// [`Root::sync`]), in the directory it was staged in.
    pub fn put_in_place(&self, staged: &Staged) -> Result<(), RootError> {
        let (path, dir) = (&staged.path, &staged.dir);
        let name = path.file_name();
        let in_the_way = dir
            .stat(name)
            .map_err(|e| err(path, "cannot stat", e))?
            .is_some_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits());
        if in_the_way {
            let _ = remove_stale(dir, &staged.tmp, path);
            return Err(err(path, "cannot replace", "a directory is in the way"));
        }
        nix::fcntl::renameat(dir.fd(), staged.tmp.as_str(), dir.fd(), name)
            .map_err(|e| err(path, "cannot rename into place", e))?;
        hit("rename", Some(path));
        Ok(())
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
        let Some((dir, name)) = self.parent_of(path)? else {
            return Ok(());
        };
        match nix::unistd::unlinkat(dir.fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => hit("unlink", Some(path)),
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(err(path, "cannot remove", e)),
        }
        nix::unistd::fsync(dir.fd()).map_err(|e| err(path, "cannot sync directory", e))
    }

    /// Removes leftovers of an interrupted write of `path`, if any.
    pub fn clean_temp(&self, path: &NodePath) -> Result<(), RootError> {
        let Ok(Some((dir, name))) = self.parent_of(path) else {
            return Ok(());
        };
        remove_stale(&dir, &temp_name(name), path)
    }
}

/// The caller's ids: what a directory made for nobody in particular gets
/// (root in a real run; the caller when an unprivileged run builds a
/// scratch root, which cannot give files away).
fn caller() -> (u32, u32) {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        (0, 0)
    } else {
        (euid, nix::unistd::getegid().as_raw())
    }
}

/// The directory `path` (named in `parent`) with this owner and mode:
/// set on an existing one, or made whole under a temporary name.
fn dir_in(parent: &Dir, path: &NodePath, mode: u32, uid: u32, gid: u32) -> Result<Dir, RootError> {
    let name = path.file_name();
    let existing = |what: &str| -> Result<Option<Dir>, RootError> {
        let Some(st) = parent.stat(name).map_err(|e| err(path, "cannot stat", e))? else {
            return Ok(None);
        };
        let kind = st.st_mode & SFlag::S_IFMT.bits();
        if kind != SFlag::S_IFDIR.bits() {
            let found = if kind == SFlag::S_IFLNK.bits() {
                "symlink"
            } else if kind == SFlag::S_IFREG.bits() {
                "file"
            } else {
                "special file"
            };
            return Err(err(path, what, format!("a {found} is in the way")));
        }
        let fd = parent
            .open(name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| err(path, "cannot open directory", describe(e)))?;
        set_owner_mode(&fd, path, mode, uid, gid)?;
        Ok(Some(Dir::new(fd, path.clone())))
    };
    if let Some(dir) = existing("cannot create directory")? {
        return Ok(dir);
    }
    let tmp = temp_name(name);
    remove_stale(parent, &tmp, path)?;
    nix::sys::stat::mkdirat(
        parent.fd(),
        tmp.as_str(),
        NixMode::from_bits_truncate(0o700),
    )
    .map_err(|e| err(path, "cannot create directory", e))?;
    hit("mkdir", Some(path));
    let fd = parent
        .open(&tmp, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| err(path, "cannot open the new directory", describe(e)))?;
    set_owner_mode(&fd, path, mode, uid, gid)?;
    match nix::fcntl::renameat2(
        parent.fd(),
        tmp.as_str(),
        parent.fd(),
        name,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => hit("rename", Some(path)),
        // Someone made it meanwhile: use theirs, as if it had been there.
        Err(Errno::EEXIST) => {
            remove_stale(parent, &tmp, path)?;
            return existing("cannot create directory")?
                .ok_or_else(|| err(path, "cannot create directory", "it vanished"));
        }
        Err(e) => return Err(err(path, "cannot rename the new directory into place", e)),
    }
    // Makes the rename durable, and with it the owner and mode set before
    // it (a journaling filesystem commits metadata changes in order).
    nix::unistd::fsync(parent.fd()).map_err(|e| err(path, "cannot sync parent", e))?;
    Ok(Dir::new(fd, path.clone()))
}

/// An entry written beside its target, waiting for [`Root::put_in_place`].
/// It holds the directory it was written in: it is renamed there.
#[derive(Debug)]
pub struct Staged {
    path: NodePath,
    dir: Dir,
    tmp: String,
}

impl Staged {
    fn new(path: &NodePath, dir: Dir, tmp: String) -> Self {
        Self {
            path: path.clone(),
            dir,
            tmp,
        }
    }

    /// The target path.
    pub fn path(&self) -> &NodePath {
        &self.path
    }

    /// The directory it is written in.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    fn sync_dir(&self) -> Result<(), RootError> {
        nix::unistd::fsync(self.dir.fd()).map_err(|e| err(&self.path, "cannot sync directory", e))
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
    let chown = st.st_uid != uid || st.st_gid != gid;
    if chown {
        nix::unistd::fchown(
            fd.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| err(path, &format!("cannot set owner {uid}:{gid}"), describe(e)))?;
        hit("chown", Some(path));
    }
    // After chown, which clears set-id bits.
    if chown || st.st_mode & 0o7777 != mode {
        nix::sys::stat::fchmod(fd.as_fd(), NixMode::from_bits_truncate(mode))
            .map_err(|e| err(path, "cannot set mode", e))?;
        hit("chmod", Some(path));
    }
    Ok(())
}

/// Removes a temporary entry an interrupted run left (a file, a link, or
/// an empty directory), if there is one.
fn remove_stale(dir: &Dir, tmp: &str, path: &NodePath) -> Result<(), RootError> {
    let fail = |e| err(path, "cannot remove stale temporary entry", e);
    match nix::unistd::unlinkat(dir.fd(), tmp, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => hit("unlink", Some(path)),
        Err(Errno::ENOENT) => {}
        Err(Errno::EISDIR) => {
            nix::unistd::unlinkat(dir.fd(), tmp, UnlinkatFlags::RemoveDir).map_err(fail)?;
            hit("rmdir", Some(path));
        }
        Err(e) => return Err(fail(e)),
    }
    Ok(())
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
