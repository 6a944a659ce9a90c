//! The agent config (`/etc/driftless/agent.yaml` under the root): where the
//! release comes from, whom to trust, which release to pin, and how patient
//! to be. Parsed strictly: an unknown key is an error with file, line and
//! column, so a typo never silently falls back to a default.
//!
//! Every path in the config is a path on the node and is resolved beneath
//! `--root`, like everything else the agent touches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{Interval, NodePath, TreePath};

/// Where the config lives on a node.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/driftless/agent.yaml";
/// Config files larger than this are refused.
pub const MAX_CONFIG_LEN: u64 = 256 * 1024;

/// A config file that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong (serde's message carries line and column).
    pub reason: String,
}

/// The whole agent config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The release repository.
    pub source: Source,
    /// Who may sign releases.
    pub trust: TrustFiles,
    /// The pinned release.
    pub release: Release,
    /// Network patience.
    #[serde(default)]
    pub fetch: FetchSettings,
    /// How the node names itself.
    #[serde(default)]
    pub node: NodeSettings,
    /// What happens when the node cannot be brought up.
    #[serde(default)]
    pub failure: FailureSettings,
    /// How the applied configuration is locked.
    #[serde(default)]
    pub lock: LockSettings,
    /// What happens when the node drifts from its manifest.
    #[serde(default)]
    pub drift: DriftSettings,
    /// How the node asks to be replaced.
    #[serde(default)]
    pub replace: ReplaceSettings,
    /// The fleet's channel.
    #[serde(default)]
    pub channel: ChannelSettings,
    /// Coordination of the fleet's rollout (none, or etcd).
    #[serde(default)]
    pub rollout: RolloutSettings,
    /// Where the watcher writes Prometheus metrics (node_exporter's textfile
    /// collector), e.g. `/var/lib/node_exporter/textfile/driftless.prom`.
    #[serde(default)]
    pub metrics_file: Option<NodePath>,
}

/// How the node asks to be replaced (it never upgrades in place).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaceSettings {
    /// `poweroff` (default), `exec`, or `webhook`.
    pub action: ReplaceAction,
    /// For `exec`: the program (absolute path) and its arguments; the reason
    /// is appended as the last argument.
    pub command: Vec<String>,
    /// For `webhook`: the URL that receives a signed JSON POST.
    pub url: Option<String>,
    /// For `webhook`: a file with the shared HMAC-SHA256 secret; never logged.
    pub secret_file: Option<NodePath>,
    /// For `webhook`: a CA bundle (PEM) trusted for the URL instead of the system's.
    pub ca_file: Option<NodePath>,
    /// Optional command (absolute path and arguments) run first, e.g. to
    /// drain the node from its load balancer.
    pub drain: Vec<String>,
    /// Time limit for the drain command and for the action.
    pub timeout: Interval,
}

impl Default for ReplaceSettings {
    fn default() -> Self {
        Self {
            action: ReplaceAction::Poweroff,
            command: Vec::new(),
            url: None,
            secret_file: None,
            ca_file: None,
            drain: Vec::new(),
            timeout: Interval::secs(60),
        }
    }
}

/// The ways to ask for replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceAction {
    /// Power the node off through systemd (with a cloud's "shutdown means
    /// terminate" setting or an autoscaling health check, this replaces it).
    #[default]
    Poweroff,
    /// Run a command (e.g. a cloud CLI that marks the instance unhealthy).
    Exec,
    /// POST a signed JSON request to a URL.
    Webhook,
}

/// Locking the applied configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockSettings {
    /// `required` (default), `best-effort`, or `off`.
    pub mode: LockMode,
    /// Directories bind-mounted read-only onto themselves, besides those the
    /// spec lists.
    pub read_only: Vec<NodePath>,
}

/// Drift handling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSettings {
    /// `report` (log and record) or `replace` (ask to be replaced).
    pub policy: DriftPolicy,
    /// Full rescan interval of the watcher, besides inotify events.
    pub rescan_interval: Interval,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            policy: DriftPolicy::Report,
            rescan_interval: Interval::secs(300),
        }
    }
}

/// What a drifted node does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftPolicy {
    /// Log each drift once and record it in state.
    #[default]
    Report,
    /// Also ask to be replaced.
    Replace,
}

