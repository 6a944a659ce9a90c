//! Exit codes. Each failing stage has its own code so that a unit's
//! `OnFailure=`, a bake script or a release pipeline can tell a bad signature
//! from a server that was down. Documented in the README.

use crate::apply::{AlreadyPinned, ApplyError, PinMismatch};
use crate::config::ConfigError;
use crate::fetch::FetchError;
use crate::health::HealthError;
use crate::plan::PlanError;
use crate::release::ReleaseError;
use crate::root::RootError;
use crate::spec::SpecError;
use crate::verify::{TrustFileError, VerifyError};

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
}

impl ExitCode {
    /// Classifies an error by the first typed cause in its chain.
    pub fn of(error: &anyhow::Error) -> Self {
        for cause in error.chain() {
            let class = if cause.is::<VerifyError>()
                || cause.is::<PinMismatch>()
                || cause.is::<crate::channel::ChannelRefusal>()
            {
                ExitCode::Verify
            } else if cause.is::<TrustFileError>() || cause.is::<ConfigError>() {
                ExitCode::Config
            } else if cause.is::<FetchError>() {
                ExitCode::Fetch
            } else if cause.is::<SpecError>()
                || cause.is::<PlanError>()
                || cause.is::<ReleaseError>()
            {
                ExitCode::Spec
            } else if cause.is::<ApplyError>()
                || cause.is::<RootError>()
                || cause.is::<AlreadyPinned>()
                || cause.is::<crate::lock::LockError>()
            {
                ExitCode::Apply
            } else if cause.is::<HealthError>() {
                ExitCode::Health
            } else {
                continue;
            };
            return class;
        }
        ExitCode::Failure
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
