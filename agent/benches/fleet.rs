//! Benchmark: rolling a fleet on one machine. It runs the simulation of the
//! end-to-end tests (`tests/support/fleet.rs`): N nodes, each a root
//! directory with its own node id running the built `driftless apply` and
//! `driftless watch`; nginx + fcgiwrap + `git-http-backend` serving the
//! signed releases and channel on 127.0.0.1; one real etcd
//! (`rollout: {coordinator: etcd, max_in_flight: M}`); and an autoscaler
//! loop that replaces every node asking to be replaced by a new node built
//! from the channel, after a simulated boot delay.
//!
//! For each N, on a fresh fleet (new servers, new directories):
//!
//! * idle: once every node is up on v1 and has polled a few times, the
//!   git server's requests and bytes over a quiet window, from nginx's
//!   access log (`$bytes_sent` down: status line, headers and body;
//!   `$request_length` up: request line, headers and body), per node per
//!   minute at the fleet's `channel.poll_interval`; the watchers' CPU time
//!   (`/proc/PID/stat`) over the same window;
//! * memory: the sum of the watchers' `VmRSS` (`/proc/PID/status`) at the
//!   end of the idle window, and its mean per watcher; `VmRSS` counts the
//!   pages of the binary every watcher shares once per watcher, so the sum
//!   of their `Pss` (`/proc/PID/smaps_rollup`, shared pages divided among
//!   the processes mapping them) is also given: what N watchers cost the
//!   machine;
//! * etcd: the gRPC calls etcd started for the nodes (the JSON gateway's
//!   requests and watch streams become gRPC calls inside it; the
//!   harness's own reads of the slots, one every 50 ms, are left out) and
//!   etcd's CPU time (those reads included, so an upper bound), from its
//!   `/metrics`, over the idle window (per node per minute) and over the
//!   roll (per replaced node): what sizing etcd needs;
//! * roll: from pushing the signed channel commit naming v2 until every
//!   node is on v2 (applied, healthy, watching), against the ideal
//!   `ceil(N / M) × R`, R being one replacement (from a node's ask until
//!   its replacement is healthy: the boot delay and `driftless apply`),
//!   the median of a fleet of one node (M = 1) rolled back and forth
//!   first. What the roll takes beyond the ideal is the rollout's own
//!   cost: the first poll that sees the channel move, the hand-off of
//!   each freed slot (a waiting node learns of it through etcd's watch,
//!   then asks), and the load of N watchers. The line of each N gives the
//!   first ask after the channel commit and the median hand-off (from a
//!   replacement seen healthy to the next ask seen, both at autoscaler
//!   ticks). The table also gives the median replacement inside the fleet, and
//!   "max away", the most nodes away at one autoscaler tick (asked to be
//!   replaced, replacement not yet healthy; see the fleet module).
//!
//! The `driftless` measured is the bench profile's (release, thin LTO).
//! The machine's other load counts: run it on a quiet machine.
//!
//! Run it from the workspace root with `cargo bench --bench fleet`.
//! Environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_FLEET_SIZES` | 10,25,50 | fleet sizes N, comma-separated (beyond about 100, raise `fs.inotify.max_user_instances`, 128 on Debian: every watcher holds one, and without one it finds drift by rescans only) |
//! | `DRIFTLESS_BENCH_FLEET_MAX_IN_FLIGHT` | 5 | `rollout.max_in_flight` (M) |
//! | `DRIFTLESS_BENCH_FLEET_POLL_SECS` | 1 | `channel.poll_interval` of every node |
//! | `DRIFTLESS_BENCH_FLEET_IDLE_SECS` | 30 | the idle window |
//! | `DRIFTLESS_BENCH_FLEET_BOOT_MS` | 500 | the simulated boot delay of a new node |
//! | `DRIFTLESS_BENCH_FLEET_LEASE_SECS` | 30 | `rollout.lease_ttl`: keep it well above the slowest replacement, or a slot ends under a node still away |
//! | `DRIFTLESS_BENCH_REPS` | 3 | one-node rolls timed for R |
//! | `DRIFTLESS_BENCH_FLEET_TRACE` | unset | when set, every hand-off and every replacement of the roll in ms, in order, on stderr (where a slow wave is), and when the roll and its first wave began and ended in seconds since the epoch (for `perf record -a -k CLOCK_REALTIME` and `perf report --time START,END`) |
//! | `DRIFTLESS_BENCH_FLEET_SOURCES` | git,static | where the nodes fetch from: `git` (smart HTTP) and/or `static` (`driftless publish`'s files on the same nginx, published again after each channel commit); each gets its own R and table |

