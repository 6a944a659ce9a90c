//! What is mounted at, under and above the managed paths, against what was
//! mounted once the node was locked: a directory mounted over a managed
//! path, a managed read-only mount unmounted or replaced by another
//! directory (read-only or not), a filesystem above them swapped. The
//! read-only flag itself is checked by the read-only mounts' own
//! comparison; here it is the mount's identity (type, source, directory).
//!
//! The table is the node's: PID 1's mount namespace (see
//! [`crate::root::attr::is_read_only_mount`] for why), `/proc/self`'s where
//! PID 1's cannot be read.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use super::Difference;
use crate::record::effective::MountPoint;
use crate::record::state::State;
use crate::root::Root;
use crate::root::attr::unescape_octal;

/// Where the node's mount table is read, in order of preference.
pub const MOUNTINFO: [&str; 2] = ["/proc/1/mountinfo", "/proc/self/mountinfo"];

/// The mount table's text.
pub fn mountinfo() -> Option<String> {
    MOUNTINFO
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
}

/// The mounts of `info` at or under `host_root`, by node path; a later line
/// at the same point shadows an earlier one.
pub fn table(info: &str, host_root: &Path) -> BTreeMap<String, MountPoint> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(options), Some(fstype), Some(source)) = (
            fields.get(3),
            fields.get(4),
            fields.get(5),
            fields.get(dash + 1),
            fields.get(dash + 2),
        ) else {
            continue;
        };
        let point = PathBuf::from(unescape_octal(point));
        let Ok(rest) = point.strip_prefix(host_root) else {
            continue;
        };
        let path = format!("/{}", rest.display());
        out.insert(
            path.clone(),
            MountPoint {
                path,
                fstype: unescape_octal(fstype),
                source: unescape_octal(source),
                root: unescape_octal(root),
                read_only: options.split(',').any(|o| o == "ro"),
            },
        );
    }
    out
}

/// True when the mount point `point` can change what a managed path is:
/// it is a managed path, lies under one, or is an ancestor of one.
fn relevant(point: &str, managed: &HashSet<&str>, ancestors: &HashSet<String>) -> bool {
    if managed.contains(point) || ancestors.contains(point) {
        return true;
    }
    let mut at = point;
    while let Some(cut) = at.rfind('/') {
        at = if cut == 0 { "/" } else { &at[..cut] };
        if managed.contains(at) {
            return true;
        }
        if at == "/" {
            break;
        }
    }
    false
}

/// The mounts that matter to `state`'s managed paths, now.
pub fn current(root: &Root, state: &State) -> Option<Vec<MountPoint>> {
    let host = std::fs::canonicalize(root.path()).ok()?;
    let info = mountinfo()?;
    let managed: HashSet<&str> = state
        .manifest
        .iter()
        .map(|e| e.path.as_str())
        .chain(state.read_only.iter().map(|m| m.path.as_str()))
        .collect();
    let mut ancestors = HashSet::new();
    for path in &managed {
        let mut at = *path;
        while let Some(cut) = at.rfind('/') {
            at = if cut == 0 { "/" } else { &at[..cut] };
            if !ancestors.insert(at.to_owned()) || at == "/" {
                break;
            }
        }
    }
    Some(
        table(&info, &host)
            .into_values()
            .filter(|m| relevant(&m.path, &managed, &ancestors))
            .collect(),
    )
}

fn describe(m: &MountPoint) -> String {
    format!("{} {} at {}", m.fstype, m.source, m.root)
}

/// Mounts added, removed or replaced since the node was locked.
pub fn compare(root: &Root, state: &State, recorded: &[MountPoint]) -> Vec<Difference> {
    let Some(now) = current(root, state) else {
        return Vec::new();
    };
    let before: BTreeMap<&str, &MountPoint> =
        recorded.iter().map(|m| (m.path.as_str(), m)).collect();
    let after: BTreeMap<&str, &MountPoint> = now.iter().map(|m| (m.path.as_str(), m)).collect();
    let points: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    let mut out = Vec::new();
    for point in points {
        let (was, is) = (before.get(point), after.get(point));
        let same = match (was, is) {
            (Some(a), Some(b)) => {
                (&a.fstype, &a.source, &a.root) == (&b.fstype, &b.source, &b.root)
            }
            _ => false,
        };
        if !same {
            out.push(Difference {
                path: point.to_owned(),
                aspect: "mounted",
                expected: was.map_or("nothing mounted".into(), |m| describe(m)),
                found: is.map_or("nothing mounted".into(), |m| describe(m)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read_beneath_the_root() {
        let info = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 22 254:0 /srv/r/etc/app /srv/r/etc/app ro,relatime shared:1 - ext4 /dev/vda rw\n\
                    91 22 0:50 / /srv/r/etc/a\\040b rw - tmpfs none rw\n\
                    92 22 0:51 / /srv/r/etc/app rw - tmpfs evil rw\n";
        let t = table(info, Path::new("/srv/r"));
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["/etc/app"].source, "evil", "the later mount shadows");
        assert_eq!(t["/etc/a b"].fstype, "tmpfs");
        let managed: HashSet<&str> = ["/etc/app/x.conf"].into_iter().collect();
        let ancestors: HashSet<String> = ["/etc/app", "/etc", "/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(relevant("/etc/app", &managed, &ancestors));
        assert!(relevant("/etc/app/x.conf", &managed, &ancestors));
        assert!(!relevant("/srv", &managed, &ancestors));
        let managed: HashSet<&str> = ["/etc/app"].into_iter().collect();
        assert!(
            relevant("/etc/app/sub", &managed, &ancestors),
            "under a managed directory"
        );
    }
}
