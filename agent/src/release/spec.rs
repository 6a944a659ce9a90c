//! The node spec: the YAML file in the release tree that says what the node
//! is. The release team writes and reviews it, so it reads at a glance; the
//! agent parses it strictly and validates everything before anything is
//! written: unknown keys, bad paths, duplicates, sizes, and YAML alias bombs
//! are refused with the file, line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Interval, Mode, NodePath, TreePath};

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
}

/// The spec's `lock` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecLock {
    /// Directories bind-mounted read-only onto themselves once the node is up.
    #[serde(default)]
    pub read_only: Vec<NodePath>,
}

/// A user or group, by name or numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// A numeric id.
    Id(u32),
    /// A name, resolved against the node's `/etc/passwd` or `/etc/group`.
    Name(AccountName),
}

impl Default for Principal {
    fn default() -> Self {
        Principal::Id(0)
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Id(id) => write!(f, "{id}"),
            Principal::Name(name) => f.write_str(name.as_str()),
        }
    }
}

/// A user or group name as `useradd` accepts it: `[a-z_][a-z0-9_-]*`, at
/// most 32 characters, optionally ending in `$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountName(String);

impl AccountName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, String> {
        let body = name.strip_suffix('$').unwrap_or(name);
        let mut chars = body.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !first_ok || !rest_ok || name.len() > 32 {
            return Err(format!("{name:?} is not a valid user or group name"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AccountName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AccountName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Its name.
    pub name: AccountName,
    /// A system group (id below 1000).
    #[serde(default)]
    pub system: bool,
    /// A fixed id; allocated when absent.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Its name.
    pub name: AccountName,
    /// A system user (id below 1000, no login shell by default).
    #[serde(default)]
    pub system: bool,
    /// A fixed id; allocated when absent.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Primary group; a group of the user's own name when absent.
    #[serde(default)]
    pub group: Option<AccountName>,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<AccountName>,
    /// Home directory; `/home/NAME` (or `/nonexistent` for system users) when absent.
    #[serde(default)]
    pub home: Option<NodePath>,
    /// Login shell; `/usr/sbin/nologin` for system users, `/bin/sh` otherwise.
    #[serde(default)]
    pub shell: Option<NodePath>,
    /// Lines for `~/.ssh/authorized_keys` (the home is created when set).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// A directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Where.
    pub path: NodePath,
    /// Permissions; `0755` when absent.
    #[serde(default = "mode_0755")]
    pub mode: Mode,
    /// Owner; root when absent.
    #[serde(default)]
    pub owner: Principal,
    /// Group; root when absent.
    #[serde(default)]
    pub group: Principal,
    /// Everything inside is managed: an unmanaged entry in it counts as drift.
    #[serde(default)]
    pub exclusive: bool,
    /// Not locked, so services can write in it (a data directory). Its own
    /// owner and mode are still checked for drift.
    #[serde(default)]
    pub mutable: bool,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Content {
    /// A file in the release tree.
    Source(TreePath),
    /// Inline text.
    Inline(String),
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Where.
    pub path: NodePath,
    /// What.
    pub content: Content,
    /// Permissions; `0644` when absent.
    pub mode: Mode,
    /// Owner; root when absent.
    pub owner: Principal,
    /// Group; root when absent.
    pub group: Principal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSpec {
    path: NodePath,
    #[serde(default)]
    source: Option<TreePath>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default = "mode_0644")]
    mode: Mode,
    #[serde(default)]
    owner: Principal,
    #[serde(default)]
    group: Principal,
}

impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawFileSpec::deserialize(d)?;
        let content = one_content(&raw.path.to_string(), raw.source, raw.content)
            .map_err(serde::de::Error::custom)?;
        Ok(FileSpec {
            path: raw.path,
            content,
            mode: raw.mode,
            owner: raw.owner,
            group: raw.group,
        })
    }
}

fn one_content(
    what: &str,
    source: Option<TreePath>,
    content: Option<String>,
) -> Result<Content, String> {
    match (source, content) {
        (Some(s), None) => Ok(Content::Source(s)),
        (None, Some(c)) => Ok(Content::Inline(c)),
        (Some(_), Some(_)) => Err(format!("{what}: give either source or content, not both")),
        (None, None) => Err(format!(
            "{what}: needs source (a file in the release) or content"
        )),
    }
}

/// A symbolic link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Where the link is.
    pub path: NodePath,
    /// What it points to, exactly as written (absolute targets are resolved
    /// by the node, not by the agent).
    pub target: LinkTarget,
}

/// A symlink target: non-empty, no NUL, at most 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LinkTarget(String);

impl LinkTarget {
    /// The target text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LinkTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.contains('\0') || text.len() > crate::types::MAX_PATH_LEN {
            return Err(serde::de::Error::custom(format!(
                "link target {text:?} is empty, too long or contains NUL"
            )));
        }
        Ok(LinkTarget(text))
    }
}

