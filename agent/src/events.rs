//! Stable message ids for audit events, in journald's `MESSAGE_ID` form (128
//! random bits, hex), so operators can search logs for them across versions.

/// A release was applied and passed its health checks.
pub const RELEASE_APPLIED: &str = "5f0c2e6a8b9d4c1e9a7b3d2f1e0c4a6b";
/// An apply failed; the node is marked failed.
pub const APPLY_FAILED: &str = "b41d7e2c9a3f4e8b8c6d1a0f2e3b5c7d";
/// The applied configuration was locked.
pub const LOCKED: &str = "0d9e3c7a1f2b4a8c9e6d5b4a3c2f1e0d";
/// The node drifted from its manifest.
pub const DRIFT: &str = "7c2a9e4d1b3f4c6a8e0d2b5f7a9c1e3b";
/// The channel moved to a new, verified tip.
pub const CHANNEL_MOVED: &str = "3e8b1d6f2a9c4e7b8d0f1a2c3b4d5e6f";
/// A channel tip was refused (unsigned, untrusted, moved backwards, bad file or release).
pub const CHANNEL_REFUSED: &str = "9a1c3e5b7d2f4a6c8e0b1d3f5a7c9e2b";
/// Two channel documents with one sequence: the source shows different histories.
pub const CHANNEL_CONFLICT: &str = "c47e1a9b2d5f4e08a3b6c9d2e5f8a1b4";
/// The accepted channel expired: nothing is done on it until a fresh one comes.
pub const CHANNEL_STALE: &str = "5b8d2f6a9c1e4b7d8f0a3c6e9b2d5f81";
/// The node asked to be replaced.
pub const REPLACEMENT_REQUESTED: &str = "e2d4f6a8c0b1e3d5f7a9c2e4b6d8f0a1";
/// A secret a boot emptied from its tmpfs was put back from its sealed copy.
pub const SECRET_RESTORED: &str = "9de7fb24e6550d2c0b2256045d9667ec";
