//! The `rollout` section: whether and how the nodes of a fleet coordinate a
//! rollout through etcd. Apart from the other sections because it is the one
//! with rules across its keys ([`RolloutSettings::validate`]).

use serde::{Deserialize, Serialize};

use crate::types::{Interval, NodePath};

/// How the nodes of a fleet coordinate a rollout. Without a coordinator
/// (the default) each node decides alone from the signed channel (canary,
/// waves, windows, the failures file); with `etcd`, at most `max_in_flight`
/// nodes of `group` are away at once, and failures of new nodes are
/// recorded in etcd.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// `none` (default) or `etcd`.
    pub coordinator: Coordinator,
    /// etcd client URLs (`http://` or `https://`), tried in turn.
    pub endpoints: Vec<String>,
    /// The group this node belongs to: slots and failures are counted per
    /// group (a letter, digit, `-`, `_` or `.`; default `default`).
    pub group: String,
    /// Most nodes of the group away at once.
    pub max_in_flight: u32,
    /// Lifetime of a slot after its holder stops renewing it: the longest a
    /// vanished node blocks its group.
    pub lease_ttl: Interval,
    /// Time limit of each request to etcd.
    pub timeout: Interval,
    /// CA bundle (PEM) trusted for `https://` endpoints instead of the system's.
    pub ca_file: Option<NodePath>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    pub cert_file: Option<NodePath>,
    /// The client certificate's private key (PEM, PKCS#8).
    pub key_file: Option<NodePath>,
    /// etcd user name (etcd's own authentication).
    pub username: Option<String>,
    /// A file holding that user's password; never logged.
    pub password_file: Option<NodePath>,
    /// Whether the watcher keeps its `nodes/<id>` entry in etcd for
    /// `driftless fleet`. Off, etcd hears only from nodes that need a slot
    /// or report an apply: what a very large fleet wants (docs/scale.md).
    pub roster: bool,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            coordinator: Coordinator::None,
            endpoints: Vec::new(),
            group: "default".to_owned(),
            max_in_flight: 1,
            lease_ttl: Interval::secs(600),
            timeout: Interval::secs(5),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
            roster: true,
        }
    }
}

/// Who coordinates a rollout across nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinator {
    /// Nobody: each node follows the signed channel alone.
    #[default]
    None,
    /// etcd v3, through its JSON gateway.
    Etcd,
}

impl RolloutSettings {
    /// Checks the settings as a whole; the error is one line naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let group_ok = !self.group.is_empty()
            && self.group.len() <= 64
            && self
                .group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !self.group.starts_with('.');
        if !group_ok {
            return Err(format!(
                "rollout.group {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                self.group
            ));
        }
        if self.max_in_flight == 0 {
            return Err("rollout.max_in_flight must be at least 1".into());
        }
        if self.max_in_flight > 10_000 {
            return Err("rollout.max_in_flight must be at most 10000".into());
        }
        // etcd refuses shorter leases (its minimum is 1.5 election timeouts).
        if self.lease_ttl.0 < std::time::Duration::from_secs(2) {
            return Err("rollout.lease_ttl must be at least 2s".into());
        }
        if self.timeout.0.is_zero() {
            return Err("rollout.timeout must be longer than zero".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("rollout.cert_file and rollout.key_file go together; set both".into());
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err("rollout.username and rollout.password_file go together; set both".into());
        }
        if self.coordinator == Coordinator::None {
            let etcd_only = [
                ("endpoints", !self.endpoints.is_empty()),
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("username", self.username.is_some()),
            ];
            if let Some((key, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "rollout.{key} is set but rollout.coordinator is none; set coordinator: etcd or remove it"
                ));
            }
            return Ok(());
        }
        if self.endpoints.is_empty() {
            return Err(
                "rollout.coordinator is etcd but rollout.endpoints is empty; list etcd's client URLs, e.g. https://etcd-1.example.com:2379"
                    .into(),
            );
        }
        for e in &self.endpoints {
            let url = reqwest::Url::parse(e)
                .map_err(|err| format!("rollout.endpoints: {e:?} is not a URL: {err}"))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || !url.username().is_empty()
                || url.password().is_some()
                || url.query().is_some()
                || !matches!(url.path(), "" | "/")
            {
                return Err(format!(
                    "rollout.endpoints: {e:?} must be http(s)://HOST:PORT, without a path or credentials (use username and password_file)"
                ));
            }
        }
        Ok(())
    }
}
