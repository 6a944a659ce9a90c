//! The channel: a signed document (default `channel.yaml`) on a branch of
//! the release repository (default `refs/heads/channel`), written by
//! `driftless channel`. It says what it is for (its channel and fleet),
//! carries a sequence that grows by one with every change, names the
//! release by tag and tag object, expires, and holds the rollout settings.
//! A node accepts a document only as its rules say (`accept.rs`): signed by
//! a channel signer (or, changing nothing but the expiry, by a refresh
//! signer), for its channel and fleet, never below what it has seen, fresh.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::TagName;
use crate::types::Interval;

mod accept;
mod rollout;

pub use accept::{
    Expect, Known, MAX_REFRESH_CHAIN, TreeText, changed_fields, evaluate, tree_text, verify_tip,
};
pub use rollout::{ClockTime, Share, Weekday, Window};

/// Channel files larger than this are refused.
pub const MAX_CHANNEL_LEN: usize = 64 * 1024;

/// The highest sequence a document may carry (2^53 - 1: exact in JSON).
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// The channel document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    /// The channel it is for: the channel branch's name.
    pub channel: String,
    /// The fleet it is for.
    pub fleet: String,
    /// Grows by one with every change; 1 for the first document.
    pub sequence: u64,
    /// The desired release tag.
    pub release: TagName,
    /// The id of the tag object `release` names: a re-signed tag of the
    /// same name is not that release.
    pub tag_object: String,
    /// When the channel last moved (promote, roll back, hold, release):
    /// waves count from it; a refresh keeps it.
    pub moved_at: Timestamp,
    /// From this time on the document is stale: never acted on.
    pub expires: Timestamp,
    /// While true, no node asks to be replaced.
    #[serde(default)]
    pub hold: bool,
    /// Share of the fleet (by bucket) that may go: `10%`, or a fraction `0.1`.
    /// Absent: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Share>,
    /// Split the fleet into this many waves (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<u32>,
    /// Time between waves, counted from `moved_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_interval: Option<Interval>,
    /// Maintenance windows outside which no node asks to be replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// Failures of new nodes on this release that stop the rollout (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
}

/// A channel file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("channel file {file}: {reason}")]
pub struct ChannelFileError {
    /// The file's path in the channel tree.
    pub file: String,
    /// What is wrong (with line and column from YAML).
    pub reason: String,
}

/// Parses a file of the channel branch, refusing one that is too large.
fn parse_limited<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ChannelFileError> {
    let fail = |reason: String| ChannelFileError {
        file: file.to_owned(),
        reason,
    };
    if text.len() > MAX_CHANNEL_LEN {
        return Err(fail(format!("larger than {MAX_CHANNEL_LEN} bytes")));
    }
    serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))
}

impl ChannelFile {
    /// Parses and validates channel text.
    pub fn parse(text: &str, file: &str) -> Result<Self, ChannelFileError> {
        let fail = |reason: String| ChannelFileError {
            file: file.to_owned(),
            reason,
        };
        if text.len() <= MAX_CHANNEL_LEN && !text.lines().any(|l| l.starts_with("sequence:")) {
            return Err(fail(
                "has no sequence: not a channel document of this driftless (write it with `driftless channel init`)"
                    .into(),
            ));
        }
        let channel: ChannelFile = parse_limited(text, file)?;
        channel.validate().map_err(fail)?;
        Ok(channel)
    }

    /// The checks beyond the YAML's shape.
    fn validate(&self) -> Result<(), String> {
        let ref_name = format!("refs/heads/{}", self.channel);
        if self.channel.is_empty() || !crate::types::is_valid_ref_name(&ref_name) {
            return Err(format!("channel {:?} is not a branch name", self.channel));
        }
        if !crate::config::is_valid_fleet_name(&self.fleet) {
            return Err(format!("fleet {:?} is not a fleet name", self.fleet));
        }
        if !(1..=MAX_SEQUENCE).contains(&self.sequence) {
            return Err(format!(
                "sequence {} must be between 1 and {MAX_SEQUENCE}",
                self.sequence
            ));
        }
        let hex = self
            .tag_object
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex || !matches!(self.tag_object.len(), 40 | 64) {
            return Err(format!(
                "tag_object {:?} must be a full lower-case hex object id",
                self.tag_object
            ));
        }
        if self.moved_at >= self.expires {
            return Err(format!(
                "expires ({}) must come after moved_at ({})",
                self.expires, self.moved_at
            ));
        }
        if self.waves == Some(0) {
            return Err("waves must be at least 1".into());
        }
        for w in &self.windows {
            if jiff::tz::TimeZone::get(&w.time_zone).is_err() {
                return Err(format!("unknown time zone {:?}", w.time_zone));
            }
            if w.length.0.is_zero() || w.length.0 > std::time::Duration::from_secs(7 * 24 * 3600) {
                return Err("a window's length must be between 1s and 7 days".into());
            }
        }
        Ok(())
    }

