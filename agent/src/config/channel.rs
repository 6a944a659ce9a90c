//! The agent config's channel sections: `channel` (the branch, its files,
//! the poll interval and the fleet this node belongs to) and `clock` (how
//! a first boot waits for a synchronized clock), and the trust files by
//! role ([`AgentConfig::load_roles`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AgentConfig;
use crate::types::{Interval, NodePath, TreePath};

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
    /// The fleet this node belongs to: a channel document is accepted only
    /// when it names this fleet (and this channel).
    pub fleet: String,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            reference: None,
            file: TreePath::new("channel.yaml").unwrap_or_else(|_| unreachable!("valid constant")),
            failures_file: TreePath::new("failures.yaml")
                .unwrap_or_else(|_| unreachable!("valid constant")),
            poll_interval: Interval::secs(60),
            fleet: DEFAULT_FLEET.to_owned(),
        }
    }
}

/// The default channel branch.
pub const DEFAULT_CHANNEL_REF: &str = "refs/heads/channel";
/// The fleet a config names when it names none.
pub const DEFAULT_FLEET: &str = "default";

/// Whether `name` may name a fleet: 1 to 64 letters, digits, `-`, `_`, `.`.
pub fn is_valid_fleet_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// How a first boot that starts from the channel waits for a synchronized
/// clock before it judges the channel's expiry (see docs/channel.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSettings {
    /// `wait` (default): wait up to `sync_timeout`, then go on with the
    /// clock as it is (never earlier than the newest signed time seen);
    /// `require`: fail closed when it is not synchronized by then;
    /// `ignore`: do not wait.
    pub sync: ClockSync,
    /// The longest a first boot waits for the clock.
    pub sync_timeout: Interval,
}

impl Default for ClockSettings {
    fn default() -> Self {
        Self {
            sync: ClockSync::Wait,
            sync_timeout: Interval::secs(60),
        }
    }
}

/// What a first boot does about an unsynchronized clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSync {
    /// Wait up to the timeout, then go on.
    #[default]
    Wait,
    /// Wait up to the timeout, then fail closed.
    Require,
    /// Do not wait.
    Ignore,
}

impl AgentConfig {
    /// Loads the trust files the config names, by role, beneath the root.
    pub fn load_roles(
        &self,
        root: &Path,
    ) -> Result<crate::verify::Roles, crate::verify::TrustFileError> {
        let release = self.load_trust(root)?;
        let load = |path: &Option<NodePath>| -> Result<_, crate::verify::TrustFileError> {
            path.as_ref()
                .map(|p| crate::verify::AllowedSigners::load(&p.under(root)))
                .transpose()
        };
        let channel = load(&self.trust.channel_signers)?;
        let refresh = load(&self.trust.refresh_signers)?;
        Ok(crate::verify::Roles::from_lists(release, channel, refresh))
    }

    /// The name a channel document must give its channel: the channel
    /// branch's name (`refs/heads/` taken off), or the whole ref.
    pub fn channel_name(&self) -> String {
        let reference = self.channel_ref();
        reference
            .strip_prefix("refs/heads/")
            .unwrap_or(&reference)
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "source: {url: https://x}\ntrust: {allowed_signers: /a}\n";

    #[test]
    fn the_channel_and_fleet_a_node_expects() {
        let plain =
            AgentConfig::parse(&format!("{BASE}release: {{tag: v1}}\n"), "c").expect("valid");
        assert_eq!(
            (plain.channel_name().as_str(), plain.channel.fleet.as_str()),
            ("channel", DEFAULT_FLEET)
        );
        assert_eq!(plain.clock.sync, ClockSync::Wait);
        let named = AgentConfig::parse(
            &format!(
                "{BASE}release: {{channel: production}}\nchannel: {{fleet: web}}\nclock: {{sync: require, sync_timeout: 5s}}\n"
            ),
            "c",
        )
        .expect("valid");
        assert_eq!(named.channel_name(), "production");
        assert_eq!(named.channel.fleet, "web");
        assert_eq!(named.clock.sync_timeout, Interval::secs(5));
        let other = AgentConfig::parse(
            &format!("{BASE}release: {{tag: v1}}\nchannel: {{ref: refs/fleet/web}}\n"),
            "c",
        )
        .expect("valid");
        assert_eq!(other.channel_name(), "refs/fleet/web");
        for (bad, needle) in [
            ("channel: {fleet: 'a b'}", "channel.fleet"),
            ("channel: {fleet: ''}", "channel.fleet"),
            ("clock: {sync: maybe}", "sync"),
        ] {
            let err = AgentConfig::parse(&format!("{BASE}release: {{tag: v1}}\n{bad}\n"), "c")
                .expect_err(bad)
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
