//! The waiting line: the nodes of a group that wait for a slot to go to
//! one release, oldest first. Each puts `line/<release>/<node-id>` on a
//! lease of its own when it starts to wait (the key keeps its first create
//! revision, so a node keeps its place across its own retries); the
//! transaction that takes a slot deletes the taker's key; a node that stops
//! waiting revokes its lease, and a node that vanished leaves the line when
//! its lease ends. A node's place is the number of keys created before its
//! own: when a slot is freed, the first `free` nodes ask at once and the
//! others only after [`super::handover::HEAD_START`].
//!
//! The line only orders the asks: the slot itself is still taken by the
//! create-if-absent transaction, so a line that lies (a stale key at its
//! head, keys forged by someone with write access to etcd) costs the
//! waiting nodes at most the head start per freed slot, never a slot.

use super::{Coordinator, KEY_PREFIX, segment};
use crate::fleet::etcd::EtcdError;

/// The most nodes ahead in the line a node counts (keys of about 50 bytes:
/// half a megabyte read at most).
pub const MOST_AHEAD: u32 = 10_000;

/// This node's key in the line, on its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `line/<release>/<node-id>` under the group.
    pub key: String,
    /// The lease the key lives on.
    pub lease: i64,
    /// The revision that created the key: its place in the line.
    pub created: i64,
}

impl Coordinator {
    /// The prefix of the line of nodes waiting to go to `release`.
    pub fn line_prefix(&self, release: &str) -> String {
        format!("{KEY_PREFIX}/{}/line/{}/", self.group, segment(release))
    }

    /// The key `node` holds in the line of `release` while it waits.
    pub fn line_key(&self, release: &str, node: &str) -> String {
        format!("{}{}", self.line_prefix(release), segment(node))
    }

    /// Puts `node` in the line of `release`, on a lease of `lease_ttl`
    /// (renewed by the caller while it waits). A lease granted for a key
    /// that could not be put is revoked.
    pub async fn join_line(&self, release: &str, node: &str) -> Result<Place, EtcdError> {
        let key = self.line_key(release, node);
        let lease = self.etcd.grant(self.lease_ttl).await?;
        match self.etcd.put_leased(&key, "", lease).await {
            Ok(created) => Ok(Place {
                key,
                lease,
                created,
            }),
            Err(e) => {
                if let Err(revoke) = self.etcd.revoke(lease).await {
                    tracing::debug!("{revoke}; the unused lease expires by itself");
                }
                Err(e)
            }
        }
    }

    /// How many nodes were in the line of `release` before `place`, as the
    /// store was at revision `at`; at most [`MOST_AHEAD`] (a node that far
    /// back may ask early after that many left, once in a stream's life:
    /// the slot's transaction still decides).
    pub async fn ahead_in_line(
        &self,
        release: &str,
        place: &Place,
        at: i64,
    ) -> Result<u64, EtcdError> {
        self.etcd
            .count_created_before(&self.line_prefix(release), at, place.created, MOST_AHEAD)
            .await
    }
}
