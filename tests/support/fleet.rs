//! A fleet on one machine: N simulated nodes, each a root directory with
//! its own node id (`/etc/machine-id`) running the real `driftless apply`
//! and then `driftless watch`; one smart-HTTP git server (nginx +
//! `git-http-backend`) serving the signed releases and the signed channel;
//! one real etcd coordinating the rollout; and an autoscaler loop, run by
//! the caller through [`Fleet::tick`], that plays the cloud.
//!
//! The autoscaler: a node asks to be replaced through
//! `replace: {action: exec}` with a command that creates `asks/NODE_ID`.
//! Seeing it, the autoscaler kills the node's watcher (a power-off) and
//! removes its root; after the boot delay it creates a new node (new root,
//! new id, `release: {channel}` so that `driftless apply` takes the
//! channel's current release) and starts its watcher once apply has exited
//! (also when apply failed, as the systemd units do). [`Fleet::crash_next`]
//! makes the next asking nodes vanish instead, without a replacement: a
//! node lost while it holds a rollout slot.
//!
//! The cloud's own slow work happens beside its ticks, on threads of their
//! own: a watcher is started there once its apply exited (and handed to
//! the next tick), and a node powered off or removed is SIGKILLed at once
//! (its whole process group) and then reaped, and its root deleted.
//!
//! "Away", as sampled on every tick: a node is away from the moment its ask
//! is seen until its replacement's `state.json` says `applied` (written once
//! the health checks passed, before the replacement gives a slot back). A
//! tick lists the asks first and reads the replacements' states after, so
//! a node whose slot was already given back (and perhaps taken by the node
//! that just asked) is never counted: the count sampled is at most the
//! slots held, which etcd caps at `max_in_flight` as long as no lease
//! expires under a node still away. Ticks also count the slot keys in
//! etcd, at most every [`SAMPLE_EVERY`].
//!
//! Every child (applies, watchers, nginx, etcd) is killed when the fleet
//! is dropped, also on panic; every wait is bounded ([`Fleet::run_until`]
//! panics with a description of the fleet after its timeout).
//!
//! Include it after `servers.rs`, `release.rs`, `channel.rs` and `etcd.rs`:
//! `#[path = "support/fleet.rs"] mod fleet;`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::channel::{ChannelBranch, Daemon, NodeConfig, release_tree};
use crate::etcd::EtcdServer;
use crate::release::{Key, NodeRoot, REPO, Tagging, World};
use crate::servers::SmartHttp;

/// The rollout group every node of the fleet is in.
pub const GROUP: &str = "fleet";
/// The releases published: their tags and health checks. `v3` is broken:
/// its health check exits 1.
pub const RELEASES: [(&str, &str); 3] = [
    ("v1", "/bin/true"),
    ("v2", "/bin/true"),
    ("v3", "/bin/false"),
];
/// The directory under `srv/` a static source's files are published to.
const STATIC_DIR: &str = "static";
/// How often [`Fleet::run_until`] ticks at least. It ticks at once when a
/// node asks to be replaced (inotify on the asks directory) and when a
/// replacement's boot delay is over: a cloud that noticed late would count
/// against the rollout, whose hand-offs run from one tick to another.
pub const TICK: Duration = Duration::from_millis(10);
/// How often a tick reads the slot keys in etcd (one request each).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The longest one `driftless apply` may run before the fleet gives up.
const APPLY_TIMEOUT: Duration = Duration::from_secs(90);
/// Most ticks one [`Fleet::run_until`] makes, whatever its timeout.
const MAX_TICKS: u64 = 200_000;

/// How big the fleet is and how it rolls.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Nodes at the start.
    pub nodes: usize,
    /// `rollout.max_in_flight`.
    pub max_in_flight: u32,
    /// `rollout.lease_ttl` (whole seconds, at least 2).
    pub lease_ttl: Duration,
    /// `channel.poll_interval` (whole seconds).
    pub poll_interval: Duration,
    /// How long a new node takes to "boot" before its apply starts.
    pub boot_delay: Duration,
    /// Applies at once while the first nodes boot.
    pub boot_parallel: usize,
    /// Where the nodes fetch releases and poll the channel.
    pub source: FleetSource,
}

