//! Benchmark: one channel poll (which commit `refs/heads/channel` names) on
//! a release repository with 2,000 and with 20,000 tags, served over plain
//! HTTP by nginx + `git-http-backend` on 127.0.0.1; then the poller's
//! resident memory over 10,000 polls.
//!
//! Part 1, per poll, contenders interleaved round-robin (the order rotates
//! each round):
//!
//! * `library, new conn.`: `driftless::source::poll::RefPoller::ls_ref` in this
//!   process on one Tokio current-thread runtime, with a poller built
//!   (untimed) for each poll, so every poll opens its own connection: what
//!   a node polling once a minute does (its idle connection is dropped
//!   after 30 s);
//! * `library, kept-alive`: the same with one poller for all polls, so the
//!   connection is reused (polls closer together than 30 s);
//! * `git ls-remote URL refs/heads/channel`: git (its default protocol, v2),
//!   spawned and waited for.
//!
//! Wall time is around one poll (`block_on(ls_ref)`, or spawn + wait). CPU
//! is user + system time from `getrusage`: `RUSAGE_SELF` deltas around each
//! library poll (this process; the servers are other processes), and
//! `RUSAGE_CHILDREN` deltas around each git run (git and the
//! `git-remote-http` it runs). Bytes per poll are what nginx logs for the
//! requests of a poll (`$bytes_sent` down: status line, headers and body;
//! `$request_length` up: request line, headers and body), from a separate
//! untimed pass; TCP/IP overhead is not counted.
//!
//! Part 2, memory: 10,000 polls in this process against the 20,000-tag
//! repository with one poller, as fast as they go (loopback only), sampling
//! this process's `VmRSS` (`/proc/self/status`) along the way. The poller
//! shares the process with the benchmark's own allocations (fixture paths,
//! the timing samples of part 1), so this is an upper bound on the
//! poller's share. Then the honest figure: `driftless watch` itself, with
//! `channel.poll_interval` 10 ms against the same repository, until nginx
//! has logged 10,000 of its polls, sampling its `VmRSS` and CPU ticks from
//! `/proc/PID/`; then SIGTERM. As on a node, its first poll evaluates the
//! channel in a child process (`driftless evaluate-channel`), and a quiet
//! poll rewrites `watch.json` only every 10 minutes.
//!
//! The fixture (an ed25519 key, a release with a signed tag, a signed
//! `channel` branch, bare repositories with 2,000 and 20,000 extra annotated
//! tags written with `git fast-import` and packed, a node root) is made at
//! run time with the real `git` and `ssh-keygen`.
//!
//! Run it from the workspace root with `cargo bench --bench poll`.
//! Environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_REPS` | 100 | timed polls of each contender per tag count |
//! | `DRIFTLESS_BENCH_WARMUP` | 5 | untimed rounds first |
//! | `DRIFTLESS_BENCH_MEM_POLLS` | 10000 | in-process polls of part 2 |
//! | `DRIFTLESS_BENCH_WATCH_POLLS` | 10000 | `driftless watch` polls of part 2 (0 skips it) |
//! | `DRIFTLESS_BENCH_WATCH_INTERVAL_MS` | 10 | its `channel.poll_interval` |
//! | `DRIFTLESS_BENCH_WATCH_TAGS` | 20000 | the repository it polls (2000 or 20000 tags) |

#[path = "common/mod.rs"]
mod common;

#[path = "common/node.rs"]
mod node;
#[path = "../../tests/support/servers.rs"]
mod servers;

use common::{PRINCIPAL, Watcher, bytes, cpu_ticks, env_count, fmt, median, percentile};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use driftless::source::poll::{PollOptions, Protocol, RefPoller};
use nix::unistd::{SysconfVar, sysconf};
use node::{ReleaseKey, TOOL_TIMEOUT, agent_yaml, tool, write_node_root};
use servers::{AccessEntry, SmartHttp, git_command, isolate_git_env, run_bounded};
use tokio::runtime::Runtime;

