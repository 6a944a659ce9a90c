//! The errors of bringing a node up, and which stage each belongs to: apply
//! records the stage with a failure, and the command line turns it into an
//! exit code, so both read it from the typed errors in one place.

use crate::config::{ConfigError, IdentityError};
use crate::node::health::HealthError;
use crate::node::lock::LockError;
use crate::node::plan::PlanError;
use crate::release::channel::ChannelRefusal;
use crate::release::lint::Refused;
use crate::release::obtain::PinMismatch;
use crate::release::sealed::SealedError;
use crate::release::spec::SpecError;
use crate::release::tree::ReleaseError;
use crate::root::RootError;
use crate::source::fetch::FetchError;
use crate::verify::{TrustFileError, VerifyError};

/// The node is already pinned to another release; nodes are replaced, not upgraded.
#[derive(Debug, thiserror::Error)]
#[error(
    "this node was built from release {applied}; the config now asks for {wanted}. A node is never upgraded in place: replace it"
)]
pub struct AlreadyPinned {
    /// The release in state.
    pub applied: String,
    /// The release the config asks for.
    pub wanted: String,
}

/// An apply step that failed on the node.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// A stage that can fail, as a node's records and exit codes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The agent config or a trust file.
    Config,
    /// Fetching the release.
    Fetch,
    /// A refused signature, pin or channel tip.
    Verify,
    /// The release's node spec or the files it names.
    Spec,
    /// Writing or locking the node.
    Apply,
    /// A health check.
    Health,
}

impl Stage {
    /// The stage of the first typed cause in the error's chain, if any.
    pub fn of(error: &anyhow::Error) -> Option<Self> {
        error.chain().find_map(|cause| {
            if cause.is::<VerifyError>()
                || cause.is::<PinMismatch>()
                || cause.is::<ChannelRefusal>()
                || cause.is::<crate::release::clock::ClockNotSynchronized>()
            {
                Some(Stage::Verify)
            } else if cause.is::<TrustFileError>()
                || cause.is::<ConfigError>()
                || cause.is::<IdentityError>()
            {
                Some(Stage::Config)
            } else if cause.is::<FetchError>() {
                Some(Stage::Fetch)
            } else if cause.is::<SpecError>()
                || cause.is::<PlanError>()
                || cause.is::<SealedError>()
                || cause.is::<ReleaseError>()
                || cause.is::<Refused>()
            {
                Some(Stage::Spec)
            } else if cause.is::<ApplyError>()
                || cause.is::<RootError>()
                || cause.is::<AlreadyPinned>()
                || cause.is::<LockError>()
            {
                Some(Stage::Apply)
            } else if cause.is::<HealthError>() {
                Some(Stage::Health)
            } else {
                None
            }
        })
    }
}
