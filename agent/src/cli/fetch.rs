//! `driftless fetch`: fetch and verify the pinned release into the cache
//! under the root, without applying it: pre-seeds an image being baked so
//! that first boot needs no network. It also records the channel's floor
//! (its sequence and tip now), so a node booted from the image refuses any
//! older channel.

use clap::Args;

use super::node::NodeArgs;
use crate::exit::ExitCode;
use crate::record::floor::{self, RecordedBy};
use crate::root::Root;

/// Arguments of `driftless fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Runs `driftless fetch`.
pub fn run(args: FetchArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let root = Root::open(&args.node.root)?;
        let before = floor::before(&root, &config)?;
        let (_, verified, channel) =
            crate::release::obtain::fetch_verified(&args.node.root, &config, &before)?;
        // A fixed tag's image records the channel too; one without a
        // channel branch has no floor to record.
        let recorded = crate::node::floor::record(
            &args.node.root,
            &root,
            &config,
            &before,
            channel.as_ref(),
            RecordedBy::Bake,
            true,
        );
        let channel = match recorded {
            Ok(floor) => floor,
            Err(e) => {
                errln!(
                    "note: no channel floor recorded: {}",
                    crate::error::one_line(&e)
                );
                None
            }
        };
        Ok::<_, anyhow::Error>((verified, channel))
    })();
    match result {
        Ok((v, channel)) => {
            outln!(
                "release {} (commit {}) is in the cache, verified: signed by {} ({})",
                v.name,
                v.commit,
                v.principal,
                v.fingerprint
            );
            if let Some(floor) = channel {
                outln!(
                    "channel floor recorded: {} (fleet {}) sequence {}, tip {}; nodes from this image refuse anything older",
                    floor.channel,
                    floor.fleet,
                    floor.sequence.unwrap_or_default(),
                    floor.tip
                );
            }
            ExitCode::Success
        }
        Err(e) => super::report(&e),
    }
}
