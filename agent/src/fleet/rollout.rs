//! Rollout policy without a coordinator: when may this node ask to be
//! replaced for a new release? Every node computes its own place from
//! SHA-256 of its id and the desired release (a bucket from 0 to 9,999), so
//! no node needs to know the others, every node reads the same signed
//! channel, and each release reshuffles the order.
//!
//! Pure: given a node id, the channel, its commit time, a clock and the
//! failures recorded for the release, [`decide`] says go or why not yet.

use jiff::{Timestamp, ToSpan as _, ZonedDateTime};
use ring::digest;

use crate::release::channel::{ChannelFile, Weekday, Window};

/// Buckets per fleet.
pub const BUCKETS: u32 = 10_000;

/// A node's deterministic place in the rollout of `release`, 0 to 9,999.
pub fn bucket(node_id: &str, release: &str) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(node_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(release.as_bytes());
    let hash = ctx.finish();
    let b = hash.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % BUCKETS
}

/// The rollout's answer for one node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask to be replaced now.
    Go,
    /// The channel is on hold.
    Hold,
    /// The node is outside the canary share.
    NotCanary {
        /// The node's bucket.
        bucket: u32,
        /// The canary share in buckets.
        share: u32,
    },
    /// The node's wave has not started.
    Wait {
        /// The node's wave (0-based).
        wave: u32,
        /// When it starts.
        until: Timestamp,
    },
    /// Outside every maintenance window.
    OutsideWindow,
    /// New nodes failed on this release: the rollout stopped itself.
    Stopped {
        /// Failures recorded.
        failures: u32,
        /// The channel's threshold.
        max_failures: u32,
    },
}

impl Decision {
    /// A short name for programs (`driftless status --json`): `go`, `hold`,
    /// `not-canary`, `wait`, `outside-window`, `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Go => "go",
            Decision::Hold => "hold",
            Decision::NotCanary { .. } => "not-canary",
            Decision::Wait { .. } => "wait",
            Decision::OutsideWindow => "outside-window",
            Decision::Stopped { .. } => "stopped",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Go => f.write_str("go"),
            Decision::Hold => f.write_str("the channel is on hold"),
            Decision::NotCanary { bucket, share } => write!(
                f,
                "not in the canary (bucket {bucket}, canary below {share})"
            ),
            Decision::Wait { wave, until } => {
                write!(f, "waiting for wave {wave}, which starts at {until}")
            }
            Decision::OutsideWindow => f.write_str("outside every maintenance window"),
            Decision::Stopped {
                failures,
                max_failures,
            } => {
                write!(
                    f,
                    "rollout stopped: {failures} new nodes failed on this release (max_failures {max_failures})"
                )
            }
        }
    }
}

/// Decides whether `node_id` may go now for the release `channel` names.
/// `committed_at` is the signed channel commit's time (waves count from
/// it); `failures` are the failures recorded for this release.
pub fn decide(
    node_id: &str,
    channel: &ChannelFile,
    committed_at: Timestamp,
    now: Timestamp,
    failures: u32,
) -> Decision {
    if channel.hold {
        return Decision::Hold;
    }
    let max_failures = channel.max_failures.unwrap_or(1);
    if failures >= max_failures {
        return Decision::Stopped {
            failures,
            max_failures,
        };
    }
    let release = channel.release.as_str();
    let place = bucket(node_id, release);
    if let Some(share) = channel.canary {
        if place >= share.0 {
            return Decision::NotCanary {
                bucket: place,
                share: share.0,
            };
        }
    }
    let waves = channel.waves.unwrap_or(1).max(1);
    let wave = place * waves / BUCKETS;
    if let Some(interval) = channel.wave_interval.filter(|_| wave > 0) {
        // A small jitter (up to 5 % of the interval, from the node's own
        // hash) so a wave does not arrive as one burst.
        let jitter = interval
            .0
            .mul_f64(f64::from(bucket(release, node_id)) / f64::from(BUCKETS) * 0.05);
        let delay = interval.0.saturating_mul(wave) + jitter;
        let until = committed_at
            + jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
        if now < until {
            return Decision::Wait { wave, until };
        }
    }
    if !channel.windows.is_empty() && !channel.windows.iter().any(|w| in_window(w, now)) {
        return Decision::OutsideWindow;
    }
    Decision::Go
}

/// True when `now` falls inside the window: it opens at `start` on each of
/// its days (every day when none are listed), in its time zone, and stays
/// open for `length`, possibly past midnight.
pub fn in_window(window: &Window, now: Timestamp) -> bool {
    let Ok(tz) = jiff::tz::TimeZone::get(&window.time_zone) else {
        return false;
    };
    let local = now.to_zoned_datetime(tz);
    let length =
        jiff::SignedDuration::try_from(window.length.0).unwrap_or(jiff::SignedDuration::ZERO);
    // A window that opened up to 7 days ago may still be open.
    (0..=7).any(|days_back| {
        let Ok(day) = local.checked_sub(days_back.days()) else {
            return false;
        };
        if !window.days.is_empty() && !window.days.contains(&weekday(&day)) {
            return false;
        }
        let Ok(open) = day
            .with()
            .hour(window.start.hour as i8)
            .minute(window.start.minute as i8)
            .second(0)
            .subsec_nanosecond(0)
            .build()
        else {
            return false;
        };
        let opened = open.timestamp();
        opened <= now && now < opened + length
    })
}

