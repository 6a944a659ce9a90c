//! The fleet as etcd knows it, for `driftless fleet`: every node of a group
//! says where it stands (`nodes/<id>`, written by its watcher on a lease
//! of `lease_ttl`, so a node that vanished drops out by itself), and the
//! rollout's own keys (`slots/`, `failures/`, see [`crate::fleet::coordinate`])
//! say who is away and who failed. One range request reads the whole
//! group; nothing here changes a slot or a failure.
//!
//! What a node writes under `nodes/` is what it claims: anyone who can
//! write the group's keys can claim anything there. Nodes never act on
//! these keys; they are for people.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::RolloutSettings;
use crate::fleet::coordinate::{FailureValue, KEY_PREFIX, SlotValue, segment};
use crate::fleet::etcd::{Etcd, EtcdError};

/// Roster entries larger than this are shown as unreadable.
const MAX_ENTRY_LEN: usize = 4096;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Its id.
    pub node: String,
    /// The release it was built from.
    pub release: String,
    /// Its lifecycle phase (`watching`, `failed`, `drifted`, …).
    pub phase: String,
    /// The release the channel names, when known.
    #[serde(default)]
    pub desired: Option<String>,
    /// Where the rollout stands for it (`go`, `waiting-for-slot`, …).
    #[serde(default)]
    pub rollout: Option<String>,
    /// Differences from its manifest seen so far.
    #[serde(default)]
    pub drift: usize,
    /// Its replacement request: `pending` or `done`.
    #[serde(default)]
    pub replacement: Option<String>,
    /// When it said so.
    pub at: Timestamp,
}

/// A slot as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    /// The slot's key.
    pub key: String,
    /// What it holds, when readable.
    pub value: Option<SlotValue>,
    /// How long it has been held, in seconds, when readable.
    pub held_secs: Option<i64>,
}

/// The group as etcd knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The group.
    pub group: String,
    /// Its slot count (the config's `max_in_flight`).
    pub max_in_flight: u32,
    /// The nodes that reported themselves, by id.
    pub nodes: Vec<NodeEntry>,
    /// The slots taken.
    pub slots: Vec<SlotView>,
    /// The nodes waiting for a slot, by the release they wait to go to,
    /// oldest first (the order in which they take freed slots).
    pub line: std::collections::BTreeMap<String, Vec<String>>,
    /// The failures recorded, by release.
    pub failures: std::collections::BTreeMap<String, Vec<FailureValue>>,
    /// Keys whose value could not be read (counted, never trusted).
    pub unreadable: Vec<String>,
}

fn group_prefix(group: &str) -> String {
    format!("{KEY_PREFIX}/{group}/")
}

/// Reads the whole group `settings.group` in one request.
pub async fn read_group(etcd: &Etcd, settings: &RolloutSettings) -> Result<GroupView, EtcdError> {
    let prefix = group_prefix(&settings.group);
    let now = Timestamp::now();
    let mut view = GroupView {
        group: settings.group.clone(),
        max_in_flight: settings.max_in_flight,
        ..GroupView::default()
    };
    let mut line: std::collections::BTreeMap<String, Vec<(i64, String)>> = Default::default();
    for kv in etcd.range(&prefix).await? {
        let rest = &kv.key[prefix.len().min(kv.key.len())..];
        let readable = kv.value.len() <= MAX_ENTRY_LEN;
        if rest.starts_with("slots/") {
            let value: Option<SlotValue> = readable
                .then(|| serde_json::from_str(&kv.value).ok())
                .flatten();
            let held_secs = value.as_ref().map(|v| (now - v.at).as_secs());
            view.slots.push(SlotView {
                key: kv.key,
                value,
                held_secs,
            });
        } else if rest.starts_with("failures/") {
            match readable
                .then(|| serde_json::from_str::<FailureValue>(&kv.value).ok())
                .flatten()
            {
                Some(f) => view.failures.entry(f.release.clone()).or_default().push(f),
                None => view.unreadable.push(kv.key),
            }
        } else if let Some((release, node)) = rest
            .strip_prefix("line/")
            .and_then(|rest| rest.split_once('/'))
        {
            line.entry(unsegment(release))
                .or_default()
                .push((kv.create_revision, unsegment(node)));
        } else if rest.starts_with("nodes/") {
            match readable
                .then(|| serde_json::from_str::<NodeEntry>(&kv.value).ok())
                .flatten()
            {
                Some(n) => view.nodes.push(n),
                None => view.unreadable.push(kv.key),
            }
        }
    }
    view.nodes.sort_by(|a, b| a.node.cmp(&b.node));
    view.line = line
        .into_iter()
        .map(|(release, mut waiting)| {
            waiting.sort();
            (release, waiting.into_iter().map(|(_, node)| node).collect())
        })
        .collect();
    Ok(view)
}

/// A key segment as it was before [`segment`] escaped it.
fn unsegment(text: &str) -> String {
    text.replace("%2F", "/").replace("%25", "%")
}

/// How a watcher keeps its roster entry: the lease it is on and what it
/// last wrote.
#[derive(Debug, Default)]
pub struct Reporter {
    lease: Option<i64>,
    written: Option<(NodeEntry, std::time::Instant)>,
}

impl Reporter {
    /// Writes `entry` for `group` when it changed or a third of the lease
    /// went by (renewing the lease, or taking a new one when it ended).
    pub async fn report(
        &mut self,
        etcd: &Etcd,
        group: &str,
        ttl: Duration,
        entry: NodeEntry,
    ) -> Result<(), EtcdError> {
        let same = |e: &NodeEntry| {
            NodeEntry {
                at: entry.at,
                ..e.clone()
            } == entry
        };
        let due = self
            .written
            .as_ref()
            .is_none_or(|(e, at)| !same(e) || at.elapsed() >= ttl / 3);
        if !due {
            return Ok(());
        }
        let renewed = match self.lease {
            Some(lease) => etcd.keep_alive(lease).await?,
            None => false,
        };
        let lease = match (renewed, self.lease) {
            (true, Some(lease)) => lease,
            _ => etcd.grant(ttl).await?,
        };
        self.lease = Some(lease);
        if renewed && self.written.as_ref().is_some_and(|(e, _)| same(e)) {
            self.written = Some((entry, std::time::Instant::now()));
            return Ok(());
        }
        let key = format!("{}nodes/{}", group_prefix(group), segment(&entry.node));
        let value =
            serde_json::to_string(&entry).map_err(|e| EtcdError::new("put", e.to_string()))?;
        etcd.put_leased(&key, &value, lease).await?;
        self.written = Some((entry, std::time::Instant::now()));
        Ok(())
    }
}
