//! Channel fixtures for the `driftless watch` end-to-end tests.
//!
//! * [`ChannelBranch`]: a work tree of the channel branch whose commits
//!   are made the operator's way, with the built `driftless channel`
//!   (init, promote, rollback, hold, release, refresh: signed with the
//!   given key), or crafted by hand for hostile tests (`channel.yaml`
//!   written as given, signed with `git commit -S` and gpg.format=ssh, or
//!   unsigned), and pushed to `refs/heads/channel` of a bare repository
//!   under the world's `srv/`, normally or with `--force`.
//! * [`NodeConfig`]: the agent config of a watching node (`release: {channel}`
//!   or `{tag}`, `replace`, `failure`, `channel.poll_interval`, metrics).
//! * [`ExecAction`]: a `replace.action: exec` script that records each call
//!   (argv and environment) as one directory, moved into place atomically.
//! * [`Daemon`]: `driftless watch` running in the background, in a process
//!   group led by an anchor that kills it should the test process die.
//! * [`Fleet`]: one test's world with the trusted release key, releases
//!   `v1` and `v2` signed by it, and the channel branch.
//!
//! Include it after `servers.rs` and `release.rs`:
//! `#[path = "support/channel.rs"] mod channel;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::release::{
    FAST_FETCH, Key, NodeRoot, PRINCIPAL, Published, REPO, Release, Run, Tagging, World,
};
use crate::servers::{isolate_git_env, run_bounded, spawn_anchor, wait_for};

/// The channel branch name (and so `refs/heads/channel`).
pub const BRANCH: &str = "channel";
/// The full channel ref.
pub const CHANNEL_REF: &str = "refs/heads/channel";
/// The watcher's record, as a node path.
pub const WATCH_JSON: &str = "/var/lib/driftless/watch.json";
/// The metrics file the configs ask for, as a node path.
pub const METRICS_FILE: &str = "/var/lib/driftless/metrics.prom";
/// Where webhook configs keep the shared secret, as a node path.
pub const SECRET_FILE: &str = "/etc/driftless/webhook-secret";
/// How long a stopped daemon may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The channel branch
// ---------------------------------------------------------------------------

/// Who signs a channel commit.
#[derive(Clone, Copy, Debug)]
pub enum Signing<'a> {
    /// `git commit -S` with this key.
    Signed(&'a Key),
    /// A plain commit without a signature.
    Unsigned,
}

/// A work tree for the channel branch of one bare repository.
pub struct ChannelBranch<'w> {
    /// The world the repositories live in.
    world: &'w World,
    /// The work tree.
    work: PathBuf,
    /// The bare repository pushed to.
    bare: PathBuf,
}

impl<'w> ChannelBranch<'w> {
    /// A fresh work tree `work/NAME` (no commits yet) pushing to
    /// `srv/REPO`, which must exist.
    pub fn new(world: &'w World, repo: &str, name: &str) -> Self {
        let work = world.path("work").join(name);
        let bare = world.srv().join(repo);
        assert!(bare.is_dir(), "{} does not exist", bare.display());
        let format = format!("--object-format={}", world.object_format());
        world.tool(
            world
                .git()
                .args(["init", "-q", "-b", BRANCH, &format])
                .arg(&work),
        );
        Self { world, work, bare }
    }

    /// The work tree `work/NAME` made earlier by [`ChannelBranch::new`].
    pub fn reopen(world: &'w World, repo: &str, name: &str) -> Self {
        let work = world.path("work").join(name);
        assert!(
            work.join(".git").is_dir(),
            "{} is not a work tree",
            work.display()
        );
        Self {
            world,
            work,
            bare: world.srv().join(repo),
        }
    }

    /// `git -C WORK` with the world's isolated environment.
    fn git(&self) -> Command {
        let mut cmd = self.world.git();
        cmd.arg("-C").arg(&self.work);
        cmd
    }

    /// Commits `channel.yaml` with `text`, signed as `signing` says; returns
    /// the commit id. Nothing is pushed.
    pub fn commit(&self, text: &str, signing: Signing<'_>, message: &str) -> String {
        fs::write(self.work.join("channel.yaml"), text).expect("write channel.yaml");
        self.world.tool(self.git().args(["add", "channel.yaml"]));
        let mut cmd = self.git();
        if let Signing::Signed(key) = signing {
            cmd.args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingKey={}", key.private.display()))
                .args(["commit", "-q", "-S", "--allow-empty", "-m", message]);
        } else {
            cmd.args([
                "commit",
                "-q",
                "--no-gpg-sign",
                "--allow-empty",
                "-m",
                message,
            ]);
        }
        self.world.tool(&mut cmd);
        self.head()
    }

