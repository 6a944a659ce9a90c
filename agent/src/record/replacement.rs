//! A node's request to be replaced, as it is recorded before it is made
//! (so a restart never asks twice) and as the receiver gets it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::clip;
use crate::root::hex;

/// Longest one-line reason (the `exec` argument), in characters.
pub const MAX_SUMMARY_CHARS: usize = 512;

/// Why a node asks to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The fleet's desired release is no longer the pinned one.
    ReleaseChanged,
    /// The node drifted from its manifest (with `drift.policy: replace`).
    Drift,
    /// The pinned release could not be applied or did not become healthy.
    ApplyFailed,
}

impl Reason {
    /// The name used in JSON, environment and logs: `release-changed`,
    /// `drift`, `apply-failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ReleaseChanged => "release-changed",
            Reason::Drift => "drift",
            Reason::ApplyFailed => "apply-failed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node says when it asks to be replaced: the webhook's JSON body,
/// and the source of the `exec` argument and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacementRequest {
    /// The node's id (see [`crate::config::node_id`]).
    pub node_id: String,
    /// The pinned release's tag.
    pub pinned: String,
    /// The commit the pinned tag names.
    pub pinned_commit: String,
    /// The fleet's desired tag, when known.
    pub desired: Option<String>,
    /// Why.
    pub reason: Reason,
    /// One line of detail (what drifted, what failed); may be empty.
    pub detail: String,
    /// When the request was made.
    pub requested_at: jiff::Timestamp,
    /// Stable id for deduplication at the receiver (see [`request_id`]).
    pub request_id: String,
}

impl ReplacementRequest {
    /// A request made now; `detail` is folded into one line and
    /// [`ReplacementRequest::request_id`] computed.
    pub fn new(
        node_id: &str,
        pinned: &str,
        pinned_commit: &str,
        desired: Option<&str>,
        reason: Reason,
        detail: &str,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            pinned: pinned.to_owned(),
            pinned_commit: pinned_commit.to_owned(),
            desired: desired.map(str::to_owned),
            reason,
            detail: clip(detail, MAX_SUMMARY_CHARS),
            requested_at: jiff::Timestamp::now(),
            request_id: request_id(node_id, pinned_commit, desired, reason),
        }
    }

    /// The reason in one line, e.g. `release-changed: v1.4.2 -> v1.5.0`,
    /// `drift: /etc/app.conf content changed (v1.4.2)`,
    /// `apply-failed: health check ... (v1.4.2)`. Control characters become
    /// spaces and it is cut at [`MAX_SUMMARY_CHARS`].
    pub fn summary(&self) -> String {
        let text = match self.reason {
            Reason::ReleaseChanged => format!(
                "{}: {} -> {}",
                self.reason,
                self.pinned,
                self.desired.as_deref().unwrap_or("?")
            ),
            _ if self.detail.trim().is_empty() => format!("{}: {}", self.reason, self.pinned),
            _ => format!("{}: {} ({})", self.reason, self.detail.trim(), self.pinned),
        };
        clip(&text, MAX_SUMMARY_CHARS)
    }
}

/// The stable id of a request: lowercase hex of SHA-256 over `node_id`,
/// `pinned_commit`, `desired` (empty when unknown) and the reason's name,
/// each followed by a NUL byte (none of them can contain one, so distinct
/// inputs never run together).
pub fn request_id(
    node_id: &str,
    pinned_commit: &str,
    desired: Option<&str>,
    reason: Reason,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for field in [
        node_id,
        pinned_commit,
        desired.unwrap_or(""),
        reason.as_str(),
    ] {
        ctx.update(field.as_bytes());
        ctx.update(b"\0");
    }
    hex(ctx.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: Reason) -> ReplacementRequest {
        ReplacementRequest::new(
            "i-0abc",
            "v1.4.2",
            "0123456789abcdef0123456789abcdef01234567",
            Some("v1.5.0"),
            reason,
            "",
        )
    }

    #[test]
    fn reasons_serialise_in_kebab_case() {
        let json = serde_json::to_value(request(Reason::ReleaseChanged)).expect("serialise");
        assert_eq!(json["reason"], "release-changed");
        assert_eq!(json["desired"], "v1.5.0");
        for (reason, name) in [
            (Reason::ReleaseChanged, "\"release-changed\""),
            (Reason::Drift, "\"drift\""),
            (Reason::ApplyFailed, "\"apply-failed\""),
        ] {
            assert_eq!(serde_json::to_string(&reason).expect("serialise"), name);
            assert_eq!(format!("\"{reason}\""), name);
        }
        let back: ReplacementRequest = serde_json::from_value(json).expect("the JSON reads back");
        assert_eq!(back.reason, Reason::ReleaseChanged);
    }

    #[test]
    fn request_ids_are_stable_and_distinct() {
        let a = request(Reason::Drift);
        let b = request(Reason::Drift);
        assert_eq!(a.request_id, b.request_id);
        assert_eq!(a.request_id.len(), 64);
        assert!(
            a.request_id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a.request_id, request(Reason::ApplyFailed).request_id);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_ne!(
            request_id("i-0abc", commit, None, Reason::Drift),
            request_id("i-0abc", commit, Some("v1.5.0"), Reason::Drift)
        );
        // Fields cannot run into each other.
        assert_ne!(
            request_id("ab", "c", None, Reason::Drift),
            request_id("a", "bc", None, Reason::Drift)
        );
    }

    #[test]
    fn summaries_are_one_line() {
        assert_eq!(
            request(Reason::ReleaseChanged).summary(),
            "release-changed: v1.4.2 -> v1.5.0"
        );
        assert_eq!(request(Reason::Drift).summary(), "drift: v1.4.2");
        let mut drift = request(Reason::Drift);
        drift.detail = "/etc/app.conf\nchanged".into();
        assert_eq!(drift.summary(), "drift: /etc/app.conf changed (v1.4.2)");
        drift.detail = "x".repeat(2000);
        assert_eq!(drift.summary().chars().count(), MAX_SUMMARY_CHARS);
        let folded = ReplacementRequest::new("n", "v1", "c", None, Reason::ApplyFailed, "a\r\nb");
        assert_eq!(folded.detail, "a  b");
        assert_eq!(folded.summary(), "apply-failed: a  b (v1)");
    }
}