/// Extra tags in each repository measured.
const TAG_COUNTS: [usize; 2] = [2_000, 20_000];
/// The ref polled.
const CHANNEL: &str = "refs/heads/channel";
/// The release tag (signed); the channel names it.
const TAG: &str = "v1";
/// A fixed tagger date for the filler tags.
const DATE: &str = "1767323045 +0000";
/// How long nginx may take to log a finished request.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Polls of each contender in the untimed bytes pass.
const BYTES_POLLS: usize = 10;
/// How long the watcher may take to stop on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll counts at which memory is sampled (those up to the total, and the total).
const MEMORY_POINTS: [usize; 5] = [1, 100, 1_000, 5_000, 10_000];
/// The memory goal.
const MEMORY_GOAL: u64 = 10 * 1024 * 1024;

fn main() -> Result<()> {
    let reps = env_count("DRIFTLESS_BENCH_REPS", 100)?;
    let warmup = env_count("DRIFTLESS_BENCH_WARMUP", 5)?;
    let mem_polls = env_count("DRIFTLESS_BENCH_MEM_POLLS", 10_000)?;
    let watch_polls = env_count("DRIFTLESS_BENCH_WATCH_POLLS", 10_000)?;
    let interval_ms = env_count("DRIFTLESS_BENCH_WATCH_INTERVAL_MS", 10)?;
    let watch_tags = env_count(
        "DRIFTLESS_BENCH_WATCH_TAGS",
        TAG_COUNTS[TAG_COUNTS.len() - 1],
    )?;
    ensure!(
        TAG_COUNTS.contains(&watch_tags),
        "DRIFTLESS_BENCH_WATCH_TAGS must be one of {TAG_COUNTS:?}"
    );
    ensure!(
        reps > 0 && mem_polls > 0 && interval_ms > 0,
        "counts and the interval must be positive"
    );

    println!(
        "# driftless benchmark: one channel poll at 2,000 and 20,000 tags; memory over many polls"
    );
    println!(
        "# reproduce (from the workspace root): DRIFTLESS_BENCH_REPS={reps} \
         DRIFTLESS_BENCH_WARMUP={warmup} DRIFTLESS_BENCH_MEM_POLLS={mem_polls} \
         DRIFTLESS_BENCH_WATCH_POLLS={watch_polls} \
         DRIFTLESS_BENCH_WATCH_INTERVAL_MS={interval_ms} \
         DRIFTLESS_BENCH_WATCH_TAGS={watch_tags} cargo bench --bench poll"
    );
    let started = Instant::now();
    let fixture = Fixture::create().context("building the fixture")?;
    let server = SmartHttp::start(&fixture.srv()).context("starting nginx + git-http-backend")?;
    println!(
        "# fixture made in {:.1} s; served over http:// by nginx + fcgiwrap + git-http-backend on 127.0.0.1",
        started.elapsed().as_secs_f64()
    );
    println!("# {}", fixture.git_version());
    println!(
        "# {} CPUs online",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let bench = Bench {
        fixture: &fixture,
        server: &server,
        runtime: &runtime,
    };

    let mut rows = Vec::new();
    for tags in TAG_COUNTS {
        bench
            .check_all(tags)
            .with_context(|| format!("checking the contenders at {tags} tags"))?;
        let traffic = bench.traffic(tags)?;
        let times = bench.measure(tags, reps, warmup)?;
        rows.push((tags, times, traffic));
    }
    print_poll_table(&rows, reps, warmup);

    println!();
    bench.memory_in_process(mem_polls)?;
    if watch_polls > 0 {
        println!();
        bench.memory_of_watcher(watch_polls, interval_ms, watch_tags)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

/// Keys, repositories and a node root, in one temporary directory.
struct Fixture {
    /// Kept alive for the benchmark's duration; removed on drop.
    dir: tempfile::TempDir,
    /// The commit `refs/heads/channel` names.
    channel: String,
    /// The allowed_signers line trusting the release key.
    allowed: String,
}

impl Fixture {
    /// Makes the key, the release (signed tag, signed channel branch) and,
    /// for each of [`TAG_COUNTS`], a bare copy with that many more tags.
    fn create() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-bench-poll-")
            .tempdir()
            .context("creating a temporary directory")?;
        let base = dir.path().to_path_buf();
        let home = base.join("home");
        let work = base.join("work");
        let channel_work = base.join("channel");
        for d in [&home, &work, &channel_work, &base.join("srv")] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }

        let key = ReleaseKey::create(&base, &home)?;
        let allowed = key.allowed.clone();

        // The release: one managed file, a signed tag.
        fs::write(
            work.join("driftless.yaml"),
            "files:\n  - { path: /etc/motd, content: \"release v1\\n\" }\n",
        )
        .context("writing driftless.yaml")?;
        let commit = key.release(&work, TAG)?;

        // The channel: a signed commit naming the tag.
        key.channel(&channel_work, TAG, &work)?;
        let work_str = work.to_str().context("the temporary path is not UTF-8")?;
        let channel = key.git(&work, &["rev-parse", CHANNEL], "git rev-parse channel")?;

        let fixture = Self {
            dir,
            channel,
            allowed,
        };
        for tags in TAG_COUNTS {
            let bare = fixture.srv().join(Self::repo(tags));
            let bare_str = bare.to_str().context("the temporary path is not UTF-8")?;
            key.git(
                &base,
                &["clone", "-q", "--bare", work_str, bare_str],
                "git clone --bare",
            )?;
            // `tags` annotated tags on the release commit, in one fast-import.
            let mut stream = String::with_capacity(tags * 120);
            for i in 0..tags {
                let name = format!("v0.{}.{}", i / 100, i % 100);
                let message = format!("release {name}\n");
                stream.push_str(&format!(
                    "tag {name}\nfrom {commit}\ntagger Release Bot <{PRINCIPAL}> {DATE}\ndata {}\n{message}\n",
                    message.len()
                ));
            }
            let stream_path = base.join(format!("tags-{tags}.fi"));
            fs::write(&stream_path, stream).context("writing the fast-import stream")?;
            let mut import = Command::new("/bin/sh");
            isolate_git_env(&mut import, &home);
            import
                .arg("-c")
                .arg("exec git -C \"$1\" fast-import --quiet < \"$2\"")
                .arg("sh")
                .arg(&bare)
                .arg(&stream_path);
            tool(&mut import, "git fast-import")?;
            key.git(&bare, &["pack-refs", "--all"], "git pack-refs")?;
            let listed = key.git(
                &bare,
                &["for-each-ref", "--format=x", "refs/tags"],
                "git for-each-ref",
            )?;
            ensure!(
                listed.lines().count() == tags + 1,
                "{} has {} tags, expected {}",
                bare.display(),
                listed.lines().count(),
                tags + 1
            );
        }
        Ok(fixture)
    }

    /// The served repository with `tags` extra tags, relative to [`Self::srv`].
    fn repo(tags: usize) -> String {
        format!("tags-{tags}.git")
    }

    /// The directory served.
    fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// HOME of every command.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn git_version(&self) -> String {
        let mut cmd = git_command(&self.home());
        cmd.arg("--version");
        match run_bounded(&mut cmd, TOOL_TIMEOUT) {
            Ok(done) if done.success() => done.stdout.trim().to_owned(),
            _ => "git version unknown".to_owned(),
        }
    }

    /// `git ls-remote URL refs/heads/channel`, isolated from any config.
    fn ls_remote(&self, url: &str) -> Command {
        let mut cmd = git_command(&self.home());
        cmd.args(["ls-remote", url, CHANNEL])
            .current_dir(self.home());
        cmd
    }

    /// A node root whose agent follows `url`, polling every `interval_ms`.
    fn node(&self, url: &str, interval_ms: usize) -> Result<PathBuf> {
        let root = self.dir.path().join("node");
        write_node_root(
            &root,
            "root:x:0:0:root:/root:/bin/sh\n",
            "root:x:0:\n",
            &self.allowed,
            &agent_yaml(url, TAG, &format!("{interval_ms}ms"))?,
        )?;
        Ok(root)
    }

    /// `driftless ARGS… --root ROOT` with a cleared environment.
    fn driftless(&self, root: &Path, args: &[&str]) -> Command {
        node::driftless(&self.home(), root, args)
    }
}

