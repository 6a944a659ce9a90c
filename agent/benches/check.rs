//! Benchmark: `driftless check` on a 300-file, 10 MiB release against
//! `sha256sum -c` over the same files, then the drift detector's idle cost.
//!
//! Part 1, one full drift check, spawned and waited for, interleaved
//! round-robin (the order rotates each round):
//!
//! * `driftless check --root R`: the built binary; it reads the manifest in
//!   `state.json`, then stats and hashes (SHA-256) every managed path;
//! * `sha256sum -c --quiet LIST`: coreutils over a checksum list of the same
//!   300 files (paths relative to the root, run with the root as its
//!   working directory): the tool an operator would otherwise script;
//! * `driftless --version`: the process floor (start, parse, exit).
//!
//! Wall time is measured around spawn + wait; CPU is the child's user +
//! system time, from `getrusage(RUSAGE_CHILDREN)` deltas (microseconds, and
//! grandchildren included). Warm page cache only: the fixture was just
//! written and every contender reads every file before anything is timed;
//! a cold-cache check (first boot, or after `drop_caches`) is not measured.
//!
//! Part 2, the detector at rest: `driftless watch --root R` (channel polled
//! once at start, `poll_interval: 1h`; default 5 min rescan) is left alone
//! for a while after it settled; its CPU ticks (`/proc/PID/stat`), on-CPU
//! time and run count per thread (`/proc/PID/task/*/schedstat`) and RSS
//! (`/proc/PID/status`) are read before and after. Then one managed file is
//! changed (the root is not locked) and the time until the drift shows in
//! `var/lib/driftless/watch.json` is measured; then SIGTERM.
//!
//! The fixture (an ed25519 key, a release repository with 300 files of
//! seeded pseudo-random bytes and varied sizes, a `driftless.yaml` listing
//! each, a signed tag, a signed `channel` branch, a node root) is made at
//! run time with the real `git` and `ssh-keygen` and applied once with
//! `driftless apply`.
//!
//! Run it from the workspace root with `cargo bench --bench check`.
//! Environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_REPS` | 30 | timed runs of each contender |
//! | `DRIFTLESS_BENCH_WARMUP` | 3 | untimed rounds first |
//! | `DRIFTLESS_BENCH_IDLE_SECS` | 10 | length of the detector's idle window |

#[path = "common/mod.rs"]
mod common;

#[path = "common/node.rs"]
mod node;
#[path = "../../tests/support/servers.rs"]
mod servers;

use common::{SplitMix64, Watcher, bytes, cpu_ticks, env_count, fmt, median, percentile};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use nix::unistd::{SysconfVar, sysconf};
use node::{ReleaseKey, TOOL_TIMEOUT, agent_yaml, tool, write_node_root};
use servers::run_bounded;

/// Managed files in the release.
const FILES: usize = 300;
/// Their total size: 10 MiB.
const TOTAL_BYTES: u64 = 10 * 1024 * 1024;
/// Directories the files are spread over.
const DIRECTORIES: usize = 12;
/// Seed of the file sizes and contents.
const SEED: u64 = 0x6472_6966_746c_6573;
/// The release tag.
const TAG: &str = "v1";
/// The node's accounts: root, and nobody for unowned files.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The node's groups.
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
/// How long the watcher may take to poll once and evaluate the channel.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Settling time after that, before the idle window.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a drift may take to show before it counts as missed.
const DRIFT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the watcher may take to stop on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The goal for one check.
const CHECK_GOAL: Duration = Duration::from_millis(50);
/// The goal for noticing a drift.
const DRIFT_GOAL: Duration = Duration::from_secs(1);

