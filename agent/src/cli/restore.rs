//! `driftless restore`: puts back, at boot, the release's secrets that live
//! on a tmpfs (which every boot empties), before the release's services
//! start; run by `driftless-secrets.service`.

use clap::Args;

use super::node::NodeArgs;
use crate::exit::ExitCode;
use crate::node::secrets;
use crate::record::state;
use crate::root::Root;

/// Arguments of `driftless restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Runs `driftless restore`. A node with no applied release has nothing
/// to put back (at first boot, `driftless apply` writes the secrets).
pub fn run(args: RestoreArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let root = Root::open(&args.node.root)?;
        let Some(record) = state::load(&root)? else {
            return Ok(0);
        };
        // The test hooks count from here (see `root::failpoint`).
        crate::root::failpoint::arm();
        secrets::restore(&root, &config.secrets, &record, config.lock.mode)
    })();
    match result {
        Ok(n) => {
            outln!("{n} secrets put back");
            ExitCode::Success
        }
        Err(e) => super::report(&e),
    }
}
