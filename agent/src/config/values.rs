//! The config's validated values: a source URL, a tag name, a commit id.
//! Each checks itself when it is deserialized, so a bad value is reported
//! with the line and column where it stands; they live apart from the
//! sections that use them because other stages (fetch, channel, obtain)
//! take them as types of their own.

use serde::{Deserialize, Serialize};

/// A repository URL with a scheme driftless fetches from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SourceUrl(String);

impl SourceUrl {
    /// Validates the scheme.
    pub fn new(url: &str) -> Result<Self, String> {
        const SCHEMES: [&str; 5] = ["https://", "http://", "ssh://", "git://", "file://"];
        if !SCHEMES.iter().any(|s| url.starts_with(s))
            || url.len() > 2048
            || url.chars().any(char::is_control)
        {
            return Err(format!(
                "source url {url:?} must start with https://, http://, ssh://, git:// or file://"
            ));
        }
        Ok(Self(url.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without user information (for logs: never print a password).
    pub fn redacted(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}/{path}")
            }
            None => self.0.clone(),
        }
    }
}

/// What a source serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A git repository (smart HTTP, ssh, git, a local path).
    #[default]
    Git,
    /// A directory of static signed files (`driftless publish`).
    Static,
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SourceUrl::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A tag name git accepts under `refs/tags/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TagName(String);

impl TagName {
    /// Validates the name with git's ref-name rules.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty()
            || name.starts_with('-')
            || !crate::types::is_valid_ref_name(&format!("refs/tags/{name}"))
        {
            return Err(format!("{name:?} is not a valid tag name"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TagName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TagName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A full hexadecimal commit id (40 or 64 digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    /// Validates a full, lower-case commit id.
    pub fn new(id: &str) -> Result<Self, String> {
        let hex = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex || !matches!(id.len(), 40 | 64) {
            return Err(format!(
                "commit {id:?} must be a full lower-case hex object id"
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CommitId::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        let url = SourceUrl::new("https://user:secret@git.example.com/fleet/r.git").expect("valid");
        assert_eq!(url.redacted(), "https://git.example.com/fleet/r.git");
    }
}
