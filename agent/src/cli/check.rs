//! `driftless check`: compare the node with the manifest recorded when its
//! release was applied, and that record with the signed release.

use clap::Args;

use crate::exit::ExitCode;
use crate::node::anchor;
use crate::record::drift;
use crate::record::state;
use crate::root::Root;

/// Arguments of `driftless check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    node: super::node::NodeArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A node without a recorded release cannot be checked.
#[derive(Debug, thiserror::Error)]
#[error("no release has been applied under {0}; nothing to check")]
pub struct NothingApplied(String);

/// Runs `driftless check`: exit 0 when the node matches, 9 when it drifted.
pub fn run(args: CheckArgs) -> ExitCode {
    let result = Root::open(&args.node.root)
        .map_err(anyhow::Error::from)
        .and_then(|root| {
            let state = state::load(&root)?
                .ok_or_else(|| NothingApplied(args.node.root.display().to_string()))?;
            let mut found = drift::compare(&root, &state);
            // The record itself, against the signed release it names.
            let config = args.node.load_config()?;
            found.extend(anchor::verify(&root, &state, &config));
            Ok(found)
        });
    let differences = match result {
        Ok(d) => d,
        Err(e) => return super::report(&e),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::json!({ "drifted": !differences.is_empty(), "differences": differences })
        );
    } else {
        for d in &differences {
            outln!("{d}");
        }
    }
    if differences.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Drift
    }
}