    /// Writes `name` (beside `channel.yaml`) with `text` and stages it for
    /// the next commit.
    pub fn stage(&self, name: &str, text: impl AsRef<[u8]>) {
        fs::write(self.work.join(name), text).expect("write a channel file");
        self.world.tool(self.git().args(["add", name]));
    }

    /// The work tree's HEAD commit.
    pub fn head(&self) -> String {
        self.world.tool(self.git().args(["rev-parse", "HEAD"]))
    }

    /// The channel document at HEAD, as text.
    pub fn document(&self) -> String {
        fs::read_to_string(self.work.join("channel.yaml")).expect("read channel.yaml")
    }

    /// A field of the document at HEAD (`sequence`, `release`, …).
    pub fn field(&self, name: &str) -> String {
        field(&self.document(), name)
    }

    /// The document at HEAD with the sequence one higher and `edits`
    /// applied (each `(field, value)` replaces that field's line): the
    /// next document as a hand-crafted commit would carry it.
    pub fn next_document(&self, edits: &[(&str, &str)]) -> String {
        let text = self.document();
        let sequence: u64 = field(&text, "sequence").parse().expect("a sequence");
        let mut next = set_field(&text, "sequence", &(sequence + 1).to_string());
        for (name, value) in edits {
            next = set_field(&next, name, value);
        }
        next
    }

