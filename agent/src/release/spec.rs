//! The node spec: the YAML file in the release tree that says what the node
//! is. The release team writes and reviews it, so it reads at a glance; the
//! agent parses it strictly and validates everything before anything is
//! written: unknown keys, bad paths, duplicates, sizes, and YAML alias bombs
//! are refused with the file, line and column.

mod accounts;
mod files;
mod health;
mod units;
mod xattrs;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::NodePath;

pub use accounts::{AccountName, GroupSpec, Principal, UserSpec};
pub use files::{Content, DirectorySpec, FileSpec, LinkSpec, LinkTarget};
pub use health::{HealthCheck, Probe};
pub use units::{UnitName, UnitSpec};
pub use xattrs::XattrSpec;

/// Node specs larger than this are refused before parsing.
pub const MAX_SPEC_LEN: usize = 1024 * 1024;
/// A single managed file larger than this is refused.
pub const MAX_FILE_LEN: u64 = 64 * 1024 * 1024;
/// All managed files together larger than this are refused.
pub const MAX_TOTAL_LEN: u64 = 1024 * 1024 * 1024;
/// More entries than this (files, links, units, …) are refused.
pub const MAX_ENTRIES: usize = 100_000;

/// A node spec that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct SpecError {
    /// The spec's path in the release tree.
    pub file: String,
    /// What is wrong; YAML errors carry line and column.
    pub reason: String,
}

/// Everything the release says the node is.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Groups to create before users.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    /// Users to create before files are owned by them.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Directories, created parents first.
    #[serde(default)]
    pub directories: Vec<DirectorySpec>,
    /// Regular files.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Symbolic links.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// systemd units.
    #[serde(default)]
    pub units: Vec<UnitSpec>,
    /// Checks that must pass before the node counts as up.
    #[serde(default)]
    pub health: Vec<HealthCheck>,
    /// What else to lock beyond the immutable attribute.
    #[serde(default)]
    pub lock: SpecLock,
    /// Managed directories whose every entry must be managed, besides those
    /// marked `exclusive` under `directories`: a user's `~/.ssh`, a unit's
    /// drop-in directory.
    #[serde(default)]
    pub exclusive: Vec<NodePath>,
    /// Security-relevant extended attributes of managed paths.
    #[serde(default)]
    pub xattrs: Vec<XattrSpec>,
}

/// The spec's `lock` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecLock {
    /// Directories bind-mounted read-only onto themselves once the node is up.
    #[serde(default)]
    pub read_only: Vec<NodePath>,
}

