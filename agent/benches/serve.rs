//! Benchmark: what one node costs the server that serves its fleet, the
//! measured inputs of docs/scale.md. One release (300 files, 10 MiB by
//! default) and its signed channel, served over plain HTTP on 127.0.0.1 by
//! nginx + fcgiwrap + `git-http-backend` (smart HTTP, protocol v2).
//!
//! * **poll**: what a watching node asks once a `channel.poll_interval`:
//!   `driftless::source::poll::RefPoller::ls_ref("refs/heads/channel")`, a
//!   new poller (so a new connection) for each poll, as a node polling
//!   once a minute does; `DRIFTLESS_BENCH_CLIENTS` threads poll at once
//!   so the server is busy, not waiting for one client.
//! * **static**: the same question asked of the static files `driftless
//!   publish` wrote for the release and its channel, served by the same
//!   nginx as plain files: the channel's bundle fetched with
//!   `If-None-Match` and answered `304 Not Modified` (what a node with
//!   `source.kind: static` sends while the channel has not moved), and
//!   fetched whole (`200`).
//! * **boot**: one first boot, `driftless apply --root R` on a fresh root,
//!   one at a time, from git (smart HTTP) and from the static files: the
//!   server's CPU and bytes per booting node.
//! * **burst**: `DRIFTLESS_BENCH_BURST` nodes booting at once against the
//!   one server, from git and from the static files: the server's CPU per
//!   booting node, and the time from the start until the last node is
//!   applied.
//!
//! * **move**: what a channel move costs the server for each node that
//!   watches the channel: `DRIFTLESS_BENCH_MOVES` nodes booted from the
//!   channel (naming v1) are each made to evaluate the channel once it
//!   names v2 (the same release with one file changed), one at a time,
//!   with `driftless evaluate-channel`, exactly what the watcher runs when
//!   a poll sees a new tip: the channel fetched and verified, and the
//!   release it names fetched and verified before the node may ask to be
//!   replaced. From git and from the static files.
//! * **bundle growth**: the channel's bundle holds its whole signed
//!   history, so `DRIFTLESS_BENCH_REFRESHES` `driftless channel refresh`
//!   commits (what an hourly timer adds) are made and the channel is
//!   published again: the bytes each commit adds to what a node downloads
//!   when the channel moves.
//!
//! The server's CPU is the `usage_usec` of a cgroup (v2) the benchmark
//! moves the server's processes into (nginx's master and worker, the
//! fcgiwrap instances): everything they start is born in it, so it counts
//! `git-http-backend` and the `git upload-pack` it runs, which fcgiwrap
//! leaves to the kernel to reap (it ignores SIGCHLD) and no parent's
//! `/proc` times would show. Read before and after, divided by the polls
//! or nodes served. Needs root (to make the cgroup). Bytes are what nginx logs
//! (`$bytes_sent` down, `$request_length` up). The clients share the
//! machine with the server: on 2 cores they compete, so the wall times of
//! the burst are an upper bound; the CPU per request is not affected.
//!
//! Run it from the workspace root with `cargo bench --bench serve`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_POLLS` | 2000 | polls of each kind measured |
//! | `DRIFTLESS_BENCH_CLIENTS` | 2 | threads polling at once |
//! | `DRIFTLESS_BENCH_BOOTS` | 5 | sequential first boots |
//! | `DRIFTLESS_BENCH_BURST` | 20 | nodes booting at once |
//! | `DRIFTLESS_BENCH_FILES` | 300 | files in the release |
//! | `DRIFTLESS_BENCH_MIB` | 10 | their total size, MiB |
//! | `DRIFTLESS_BENCH_MOVES` | 3 | nodes of each source that evaluate a channel move |
//! | `DRIFTLESS_BENCH_REFRESHES` | 100 | channel refreshes for the bundle's growth |

#[path = "common/mod.rs"]
mod common;
#[path = "common/node.rs"]
mod node;
#[path = "common/release.rs"]
mod release;
#[path = "../../tests/support/servers.rs"]
mod servers;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::{bytes, env_count, fmt, median};
use driftless::source::poll::{PollOptions, RefPoller};
use node::{ReleaseKey, agent_yaml, command, driftless, tool, write_node_root};
use servers::{SmartHttp, Traffic, unlock_tree};

