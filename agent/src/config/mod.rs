//! The agent config (`/etc/driftless/agent.yaml` under the root): where the
//! release comes from, whom to trust, which release to pin, and how patient
//! to be. Parsed strictly: an unknown key is an error with file, line and
//! column, so a typo never silently falls back to a default.
//!
//! Every path in the config is a path on the node and is resolved beneath
//! `--root`, like everything else the agent touches.
//!
//! This file holds the schema (the whole config and its sections) and its
//! parsing; the validated values ([`TagName`], [`CommitId`], [`SourceUrl`]),
//! the `rollout` section with its checks, and the node's id lookup
//! ([`node_id`]) each have a file of their own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{ByteSize, Interval, NodePath, TreePath};

mod channel;
mod identity;
mod rollout;
mod secrets;
pub mod user_data;
mod values;

pub use channel::{
    ChannelSettings, ClockSettings, ClockSync, DEFAULT_CHANNEL_REF, DEFAULT_FLEET,
    is_valid_fleet_name,
};
pub use identity::{instance_id, node_id};
pub use rollout::{Coordinator, RolloutSettings};
pub use secrets::{IdentityError, SecretSettings};
pub use values::{CommitId, SourceKind, SourceUrl, TagName};

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
    /// How the node judges time at first boot (see [`ClockSettings`]).
    #[serde(default)]
    pub clock: ClockSettings,
    /// Where the watcher writes Prometheus metrics (node_exporter's textfile
    /// collector), e.g. `/var/lib/node_exporter/textfile/driftless.prom`.
    #[serde(default)]
    pub metrics_file: Option<NodePath>,
    /// Where the node's age identity comes from (for a release's secrets).
    #[serde(default)]
    pub secrets: SecretSettings,
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
    /// How often the watcher verifies the record against the signed
    /// release (besides at its start, and apply at every boot).
    pub verify_interval: Interval,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            policy: DriftPolicy::Report,
            rescan_interval: Interval::secs(300),
            verify_interval: Interval::secs(3600),
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
    /// What `url` serves: a git repository, or the static files
    /// `driftless publish` writes (`https://`, `http://` or `file://`).
    #[serde(default)]
    pub kind: SourceKind,
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

/// The trust files baked into the image.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFiles {
    /// Who may sign releases (git's allowed_signers format). Alone, without
    /// `channel_signers`, its keys also move and refresh the channel.
    pub allowed_signers: NodePath,
    /// Who may move the channel (promote, roll back, hold); when set, a
    /// release key alone no longer can.
    #[serde(default)]
    pub channel_signers: Option<NodePath>,
    /// Who may only renew the channel's expiry (a refresh job's key).
    #[serde(default)]
    pub refresh_signers: Option<NodePath>,
    /// Public keys refused whatever the signer files say.
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

fn default_spec_path() -> TreePath {
    TreePath::new("driftless.yaml").unwrap_or_else(|_| unreachable!("valid constant"))
}

/// `fetch.max_bytes` by default: twice the most a node spec may write
/// (`release::spec::MAX_TOTAL_LEN`, 1 GiB), room for the tree's other files.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 2 << 30;

/// `fetch.channel_max_bytes` by default: a channel commit, its tree and
/// its document inflate to at most about 1.5 KiB (an estimate: a signed
/// commit, a one- or two-entry tree, a document of a few hundred bytes),
/// so this holds some 170,000 of them (nearly twenty years of hourly
/// refreshes), while a pack that claims more costs at most this much
/// inflating and hashing before it is refused.
pub const DEFAULT_CHANNEL_MAX_BYTES: u64 = 256 << 20;

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
    /// The most one fetch of a release or of a channel move may bring:
    /// bytes received (every transport) and bytes inflated (the streamed
    /// fetch, and a release's pack read before libgit2 indexes it), each;
    /// crossing it refuses the fetch for good.
    pub max_bytes: ByteSize,
    /// The most a channel move's pack may inflate to (its objects, deltas
    /// applied), and one object per KiB of it at most: checked by
    /// driftless's own reader before libgit2 indexes the pack.
    pub channel_max_bytes: ByteSize,
    /// Over `http(s)://`, refuse a server that does not speak git protocol
    /// v2 instead of fetching from it with libgit2: whether it speaks v2 is
    /// the server's own answer, and libgit2's fetch has neither the
    /// streamed first boot's bounds nor a channel move's read-first.
    pub require_v2: bool,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Interval::secs(10),
            io_timeout: Interval::secs(30),
            deadline: Interval::secs(300),
            retry_initial: Interval::secs(1),
            retry_max: Interval::secs(30),
            max_bytes: ByteSize(DEFAULT_MAX_FETCH_BYTES),
            channel_max_bytes: ByteSize(DEFAULT_CHANNEL_MAX_BYTES),
            require_v2: true,
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
        if !is_valid_fleet_name(&config.channel.fleet) {
            return Err(fail(format!(
                "channel.fleet: {:?} is not a fleet name (1 to 64 letters, digits, -, _, .)",
                config.channel.fleet
            )));
        }
        if config.source.kind == SourceKind::Static {
            let url = config.source.url.as_str();
            if !["https://", "http://", "file://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(fail(
                    "source.kind static: url must be https://, http:// or file:// (the \
                     directory driftless publish wrote)"
                        .into(),
                ));
            }
        }
        config.rollout.validate().map_err(fail)?;
        config.secrets.validate().map_err(fail)?;
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
        assert_eq!(config.fetch.max_bytes, ByteSize(DEFAULT_MAX_FETCH_BYTES));
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
                "source: {url: 'https://h/r', kind: mirror}\ntrust: {allowed_signers: /a}\nrelease: {tag: v1}",
                "kind",
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
    fn a_static_source_is_read_over_http_or_from_a_path() {
        let config = |source: &str, release: &str| {
            let text =
                format!("source: {source}\ntrust: {{allowed_signers: /a}}\nrelease: {release}");
            AgentConfig::parse(&text, "c").map(|c| c.source.kind)
        };
        assert_eq!(
            config("{url: 'https://h/r'}", "{tag: v1}").expect("git"),
            SourceKind::Git
        );
        for url in ["https://h/r/", "http://h/r", "file:///srv/r"] {
            let source = format!("{{url: '{url}', kind: static}}");
            assert_eq!(config(&source, "{tag: v1}").expect(url), SourceKind::Static);
        }
        assert_eq!(
            config("{url: 'https://h/r', kind: static}", "{channel: c}").expect("channel"),
            SourceKind::Static
        );
        let err = config("{url: 'ssh://h/r', kind: static}", "{tag: v1}")
            .expect_err("ssh")
            .to_string();
        assert!(err.contains("https://, http:// or file://"), "{err}");
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
}
