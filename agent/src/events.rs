//! Stable message ids for audit events, in journald's `MESSAGE_ID` form (128
//! random bits, hex), so operators can search logs for them across versions.

/// A release was applied and passed its health checks.
pub const RELEASE_APPLIED: &str = "5f0c2e6a8b9d4c1e9a7b3d2f1e0c4a6b";
/// An apply failed; the node is marked failed.
pub const APPLY_FAILED: &str = "b41d7e2c9a3f4e8b8c6d1a0f2e3b5c7d";
