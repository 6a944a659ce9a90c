//! `driftless gate`: the `ExecCondition=` of the release's services.

use clap::Args;

use super::node::NodeArgs;
use crate::exit::ExitCode;
use crate::node::gate;
use crate::root::Root;

/// Arguments of `driftless gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Runs `driftless gate`: exits 0 when the release's services may start,
/// 1 (which makes systemd skip the unit cleanly) with the reason on stderr
/// when they may not. Anything it cannot read keeps the gate closed.
pub fn run(args: GateArgs) -> ExitCode {
    let decision = args
        .node
        .load_config()
        .map_err(|e| {
            format!(
                "cannot read the agent config: {}",
                crate::error::one_line(&e)
            )
        })
        .and_then(|config| {
            let root =
                Root::open(&args.node.root).map_err(|e| format!("cannot open the root: {e}"))?;
            gate::check(&root, Some(&config))
        });
    match decision {
        Ok(()) => ExitCode::Success,
        Err(why) => {
            errln!("error: gate closed, the release's services stay stopped: {why}");
            ExitCode::Failure
        }
    }
}