/// The release repository and how to reach it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `https://`, `http://`, `ssh://`, `git://` or `file://`.
    pub url: SourceUrl,
    /// CA bundle for HTTPS (PEM); the system store when absent.
    #[serde(default)]
    pub ca_file: Option<NodePath>,
    /// File holding an HTTPS access token (sent as the basic-auth password); never logged.
    #[serde(default)]
    pub token_file: Option<NodePath>,
    /// User name sent with `token_file`.
    #[serde(default = "default_token_user")]
    pub token_user: String,
    /// Private key for `ssh://`.
    #[serde(default)]
    pub ssh_key_file: Option<NodePath>,
    /// `known_hosts` for `ssh://`; without it any host key is accepted (the
    /// release's signature, not the transport, is what is trusted).
    #[serde(default)]
    pub ssh_known_hosts: Option<NodePath>,
}

fn default_token_user() -> String {
    "git".to_owned()
}

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

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SourceUrl::new(&text).map_err(serde::de::Error::custom)
    }
}

/// The trust files baked into the image.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFiles {
    /// git's allowed_signers format.
    pub allowed_signers: NodePath,
    /// Public keys refused whatever allowed_signers says.
    #[serde(default)]
    pub revoked_keys: Option<NodePath>,
}

/// The release this node is pinned to: a fixed tag, or the tag a channel
/// names when the node first boots (resolved once, then pinned for good).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The signed tag, e.g. `v1.4.2`.
    #[serde(default)]
    pub tag: Option<TagName>,
    /// A channel branch name, e.g. `production`: apply resolves the tag its
    /// `channel.yaml` names at first boot. Sets `channel.ref` to
    /// `refs/heads/NAME` unless that is given.
    #[serde(default)]
    pub channel: Option<String>,
    /// Optional hard pin: the tag must name exactly this commit.
    #[serde(default)]
    pub commit: Option<CommitId>,
    /// The node spec's path in the release tree.
    #[serde(default = "default_spec_path")]
    pub spec: TreePath,
}

/// The fleet's channel, watched for the desired release.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    /// The channel branch (default `refs/heads/channel`).
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// The channel file in the branch's tree.
    pub file: TreePath,
    /// The failures file in the branch's tree (optional there): failed node
    /// ids per release, published by the operator; see docs/channel.md.
    pub failures_file: TreePath,
    /// Time between polls (with ±10 % jitter).
    pub poll_interval: Interval,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            reference: None,
            file: TreePath::new("channel.yaml").unwrap_or_else(|_| unreachable!("valid constant")),
            failures_file: TreePath::new("failures.yaml")
                .unwrap_or_else(|_| unreachable!("valid constant")),
            poll_interval: Interval::secs(60),
        }
    }
}

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

/// The default channel branch.
pub const DEFAULT_CHANNEL_REF: &str = "refs/heads/channel";

fn default_spec_path() -> TreePath {
    TreePath::new("driftless.yaml").unwrap_or_else(|_| unreachable!("valid constant"))
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

/// Network patience: every step has a timeout and the whole fetch a deadline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchSettings {
    /// Time to establish a connection.
    pub connect_timeout: Interval,
    /// Longest silence from the server during a transfer.
    pub io_timeout: Interval,
    /// Total time for the fetch, retries included.
    pub deadline: Interval,
    /// First retry delay; doubles each attempt (with jitter).
    pub retry_initial: Interval,
    /// Longest retry delay.
    pub retry_max: Interval,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Interval::secs(10),
            io_timeout: Interval::secs(30),
            deadline: Interval::secs(300),
            retry_initial: Interval::secs(1),
            retry_max: Interval::secs(30),
        }
    }
}

/// How the node identifies itself (for the fleet, logs and webhooks).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// A file whose first line is the node id. Default: cloud-init's
    /// instance id from `/run/cloud-init/instance-data.json` when present,
    /// else `/etc/machine-id`.
    pub id_file: Option<NodePath>,
}

/// What a node that cannot be brought up does.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureSettings {
    /// The policy.
    pub policy: FailurePolicy,
}

