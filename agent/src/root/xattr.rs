//! Extended attributes of a path beneath the root: the security-relevant
//! ones (POSIX ACLs, file capabilities, `security.*` labels) read and set
//! through a descriptor opened beneath the root, never by host path. The
//! record stage reads them to tell a managed file's attributes from those
//! its release gave it; apply sets the ones a spec declares.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::root::{Kind, Root};
use crate::types::NodePath;

/// The most bytes of attribute names, or of one value, read from a path.
const MAX_XATTR: usize = 64 * 1024;

/// True for the attributes that change who may do what with a path:
/// POSIX ACLs (`system.posix_acl_*`), file capabilities and every other
/// `security.*` label (SELinux, SMACK, IMA, EVM, AppArmor). `user.*` and
/// `trusted.*` attributes grant nothing and are not compared.
pub fn is_security_relevant(name: &str) -> bool {
    name.starts_with("security.") || name.starts_with("system.posix_acl_")
}

fn open(root: &Root, path: &NodePath, kind: Kind) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let flags = match kind {
        Kind::Directory => flags | OFlag::O_DIRECTORY,
        Kind::File => flags,
        // Symlinks and special files carry none the kernel honours for access.
        Kind::Link | Kind::Other => return Err(Errno::ENOTSUP),
    };
    root.open_raw(path, flags)
}

/// The security-relevant attributes of `path` (a file or directory), by
/// name, with their raw values. Empty where the filesystem has none.
#[allow(unsafe_code)]
pub fn security_xattrs(
    root: &Root,
    path: &NodePath,
    kind: Kind,
) -> Result<BTreeMap<String, Vec<u8>>, Errno> {
    let fd = match open(root, path, kind) {
        Err(Errno::ENOTSUP) => return Ok(BTreeMap::new()),
        other => other?,
    };
    let mut names = vec![0u8; MAX_XATTR];
    // SAFETY: `fd` is open for the call; `names` is a writable buffer of the length given.
    let len = unsafe {
        nix::libc::flistxattr(
            fd.as_raw_fd(),
            names.as_mut_ptr().cast::<nix::libc::c_char>(),
            names.len(),
        )
    };
    if len < 0 {
        return match Errno::last() {
            Errno::ENOTSUP => Ok(BTreeMap::new()),
            e => Err(e),
        };
    }
    names.truncate(len as usize);
    let mut out = BTreeMap::new();
    for raw in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !is_security_relevant(name) {
            continue;
        }
        let mut value = vec![0u8; MAX_XATTR];
        let cname = std::ffi::CString::new(raw).map_err(|_| Errno::EINVAL)?;
        // SAFETY: as above; `cname` is NUL-terminated and lives for the call.
        let n = unsafe {
            nix::libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                value.as_mut_ptr().cast::<nix::libc::c_void>(),
                value.len(),
            )
        };
        if n < 0 {
            match Errno::last() {
                // Removed between the listing and the read.
                Errno::ENODATA => continue,
                e => return Err(e),
            }
        }
        value.truncate(n as usize);
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

/// Sets the attribute `name` of `path` to `value`.
#[allow(unsafe_code)]
pub fn set_xattr(
    root: &Root,
    path: &NodePath,
    kind: Kind,
    name: &str,
    value: &[u8],
) -> Result<(), Errno> {
    let fd = open(root, path, kind)?;
    let cname = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is open for the call, `cname` NUL-terminated, `value` readable for its length.
    let rc = unsafe {
        nix::libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast::<nix::libc::c_void>(),
            value.len(),
            0,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Removes the attribute `name` of `path`, if it is there.
#[allow(unsafe_code)]
pub fn remove_xattr(root: &Root, path: &NodePath, kind: Kind, name: &str) -> Result<(), Errno> {
    let fd = open(root, path, kind)?;
    let cname = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is open for the call and `cname` NUL-terminated.
    let rc = unsafe { nix::libc::fremovexattr(fd.as_raw_fd(), cname.as_ptr()) };
    match rc {
        0 => Ok(()),
        _ => match Errno::last() {
            Errno::ENODATA => Ok(()),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_security_relevant_names_are_read() {
        assert!(is_security_relevant("security.capability"));
        assert!(is_security_relevant("system.posix_acl_access"));
        assert!(is_security_relevant("security.selinux"));
        assert!(!is_security_relevant("user.comment"));
        assert!(!is_security_relevant("trusted.overlay.origin"));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        let root = Root::open(dir.path()).expect("root");
        let f = NodePath::new("/f").expect("valid");
        match set_xattr(&root, &f, Kind::File, "user.note", b"hello") {
            // Some filesystems (tmpfs of old kernels) take no user attributes.
            Err(Errno::ENOTSUP | Errno::EPERM) => return,
            other => other.expect("set user.note"),
        }
        assert!(
            security_xattrs(&root, &f, Kind::File)
                .expect("list")
                .is_empty(),
            "user.* is not security-relevant"
        );
        remove_xattr(&root, &f, Kind::File, "user.note").expect("remove");
        remove_xattr(&root, &f, Kind::File, "user.note").expect("removing twice is fine");
    }
}
