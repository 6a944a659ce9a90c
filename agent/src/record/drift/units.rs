//! Every place systemd reads that changes a managed unit, beyond the unit
//! file the release installs: a unit file or mask of the same name in a
//! directory of higher priority (`system.control`, `transient`, the
//! generators' output, `/run/systemd/system`), the unit's drop-ins in any
//! of its search directories (`UNIT.d/*.conf`, which `systemctl edit` and
//! `systemctl set-property` write), the drop-ins of a dashed prefix
//! (`app-.service.d`), of its template (`getty@.service.d`) and of its
//! whole type (`service.d`).
//!
//! What is there when the release is applied (the image's own drop-ins, a
//! generator's output) is recorded with a fingerprint; the check reports
//! anything added, removed or changed since. The release's own entries
//! (the unit file, the gate drop-in) are managed paths and left to the
//! manifest.

use std::collections::BTreeMap;

use super::Difference;
use crate::root::{Kind, Root};
use crate::types::NodePath;

/// systemd's unit search path for the system manager, highest priority
/// first (systemd.unit(5)).
pub const SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// The search directories that exist under the root (`/lib/systemd/system`
/// only where `/lib` is a directory of its own, not merged `/usr`'s link).
pub fn search_dirs(root: &Root) -> Vec<NodePath> {
    let lib_is_own = matches!(node(root, "/lib").map(|o| o.kind), Some(Kind::Directory));
    SEARCH_PATH
        .iter()
        .filter(|d| lib_is_own || !d.starts_with("/lib/"))
        .filter_map(|d| NodePath::new(d).ok())
        .filter(|d| matches!(root.observe(d), Ok(Some(o)) if o.kind == Kind::Directory))
        .collect()
}

fn node(root: &Root, path: &str) -> Option<crate::root::Observed> {
    NodePath::new(path)
        .ok()
        .and_then(|p| root.observe(&p).ok().flatten())
}

/// The drop-in directory names that apply to `unit` in every search
/// directory: its own, each dashed prefix's, its template's, its type's.
fn dropin_dirs(unit: &str) -> Vec<String> {
    let Some((stem, ty)) = unit.rsplit_once('.') else {
        return Vec::new();
    };
    let mut out = vec![format!("{unit}.d"), format!("{ty}.d")];
    for (i, _) in stem.match_indices('-') {
        out.push(format!("{}-.{ty}.d", &stem[..i]));
    }
    if let Some((template, instance)) = stem.split_once('@') {
        if !instance.is_empty() {
            out.push(format!("{template}@.{ty}.d"));
        }
    }
    out
}

