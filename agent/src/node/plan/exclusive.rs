//! Directories whose every entry must be managed: those the spec lists
//! under `exclusive` (any managed directory, a user's `~/.ssh` included),
//! and each unit's drop-in directory in `/etc/systemd/system` that holds
//! a drop-in of the release (the gate), which is made a managed, locked,
//! exclusive directory of its own so that `systemctl edit` cannot add to
//! it. Apart from the planner because it only adjusts the entries it made.

use super::{Desired, Entry, PlanError};
use crate::node::systemd::UNIT_DIR;
use crate::types::NodePath;

/// Adds the drop-in directories of the release's units, each exclusive,
/// and marks the spec's `exclusive` directories.
pub(super) fn settle(out: &mut Vec<Desired>, exclusive: &[NodePath]) -> Result<(), PlanError> {
    let mut dropin_dirs: Vec<(NodePath, String)> = Vec::new();
    for d in out.iter() {
        let Some(parent) = d.path.parent() else {
            continue;
        };
        let in_unit_dir = parent.parent().is_some_and(|p| p.as_str() == UNIT_DIR);
        if in_unit_dir
            && parent.file_name().ends_with(".d")
            && !dropin_dirs.iter().any(|(p, _)| *p == parent)
        {
            dropin_dirs.push((parent, d.origin.clone()));
        }
    }
    for (dir, origin) in dropin_dirs {
        match out.iter_mut().find(|d| d.path == dir) {
            Some(existing) => existing.exclusive = true,
            None => out.push(Desired {
                path: dir,
                entry: Entry::Directory {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
                origin,
                managed: true,
                lock: true,
                exclusive: true,
            }),
        }
    }
    for path in exclusive {
        let found = out
            .iter_mut()
            .find(|d| d.path == *path && matches!(d.entry, Entry::Directory { .. }));
        match found {
            Some(d) if !d.lock => {
                return Err(PlanError(format!(
                    "exclusive: {path} is a mutable directory; a directory cannot be both"
                )));
            }
            Some(d) => d.exclusive = true,
            None => {
                return Err(PlanError(format!(
                    "exclusive: {path} is not a directory the release manages; declare it under \
                     directories (or give its user ssh_authorized_keys for ~/.ssh)"
                )));
            }
        }
    }
    Ok(())
}
