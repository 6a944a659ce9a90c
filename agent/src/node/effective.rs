//! Recording the rest of the node's effective configuration when a release
//! is applied (see [`crate::record::effective`]): the account files as
//! locked manifest entries and their tables, the managed units and the
//! overrides of them already there, the security attributes of managed
//! paths (after setting those the spec declares, and refusing any ACL or
//! capability it does not), and, once locked, the mounts. Apart from the
//! run's flow because each piece reads the node in its own way.

use std::collections::HashSet;

use crate::node::stage::ApplyError;
use crate::node::systemd::UNIT_DIR;
use crate::record::drift;
use crate::record::state::{LockStatus, ManifestEntry, State};
use crate::release::spec::NodeSpec;
use crate::root::xattr::{security_xattrs, set_xattr};
use crate::root::{Kind, Root};
use crate::types::NodePath;

/// The attributes a managed path may carry only when the spec declares
/// them: they grant access (ACLs) or privilege (capabilities). Other
/// `security.*` labels (SELinux's, IMA's) are set by the system itself;
/// they are recorded and compared, not refused.
const DECLARED_ONLY: [&str; 3] = [
    "security.capability",
    "system.posix_acl_access",
    "system.posix_acl_default",
];

/// Origins of manifest entries that do not come from the release.
pub const NODE_ORIGINS: [&str; 2] = ["agent", "accounts"];

/// Sets the attributes the spec declares, then refuses any ACL or
/// capability on a managed path that the spec does not declare (inherited
/// from a default ACL, or left on a directory that was already there).
pub fn settle_xattrs(
    root: &Root,
    spec: &NodeSpec,
    manifest: &[ManifestEntry],
) -> Result<(), ApplyError> {
    let kind_of = |path: &NodePath| manifest.iter().find(|e| e.path == *path).map(|e| e.kind);
    for x in &spec.xattrs {
        let value = x.bytes().map_err(ApplyError)?;
        let kind = kind_of(&x.path).unwrap_or(Kind::File);
        set_xattr(root, &x.path, kind, &x.name, &value).map_err(|e| {
            ApplyError(format!(
                "{}: cannot set {}: {} (the filesystem must support it, and apply needs root)",
                x.path,
                x.name,
                e.desc()
            ))
        })?;
    }
    for entry in manifest
        .iter()
        .filter(|e| !NODE_ORIGINS.contains(&e.origin.as_str()))
    {
        if !matches!(entry.kind, Kind::File | Kind::Directory) {
            continue;
        }
        let found = security_xattrs(root, &entry.path, entry.kind).map_err(|e| {
            // The strict walk says why better than an errno (a symlink
            // swapped in on the way, a directory another user owns).
            match root.observe(&entry.path) {
                Err(refused) => ApplyError(refused.to_string()),
                Ok(Some(o)) if o.kind != entry.kind => ApplyError(format!(
                    "{}: changed while apply ran: a {:?} where apply made a {:?}; \
                     nothing was written through it, and the node is marked failed",
                    entry.path, o.kind, entry.kind
                )),
                Ok(_) => ApplyError(format!(
                    "{}: cannot read its extended attributes: {}",
                    entry.path,
                    e.desc()
                )),
            }
        })?;
        for (name, value) in found {
            if !DECLARED_ONLY.contains(&name.as_str()) {
                continue;
            }
            let declared = spec.xattrs.iter().any(|x| {
                x.path == entry.path && x.name == name && x.bytes().ok() == Some(value.clone())
            });
            if !declared {
                return Err(ApplyError(format!(
                    "{} carries {name}, which the spec does not declare; remove it from the \
                     image (setfacl -b, setcap -r, or a default ACL on its directory) or \
                     declare it under xattrs",
                    entry.path
                )));
            }
        }
    }
    Ok(())
}

/// The account files, as manifest entries to lock and watch (their tables
/// are compared by [`crate::record::drift::accounts`]).
pub fn account_entries(root: &Root) -> Result<Vec<ManifestEntry>, ApplyError> {
    let mut out = Vec::new();
    for file in drift::accounts::FILES {
        let path = NodePath::new(file).map_err(ApplyError)?;
        let Some(o) = root.observe(&path).map_err(|e| ApplyError(e.to_string()))? else {
            continue;
        };
        if o.kind != Kind::File {
            continue;
        }
        out.push(ManifestEntry {
            path,
            kind: Kind::File,
            mode: Some(format!("{:04o}", o.mode)),
            uid: Some(o.uid),
            gid: Some(o.gid),
            sha256: None,
            target: None,
            origin: "accounts".into(),
            lock: LockStatus::Pending,
            exclusive: false,
            secret: None,
        });
    }
    Ok(out)
}

/// The release's units and the aliases it links to them.
fn unit_names(spec: &NodeSpec, manifest: &[ManifestEntry]) -> Vec<String> {
    let mut names: Vec<String> = spec
        .units
        .iter()
        .map(|u| u.name.as_str().to_owned())
        .collect();
    for entry in manifest.iter().filter(|e| e.kind == Kind::Link) {
        let in_unit_dir = entry.path.parent().is_some_and(|p| p.as_str() == UNIT_DIR);
        let to_unit = entry.target.as_deref().and_then(|t| {
            t.strip_prefix(UNIT_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
        });
        if let (true, Some(unit)) = (in_unit_dir, to_unit) {
            if names.iter().any(|n| n == unit) {
                names.push(entry.path.file_name().to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Records the units, their overrides, the account tables and the
/// security attributes, once the release's paths are written.
pub fn record(root: &Root, spec: &NodeSpec, state: &mut State) -> Result<(), ApplyError> {
    let managed: HashSet<String> = drift::managed_paths(state);
    let units = unit_names(spec, &state.manifest);
    let overrides = drift::units::baseline(root, &units, &|p: &str| managed.contains(p));
    state.effective.units = units;
    state.effective.overrides = overrides;
    state.effective.accounts =
        drift::accounts::record(root).map_err(|e| ApplyError(e.to_string()))?;
    state.effective.xattrs = drift::xattrs::record(root, &state.manifest);
    Ok(())
}

/// Records the mounts that matter to the managed paths, once the node is
/// locked (its read-only mounts in place).
pub fn record_mounts(root: &Root, state: &mut State) {
    state.effective.mounts = drift::mounts::current(root, state);
}