/// Where a fleet's nodes fetch from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetSource {
    /// The git server (smart HTTP, `git-http-backend`).
    Git,
    /// `driftless publish`'s static files of the same repository, served
    /// by the same nginx as plain files (`source.kind: static`); published
    /// again after every channel commit.
    Static,
}

impl FleetOptions {
    /// `nodes` nodes with the settings the CI simulation uses.
    pub fn new(nodes: usize, max_in_flight: u32) -> Self {
        Self {
            nodes,
            max_in_flight,
            lease_ttl: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            boot_delay: Duration::from_millis(500),
            boot_parallel: 4,
            source: FleetSource::Git,
        }
    }
}

/// One simulated node.
pub struct Node {
    /// Its id (`/etc/machine-id`, the root's directory name).
    pub id: String,
    /// Its root.
    pub root: NodeRoot,
    /// `driftless apply`, while it runs.
    apply: Option<Daemon>,
    /// How apply ended (`Some(true)`: exit 0).
    pub applied_ok: Option<bool>,
    /// `driftless watch`, once apply has exited.
    watcher: Option<Daemon>,
    /// The node this one replaces.
    pub replaces: Option<String>,
    /// When it was created.
    pub born: Instant,
}

impl Node {
    /// The watcher's process id, while it runs.
    pub fn watcher_pid(&self) -> Option<u32> {
        self.watcher.as_ref().and_then(Daemon::pid)
    }

    /// `(tag, status)` from the node's `state.json`, once there is one.
    pub fn release(&self) -> Option<(String, String)> {
        let state = self.root.state()?;
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        Some((
            text(&state["release"]["tag"]),
            text(&state["status"]["state"]),
        ))
    }
}

/// A node that asked, waiting for the cloud to replace it.
struct Asked {
    /// Its id.
    id: String,
    /// When the replacement starts booting.
    due: Instant,
}

/// What the autoscaler saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Ticks sampled.
    pub samples: u64,
    /// The most nodes away at one sample.
    pub max_away: usize,
    /// The most slot keys in etcd at one sample.
    pub max_slots: usize,
    /// Samples for which etcd did not answer.
    pub etcd_unanswered: u64,
    /// Asks seen: node id and when.
    pub asks: Vec<(String, Instant)>,
    /// Replacements that became healthy: new node id, when, and how long
    /// after the old node's ask.
    pub healthy: Vec<(String, Instant, Duration)>,
    /// New nodes whose apply failed.
    pub failed: Vec<String>,
    /// Nodes that vanished while holding a slot.
    pub crashed: Vec<String>,
}

/// The whole simulation. Fields drop in order: the nodes' processes
/// first, then the servers, then the files.
pub struct Fleet {
    /// Live nodes by id.
    pub nodes: BTreeMap<String, Node>,
    /// Starts the watchers of nodes whose apply exited.
    starter: Starter,
    /// Nodes powered off or removed, being reaped.
    reaper: Reaper,
    /// When the slot keys were last read.
    sampled: Option<Instant>,
    /// Says when an ask file is created, so that the next tick comes at once.
    ask_events: nix::sys::inotify::Inotify,
    /// Nodes that asked, not yet replaced.
    asked: Vec<Asked>,
    /// Away nodes (ids of nodes that asked) → their replacement's id, once made.
    away: BTreeMap<String, Option<String>>,
    /// Ask files already handled.
    handled: BTreeSet<String>,
    /// Nodes waiting to be created at the start (boot parallelism).
    queued: Vec<String>,
    /// How many of the next askers vanish.
    crash_next: usize,
    /// What was seen.
    pub stats: Stats,
    /// The coordinator.
    pub etcd: EtcdServer,
    /// The git server.
    pub http: SmartHttp,
    /// The settings.
    pub options: FleetOptions,
    /// Where nodes record their asks.
    asks: PathBuf,
    /// Ids given so far.
    next_id: usize,
    /// Whether the channel branch's work tree exists.
    channel_made: bool,
    /// The release and channel key.
    pub key: Key,
    /// The refresh job's key: nodes trust it to refresh the channel only.
    pub refresher: Key,
    /// `--refresh-signers FILE` for `driftless channel`.
    refresh_signers: PathBuf,
    /// Everything on disk; last, so removed after every process is gone.
    pub world: World,
}

