//! The channel: a YAML file (default `channel.yaml`) on a branch of the
//! release repository (default `refs/heads/channel`) whose commits are signed
//! by allowed signers. It names the release the fleet should run, an
//! optional hold, and the rollout settings. A channel only moves forward: a
//! rollback is a new signed commit that names an older tag.

use serde::{Deserialize, Serialize};

use crate::config::TagName;
use crate::types::Interval;

/// Channel files larger than this are refused.
pub const MAX_CHANNEL_LEN: usize = 64 * 1024;

/// The channel file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    /// The desired release tag.
    pub release: TagName,
    /// While true, no node asks to be replaced.
    #[serde(default)]
    pub hold: bool,
    /// Share of the fleet (by bucket) that may go: `10%`, or a fraction `0.1`.
    /// Absent: everyone.
    #[serde(default)]
    pub canary: Option<Share>,
    /// Split the fleet into this many waves (default 1).
    #[serde(default)]
    pub waves: Option<u32>,
    /// Time between waves, counted from the channel commit's time.
    #[serde(default)]
    pub wave_interval: Option<Interval>,
    /// Maintenance windows outside which no node asks to be replaced.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Failures of new nodes on this release that stop the rollout (default 1).
    #[serde(default)]
    pub max_failures: Option<u32>,
}

/// A share of the fleet, stored in basis points (0 to 10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(pub u32);

/// Written as the percentage it was read from (`12.5%`), so that a channel
/// file kept in the watcher's record reads back the same.
impl Serialize for Share {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (whole, hundredths) = (self.0 / 100, self.0 % 100);
        if hundredths == 0 {
            s.serialize_str(&format!("{whole}%"))
        } else {
            s.serialize_str(&format!("{whole}.{hundredths:02}%"))
        }
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Fraction(f64),
            Text(String),
        }
        let fraction = match Raw::deserialize(d)? {
            // `canary: 5` means 5 %, most likely: the `%` is what is missing.
            Raw::Fraction(f) if f > 1.0 && f <= 100.0 => {
                return Err(D::Error::custom(format!(
                    "share {f} is a fraction above 1: write a percentage with its %, like {f}%, or a fraction like {}",
                    f / 100.0
                )));
            }
            Raw::Fraction(f) => f,
            Raw::Text(t) => {
                let number = t.trim().strip_suffix('%').ok_or_else(|| {
                    D::Error::custom(format!(
                        "share {t:?} must be a percentage like 10% or a fraction like 0.1"
                    ))
                })?;
                number
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| D::Error::custom(format!("share {t:?} is not a number")))?
                    / 100.0
            }
        };
        if !(0.0..=1.0).contains(&fraction) || fraction.is_nan() {
            return Err(D::Error::custom("a share must be between 0% and 100%"));
        }
        Ok(Share((fraction * 10_000.0).round() as u32))
    }
}

/// A weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days it opens on: `mon` … `sun`; every day when empty.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM`, in `time_zone`.
    pub start: ClockTime,
    /// How long it stays open.
    pub length: Interval,
    /// IANA time zone, e.g. `Europe/Berlin`; default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A wall-clock time `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ClockTime {
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
}

impl From<ClockTime> for String {
    fn from(t: ClockTime) -> String {
        format!("{:02}:{:02}", t.hour, t.minute)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("time {text:?} must be HH:MM"));
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let (hour, minute): (u8, u8) =
            (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h.len() != 2 || m.len() != 2 || hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(ClockTime { hour, minute })
    }
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
        let channel: ChannelFile = parse_limited(text, file)?;
        if channel.waves == Some(0) {
            return Err(fail("waves must be at least 1".into()));
        }
        for w in &channel.windows {
            if jiff::tz::TimeZone::get(&w.time_zone).is_err() {
                return Err(fail(format!("unknown time zone {:?}", w.time_zone)));
            }
            if w.length.0.is_zero() || w.length.0 > std::time::Duration::from_secs(7 * 24 * 3600) {
                return Err(fail(
                    "a window's length must be between 1s and 7 days".into(),
                ));
            }
        }
        Ok(channel)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../docs/examples/channel.yaml");
        let c = ChannelFile::parse(text, "channel.yaml").expect("example parses");
        assert_eq!(c.release.as_str(), "v1.5.0");
        assert!(!c.hold);
        assert_eq!(c.canary, Some(Share(1000)));
        assert_eq!(c.waves, Some(4));
        assert_eq!(c.windows[0].start, ClockTime { hour: 2, minute: 0 });
    }

    #[test]
    fn minimal_and_hostile_channels() {
        let c = ChannelFile::parse("release: v2\nhold: true\n", "c").expect("minimal");
        assert!(c.hold && c.canary.is_none());
        assert_eq!(
            ChannelFile::parse("release: v2\ncanary: 0.25\n", "c")
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
            let err = ChannelFile::parse(bad, "channel.yaml")
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("channel file channel.yaml: "), "{err}");
        }
    }

    #[test]
    fn a_share_without_its_percent_sign_says_so() {
        let err = ChannelFile::parse("release: v2\ncanary: 5\n", "channel.yaml")
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
        let file = ChannelFile::parse(text, "c").expect("parses");
        let json = serde_json::to_string(&file).expect("serialises");
        let back: ChannelFile = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, file);
        assert_eq!(back.canary, Some(Share(1250)));
        let whole: ChannelFile = serde_json::from_str(
            &serde_json::to_string(
                &ChannelFile::parse("release: v2\ncanary: 0.1\n", "c").expect("parses"),
            )
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

/// The local ref in the release cache that holds the last fetched channel tip.
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
    /// The committer's claimed time (waves count from it).
    pub committed_at: jiff::Timestamp,
    /// The channel file at the tip.
    pub file: ChannelFile,
    /// The failures file at the tip (empty when there is none).
    pub failures: Failures,
}