    /// The document as `driftless channel` writes it: a comment, then the
    /// fields in a fixed order.
    pub fn render(&self) -> String {
        let body = serde_yaml::to_string(self).unwrap_or_default();
        format!(
            "# The signed channel of fleet {}: written by `driftless channel`, checked by every node.\n{body}",
            self.fleet
        )
    }

    /// The document with what a refresh may change (sequence, expiry)
    /// cleared: two documents a refresh may join compare equal.
    pub fn without_freshness(&self) -> Self {
        Self {
            sequence: 0,
            expires: Timestamp::UNIX_EPOCH,
            ..self.clone()
        }
    }
}

/// The failures file (default `failures.yaml`, beside the channel file and
/// signed with it): for each release, the ids of new nodes that failed on
/// it, published by the operator. Without a coordinator it is how a rollout
/// stops itself: when a release's failures reach the channel's
/// `max_failures`, no node asks to be replaced for it.
///
/// ```yaml
/// v1.5.0: [i-0abc123, i-0def456]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Failures(pub std::collections::BTreeMap<String, Vec<String>>);

impl Failures {
    /// Parses and validates failures text: release tags mapping to lists
    /// of node ids.
    pub fn parse(text: &str, file: &str) -> Result<Self, ChannelFileError> {
        let fail = |reason: String| ChannelFileError {
            file: file.to_owned(),
            reason,
        };
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with('#'))
        {
            return Ok(Self::default());
        }
        let raw: std::collections::BTreeMap<String, Vec<String>> = parse_limited(text, file)?;
        let mut map = std::collections::BTreeMap::new();
        for (tag, ids) in raw {
            let tag = TagName::new(&tag).map_err(fail)?;
            if let Some(bad) = ids.iter().find(|id| {
                id.trim().is_empty() || id.len() > 256 || id.chars().any(char::is_control)
            }) {
                return Err(fail(format!(
                    "release {}: node id {bad:?} is not one printable line",
                    tag.as_str()
                )));
            }
            map.insert(tag.as_str().to_owned(), ids);
        }
        Ok(Self(map))
    }

    /// Distinct nodes recorded as failed on `release`.
    pub fn count(&self, release: &str) -> u32 {
        let ids: std::collections::BTreeSet<&str> = self
            .0
            .get(release)
            .map(|ids| ids.iter().map(|id| id.trim()).collect())
            .unwrap_or_default();
        u32::try_from(ids.len()).unwrap_or(u32::MAX)
    }

    /// True when no failure is listed.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(Vec::is_empty)
    }
}

