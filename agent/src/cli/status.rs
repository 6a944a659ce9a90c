//! `driftless status`: the node's record, for people and programs.

use clap::Args;

use crate::exit::ExitCode;
use crate::record::floor::ChannelFloor;
use crate::record::lifecycle::Phase;
use crate::record::state::LockStatus;
use crate::record::state::{self, Status};
use crate::record::watch_state::{RequestStatus, WatchState};
use crate::root::Root;

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
            let early = Root::open(&args.root)
                .and_then(|root| state::load_early_failure(&root))
                .ok()
                .flatten();
            if let Some(failure) = early {
                let phase = Phase::of_records(None, Some(&failure), &WatchState::default());
                if args.json {
                    let mut value = serde_json::json!({ "phase": phase.name(), "status": {
                        "state": "failed",
                        "stage": failure.stage,
                        "reason": failure.reason,
                    }});
                    value["finished_at"] = serde_json::to_value(failure.at).unwrap_or_default();
                    outln!("{value}");
                } else {
                    outln!("phase      {phase}");
                    outln!("status     FAILED at {}: {}", failure.stage, failure.reason);
                    outln!("release    none verified");
                    outln!("finished   {}", failure.at);
                }
                return ExitCode::of_stage(&failure.stage);
            }
            if args.json {
                let phase = Phase::Fresh.name();
                outln!("{}", serde_json::json!({ "phase": phase, "status": null }));
            } else {
                outln!(
                    "no release applied yet (no {} under {})",
                    state::STATE_PATH,
                    args.root.display()
                );
            }
            return ExitCode::Success;
        }
        Err(e) => return super::report(&e),
    };
    let watch = Root::open(&args.root)
        .ok()
        .and_then(|root| WatchState::load(&root).ok())
        .unwrap_or_default();
    let floor = Root::open(&args.root)
        .ok()
        .and_then(|root| ChannelFloor::load(&root).ok().flatten());
    let phase = Phase::of_records(Some(&state), None, &watch);
    let verified = Root::open(&args.root)
        .ok()
        .and_then(|root| crate::node::anchor::last(&root));
    if args.json {
        let mut value = serde_json::to_value(&state).unwrap_or_default();
        value["phase"] = phase.name().into();
        value["verified"] = serde_json::to_value(&verified).unwrap_or_default();
        value["watch"] = serde_json::to_value(&watch).unwrap_or_default();
        value["channel_floor"] = serde_json::to_value(&floor).unwrap_or_default();
        outln!("{value}");
        return exit_code(&state, &watch);
    }
    let status = match &state.status {
        Status::Applying => {
            "applying (interrupted or in progress; the next apply finishes it)".to_owned()
        }
        Status::Applied => "applied".to_owned(),
        Status::Failed { stage, reason } => format!("FAILED at {stage}: {reason}"),
    };
    let r = &state.release;
    outln!("phase      {phase}");
    outln!("status     {status}");
    outln!("release    {} (commit {})", r.tag, r.commit);
    outln!(
        "signed by  {} ({}) at {}",
        r.signer,
        r.fingerprint,
        r.signed_at
    );
    outln!("node       {}", state.node_id);
    outln!("started    {}", state.started_at);
    if let Some(done) = state.finished_at {
        outln!("finished   {done}");
    }
    outln!("manifest   {} managed paths", state.manifest.len());
    let count = |f: fn(&LockStatus) -> bool| state.manifest.iter().filter(|e| f(&e.lock)).count();
    outln!(
        "lock       {} locked, {} pending, {} exempt, {} failed",
        count(|l| *l == LockStatus::Locked),
        count(|l| *l == LockStatus::Pending),
        count(|l| matches!(l, LockStatus::Exempt(_))),
        count(|l| matches!(l, LockStatus::Failed(_))),
    );
    for e in &state.manifest {
        if let LockStatus::Failed(reason) = &e.lock {
            outln!("  not locked: {} ({reason})", e.path);
        }
    }
    for m in &state.read_only {
        let how = match &m.lock {
            LockStatus::Locked => "read-only bind mount".to_owned(),
            LockStatus::Pending => "read-only mount pending".to_owned(),
            LockStatus::Exempt(r) | LockStatus::Failed(r) => format!("not read-only: {r}"),
        };
        outln!("mount      {} ({how})", m.path);
    }
    match &verified {
        Some(v) if v.differences == 0 => outln!(
            "verified   record matches signed release {} (by {} at {})",
            v.release,
            v.by,
            v.at
        ),
        Some(v) => outln!(
            "verified   {} DIFFERENCES from signed release {} (by {} at {}): {}",
            v.differences,
            v.release,
            v.by,
            v.at,
            v.first.as_deref().unwrap_or("")
        ),
        None => outln!("verified   never against the signed release"),
    }
    print_watch(&watch);
    print_channel(&watch, floor.as_ref());
    exit_code(&state, &watch)
}