/// Failure policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Exit non-zero and record the node as failed; the release's services
    /// stay stopped.
    #[default]
    MarkFailed,
    /// Also ask to be replaced (see `replace`).
    Replace,
}

impl AgentConfig {
    /// Loads the trust files the config names, beneath the root.
    pub fn load_trust(
        &self,
        root: &Path,
    ) -> Result<crate::verify::Trust, crate::verify::TrustFileError> {
        let allowed = self.trust.allowed_signers.under(root);
        let revoked = self.trust.revoked_keys.as_ref().map(|p| p.under(root));
        crate::verify::Trust::load(&allowed, revoked.as_deref())
    }

    /// Parses config text; `path` names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError {
            path: path.to_owned(),
            reason,
        };
        let config: AgentConfig = serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))?;
        match (&config.release.tag, &config.release.channel) {
            (Some(_), Some(_)) => {
                return Err(fail("release: give either tag or channel, not both".into()));
            }
            (None, None) => {
                return Err(fail(
                    "release: needs tag (a signed release tag) or channel (a channel branch name)"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(name) = &config.release.channel {
            let implied = format!("refs/heads/{name}");
            if !crate::types::is_valid_ref_name(&implied) {
                return Err(fail(format!(
                    "release.channel: {name:?} is not a valid branch name"
                )));
            }
            if config
                .channel
                .reference
                .as_deref()
                .is_some_and(|r| r != implied)
            {
                return Err(fail(format!(
                    "release.channel {name} and channel.ref disagree; set one of them"
                )));
            }
        }
        if let Some(r) = &config.channel.reference {
            if !r.starts_with("refs/") || !crate::types::is_valid_ref_name(r) {
                return Err(fail(format!(
                    "channel.ref: {r:?} is not a full ref name like refs/heads/channel"
                )));
            }
        }
        config.rollout.validate().map_err(fail)?;
        Ok(config)
    }

    /// The channel ref this node watches.
    pub fn channel_ref(&self) -> String {
        match (&self.channel.reference, &self.release.channel) {
            (Some(r), _) => r.clone(),
            (None, Some(name)) => format!("refs/heads/{name}"),
            (None, None) => DEFAULT_CHANNEL_REF.to_owned(),
        }
    }

    /// Reads and parses a config file on the host.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let bytes =
            crate::verify::allowed_signers::read_limited(path, MAX_CONFIG_LEN).map_err(|e| {
                ConfigError {
                    path: name.clone(),
                    reason: format!("cannot read: {e}"),
                }
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            path: name.clone(),
            reason: "not UTF-8".into(),
        })?;
        Self::parse(&text, &name)
    }
}

/// The config file to read: `explicit` as given, else the default under `root`.
pub fn config_path(root: &Path, explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => root.join(&DEFAULT_CONFIG_PATH[1..]),
    }
}

/// Reads the node's identity under `root` (see [`NodeSettings::id_file`]).
pub fn node_id(root: &Path, settings: &NodeSettings) -> Result<String, ConfigError> {
    let read = |p: &NodePath| {
        std::fs::read_to_string(p.under(root)).map_err(|e| ConfigError {
            path: p.to_string(),
            reason: format!("cannot read the node id: {e}"),
        })
    };
    if let Some(file) = &settings.id_file {
        return first_line(&read(file)?, file);
    }
    let instance_data = root.join("run/cloud-init/instance-data.json");
    if let Ok(text) = std::fs::read_to_string(&instance_data) {
        if let Some(id) = instance_id(&text) {
            return Ok(id);
        }
    }
    let machine_id = NodePath::new("/etc/machine-id").map_err(|e| ConfigError {
        path: "/etc/machine-id".into(),
        reason: e,
    })?;
    first_line(&read(&machine_id)?, &machine_id)
}

/// Extracts `v1.instance_id` from cloud-init's instance data.
pub fn instance_id(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = value.get("v1")?.get("instance_id")?.as_str()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

fn first_line(text: &str, path: &NodePath) -> Result<String, ConfigError> {
    let id = text.lines().next().unwrap_or("").trim();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ConfigError {
            path: path.to_string(),
            reason: "node id is empty or not one printable line".into(),
        });
    }
    Ok(id.to_owned())
}