fn main() -> Result<()> {
    let reps = env_count("DRIFTLESS_BENCH_REPS", 30)?;
    let warmup = env_count("DRIFTLESS_BENCH_WARMUP", 3)?;
    let idle_secs = env_count("DRIFTLESS_BENCH_IDLE_SECS", 10)?;
    ensure!(
        reps > 0 && idle_secs > 0,
        "repetitions and the idle window must be positive"
    );

    println!(
        "# driftless benchmark: drift check of a 300-file / 10 MiB release, detector idle cost"
    );
    println!(
        "# reproduce (from the workspace root): DRIFTLESS_BENCH_REPS={reps} \
         DRIFTLESS_BENCH_WARMUP={warmup} DRIFTLESS_BENCH_IDLE_SECS={idle_secs} \
         cargo bench --bench check"
    );

    let started = Instant::now();
    let fixture = Fixture::create().context("building the fixture")?;
    println!(
        "# fixture: {} files, {} bytes ({}), sizes {} to {} (median {}), in {} directories; \
         made and applied in {:.1} s",
        fixture.sizes.len(),
        fixture.sizes.iter().sum::<u64>(),
        bytes(fixture.sizes.iter().sum()),
        bytes(fixture.sizes.iter().copied().min().unwrap_or(0)),
        bytes(fixture.sizes.iter().copied().max().unwrap_or(0)),
        bytes(median_u64(&fixture.sizes)),
        DIRECTORIES,
        started.elapsed().as_secs_f64()
    );
    println!("# {}", fixture.tool_version("git", &["--version"]));
    println!("# {}", fixture.tool_version("sha256sum", &["--version"]));
    println!(
        "# {} CPUs online",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    fixture
        .check_all()
        .context("checking the contenders before timing")?;
    let samples = fixture.measure(reps, warmup)?;
    print_check_table(&samples, reps, warmup);

    println!();
    fixture.detector(Duration::from_secs(idle_secs as u64))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

/// Everything the contenders run against, in one temporary directory.
struct Fixture {
    /// Kept alive for the benchmark's duration; removed on drop.
    dir: tempfile::TempDir,
    /// The node root.
    root: PathBuf,
    /// The checksum list for `sha256sum -c`.
    list: PathBuf,
    /// The managed files' node paths, in manifest order.
    paths: Vec<String>,
    /// Their sizes.
    sizes: Vec<u64>,
}

impl Fixture {
    /// Makes the key, the release (files, spec, signed tag, signed channel
    /// branch), the node root, the checksum list, and applies the release.
    fn create() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-bench-check-")
            .tempdir()
            .context("creating a temporary directory")?;
        let base = dir.path();
        let home = base.join("home");
        let release = base.join("release");
        let root = base.join("root");
        for d in [&home, &release.join("files")] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }

        // The release key.
        let key = ReleaseKey::create(base, &home)?;

        // The release: FILES files of seeded random bytes, varied sizes.
        let sizes = file_sizes(FILES, TOTAL_BYTES, SEED);
        let mut rng = SplitMix64(SEED ^ 0xff);
        let mut spec = String::from("directories:\n  - { path: /opt/bench, mode: \"0755\" }\n");
        for d in 0..DIRECTORIES {
            spec.push_str(&format!(
                "  - {{ path: /opt/bench/d{d:02}, mode: \"0755\" }}\n"
            ));
        }
        spec.push_str("files:\n");
        let mut paths = Vec::with_capacity(FILES);
        let mut list = String::new();
        for (i, &size) in sizes.iter().enumerate() {
            let content = rng.bytes(usize::try_from(size).context("file size")?);
            let name = format!("f{i:03}.bin");
            fs::write(release.join("files").join(&name), &content)
                .with_context(|| format!("writing {name}"))?;
            let node_path = format!("/opt/bench/d{:02}/{name}", i % DIRECTORIES);
            spec.push_str(&format!(
                "  - {{ path: {node_path}, source: files/{name}, mode: \"0644\" }}\n"
            ));
            let digest = ring::digest::digest(&ring::digest::SHA256, &content);
            list.push_str(&format!(
                "{}  {}\n",
                hex(digest.as_ref()),
                node_path.trim_start_matches('/')
            ));
            paths.push(node_path);
        }
        fs::write(release.join("driftless.yaml"), spec).context("writing driftless.yaml")?;
        let list_path = base.join("sha256sums");
        fs::write(&list_path, list).context("writing the checksum list")?;

        key.release(&release, TAG)?;

        // The channel: a signed commit naming the tag, on `channel`.
        key.channel(&base.join("channel"), TAG, &release)?;

        // The node root.
        let release_str = release
            .to_str()
            .context("the temporary path is not UTF-8")?;
        let agent = agent_yaml(&format!("file://{release_str}"), TAG, "1h")?;
        write_node_root(&root, PASSWD, GROUP, &key.allowed, &agent)?;

        let fixture = Self {
            dir,
            root,
            list: list_path,
            paths,
            sizes,
        };
        let mut apply = fixture.driftless(&["apply"]);
        tool(&mut apply, "driftless apply")?;
        Ok(fixture)
    }

    /// HOME of every command.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A command with a cleared environment: PATH, HOME, C locale, UTC.
    fn command(&self, program: &str) -> Command {
        node::command(&self.home(), program)
    }

    /// `driftless ARGS… --root ROOT`, logging warnings only.
    fn driftless(&self, args: &[&str]) -> Command {
        node::driftless(&self.home(), &self.root, args)
    }

    /// `sha256sum -c --quiet LIST` in the root.
    fn sha256sum(&self) -> Command {
        let mut cmd = self.command("sha256sum");
        cmd.args(["-c", "--quiet"])
            .arg(&self.list)
            .current_dir(&self.root);
        cmd
    }

    /// The first line a tool prints about its version.
    fn tool_version(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = self.command(program);
        cmd.args(args);
        match run_bounded(&mut cmd, TOOL_TIMEOUT) {
            Ok(done) if done.success() => done.stdout.lines().next().unwrap_or("").to_owned(),
            _ => format!("{program}: version unknown"),
        }
    }

    /// Every contender must succeed, and say the node is clean.
    fn check_all(&self) -> Result<()> {
        let done = tool(&mut self.driftless(&["check"]), "driftless check")?;
        ensure!(
            done.stdout.trim().is_empty(),
            "driftless check reports drift on a fresh node:\n{}",
            done.stdout
        );
        let done = tool(&mut self.sha256sum(), "sha256sum -c")?;
        ensure!(
            done.stdout.trim().is_empty(),
            "sha256sum -c --quiet printed:\n{}",
            done.stdout
        );
        tool(&mut self.driftless(&["--version"]), "driftless --version")?;
        Ok(())
    }

    /// Times the contenders, interleaved, rotating the order each round.
    fn measure(&self, reps: usize, warmup: usize) -> Result<Vec<Samples>> {
        let mut contenders = [
            ("driftless check", self.driftless(&["check"])),
            ("sha256sum -c --quiet", self.sha256sum()),
            ("floor: driftless --version", self.driftless(&["--version"])),
        ];
        let mut samples: Vec<Samples> = contenders
            .iter()
            .map(|(name, _)| Samples::new(name, reps))
            .collect();
        let n = contenders.len();
        for round in 0..warmup + reps {
            for slot in 0..n {
                let i = (round + slot) % n;
                let (name, cmd) = &mut contenders[i];
                let (wall, cpu) = time_child(cmd).with_context(|| format!("timing {name}"))?;
                if round >= warmup {
                    samples[i].wall.push(wall);
                    samples[i].cpu.push(cpu);
                }
            }
        }
        Ok(samples)
    }

    /// Part 2: the watcher at rest, then one drift.
    fn detector(&self, idle: Duration) -> Result<()> {
        let ticks_per_sec = sysconf(SysconfVar::CLK_TCK)
            .context("sysconf(CLK_TCK)")?
            .filter(|&t| t > 0)
            .context("no clock tick rate")?;
        let log = self.dir.path().join("watch.log");
        let mut watcher = Watcher::spawn(self.driftless(&["watch"]), log, STOP_TIMEOUT)?;
        let pid = watcher.id();
        let watch_json = self.root.join("var/lib/driftless/watch.json");

        // Settled: polled once, channel evaluated (it names our release).
        let start = Instant::now();
        loop {
            watcher.ensure_running()?;
            if let Some(record) = read_json(&watch_json) {
                let channel = &record["channel"];
                if record["last_poll"].is_string() && channel["release_commit"].is_string() {
                    ensure!(
                        channel["release"] == TAG && record["replacement"].is_null(),
                        "unexpected watcher record: {record}"
                    );
                    break;
                }
                if record["last_poll_error"].is_string() || record["refusal"].is_object() {
                    bail!(
                        "the watcher's first poll failed: {record}\n{}",
                        watcher.log_text()
                    );
                }
            }
            ensure!(
                start.elapsed() < START_TIMEOUT,
                "the watcher did not poll within {START_TIMEOUT:?}:\n{}",
                watcher.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let ready = start.elapsed();
        thread::sleep(SETTLE);

        let before = ProcSample::read(pid)?;
        thread::sleep(idle);
        let after = ProcSample::read(pid)?;
        watcher.ensure_running()?;

        let ticks = after.ticks.saturating_sub(before.ticks);
        let (on_cpu, runs, kept, exited, born) = before.thread_delta(&after);
        println!(
            "# detector idle: `driftless watch --root R` (channel polled once at start, \
             poll_interval 1h; drift.rescan_interval 5m), {} managed paths watched",
            self.paths.len() + DIRECTORIES + 1
        );
        println!(
            "# first poll and channel evaluation done after {:.2} s, then {} s to settle",
            ready.as_secs_f64(),
            SETTLE.as_secs()
        );
        println!("{:<26} {:.1} s", "idle window", idle.as_secs_f64());
        println!(
            "{:<26} {} ticks ({} ms; 1 tick = {} ms)   goal: 0",
            "CPU (utime+stime)",
            ticks,
            ticks * 1000 / ticks_per_sec.unsigned_abs(),
            1000 / ticks_per_sec
        );
        println!(
            "{:<26} {} over {} threads alive throughout (schedstat)",
            "on-CPU time",
            fmt(on_cpu),
            kept
        );
        println!(
            "{:<26} {} (times a thread was scheduled in)",
            "wakeups", runs
        );
        println!(
            "{:<26} {} -> {} ({} exited, {} started during the window)",
            "threads",
            before.threads.len(),
            after.threads.len(),
            exited,
            born
        );
        println!(
            "{:<26} {} at the start, {} at the end (VmHWM {}; at the end RssAnon {}, Pss {})",
            "resident memory (VmRSS)",
            bytes(before.rss),
            bytes(after.rss),
            bytes(after.hwm),
            bytes(after.anon),
            bytes(after.pss)
        );

        // One drift: append a byte to a managed file.
        let victim = &self.paths[self.paths.len() / 2];
        let host = self.root.join(victim.trim_start_matches('/'));
        let written = Instant::now();
        {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&host)
                .with_context(|| format!("opening {}", host.display()))?;
            file.write_all(b"!")
                .with_context(|| format!("changing {}", host.display()))?;
        }
        let noticed = loop {
            if let Some(record) = read_json(&watch_json) {
                let seen = record["drift"].as_array().is_some_and(|lines| {
                    lines.iter().any(|d| {
                        d["line"]
                            .as_str()
                            .is_some_and(|l| l.starts_with(&format!("{victim}: content changed")))
                    })
                });
                if seen {
                    break Some(written.elapsed());
                }
            }
            if written.elapsed() > DRIFT_TIMEOUT {
                break None;
            }
            thread::sleep(Duration::from_millis(2));
        };
        match noticed {
            Some(d) => println!(
                "{:<26} {} after the write (in watch.json)   goal: < {} s",
                "drift noticed",
                fmt(d),
                DRIFT_GOAL.as_secs()
            ),
            None => println!(
                "{:<26} NOT within {} s (watch.json never listed {victim})",
                "drift noticed",
                DRIFT_TIMEOUT.as_secs()
            ),
        }

        let (status, took) = watcher.terminate()?;
        println!("{:<26} SIGTERM: {status} after {}", "stopped", fmt(took));
        println!();
        let clean = ticks == 0;
        println!(
            "# verdict: idle CPU {} ({} ticks in {:.0} s); drift {}",
            if clean {
                "none measurable"
            } else {
                "MEASURABLE"
            },
            ticks,
            idle.as_secs_f64(),
            match noticed {
                Some(d) if d < DRIFT_GOAL => format!("seen in {} (< 1 s)", fmt(d)),
                Some(d) => format!("seen in {} (NOT < 1 s)", fmt(d)),
                None => "MISSED".to_owned(),
            }
        );
        ensure!(
            status.success(),
            "the watcher did not exit cleanly:\n{}",
            watcher.log_text()
        );
        Ok(())
    }
}

/// What `/proc` says about a process at one moment.
struct ProcSample {
    /// utime + stime of the whole process, in clock ticks.
    ticks: u64,
    /// Per thread id: on-CPU nanoseconds and times scheduled in.
    threads: Vec<(u32, u64, u64)>,
    /// VmRSS, bytes.
    rss: u64,
    /// VmHWM, bytes.
    hwm: u64,
    /// RssAnon, bytes.
    anon: u64,
    /// Pss (`smaps_rollup`: shared pages divided among their users), bytes.
    pss: u64,
}

impl ProcSample {
    fn read(pid: u32) -> Result<Self> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let ticks = cpu_ticks(&pid.to_string())?;
        let mut threads = Vec::new();
        for entry in fs::read_dir(proc.join("task")).context("listing /proc/PID/task")? {
            let entry = entry.context("listing /proc/PID/task")?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A thread may exit between the listing and the read.
            let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let numbers: Vec<u64> = text
                .split_whitespace()
                .map(|s| s.parse().context("schedstat"))
                .collect::<Result<_>>()?;
            let [ns, _, runs] = numbers[..] else {
                bail!("unexpected schedstat {text:?}");
            };
            threads.push((tid, ns, runs));
        }
        let status = fs::read_to_string(proc.join("status")).context("reading /proc/PID/status")?;
        let rollup = fs::read_to_string(proc.join("smaps_rollup"))
            .context("reading /proc/PID/smaps_rollup")?;
        let kib = |text: &str, key: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
                .with_context(|| format!("no {key} in /proc/PID/"))
        };
        Ok(Self {
            ticks,
            threads,
            rss: kib(&status, "VmRSS:")?,
            hwm: kib(&status, "VmHWM:")?,
            anon: kib(&status, "RssAnon:")?,
            pss: kib(&rollup, "Pss:")?,
        })
    }

    /// On-CPU time and runs between `self` and `later` of the threads alive
    /// at both; and how many threads were kept, exited and started.
    fn thread_delta(&self, later: &Self) -> (Duration, u64, usize, usize, usize) {
        let mut ns = 0;
        let mut runs = 0;
        let mut kept = 0;
        for (tid, ns0, runs0) in &self.threads {
            if let Some((_, ns1, runs1)) = later.threads.iter().find(|(t, _, _)| t == tid) {
                ns += ns1.saturating_sub(*ns0);
                runs += runs1.saturating_sub(*runs0);
                kept += 1;
            }
        }
        let exited = self.threads.len() - kept;
        let born = later.threads.len() - kept;
        (Duration::from_nanos(ns), runs, kept, exited, born)
    }
}

