//! The security-relevant extended attributes of managed paths (POSIX ACLs,
//! file capabilities, `security.*` labels) against those recorded when the
//! release was applied: `setfacl -m u:nobody:r` on a secret or `setcap` on
//! a binary changes who may do what without touching mode or content.

use std::collections::BTreeMap;

use super::Difference;
use crate::record::state::ManifestEntry;
use crate::root::xattr::security_xattrs;
use crate::root::{Kind, Root, hex};

/// The attributes of `entry` now, name → hex value; `Err` when unreadable.
pub fn current(root: &Root, entry: &ManifestEntry) -> Result<BTreeMap<String, String>, String> {
    if !matches!(entry.kind, Kind::File | Kind::Directory) {
        return Ok(BTreeMap::new());
    }
    security_xattrs(root, &entry.path, entry.kind)
        .map(|found| found.into_iter().map(|(k, v)| (k, hex(&v))).collect())
        .map_err(|e| e.desc().to_owned())
}

/// What to record: the attributes of every managed file and directory
/// that has any.
pub fn record(
    root: &Root,
    manifest: &[ManifestEntry],
) -> BTreeMap<String, BTreeMap<String, String>> {
    manifest
        .iter()
        .filter_map(|e| {
            let found = current(root, e).ok()?;
            (!found.is_empty()).then(|| (e.path.to_string(), found))
        })
        .collect()
}

fn describe(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}=0x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How `entry`'s attributes differ from `recorded` (none when absent).
pub fn compare_entry(
    root: &Root,
    entry: &ManifestEntry,
    recorded: Option<&BTreeMap<String, String>>,
) -> Option<Difference> {
    let empty = BTreeMap::new();
    let recorded = recorded.unwrap_or(&empty);
    let found = match current(root, entry) {
        Ok(found) => found,
        // A missing path is reported by the manifest's own comparison.
        Err(_) => return None,
    };
    (found != *recorded).then(|| Difference {
        path: entry.path.to_string(),
        aspect: "xattr",
        expected: describe(recorded),
        found: describe(&found),
    })
}
