//! `driftless watch`: the long-running watcher (a systemd Type=notify service).

use clap::Args;

use super::node::NodeArgs;
use crate::config;
use crate::exit::ExitCode;
use crate::watch::Watcher;

/// Arguments of `driftless watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Poll the channel once, act on it, and exit (for scripts and tests).
    #[arg(long)]
    once: bool,
}

/// Runs `driftless watch` on a current-thread tokio runtime.
pub fn run(args: WatchArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let node_id = config::node_id(&args.node.root, &config.node)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut watcher = Watcher::new(&args.node.root, config, node_id)?;
            if args.once {
                watcher.poll_once().await;
                Ok(())
            } else {
                watcher.run().await
            }
        })
    })();
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}