    /// `driftless channel ARGS… --repo WORK` with the world's trust file
    /// (`keys/allowed_signers`, trusting the fleet's key) and `extra`
    /// flags, signed with `key`; the tags of the served repository are
    /// fetched first. Returns how it ran (not checked).
    pub fn driftless(&self, key: &Key, args: &[&str], extra: &[&str]) -> Run {
        self.world.tool(
            self.git()
                .args(["fetch", "-q", "--force"])
                .arg(&self.bare)
                .arg("refs/tags/*:refs/tags/*"),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
        isolate_git_env(&mut cmd, &self.world.home());
        cmd.env("GIT_COMMITTER_NAME", "Release Bot")
            .env("GIT_COMMITTER_EMAIL", PRINCIPAL)
            .env("GIT_AUTHOR_NAME", "Release Bot")
            .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
            .env("TZ", "UTC")
            .arg("channel")
            .args(args)
            .arg("--repo")
            .arg(&self.work);
        if args.first() != Some(&"show") {
            cmd.arg("--signing-key").arg(&key.private);
        }
        cmd.args(extra);
        if !extra.contains(&"--allowed-signers") {
            cmd.arg("--allowed-signers")
                .arg(self.world.path("keys").join("allowed_signers"));
        }
        let shown = format!("driftless channel {}", args.join(" "));
        let done = run_bounded(&mut cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{shown}: {e:#}"));
        Run::from_finished(shown, done)
    }

    /// [`ChannelBranch::driftless`], which must succeed; returns the new HEAD.
    pub fn channel(&self, key: &Key, args: &[&str], extra: &[&str]) -> String {
        self.driftless(key, args, extra).ok();
        self.head()
    }

    /// Pushes HEAD to the channel ref (a fast-forward; git refuses others).
    pub fn push(&self) {
        self.world.tool(
            self.git()
                .args(["push", "-q"])
                .arg(&self.bare)
                .arg(format!("HEAD:{CHANNEL_REF}")),
        );
    }

    /// Pushes HEAD to the channel ref with `--force`.
    pub fn force_push(&self) {
        self.world.tool(
            self.git()
                .args(["push", "-q", "--force"])
                .arg(&self.bare)
                .arg(format!("HEAD:{CHANNEL_REF}")),
        );
    }

    /// Names `tag` with `driftless channel` signed by `key` (`init` on a
    /// branch without a document, `refresh` when it names `tag` already,
    /// else `promote`), with the rollout settings of `extra` (YAML lines:
    /// `hold: true` holds after the move; `canary`, `waves`,
    /// `wave_interval`, `max_failures` become flags), and pushes it;
    /// returns the new tip.
    pub fn promote(&self, key: &Key, tag: &str, extra: &str) -> String {
        let mut flags: Vec<String> = Vec::new();
        let mut hold = None;
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_once(':').expect("extra lines are `key: value`");
            let value = value.trim().to_owned();
            match name.trim() {
                "hold" => hold = Some(value == "true"),
                other => {
                    flags.push(format!("--{}", other.replace('_', "-")));
                    flags.push(value);
                }
            }
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let has_document = self.work.join("channel.yaml").exists();
        if !has_document {
            let mut args = vec!["init", tag];
            args.extend(&flags);
            self.channel(key, &args, &[]);
        } else if self.field("release") == tag && flags.is_empty() {
            if hold == Some(false) && self.field("hold") == "true" {
                self.channel(key, &["release"], &[]);
            } else {
                self.channel(key, &["refresh"], &[]);
            }
        } else {
            let mut args = vec!["promote", tag];
            args.extend(&flags);
            self.channel(key, &args, &[]);
        }
        if hold == Some(true) && self.field("hold") != "true" {
            self.channel(key, &["hold"], &[]);
        }
        self.push();
        self.head()
    }

    /// `git reset --hard COMMIT` in the work tree (nothing is pushed).
    pub fn reset_hard(&self, commit: &str) {
        self.world
            .tool(self.git().args(["reset", "-q", "--hard", commit]));
    }

    /// What the bare repository's channel ref names.
    pub fn served_tip(&self) -> String {
        self.world.tool(
            self.world
                .git()
                .arg("--git-dir")
                .arg(&self.bare)
                .args(["rev-parse", CHANNEL_REF]),
        )
    }

    /// Whether `ancestor` is an ancestor of `descendant` in the work tree.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> bool {
        let shown = format!("git merge-base --is-ancestor {ancestor} {descendant}");
        let status = self
            .git()
            .args(["merge-base", "--is-ancestor", ancestor, descendant])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{shown}: {e}"));
        status.success()
    }
}

/// The value of a top-level field of a channel document.
pub fn field(document: &str, name: &str) -> String {
    document
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in\n{document}"))
        .trim()
        .trim_matches('\'')
        .to_owned()
}

/// `document` with the line of field `name` set to `value` (added when
/// there is none).
pub fn set_field(document: &str, name: &str, value: &str) -> String {
    let prefix = format!("{name}: ");
    let mut found = false;
    let mut out: Vec<String> = document
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{prefix}{value}"));
    }
    out.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// A fleet's releases
// ---------------------------------------------------------------------------

/// One test's fleet: a world with the trusted release key, releases `v1`
/// and `v2` (healthy, signed by it) in `srv/release.git`, and the channel
/// branch `work/channel` pushing to it.
pub struct Fleet {
    /// Everything lives here.
    pub world: World,
    /// The trusted release (and channel) key.
    pub key: Key,
    /// Release `v1`.
    pub v1: Published,
    /// Release `v2`.
    pub v2: Published,
}

impl Fleet {
    /// Makes the key and publishes `v1`, then `v2`.
    pub fn new() -> Self {
        let world = World::new();
        let key = world.keygen("release");
        write_trust(&world, "allowed_signers", &[&key]);
        let publish = |tag: &str| {
            world.publish(
                REPO,
                &release_tree(tag, "/bin/true"),
                tag,
                Tagging::Signed(&key),
            )
        };
        let v1 = publish("v1");
        let v2 = publish("v2");
        Self { world, key, v1, v2 }
    }

    /// Publishes one more release `tag`, signed by the fleet's key, whose
    /// health check is `health`.
    pub fn publish(&self, tag: &str, health: &str) -> Published {
        self.world.publish(
            REPO,
            &release_tree(tag, health),
            tag,
            Tagging::Signed(&self.key),
        )
    }

    /// The channel branch's work tree (`work/channel`), made fresh.
    pub fn channel(&self) -> ChannelBranch<'_> {
        ChannelBranch::new(&self.world, REPO, "channel")
    }

    /// The channel branch's work tree made earlier by [`Fleet::channel`].
    pub fn channel_reopen(&self) -> ChannelBranch<'_> {
        ChannelBranch::reopen(&self.world, REPO, "channel")
    }

    /// A fresh root `roots/NAME` configured with `config`, trusting the key.
    pub fn node(&self, name: &str, config: &NodeConfig) -> NodeRoot {
        let root = self.world.root(name);
        config.install(&root, &self.key);
        root
    }

    /// `driftless watch` of `root` in the background ([`Daemon::start`]),
    /// with the world's HOME, `env` added and its output in the world's
    /// directory `log_dir`.
    pub fn daemon(&self, root: &NodeRoot, log_dir: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start(root, &self.world.home(), &self.world.path(log_dir), env)
    }
}

