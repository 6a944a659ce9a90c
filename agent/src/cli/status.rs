//! `driftless status`: the node's record, for people and programs.

use clap::Args;

use crate::exit::ExitCode;
use crate::lock::LockStatus;
use crate::root::Root;
use crate::state::{self, Status};

/// Arguments of `driftless status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's root.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: std::path::PathBuf,
    /// Print the state as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `driftless status`.
pub fn run(args: StatusArgs) -> ExitCode {
    let loaded = Root::open(&args.root)
        .map_err(anyhow::Error::from)
        .and_then(|root| Ok(state::load(&root)?));
    let state = match loaded {
        Ok(Some(s)) => s,
        Ok(None) => {
            if args.json {
                println!("{}", serde_json::json!({ "status": null }));
            } else {
                println!(
                    "no release applied yet (no {} under {})",
                    state::STATE_PATH,
                    args.root.display()
                );
            }
            return ExitCode::Success;
        }
        Err(e) => return super::report(&e),
    };
    if args.json {
        println!("{}", serde_json::to_string(&state).unwrap_or_default());
        return ExitCode::Success;
    }
    let status = match &state.status {
        Status::Applying => {
            "applying (interrupted or in progress; the next apply finishes it)".to_owned()
        }
        Status::Applied => "applied".to_owned(),
        Status::Failed { stage, reason } => format!("FAILED at {stage}: {reason}"),
    };
    let r = &state.release;
    println!("status     {status}");
    println!("release    {} (commit {})", r.tag, r.commit);
    println!(
        "signed by  {} ({}) at {}",
        r.signer, r.fingerprint, r.signed_at
    );
    println!("node       {}", state.node_id);
    println!("started    {}", state.started_at);
    if let Some(done) = state.finished_at {
        println!("finished   {done}");
    }
    println!("manifest   {} managed paths", state.manifest.len());
    let count = |f: fn(&LockStatus) -> bool| state.manifest.iter().filter(|e| f(&e.lock)).count();
    println!(
        "lock       {} locked, {} pending, {} exempt, {} failed",
        count(|l| *l == LockStatus::Locked),
        count(|l| *l == LockStatus::Pending),
        count(|l| matches!(l, LockStatus::Exempt(_))),
        count(|l| matches!(l, LockStatus::Failed(_))),
    );
    for e in &state.manifest {
        if let LockStatus::Failed(reason) = &e.lock {
            println!("  not locked: {} ({reason})", e.path);
        }
    }
    for m in &state.read_only {
        let how = match &m.lock {
            LockStatus::Locked => "read-only bind mount".to_owned(),
            LockStatus::Pending => "read-only mount pending".to_owned(),
            LockStatus::Exempt(r) | LockStatus::Failed(r) => format!("not read-only: {r}"),
        };
        println!("mount      {} ({how})", m.path);
    }
    ExitCode::Success
}