#[path = "common/mod.rs"]
mod common;

#[path = "../../tests/support/channel.rs"]
mod channel;
#[path = "../../tests/support/etcd.rs"]
mod etcd;
use etcd::EtcdLoad;
#[path = "../../tests/support/fleet.rs"]
mod fleet;
#[path = "../../tests/support/release.rs"]
mod release;
#[path = "../../tests/support/servers.rs"]
mod servers;

use std::env;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use common::{bytes, cpu_ticks, env_count, median, proc_kib};
use fleet::{Fleet, FleetOptions, FleetSource, Stats};
use nix::unistd::{SysconfVar, sysconf};

/// The longest one roll may take per wave before the benchmark gives up.
const WAVE_LIMIT: Duration = Duration::from_secs(60);
/// Polls every node makes before the idle window opens (the first ones
/// fetch and verify the channel).
const SETTLE_POLLS: u32 = 3;

/// The settings of one run.
#[derive(Clone, Debug)]
struct Settings {
    sizes: Vec<usize>,
    max_in_flight: u32,
    poll: Duration,
    idle: Duration,
    boot_delay: Duration,
    lease: Duration,
    reps: usize,
    sources: Vec<FleetSource>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let sizes = match env::var("DRIFTLESS_BENCH_FLEET_SIZES") {
            Ok(text) => text
                .split(',')
                .map(|n| {
                    n.trim().parse().with_context(|| {
                        format!("DRIFTLESS_BENCH_FLEET_SIZES={text:?}: {n:?} is not a count")
                    })
                })
                .collect::<Result<Vec<usize>>>()?,
            Err(_) => vec![10, 25, 50],
        };
        let settings = Self {
            sizes,
            max_in_flight: u32::try_from(env_count("DRIFTLESS_BENCH_FLEET_MAX_IN_FLIGHT", 5)?)
                .context("DRIFTLESS_BENCH_FLEET_MAX_IN_FLIGHT is too large")?,
            poll: Duration::from_secs(env_count("DRIFTLESS_BENCH_FLEET_POLL_SECS", 1)?.try_into()?),
            idle: Duration::from_secs(
                env_count("DRIFTLESS_BENCH_FLEET_IDLE_SECS", 30)?.try_into()?,
            ),
            boot_delay: Duration::from_millis(
                env_count("DRIFTLESS_BENCH_FLEET_BOOT_MS", 500)?.try_into()?,
            ),
            lease: Duration::from_secs(
                env_count("DRIFTLESS_BENCH_FLEET_LEASE_SECS", 30)?.try_into()?,
            ),
            reps: env_count("DRIFTLESS_BENCH_REPS", 3)?,
            sources: match env::var("DRIFTLESS_BENCH_FLEET_SOURCES") {
                Ok(text) => text
                    .split(',')
                    .map(|name| match name.trim() {
                        "git" => Ok(FleetSource::Git),
                        "static" => Ok(FleetSource::Static),
                        other => anyhow::bail!(
                            "DRIFTLESS_BENCH_FLEET_SOURCES={text:?}: {other:?} is neither git nor static"
                        ),
                    })
                    .collect::<Result<_>>()?,
                Err(_) => vec![FleetSource::Git, FleetSource::Static],
            },
        };
        ensure!(
            settings.sizes.iter().all(|&n| n > 0)
                && settings.max_in_flight > 0
                && !settings.poll.is_zero()
                && !settings.idle.is_zero()
                && settings.lease >= Duration::from_secs(2)
                && settings.reps > 0
                && !settings.sources.is_empty(),
            "sizes, max_in_flight, the poll interval, the idle window and reps must be positive"
        );
        Ok(settings)
    }

    fn options(&self, nodes: usize, max_in_flight: u32, source: FleetSource) -> FleetOptions {
        let mut options = FleetOptions::new(nodes, max_in_flight);
        options.source = source;
        options.poll_interval = self.poll;
        options.boot_delay = self.boot_delay;
        options.lease_ttl = self.lease;
        options
    }

    fn reproduce(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(ToString::to_string).collect();
        format!(
            "DRIFTLESS_BENCH_FLEET_SIZES={} DRIFTLESS_BENCH_FLEET_MAX_IN_FLIGHT={} \
             DRIFTLESS_BENCH_FLEET_POLL_SECS={} DRIFTLESS_BENCH_FLEET_IDLE_SECS={} \
             DRIFTLESS_BENCH_FLEET_BOOT_MS={} DRIFTLESS_BENCH_FLEET_LEASE_SECS={} \
             DRIFTLESS_BENCH_REPS={} DRIFTLESS_BENCH_FLEET_SOURCES={} cargo bench --bench fleet",
            sizes.join(","),
            self.max_in_flight,
            self.poll.as_secs(),
            self.idle.as_secs(),
            self.boot_delay.as_millis(),
            self.lease.as_secs(),
            self.reps,
            self.sources
                .iter()
                .map(|s| source_name(*s))
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// The figures of one fleet size.
struct Row {
    nodes: usize,
    boot: Duration,
    roll: Duration,
    max_away: usize,
    median_replacement: Duration,
    slowest_replacement: Duration,
    /// From the channel commit to the first ask seen.
    first_ask: Duration,
    /// Median of the hand-offs: from a replacement seen healthy (its slot
    /// given back) to the next ask seen (the slot taken by a waiting node).
    handoff: Duration,
    idle: Idle,
    /// What etcd served during the roll.
    roll_etcd: EtcdLoad,
    /// From the first wave's last replacement healthy to the roll's end:
    /// the other waves, after the storm of every node taking in the
    /// channel move at once.
    after_first_wave: Duration,
}

/// What the idle fleet cost.
struct Idle {
    window: Duration,
    requests: usize,
    down: u64,
    up: u64,
    /// Sum of the watchers' VmRSS.
    rss: u64,
    /// Sum of the watchers' Pss.
    pss: u64,
    watchers: usize,
    /// The watchers' CPU time over the window.
    cpu: Duration,
    /// What etcd served over the window.
    etcd: EtcdLoad,
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    println!(
        "# driftless benchmark: rolling a simulated fleet (nodes on one machine, real git server and etcd)"
    );
    println!(
        "# reproduce (from the workspace root): {}",
        settings.reproduce()
    );
    println!(
        "# {} CPUs online; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    for &source in &settings.sources {
        let name = source_name(source);
        let (whole, one) = one_node_roll(&settings, source)?;
        println!(
            "# {name}: one-node fleet, median of {}: R (ask to the replacement healthy) {:.2} s; \
             the whole roll (channel commit to the new node watching) {:.2} s",
            settings.reps,
            one.as_secs_f64(),
            whole.as_secs_f64(),
        );
        let mut rows = Vec::new();
        for &nodes in &settings.sizes {
            let row = measure(&settings, nodes, source)?;
            println!(
                "# {name}, N={nodes}: booted in {:.1} s, rolled in {:.1} s, replacement (ask to healthy) median {:.2} s, slowest {:.2} s; \
                 first ask {:.2} s after the channel commit; hand-off (a replacement healthy to the next ask, as the autoscaler sees them) median {:.3} s",
                row.boot.as_secs_f64(),
                row.roll.as_secs_f64(),
                row.median_replacement.as_secs_f64(),
                row.slowest_replacement.as_secs_f64(),
                row.first_ask.as_secs_f64(),
                row.handoff.as_secs_f64(),
            );
            let waves = nodes.div_ceil(settings.max_in_flight as usize);
            if waves > 1 {
                let ideal = one.as_secs_f64() * (waves - 1) as f64;
                println!(
                    "# {name}, N={nodes}: after the first wave, {} waves in {:.1} s against an ideal of {:.1} s: {:.2}",
                    waves - 1,
                    row.after_first_wave.as_secs_f64(),
                    ideal,
                    row.after_first_wave.as_secs_f64() / ideal,
                );
            }
            rows.push(row);
        }
        println!();
        print_table(&settings, source, one, &rows);
        println!();
    }
    Ok(())
}

fn source_name(source: FleetSource) -> &'static str {
    match source {
        FleetSource::Git => "git",
        FleetSource::Static => "static",
    }
}

/// Rolls a one-node fleet back and forth between v2 and v1 (a rollback is
/// a new signed commit naming the older tag): the medians of the whole
/// roll and of R, the replacement (ask to healthy).
fn one_node_roll(settings: &Settings, source: FleetSource) -> Result<(Duration, Duration)> {
    let mut fleet = Fleet::start(settings.options(1, 1, source));
    let mut rolls = Vec::new();
    for rep in 0..settings.reps {
        let tag = if rep % 2 == 0 { "v2" } else { "v1" };
        fleet.promote(tag, "");
        rolls.push(fleet.run_until(WAVE_LIMIT, "a one-node roll", |f| f.converged(tag)));
    }
    let replacements: Vec<Duration> = fleet.stats.healthy.iter().map(|(_, _, d)| *d).collect();
    ensure!(
        replacements.len() == settings.reps,
        "{} replacements in {} rolls",
        replacements.len(),
        settings.reps
    );
    Ok((median(&rolls), median(&replacements)))
}

/// Boots a fleet of `nodes`, measures it idle, then rolls it to v2.
fn measure(settings: &Settings, nodes: usize, source: FleetSource) -> Result<Row> {
    let started = Instant::now();
    let mut fleet = Fleet::start(settings.options(nodes, settings.max_in_flight, source));
    let boot = started.elapsed();
    fleet.run_for(settings.poll * SETTLE_POLLS);
    let idle = idle(settings, &mut fleet)?;

    fleet.stats = Stats::default();
    let etcd_before = fleet.etcd.load()?;
    let promoted = Instant::now();
    fleet.promote("v2", "");
    let waves = u32::try_from(nodes.div_ceil(settings.max_in_flight as usize))?;
    let roll = fleet.run_until(WAVE_LIMIT * waves, "every node on v2", |f| {
        f.converged("v2")
    });
    let roll_etcd = fleet.etcd.load()?.since(etcd_before);
    let replacements: Vec<Duration> = fleet.stats.healthy.iter().map(|(_, _, d)| *d).collect();
    ensure!(
        replacements.len() == nodes,
        "{} replacements for {nodes} nodes",
        replacements.len()
    );
    // The k-th replacement healthy frees the slot of the (M + k)-th ask.
    let mut asks: Vec<Instant> = fleet.stats.asks.iter().map(|(_, at)| *at).collect();
    asks.sort();
    let mut freed: Vec<Instant> = fleet.stats.healthy.iter().map(|(_, at, _)| *at).collect();
    freed.sort();
    let first_wave_done = freed
        .get(
            (settings.max_in_flight as usize)
                .min(freed.len())
                .saturating_sub(1),
        )
        .copied()
        .unwrap_or(promoted);
    let after_first_wave = (promoted + roll).saturating_duration_since(first_wave_done);
    let handoffs: Vec<Duration> = asks
        .iter()
        .skip(settings.max_in_flight as usize)
        .zip(&freed)
        .map(|(ask, freed)| ask.saturating_duration_since(*freed))
        .collect();
    if env::var_os("DRIFTLESS_BENCH_FLEET_TRACE").is_some() {
        let ms = |d: &Duration| d.as_millis().to_string();
        let mut healthy = fleet.stats.healthy.clone();
        healthy.sort_by_key(|(_, at, _)| *at);
        // The same moments on the wall clock, for a profile of the roll.
        let wall = |at: Instant| {
            (SystemTime::now() - at.elapsed())
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        eprintln!(
            "# on the wall clock (s since the epoch): channel commit {:.3}, first wave done {:.3}, roll done {:.3}",
            wall(promoted),
            wall(first_wave_done),
            wall(promoted + roll)
        );
        eprintln!(
            "# hand-offs, ms, in order: {}",
            handoffs.iter().map(ms).collect::<Vec<_>>().join(" ")
        );
        eprintln!(
            "# replacements (ask to healthy), ms, in order: {}",
            healthy
                .iter()
                .map(|(_, _, d)| ms(d))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(Row {
        nodes,
        boot,
        roll,
        first_ask: asks
            .first()
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(promoted)),
        handoff: median(&handoffs),
        max_away: fleet.stats.max_away,
        median_replacement: median(&replacements),
        slowest_replacement: replacements.iter().copied().max().unwrap_or_default(),
        idle,
        roll_etcd,
        after_first_wave,
    })
}

/// The git server's traffic and the watchers' CPU over the idle window,
/// and their memory at its end.
fn idle(settings: &Settings, fleet: &mut Fleet) -> Result<Idle> {
    let pids: Vec<String> = fleet.watcher_pids().iter().map(u32::to_string).collect();
    let ticks = |pids: &[String]| -> Result<u64> {
        pids.iter().map(|pid| cpu_ticks(pid)).sum::<Result<u64>>()
    };
    let mark = fleet.http.access_log()?.len();
    let cpu_before = ticks(&pids)?;
    let etcd_before = fleet.etcd.load()?;
    let started = Instant::now();
    fleet.run_for(settings.idle);
    let window = started.elapsed();
    let cpu_after = ticks(&pids)?;
    let etcd = fleet.etcd.load()?.since(etcd_before);
    let entries = fleet.http.access_log()?;
    let quiet = &entries[mark..];
    let traffic = servers::Traffic::of(quiet);
    let sum = |file: &str, key: &str| -> Result<u64> {
        pids.iter().map(|pid| proc_kib(pid, file, key)).sum()
    };
    let rss = sum("status", "VmRSS:")?;
    let pss = sum("smaps_rollup", "Pss:")?;
    let per_second = sysconf(SysconfVar::CLK_TCK)?.context("no CLK_TCK")?;
    Ok(Idle {
        window,
        requests: traffic.requests,
        down: traffic.bytes_sent,
        up: traffic.request_bytes,
        rss,
        pss,
        watchers: pids.len(),
        etcd,
        cpu: Duration::from_secs_f64(
            (cpu_after - cpu_before) as f64 / f64::from(u32::try_from(per_second)?),
        ),
    })
}

fn print_table(settings: &Settings, source: FleetSource, one: Duration, rows: &[Row]) {
    let m = settings.max_in_flight;
    println!(
        "# source {}, max_in_flight {m}, lease_ttl {} s, poll_interval {} s, boot delay {} ms, idle window {} s; \
         R = {:.2} s; idle figures per node per minute at this poll interval",
        source_name(source),
        settings.lease.as_secs(),
        settings.poll.as_secs(),
        settings.boot_delay.as_millis(),
        settings.idle.as_secs(),
        one.as_secs_f64()
    );
    println!(
        "| N | roll | ideal ceil(N/{m})×R | roll / ideal | median replacement | max away | idle requests /node/min | idle bytes down / up /node/min | watchers' CPU /node/min | watchers' VmRSS: total, each | watchers' Pss total | etcd calls, CPU: idle /node/min | etcd calls, CPU: roll /replaced node |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let waves = row.nodes.div_ceil(m as usize);
        let ideal = one.as_secs_f64() * waves as f64;
        let node_minutes = row.nodes as f64 * row.idle.window.as_secs_f64() / 60.0;
        let per = |x: f64| x / node_minutes;
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} | {:.2} s | {} | {:.1} | {} / {} | {:.1} ms | {}, {} | {} | {:.2}, {:.2} ms | {:.1}, {:.1} ms |",
            row.nodes,
            row.roll.as_secs_f64(),
            ideal,
            row.roll.as_secs_f64() / ideal,
            row.median_replacement.as_secs_f64(),
            row.max_away,
            per(row.idle.requests as f64),
            bytes(per(row.idle.down as f64) as u64),
            bytes(per(row.idle.up as f64) as u64),
            per(row.idle.cpu.as_secs_f64() * 1000.0),
            bytes(row.idle.rss),
            bytes(row.idle.rss / row.idle.watchers.max(1) as u64),
            bytes(row.idle.pss),
            per(row.idle.etcd.calls as f64),
            per(row.idle.etcd.cpu.as_secs_f64() * 1000.0),
            row.roll_etcd.calls as f64 / row.nodes as f64,
            row.roll_etcd.cpu.as_secs_f64() * 1000.0 / row.nodes as f64,
        );
    }
}