// ---------------------------------------------------------------------------
// Node configs
// ---------------------------------------------------------------------------

/// Writes `keys/NAME`, an allowed_signers file trusting `keys` as
/// [`PRINCIPAL`]; returns its path.
pub fn write_trust(world: &World, name: &str, keys: &[&Key]) -> PathBuf {
    let path = world.path("keys").join(name);
    let text: String = keys
        .iter()
        .map(|k| format!("{}\n", k.allowed(PRINCIPAL)))
        .collect();
    fs::write(&path, text).expect("write a trust file");
    path
}

/// What a node is pinned to.
#[derive(Clone, Debug)]
pub enum Pin {
    /// `release: {channel: NAME}`: resolved from the channel at first boot.
    Channel(String),
    /// `release: {tag: TAG}`.
    Tag(String),
}

/// A release tree that writes `/etc/motd` naming `tag` and whose health
/// check is `health` (an absolute program).
pub fn release_tree(tag: &str, health: &str) -> Release {
    Release::new(&format!(
        "files:\n  - {{ path: /etc/motd, content: \"release {tag}\\n\" }}\n\
         health:\n  - exec: [{health}]\n    timeout: 1s\n"
    ))
}

/// The agent config of a watching node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `source.url`.
    pub url: String,
    /// `source.kind`, when set (`static`).
    pub kind: Option<String>,
    /// `release`.
    pub pin: Pin,
    /// The `replace:` value (a YAML flow mapping).
    pub replace: String,
    /// `failure: {policy: replace}` when true.
    pub failure_replace: bool,
    /// `channel.poll_interval`.
    pub poll_interval: String,
    /// `metrics_file:` [`METRICS_FILE`] when true.
    pub metrics: bool,
    /// More top-level YAML appended as is (e.g. a `rollout:` section).
    pub extra: String,
    /// `channel.fleet`, when set.
    pub fleet: Option<String>,
    /// The `clock:` value (a YAML flow mapping); by default the node does
    /// not wait for a synchronized clock (a test machine may never say).
    pub clock: String,
    /// `trust.channel_signers` and `trust.refresh_signers` lines, when the
    /// node has roles of their own: written to `/etc/driftless/`.
    pub channel_signers: Option<Vec<String>>,
    /// See `channel_signers`.
    pub refresh_signers: Option<Vec<String>>,
}

impl NodeConfig {
    /// A node of `url` started from the channel, replaced as `replace` says
    /// (a YAML flow mapping), polling every second.
    pub fn new(url: &str, replace: &str) -> Self {
        Self {
            url: url.to_owned(),
            kind: None,
            pin: Pin::Channel(BRANCH.to_owned()),
            replace: replace.to_owned(),
            failure_replace: false,
            poll_interval: "1s".to_owned(),
            metrics: false,
            extra: String::new(),
            fleet: None,
            clock: "{sync: ignore}".to_owned(),
            channel_signers: None,
            refresh_signers: None,
        }
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).expect("a string serialises");
        let release = match &self.pin {
            Pin::Channel(name) => format!("{{channel: {}}}", quote(name)),
            Pin::Tag(tag) => format!("{{tag: {}}}", quote(tag)),
        };
        let mut trust = "trust:\n  allowed_signers: /etc/driftless/allowed_signers\n".to_owned();
        if self.channel_signers.is_some() {
            trust.push_str("  channel_signers: /etc/driftless/channel_signers\n");
        }
        if self.refresh_signers.is_some() {
            trust.push_str("  refresh_signers: /etc/driftless/refresh_signers\n");
        }
        let fleet = self
            .fleet
            .as_ref()
            .map(|f| format!(", fleet: {}", quote(f)))
            .unwrap_or_default();
        let kind = self
            .kind
            .as_ref()
            .map(|k| format!("  kind: {}\n", quote(k)))
            .unwrap_or_default();
        let mut text = format!(
            "source:\n  url: {}\n{kind}\
             {trust}\
             release: {release}\n\
             fetch: {FAST_FETCH}\n\
             lock: {{mode: off}}\n\
             channel: {{poll_interval: {}{fleet}}}\n\
             clock: {}\n\
             replace: {}\n",
            quote(&self.url),
            quote(&self.poll_interval),
            self.clock,
            self.replace,
        );
        if self.failure_replace {
            text.push_str("failure: {policy: replace}\n");
        }
        if self.metrics {
            text.push_str(&format!("metrics_file: {METRICS_FILE}\n"));
        }
        text.push_str(&self.extra);
        text
    }

    /// Writes the config, and the trust file trusting `key`, into `root`.
    pub fn install(&self, root: &NodeRoot, key: &Key) {
        root.trust(&[key.allowed(PRINCIPAL)]);
        for (name, lines) in [
            ("channel_signers", &self.channel_signers),
            ("refresh_signers", &self.refresh_signers),
        ] {
            if let Some(lines) = lines {
                root.write(&format!("/etc/driftless/{name}"), lines.join("\n") + "\n");
            }
        }
        root.write("/etc/driftless/agent.yaml", self.render());
    }
}