/// Every existing directory a change to which may add an override of one
/// of `units`: the search directories and the drop-in directories in them,
/// and for a search directory not made yet (`/etc/systemd/system.control`
/// before the first `systemctl set-property`), its nearest existing
/// ancestor, so that its making is seen too.
pub fn watch_dirs(root: &Root, units: &[String]) -> Vec<NodePath> {
    let mut out = Vec::new();
    if units.is_empty() {
        return out;
    }
    let is_dir = |d: &NodePath| matches!(root.observe(d), Ok(Some(o)) if o.kind == Kind::Directory);
    for dir in SEARCH_PATH.iter().filter_map(|d| NodePath::new(d).ok()) {
        let mut at = Some(dir.clone());
        while let Some(d) = at {
            if is_dir(&d) {
                out.push(d);
                break;
            }
            at = d.parent();
        }
    }
    for dir in search_dirs(root) {
        for unit in units {
            for name in dropin_dirs(unit) {
                if let Ok(d) = dir.join(&name) {
                    if is_dir(&d) {
                        out.push(d);
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What an entry is, for the record: a file's SHA-256, a link's target.
fn fingerprint(root: &Root, path: &NodePath, kind: Kind) -> String {
    match kind {
        Kind::File => root
            .sha256(path)
            .map(|d| format!("file sha256 {}", crate::root::hex(&d)))
            .unwrap_or_else(|e| format!("unreadable file ({})", e.reason)),
        Kind::Link => root
            .read_link(path)
            .map(|t| format!("symlink to {t}"))
            .unwrap_or_else(|e| format!("unreadable symlink ({})", e.reason)),
        Kind::Directory => "directory".into(),
        Kind::Other => "special file".into(),
    }
}

/// The unit files and drop-ins under the root that change one of `units`,
/// except the paths `managed` says the release owns: path → (the unit it
/// changes, its fingerprint).
pub fn scan(
    root: &Root,
    units: &[String],
    managed: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut consider = |path: NodePath, unit: &str| {
        if managed(path.as_str()) {
            return;
        }
        if let Ok(Some(o)) = root.observe(&path) {
            if o.kind != Kind::Directory {
                let print = fingerprint(root, &path, o.kind);
                out.entry(path.to_string())
                    .or_insert_with(|| (unit.to_owned(), print));
            }
        }
    };
    for dir in search_dirs(root) {
        for unit in units {
            if let Ok(fragment) = dir.join(unit) {
                consider(fragment, unit);
            }
            for name in dropin_dirs(unit) {
                let Ok(dropins) = dir.join(&name) else {
                    continue;
                };
                match root.observe(&dropins) {
                    // A linked drop-in directory is an override in itself.
                    Ok(Some(o)) if o.kind == Kind::Link => consider(dropins, unit),
                    Ok(Some(o)) if o.kind == Kind::Directory => {
                        for entry in root.list_dir(&dropins).unwrap_or_default() {
                            // systemd reads only `*.conf` drop-ins.
                            if entry.ends_with(".conf") {
                                if let Ok(path) = dropins.join(&entry) {
                                    consider(path, unit);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// What [`scan`] finds now, to record: path → fingerprint.
pub fn baseline(
    root: &Root,
    units: &[String],
    managed: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    scan(root, units, managed)
        .into_iter()
        .map(|(path, (_, print))| (path, print))
        .collect()
}

/// Overrides of the managed units added, removed or changed since the
/// release was applied.
pub fn compare(
    root: &Root,
    units: &[String],
    recorded: &BTreeMap<String, String>,
    managed: &dyn Fn(&str) -> bool,
) -> Vec<Difference> {
    if units.is_empty() {
        return Vec::new();
    }
    let now = scan(root, units, managed);
    let mut out = Vec::new();
    let diff = |path: &str, unit: &str, found: &str| Difference {
        path: path.to_owned(),
        aspect: "override",
        expected: unit.to_owned(),
        found: found.to_owned(),
    };
    for (path, (unit, print)) in &now {
        match recorded.get(path) {
            None => out.push(diff(path, unit, &format!("added ({print})"))),
            Some(before) if before != print => out.push(diff(
                path,
                unit,
                &format!("changed ({print}, was {before})"),
            )),
            Some(_) => {}
        }
    }
    for (path, before) in recorded {
        if !now.contains_key(path) {
            out.push(diff(
                path,
                "a managed unit",
                &format!("removed (was {before})"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dropin_directory_that_applies_is_named() {
        assert_eq!(
            dropin_dirs("app-web.service"),
            ["app-web.service.d", "service.d", "app-.service.d"]
        );
        assert_eq!(
            dropin_dirs("getty@tty1.service"),
            ["getty@tty1.service.d", "service.d", "getty@.service.d"]
        );
        assert_eq!(dropin_dirs("backup.timer"), ["backup.timer.d", "timer.d"]);
    }

    #[test]
    fn an_added_changed_or_removed_override_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        let etc = dir.path().join("etc/systemd/system");
        std::fs::create_dir_all(etc.join("service.d")).expect("mkdir");
        std::fs::write(etc.join("app.service"), "[Service]\n").expect("unit");
        std::fs::write(etc.join("service.d/10-image.conf"), "x\n").expect("image dropin");
        let units = vec!["app.service".to_owned()];
        let managed = |p: &str| p == "/etc/systemd/system/app.service";
        let recorded = baseline(&root, &units, &managed);
        assert_eq!(
            recorded.keys().collect::<Vec<_>>(),
            ["/etc/systemd/system/service.d/10-image.conf"]
        );
        assert!(compare(&root, &units, &recorded, &managed).is_empty());
        let control = dir.path().join("etc/systemd/system.control/app.service.d");
        std::fs::create_dir_all(&control).expect("mkdir control");
        std::fs::write(control.join("50-CPUQuota.conf"), "[Service]\n").expect("set-property");
        std::fs::write(control.join("README"), "not read by systemd\n").expect("other");
        std::fs::write(etc.join("service.d/10-image.conf"), "y\n").expect("edit");
        let found = compare(&root, &units, &recorded, &managed);
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 2, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("/etc/systemd/system.control/app.service.d/50-CPUQuota.conf: added")
        );
        assert!(lines[1].starts_with("/etc/systemd/system/service.d/10-image.conf: changed"));
        std::fs::remove_file(etc.join("service.d/10-image.conf")).expect("rm");
        let found = compare(&root, &units, &recorded, &managed);
        assert!(
            found.iter().any(|d| d.found.starts_with("removed")),
            "{found:?}"
        );
    }
}