// ---------------------------------------------------------------------------
// Part 1: per poll
// ---------------------------------------------------------------------------

/// The contenders, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    LibraryNew,
    LibraryKept,
    Git,
}

impl Contender {
    const ALL: [Contender; 3] = [Self::LibraryNew, Self::LibraryKept, Self::Git];

    fn name(self) -> &'static str {
        match self {
            Self::LibraryNew => "library, new conn.",
            Self::LibraryKept => "library, kept-alive",
            Self::Git => "git ls-remote",
        }
    }
}

/// One contender's timings at one tag count.
#[derive(Default)]
struct Times {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

/// What nginx logged per poll of one contender.
#[derive(Clone, Copy, Default)]
struct PerPoll {
    requests: f64,
    down: f64,
    up: f64,
    /// The `ls-refs` answer body, as the library reports it (0 for git).
    body: u64,
}

/// Everything a measurement needs.
struct Bench<'a> {
    fixture: &'a Fixture,
    server: &'a SmartHttp,
    runtime: &'a Runtime,
}

impl Bench<'_> {
    fn url(&self, tags: usize) -> String {
        self.server.http_url(&Fixture::repo(tags))
    }

    fn poller(&self, tags: usize) -> Result<RefPoller> {
        Ok(RefPoller::new(&self.url(tags), PollOptions::default())?)
    }

    /// One library poll on `poller`: wall time, this process's CPU time,
    /// the answer body's size. The answer must be the channel's tip over v2.
    fn library_poll(&self, poller: &RefPoller) -> Result<(Duration, Duration, u64)> {
        let cpu_before = cpu_time(Who::Process)?;
        let start = Instant::now();
        let answer = self.runtime.block_on(poller.ls_ref(CHANNEL));
        let wall = start.elapsed();
        let cpu = cpu_time(Who::Process)?.saturating_sub(cpu_before);
        let answer = answer.context("library poll")?;
        ensure!(
            answer.oid.as_deref() == Some(self.fixture.channel.as_str())
                && answer.protocol == Protocol::V2,
            "unexpected answer {answer:?}"
        );
        Ok((wall, cpu, answer.bytes_received))
    }

    /// One library poll with a poller of its own (built and dropped untimed).
    fn library_poll_new(&self, tags: usize) -> Result<(Duration, Duration, u64)> {
        let poller = self.poller(tags)?;
        let result = self.library_poll(&poller);
        drop(poller);
        // Let the runtime close the dropped connection outside the timing.
        self.runtime.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
        result
    }

    /// One `git ls-remote`: wall time and its CPU time (children's).
    fn git_poll(&self, cmd: &mut Command) -> Result<(Duration, Duration)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let cpu_before = cpu_time(Who::Children)?;
        let start = Instant::now();
        let status = cmd.status().context("spawning git ls-remote")?;
        let wall = start.elapsed();
        let cpu = cpu_time(Who::Children)?.saturating_sub(cpu_before);
        ensure!(status.success(), "git ls-remote exited with {status}");
        Ok((wall, cpu))
    }

    /// Each contender once, untimed: it must name the channel's tip.
    fn check_all(&self, tags: usize) -> Result<()> {
        self.library_poll_new(tags)?;
        let done = tool(
            &mut self.fixture.ls_remote(&self.url(tags)),
            "git ls-remote",
        )?;
        let expected = format!("{}\t{CHANNEL}", self.fixture.channel);
        ensure!(
            done.stdout.trim() == expected,
            "git ls-remote printed {:?}, expected {expected:?}",
            done.stdout
        );
        Ok(())
    }

    /// Per-poll requests and bytes of each contender, from the access log.
    fn traffic(&self, tags: usize) -> Result<Vec<PerPoll>> {
        let mut out = Vec::new();
        let kept = self.poller(tags)?;
        let mut git = self.fixture.ls_remote(&self.url(tags));
        for contender in Contender::ALL {
            let mark = self.server.access_log()?.len();
            let mut body = 0;
            for _ in 0..BYTES_POLLS {
                match contender {
                    Contender::LibraryNew => body = self.library_poll_new(tags)?.2,
                    Contender::LibraryKept => body = self.library_poll(&kept)?.2,
                    Contender::Git => drop(self.git_poll(&mut git)?),
                }
            }
            self.server
                .wait_for_requests(mark + BYTES_POLLS, LOG_TIMEOUT)?;
            // A moment for any later request of the last poll to be logged.
            thread::sleep(Duration::from_millis(300));
            let log = self.server.access_log()?;
            let entries = &log[mark..];
            if let Some(bad) = entries.iter().find(|e| e.status != 200) {
                bail!("{} got HTTP {}: {bad:?}", contender.name(), bad.status);
            }
            let n = BYTES_POLLS as f64;
            out.push(PerPoll {
                requests: entries.len() as f64 / n,
                down: entries.iter().map(|e| e.bytes_sent).sum::<u64>() as f64 / n,
                up: entries.iter().map(|e| e.request_length).sum::<u64>() as f64 / n,
                body,
            });
        }
        Ok(out)
    }

    /// Times the contenders at `tags` tags, interleaved, rotating the order.
    fn measure(&self, tags: usize, reps: usize, warmup: usize) -> Result<Vec<Times>> {
        let kept = self.poller(tags)?;
        let mut git = self.fixture.ls_remote(&self.url(tags));
        let mut times: Vec<Times> = Contender::ALL.iter().map(|_| Times::default()).collect();
        let n = Contender::ALL.len();
        for round in 0..warmup + reps {
            for slot in 0..n {
                let i = (round + slot) % n;
                let (wall, cpu) = match Contender::ALL[i] {
                    Contender::LibraryNew => {
                        let (wall, cpu, _) = self.library_poll_new(tags)?;
                        (wall, cpu)
                    }
                    Contender::LibraryKept => {
                        let (wall, cpu, _) = self.library_poll(&kept)?;
                        (wall, cpu)
                    }
                    Contender::Git => self.git_poll(&mut git)?,
                };
                if round >= warmup {
                    times[i].wall.push(wall);
                    times[i].cpu.push(cpu);
                }
            }
        }
        Ok(times)
    }

    // -----------------------------------------------------------------------
    // Part 2: memory
    // -----------------------------------------------------------------------

    /// `polls` polls with one poller in this process, sampling VmRSS.
    fn memory_in_process(&self, polls: usize) -> Result<()> {
        let tags = TAG_COUNTS[TAG_COUNTS.len() - 1];
        let points = sample_points(polls);
        println!(
            "# memory, in process: {polls} polls with one RefPoller (connection kept alive) \
             against the {tags}-tag repository, back to back"
        );
        println!(
            "# VmRSS of this whole benchmark process: the poller shares it with the \
             benchmark's own allocations, so this bounds the poller's share from above"
        );
        let poller = self.poller(tags)?;
        let before = Memory::read("self")?;
        let header = memory_header("");
        println!("{header}");
        println!("{}", "-".repeat(header.chars().count()));
        println!("{}", memory_row("before", &before, Duration::ZERO));
        let start = Instant::now();
        let mut rows = Vec::new();
        for i in 1..=polls {
            let answer = self
                .runtime
                .block_on(poller.ls_ref(CHANNEL))
                .with_context(|| format!("poll {i}"))?;
            ensure!(
                answer.oid.as_deref() == Some(self.fixture.channel.as_str()),
                "poll {i}: unexpected answer {answer:?}"
            );
            if points.contains(&i) {
                let memory = Memory::read("self")?;
                println!("{}", memory_row(&i.to_string(), &memory, start.elapsed()));
                rows.push((i, memory));
            }
        }
        let elapsed = start.elapsed();
        let hwm = Memory::read("self")?.hwm;
        println!(
            "# {polls} polls in {:.1} s ({:.0} polls/s); VmHWM {}",
            elapsed.as_secs_f64(),
            polls as f64 / elapsed.as_secs_f64(),
            bytes(hwm)
        );
        print_memory_verdict("this process", &rows);
        Ok(())
    }

    /// `driftless watch` on the `tags`-tag repository, polling every
    /// `interval_ms` until nginx logged `polls` of its polls; samples its
    /// VmRSS and CPU.
    fn memory_of_watcher(&self, polls: usize, interval_ms: usize, tags: usize) -> Result<()> {
        let root = self.fixture.node(&self.url(tags), interval_ms)?;
        tool(
            &mut self.fixture.driftless(&root, &["apply"]),
            "driftless apply (watcher node)",
        )?;
        let ticks_per_sec = sysconf(SysconfVar::CLK_TCK)
            .context("sysconf(CLK_TCK)")?
            .filter(|&t| t > 0)
            .context("no clock tick rate")?
            .unsigned_abs();
        let points = sample_points(polls);
        // Bounded: the interval plus jitter plus a generous poll, and a minute.
        let deadline = Duration::from_millis(interval_ms as u64 * 11 / 10 + 100)
            * u32::try_from(polls).context("poll count")?
            + Duration::from_secs(60);
        println!(
            "# memory, the watcher: `driftless watch` (poll_interval {interval_ms}ms) against \
             the {tags}-tag repository until nginx logged {polls} of its polls (at most {:.0} s)",
            deadline.as_secs_f64()
        );
        println!(
            "# polls counted in nginx's access log (POST git-upload-pack with Git-Protocol: \
             version=2); VmRSS and CPU ticks from /proc/PID"
        );

        let mark = self.server.access_log()?.len();
        let log = self.fixture.dir.path().join("watch.log");
        let mut watcher =
            Watcher::spawn(self.fixture.driftless(&root, &["watch"]), log, STOP_TIMEOUT)?;
        let pid = watcher.id().to_string();
        let header = memory_header(&format!(" | {:>12}", "CPU so far"));
        println!("{header}");
        println!("{}", "-".repeat(header.chars().count()));
        let start = Instant::now();
        let mut next = 0;
        let mut rows = Vec::new();
        let mut cpu_at = Vec::new();
        let mut done = 0;
        while next < points.len() {
            watcher.ensure_running()?;
            if start.elapsed() > deadline {
                println!("# deadline reached after {done} polls");
                break;
            }
            thread::sleep(Duration::from_millis(200));
            let entries = self.server.access_log()?;
            done = entries[mark..].iter().filter(|e| is_v2_poll(e)).count();
            while next < points.len() && done >= points[next] {
                let memory = Memory::read(&pid)?;
                let ticks = cpu_ticks(&pid)?;
                println!(
                    "{} | {:>9} ms",
                    memory_row(&done.to_string(), &memory, start.elapsed()),
                    ticks * 1000 / ticks_per_sec
                );
                rows.push((done, memory));
                cpu_at.push((done, ticks));
                next += 1;
            }
        }
        let final_memory = Memory::read(&pid)?;
        let (status, took) = watcher.terminate()?;
        ensure!(
            status.success(),
            "the watcher did not exit cleanly ({status}):\n{}",
            watcher.log_text()
        );
        let elapsed = start.elapsed();
        let entries = self.server.access_log()?;
        let polls_seen: Vec<&AccessEntry> =
            entries[mark..].iter().filter(|e| is_v2_poll(e)).collect();
        let n = polls_seen.len().max(1) as f64;
        let down = polls_seen.iter().map(|e| e.bytes_sent).sum::<u64>() as f64 / n;
        let up = polls_seen.iter().map(|e| e.request_length).sum::<u64>() as f64 / n;
        let record: serde_json::Value = serde_json::from_slice(
            &fs::read(root.join("var/lib/driftless/watch.json")).context("reading watch.json")?,
        )
        .context("parsing watch.json")?;
        println!(
            "# {} polls in {:.1} s ({:.0} polls/s); {} down + {} up per poll; VmHWM {}; \
             poll errors {}; stopped by SIGTERM in {}",
            polls_seen.len(),
            elapsed.as_secs_f64(),
            polls_seen.len() as f64 / elapsed.as_secs_f64(),
            bytes(down as u64),
            bytes(up as u64),
            bytes(final_memory.hwm),
            record["poll_errors"],
            fmt(took)
        );
        if let [.., (p0, t0), (p1, t1)] = cpu_at[..] {
            if p1 > p0 {
                println!(
                    "# watcher CPU per poll between polls {p0} and {p1}: {:.2} ms \
                     (one ls-refs request)",
                    (t1 - t0) as f64 * 1000.0 / ticks_per_sec as f64 / (p1 - p0) as f64
                );
            }
        }
        ensure!(
            record["last_poll_error"].is_null() && record["replacement"].is_null(),
            "unexpected watcher record: {record}"
        );
        print_memory_verdict("the watcher", &rows);
        Ok(())
    }
}