/// A systemd unit, installed in `/etc/systemd/system`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitSpec {
    /// The unit name, e.g. `app.service`.
    pub name: UnitName,
    /// The unit file; `None` only for a masked unit.
    pub content: Option<Content>,
    /// Enabled (its `[Install]` section applied); default true.
    pub enabled: bool,
    /// Started once the node is up; default true for units that can start.
    pub started: bool,
    /// Masked (linked to /dev/null); never started.
    pub masked: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnitSpec {
    name: UnitName,
    #[serde(default)]
    source: Option<TreePath>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    started: Option<bool>,
    #[serde(default)]
    masked: bool,
}

impl<'de> Deserialize<'de> for UnitSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = RawUnitSpec::deserialize(d)?;
        let name = raw.name.as_str().to_owned();
        if raw.masked {
            if raw.source.is_some()
                || raw.content.is_some()
                || raw.enabled == Some(true)
                || raw.started == Some(true)
            {
                return Err(D::Error::custom(format!(
                    "unit {name}: a masked unit has no source or content and is neither enabled nor started"
                )));
            }
            return Ok(UnitSpec {
                name: raw.name,
                content: None,
                enabled: false,
                started: false,
                masked: true,
            });
        }
        let content = one_content(&format!("unit {name}"), raw.source, raw.content)
            .map_err(D::Error::custom)?;
        Ok(UnitSpec {
            name: raw.name,
            content: Some(content),
            enabled: raw.enabled.unwrap_or(true),
            started: raw.started.unwrap_or(true),
            masked: false,
        })
    }
}

/// A unit file name: `NAME.TYPE` with systemd's characters and unit types.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UnitName(String);

impl UnitName {
    /// Validates a unit name.
    pub fn new(name: &str) -> Result<Self, String> {
        const TYPES: [&str; 9] = [
            "service",
            "socket",
            "timer",
            "path",
            "mount",
            "automount",
            "target",
            "slice",
            "swap",
        ];
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
        let typed = name
            .rsplit_once('.')
            .is_some_and(|(stem, ty)| !stem.is_empty() && TYPES.contains(&ty));
        if !valid_chars || !typed || name.len() > 255 || name.starts_with('.') {
            return Err(format!(
                "{name:?} is not a valid systemd unit name (NAME.service, .socket, .timer, …)"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UnitName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A health check: a command that must exit 0, or an HTTP URL that must
/// answer with a status. Retried until its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// What to check.
    pub probe: Probe,
    /// How long it may take to pass, retries included; default 30s.
    pub timeout: Interval,
    /// Pause between attempts; default 1s.
    pub interval: Interval,
}

/// The two kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Probe {
    /// Run a command (absolute path, then arguments); exit 0 passes.
    Exec(Vec<String>),
    /// GET a URL; the expected status passes.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Expected status; default 200.
        status: u16,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    timeout: Option<Interval>,
    #[serde(default)]
    interval: Option<Interval>,
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = RawHealthCheck::deserialize(d)?;
        let probe = match (raw.exec, raw.http) {
            (Some(argv), None) => {
                if raw.status.is_some() {
                    return Err(D::Error::custom("health: status belongs to http checks"));
                }
                match argv.first() {
                    Some(program)
                        if program.starts_with('/') && !argv.iter().any(|a| a.contains('\0')) => {}
                    _ => {
                        return Err(D::Error::custom(
                            "health: exec needs an absolute program path, then its arguments",
                        ));
                    }
                }
                Probe::Exec(argv)
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.chars().any(char::is_control)
                {
                    return Err(D::Error::custom(format!(
                        "health: {url:?} is not an http:// or https:// URL"
                    )));
                }
                Probe::Http {
                    url,
                    status: raw.status.unwrap_or(200),
                }
            }
            _ => return Err(D::Error::custom("health: give exactly one of exec or http")),
        };
        Ok(HealthCheck {
            probe,
            timeout: raw.timeout.unwrap_or(Interval::secs(30)),
            interval: raw.interval.unwrap_or(Interval::secs(1)),
        })
    }
}

fn mode_0755() -> Mode {
    Mode(0o755)
}

fn mode_0644() -> Mode {
    Mode(0o644)
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
            + self.groups.len();
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

    const EXAMPLE: &str = include_str!("../../../docs/examples/driftless.yaml");

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

    #[test]
    fn account_names() {
        assert!(AccountName::new("app").is_ok());
        assert!(AccountName::new("_svc-1").is_ok());
        for bad in [
            "App",
            "1app",
            "a b",
            "",
            "toolongtoolongtoolongtoolongtoolong",
        ] {
            assert!(AccountName::new(bad).is_err(), "{bad}");
        }
    }
}