/// The release tag.
const TAG: &str = "v1";
/// The release the channel moves to: [`TAG`] with one file changed.
const NEXT_TAG: &str = "v2";
/// The channel ref a node polls.
const CHANNEL: &str = "refs/heads/channel";
/// The served bare repository, relative to the server's base dir.
const REPO: &str = "release.git";
/// Where `driftless publish` writes, under the served directory.
const SITE: &str = "site";
/// The channel's bundle, the one published file that changes, as a URL path.
const POINTER: &str = "static/site/channels/channel.bundle";
/// How long nginx may take to log a finished request.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one boot, or the whole burst, may take.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// The longest one static request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let polls = env_count("DRIFTLESS_BENCH_POLLS", 2000)?;
    let clients = env_count("DRIFTLESS_BENCH_CLIENTS", 2)?;
    let boots = env_count("DRIFTLESS_BENCH_BOOTS", 5)?;
    let burst = env_count("DRIFTLESS_BENCH_BURST", 20)?;
    let files = env_count("DRIFTLESS_BENCH_FILES", 300)?;
    let mib = env_count("DRIFTLESS_BENCH_MIB", 10)?;
    let refreshes = env_count("DRIFTLESS_BENCH_REFRESHES", 100)?;
    let moves = env_count("DRIFTLESS_BENCH_MOVES", 3)?;
    ensure!(
        polls > 0 && clients > 0 && boots > 0 && burst > 0 && files > 0 && mib > 0 && moves > 0,
        "counts must be positive"
    );
    println!("# driftless benchmark: what a node costs the server (inputs of docs/scale.md)");
    println!(
        "# reproduce (from the workspace root): DRIFTLESS_BENCH_POLLS={polls} \
         DRIFTLESS_BENCH_CLIENTS={clients} DRIFTLESS_BENCH_BOOTS={boots} \
         DRIFTLESS_BENCH_BURST={burst} DRIFTLESS_BENCH_FILES={files} \
         DRIFTLESS_BENCH_MIB={mib} DRIFTLESS_BENCH_MOVES={moves} \
         DRIFTLESS_BENCH_REFRESHES={refreshes} cargo bench --bench serve"
    );
    let fixture = Fixture::create(files, mib << 20).context("building the fixture")?;
    println!(
        "# {} CPUs; server: nginx (1 worker) + fcgiwrap + git-http-backend on 127.0.0.1; \
         release {files} files, {mib} MiB, pack {}",
        thread::available_parallelism().map_or(0, usize::from),
        bytes(fixture.pack_len()?),
    );
    println!();

    println!(
        "{:<40} | {:>7} | {:>10} | {:>10} | {:>9} | {:>12}",
        "poll", "count", "wall/poll", "server CPU", "bytes", "per core/min"
    );
    println!("{}", "-".repeat(104));
    for kind in [
        PollKind::Git,
        PollKind::StaticNotModified,
        PollKind::StaticWhole,
    ] {
        let cost = fixture.polls(kind, polls, clients)?;
        cost.print(kind.label(), polls);
    }
    println!();
    println!(
        "# {clients} clients at once; server CPU = user+system of nginx, fcgiwrap and the git \
         processes they ran (a cgroup), per poll; per core/min = 60 s / server CPU"
    );
    println!();

    for source in [Source::Git, Source::Static] {
        let (cost, walls) = fixture.boots(source, boots)?;
        println!(
            "# first boot from {}, one at a time ({boots} boots): median wall {}; per boot: \
             server CPU {}, {} down, {} requests",
            source.label(),
            fmt(median(&walls)),
            fmt(cost.cpu / boots as u32),
            bytes(cost.traffic.bytes_sent / boots as u64),
            cost.traffic.requests / boots,
        );
    }
    for source in [Source::Git, Source::Static] {
        let (cost, last) = fixture.burst(source, burst)?;
        println!(
            "# burst from {}: {burst} nodes booting at once: last applied after {}; per node: \
             server CPU {}, {} down",
            source.label(),
            fmt(last),
            fmt(cost.cpu / burst as u32),
            bytes(cost.traffic.bytes_sent / burst as u64),
        );
    }
    let watching: Vec<(Source, Vec<PathBuf>)> = [Source::Git, Source::Static]
        .into_iter()
        .map(|source| Ok((source, fixture.channel_nodes(source, moves)?)))
        .collect::<Result<_>>()?;
    fixture.promote(NEXT_TAG)?;
    for (source, roots) in &watching {
        let cost = fixture.evaluations(roots)?;
        println!(
            "# channel move {TAG} -> {NEXT_TAG} (one file changed) from {}, evaluated by each \
             watching node ({moves} nodes): per node: server CPU {}, {} down, {} requests",
            source.label(),
            fmt(cost.cpu / moves as u32),
            bytes(cost.traffic.bytes_sent / moves as u64),
            cost.traffic.requests / moves,
        );
    }
    if refreshes > 0 {
        let before = fixture.bundle_len()?;
        fixture.refresh_channel(refreshes)?;
        let after = fixture.bundle_len()?;
        println!(
            "# channel bundle: {} with 1 commit, {} after {refreshes} refreshes: {} a commit",
            bytes(before),
            bytes(after),
            bytes(after.saturating_sub(before) / refreshes as u64),
        );
    }
    Ok(())
}

