//! The spec's `groups` and `users` sections, and the names and ids files
//! are owned by. Apart because account names have their own validation rules
//! (useradd's), which nothing else in the spec shares.

use serde::{Deserialize, Serialize};

use crate::types::NodePath;

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

#[cfg(test)]
mod tests {
    use super::*;

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
