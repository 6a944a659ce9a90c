//! Exit codes. Each failing stage has its own code so that a unit's
//! `OnFailure=`, a bake script or a release pipeline can tell a bad signature
//! from a server that was down. Documented in the README.

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
    /// A signature was refused.
    Verify = 5,
}

impl ExitCode {
    /// Classifies an error by the first typed cause in its chain.
    pub fn of(error: &anyhow::Error) -> Self {
        for cause in error.chain() {
            if cause.is::<VerifyError>() {
                return ExitCode::Verify;
            }
            if cause.is::<TrustFileError>() || cause.is::<ConfigError>() {
                return ExitCode::Config;
            }
        }
        ExitCode::Failure
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An input the operator gave (a path, a repository) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