fn weekday(day: &ZonedDateTime) -> Weekday {
    match day.weekday() {
        jiff::civil::Weekday::Monday => Weekday::Mon,
        jiff::civil::Weekday::Tuesday => Weekday::Tue,
        jiff::civil::Weekday::Wednesday => Weekday::Wed,
        jiff::civil::Weekday::Thursday => Weekday::Thu,
        jiff::civil::Weekday::Friday => Weekday::Fri,
        jiff::civil::Weekday::Saturday => Weekday::Sat,
        jiff::civil::Weekday::Sunday => Weekday::Sun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(text: &str) -> ChannelFile {
        let text = format!("{}{text}", crate::release::channel::TEST_HEADER);
        ChannelFile::parse(&text, "channel.yaml").expect("valid channel")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:04}")).collect()
    }

    #[test]
    fn buckets_are_stable_spread_and_reshuffled_per_release() {
        assert_eq!(bucket("node-1", "v2"), bucket("node-1", "v2"));
        let ids = nodes(2000);
        let below_tenth = ids.iter().filter(|id| bucket(id, "v2") < 1000).count();
        assert!(
            (140..=260).contains(&below_tenth),
            "about 10% of 2000: {below_tenth}"
        );
        let moved = ids
            .iter()
            .filter(|id| bucket(id, "v2") / 1000 != bucket(id, "v3") / 1000)
            .count();
        assert!(
            moved > 1500,
            "a new release reshuffles the order: {moved} of 2000 changed decile"
        );
    }

    #[test]
    fn canary_lets_only_its_share_go() {
        let c = channel("release: v2\ncanary: 10%\n");
        let now = ts("2026-06-01T12:00:00Z");
        let going = nodes(2000)
            .iter()
            .filter(|id| decide(id, &c, now, now, 0) == Decision::Go)
            .count();
        assert!((140..=260).contains(&going), "{going}");
        let everyone = channel("release: v2\ncanary: 100%\n");
        assert!(
            nodes(200)
                .iter()
                .all(|id| decide(id, &everyone, now, now, 0) == Decision::Go)
        );
    }

    #[test]
    fn waves_start_one_interval_apart_from_the_commit() {
        let c = channel("release: v2\nwaves: 4\nwave_interval: 30m\n");
        let committed = ts("2026-06-01T12:00:00Z");
        let ids = nodes(400);
        let going_at = |minutes: i64| {
            let now = committed + jiff::SignedDuration::from_mins(minutes);
            ids.iter()
                .filter(|id| decide(id, &c, committed, now, 0) == Decision::Go)
                .count()
        };
        let (w0, w1, w2, w3) = (going_at(0), going_at(32), going_at(62), going_at(92));
        assert!(w0 > 60 && w0 < 140, "first wave at once: {w0}");
        assert!(w0 < w1 && w1 < w2 && w2 < w3, "{w0} {w1} {w2} {w3}");
        assert_eq!(w3, 400, "everyone after the last wave");
        let waiting = ids
            .iter()
            .map(|id| decide(id, &c, committed, committed, 0))
            .find(|d| matches!(d, Decision::Wait { .. }));
        assert!(
            matches!(waiting, Some(Decision::Wait { wave: 1.., .. })),
            "{waiting:?}"
        );
    }

    #[test]
    fn hold_and_failures_stop_everything() {
        let now = ts("2026-06-01T12:00:00Z");
        assert_eq!(
            decide("n", &channel("release: v2\nhold: true\n"), now, now, 0),
            Decision::Hold
        );
        let c = channel("release: v2\n");
        assert_eq!(
            decide("n", &c, now, now, 1),
            Decision::Stopped {
                failures: 1,
                max_failures: 1
            }
        );
        let tolerant = channel("release: v2\nmax_failures: 3\n");
        assert_eq!(decide("n", &tolerant, now, now, 2), Decision::Go);
    }

    #[test]
    fn windows_follow_their_days_and_time_zone() {
        // 02:00-06:00 Berlin time on Mondays; 2026-06-01 is a Monday (CEST, UTC+2).
        let c = channel(
            "release: v2\nwindows: [{days: [mon], start: '02:00', length: 4h, time_zone: Europe/Berlin}]\n",
        );
        let committed = ts("2026-05-31T00:00:00Z");
        assert_eq!(
            decide("n", &c, committed, ts("2026-06-01T00:30:00Z"), 0),
            Decision::Go,
            "02:30 Berlin"
        );
        assert_eq!(
            decide("n", &c, committed, ts("2026-06-01T03:59:00Z"), 0),
            Decision::Go,
            "05:59 Berlin"
        );
        assert_eq!(
            decide("n", &c, committed, ts("2026-06-01T04:00:00Z"), 0),
            Decision::OutsideWindow,
            "06:00 Berlin"
        );
        assert_eq!(
            decide("n", &c, committed, ts("2026-06-02T00:30:00Z"), 0),
            Decision::OutsideWindow,
            "a Tuesday"
        );
        // A window that crosses midnight stays open on the next day.
        let late = channel("release: v2\nwindows: [{days: [sun], start: '23:00', length: 3h}]\n");
        assert_eq!(
            decide("n", &late, committed, ts("2026-06-01T01:00:00Z"), 0),
            Decision::Go,
            "Monday 01:00 UTC"
        );
    }
}