/// Where a node boots from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The release repository over smart HTTP.
    Git,
    /// The files `driftless publish` wrote (`source.kind: static`).
    Static,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Git => "git (smart HTTP)",
            Source::Static => "static files",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Source::Git => "git",
            Source::Static => "static",
        }
    }
}

/// What is asked of the server in the poll table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PollKind {
    /// `ls-refs` of the channel over smart HTTP, a new connection each.
    Git,
    /// A conditional `GET` of the static pointer that has not changed.
    StaticNotModified,
    /// The static pointer fetched whole.
    StaticWhole,
}

impl PollKind {
    fn label(self) -> &'static str {
        match self {
            PollKind::Git => "git ls-refs (smart HTTP, v2)",
            PollKind::StaticNotModified => "static bundle, If-None-Match: 304",
            PollKind::StaticWhole => "static bundle, GET: 200",
        }
    }
}

/// The server's work over a measured span.
struct Cost {
    /// Its CPU time.
    cpu: Duration,
    /// What nginx logged.
    traffic: Traffic,
    /// Wall time of the span.
    wall: Duration,
}

impl Cost {
    fn print(&self, label: &str, count: usize) {
        let cpu = self.cpu.as_secs_f64() / count as f64;
        let per_core = if cpu > 0.0 {
            format!("{:.0}", 60.0 / cpu)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<40} | {:>7} | {:>10} | {:>10} | {:>9} | {:>12}",
            format!(
                "{label} ({:.0} req)",
                self.traffic.requests as f64 / count as f64
            ),
            count,
            fmt(self.wall / count as u32),
            fmt(Duration::from_secs_f64(cpu)),
            bytes((self.traffic.bytes_sent + self.traffic.request_bytes) / count as u64),
            per_core,
        );
    }
}