impl NodeSpec {
    /// Parses and validates spec text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        let fail = |reason: String| SpecError {
            file: file.to_owned(),
            reason,
        };
        if text.len() > MAX_SPEC_LEN {
            return Err(fail(format!("larger than {MAX_SPEC_LEN} bytes")));
        }
        // serde_yaml bounds alias expansion and nesting (billion laughs).
        let spec: NodeSpec = serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))?;
        spec.validate().map_err(fail)?;
        Ok(spec)
    }

    /// Checks rules that span entries: each path declared once, sizes, units
    /// and accounts unique.
    fn validate(&self) -> Result<(), String> {
        let entries = self.files.len()
            + self.directories.len()
            + self.links.len()
            + self.units.len()
            + self.users.len()
            + self.groups.len()
            + self.exclusive.len()
            + self.xattrs.len();
        if entries > MAX_ENTRIES {
            return Err(format!(
                "{entries} entries; at most {MAX_ENTRIES} are allowed"
            ));
        }
        let mut seen: BTreeMap<&NodePath, String> = BTreeMap::new();
        let paths = self
            .directories
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.path, format!("directories[{i}]")))
            .chain(
                self.files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (&f.path, format!("files[{i}]"))),
            )
            .chain(
                self.links
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (&l.path, format!("links[{i}]"))),
            );
        for (path, place) in paths {
            if path.as_str() == "/" {
                return Err(format!("{place}: the root itself cannot be managed"));
            }
            if let Some(first) = seen.insert(path, place.clone()) {
                return Err(format!("{path} is declared twice ({first} and {place})"));
            }
        }
        // A managed file or link cannot be the parent of another entry.
        for (path, place) in &seen {
            let mut parent = path.parent();
            while let Some(p) = parent {
                if let Some(other) = seen.get(&p) {
                    if !other.starts_with("directories") {
                        return Err(format!(
                            "{place} ({path}) lies inside {other} ({p}), which is not a directory"
                        ));
                    }
                }
                parent = p.parent();
            }
        }
        if let Some(d) = self.directories.iter().find(|d| d.exclusive && d.mutable) {
            return Err(format!(
                "{}: a directory cannot be both exclusive and mutable",
                d.path
            ));
        }
        for path in &self.lock.read_only {
            if path.as_str() == "/" {
                return Err("lock.read_only: the root itself cannot be mounted read-only".into());
            }
        }
        let mut exclusive = std::collections::BTreeSet::new();
        for path in &self.exclusive {
            if path.as_str() == "/" || !exclusive.insert(path) {
                return Err(format!("exclusive: {path} is the root or listed twice"));
            }
        }
        xattrs::validate(&self.xattrs, &|p| {
            self.files.iter().any(|f| f.path == *p) || self.directories.iter().any(|d| d.path == *p)
        })?;
        let mut units = std::collections::BTreeSet::new();
        for unit in &self.units {
            if !units.insert(&unit.name) {
                return Err(format!("unit {} is declared twice", unit.name.as_str()));
            }
        }
        let mut groups = std::collections::BTreeSet::new();
        for group in &self.groups {
            if !groups.insert(&group.name) {
                return Err(format!("group {} is declared twice", group.name.as_str()));
            }
        }
        let mut users = std::collections::BTreeSet::new();
        for user in &self.users {
            if !users.insert(&user.name) {
                return Err(format!("user {} is declared twice", user.name.as_str()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Mode, TreePath};

    const EXAMPLE: &str = include_str!("../../../docs/examples/driftless.yaml");

    #[test]
    fn a_release_of_as_many_entries_as_a_spec_may_list_passes_the_watchers_read() {
        // A blob and a tree for each entry, the commit and the tag: what
        // `source::checked` lets a release's pack hold on a channel move.
        assert!(
            crate::source::checked::MAX_RELEASE_OBJECTS >= 2 * MAX_ENTRIES as u64 + 2,
            "a release a node applies at first boot would be refused on a channel move"
        );
    }

    #[test]
    fn a_release_tree_may_hold_four_times_the_spec_entries() {
        assert_eq!(crate::source::pack::MAX_TREE_ENTRIES, 4 * MAX_ENTRIES);
    }

    #[test]
    fn the_documented_example_parses() {
        let spec = NodeSpec::parse(EXAMPLE, "driftless.yaml").expect("example parses");
        assert_eq!(spec.files[0].path.as_str(), "/etc/app/app.conf");
        assert_eq!(spec.files[0].mode, Mode(0o640));
        assert_eq!(
            spec.files[0].content,
            Content::Source(TreePath::new("files/app.conf").expect("valid"))
        );
        assert_eq!(
            (&spec.files[2].content, spec.files[2].mode),
            (
                &Content::Encrypted(TreePath::new("secrets/db-password.age").expect("valid")),
                Mode(0o400)
            )
        );
        assert_eq!(spec.units[0].name.as_str(), "app.service");
        assert!(spec.units[0].enabled && spec.units[0].started);
        assert_eq!(spec.health.len(), 2);
        assert!(matches!(
            spec.health[1].probe,
            Probe::Http { status: 200, .. }
        ));
    }

    fn refused(text: &str) -> String {
        NodeSpec::parse(text, "driftless.yaml")
            .expect_err(text)
            .to_string()
    }

    #[test]
    fn bad_specs_name_file_line_and_column() {
        let err = refused("files:\n  - path: /etc/x\n    content: hi\n    colour: blue\n");
        assert!(
            err.starts_with("driftless.yaml: files[0]: ")
                && err.contains("colour")
                && err.contains("line 4 column 5"),
            "{err}"
        );
        let err = refused("files:\n  - path: /etc/../../x\n    content: hi\n");
        assert!(
            err.contains(".. components") && err.contains("line 2"),
            "{err}"
        );
        let err = refused("files:\n  - path: /etc/x\n");
        assert!(err.contains("needs source"), "{err}");
        let err = refused("files:\n  - {path: /etc/x, source: ../../etc/shadow}\n");
        assert!(err.contains("release path"), "{err}");
        let err = refused("files:\n  - {path: /etc/x, content: a, mode: 644}\n");
        assert!(err.contains("quoted"), "{err}");
        let err = refused("files:\n  - {path: /etc/x, content: a, secret: s.age}\n");
        assert!(err.contains("one of source, content or secret"), "{err}");
        let err = refused("files:\n  - {path: /etc/x, content: a, tmpfs: true}\n");
        assert!(err.contains("tmpfs is for secrets only"), "{err}");
    }

    #[test]
    fn duplicates_and_nesting_are_refused() {
        let err = refused(
            "files:\n  - {path: /etc/x, content: a}\nlinks:\n  - {path: /etc/x, target: /y}\n",
        );
        assert!(err.contains("declared twice"), "{err}");
        let err =
            refused("files:\n  - {path: /etc/x, content: a}\n  - {path: /etc/x/y, content: b}\n");
        assert!(err.contains("not a directory"), "{err}");
        let err = refused(
            "units:\n  - {name: a.service, content: x}\n  - {name: a.service, content: y}\n",
        );
        assert!(err.contains("declared twice"), "{err}");
    }

    #[test]
    fn units_and_health_checks_are_validated() {
        assert!(refused("units:\n  - {name: ../evil.service, content: x}\n").contains("unit name"));
        assert!(refused("units:\n  - {name: app.exe, content: x}\n").contains("unit name"));
        assert!(
            refused("units:\n  - {name: a.service, masked: true, content: x}\n").contains("masked")
        );
        assert!(refused("health:\n  - {exec: [curl, x]}\n").contains("absolute"));
        assert!(
            refused("health:\n  - {exec: [/bin/true], http: 'http://x'}\n").contains("exactly one")
        );
        assert!(refused("health:\n  - {http: 'ftp://x'}\n").contains("http"));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        bomb.push_str("files: []\n");
        let err = refused(&bomb);
        assert!(err.starts_with("driftless.yaml: "), "{err}");
    }
}
