//! `driftless fetch`: fetch and verify the pinned release into the cache
//! under the root, without applying it: pre-seeds an image being baked so
//! that first boot needs no network.

use clap::Args;

use super::node::NodeArgs;
use crate::exit::ExitCode;

/// Arguments of `driftless fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Runs `driftless fetch`.
pub fn run(args: FetchArgs) -> ExitCode {
    let result = args
        .node
        .load_config()
        .and_then(|config| crate::release::obtain::fetch_verified(&args.node.root, &config));
    match result {
        Ok((_, v, _)) => {
            outln!(
                "release {} (commit {}) is in the cache, verified: signed by {} ({})",
                v.name,
                v.commit,
                v.principal,
                v.fingerprint
            );
            ExitCode::Success
        }
        Err(e) => super::report(&e),
    }
}