/// Whether a logged request is a protocol v2 poll (`ls-refs` POST).
fn is_v2_poll(entry: &AccessEntry) -> bool {
    entry.method == "POST"
        && entry.uri.ends_with("/git-upload-pack")
        && entry.git_protocol.as_deref() == Some("version=2")
}

/// [`MEMORY_POINTS`] up to `polls`, and `polls`.
fn sample_points(polls: usize) -> Vec<usize> {
    let mut points: Vec<usize> = MEMORY_POINTS
        .iter()
        .copied()
        .filter(|&p| p < polls)
        .collect();
    points.push(polls);
    points
}

/// Memory figures of a process from `/proc/PID/status`, in bytes.
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    hwm: u64,
    /// Proportional set size (`/proc/PID/smaps_rollup`): shared pages
    /// divided among the processes that map them.
    pss: u64,
}

impl Memory {
    /// `pid` is a number or `self`.
    fn read(pid: &str) -> Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
        let kib = |text: &str, key: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
                .with_context(|| format!("no {key} in /proc/{pid}/"))
        };
        Ok(Self {
            rss: kib(&status, "VmRSS:")?,
            anon: kib(&status, "RssAnon:")?,
            file: kib(&status, "RssFile:")?,
            hwm: kib(&status, "VmHWM:")?,
            pss: kib(&rollup, "Pss:")?,
        })
    }
}