/// The watcher's record of `root`, parsed (null when there is none).
pub fn watch_json(root: &NodeRoot) -> serde_json::Value {
    match fs::read_to_string(root.host(WATCH_JSON)) {
        Ok(text) => serde_json::from_str(&text).expect("watch.json is JSON"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
        Err(e) => panic!("read {WATCH_JSON}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// The exec action
// ---------------------------------------------------------------------------

/// One call of an [`ExecAction`].
#[derive(Clone, Debug)]
pub struct Call {
    /// The arguments after the script's path.
    pub args: Vec<String>,
    /// The whole environment the script saw.
    pub env: BTreeMap<String, String>,
}

impl Call {
    /// An environment variable, or "" when absent.
    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).map_or("", String::as_str)
    }
}

/// A `replace.action: exec` script, run as `/bin/sh SCRIPT ARGS…` (read, not
/// executed, so a fresh file never meets ETXTBSY). Each call writes its
/// argv and environment (NUL-separated) into a temporary directory, then
/// renames it into `calls/`, so a reader never sees half a call.
pub struct ExecAction {
    /// The script.
    script: PathBuf,
    /// Where calls are recorded.
    calls: PathBuf,
}

impl ExecAction {
    /// Writes the script `actions/NAME.sh` and its record directory; the
    /// script exits with `exit_code`.
    pub fn new(world: &World, name: &str, exit_code: u8) -> Self {
        let dir = world.path("actions");
        fs::create_dir_all(&dir).expect("create the actions directory");
        let calls = dir.join(format!("{name}.calls"));
        fs::create_dir(&calls).expect("create the calls directory");
        let script = dir.join(format!("{name}.sh"));
        let quoted = shell_quote(&calls.display().to_string());
        fs::write(
            &script,
            format!(
                "set -eu\n\
                 calls={quoted}\n\
                 tmp=$(mktemp -d \"$calls/.tmp.XXXXXX\")\n\
                 printf '%s\\0' \"$@\" > \"$tmp/args\"\n\
                 env -0 > \"$tmp/env\"\n\
                 mv \"$tmp\" \"$calls/call.${{tmp##*.}}\"\n\
                 exit {exit_code}\n"
            ),
        )
        .expect("write the action script");
        Self { script, calls }
    }

    /// The `replace:` flow mapping that runs this script with `args` before
    /// the reason.
    pub fn replace_yaml(&self, args: &[&str]) -> String {
        let mut argv = vec!["/bin/sh".to_owned(), self.script.display().to_string()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        format!(
            "{{action: exec, command: {}, timeout: 5s}}",
            serde_json::to_string(&argv).expect("argv serialises")
        )
    }

    /// Every call recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.calls)
            .expect("list the calls")
            .map(|e| e.expect("calls entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("call."))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|dir| {
                let split = |file: &str| -> Vec<String> {
                    let bytes = fs::read(dir.join(file)).expect("read a call record");
                    bytes
                        .split(|b| *b == 0)
                        .filter(|part| !part.is_empty())
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect()
                };
                let env = split("env")
                    .into_iter()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    })
                    .collect();
                Call {
                    args: split("args"),
                    env,
                }
            })
            .collect()
    }

    /// The calls once there are at least `count`, waiting up to `timeout`.
    pub fn wait_for_calls(&self, count: usize, timeout: Duration) -> Option<Vec<Call>> {
        wait_for(timeout, || {
            let calls = self.calls();
            (calls.len() >= count).then_some(calls)
        })
    }
}