/// What a script can branch on (README, "Exit codes"): the failed stage's
/// code for a failed node (7 for an apply that never finished), 9 when
/// drift was seen, 11 while a replacement request is pending after a
/// failed attempt, 10 when the channel's last tip was refused, else 0.
fn exit_code(state: &state::State, watch: &WatchState) -> ExitCode {
    match &state.status {
        Status::Failed { stage, .. } => return ExitCode::of_stage(stage),
        Status::Applying => return ExitCode::Apply,
        Status::Applied => {}
    }
    if !watch.drift.is_empty() {
        ExitCode::Drift
    } else if watch
        .replacement
        .as_ref()
        .is_some_and(|r| r.status == RequestStatus::Pending && r.last_error.is_some())
    {
        ExitCode::ReplacementPending
    } else if watch.refusal.is_some() {
        ExitCode::ChannelRefused
    } else {
        ExitCode::Success
    }
}

/// The channel's document, its freshness, the clock it was judged by, and
/// the floor below which this node never goes.
fn print_channel(watch: &WatchState, floor: Option<&ChannelFloor>) {
    if let Some(c) = &watch.channel {
        let freshness = match &watch.freshness {
            Some(f) if f.fresh => format!("fresh until {}", f.expires),
            Some(f) => format!(
                "STALE since {} ({}s): nothing is done on it until a fresh one comes",
                f.expires,
                f.stale_seconds()
            ),
            None => format!("expires {}", c.file.expires),
        };
        outln!(
            "channel    {} of fleet {}, sequence {} ({} signer, base {}), {freshness}",
            c.file.channel,
            c.file.fleet,
            c.file.sequence,
            c.role.name(),
            c.base
        );
    }
    if let Some(f) = &watch.freshness {
        outln!("clock      judged at {} {}", f.judged.at, f.judged.by());
    }
    if let Some(floor) = floor {
        let sequence = floor
            .sequence
            .map_or_else(|| "tip only".to_owned(), |s| format!("sequence {s}"));
        outln!(
            "floor      {sequence}, tip {} ({}, {})",
            floor.tip,
            floor.source(),
            floor.recorded_at
        );
    }
}

fn print_watch(watch: &WatchState) {
    match &watch.channel {
        Some(c) => outln!(
            "desired    {}{} (channel tip {}, signed by {})",
            c.release,
            if c.hold { ", on hold" } else { "" },
            c.tip,
            c.signer
        ),
        None => outln!("desired    unknown (the channel has not been read yet)"),
    }
    match (watch.last_poll, &watch.last_poll_error) {
        (Some(at), None) => outln!("last poll  {at}"),
        (Some(at), Some(e)) => outln!("last poll  {at}, FAILED: {e}"),
        (None, _) => outln!("last poll  never"),
    }
    if let Some(why) = &watch.waiting {
        outln!("rollout    {why}");
    }
    if let Some(r) = &watch.refusal {
        let kind = if r.kind.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.kind)
        };
        outln!(
            "refused    channel tip {} at {}{kind}: {}",
            r.tip,
            r.at,
            r.reason
        );
    }
    if !watch.drift.is_empty() {
        outln!("drift      {} differences seen:", watch.drift.len());
        for d in &watch.drift {
            outln!("  {} (since {})", d.line, d.first_seen);
        }
    }
    if let Some(r) = &watch.replacement {
        let state = match r.status {
            RequestStatus::Done => "requested".to_owned(),
            RequestStatus::Pending => format!(
                "PENDING after {} attempts{}",
                r.attempts,
                r.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        };
        outln!("replace    {state} ({})", r.request.detail);
    }
}
