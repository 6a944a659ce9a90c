//! Locking what was applied: the immutable attribute (`chattr +i`) on every
//! managed file and directory, and read-only bind mounts on the directories
//! a spec or config lists. Unlocking is not a feature: a node that must
//! change is replaced. The one exception is internal: an apply that was
//! interrupted after it locked some paths clears the attribute on its own
//! managed paths to finish (see [`crate::root::attr::clear_for_rewrite`]).

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::config::LockMode;
use crate::record::state::LockStatus;
use crate::root::attr::{is_read_only_mount, set_immutable};
use crate::root::{Kind, Root};
use crate::types::NodePath;

/// A path that could not be locked.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock {path}: {reason}")]
pub struct LockError {
    /// The node path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Locks `path`: files and directories become immutable; symlinks cannot.
/// Returns the status to record; in `Required` mode a refusal is an error.
pub fn lock_path(
    root: &Root,
    path: &NodePath,
    kind: Kind,
    mode: LockMode,
) -> Result<LockStatus, LockError> {
    if mode == LockMode::Off {
        return Ok(LockStatus::Pending);
    }
    if kind == Kind::Link {
        return Ok(LockStatus::Exempt(
            "symlinks cannot carry the immutable attribute".into(),
        ));
    }
    match set_immutable(root, path, kind, true) {
        Ok(()) => Ok(LockStatus::Locked),
        Err(e) => {
            let reason = match e {
                Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL => {
                    "the filesystem does not support the immutable attribute".to_owned()
                }
                Errno::EPERM => "not permitted (needs root with CAP_LINUX_IMMUTABLE)".to_owned(),
                e => e.desc().to_owned(),
            };
            if mode == LockMode::Required {
                Err(LockError {
                    path: path.to_string(),
                    reason: format!(
                        "{reason} (lock.mode is required; use best-effort to record it instead)"
                    ),
                })
            } else {
                Ok(LockStatus::Failed(reason))
            }
        }
    }
}

/// Bind-mounts `path` read-only onto itself, unless it already is a
/// read-only mount point.
#[allow(unsafe_code)]
pub fn bind_read_only(root: &Root, path: &NodePath) -> Result<(), LockError> {
    use nix::mount::{MsFlags, mount};
    let fail = |what: &str, e: Errno| LockError {
        path: path.to_string(),
        reason: format!("{what}: {e}"),
    };
    if is_read_only_mount(root, path) {
        return Ok(());
    }
    let open = || {
        root.open_raw(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
            .map_err(|e| fail("cannot open", e))
    };
    // The magic link names exactly the directory resolved strictly beneath
    // the root, so a symlink swapped in between cannot redirect the mount.
    let magic =
        |fd: &std::os::fd::OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let fd = open()?;
    mount(
        Some(&magic(&fd)),
        &magic(&fd),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail("bind mount failed", e))?;
    crate::root::failpoint::hit("mount", Some(path));
    // Resolved again from its parent's handle: the lookup now ends on the
    // new mount, which is the one to make read-only.
    let mounted = open()?;
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(
        None::<&str>,
        &magic(&mounted),
        None::<&str>,
        remount,
        None::<&str>,
    )
    .map_err(|e| fail("read-only remount failed", e))
}