/// `'text'` for a shell script.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request id a node computes (SHA-256 over node id, pinned commit,
/// desired tag and reason, each followed by NUL), recomputed independently.
pub fn expected_request_id(
    node_id: &str,
    pinned_commit: &str,
    desired: &str,
    reason: &str,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for field in [node_id, pinned_commit, desired, reason] {
        ctx.update(field.as_bytes());
        ctx.update(b"\0");
    }
    hex(ctx.finish().as_ref())
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// How a [`Daemon`] ended.
#[derive(Debug)]
pub struct DaemonExit {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Whether it had to be killed because it ignored SIGTERM.
    pub killed: bool,
}

impl DaemonExit {
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?}, signal {:?}, killed {}\n--- stderr\n{}",
            self.status.code(),
            self.status.signal(),
            self.killed,
            self.stderr
        )
    }
}

/// `driftless watch --root ROOT` (or another subcommand, see
/// [`Daemon::spawn`]) in the background. Its output goes to
/// files (a pipe nobody reads could fill). It joins a process group led by
/// an idle `/bin/sh` reading a pipe this struct holds: when the test
/// process dies without unwinding, the pipe closes and the anchor SIGKILLs
/// the group, so no watcher outlives the tests. Dropping it kills it.
pub struct Daemon {
    /// The watcher.
    child: Option<Child>,
    /// The group leader.
    anchor: Child,
    /// The anchor's stdin; closing it kills the group.
    anchor_stdin: Option<ChildStdin>,
    /// The watcher's stderr file.
    stderr: PathBuf,
    /// When it was started.
    pub started: Instant,
}

impl Daemon {
    /// Starts `driftless watch --root ROOT` with `env` added to a cleared
    /// environment; `log_dir` receives its output files.
    pub fn start(root: &NodeRoot, home: &Path, log_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn("watch", root, home, log_dir, env)
    }

    /// Starts `driftless SUBCOMMAND --root ROOT` the same way (output in
    /// `log_dir/SUBCOMMAND.{stdout,stderr}`): e.g. an `apply` that runs
    /// while the test does other things.
    pub fn spawn(
        subcommand: &str,
        root: &NodeRoot,
        home: &Path,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let mut anchor = spawn_anchor().expect("start the process-group anchor");
        let anchor_stdin = anchor.stdin.take();
        fs::create_dir_all(log_dir).expect("create the daemon log directory");
        let stdout = log_dir.join(format!("{subcommand}.stdout"));
        let stderr = log_dir.join(format!("{subcommand}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .arg(subcommand)
            .arg("--root")
            .arg(root.path())
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create the stdout file"))
            .stderr(fs::File::create(&stderr).expect("create the stderr file"))
            .process_group(i32::try_from(anchor.id()).expect("pids fit in i32"));
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start driftless {subcommand}: {e}"));
        Self {
            child: Some(child),
            anchor,
            anchor_stdin,
            stderr,
            started: Instant::now(),
        }
    }

    /// SIGKILLs its whole process group (the anchor, the daemon and its
    /// children) without waiting: a power-off that takes effect at once.
    /// Dropping it afterwards reaps them.
    pub fn kill_now(&self) {
        let group =
            nix::unistd::Pid::from_raw(i32::try_from(self.anchor.id()).expect("pids fit in i32"));
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }

    /// Its process id while it runs (not yet reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its exit status if it has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for the watcher"))
    }

    /// Waits up to `timeout` for it to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<DaemonExit> {
        let status = wait_for(timeout, || self.try_exit())?;
        self.child = None;
        Some(DaemonExit {
            status,
            stderr: self.stderr(),
            killed: false,
        })
    }

    /// Sends SIGTERM and waits for it to exit ([`STOP_TIMEOUT`], then SIGKILL).
    pub fn stop(mut self) -> DaemonExit {
        let mut child = self.child.take().expect("the watcher is running");
        if let Some(status) = child.try_wait().expect("wait for the watcher") {
            return DaemonExit {
                status,
                stderr: self.stderr(),
                killed: false,
            };
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = wait_for(STOP_TIMEOUT, || {
            child.try_wait().expect("wait for the watcher")
        });
        let (status, killed) = match exited {
            Some(status) => (status, false),
            None => {
                let _ = child.kill();
                (child.wait().expect("reap the watcher"), true)
            }
        };
        DaemonExit {
            status,
            stderr: self.stderr(),
            killed,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // EOF on its stdin makes the anchor SIGKILL the rest of the group.
        drop(self.anchor_stdin.take());
        let _ = wait_for(STOP_TIMEOUT, || self.anchor.try_wait().ok().flatten());
        let _ = self.anchor.kill();
        let _ = self.anchor.wait();
    }
}
