//! The spec's `units` section: systemd units, enabled, started or masked,
//! and the unit names systemd accepts. Apart because a unit's masked/enabled
//! rules and its name check concern only units.

use serde::{Deserialize, Serialize};

use super::files::{Content, one_content};
use crate::types::TreePath;

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