/// The key, the release, the served repository and the server.
struct Fixture {
    /// Stopped on drop, before `dir` is removed.
    server: SmartHttp,
    /// Its CPU time; removed after it stops.
    meter: CpuMeter,
    /// The trusted allowed_signers line.
    allowed: String,
    /// The same, as a file (releases, the channel and its refreshes).
    allowed_file: PathBuf,
    /// HOME of every tool.
    home: PathBuf,
    /// Where node roots are made.
    runs: PathBuf,
    /// The served directory.
    served: PathBuf,
    /// Removed on drop (last field).
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Makes the key, a release of `count` files and `total` bytes with a
    /// signed tag and a signed channel naming it, the served bare
    /// repository (packed as a hosted one is) and a static pointer file,
    /// and starts the server.
    fn create(count: usize, total: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-bench-serve-")
            .tempdir()
            .context("creating a temporary directory")?;
        let top = dir.path().to_path_buf();
        let (home, work, channel, served, runs) = (
            top.join("home"),
            top.join("work"),
            top.join("channel"),
            top.join("served"),
            top.join("runs"),
        );
        for d in [&home, &work, &served, &runs] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let key = ReleaseKey::create(&top, &home)?;
        release::write_release(&work, count, total)?;
        key.release(&work, TAG)?;
        // The next release: the same tree but one file.
        fs::write(work.join("next-release"), "v2\n").context("writing the next release")?;
        key.git(&work, &["add", "-A"], "git add (v2)")?;
        key.git(
            &work,
            &["commit", "-q", "-m", "release 2"],
            "git commit (v2)",
        )?;
        key.git(
            &work,
            &["tag", "-s", "-m", "release 2", NEXT_TAG],
            "git tag -s (v2)",
        )?;
        let bare = served.join(REPO);
        key.git(
            &top,
            &["init", "-q", "--bare", path_str(&bare)?],
            "git init --bare",
        )?;
        key.git(
            &work,
            &[
                "push",
                "-q",
                path_str(&bare)?,
                "main",
                &format!("refs/tags/{TAG}"),
                &format!("refs/tags/{NEXT_TAG}"),
            ],
            "git push",
        )?;
        key.channel(&channel, TAG, &bare)?;
        key.git(&bare, &["repack", "-a", "-d", "-q"], "git repack")?;
        let allowed = top.join("allowed_signers");
        fs::write(&allowed, &key.allowed).context("writing allowed_signers")?;
        let mut publish = command(&home, env!("CARGO_BIN_EXE_driftless"));
        publish
            .args(["publish", "--channel", "channel", "--repo"])
            .arg(&bare)
            .arg("--allowed-signers")
            .arg(&allowed)
            .arg("--channel-signers")
            .arg(&allowed)
            .arg("--out")
            .arg(served.join(SITE));
        tool(&mut publish, "driftless publish")?;
        let server = SmartHttp::start(&served).context("starting nginx + fcgiwrap")?;
        let meter = CpuMeter::new(server.process_group())?;
        Ok(Self {
            server,
            meter,
            allowed: key.allowed.clone(),
            allowed_file: allowed,
            home,
            runs,
            served,
            dir,
        })
    }

    /// The size of the published channel bundle.
    fn bundle_len(&self) -> Result<u64> {
        let path = self.served.join(SITE).join("channels/channel.bundle");
        Ok(fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len())
    }

    /// Makes `count` signed refreshes of the channel (`driftless channel
    /// refresh`, as a timer would) and publishes the channel again.
    fn refresh_channel(&self, count: usize) -> Result<()> {
        let key = self.dir.path().join("release_ed25519");
        for _ in 0..count {
            let mut refresh = self.channel_tool(&["channel", "refresh"]);
            refresh
                .arg("--signing-key")
                .arg(&key)
                .arg("--refresh-signers")
                .arg(&self.allowed_file);
            tool(&mut refresh, "driftless channel refresh")?;
        }
        self.publish("driftless publish (after the refreshes)")
    }

    /// `driftless ARGS` on the served repository, with its signer files.
    fn channel_tool(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = command(&self.home, env!("CARGO_BIN_EXE_driftless"));
        cmd.args(args)
            .arg("--repo")
            .arg(self.served.join(REPO))
            .arg("--allowed-signers")
            .arg(&self.allowed_file)
            .arg("--channel-signers")
            .arg(&self.allowed_file)
            .env("GIT_COMMITTER_NAME", "Release Bot")
            .env("GIT_COMMITTER_EMAIL", common::PRINCIPAL)
            .env("GIT_AUTHOR_NAME", "Release Bot")
            .env("GIT_AUTHOR_EMAIL", common::PRINCIPAL);
        cmd
    }

