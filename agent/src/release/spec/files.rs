//! The spec's `directories`, `files` and `links` sections: what is written
//! at which path, with which content, mode and owner. Apart because they are
//! the spec's filesystem entries; units borrow only `Content` from here.

use serde::{Deserialize, Serialize};

use super::accounts::Principal;
use crate::types::{Mode, NodePath, TreePath};

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
    /// An age-encrypted file in the release tree: a secret, decrypted on
    /// the node with its own identity (see `release::sealed`).
    Encrypted(TreePath),
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Where.
    pub path: NodePath,
    /// What.
    pub content: Content,
    /// Permissions; `0644` when absent (`0400` for a secret).
    pub mode: Mode,
    /// Owner; root when absent.
    pub owner: Principal,
    /// Group; root when absent.
    pub group: Principal,
    /// A secret that must live on a tmpfs (apply refuses it elsewhere); a
    /// secret on a tmpfs is put back at every boot.
    pub tmpfs: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSpec {
    path: NodePath,
    #[serde(default)]
    source: Option<TreePath>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    secret: Option<TreePath>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    owner: Principal,
    #[serde(default)]
    group: Principal,
    #[serde(default)]
    tmpfs: bool,
}

impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawFileSpec::deserialize(d)?;
        let what = raw.path.to_string();
        let (content, default_mode) = match raw.secret {
            None => (
                one_content(&what, raw.source, raw.content).map_err(serde::de::Error::custom)?,
                mode_0644(),
            ),
            Some(_) if raw.source.is_some() || raw.content.is_some() => {
                return Err(serde::de::Error::custom(format!(
                    "{what}: give one of source, content or secret"
                )));
            }
            Some(sealed) => (Content::Encrypted(sealed), Mode(0o400)),
        };
        if raw.tmpfs && !matches!(content, Content::Encrypted(_)) {
            return Err(serde::de::Error::custom(format!(
                "{what}: tmpfs is for secrets only"
            )));
        }
        Ok(FileSpec {
            path: raw.path,
            content,
            mode: raw.mode.unwrap_or(default_mode),
            owner: raw.owner,
            group: raw.group,
            tmpfs: raw.tmpfs,
        })
    }
}

pub(super) fn one_content(
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

fn mode_0755() -> Mode {
    Mode(0o755)
}

fn mode_0644() -> Mode {
    Mode(0o644)
}
