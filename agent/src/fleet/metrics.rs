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
    let mut typed = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let mut metric = |name: &str, help: &str, labels: &str, value: f64| {
        typed(name, "gauge", help, &[(labels.to_owned(), value)]);
    };
    metric(
        "driftless_build_info",
        "This agent's version and the release it runs (commit and signer), as labels.",
        &format!(
            "{{version=\"{}\",release=\"{}\",commit=\"{}\",signer=\"{}\",signer_fingerprint=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            label(&r.tag),
            label(&r.commit),
            label(&r.signer),
            label(&r.fingerprint)
        ),
        1.0,
    );
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
    channel_metrics(watch, &mut metric, &label);
    typed(
        "driftless_poll_errors_total",
        "counter",
        "Channel polls that failed (kept in watch.json across restarts).",
        &[(String::new(), watch.poll_errors as f64)],
    );
    let mut metric = |name: &str, help: &str, value: bool| {
        typed(
            name,
            "gauge",
            help,
            &[(String::new(), f64::from(u8::from(value)))],
        );
    };
    metric(
        "driftless_channel_refused",
        "1 when the last new channel tip was refused.",
        watch.refusal.is_some(),
    );
    let request = watch.replacement.as_ref().map(|r| &r.status);
    metric(
        "driftless_replacement_requested",
        "1 once the request to replace this node was made successfully.",
        request == Some(&RequestStatus::Done),
    );
    metric(
        "driftless_replacement_pending",
        "1 while a request to replace this node is recorded but not yet made successfully.",
        request == Some(&RequestStatus::Pending),
    );
    // One series per state, 1 for the current one: where the rollout to the
    // desired release stands for this node ("current": it runs it).
    let current = watch
        .rollout
        .as_ref()
        .map_or("current", |r| r.state.as_str());
    let release = watch
        .rollout
        .as_ref()
        .map(|r| r.release.clone())
        .or_else(|| watch.channel.as_ref().map(|c| c.release.clone()))
        .unwrap_or_default();
    let mut states: Vec<&str> = ROLLOUT_STATES.to_vec();
    if !states.contains(&current) {
        states.push(current);
    }
    let samples: Vec<(String, f64)> = states
        .iter()
        .map(|s| {
            (
                format!("{{release=\"{}\",state=\"{}\"}}", label(&release), label(s)),
                f64::from(u8::from(*s == current)),
            )
        })
        .collect();
    typed(
        "driftless_rollout_state",
        "gauge",
        "1 for the state the rollout to the desired release is in for this node (current: it runs it).",
        &samples,
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
/// The states of `driftless_rollout_state` (see
/// [`crate::record::watch_state::RolloutStatus::state`]), each always
/// written so that a dashboard sees 0 as well as 1.
pub const ROLLOUT_STATES: [&str; 9] = [
    "current",
    "go",
    "hold",
    "not-canary",
    "wait",
    "outside-window",
    "stopped",
    "waiting-for-slot",
    "coordinator-unreachable",
];

/// Writes the metrics file, if its directory exists.
pub fn write(
    root: &Root,
    path: &NodePath,
    applied: &State,
    watch: &WatchState,
) -> Result<(), RootError> {
    root.write_file(path, render(applied, watch).as_bytes(), 0o644, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::state::PinnedRelease;
    use crate::record::watch_state::RolloutStatus;

    fn applied() -> State {
        State {
            version: 1,
            node_id: "n".into(),
            release: PinnedRelease {
                tag: "v1".into(),
                tag_object: "t".into(),
                commit: "c0ffee".into(),
                tree: "r".into(),
                signer: "release@example.com".into(),
                fingerprint: "SHA256:x".into(),
                signed_at: jiff::Timestamp::UNIX_EPOCH,
            },
            status: Status::Applied,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: None,
            manifest: Vec::new(),
            read_only: Vec::new(),
            effective: Default::default(),
        }
    }

    #[test]
    fn counters_end_in_total_and_states_are_one_series_each() {
        let watch = WatchState {
            poll_errors: 3,
            rollout: Some(RolloutStatus {
                release: "v2".into(),
                state: "waiting-for-slot".into(),
                failures: 0,
                max_failures: 1,
                in_flight: Some(1),
                max_in_flight: Some(1),
            }),
            ..WatchState::default()
        };
        let text = render(&applied(), &watch);
        assert!(
            text.contains(
                "# TYPE driftless_poll_errors_total counter\ndriftless_poll_errors_total 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "driftless_build_info{{version=\"{}\",release=\"v1\",commit=\"c0ffee\",signer=\"release@example.com\",signer_fingerprint=\"SHA256:x\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        let states: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("driftless_rollout_state{"))
            .collect();
        assert_eq!(states.len(), ROLLOUT_STATES.len(), "{text}");
        assert!(
            states
                .contains(&"driftless_rollout_state{release=\"v2\",state=\"waiting-for-slot\"} 1")
        );
        assert_eq!(
            states.iter().filter(|l| l.ends_with(" 1")).count(),
            1,
            "{text}"
        );
        // No value but 0 and 1 for a yes/no: no 0.5 for "pending".
        assert!(!text.contains(" 0.5"), "{text}");
        assert!(text.contains("driftless_replacement_pending 0\n"), "{text}");
    }
}
