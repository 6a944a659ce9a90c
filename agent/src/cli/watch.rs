//! `driftless watch`: the long-running watcher (a systemd Type=notify service).

use clap::Args;

use super::node::NodeArgs;
use crate::config;
use crate::exit::ExitCode;
use crate::fleet::watch::Watcher;
use crate::record::watch_state::{RequestStatus, WatchState};

/// Arguments of `driftless watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Poll the channel once, act on it, and exit (for scripts and tests).
    #[arg(long)]
    once: bool,
}

/// Arguments of the hidden `driftless evaluate-channel`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The last tip the watcher accepted: the new tip must descend from it.
    #[arg(long, value_name = "COMMIT")]
    last_seen: Option<String>,
}

/// Runs `driftless watch` on a current-thread tokio runtime.
pub fn run(args: WatchArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let node_id = config::node_id(&args.node.root, &config.node)?;
        let config_path = config::config_path(&args.node.root, args.node.config.as_deref());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut watcher = Watcher::new(&args.node.root, &config_path, config, node_id)?;
            if args.once {
                watcher.announce();
                // The clock the watcher stamps a refusal with.
                let started = crate::release::clock::system_now();
                watcher.poll_once().await;
                Ok(once_code(watcher.record(), started))
            } else {
                watcher.run().await.map(|()| ExitCode::Success)
            }
        })
    })();
    match result {
        Ok(code) => code,
        Err(e) => super::report(&e),
    }
}

/// What one poll of `watch --once` came to, for scripts (README, "Exit
/// codes"): 4 when the channel could not be polled or fetched, 10 when
/// its new tip was refused, 11 when asking to be replaced failed, else 0.
fn once_code(record: &WatchState, started: jiff::Timestamp) -> ExitCode {
    if record.last_poll_error.is_some() {
        ExitCode::Fetch
    } else if record.refusal.as_ref().is_some_and(|r| r.at >= started) {
        ExitCode::ChannelRefused
    } else if record
        .replacement
        .as_ref()
        .is_some_and(|r| r.status == RequestStatus::Pending && r.last_error.is_some())
    {
        ExitCode::ReplacementPending
    } else {
        ExitCode::Success
    }
}

/// Runs the hidden `driftless evaluate-channel`, at a lower CPU priority
/// and under a name of its own: prints one JSON verdict on stdout and exits
/// 0 whatever the verdict, non-zero only when it could not evaluate at all
/// (a bad config).
pub fn run_evaluate(args: EvaluateArgs) -> ExitCode {
    crate::fleet::watch::name_evaluation();
    crate::fleet::watch::lower_priority();
    let result = (|| {
        let config = args.node.load_config()?;
        let verdict = crate::fleet::watch::evaluate_channel(
            &args.node.root,
            &config,
            args.last_seen.as_deref(),
        );
        outln!("{}", serde_json::to_string(&verdict)?);
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}