impl Fleet {
    /// Publishes the releases, starts the servers, points the channel at
    /// `v1` and boots `options.nodes` nodes on it, all watching.
    pub fn start(options: FleetOptions) -> Self {
        assert!(
            options.lease_ttl >= Duration::from_secs(2),
            "etcd's minimum lease"
        );
        let world = World::new();
        let key = world.keygen("release");
        let refresher = world.keygen("refresher");
        crate::channel::write_trust(&world, "allowed_signers", &[&key]);
        let refresh_signers = crate::channel::write_trust(&world, "refresh_signers", &[&refresher]);
        for (tag, health) in RELEASES {
            world.publish(REPO, &release_tree(tag, health), tag, Tagging::Signed(&key));
        }
        let asks = world.path("asks");
        fs::create_dir(&asks).expect("create the asks directory");
        let ask_events = nix::sys::inotify::Inotify::init(
            nix::sys::inotify::InitFlags::IN_NONBLOCK | nix::sys::inotify::InitFlags::IN_CLOEXEC,
        )
        .expect("inotify");
        ask_events
            .add_watch(&asks, nix::sys::inotify::AddWatchFlags::IN_CREATE)
            .expect("watch the asks directory");
        let http = SmartHttp::start(&world.srv()).expect("start nginx + git-http-backend");
        let etcd = EtcdServer::start().expect("start etcd");
        let mut fleet = Self {
            nodes: BTreeMap::new(),
            starter: Starter::run(),
            reaper: Reaper::start(),
            sampled: None,
            ask_events,
            asked: Vec::new(),
            away: BTreeMap::new(),
            handled: BTreeSet::new(),
            queued: Vec::new(),
            crash_next: 0,
            stats: Stats::default(),
            etcd,
            http,
            options,
            asks,
            next_id: 0,
            channel_made: false,
            key,
            refresher,
            refresh_signers,
            world,
        };
        fleet.promote("v1", "");
        for _ in 0..fleet.options.nodes {
            let id = fleet.new_id();
            fleet.queued.push(id);
        }
        let limit = APPLY_TIMEOUT.saturating_mul(
            u32::try_from(
                fleet
                    .options
                    .nodes
                    .div_ceil(fleet.options.boot_parallel.max(1)),
            )
            .unwrap_or(u32::MAX),
        );
        fleet.run_until(limit, "the first nodes boot", |f| f.converged("v1"));
        fleet
    }

    /// Commits `release: TAG` plus `extra` to the channel, signed, and
    /// pushes it to the served repository.
    pub fn promote(&mut self, tag: &str, extra: &str) {
        let branch = if self.channel_made {
            ChannelBranch::reopen(&self.world, REPO, "channel")
        } else {
            ChannelBranch::new(&self.world, REPO, "channel")
        };
        self.channel_made = true;
        branch.promote(&self.key, tag, extra);
        self.publish();
    }