    /// Publishes the channel (and the release it names) again.
    fn publish(&self, what: &str) -> Result<()> {
        let mut publish = self.channel_tool(&["publish", "--channel", "channel"]);
        publish.arg("--out").arg(self.served.join(SITE));
        tool(&mut publish, what)?;
        Ok(())
    }

    /// Moves the channel to `tag` (`driftless channel promote`), as a
    /// release engineer does, and publishes it.
    fn promote(&self, tag: &str) -> Result<()> {
        let mut promote = self.channel_tool(&["channel", "promote", tag]);
        promote
            .arg("--signing-key")
            .arg(self.dir.path().join("release_ed25519"));
        tool(&mut promote, "driftless channel promote")?;
        self.publish("driftless publish (after the promotion)")
    }

    /// `count` nodes booted from the channel (not measured), from `source`.
    fn channel_nodes(&self, source: Source, count: usize) -> Result<Vec<PathBuf>> {
        let names: Vec<String> = (0..count)
            .map(|i| format!("watching-{}-{i}", source.slug()))
            .collect();
        let children = names
            .iter()
            .map(|name| {
                let root = self.node_root(source, name)?;
                let agent = root.join("etc/driftless/agent.yaml");
                let pinned = fs::read_to_string(&agent)?;
                fs::write(
                    &agent,
                    pinned.replacen(&format!("  tag: {TAG}\n"), "  channel: channel\n", 1),
                )?;
                self.start_apply(&root, name)
            })
            .collect::<Result<Vec<_>>>()?;
        self.wait_all(&names, children, Instant::now())?;
        Ok(names.iter().map(|name| self.runs.join(name)).collect())
    }

    /// Each node of `roots` evaluates the channel's tip once
    /// (`driftless evaluate-channel`), one after another; each must accept it.
    fn evaluations(&self, roots: &[PathBuf]) -> Result<Cost> {
        self.cost(roots.len(), || {
            for root in roots {
                let mut evaluate = driftless(&self.home, root, &["evaluate-channel"]);
                let out = tool(&mut evaluate, "driftless evaluate-channel")?;
                ensure!(
                    out.stdout.contains("\"verdict\":\"accepted\"")
                        && out.stdout.contains(NEXT_TAG),
                    "{} did not accept the move to {NEXT_TAG}: {}",
                    root.display(),
                    out.stdout
                );
            }
            Ok(())
        })
    }