/// A JSON file, if it exists and parses (the watcher replaces it atomically).
fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

// ---------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------

/// One contender's samples.
struct Samples {
    name: &'static str,
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn new(name: &'static str, reps: usize) -> Self {
        Self {
            name,
            wall: Vec::with_capacity(reps),
            cpu: Vec::with_capacity(reps),
        }
    }
}

/// Spawns `cmd`, waits, and returns its wall time and CPU time (user +
/// system, from `RUSAGE_CHILDREN` deltas); exit 0 required.
fn time_child(cmd: &mut Command) -> Result<(Duration, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let cpu_before = children_cpu()?;
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let wall = start.elapsed();
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    ensure!(
        status.success(),
        "{:?} exited with {status}",
        cmd.get_program()
    );
    Ok((wall, cpu))
}

/// User + system time of every child this process has waited for.
///
/// nix's safe `getrusage` needs its `resource` feature, which the crate
/// does not enable; this calls the C function through nix's libc re-export.
#[allow(unsafe_code)]
fn children_cpu() -> Result<Duration> {
    use nix::libc;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a zeroed `struct rusage` we own (all-integer
    // fields, so zero is a valid value); getrusage writes only into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: zero-initialised above and filled by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(t: nix::libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

fn median_u64(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

fn print_check_table(samples: &[Samples], reps: usize, warmup: usize) {
    println!(
        "# {reps} timed runs of each contender after {warmup} warm-up rounds, interleaved \
         round-robin; warm page cache"
    );
    println!("# wall = spawn to exit; CPU = the child's user+system (getrusage RUSAGE_CHILDREN)");
    println!(
        "{:<28} | {:>10} {:>10} | {:>10} {:>10} | {:>8}",
        "contender", "wall", "p90", "CPU", "p90", "CPU/wall"
    );
    println!("{}", "-".repeat(87));
    for s in samples {
        let (wall, cpu) = (median(&s.wall), median(&s.cpu));
        println!(
            "{:<28} | {:>10} {:>10} | {:>10} {:>10} | {:>8.2}",
            s.name,
            fmt(wall),
            fmt(percentile(&s.wall, 90)),
            fmt(cpu),
            fmt(percentile(&s.cpu, 90)),
            cpu.as_secs_f64() / wall.as_secs_f64()
        );
    }
    println!();
    println!("# medians; p90 = nearest-rank 90th percentile");
    if let [check, sha, ..] = samples {
        let (cw, sw) = (median(&check.wall), median(&sha.wall));
        let (cc, sc) = (median(&check.cpu), median(&sha.cpu));
        println!(
            "# sha256sum / driftless check: wall {:.2}x, CPU {:.2}x",
            sw.as_secs_f64() / cw.as_secs_f64(),
            sc.as_secs_f64() / cc.as_secs_f64().max(1e-9)
        );
        println!(
            "# verdict: faster than sha256sum: {}; under {} ms: {} (median {}, p90 {})",
            if cw < sw { "yes" } else { "NO" },
            CHECK_GOAL.as_millis(),
            if percentile(&check.wall, 90) < CHECK_GOAL {
                "yes"
            } else if cw < CHECK_GOAL {
                "median only"
            } else {
                "NO"
            },
            fmt(cw),
            fmt(percentile(&check.wall, 90))
        );
    }
}

// ---------------------------------------------------------------------------
// Fixture data
// ---------------------------------------------------------------------------

/// `count` sizes, log-uniformly spread (small configs to large blobs), that
/// add up to exactly `total`.
fn file_sizes(count: usize, total: u64, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix64(seed);
    let (low, high) = (64f64.ln(), (1024.0 * 1024.0f64).ln());
    let weights: Vec<f64> = (0..count)
        .map(|_| (low + rng.unit() * (high - low)).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| ((w / sum * total as f64) as u64).max(1))
        .collect();
    let assigned: u64 = sizes.iter().sum();
    if let Some(largest) = sizes.iter_mut().max() {
        *largest = (*largest + total).saturating_sub(assigned);
    }
    sizes
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