/// The fields every test document starts with.
#[cfg(test)]
pub(crate) const TEST_HEADER: &str = "channel: channel\nfleet: web\nsequence: 3\n\
    tag_object: 0123456789abcdef0123456789abcdef01234567\n\
    moved_at: 2026-01-02T00:00:00Z\nexpires: 2026-01-05T00:00:00Z\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChannelFile, ChannelFileError> {
        ChannelFile::parse(&format!("{TEST_HEADER}{text}"), "channel.yaml")
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../docs/examples/channel.yaml");
        let c = ChannelFile::parse(text, "channel.yaml").expect("example parses");
        assert_eq!(c.release.as_str(), "v1.5.0");
        assert_eq!(
            (c.channel.as_str(), c.fleet.as_str()),
            ("production", "web")
        );
        assert_eq!(c.sequence, 42);
        assert!(!c.hold);
        assert_eq!(c.canary, Some(Share(1000)));
        assert_eq!(c.waves, Some(4));
        assert_eq!(c.windows[0].start, ClockTime { hour: 2, minute: 0 });
    }

    #[test]
    fn minimal_and_hostile_channels() {
        let c = parse("release: v2\nhold: true\n").expect("minimal");
        assert!(c.hold && c.canary.is_none());
        assert_eq!(c.sequence, 3);
        assert_eq!(
            parse("release: v2\ncanary: 0.25\n")
                .expect("fraction")
                .canary,
            Some(Share(2500))
        );
        for bad in [
            "release: v2\ncolour: red\n",
            "hold: true\n",
            "release: 'v1..2'\n",
            "release: v2\ncanary: 150%\n",
            "release: v2\ncanary: 5\n",
            "release: v2\nwaves: 0\n",
            "release: v2\nwindows: [{start: '25:00', length: 1h}]\n",
            "release: v2\nwindows: [{start: '02:00', length: 1h, time_zone: Mars/Olympus}]\n",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("channel file channel.yaml: "), "{err}");
        }
    }

    #[test]
    fn a_document_says_what_it_is_for_and_until_when() {
        let old = ChannelFile::parse("release: v2\n", "channel.yaml").expect_err("old format");
        assert!(old.to_string().contains("driftless channel init"), "{old}");
        let doc = |replace: (&str, &str)| {
            let text = format!("{TEST_HEADER}release: v2\n").replace(replace.0, replace.1);
            ChannelFile::parse(&text, "channel.yaml")
        };
        for (from, to, needle) in [
            ("sequence: 3", "sequence: 0", "sequence 0"),
            ("sequence: 3", "sequence: 9007199254740992", "sequence"),
            ("fleet: web", "fleet: 'a b'", "fleet"),
            ("channel: channel", "channel: 'a..b'", "channel"),
            (
                "0123456789abcdef0123456789abcdef01234567",
                "0123",
                "tag_object",
            ),
            (
                "0123456789abcdef0123456789abcdef01234567",
                "0123456789ABCDEF0123456789abcdef01234567",
                "tag_object",
            ),
            (
                "expires: 2026-01-05T00:00:00Z",
                "expires: 2026-01-01T00:00:00Z",
                "must come after",
            ),
            ("fleet: web\n", "", "fleet"),
        ] {
            let err = doc((from, to)).expect_err(to).to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn a_rendered_document_parses_back_and_refreshes_compare_equal() {
        let file =
            parse("release: v2\ncanary: 12.5%\nwaves: 3\nwave_interval: 10m\n").expect("valid");
        let text = file.render();
        assert!(text.starts_with("# "), "{text}");
        assert_eq!(ChannelFile::parse(&text, "c").expect(&text), file);
        let mut refreshed = file.clone();
        refreshed.sequence += 1;
        refreshed.expires = "2026-02-01T00:00:00Z".parse().expect("ts");
        assert_eq!(refreshed.without_freshness(), file.without_freshness());
        assert!(changed_fields(&refreshed, &file).is_empty());
        refreshed.release = TagName::new("v3").expect("tag");
        refreshed.hold = true;
        assert_eq!(changed_fields(&refreshed, &file), ["hold", "release"]);
    }

    #[test]
    fn a_share_without_its_percent_sign_says_so() {
        let err = parse("release: v2\ncanary: 5\n")
            .expect_err("5 is not a fraction")
            .to_string();
        assert!(err.contains("5%") && err.contains("0.05"), "{err}");
        assert!(!err.contains("between 0% and 100%"), "{err}");
    }

    #[test]
    fn a_channel_file_survives_the_watchers_record() {
        // watch.json keeps the accepted channel file as JSON; it must read
        // back as it was, shares included.
        let text = "release: v2\ncanary: 12.5%\nwaves: 3\nwave_interval: 10m\nmax_failures: 2\n\
                    windows: [{days: [mon], start: '02:00', length: 1h, time_zone: Europe/Berlin}]\n";
        let file = parse(text).expect("parses");
        let json = serde_json::to_string(&file).expect("serialises");
        let back: ChannelFile = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, file);
        assert_eq!(back.canary, Some(Share(1250)));
        let whole: ChannelFile = serde_json::from_str(
            &serde_json::to_string(&parse("release: v2\ncanary: 0.1\n").expect("parses"))
                .expect("json"),
        )
        .expect("reads back");
        assert_eq!(whole.canary, Some(Share(1000)));
    }

    #[test]
    fn failures_count_distinct_nodes_per_release() {
        let f = Failures::parse(
            "# failed new nodes\nv2: [node-a, node-b, node-a]\nv3: []\n",
            "failures.yaml",
        )
        .expect("valid");
        assert_eq!(f.count("v2"), 2);
        assert_eq!(f.count("v3"), 0);
        assert_eq!(f.count("v4"), 0);
        assert!(!f.is_empty());
        assert!(
            Failures::parse("# nothing yet\n", "failures.yaml")
                .expect("comments only")
                .is_empty()
        );
        for bad in ["v2: node-a\n", "'v1..2': [a]\n", "v2: ['']\n", "- a\n"] {
            let err = Failures::parse(bad, "failures.yaml")
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("channel file failures.yaml: "), "{err}");
        }
    }
}

/// The local ref in the release cache that holds the last accepted channel
/// tip (a tip is fetched into quarantine, see `release::candidate`, and
/// reaches this ref only once it verified).
pub const CACHE_REF: &str = "refs/driftless/channel";

/// A channel tip that verified, with what it says.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChannelState {
    /// The tip commit.
    pub tip: String,
    /// Who signed it (allowed_signers principals).
    pub signer: String,
    /// The signing key's fingerprint.
    pub fingerprint: String,
    /// The role its signer holds: `channel`, or `refresh` (the tip renews
    /// the document of `base`).
    pub role: crate::verify::ChannelRole,
    /// The channel signer's commit the tip's document rests on: the tip
    /// itself, or the commit a chain of refreshes renews.
    pub base: String,
    /// The signed commit time: no clock judging this document is believed
    /// when it says earlier.
    pub committed_at: Timestamp,
    /// The channel file at the tip.
    pub file: ChannelFile,
    /// The failures file at the tip (empty when there is none).
    pub failures: Failures,
}