    /// The size of the served repository's pack.
    fn pack_len(&self) -> Result<u64> {
        let pack_dir = self.served.join(REPO).join("objects/pack");
        let mut len = 0;
        for entry in fs::read_dir(&pack_dir).context("listing the packs")? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|e| e == "pack") {
                len += entry.metadata()?.len();
            }
        }
        Ok(len)
    }

    /// The server's CPU time so far.
    fn server_cpu(&self) -> Result<Duration> {
        self.meter.usage()
    }

    /// Measures `f`: the server's CPU and the requests nginx logged (at
    /// least `expected_requests`).
    fn cost(&self, expected_requests: usize, f: impl FnOnce() -> Result<()>) -> Result<Cost> {
        let before_log = self.server.access_log()?.len();
        let before_cpu = self.server_cpu()?;
        let start = Instant::now();
        f()?;
        let wall = start.elapsed();
        self.server
            .wait_for_requests(before_log + expected_requests, LOG_TIMEOUT)?;
        // nginx logs a request when it ends, and fcgiwrap reaps a backend
        // a moment after it answers: let the last of both land.
        thread::sleep(Duration::from_millis(300));
        let entries = self.server.access_log()?;
        let cpu = self.server_cpu()?.saturating_sub(before_cpu);
        Ok(Cost {
            cpu,
            traffic: Traffic::of(&entries[before_log..]),
            wall,
        })
    }

    /// `count` polls of `kind`, spread over `clients` threads.
    fn polls(&self, kind: PollKind, count: usize, clients: usize) -> Result<Cost> {
        let url = self.server.http_url(REPO);
        let addr = self.server.http_addr();
        let etag = static_etag(addr)?;
        // Warm up the server (and check the answers) untimed.
        poll_once(kind, &url, addr, &etag)?;
        thread::sleep(Duration::from_millis(200));
        let next = AtomicUsize::new(0);
        self.cost(count, || {
            thread::scope(|s| {
                let workers: Vec<_> = (0..clients)
                    .map(|_| {
                        s.spawn(|| -> Result<()> {
                            while next.fetch_add(1, Ordering::Relaxed) < count {
                                poll_once(kind, &url, addr, &etag)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            })
        })
    }

    /// A node root that boots from the server, from `source`.
    fn node_root(&self, source: Source, name: &str) -> Result<PathBuf> {
        let root = self.runs.join(name);
        let agent = match source {
            Source::Git => agent_yaml(&self.server.http_url(REPO), TAG, "60s")?,
            Source::Static => {
                let url = self.server.static_url(SITE);
                agent_yaml(&url, TAG, "60s")?.replacen("source:\n", "source:\n  kind: static\n", 1)
            }
        };
        write_node_root(
            &root,
            "root:x:0:0:root:/root:/bin/sh\n",
            "root:x:0:\n",
            &self.allowed,
            &agent,
        )?;
        Ok(root)
    }

    /// `driftless apply` on a fresh root booting from `source`, started.
    fn boot(&self, source: Source, name: &str) -> Result<Child> {
        let root = self.node_root(source, name)?;
        self.start_apply(&root, name)
    }

    /// `driftless apply` on the node root `root`, started.
    fn start_apply(&self, root: &Path, name: &str) -> Result<Child> {
        driftless(&self.home, root, &["apply"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(self.runs.join(format!("{name}.log")))
                    .context("creating a node's log")?,
            ))
            .spawn()
            .context("starting driftless apply")
    }

    /// Waits for the boots in `children`; the time the last one finished.
    fn wait_all(&self, names: &[String], children: Vec<Child>, start: Instant) -> Result<Duration> {
        let mut last = Duration::ZERO;
        for (name, mut child) in names.iter().zip(children) {
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if start.elapsed() > BOOT_LIMIT {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("node {name} did not finish its apply within {BOOT_LIMIT:?}");
                }
                thread::sleep(Duration::from_millis(2));
            };
            last = last.max(start.elapsed());
            let log = fs::read_to_string(self.runs.join(format!("{name}.log"))).unwrap_or_default();
            ensure!(
                status.success(),
                "node {name}: driftless apply failed:\n{log}"
            );
            let app = self.runs.join(name).join(release::APP_DIR);
            ensure!(app.is_dir(), "node {name} has no {}", app.display());
        }
        Ok(last)
    }

    /// `count` first boots from `source` one after another; their wall
    /// times.
    fn boots(&self, source: Source, count: usize) -> Result<(Cost, Vec<Duration>)> {
        let mut walls = Vec::with_capacity(count);
        let cost = self.cost(count, || {
            for i in 0..count {
                let name = format!("boot-{}-{i}", source.slug());
                let start = Instant::now();
                let child = self.boot(source, &name)?;
                walls.push(self.wait_all(&[name], vec![child], start)?);
            }
            Ok(())
        })?;
        Ok((cost, walls))
    }

    /// `count` first boots from `source` at once; the time until the last
    /// was applied.
    fn burst(&self, source: Source, count: usize) -> Result<(Cost, Duration)> {
        let names: Vec<String> = (0..count)
            .map(|i| format!("burst-{}-{i}", source.slug()))
            .collect();
        let mut last = Duration::ZERO;
        let cost = self.cost(count, || {
            let start = Instant::now();
            let children = names
                .iter()
                .map(|name| self.boot(source, name))
                .collect::<Result<Vec<_>>>()?;
            last = self.wait_all(&names, children, start)?;
            Ok(())
        })?;
        Ok((cost, last))
    }
}

impl Drop for Fixture {
    /// Clears any immutable attribute a node left, so the directory can go.
    fn drop(&mut self) {
        unlock_tree(&self.runs);
        let _ = &self.dir;
    }
}

/// One poll of `kind`; fails unless the server answered as expected.
fn poll_once(kind: PollKind, url: &str, addr: SocketAddr, etag: &str) -> Result<()> {
    match kind {
        PollKind::Git => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a Tokio runtime")?;
            let poller = RefPoller::new(url, PollOptions::default())?;
            let answer = runtime.block_on(poller.ls_ref(CHANNEL))?;
            ensure!(answer.oid.is_some(), "the channel ref is missing");
        }
        PollKind::StaticNotModified => {
            let status = static_get(addr, Some(etag))?.0;
            ensure!(
                status == 304,
                "a conditional GET answered {status}, not 304"
            );
        }
        PollKind::StaticWhole => {
            let status = static_get(addr, None)?.0;
            ensure!(status == 200, "a GET answered {status}, not 200");
        }
    }
    Ok(())
}

/// The pointer's ETag, from one untimed `GET`.
fn static_etag(addr: SocketAddr) -> Result<String> {
    let (status, head) = static_get(addr, None)?;
    ensure!(status == 200, "GET /{POINTER} answered {status}");
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("etag")
                .then(|| value.trim().to_owned())
        })
        .context("nginx sent no ETag for the pointer")
}