    /// With a static source: `driftless publish` of every release and of
    /// the channel into the served directory (what a release pipeline
    /// runs after each channel commit; releases already there are kept).
    fn publish(&self) {
        if self.options.source != FleetSource::Static {
            return;
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"));
        crate::servers::isolate_git_env(&mut cmd, &self.world.home());
        cmd.arg("publish")
            .args(RELEASES.map(|(tag, _)| tag))
            .args(["--channel", "channel", "--repo"])
            .arg(self.world.srv().join(REPO))
            .arg("--out")
            .arg(self.world.srv().join(STATIC_DIR))
            .arg("--allowed-signers")
            .arg(self.world.path("keys").join("allowed_signers"))
            .arg("--refresh-signers")
            .arg(&self.refresh_signers);
        let done = crate::servers::run_bounded(&mut cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("driftless publish: {e:#}"));
        assert!(done.success(), "driftless publish: {}", done.describe());
    }

    /// Runs `driftless channel ARGS…` signed by `key` (the release key, or
    /// [`Fleet::refresher`]) on the channel branch and pushes it; returns
    /// the new tip.
    pub fn channel(&mut self, key: &Key, args: &[&str]) -> String {
        assert!(self.channel_made, "promote first");
        let branch = ChannelBranch::reopen(&self.world, REPO, "channel");
        let signers = self.refresh_signers.display().to_string();
        let tip = branch.channel(key, args, &["--refresh-signers", &signers]);
        branch.push();
        self.publish();
        tip
    }

    /// Makes the next `count` nodes that ask vanish (watcher killed, root
    /// removed) instead of being replaced.
    pub fn crash_next(&mut self, count: usize) {
        self.crash_next += count;
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("n{:04}", self.next_id)
    }

    /// The agent config every node gets.
    fn config(&self) -> NodeConfig {
        // `sh -c SCRIPT ASKS REASON…`: $0 is the asks directory.
        let ask = serde_json::json!([
            "/bin/sh",
            "-c",
            ": > \"$0/$DRIFTLESS_NODE_ID\"",
            self.asks.display().to_string(),
        ]);
        let url = match self.options.source {
            FleetSource::Git => self.http.http_url(REPO),
            FleetSource::Static => self.http.static_url(STATIC_DIR),
        };
        let mut config = NodeConfig::new(
            &url,
            &format!("{{action: exec, command: {ask}, timeout: 5s}}"),
        );
        if self.options.source == FleetSource::Static {
            config.kind = Some("static".to_owned());
        }
        config.poll_interval = format!("{}s", self.options.poll_interval.as_secs());
        config.refresh_signers = Some(vec![self.refresher.allowed("refresh-job@example.com")]);
        config.extra = format!(
            "rollout: {{coordinator: etcd, endpoints: [{}], group: {GROUP}, max_in_flight: {}, lease_ttl: {}s, timeout: 2s}}\n",
            self.etcd.url(),
            self.options.max_in_flight,
            self.options.lease_ttl.as_secs(),
        );
        config
    }

    /// Creates node `id` and starts its apply.
    fn boot(&mut self, id: String, replaces: Option<String>) {
        let root = self.world.root(&id);
        root.write("/etc/machine-id", format!("{id}\n"));
        self.config().install(&root, &self.key);
        let apply = Daemon::spawn("apply", &root, &self.world.home(), &self.log_dir(&id), &[]);
        if let Some(old) = &replaces {
            self.away.insert(old.clone(), Some(id.clone()));
        }
        self.nodes.insert(
            id.clone(),
            Node {
                id,
                root,
                apply: Some(apply),
                applied_ok: None,
                watcher: None,
                replaces,
                born: Instant::now(),
            },
        );
    }

    fn log_dir(&self, id: &str) -> PathBuf {
        self.world.path("logs").join(id)
    }

    /// One round of the autoscaler: see asks, follow applies, replace
    /// nodes whose boot delay is over, sample what is away.
    pub fn tick(&mut self) {
        self.reaper.check();
        for (id, watcher) in self.starter.started() {
            match self.nodes.get_mut(&id) {
                Some(node) => node.watcher = Some(watcher),
                // Removed while its watcher started.
                None => {
                    watcher.kill_now();
                    self.reaper.reap(Doomed::Daemon(watcher));
                }
            }
        }
        let now = Instant::now();
        // 1. Asks (before the replacements' states: see the module doc).
        let mut asks: Vec<String> = fs::read_dir(&self.asks)
            .expect("list the asks")
            .map(|e| {
                e.expect("an ask")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| !self.handled.contains(name))
            .collect();
        asks.sort();
        for id in asks {
            let node = self
                .nodes
                .get_mut(&id)
                .unwrap_or_else(|| panic!("{id} asked to be replaced but is not in the fleet"));
            assert!(
                node.applied_ok == Some(true),
                "{id} asked to be replaced before its apply succeeded"
            );
            // Power-off: the watcher stops renewing its slot from here on.
            if let Some(watcher) = node.watcher.take() {
                watcher.kill_now();
                self.reaper.reap(Doomed::Daemon(watcher));
            }
            self.handled.insert(id.clone());
            self.stats.asks.push((id.clone(), now));
            if self.crash_next > 0 {
                self.crash_next -= 1;
                self.stats.crashed.push(id.clone());
                self.remove(&id);
            } else {
                self.away.insert(id.clone(), None);
                self.asked.push(Asked {
                    id,
                    due: now + self.options.boot_delay,
                });
            }
        }

        // 2. Applies: healthy yet? Exited?
        let mut healthy = Vec::new();
        for node in self.nodes.values_mut() {
            if node.apply.is_none() {
                continue;
            }
            if let Some(old) = &node.replaces
                && self.away.contains_key(old)
                && node
                    .release()
                    .is_some_and(|(_, status)| status == "applied")
            {
                healthy.push(old.clone());
            }
            let Some(apply) = node.apply.as_mut() else {
                continue;
            };
            if let Some(status) = apply.try_exit() {
                node.applied_ok = Some(status.success());
                node.apply = None;
                if !status.success() {
                    self.stats.failed.push(node.id.clone());
                }
                self.starter.start(
                    &node.id,
                    &node.root,
                    self.world.home(),
                    self.world.path("logs").join(&node.id),
                );
            } else {
                assert!(
                    apply.started.elapsed() < APPLY_TIMEOUT,
                    "driftless apply of {} ran longer than {APPLY_TIMEOUT:?}:\n{}",
                    node.id,
                    apply.stderr()
                );
            }
        }
        for old in healthy {
            if let Some(Some(new)) = self.away.remove(&old) {
                let asked = self
                    .stats
                    .asks
                    .iter()
                    .find(|(id, _)| *id == old)
                    .map_or(now, |(_, at)| *at);
                self.stats.healthy.push((new, now, now - asked));
            }
        }

        // 3. The sample.
        self.stats.samples += 1;
        self.stats.max_away = self.stats.max_away.max(self.away.len());
        if self.sampled.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY) {
            self.sampled = Some(now);
            match self.slots() {
                Some(slots) => self.stats.max_slots = self.stats.max_slots.max(slots),
                None => self.stats.etcd_unanswered += 1,
            }
        }

        // 4. Watchers must not die by themselves.
        for node in self.nodes.values_mut() {
            if let Some(watcher) = node.watcher.as_mut()
                && let Some(status) = watcher.try_exit()
            {
                panic!(
                    "the watcher of {} exited by itself ({status}):\n{}",
                    node.id,
                    watcher.stderr()
                );
            }
        }

        // 5. The cloud replaces nodes whose boot delay is over, and boots
        // the first nodes a few at a time.
        let (due, waiting): (Vec<Asked>, Vec<Asked>) =
            self.asked.drain(..).partition(|a| a.due <= now);
        self.asked = waiting;
        for asked in due {
            self.remove(&asked.id);
            let id = self.new_id();
            self.boot(id, Some(asked.id));
        }
        let booting = self.nodes.values().filter(|n| n.apply.is_some()).count();
        let free = self.options.boot_parallel.saturating_sub(booting);
        let start: Vec<String> = self.queued.drain(..free.min(self.queued.len())).collect();
        for id in start {
            self.boot(id, None);
        }
    }

    /// Removes a node: its processes are killed, its root deleted.
    /// Removes node `id` at once (its processes killed, its root gone), as
    /// a cloud terminating an instance.
    pub fn remove(&mut self, id: &str) {
        if let Some(node) = self.nodes.remove(id) {
            for daemon in [&node.apply, &node.watcher].into_iter().flatten() {
                daemon.kill_now();
            }
            self.reaper.reap(Doomed::Node(Box::new(node)));
        }
    }

    /// The slot keys of the group in etcd, when etcd answers.
    pub fn slots(&self) -> Option<usize> {
        self.etcd
            .try_get_prefix(&format!("/driftless/{GROUP}/slots/"))
            .ok()
            .map(|slots| slots.len())
    }

    /// The failures recorded for `release` in etcd.
    pub fn failures(&self, release: &str) -> usize {
        self.etcd
            .get_prefix(&format!("/driftless/{GROUP}/failures/{release}/"))
            .len()
    }

    /// Ticks until `done` holds; panics after `timeout` with a description
    /// of the fleet. Returns how long it took.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Duration {
        let started = Instant::now();
        for _ in 0..MAX_TICKS {
            let tick = Instant::now();
            self.tick();
            if done(self) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?}\n{}",
                self.describe()
            );
            self.wait_for_next_tick(tick + TICK);
        }
        panic!("{what}: not within {MAX_TICKS} ticks\n{}", self.describe());
    }

    /// Waits until `next`, or less: until a node asks to be replaced, or a
    /// replacement's boot delay is over (the cloud reacts at once to both).
    fn wait_for_next_tick(&self, next: Instant) {
        use std::os::fd::AsFd as _;
        let until = self.asked.iter().map(|a| a.due).fold(next, Instant::min);
        let wait = until.saturating_duration_since(Instant::now());
        let timeout =
            nix::poll::PollTimeout::try_from(wait).unwrap_or(nix::poll::PollTimeout::ZERO);
        let mut fds = [nix::poll::PollFd::new(
            self.ask_events.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, timeout).is_ok_and(|ready| ready > 0) {
            // Drained; the tick lists the directory itself.
            let _ = self.ask_events.read_events();
        }
    }

    /// Ticks for `duration`, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let started = Instant::now();
        self.run_until(
            duration + Duration::from_secs(60),
            "run for a while",
            |_| started.elapsed() >= duration,
        );
    }

    /// Every node is up on `tag` (applied, watching), nobody is being
    /// replaced and every node that was to boot has booted.
    pub fn converged(&self, tag: &str) -> bool {
        self.queued.is_empty()
            && self.asked.is_empty()
            && self.away.is_empty()
            && self.nodes.values().all(|n| {
                n.watcher.is_some()
                    && n.release()
                        .is_some_and(|(t, status)| t == tag && status == "applied")
            })
    }

    /// How many live nodes are on each `(tag, status)`.
    pub fn census(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for node in self.nodes.values() {
            let key = node
                .release()
                .unwrap_or_else(|| ("-".to_owned(), "booting".to_owned()));
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// Nodes away now (asked, replacement not yet healthy).
    pub fn away(&self) -> usize {
        self.away.len()
    }

    /// The process ids of the running watchers.
    pub fn watcher_pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(Node::watcher_pid).collect()
    }

    /// A description for failure messages.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} nodes, census {:?}; {} queued, {} asked and waiting for the cloud, away {:?}; \
             slots in etcd {:?}; stats: {} asks, {} healthy replacements, failed {:?}, crashed {:?}, \
             max away {}, max slots {}\netcd: {}\n",
            self.nodes.len(),
            self.census(),
            self.queued.len(),
            self.asked.len(),
            self.away,
            self.slots(),
            self.stats.asks.len(),
            self.stats.healthy.len(),
            self.stats.failed,
            self.stats.crashed,
            self.stats.max_away,
            self.stats.max_slots,
            self.etcd.log_tail(),
        );
        // Nodes still booting first, then by release (oldest tag first):
        // the ends of their logs say where they stand.
        let mut behind: Vec<&Node> = self.nodes.values().collect();
        behind.sort_by_key(|n| n.release().unwrap_or_default());
        for node in behind.into_iter().take(3) {
            let log = |name: &str| {
                let text =
                    fs::read_to_string(self.log_dir(&node.id).join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(4)..].join("\n")
            };
            text.push_str(&format!(
                "--- {} ({:?})\napply: {}\nwatch: {}\n",
                node.id,
                node.release(),
                log("apply.stderr"),
                log("watch.stderr")
            ));
        }
        text
    }
}