/// Why a channel tip is not acted on. A refusal is logged and shown in
/// status; it never causes a replacement.
#[derive(Debug, thiserror::Error)]
pub enum ChannelRefusal {
    /// The tip's signature is missing, not trusted, or by a key without
    /// a channel role.
    #[error("channel tip {tip} refused: {source}")]
    Signature {
        /// The tip.
        tip: String,
        /// Why.
        source: crate::verify::VerifyError,
    },
    /// The tip does not descend from the last tip this node saw.
    #[error(
        "channel tip {tip} does not descend from {last}, {what}: the branch moved backwards or sideways"
    )]
    NotForward {
        /// The new tip.
        tip: String,
        /// The last tip seen.
        last: String,
        /// What that tip is, e.g. `the last tip this node accepted`.
        what: String,
    },
    /// The channel file is missing or invalid.
    #[error("channel tip {tip}: {source}")]
    File {
        /// The tip.
        tip: String,
        /// Why.
        source: ChannelFileError,
    },
    /// The document is for another channel or fleet.
    #[error(
        "channel tip {tip} is a document for {what} {found:?}, not {expected:?}: a channel relabelled or served to the wrong fleet"
    )]
    Binding {
        /// The tip.
        tip: String,
        /// `channel` or `fleet`.
        what: &'static str,
        /// What the document says.
        found: String,
        /// What this node's config names.
        expected: String,
    },
    /// A sequence below the floor: an older channel served again.
    #[error(
        "channel tip {tip} has sequence {sequence}, below {floor}, {source_of_floor} (tip {floor_tip}): an older channel served again"
    )]
    Replayed {
        /// The tip.
        tip: String,
        /// Its sequence.
        sequence: u64,
        /// The floor.
        floor: u64,
        /// The tip that set the floor.
        floor_tip: String,
        /// Where the floor comes from, e.g. `the last this node accepted`.
        source_of_floor: String,
    },
    /// The floor's sequence with another commit: two histories.
    #[error(
        "CONFLICT: channel tip {tip} has sequence {sequence}, as does {other}, {source_of_floor}: the source shows different channel histories"
    )]
    Conflict {
        /// The tip.
        tip: String,
        /// The shared sequence.
        sequence: u64,
        /// The other tip with that sequence.
        other: String,
        /// Where the other comes from.
        source_of_floor: String,
    },
    /// The document has expired.
    #[error(
        "channel tip {tip} expired at {expires} (judged at {judged}, {by}): a stale channel is never acted on"
    )]
    Expired {
        /// The tip.
        tip: String,
        /// Its expiry.
        expires: Timestamp,
        /// The time it was judged at.
        judged: Timestamp,
        /// Which time that was.
        by: String,
    },
    /// A refresh that does more than renew, or a chain that cannot be followed.
    #[error("channel tip {tip}: {reason}")]
    Refresh {
        /// The tip.
        tip: String,
        /// Why.
        reason: String,
    },
    /// A sequence that does not grow by one.
    #[error("channel tip {tip}: {reason}")]
    Sequence {
        /// The tip.
        tip: String,
        /// Why.
        reason: String,
    },
    /// The release's tag is another tag object than the document names.
    #[error(
        "channel tip {tip} names release {tag} as tag object {named}, but the source's {tag} is tag object {found}: a re-signed or swapped tag is not the release the channel names"
    )]
    TagObject {
        /// The tip.
        tip: String,
        /// The release tag.
        tag: String,
        /// The tag object the document names.
        named: String,
        /// The tag object found.
        found: String,
    },
    /// The repository could not be read.
    #[error("channel tip {tip}: {reason}")]
    Repository {
        /// The tip.
        tip: String,
        /// Why.
        reason: String,
    },
}

impl ChannelRefusal {
    /// A stable name of the kind of refusal, for programs and metrics:
    /// `signature`, `not-forward`, `file`, `binding`, `replay`,
    /// `conflict`, `expired`, `refresh`, `sequence`, `release`, `repository`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelRefusal::Signature { .. } => "signature",
            ChannelRefusal::NotForward { .. } => "not-forward",
            ChannelRefusal::File { .. } => "file",
            ChannelRefusal::Binding { .. } => "binding",
            ChannelRefusal::Replayed { .. } => "replay",
            ChannelRefusal::Conflict { .. } => "conflict",
            ChannelRefusal::Expired { .. } => "expired",
            ChannelRefusal::Refresh { .. } => "refresh",
            ChannelRefusal::Sequence { .. } => "sequence",
            ChannelRefusal::TagObject { .. } => "release",
            ChannelRefusal::Repository { .. } => "repository",
        }
    }
}
