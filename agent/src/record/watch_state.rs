//! The watcher's record, `/var/lib/driftless/watch.json` (the apply
//! record, `state.json`, is locked): the last channel tip accepted, so the
//! channel can only move forward; the last poll; any refusal; drift seen;
//! and the replacement request, written before the request is made so that
//! a restart never asks twice but retries a request that failed. Apply
//! writes the tip a first boot came from; the watcher everything else.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::replacement::ReplacementRequest;
use crate::record::state;
use crate::release::channel::ChannelState;
use crate::root::{Root, RootError};
use crate::types::NodePath;

/// Where the watcher's record lives on the node.
pub const WATCH_STATE_PATH: &str = "/var/lib/driftless/watch.json";

/// The watcher's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchState {
    /// The last channel tip accepted: a new tip must descend from it.
    #[serde(default)]
    pub channel: Option<SeenChannel>,
    /// When the channel was last polled.
    #[serde(default)]
    pub last_poll: Option<Timestamp>,
    /// Why the last poll failed, if it did.
    #[serde(default)]
    pub last_poll_error: Option<String>,
    /// Polls that failed since the watcher started.
    #[serde(default)]
    pub poll_errors: u64,
    /// The last channel tip refused, and why.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// Differences from the manifest seen so far.
    #[serde(default)]
    pub drift: Vec<DriftRecord>,
    /// The request to be replaced, once made.
    #[serde(default)]
    pub replacement: Option<ReplacementRecord>,
    /// Whether the accepted channel was fresh at the last poll, and the
    /// time it was judged by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// Why the rollout does not let this node go yet, if it does not.
    #[serde(default)]
    pub waiting: Option<String>,
    /// Where the rollout to the desired release stands for this node
    /// (absent while the node runs the desired release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// How this node's apply was reported to the rollout coordinator
    /// (`applied`: a slot given back; `failed`: a failure recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_reported: Option<String>,
    /// A static source's last answer for the channel: its ETag and the tip
    /// it named, sent back so an unchanged channel costs a 304.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_etag: Option<ChannelEtag>,
}

/// The ETag of a static channel's last answer, and the tip it named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEtag {
    /// The ETag, as the server sent it.
    pub etag: String,
    /// The tip the answer's bundle named.
    pub tip: String,
}

/// The rollout's last answer for this node, for people and programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStatus {
    /// The release the channel names.
    pub release: String,
    /// `go`, `hold`, `not-canary`, `wait`, `outside-window`, `stopped` (see
    /// [`crate::fleet::rollout::Decision::name`]), `waiting-for-slot`, or
    /// `coordinator-unreachable`.
    pub state: String,
    /// Failures of new nodes recorded for the release (the failures file,
    /// plus etcd's with a coordinator).
    pub failures: u32,
    /// The channel's `max_failures`.
    pub max_failures: u32,
    /// Slots of the group taken, when the coordinator was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// Slots of the group, with a coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

/// The accepted channel's freshness at the last poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// False once the accepted document has expired: nothing is done on
    /// it until a fresh one comes.
    pub fresh: bool,
    /// When the accepted document expires (or expired).
    pub expires: Timestamp,
    /// The time judged by, and which it was.
    pub judged: crate::release::clock::Judged,
}

impl Freshness {
    /// Seconds since the channel went stale (0 while fresh).
    pub fn stale_seconds(&self) -> i64 {
        if self.fresh {
            0
        } else {
            (self.judged.at.as_second() - self.expires.as_second()).max(0)
        }
    }
}

/// A channel tip the node accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenChannel {
    /// The tip commit.
    pub tip: String,
    /// Who signed it.
    pub signer: String,
    /// The signing key's fingerprint.
    pub fingerprint: String,
    /// The role of its signer: `channel`, or `refresh`.
    pub role: crate::verify::ChannelRole,
    /// The channel signer's commit its document rests on.
    pub base: String,
    /// The release it names.
    pub release: String,
    /// The commit that release's tag names (once verified).
    #[serde(default)]
    pub release_commit: Option<String>,
    /// `hold: true` in the channel file.
    pub hold: bool,
    /// The tip's signed commit time.
    pub committed_at: Timestamp,
    /// When this node first saw it.
    pub seen_at: Timestamp,
    /// The whole channel file (rollout settings included).
    pub file: crate::release::channel::ChannelFile,
    /// The failures file published beside it.
    #[serde(
        default,
        skip_serializing_if = "crate::release::channel::Failures::is_empty"
    )]
    pub failures: crate::release::channel::Failures,
}

/// A refused channel tip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The tip.
    pub tip: String,
    /// What kind of refusal (see `ChannelRefusal::kind`; `release` for a
    /// release that is missing or does not verify).
    #[serde(default)]
    pub kind: String,
    /// Why, one line.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// One difference from the manifest, as first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftRecord {
    /// What differs, one line.
    pub line: String,
    /// When it was first seen.
    pub first_seen: Timestamp,
}

/// Where a replacement request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Recorded; not yet made successfully.
    Pending,
    /// Made successfully; never made again.
    Done,
}

/// The replacement request and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplacementRecord {
    /// What was asked.
    pub request: ReplacementRequest,
    /// Where it stands.
    pub status: RequestStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the last attempt was made.
    #[serde(default)]
    pub last_attempt: Option<Timestamp>,
}

fn watch_state_path() -> NodePath {
    NodePath::new(WATCH_STATE_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

impl WatchState {
    /// Reads the record (an absent file is an empty record).
    pub fn load(root: &Root) -> Result<Self, RootError> {
        let path = watch_state_path();
        match root.read_optional(&path, state::MAX_STATE_LEN)? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| RootError {
                path: path.to_string(),
                reason: format!("unreadable: {e}"),
            }),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, root: &Root) -> Result<(), RootError> {
        let path = watch_state_path();
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| RootError {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        if let Some(parent) = path
            .parent()
            .filter(|p| matches!(root.observe(p), Ok(None)))
        {
            root.ensure_dir(&parent, 0o755, 0, 0)?;
        }
        root.write_file(&path, &bytes, 0o644, 0, 0)
    }

    /// Whether `other` is this record but for the times that change at
    /// every poll (the poll's, and the clock's judged time).
    pub fn same_but_times(&self, other: &WatchState) -> bool {
        let mut this = self.clone();
        this.last_poll = other.last_poll;
        if let (Some(mine), Some(theirs)) = (this.freshness.as_mut(), other.freshness.as_ref()) {
            mine.judged.at = theirs.judged.at;
            mine.judged.system = theirs.judged.system;
            if let (Some(a), Some(b)) = (mine.judged.floor.as_mut(), theirs.judged.floor.as_ref()) {
                a.at = b.at;
            }
        }
        this == *other
    }

    /// Records the tip a first boot resolved from the channel.
    pub fn accept(&mut self, channel: &ChannelState, release_commit: Option<String>) {
        self.channel = Some(SeenChannel {
            tip: channel.tip.clone(),
            signer: channel.signer.clone(),
            fingerprint: channel.fingerprint.clone(),
            role: channel.role,
            base: channel.base.clone(),
            release: channel.file.release.as_str().to_owned(),
            release_commit,
            hold: channel.file.hold,
            committed_at: channel.committed_at,
            seen_at: Timestamp::now(),
            file: channel.file.clone(),
            failures: channel.failures.clone(),
        });
        self.refusal = None;
    }
}
