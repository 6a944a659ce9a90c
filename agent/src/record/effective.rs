//! What else makes up the node's effective configuration, beyond the
//! manifest's own paths, as recorded when the release was applied: the
//! places systemd reads that change a managed unit, the account tables, the
//! security-relevant extended attributes of managed paths, and the mounts
//! at and around managed paths. Kept in `state.json` beside the manifest;
//! `record::drift` compares the node with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The recorded effective configuration beyond the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effective {
    /// The managed units (and their aliases) whose overrides are checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// Unit files and drop-ins that change a managed unit but are not the
    /// release's (the image's, or a generator's), found when the release
    /// was applied: path → what it was (see [`fingerprint`](crate::record::drift::units)).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, String>,
    /// The account tables after apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountsRecord>,
    /// Security-relevant extended attributes of managed paths, by path then
    /// name, values in hex; a managed path not listed carries none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, BTreeMap<String, String>>,
    /// The mounts at, under and above managed paths once the node was locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountPoint>>,
}

impl Effective {
    /// True when nothing is recorded (a state written before these checks).
    pub fn is_empty(&self) -> bool {
        *self == Effective::default()
    }
}

/// The account tables as apply left them. `/etc/passwd` and `/etc/group`
/// are kept whole (anyone may read them); of `/etc/shadow` and
/// `/etc/gshadow` only what says whether an account has a password, and a
/// group's administrators and members: `state.json` is readable by all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsRecord {
    /// `/etc/passwd`, whole.
    pub passwd: String,
    /// `/etc/group`, whole.
    pub group: String,
    /// `/etc/shadow`: name → `locked`, `none` or `set`; absent without the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<BTreeMap<String, String>>,
    /// `/etc/gshadow`: name → `CLASS:ADMINS:MEMBERS`; absent without the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gshadow: Option<BTreeMap<String, String>>,
}

/// One mount point, as the node's mount table describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountPoint {
    /// The node path of the mount point (`/` for the root itself).
    pub path: String,
    /// The filesystem type (`ext4`, `tmpfs`, …).
    pub fstype: String,
    /// The mount source (`/dev/vda1`, `tmpfs`, …).
    pub source: String,
    /// The directory of that filesystem mounted there (`/etc/app` for a bind mount).
    pub root: String,
    /// Mounted read-only.
    pub read_only: bool,
}
