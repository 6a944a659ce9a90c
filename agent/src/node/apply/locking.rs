//! Locking what apply wrote: the manifest's paths made immutable and the
//! read-only mounts put in place. Apart from the run's flow because both a
//! fresh apply and the check of an applied node take pending locks.

use crate::config::LockMode;
use crate::node::lock::{self, LockError};
use crate::record::state::{LockStatus, State};
use crate::root::{Dir, Kind, Root};

/// Locks every pending path (files first, then directories deepest first, so
/// no directory is locked before its entries) and puts the read-only mounts
/// in place. Paths are resolved strictly, and the entries of one directory
/// are all opened relative to the one handle resolved for it.
pub(super) fn lock_all(root: &Root, record: &mut State, mode: LockMode) -> Result<(), LockError> {
    if mode == LockMode::Off {
        return Ok(());
    }
    let mut order: Vec<usize> = (0..record.manifest.len()).collect();
    // The entries of one directory next to each other.
    order.sort_by_key(|&i| {
        let e = &record.manifest[i];
        (
            e.kind == Kind::Directory,
            std::cmp::Reverse(e.path.as_str().matches('/').count()),
            e.path.parent(),
        )
    });
    // Held while its entries are locked: the root hands out this handle
    // for each of them.
    let mut held = None;
    for i in order {
        let entry = &mut record.manifest[i];
        if entry.lock == LockStatus::Pending || matches!(entry.lock, LockStatus::Failed(_)) {
            let parent = entry.path.parent();
            if held.as_ref().map(Dir::path) != parent.as_ref() {
                held = parent.and_then(|p| root.dir(&p).ok());
            }
            entry.lock = lock::lock_path(root, &entry.path, entry.kind, mode)?;
        }
    }
    for mount in &mut record.read_only {
        if mount.lock == LockStatus::Locked
            && crate::root::attr::is_read_only_mount(root, &mount.path)
        {
            continue;
        }
        mount.lock = match lock::bind_read_only(root, &mount.path) {
            Ok(()) => LockStatus::Locked,
            Err(e) if mode == LockMode::Required => return Err(e),
            Err(e) => LockStatus::Failed(e.reason),
        };
    }
    Ok(())
}
