//! driftless: the node agent of an immutable fleet.
//!
//! At first boot it fetches one signed, pinned release from git, verifies it,
//! makes the node exactly what the release's node spec says, locks that
//! configuration, and from then on only watches; when the fleet's desired
//! release changes it asks to be replaced instead of upgrading in place.
//!
//! The crate follows the pipeline in `docs/design.md`, one module a stage:
//!
//! | module | stage |
//! |---|---|
//! | [`verify`] | SSH signatures on tags and commits; allowed_signers trust |
//! | [`cli`] | the command line, one file a subcommand |
//! | [`exit`] | exit codes, so systemd units and scripts can branch |

pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod exit;
pub mod fleet;
pub mod node;
pub mod record;
pub mod release;
pub mod root;
pub mod source;
pub mod types;
pub mod verify;