/// Why a channel tip is not acted on. A refusal is logged and shown in
/// status; it never causes a replacement.
#[derive(Debug, thiserror::Error)]
pub enum ChannelRefusal {
    /// The tip's signature is missing or not trusted.
    #[error("channel tip {tip} refused: {source}")]
    Signature {
        /// The tip.
        tip: String,
        /// Why.
        source: crate::verify::VerifyError,
    },
    /// The tip does not descend from the last tip this node saw.
    #[error(
        "channel tip {tip} does not descend from {last}, the last tip this node saw: the branch moved backwards or sideways"
    )]
    NotForward {
        /// The new tip.
        tip: String,
        /// The last tip seen.
        last: String,
    },
    /// The channel file is missing or invalid.
    #[error("channel tip {tip}: {source}")]
    File {
        /// The tip.
        tip: String,
        /// Why.
        source: ChannelFileError,
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

/// Fetches the channel branch into [`CACHE_REF`] (not shallow: proving that
/// a new tip descends from the last one needs the commits in between; a
/// fetch transfers only what the cache lacks) and returns the tip.
pub fn fetch_tip(
    repo: &git2::Repository,
    root: &std::path::Path,
    config: &crate::config::AgentConfig,
) -> Result<git2::Oid, crate::source::fetch::FetchError> {
    let remote_ref = config.channel_ref();
    crate::source::fetch::fetch_ref(
        repo,
        root,
        &config.source,
        &remote_ref,
        CACHE_REF,
        false,
        &config.fetch,
    )?;
    repo.refname_to_id(CACHE_REF)
        .map_err(|e| crate::source::fetch::FetchError::Cache {
            path: CACHE_REF.into(),
            reason: e.message().to_owned(),
        })
}

/// Verifies the channel tip `tip` (already in `repo`): its signature, that it
/// moves forward from `last_seen`, and its channel file.
pub fn evaluate(
    repo: &git2::Repository,
    trust: &crate::verify::Trust,
    tip: git2::Oid,
    last_seen: Option<git2::Oid>,
    settings: &crate::config::ChannelSettings,
    now: jiff::Timestamp,
) -> Result<ChannelState, ChannelRefusal> {
    let tip_hex = tip.to_string();
    let verified =
        crate::verify::verify_commit_object(repo, &tip_hex, tip, trust, now).map_err(|source| {
            ChannelRefusal::Signature {
                tip: tip_hex.clone(),
                source,
            }
        })?;
    if let Some(last) = last_seen.filter(|last| *last != tip) {
        let forward = repo.graph_descendant_of(tip, last).unwrap_or(false);
        if !forward {
            return Err(ChannelRefusal::NotForward {
                tip: tip_hex,
                last: last.to_string(),
            });
        }
    }
    let repository = |reason: String| ChannelRefusal::Repository {
        tip: tip_hex.clone(),
        reason,
    };
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .map_err(|e| repository(e.message().to_owned()))?;
    let invalid = |source: ChannelFileError| ChannelRefusal::File {
        tip: tip_hex.clone(),
        source,
    };
    let file = &settings.file;
    let text = tree_text(repo, &tree, file)
        .map_err(|e| match e {
            TreeText::Unreadable(reason) => repository(reason),
            TreeText::Invalid(source) => invalid(source),
        })?
        .ok_or_else(|| {
            invalid(ChannelFileError {
                file: file.to_string(),
                reason: "not in the channel branch's tree".into(),
            })
        })?;
    let channel = ChannelFile::parse(&text, file.as_str()).map_err(&invalid)?;
    let failures = match tree_text(repo, &tree, &settings.failures_file) {
        Ok(Some(text)) => {
            Failures::parse(&text, settings.failures_file.as_str()).map_err(&invalid)?
        }
        Ok(None) => Failures::default(),
        Err(TreeText::Unreadable(reason)) => return Err(repository(reason)),
        Err(TreeText::Invalid(source)) => return Err(invalid(source)),
    };
    Ok(ChannelState {
        tip: tip_hex,
        signer: verified.principal,
        fingerprint: verified.fingerprint,
        committed_at: verified.signed_at,
        file: channel,
        failures,
    })
}

/// Why a file of the channel tree could not be read.
enum TreeText {
    /// The repository could not be read.
    Unreadable(String),
    /// The path is not a UTF-8 file.
    Invalid(ChannelFileError),
}

/// The text of `path` in `tree`, or `None` when the tree has no such entry.
fn tree_text(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    path: &crate::types::TreePath,
) -> Result<Option<String>, TreeText> {
    let invalid = |reason: &str| {
        TreeText::Invalid(ChannelFileError {
            file: path.to_string(),
            reason: reason.to_owned(),
        })
    };
    let Ok(entry) = tree.get_path(std::path::Path::new(path.as_str())) else {
        return Ok(None);
    };
    if entry.kind() != Some(git2::ObjectType::Blob) {
        return Err(invalid("not a file in the channel branch's tree"));
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| TreeText::Unreadable(e.message().to_owned()))?;
    if blob.size() > MAX_CHANNEL_LEN {
        return Err(invalid(&format!("larger than {MAX_CHANNEL_LEN} bytes")));
    }
    let text = std::str::from_utf8(blob.content()).map_err(|_| invalid("not UTF-8"))?;
    Ok(Some(text.to_owned()))
}
