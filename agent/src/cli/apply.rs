//! `driftless apply`: the first-boot job.

use clap::Args;

use super::node::NodeArgs;
use crate::config;
use crate::exit::ExitCode;
use crate::node::apply::{self, Outcome};

/// Arguments of `driftless apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Do not lock what was applied (an image being baked); the first boot
    /// takes the lock.
    #[arg(long)]
    no_lock: bool,
}

/// Runs `driftless apply`.
pub fn run(args: ApplyArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let node_id = config::node_id(&args.node.root, &config.node).unwrap_or_else(|e| {
            tracing::warn!("{e}; using \"unknown\" as the node id");
            "unknown".to_owned()
        });
        apply::apply(
            &args.node.root,
            &config,
            &node_id,
            apply::ApplyOptions {
                no_lock: args.no_lock,
            },
        )
    })();
    report_to_coordinator(&args);
    match result {
        Ok(Outcome::Applied {
            release,
            changed,
            units_offline,
        }) => {
            outln!(
                "applied release {} (commit {}), {changed} changes",
                release.tag,
                release.commit
            );
            outln!("signed by {} ({})", release.signer, release.fingerprint);
            if units_offline {
                outln!(
                    "systemd is not running under this root: units were enabled offline, not started"
                );
            }
            ExitCode::Success
        }
        Ok(Outcome::Checked { release, drift }) => {
            outln!(
                "release {} (commit {}) was already applied; checked the node against its manifest",
                release.tag,
                release.commit
            );
            if drift.is_empty() {
                outln!("no drift");
                ExitCode::Success
            } else {
                for d in &drift {
                    outln!("{d}");
                }
                ExitCode::Drift
            }
        }
        Err(e) => {
            let code = super::report(&e);
            replace_if_configured(&args, &e);
            code
        }
    }
}

/// With a rollout coordinator: a healthy new node gives a slot of its group
/// back, a failed one records its failure (before it may ask to be
/// replaced). Best effort: the watcher retries what did not get through.
/// Not while an image is baked (`--no-lock`): that is no node of the fleet.
fn report_to_coordinator(args: &ApplyArgs) {
    if args.no_lock {
        return;
    }
    let Ok(config) = args.node.load_config() else {
        return;
    };
    if let Err(e) = crate::fleet::coordinate::report_apply(&args.node.root, &config) {
        tracing::warn!(
            "{}; the watcher reports it when it starts",
            crate::error::one_line(&e)
        );
    }
}

/// With `failure.policy: replace`, a node that could not be brought up asks
/// to be replaced (a bad config or a refused signature included: the node
/// cannot become what it should be).
fn replace_if_configured(args: &ApplyArgs, error: &anyhow::Error) {
    let Ok(config) = args.node.load_config() else {
        return;
    };
    if config.failure.policy != config::FailurePolicy::Replace {
        return;
    }
    let node_id =
        config::node_id(&args.node.root, &config.node).unwrap_or_else(|_| "unknown".to_owned());
    if let Err(e) = crate::fleet::watch::replace_after_failed_apply(
        &args.node.root,
        &config,
        &node_id,
        &crate::error::one_line(error),
    ) {
        errln!(
            "error: asking to be replaced failed: {}",
            crate::error::one_line(&e)
        );
    }
}
