//! What the filesystem says about a path beyond its inode: the immutable
//! attribute (`chattr +i`) and whether it is a read-only mount point. The
//! node stage sets them (see `node::lock`); the record stage reads them to
//! tell a locked node from a drifted one.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::root::{Kind, Root, RootError};
use crate::types::NodePath;

/// The inode flag behind `chattr +i`.
const FS_IMMUTABLE_FL: nix::libc::c_long = 0x0000_0010;

#[allow(unsafe_code)]
mod ioctl {
    // FS_IOC_GETFLAGS / FS_IOC_SETFLAGS: declared with `long`, the kernel
    // reads and writes an `int` at that address; on little-endian Linux the
    // low bytes of a zero-initialised `long` are exactly that int.
    nix::ioctl_read!(get_flags, b'f', 1, nix::libc::c_long);
    nix::ioctl_write_ptr!(set_flags, b'f', 2, nix::libc::c_long);
}

fn open_for_flags(root: &Root, path: &NodePath, kind: Kind) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let flags = if kind == Kind::Directory {
        flags | OFlag::O_DIRECTORY
    } else {
        flags
    };
    root.open_raw(path, flags)
}

#[allow(unsafe_code)]
fn read_flags(fd: &OwnedFd) -> Result<nix::libc::c_long, Errno> {
    let mut flags: nix::libc::c_long = 0;
    // SAFETY: `fd` is an open descriptor owned for the call, and `flags` is a
    // valid, initialised long the kernel writes an int into.
    unsafe { ioctl::get_flags(fd.as_fd().as_raw_fd(), &mut flags) }?;
    Ok(flags & 0xffff_ffff)
}

#[allow(unsafe_code)]
fn write_flags(fd: &OwnedFd, flags: nix::libc::c_long) -> Result<(), Errno> {
    // SAFETY: as above; the kernel reads an int from `flags`.
    unsafe { ioctl::set_flags(fd.as_fd().as_raw_fd(), &flags) }?;
    Ok(())
}

/// True when `path` (a file or directory) carries the immutable attribute.
pub fn is_immutable(root: &Root, path: &NodePath, kind: Kind) -> Result<bool, Errno> {
    let fd = open_for_flags(root, path, kind)?;
    Ok(read_flags(&fd)? & FS_IMMUTABLE_FL != 0)
}

/// Sets or clears the immutable attribute on `path`.
pub fn set_immutable(root: &Root, path: &NodePath, kind: Kind, on: bool) -> Result<(), Errno> {
    let fd = open_for_flags(root, path, kind)?;
    let flags = read_flags(&fd)?;
    let wanted = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if wanted != flags {
        write_flags(&fd, wanted)?;
        crate::root::failpoint::hit(if on { "lock" } else { "unlock" }, Some(path));
    }
    Ok(())
}

/// Before an interrupted apply rewrites `path`, clears the attribute on it and
/// on its parent directory if an earlier run of the same apply locked them.
/// Only ever called for paths the pinned release manages.
pub fn clear_for_rewrite(root: &Root, path: &NodePath) -> Result<(), RootError> {
    let fail = |e: Errno| RootError {
        path: path.to_string(),
        reason: format!("cannot clear the immutable attribute: {e}"),
    };
    for p in [Some(path.clone()), path.parent()].into_iter().flatten() {
        match root.observe(&p)? {
            Some(o) if matches!(o.kind, Kind::File | Kind::Directory) => {
                match is_immutable(root, &p, o.kind) {
                    Ok(true) => set_immutable(root, &p, o.kind, false).map_err(fail)?,
                    Ok(false) | Err(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL) => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// True when `path` under the root is a mount point mounted read-only in
/// the node's mount namespace.
///
/// That is PID 1's (`/proc/1/mountinfo`), not necessarily the caller's: the
/// watcher runs in a namespace of its own (`ProtectSystem=strict`,
/// `PrivateMounts=`), where systemd has made every mount read-only and
/// where a later remount on the node does not change a mount's flags. Read
/// there, a bind mount someone remounted writable would still look locked.
/// Apply, `check` and the tests run in the node's namespace, where both
/// files say the same; `/proc/self/mountinfo` is the fallback where PID 1's
/// cannot be read (a `/proc` mounted with `hidepid=`).
///
/// The path is resolved strictly first (no symlink, no foreign owner on the
/// way): a directory that a link now leads to is not the one that was locked.
pub fn is_read_only_mount(root: &Root, path: &NodePath) -> bool {
    use nix::fcntl::OFlag;
    if root
        .open_raw(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
        .is_err()
    {
        return false;
    }
    let Ok(host) = std::fs::canonicalize(root.path()).map(|r| path.under(&r)) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/1/mountinfo")
        .or_else(|_| std::fs::read_to_string("/proc/self/mountinfo"))
    else {
        return false;
    };
    read_only_mount_points(&info)
        .iter()
        .rev()
        .find(|(p, _)| *p == host)
        .is_some_and(|(_, ro)| *ro)
}

/// Mount points and whether each is read-only, from `/proc/self/mountinfo`
/// text, in mount order (a later line shadows an earlier one).
pub fn read_only_mount_points(mountinfo: &str) -> Vec<(PathBuf, bool)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let options = fields.get(5)?;
            let ro = options.split(',').any(|o| o == "ro");
            Some((PathBuf::from(unescape_octal(point)), ro))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && bytes
                .get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_escapes() {
        let info = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 22 254:0 /etc/app /etc/app ro,relatime shared:1 - ext4 /dev/vda rw\n\
                    91 22 0:50 / /srv/a\\040b rw - tmpfs none rw\n";
        let points = read_only_mount_points(info);
        assert_eq!(points[1], (PathBuf::from("/etc/app"), true));
        assert_eq!(points[2], (PathBuf::from("/srv/a b"), false));
        assert!(!points[0].1);
    }
}