/// What the reaper is given.
enum Doomed {
    /// A watcher powered off: reaped.
    Daemon(Daemon),
    /// A node removed: its processes reaped, then its root deleted.
    Node(Box<Node>),
}

/// Reaps powered-off processes and deletes removed roots on a thread of
/// its own (the caller has SIGKILLed them already). Dropping it waits for
/// everything it was given.
struct Reaper {
    sender: Option<std::sync::mpsc::Sender<Doomed>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Roots it could not delete.
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Reaper {
    fn start() -> Self {
        let (sender, receiver) = std::sync::mpsc::channel::<Doomed>();
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failed = failures.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-reaper".into())
            .spawn(move || {
                for doomed in receiver {
                    match doomed {
                        Doomed::Daemon(daemon) => drop(daemon),
                        Doomed::Node(node) => {
                            let path = node.root.path().to_path_buf();
                            drop(node);
                            if let Err(e) = fs::remove_dir_all(&path) {
                                failed
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push(format!("remove the root {}: {e}", path.display()));
                            }
                        }
                    }
                }
            })
            .expect("start the reaper thread");
        Self {
            sender: Some(sender),
            thread: Some(thread),
            failures,
        }
    }

    fn reap(&self, doomed: Doomed) {
        self.sender
            .as_ref()
            .expect("the reaper runs")
            .send(doomed)
            .expect("the reaper thread runs");
    }

    /// Panics with the first root that could not be deleted.
    fn check(&self) {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(failures.is_empty(), "{}", failures.join("; "));
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts watchers on a thread of its own: a start takes milliseconds on
/// a loaded machine, and a tick waiting for it would see asks late.
struct Starter {
    orders: Option<std::sync::mpsc::Sender<(String, NodeRoot, PathBuf, PathBuf)>>,
    started: std::sync::mpsc::Receiver<(String, Daemon)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Starter {
    fn run() -> Self {
        let (orders, received) = std::sync::mpsc::channel::<(String, NodeRoot, PathBuf, PathBuf)>();
        let (done, started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fleet-starter".into())
            .spawn(move || {
                for (id, root, home, logs) in received {
                    let watcher = Daemon::start(&root, &home, &logs, &[]);
                    if done.send((id, watcher)).is_err() {
                        return;
                    }
                }
            })
            .expect("start the starter thread");
        Self {
            orders: Some(orders),
            started,
            thread: Some(thread),
        }
    }

    /// Starts the watcher of node `id` (see [`Starter::started`]).
    fn start(&self, id: &str, root: &NodeRoot, home: PathBuf, logs: PathBuf) {
        self.orders
            .as_ref()
            .expect("the starter runs")
            .send((id.to_owned(), root.clone(), home, logs))
            .expect("the starter thread runs");
    }

    /// The watchers started since the last call, with their nodes' ids;
    /// panics with the starter's own message if a start failed (its thread
    /// then ended, and no later watcher would start).
    fn started(&mut self) -> Vec<(String, Daemon)> {
        let started: Vec<(String, Daemon)> = self.started.try_iter().collect();
        if self
            .thread
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
            && let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("starting a watcher failed: {message}");
        }
        started
    }
}

impl Drop for Starter {
    fn drop(&mut self) {
        drop(self.orders.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Watchers started but never handed over are killed as they drop.
    }
}
