//! The time a node judges expiry and key validity by. The system clock can
//! be wrong: a first boot's clock until NTP has synchronized it, a virtual
//! machine restored from a snapshot days behind. A clock behind must never
//! make an expired channel look fresh, so the node never believes a time
//! earlier than the newest signed time it has seen (its image's bake
//! record, the channel it accepted last, the release it runs): it judges
//! by the later of the two, and says which ([`Judged`]).
//!
//! A first boot that starts from the channel also waits for the kernel's
//! clock to be synchronized, as `clock.sync` says ([`wait_for_sync`]).
//!
//! Test hooks (documented in docs/channel.md): `DRIFTLESS_TEST_CLOCK_OFFSET`
//! (seconds, may be negative) moves the system clock as this node reads it;
//! `DRIFTLESS_TEST_CLOCK_SYNC` (`yes` or `no`) says whether it is
//! synchronized.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{ClockSettings, ClockSync};

/// The test hook that moves the clock: whole seconds, e.g. `-864000`.
pub const TEST_OFFSET_ENV: &str = "DRIFTLESS_TEST_CLOCK_OFFSET";
/// The test hook that says whether the clock is synchronized: `yes`, `no`.
pub const TEST_SYNC_ENV: &str = "DRIFTLESS_TEST_CLOCK_SYNC";
/// systemd-timesyncd creates this once it has synchronized the clock.
const TIMESYNC_MARKER: &str = "/run/systemd/timesync/synchronized";

/// The system clock, as this node reads it (with the test offset).
pub fn system_now() -> Timestamp {
    let now = Timestamp::now();
    let offset = std::env::var(TEST_OFFSET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    match offset {
        Some(secs) => now
            .checked_add(SignedDuration::from_secs(secs))
            .unwrap_or(now),
        None => now,
    }
}

/// Whether the kernel's clock is synchronized, if this node can tell:
/// the test hook, systemd-timesyncd's marker, and (when `thorough`)
/// `timedatectl`, which reads the kernel's flag for any NTP daemon.
pub fn synchronized(thorough: bool) -> Option<bool> {
    if let Ok(value) = std::env::var(TEST_SYNC_ENV) {
        return match value.trim() {
            "yes" | "1" | "true" => Some(true),
            _ => Some(false),
        };
    }
    if Path::new(TIMESYNC_MARKER).exists() {
        return Some(true);
    }
    if thorough {
        return timedatectl_synchronized();
    }
    None
}

/// `timedatectl show --property=NTPSynchronized --value`, within 3 s.
fn timedatectl_synchronized() -> Option<bool> {
    let mut child = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    match out.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// A signed time the node has seen, and what signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTime {
    /// The time.
    pub at: Timestamp,
    /// What carried it, e.g. `the channel this node accepted last`.
    pub what: String,
}

/// The time a node judged by, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    /// The time judged by.
    pub at: Timestamp,
    /// What the system clock said.
    pub system: Timestamp,
    /// The newest signed time seen, when the system clock was behind it
    /// (then `at` is this time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<SignedTime>,
    /// Whether the system clock was known to be synchronized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronized: Option<bool>,
}

impl Judged {
    /// Which time this was, for people: `the system clock (synchronized)`,
    /// or the signed time it was held at and why.
    pub fn by(&self) -> String {
        let sync = match self.synchronized {
            Some(true) => "synchronized",
            Some(false) => "NOT synchronized",
            None => "synchronization unknown",
        };
        match &self.floor {
            None => format!("by the system clock ({sync})"),
            Some(floor) => format!(
                "by the newest signed time seen, {} ({}): the system clock ({}, {sync}) is behind it",
                floor.at, floor.what, self.system
            ),
        }
    }
}

/// The time to judge by: the system clock, but never earlier than the
/// newest of `signed`.
pub fn judge(signed: &[SignedTime], synchronized: Option<bool>) -> Judged {
    judge_at(system_now(), signed, synchronized)
}

/// [`judge`] with the system clock given.
pub fn judge_at(system: Timestamp, signed: &[SignedTime], synchronized: Option<bool>) -> Judged {
    let newest = signed.iter().max_by_key(|s| s.at);
    match newest.filter(|s| s.at > system) {
        Some(floor) => Judged {
            at: floor.at,
            system,
            floor: Some(floor.clone()),
            synchronized,
        },
        None => Judged {
            at: system,
            system,
            floor: None,
            synchronized,
        },
    }
}

/// The clock was not synchronized in time and `clock.sync` is `require`.
#[derive(Debug, thiserror::Error)]
#[error(
    "the clock is not known to be synchronized after {waited}s and clock.sync is require: a channel's expiry cannot be judged; check the node's NTP (chrony, systemd-timesyncd)"
)]
pub struct ClockNotSynchronized {
    /// How long the node waited.
    pub waited: u64,
}

/// At first boot, before judging a channel: waits for the clock as
/// `settings` say and returns whether it is synchronized (`None`: this
/// node cannot tell).
pub fn wait_for_sync(settings: &ClockSettings) -> Result<Option<bool>, ClockNotSynchronized> {
    if settings.sync == ClockSync::Ignore {
        return Ok(synchronized(false));
    }
    let timeout = settings.sync_timeout.0;
    let started = Instant::now();
    let mut said = false;
    let state = loop {
        let state = synchronized(true);
        if state != Some(false) || started.elapsed() >= timeout {
            break state;
        }
        if !said {
            tracing::info!(
                "waiting up to {}s for the clock to be synchronized before judging the channel",
                timeout.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1).min(timeout.saturating_sub(started.elapsed())));
    };
    match (state, settings.sync) {
        (Some(true), _) => Ok(Some(true)),
        (_, ClockSync::Require) => Err(ClockNotSynchronized {
            waited: started.elapsed().as_secs(),
        }),
        (state, _) => {
            tracing::warn!(
                "the clock is {} after {}s; judging the channel by it, never earlier than the newest signed time seen",
                if state.is_none() {
                    "not known to be synchronized"
                } else {
                    "not synchronized"
                },
                started.elapsed().as_secs()
            );
            Ok(state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_clock_behind_is_held_at_the_newest_signed_time() {
        let signed = [
            SignedTime {
                at: ts("2026-03-01T00:00:00Z"),
                what: "the release".into(),
            },
            SignedTime {
                at: ts("2026-03-05T00:00:00Z"),
                what: "the channel".into(),
            },
        ];
        let behind = judge_at(ts("2026-02-01T00:00:00Z"), &signed, Some(false));
        assert_eq!(behind.at, ts("2026-03-05T00:00:00Z"));
        assert_eq!(
            behind.floor.as_ref().map(|f| f.what.as_str()),
            Some("the channel")
        );
        assert!(behind.by().contains("is behind it"), "{}", behind.by());
        let right = judge_at(ts("2026-03-06T00:00:00Z"), &signed, Some(true));
        assert_eq!(right.at, ts("2026-03-06T00:00:00Z"));
        assert!(right.floor.is_none());
        assert_eq!(right.by(), "by the system clock (synchronized)");
        let none = judge_at(ts("2026-02-01T00:00:00Z"), &[], None);
        assert_eq!(none.at, ts("2026-02-01T00:00:00Z"));
    }
}
