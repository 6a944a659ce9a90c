//! Exit codes. Each failing stage has its own code so that a unit's
//! `OnFailure=`, a bake script or a release pipeline can tell a bad signature
//! from a server that was down. Documented in the README.

use crate::node::stage::Stage;

/// The process exit status of a driftless command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Success = 0,
    /// An unexpected failure that fits no class below.
    Failure = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// A configuration or trust file is missing, unreadable or invalid.
    Config = 3,
    /// The release could not be fetched.
    Fetch = 4,
    /// A signature was refused, or the tag names another commit than pinned.
    Verify = 5,
    /// The release's node spec is invalid (or names files the release lacks).
    Spec = 6,
    /// Writing the node failed, or the node belongs to another release.
    Apply = 7,
    /// A health check did not pass.
    Health = 8,
    /// The node differs from its manifest.
    Drift = 9,
    /// The channel's new tip was refused (`watch --once`, `status`).
    ChannelRefused = 10,
    /// Asking to be replaced failed; the request is pending (`watch
    /// --once`, `status`).
    ReplacementPending = 11,
}

impl ExitCode {
    /// Classifies an error by the first typed cause in its chain.
    pub fn of(error: &anyhow::Error) -> Self {
        match Stage::of(error) {
            Some(Stage::Config) => ExitCode::Config,
            Some(Stage::Fetch) => ExitCode::Fetch,
            Some(Stage::Verify) => ExitCode::Verify,
            Some(Stage::Spec) => ExitCode::Spec,
            Some(Stage::Apply) => ExitCode::Apply,
            Some(Stage::Health) => ExitCode::Health,
            None => ExitCode::Failure,
        }
    }
}

impl ExitCode {
    /// The code of a failure recorded at `stage` (`fetch`, `verify`,
    /// `spec`, `apply`, `lock`, `health`), as `status` reports it.
    pub fn of_stage(stage: &str) -> Self {
        match crate::record::lifecycle::FailedAt::from_record(stage) {
            crate::record::lifecycle::FailedAt::Fetch => ExitCode::Fetch,
            crate::record::lifecycle::FailedAt::Verify => ExitCode::Verify,
            crate::record::lifecycle::FailedAt::Spec => ExitCode::Spec,
            crate::record::lifecycle::FailedAt::Apply
            | crate::record::lifecycle::FailedAt::Lock => ExitCode::Apply,
            crate::record::lifecycle::FailedAt::Health => ExitCode::Health,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
