//! The channel floor, `/var/lib/driftless/channel-floor.json`: the
//! channel's sequence and tip when the image was baked (`driftless fetch
//! --root IMAGE`) or when a node built from a fixed tag was applied. A
//! node refuses any channel document below it, so an older channel served
//! again cannot move a node that never accepted a channel tip itself.
//!
//! Also here: what a node knows of its channel, from the floor and the
//! watcher's record ([`known`]), and the signed times it has seen, below
//! which it never judges time ([`signed_times`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::state::{self, State};
use crate::record::watch_state::WatchState;
use crate::release::channel::{ChannelState, Expect, Known};
use crate::release::clock::SignedTime;
use crate::root::{Root, RootError};
use crate::types::NodePath;

/// Where the floor lives on the node.
pub const FLOOR_PATH: &str = "/var/lib/driftless/channel-floor.json";

/// Who recorded a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordedBy {
    /// `driftless fetch --root IMAGE`, baking an image.
    Bake,
    /// `driftless apply` of a node built from a fixed tag.
    Apply,
}

/// The channel state a node must not go below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFloor {
    /// The channel the document was for.
    pub channel: String,
    /// The fleet it was for.
    pub fleet: String,
    /// Its sequence; absent when only the tip was seen (a node that
    /// streamed its fixed release, with no libgit2 to verify the channel:
    /// a new tip must then descend from `tip`).
    #[serde(default)]
    pub sequence: Option<u64>,
    /// The tip commit.
    pub tip: String,
    /// Its signed time, once verified.
    #[serde(default)]
    pub signed_at: Option<Timestamp>,
    /// When it was recorded (this machine's clock).
    pub recorded_at: Timestamp,
    /// Who recorded it.
    pub recorded_by: RecordedBy,
}

fn floor_path() -> NodePath {
    NodePath::new(FLOOR_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

impl ChannelFloor {
    /// The floor a verified channel state sets.
    pub fn of(channel: &ChannelState, by: RecordedBy) -> Self {
        Self {
            channel: channel.file.channel.clone(),
            fleet: channel.file.fleet.clone(),
            sequence: Some(channel.file.sequence),
            tip: channel.tip.clone(),
            signed_at: Some(channel.committed_at),
            recorded_at: Timestamp::now(),
            recorded_by: by,
        }
    }

    /// Reads the floor, if there is one.
    pub fn load(root: &Root) -> Result<Option<Self>, RootError> {
        state::read_record(root, &floor_path(), 64 * 1024, "channel floor")
    }

    /// Writes it atomically; an existing floor is only ever raised.
    pub fn save(&self, root: &Root) -> Result<(), RootError> {
        if let Some(old) = Self::load(root)? {
            let same_channel = old.channel == self.channel && old.fleet == self.fleet;
            if same_channel && old.sequence.is_some() && old.sequence >= self.sequence {
                return Ok(());
            }
        }
        state::write_record(root, &floor_path(), self)
    }

    /// Where it comes from, for messages.
    pub fn source(&self) -> &'static str {
        match self.recorded_by {
            RecordedBy::Bake => "this image's bake record",
            RecordedBy::Apply => "the channel this node saw when it was applied",
        }
    }
}

/// What the node knows of its channel: the higher of the floor and the
/// tip it accepted last, and that tip with its base. A floor recorded for
/// another channel or fleet does not count.
pub fn known(floor: Option<&ChannelFloor>, watch: &WatchState, expect: &Expect) -> Known {
    let mut known = Known::default();
    if let Some(f) = floor.filter(|f| f.channel == expect.channel && f.fleet == expect.fleet) {
        match f.sequence {
            Some(sequence) => {
                known.floor = Some((sequence, f.tip.clone(), f.source().to_owned()));
            }
            None => {
                if let Ok(tip) = git2::Oid::from_str(&f.tip) {
                    known.last = Some((tip, f.source().to_owned()));
                }
            }
        }
    }
    if let Some(seen) = &watch.channel {
        let sequence = seen.file.sequence;
        if known.floor.as_ref().is_none_or(|(s, _, _)| sequence >= *s) {
            known.floor = Some((
                sequence,
                seen.tip.clone(),
                "the last this node accepted".to_owned(),
            ));
        }
        let ids = (
            git2::Oid::from_str(&seen.tip),
            git2::Oid::from_str(&seen.base),
        );
        if let (Ok(tip), Ok(base)) = ids {
            known.accepted = Some((tip, base));
            known.last = Some((tip, "the last tip this node accepted".to_owned()));
        }
    }
    known
}

/// The signed times a node has seen: its floor's, the channel it accepted
/// last, and the release it runs.
pub fn signed_times(
    floor: Option<&ChannelFloor>,
    watch: &WatchState,
    applied: Option<&State>,
) -> Vec<SignedTime> {
    let mut out = Vec::new();
    if let Some((f, at)) = floor.and_then(|f| Some((f, f.signed_at?))) {
        out.push(SignedTime {
            at,
            what: format!("the channel tip in {}", f.source()),
        });
    }
    if let Some(seen) = &watch.channel {
        out.push(SignedTime {
            at: seen.committed_at,
            what: "the channel tip this node accepted last".to_owned(),
        });
    }
    if let Some(state) = applied {
        out.push(SignedTime {
            at: state.release.signed_at,
            what: format!("release {}, which this node runs", state.release.tag),
        });
    }
    out
}

/// What a node under `root` knows before it resolves its release or judges
/// a channel tip: [`known`] and [`signed_times`] from its records.
pub fn before(
    root: &Root,
    config: &crate::config::AgentConfig,
) -> Result<crate::release::obtain::Before, RootError> {
    let floor = ChannelFloor::load(root)?;
    let watch = WatchState::load(root)?;
    let applied = state::load(root)?;
    let expect = Expect {
        channel: config.channel_name(),
        fleet: config.channel.fleet.clone(),
    };
    Ok(crate::release::obtain::Before {
        known: known(floor.as_ref(), &watch, &expect),
        signed: signed_times(floor.as_ref(), &watch, applied.as_ref()),
    })
}