/// How hard the agent tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// Every path must be locked, or the apply fails.
    #[default]
    Required,
    /// Lock what the filesystem allows; record the rest and why.
    BestEffort,
    /// Do not lock (an image being baked; the next boot locks).
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/examples/agent.yaml");

    #[test]
    fn the_documented_example_parses() {
        let config = AgentConfig::parse(EXAMPLE, "agent.yaml").expect("example parses");
        assert_eq!(
            config.release.tag.as_ref().map(TagName::as_str),
            Some("v1.4.2")
        );
        assert_eq!(config.channel_ref(), "refs/heads/channel");
        assert_eq!(config.release.spec.as_str(), "driftless.yaml");
        assert_eq!(
            config.trust.allowed_signers.as_str(),
            "/etc/driftless/allowed_signers"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let text = "source:\n  url: https://git.example.com/r.git\n  urll: x\ntrust:\n  allowed_signers: /a\nrelease:\n  tag: v1\n";
        let err = AgentConfig::parse(text, "agent.yaml").expect_err("typo refused");
        let msg = err.to_string();
        assert!(msg.starts_with("agent.yaml: "), "{msg}");
        assert!(
            msg.contains("urll") && msg.contains("line 3 column 3"),
            "{msg}"
        );
    }

    #[test]
    fn values_are_validated_where_they_stand() {
        for (bad, what) in [
            (
                "source: {url: ftp://x}\ntrust: {allowed_signers: /a}\nrelease: {tag: v1}",
                "url",
            ),
            (
                "source: {url: https://x}\ntrust: {allowed_signers: a}\nrelease: {tag: v1}",
                "absolute",
            ),
            (
                "source: {url: https://x}\ntrust: {allowed_signers: /a}\nrelease: {tag: 'v1..2'}",
                "tag",
            ),
            (
                "source: {url: https://x}\ntrust: {allowed_signers: /a}\nrelease: {tag: v1, commit: abc}",
                "commit",
            ),
            (
                "source: {url: https://x}\ntrust: {allowed_signers: /a}\nrelease: {tag: v1}\nfetch: {deadline: soon}",
                "duration",
            ),
        ] {
            let err = AgentConfig::parse(bad, "c").expect_err(bad).to_string();
            assert!(err.contains(what) && err.contains("line"), "{bad}: {err}");
        }
    }

    #[test]
    fn rollout_defaults_and_etcd_settings() {
        let base = "source: {url: https://x}\ntrust: {allowed_signers: /a}\nrelease: {tag: v1}\n";
        let plain = AgentConfig::parse(base, "c").expect("no rollout section");
        assert_eq!(plain.rollout.coordinator, Coordinator::None);
        assert_eq!(plain.rollout.group, "default");
        assert_eq!(plain.rollout.max_in_flight, 1);
        assert_eq!(plain.rollout.lease_ttl, Interval::secs(600));
        let etcd = format!(
            "{base}rollout: {{coordinator: etcd, endpoints: ['https://etcd-1:2379', 'https://etcd-2:2379/'], group: web, max_in_flight: 3, lease_ttl: 15m, ca_file: /etc/driftless/etcd-ca.pem}}\n"
        );
        let config = AgentConfig::parse(&etcd, "c").expect("etcd settings");
        assert_eq!(config.rollout.coordinator, Coordinator::Etcd);
        assert_eq!(config.rollout.endpoints.len(), 2);
        assert_eq!(config.rollout.lease_ttl, Interval::secs(900));
        let short = format!(
            "{base}rollout: {{coordinator: etcd, endpoints: ['http://e:2379'], lease_ttl: 1s}}\n"
        );
        let err = AgentConfig::parse(&short, "c")
            .expect_err("too short")
            .to_string();
        assert!(err.contains("rollout.lease_ttl"), "{err}");
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        let url = SourceUrl::new("https://user:secret@git.example.com/fleet/r.git").expect("valid");
        assert_eq!(url.redacted(), "https://git.example.com/fleet/r.git");
    }

    #[test]
    fn cloud_init_instance_id() {
        assert_eq!(
            instance_id(r#"{"v1": {"instance_id": "i-0abc"}}"#),
            Some("i-0abc".into())
        );
        assert_eq!(instance_id(r#"{"v1": {}}"#), None);
    }
}
