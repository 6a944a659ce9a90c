//! The watcher's Prometheus metrics, written as a textfile for
//! node_exporter's textfile collector (atomically, so the collector never
//! reads half a file).

use std::fmt::Write as _;

use crate::record::state::LockStatus;
use crate::record::state::{State, Status};
use crate::record::watch_state::{RequestStatus, WatchState};
use crate::root::{Root, RootError};
use crate::types::NodePath;

/// Renders the metrics text.
pub fn render(applied: &State, watch: &WatchState) -> String {
    let mut out = String::new();
    let r = &applied.release;
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut metric = |name: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}"
        );
    };
    metric(
        "driftless_release_info",
        "The release this node was built from.",
        &format!(
            "{{tag=\"{}\",commit=\"{}\",signer_fingerprint=\"{}\"}}",
            label(&r.tag),
            label(&r.commit),
            label(&r.fingerprint)
        ),
        1.0,
    );
    metric(
        "driftless_applied",
        "1 when the release was applied and passed its health checks.",
        "",
        f64::from(u8::from(applied.status == Status::Applied)),
    );
    let locked = applied
        .manifest
        .iter()
        .filter(|e| e.lock == LockStatus::Locked)
        .count();
    metric(
        "driftless_locked_paths",
        "Managed paths carrying the immutable attribute.",
        "",
        locked as f64,
    );
    metric(
        "driftless_drift_paths",
        "Differences from the manifest seen so far.",
        "",
        watch.drift.len() as f64,
    );
    if let Some(seen) = &watch.channel {
        metric(
            "driftless_desired_release_info",
            "The release the channel names.",
            &format!(
                "{{tag=\"{}\",channel_tip=\"{}\"}}",
                label(&seen.release),
                label(&seen.tip)
            ),
            1.0,
        );
        metric(
            "driftless_channel_hold",
            "1 while the channel is on hold.",
            "",
            f64::from(u8::from(seen.hold)),
        );
    }
    if let Some(at) = watch.last_poll {
        metric(
            "driftless_last_poll_timestamp_seconds",
            "When the channel was last polled.",
            "",
            at.as_second() as f64,
        );
    }
    metric(
        "driftless_poll_errors",
        "Channel polls that failed since the watcher started.",
        "",
        watch.poll_errors as f64,
    );
    metric(
        "driftless_channel_refused",
        "1 when the last new channel tip was refused.",
        "",
        f64::from(u8::from(watch.refusal.is_some())),
    );
    channel_metrics(watch, &mut metric, &label);
    let requested = watch.replacement.as_ref().map_or(0.0, |r| {
        if r.status == RequestStatus::Done {
            1.0
        } else {
            0.5
        }
    });
    metric(
        "driftless_replacement_requested",
        "1 when replacement was requested, 0.5 while the request is pending.",
        "",
        requested,
    );
    out
}

/// The channel's sequence, expiry and freshness, the clock it was judged
/// by, and what kind of refusal the last one was.
fn channel_metrics(
    watch: &WatchState,
    metric: &mut impl FnMut(&str, &str, &str, f64),
    label: &impl Fn(&str) -> String,
) {
    if let Some(seen) = &watch.channel {
        metric(
            "driftless_channel_sequence",
            "The sequence of the channel document this node accepted last.",
            "",
            seen.file.sequence as f64,
        );
        metric(
            "driftless_channel_expires_timestamp_seconds",
            "When the accepted channel document expires.",
            "",
            seen.file.expires.as_second() as f64,
        );
        metric(
            "driftless_channel_signed_timestamp_seconds",
            "When the accepted channel document was signed (a refresh job renews it).",
            "",
            seen.committed_at.as_second() as f64,
        );
    }
    if let Some(f) = &watch.freshness {
        metric(
            "driftless_channel_fresh",
            "1 while the accepted channel document has not expired.",
            "",
            f64::from(u8::from(f.fresh)),
        );
        metric(
            "driftless_channel_stale_seconds",
            "Seconds since the channel was last fresh (0 while it is).",
            "",
            f.stale_seconds() as f64,
        );
        metric(
            "driftless_clock_behind_signed_time",
            "1 when the system clock was behind the newest signed time seen, which was judged by instead.",
            "",
            f64::from(u8::from(f.judged.floor.is_some())),
        );
        if let Some(synchronized) = f.judged.synchronized {
            metric(
                "driftless_clock_synchronized",
                "1 when the system clock is known to be synchronized.",
                "",
                f64::from(u8::from(synchronized)),
            );
        }
    }
    let conflict = watch.refusal.as_ref().is_some_and(|r| r.kind == "conflict");
    metric(
        "driftless_channel_conflict",
        "1 when the last refused tip had the sequence of another: the source shows different histories.",
        "",
        f64::from(u8::from(conflict)),
    );
    if let Some(r) = &watch.refusal {
        metric(
            "driftless_channel_refusal_info",
            "The last refused channel tip and the kind of refusal.",
            &format!("{{kind=\"{}\",tip=\"{}\"}}", label(&r.kind), label(&r.tip)),
            1.0,
        );
    }
}

/// Writes the metrics file, if its directory exists.
pub fn write(
    root: &Root,
    path: &NodePath,
    applied: &State,
    watch: &WatchState,
) -> Result<(), RootError> {
    root.write_file(path, render(applied, watch).as_bytes(), 0o644, 0, 0)
}