/// One HTTP/1.1 `GET` of the pointer on a new connection (as a node
/// polling once a minute makes), conditional on `etag` when given:
/// the status and the response head. The body is read and dropped.
fn static_get(addr: SocketAddr, etag: Option<&str>) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_LIMIT).context("connecting")?;
    stream.set_read_timeout(Some(REQUEST_LIMIT))?;
    stream.set_write_timeout(Some(REQUEST_LIMIT))?;
    let condition = etag.map_or_else(String::new, |e| format!("If-None-Match: {e}\r\n"));
    write!(
        stream,
        "GET /{POINTER} HTTP/1.1\r\nHost: {addr}\r\n{condition}Connection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut answer = Vec::with_capacity(2048);
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .context("reading the answer")?;
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))?;
    Ok((status, head))
}

/// The server's CPU time, from a cgroup (v2) that holds its processes:
/// fcgiwrap ignores SIGCHLD, so the kernel reaps `git-http-backend` and
/// `git upload-pack` without adding their time to any parent's, and only
/// a cgroup sees it. Made under the cgroup2 mount, removed on drop once
/// the server has stopped.
struct CpuMeter {
    /// The cgroup's directory.
    dir: PathBuf,
}

impl CpuMeter {
    /// Moves every process of group `pgid` into a new cgroup; processes
    /// they start later are born in it.
    fn new(pgid: u32) -> Result<Self> {
        let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        let mount = mounts
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let (_, path, kind) = (fields.next()?, fields.next()?, fields.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(path))
            })
            .context("no cgroup2 mount: the server's CPU cannot be measured here")?;
        let dir = mount.join(format!("driftless-bench-serve-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| {
            format!(
                "creating the cgroup {} (the benchmark must run as root to measure the server's CPU)",
                dir.display()
            )
        })?;
        let meter = Self { dir };
        for pid in group_members(pgid)? {
            // A process may have exited since the listing.
            let _ = fs::write(meter.dir.join("cgroup.procs"), pid.to_string());
        }
        ensure!(
            !fs::read_to_string(meter.dir.join("cgroup.procs"))?
                .trim()
                .is_empty(),
            "no server process could be moved into {}",
            meter.dir.display()
        );
        Ok(meter)
    }

    /// CPU time of everything that ran in the cgroup so far.
    fn usage(&self) -> Result<Duration> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).context("reading cpu.stat")?;
        let usec: u64 = stat
            .lines()
            .find_map(|line| line.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .context("no usage_usec in cpu.stat")?;
        Ok(Duration::from_micros(usec))
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        // Empty once the server has stopped; a cgroup goes with rmdir.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The processes of group `pgid` (`/proc/PID/stat` field 5).
fn group_members(pgid: u32) -> Result<Vec<u32>> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        if group == Some(pgid) {
            members.push(pid);
        }
    }
    Ok(members)
}

/// `path` as UTF-8, for git's arguments.
fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("the temporary path is not UTF-8")
}