/// The header of a memory table (and `extra` columns).
fn memory_header(extra: &str) -> String {
    format!(
        "{:>8} | {:>10} {:>10} {:>10} {:>10} | {:>8}{extra}",
        "polls", "VmRSS", "RssAnon", "RssFile", "Pss", "elapsed"
    )
}

/// One row of a memory table: a label, VmRSS, RssAnon, RssFile, Pss, elapsed.
fn memory_row(label: &str, m: &Memory, elapsed: Duration) -> String {
    format!(
        "{:>8} | {:>10} {:>10} {:>10} {:>10} | {:>7.1}s",
        label,
        bytes(m.rss),
        bytes(m.anon),
        bytes(m.file),
        bytes(m.pss),
        elapsed.as_secs_f64()
    )
}

/// Under the goal (VmRSS, every sample), and growth from the second sample
/// (poll 100) on.
fn print_memory_verdict(whose: &str, rows: &[(usize, Memory)]) {
    let Some((_, last)) = rows.last() else {
        return;
    };
    let peak = rows.iter().map(|(_, m)| m.rss).max().unwrap_or(0);
    let signed = |later: u64, earlier: u64| {
        let sign = if later >= earlier { "+" } else { "-" };
        format!("{sign}{}", bytes(later.abs_diff(earlier)))
    };
    let growth = match rows.get(1) {
        Some((from, m)) if rows.len() > 2 => format!(
            "since poll {from}: VmRSS {}, RssAnon {}",
            signed(last.rss, m.rss),
            signed(last.anon, m.anon)
        ),
        _ => "too few samples to judge growth".to_owned(),
    };
    println!(
        "# verdict ({whose}): VmRSS {} at the end (peak sample {}): {} 10 MiB; Pss {}; {growth}",
        bytes(last.rss),
        bytes(peak),
        if peak < MEMORY_GOAL {
            "under"
        } else {
            "NOT under"
        },
        bytes(last.pss),
    );
}

// ---------------------------------------------------------------------------
// Measurement helpers
// ---------------------------------------------------------------------------

/// Whose CPU time [`cpu_time`] reads.
#[derive(Clone, Copy)]
enum Who {
    /// This process, all threads.
    Process,
    /// Every child this process has waited for (and theirs).
    Children,
}

/// User + system time from `getrusage`.
///
/// nix's safe `getrusage` needs its `resource` feature, which the crate
/// does not enable; this calls the C function through nix's libc re-export.
#[allow(unsafe_code)]
fn cpu_time(who: Who) -> Result<Duration> {
    use nix::libc;
    let who = match who {
        Who::Process => libc::RUSAGE_SELF,
        Who::Children => libc::RUSAGE_CHILDREN,
    };
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a zeroed `struct rusage` we own (all-integer
    // fields, so zero is a valid value); getrusage writes only into it.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: zero-initialised above and filled by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(t: nix::libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

fn print_poll_table(rows: &[(usize, Vec<Times>, Vec<PerPoll>)], reps: usize, warmup: usize) {
    println!(
        "# {reps} timed polls of each contender per tag count after {warmup} warm-up rounds, \
         interleaved round-robin"
    );
    println!(
        "# wall = one poll; CPU = client user+system per poll (getrusage: RUSAGE_SELF for the \
         library, RUSAGE_CHILDREN for git)"
    );
    println!(
        "# req, down, up = HTTP requests and bytes per poll as nginx logs them (untimed pass of \
         {BYTES_POLLS} polls each); body = the ls-refs answer body the library reports"
    );
    println!(
        "{:>6} | {:<20} | {:>9} {:>9} | {:>9} {:>9} | {:>3} {:>10} {:>8} {:>6}",
        "tags", "contender", "wall", "p90", "CPU", "p90", "req", "down", "up", "body"
    );
    println!("{}", "-".repeat(105));
    for (tags, times, traffic) in rows {
        for ((contender, t), b) in Contender::ALL.iter().zip(times).zip(traffic) {
            println!(
                "{:>6} | {:<20} | {:>9} {:>9} | {:>9} {:>9} | {:>3} {:>10} {:>8} {:>6}",
                tags,
                contender.name(),
                fmt(median(&t.wall)),
                fmt(percentile(&t.wall, 90)),
                fmt(median(&t.cpu)),
                fmt(percentile(&t.cpu, 90)),
                format!("{:.0}", b.requests),
                format!("{:.0} B", b.down),
                format!("{:.0} B", b.up),
                if *contender == Contender::Git {
                    "-".to_owned()
                } else {
                    format!("{} B", b.body)
                }
            );
        }
    }
    println!();
    println!("# medians; p90 = nearest-rank 90th percentile");
    for (tags, times, traffic) in rows {
        let (new, git) = (&times[0], &times[2]);
        println!(
            "# {tags} tags, git ls-remote / library (new conn.): wall {:.1}x, CPU {:.1}x, bytes down {:.0}x",
            median(&git.wall).as_secs_f64() / median(&new.wall).as_secs_f64(),
            median(&git.cpu).as_secs_f64() / median(&new.cpu).as_secs_f64().max(1e-9),
            traffic[2].down / traffic[0].down.max(1.0)
        );
    }
    if let [(_, _, small), .., (_, _, big)] = rows {
        println!(
            "# library bytes per poll, {} tags vs {} tags: down {:.0} B vs {:.0} B, up {:.0} B vs {:.0} B",
            TAG_COUNTS[0],
            TAG_COUNTS[TAG_COUNTS.len() - 1],
            small[0].down,
            big[0].down,
            small[0].up,
            big[0].up
        );
    }
}
