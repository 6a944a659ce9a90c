//! Real git servers on 127.0.0.1 for end-to-end transport tests.
//!
//! * [`GitDaemon`]: `git daemon --inetd` behind an in-process accept loop
//!   (git://).
//! * [`SmartHttp`]: nginx + fcgiwrap + `git-http-backend` over plain HTTP and
//!   HTTPS (a throw-away CA made with the `openssl` CLI), protocol v2 passed
//!   through, with a parsed access log for measuring request costs.
//! * [`FaultProxy`]: a TCP proxy that forwards, cuts or stalls the
//!   server-to-client stream after a byte budget.
//! * [`closed_port_url`]: an address nobody listens on (connection refused).
//! * Helpers every test and benchmark that includes this file shares:
//!   [`wait_for`], a bounded wait for a condition; [`noise`], bytes that do
//!   not compress, to make packs of a known size; [`unlock_tree`] and
//!   [`unlock`], which clear the immutable attribute the agent's lock sets;
//!   [`spawn_anchor`], the leader of a process group that dies with the
//!   test process.
//!
//! Rules every server keeps: it binds only 127.0.0.1 on an ephemeral port,
//! lives in its own temporary directory, every wait and loop is bounded in
//! time and count, and dropping it stops it. Child processes run in a
//! process group anchored by a tiny `/bin/sh` that holds the read end of a
//! pipe: dropping the server sends the group SIGTERM then SIGKILL, and if the
//! test process dies without unwinding, the pipe closes and the anchor
//! SIGKILLs the group, so no daemon outlives the tests.
//!
//! Include it with `#[path = "support/servers.rs"] mod servers;`; it uses
//! only std, tempfile and anyhow.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

/// How long a server may take to become ready before `start` fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for a graceful exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Hard cap on the life of any background loop, so a leaked server still ends.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Most connections one accept loop takes before it stops accepting.
const MAX_CONNECTIONS: u64 = 10_000;
/// Sleep between polls of a bounded wait.
const POLL: Duration = Duration::from_millis(10);
/// Sleep between probes of [`wait_for`].
const WAIT_TICK: Duration = Duration::from_millis(20);
/// Socket read/write timeout of the proxy: how quickly it notices a stop.
const TICK: Duration = Duration::from_millis(50);
/// Fresh port pairs nginx is tried on when another process took a port first.
const BIND_ATTEMPTS: u32 = 5;
/// fcgiwrap processes (each single-process, on its own socket) behind nginx.
const FCGIWRAP_INSTANCES: usize = 2;
/// Timeout of the helper commands (`openssl`, `git --exec-path`).
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables that would make a git command depend on its caller
/// (repository discovery, config, credentials, tracing, proxies, CA stores).
const LEAKY_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_EXEC_PATH",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_PROTOCOL",
    "GIT_SSL_NO_VERIFY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_SSL_CERT",
    "GIT_SSL_KEY",
    "GIT_HTTP_LOW_SPEED_LIMIT",
    "GIT_HTTP_LOW_SPEED_TIME",
    "GIT_HTTP_USER_AGENT",
    "GIT_CURL_VERBOSE",
    "GIT_TRACE",
    "GIT_TRACE2",
    "GIT_TRACE2_EVENT",
    "GIT_TRACE2_PERF",
    "GIT_TRACE_PACKET",
    "GIT_TRACE_CURL",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_PROXY_COMMAND",
    "GIT_ALLOW_PROTOCOL",
    "GIT_PROTOCOL_FROM_USER",
    "XDG_CONFIG_HOME",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
];

// ---------------------------------------------------------------------------
// Small public helpers
// ---------------------------------------------------------------------------

/// Waits up to `timeout` for `probe` to give a value; `None` after that.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(WAIT_TICK);
    }
}

/// `len` bytes that do not compress (xorshift64*), so a pack holding them
/// is about `len` bytes long.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Clears the immutable attribute the agent's lock sets (`chattr +i`) on
/// everything under `path` (`chattr -R -i`; symlinks are skipped by
/// chattr, errors ignored), e.g. so that a temporary directory can be
/// removed.
pub fn unlock_tree(path: &Path) {
    chattr_clear(&["-R", "-i"], path);
}

/// Clears the immutable attribute on one file or directory, as a root user
/// set on editing a locked node would (`chattr -i`). Best effort: where the
/// filesystem has no such attribute, nothing was locked either.
pub fn unlock(path: &Path) {
    chattr_clear(&["-i"], path);
}

/// `chattr FLAGS… PATH`, quietly, whatever it answers.
fn chattr_clear(flags: &[&str], path: &Path) {
    let _ = Command::new("chattr")
        .args(flags)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `127.0.0.1:port`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A non-blocking listener on an ephemeral port of 127.0.0.1, for an
/// accept loop that must notice when to stop; and its address.
fn listen_nonblocking() -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(localhost(0)).context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("local address")?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok((listener, addr))
}

/// A port on 127.0.0.1 that nobody listened on a moment ago: bound on port
/// 0, then released. Connecting to it is refused (unless another process
/// happens to take the same ephemeral port, which the kernel makes unlikely).
pub fn closed_port() -> Result<u16> {
    let listener = TcpListener::bind(localhost(0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// `SCHEME://127.0.0.1:PORT/nothing.git` on a [`closed_port`]: a server
/// that refuses connections.
pub fn closed_port_url(scheme: &str) -> Result<String> {
    Ok(format!(
        "{scheme}://127.0.0.1:{}/nothing.git",
        closed_port()?
    ))
}

/// Applies an isolated git environment to `cmd`: `HOME=home`, no system or
/// global config, no terminal prompts, and none of the caller's `GIT_*`,
/// proxy or CA-store variables ([`LEAKY_ENV`]).
pub fn isolate_git_env<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    for name in LEAKY_ENV {
        cmd.env_remove(name);
    }
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env("LC_ALL", "C")
}

/// `git` with [`isolate_git_env`] applied.
pub fn git_command(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    isolate_git_env(&mut cmd, home);
    cmd
}

/// The result of [`run_bounded`].
#[derive(Debug)]
pub struct Finished {
    /// Exit status, or `None` when the command was killed for running too long.
    pub status: Option<ExitStatus>,
    /// Everything the command wrote to stdout.
    pub stdout: String,
    /// Everything the command wrote to stderr.
    pub stderr: String,
    /// Wall-clock time from spawn to exit (or to the kill).
    pub elapsed: Duration,
}

impl Finished {
    /// Whether the command exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Whether the command was killed at the timeout.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// A one-paragraph description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it (and
/// every process in its process group, which it leads) if it runs longer
/// than `timeout`. Sets `cmd`'s process group.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let stdout = child.stdout.take().map(reader_thread);
    let stderr = child.stderr.take().map(reader_thread);
    let deadline = start + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Not reaped yet, so the group id cannot have been reused.
            signal_group(child.id(), "KILL");
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    Ok(Finished {
        status,
        stdout: join_reader(stdout),
        stderr: join_reader(stderr),
        elapsed,
    })
}

/// Reads a pipe to its end in a thread.
fn reader_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Collects a [`reader_thread`]'s output, waiting at most [`STOP_TIMEOUT`]
/// (a grandchild that escaped the process group could hold the pipe open).
fn join_reader(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    let Some(handle) = handle else {
        return String::new();
    };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    if !handle.is_finished() {
        return "<output still open: a process outlived the command>".to_owned();
    }
    match handle.join() {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => "<reader thread panicked>".to_owned(),
    }
}

/// Runs a helper tool and fails with its output unless it succeeds.
fn run_tool(cmd: &mut Command, what: &str) -> Result<Finished> {
    let done = run_bounded(cmd, TOOL_TIMEOUT).with_context(|| what.to_owned())?;
    ensure!(done.success(), "{what} failed: {}", done.describe());
    Ok(done)
}

/// git's exec path (`git --exec-path`), where `git-http-backend` and
/// `git-daemon` live.
fn git_exec_path() -> Result<PathBuf> {
    static EXEC_PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    EXEC_PATH
        .get_or_init(|| {
            let mut cmd = Command::new("git");
            cmd.arg("--exec-path").env_remove("GIT_EXEC_PATH");
            run_tool(&mut cmd, "git --exec-path")
                .map(|done| PathBuf::from(done.stdout.trim()))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The git helper program `name` (`git-daemon`, `git-http-backend`) in
/// git's exec path, which must exist.
fn git_helper(name: &str) -> Result<PathBuf> {
    let program = git_exec_path()?.join(name);
    ensure!(
        program.exists(),
        "{} not found: {name} is part of Debian's `git` package",
        program.display()
    );
    Ok(program)
}

/// Finds `name` on PATH or in the sbin directories, which a non-root PATH
/// on Debian lacks (nginx and fcgiwrap live in /usr/sbin).
pub fn find_program(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{name} not found on PATH or in /usr/sbin: install the Debian package `{package}`"
            )
        })
}

/// A string unique to this call within the machine (pid, time, counter).
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh temporary directory for one server.
fn server_dir(kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("driftless-{kind}-"))
        .tempdir()
        .with_context(|| format!("creating the {kind} temporary directory"))
}

/// `base_dir` made absolute, after checking it is a directory.
fn absolute_dir(base_dir: &Path) -> Result<PathBuf> {
    let base = fs::canonicalize(base_dir)
        .with_context(|| format!("resolving the base directory {}", base_dir.display()))?;
    ensure!(base.is_dir(), "{} is not a directory", base.display());
    Ok(base)
}

/// Joins a base URL and a repository path relative to the served base dir.
fn repo_url(base: &str, repo: &str) -> String {
    format!("{base}/{}", repo.trim_start_matches('/'))
}

// ---------------------------------------------------------------------------
// Process groups
// ---------------------------------------------------------------------------

/// Sends `signal` (a name such as `TERM`) to every process in group `pgid`.
fn signal_group(pgid: u32, signal: &str) {
    // std has no kill(2) and unsafe code is denied; dash's builtin kill needs
    // `-s NAME --` before a negative (group) id.
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("kill -s {signal} -- -{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` until `deadline`; true once it has exited.
fn wait_until(child: &mut Child, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(POLL),
        }
    }
}

/// Waits for `child` up to `timeout`, then SIGKILLs and reaps it.
fn wait_or_kill(child: &mut Child, timeout: Duration) {
    if !wait_until(child, Instant::now() + timeout) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process group whose leader is an idle `/bin/sh` ("anchor") reading a
/// pipe we hold: members join the group with [`ProcessGroup::spawn`] or
/// [`join_group`]. Stopping sends SIGTERM to the group (the anchor ignores
/// it), waits, then closes the pipe, on which the anchor SIGKILLs the whole
/// group, itself included. If this process dies, the pipe closes too.
pub struct ProcessGroup {
    /// The group leader.
    anchor: Child,
    /// The write end of the anchor's stdin; closing it sweeps the group.
    anchor_stdin: Option<ChildStdin>,
    /// Members spawned through [`ProcessGroup::spawn`].
    pub members: Vec<Child>,
}

/// Starts an anchor: an idle `/bin/sh` leading a process group of its
/// own, which ignores SIGTERM and, once its stdin (a pipe the caller
/// holds) reaches EOF, SIGKILLs the whole group, itself included.
pub fn spawn_anchor() -> io::Result<Child> {
    Command::new("/bin/sh")
        .args(["-c", "trap '' TERM; read -r _line; kill -s KILL 0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

impl ProcessGroup {
    /// Starts the anchor.
    pub fn new() -> Result<Self> {
        let mut anchor = spawn_anchor().context("starting the process-group anchor (/bin/sh)")?;
        let anchor_stdin = anchor.stdin.take();
        Ok(Self {
            anchor,
            anchor_stdin,
            members: Vec::new(),
        })
    }

    /// The process group id.
    fn id(&self) -> u32 {
        self.anchor.id()
    }

    /// Spawns `cmd` into the group; returns its index in `members`.
    pub fn spawn(&mut self, cmd: &mut Command, what: &str) -> Result<usize> {
        let child = join_group(cmd, self.id())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        self.members.push(child);
        Ok(self.members.len() - 1)
    }

    /// Stops every process of the group, reaping `members` and `extra`.
    fn stop(&mut self, extra: Vec<Child>) {
        let mut all: Vec<Child> = self.members.drain(..).chain(extra).collect();
        if self.anchor_stdin.is_some() {
            signal_group(self.id(), "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            for child in &mut all {
                wait_until(child, deadline);
            }
            // EOF on its stdin makes the anchor SIGKILL what is left.
            drop(self.anchor_stdin.take());
            wait_or_kill(&mut self.anchor, STOP_TIMEOUT);
        }
        for child in &mut all {
            wait_or_kill(child, STOP_TIMEOUT);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop(Vec::new());
    }
}

/// Makes `cmd` join process group `pgid` when spawned.
fn join_group(cmd: &mut Command, pgid: u32) -> &mut Command {
    cmd.process_group(i32::try_from(pgid).expect("Linux pids fit in i32"))
}

// ---------------------------------------------------------------------------
// git daemon
// ---------------------------------------------------------------------------

/// A git:// server: an accept loop on 127.0.0.1:0 that runs
/// `git daemon --inetd --export-all --base-path=BASE --informative-errors`
/// for each connection, with the socket as its stdin/stdout. Read-only
/// (only upload-pack is enabled, git daemon's default). Stops on drop.
pub struct GitDaemon {
    /// Listening address.
    addr: SocketAddr,
    /// The served directory, absolute.
    base: PathBuf,
    /// Tells the accept loop to end.
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    connections: Arc<AtomicU64>,
    /// The accept loop; yields the children still running when it ends.
    accepts: Option<JoinHandle<Vec<Child>>>,
    /// Holds every `git daemon` process and its upload-packs.
    group: ProcessGroup,
    /// HOME of the daemons and their log; the last field, so removed last.
    dir: tempfile::TempDir,
}

impl GitDaemon {
    /// Serves the bare repositories under `base_dir` over git://.
    pub fn start(base_dir: &Path) -> Result<Self> {
        let base = absolute_dir(base_dir)?;
        // Run as `git daemon` below; it must be installed.
        git_helper("git-daemon")?;
        let dir = server_dir("git-daemon")?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("daemon.log"))
            .context("creating the git daemon log")?;
        let group = ProcessGroup::new()?;
        let (listener, addr) = listen_nonblocking()?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let spawner = InetdSpawner {
            base: base.clone(),
            home: dir.path().to_path_buf(),
            log,
            pgid: group.id(),
        };
        let accepts = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            thread::Builder::new()
                .name(format!("git-daemon-{}", addr.port()))
                .spawn(move || spawner.accept_loop(&listener, &stop, &connections))
                .context("starting the git daemon accept thread")?
        };
        Ok(Self {
            addr,
            base,
            stop,
            connections,
            accepts: Some(accepts),
            group,
            dir,
        })
    }

    /// The listening address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `git://127.0.0.1:PORT/REPO`, `repo` being a path under the base dir
    /// such as `release.git`.
    pub fn url(&self, repo: &str) -> String {
        repo_url(&format!("git://{}", self.addr), repo)
    }

    /// The directory served.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// What the daemons logged (`--verbose`, to stderr), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let children = self
            .accepts
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        self.group.stop(children);
    }
}

/// What the git daemon accept loop needs to start one `git daemon --inetd`.
struct InetdSpawner {
    /// `--base-path`.
    base: PathBuf,
    /// HOME of the daemon.
    home: PathBuf,
    /// stderr of every daemon.
    log: File,
    /// The process group to join.
    pgid: u32,
}

impl InetdSpawner {
    /// Accepts until stopped, [`MAX_LIFETIME`] or [`MAX_CONNECTIONS`].
    fn accept_loop(
        &self,
        listener: &TcpListener,
        stop: &AtomicBool,
        connections: &AtomicU64,
    ) -> Vec<Child> {
        let deadline = Instant::now() + MAX_LIFETIME;
        let mut children: Vec<Child> = Vec::new();
        while !stop.load(Ordering::SeqCst)
            && Instant::now() < deadline
            && connections.load(Ordering::SeqCst) < MAX_CONNECTIONS
        {
            match listener.accept() {
                Ok((stream, _)) => {
                    connections.fetch_add(1, Ordering::SeqCst);
                    match self.spawn(stream) {
                        Ok(child) => children.push(child),
                        Err(e) => {
                            let _ = writeln!(&self.log, "accept loop: {e:#}");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(e) => {
                    let _ = writeln!(&self.log, "accept loop: {e}");
                    thread::sleep(POLL);
                }
            }
            // Reap finished daemons so they neither pile up nor linger as zombies.
            children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
        }
        children
    }

    /// Starts `git daemon --inetd` on one accepted connection.
    fn spawn(&self, stream: TcpStream) -> Result<Child> {
        stream
            .set_nonblocking(false)
            .context("making the connection blocking")?;
        let input = OwnedFd::from(stream);
        let output = input.try_clone().context("duplicating the socket")?;
        let mut cmd = Command::new("git");
        cmd.arg("daemon")
            .arg("--inetd")
            .arg("--export-all")
            .arg(format!("--base-path={}", self.base.display()))
            .arg("--informative-errors")
            .arg("--verbose")
            .arg("--log-destination=stderr")
            .arg("--init-timeout=10")
            .arg("--timeout=60");
        isolate_git_env(&mut cmd, &self.home);
        cmd.current_dir(&self.base)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(self.log.try_clone().context("log handle")?));
        // `cmd` (and with it our copies of the socket) drops on return, so
        // the client sees EOF as soon as the daemon exits.
        join_group(&mut cmd, self.pgid)
            .spawn()
            .context("starting git daemon --inetd")
    }
}

// ---------------------------------------------------------------------------
// Smart HTTP: nginx + fcgiwrap + git-http-backend
// ---------------------------------------------------------------------------

/// One request in the [`SmartHttp`] access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    /// `http` or `https`.
    pub scheme: String,
    /// The request method.
    pub method: String,
    /// The request URI, query included.
    pub uri: String,
    /// The response status.
    pub status: u16,
    /// Bytes received: request line, headers and body (`$request_length`).
    pub request_length: u64,
    /// Bytes sent: status line, headers and body (`$bytes_sent`).
    pub bytes_sent: u64,
    /// The `Git-Protocol` request header (`version=2` for protocol v2).
    pub git_protocol: Option<String>,
}

impl AccessEntry {
    /// Parses one line of the log format [`SmartHttp`] configures.
    fn parse(line: &str) -> Result<Self> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [
            scheme,
            status,
            request_length,
            bytes_sent,
            method,
            uri,
            git_protocol,
        ] = fields[..]
        else {
            bail!("unexpected access log line {line:?}");
        };
        let number = |s: &str| -> Result<u64> {
            s.parse()
                .with_context(|| format!("bad number {s:?} in access log line {line:?}"))
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            method: method.to_owned(),
            uri: uri.to_owned(),
            status: status
                .parse()
                .with_context(|| format!("bad status in access log line {line:?}"))?,
            request_length: number(request_length)?,
            bytes_sent: number(bytes_sent)?,
            git_protocol: (git_protocol != "-").then(|| git_protocol.to_owned()),
        })
    }
}

/// Totals over access log entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Number of requests.
    pub requests: usize,
    /// Bytes received from clients (sum of `request_length`).
    pub request_bytes: u64,
    /// Bytes sent to clients (sum of `bytes_sent`).
    pub bytes_sent: u64,
}

impl Traffic {
    /// Totals of `entries` (e.g. the slice logged since a mark).
    pub fn of(entries: &[AccessEntry]) -> Self {
        Self {
            requests: entries.len(),
            request_bytes: entries.iter().map(|e| e.request_length).sum(),
            bytes_sent: entries.iter().map(|e| e.bytes_sent).sum(),
        }
    }
}

/// A smart-HTTP git server: nginx in the foreground (plain HTTP and HTTPS
/// listeners on 127.0.0.1), fcgiwrap on unix sockets, `git-http-backend`
/// serving `base_dir` read-only with `GIT_HTTP_EXPORT_ALL`, and the
/// `Git-Protocol` header passed through as `GIT_PROTOCOL` (protocol v2).
/// The TLS certificate is for IP 127.0.0.1, issued by a CA made at start.
/// Stops on drop.
pub struct SmartHttp {
    /// The served directory, absolute.
    base: PathBuf,
    /// Plain HTTP listener.
    http: SocketAddr,
    /// HTTPS listener.
    https: SocketAddr,
    /// PEM of the CA that issued the server certificate.
    ca: PathBuf,
    /// nginx's access log.
    access_log: PathBuf,
    /// nginx's error log.
    error_log: PathBuf,
    /// nginx and fcgiwrap (and the backends they run).
    group: ProcessGroup,
    /// nginx prefix, certificates, logs, sockets; the last field, so
    /// removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl SmartHttp {
    /// Serves the repositories under `base_dir` over http:// and https://.
    pub fn start(base_dir: &Path) -> Result<Self> {
        let base = absolute_dir(base_dir)?;
        let backend = git_helper("git-http-backend")?;
        let dir = server_dir("smart-http")?;
        let root = dir.path().to_path_buf();
        for path in [&base, &root, &backend] {
            nginx_safe(path)?;
        }
        let home = root.join("home");
        let temp = root.join("temp");
        for d in [&home, &temp] {
            fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let tls = make_tls(&root)?;
        let mut group = ProcessGroup::new()?;

        let sockets = (0..FCGIWRAP_INSTANCES)
            .map(|i| root.join(format!("fcgiwrap-{i}.sock")))
            .collect::<Vec<_>>();
        for (i, socket) in sockets.iter().enumerate() {
            start_fcgiwrap(
                &mut group,
                socket,
                &backend,
                &home,
                &root.join(format!("fcgiwrap-{i}.log")),
            )?;
        }

        let access_log = root.join("access.log");
        let error_log = root.join("error.log");
        let mut refused = Vec::new();
        for _ in 0..BIND_ATTEMPTS {
            let http_port = closed_port()?;
            let https_port = closed_port()?;
            if http_port == https_port {
                continue;
            }
            let config = NginxConfig {
                root: &root,
                base: &base,
                backend: &backend,
                home: &home,
                temp: &temp,
                sockets: &sockets,
                tls: &tls,
                access_log: &access_log,
                error_log: &error_log,
                http_port,
                https_port,
                token: &unique_token(),
            };
            match config.start(&mut group)? {
                NginxStart::Ready => {
                    return Ok(Self {
                        base,
                        http: localhost(http_port),
                        https: localhost(https_port),
                        ca: tls.ca,
                        access_log,
                        error_log,
                        group,
                        dir,
                    });
                }
                NginxStart::PortTaken(log) => refused.push(log),
            }
        }
        bail!(
            "nginx could not bind free ports in {BIND_ATTEMPTS} attempts:\n{}",
            refused.join("\n")
        )
    }

    /// `http://127.0.0.1:PORT/static/DIR`: `dir` under the base dir served
    /// as plain static files.
    pub fn static_url(&self, dir: &str) -> String {
        format!("http://{}/static/{dir}", self.http)
    }

    /// `http://127.0.0.1:PORT/REPO`, `repo` being a path under the base dir.
    pub fn http_url(&self, repo: &str) -> String {
        repo_url(&format!("http://{}", self.http), repo)
    }

    /// `http://127.0.0.1:PORT/v0/REPO`: the same repository, served as a
    /// server without protocol v2 would serve it.
    pub fn v0_url(&self, repo: &str) -> String {
        repo_url(&format!("http://{}/v0", self.http), repo)
    }

    /// `https://127.0.0.1:PORT/REPO`; trust [`SmartHttp::ca_cert_path`].
    pub fn https_url(&self, repo: &str) -> String {
        repo_url(&format!("https://{}", self.https), repo)
    }

    /// The plain HTTP listener (e.g. as a [`FaultProxy`] upstream).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The HTTPS listener.
    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }

    /// PEM file of the CA that issued the server certificate
    /// (for `GIT_SSL_CAINFO`, `http.sslCAInfo` or `SSL_CERT_FILE`).
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca
    }

    /// The directory served.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// Every request logged so far, oldest first. nginx logs a request
    /// when it finishes; see [`SmartHttp::wait_for_requests`].
    pub fn access_log(&self) -> Result<Vec<AccessEntry>> {
        let text = match fs::read_to_string(&self.access_log) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("reading the access log"),
        };
        text.lines().map(AccessEntry::parse).collect()
    }

    /// Totals of the whole access log.
    pub fn traffic(&self) -> Result<Traffic> {
        Ok(Traffic::of(&self.access_log()?))
    }

    /// The access log once it holds at least `count` requests, waiting up
    /// to `timeout` (the client may see a response end a moment before
    /// nginx writes the log line).
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Result<Vec<AccessEntry>> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.access_log()?;
            if entries.len() >= count {
                return Ok(entries);
            }
            ensure!(
                Instant::now() < deadline,
                "access log has {} requests, expected at least {count} within {timeout:?}",
                entries.len()
            );
            thread::sleep(POLL);
        }
    }

    /// The process group of nginx, fcgiwrap and what they run: the server
    /// whose CPU time a benchmark reads from `/proc`.
    #[allow(dead_code)] // only the benchmarks read it
    pub fn process_group(&self) -> u32 {
        self.group.id()
    }

    /// nginx's error log (with git-http-backend's stderr, via fcgiwrap -f).
    pub fn error_log(&self) -> String {
        fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

/// Refuses paths nginx's config syntax or variable interpolation would
/// misread.
fn nginx_safe(path: &Path) -> Result<()> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    ensure!(
        !text
            .chars()
            .any(|c| matches!(c, '"' | '\'' | '\\' | '$' | ';' | '{' | '}') || c.is_control()),
        "path {text:?} has characters the nginx config cannot hold"
    );
    Ok(())
}

/// Starts one single-process fcgiwrap on `socket`, allowed to run only
/// `backend`, and waits until the socket accepts connections.
///
/// Not `-c N`: a preforking fcgiwrap leaves its children running when the
/// parent gets SIGTERM, and once the group sweep kills them they linger as
/// zombies of init; a single process has no such children.
fn start_fcgiwrap(
    group: &mut ProcessGroup,
    socket: &Path,
    backend: &Path,
    home: &Path,
    log_path: &Path,
) -> Result<()> {
    let log = File::create(log_path).context("creating the fcgiwrap log")?;
    let root = log_path.parent().context("log directory")?;
    let mut cmd = Command::new(find_program("fcgiwrap", "fcgiwrap")?);
    cmd.arg("-c")
        .arg("1")
        .arg("-f")
        .arg("-p")
        .arg(backend)
        .arg("-s")
        .arg(format!("unix:{}", socket.display()));
    isolate_git_env(&mut cmd, home);
    cmd.current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().context("log handle")?))
        .stderr(Stdio::from(log));
    let index = group.spawn(&mut cmd, "fcgiwrap (Debian package `fcgiwrap`)")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        let exited = group.members[index]
            .try_wait()
            .context("waiting for fcgiwrap")?;
        let log = || fs::read_to_string(log_path).unwrap_or_default();
        if let Some(status) = exited {
            bail!("fcgiwrap exited ({status}) before listening:\n{}", log());
        }
        ensure!(
            Instant::now() < deadline,
            "fcgiwrap did not listen on {} within {READY_TIMEOUT:?}:\n{}",
            socket.display(),
            log()
        );
        thread::sleep(POLL);
    }
}

/// The files of the throw-away TLS setup.
struct Tls {
    /// CA certificate (PEM).
    ca: PathBuf,
    /// Server certificate for IP 127.0.0.1 (PEM).
    cert: PathBuf,
    /// Server private key (PEM).
    key: PathBuf,
}

/// Makes a CA and a server certificate for IP 127.0.0.1 with the openssl
/// CLI, with our own config so the system's openssl.cnf does not matter.
fn make_tls(root: &Path) -> Result<Tls> {
    let dir = root.join("tls");
    fs::create_dir(&dir).context("creating the TLS directory")?;
    let conf = dir.join("openssl.cnf");
    fs::write(
        &conf,
        "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = driftless test

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
",
    )
    .context("writing openssl.cnf")?;
    let tls = Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let ca_key = dir.join("ca.key");
    let csr = dir.join("server.csr");
    let openssl = || {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&dir).env("OPENSSL_CONF", &conf);
        cmd
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run_tool(
        openssl()
            .args(["req", "-x509", "-config"])
            .arg(&conf)
            .args(ec)
            .arg("-nodes")
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&tls.ca)
            .args(["-days", "7", "-subj", "/CN=driftless test CA"])
            .args(["-extensions", "ca_ext"]),
        "openssl req (CA; Debian package `openssl`)",
    )?;
    run_tool(
        openssl()
            .args(["req", "-new", "-config"])
            .arg(&conf)
            .args(ec)
            .arg("-nodes")
            .arg("-keyout")
            .arg(&tls.key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/CN=127.0.0.1"]),
        "openssl req (server key)",
    )?;
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    run_tool(
        openssl()
            .args(["x509", "-req", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&tls.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-set_serial")
            .arg(format!("0x{serial:x}"))
            .args(["-days", "7", "-extfile"])
            .arg(&conf)
            .args(["-extensions", "server_ext", "-out"])
            .arg(&tls.cert),
        "openssl x509 (server certificate)",
    )?;
    Ok(tls)
}

/// How one nginx start attempt ended.
enum NginxStart {
    /// Serving on both ports.
    Ready,
    /// Another process had a port; the error log says so.
    PortTaken(String),
}

/// Everything the nginx configuration refers to.
struct NginxConfig<'a> {
    /// The temporary directory (nginx prefix).
    root: &'a Path,
    /// `GIT_PROJECT_ROOT`.
    base: &'a Path,
    /// `git-http-backend`.
    backend: &'a Path,
    /// HOME of the backends.
    home: &'a Path,
    /// nginx temp files.
    temp: &'a Path,
    /// The fcgiwrap sockets.
    sockets: &'a [PathBuf],
    /// Certificate and key.
    tls: &'a Tls,
    /// Access log path.
    access_log: &'a Path,
    /// Error log path.
    error_log: &'a Path,
    /// Plain HTTP port.
    http_port: u16,
    /// HTTPS port.
    https_port: u16,
    /// Body of the readiness probe, unique to this attempt.
    token: &'a str,
}

impl NginxConfig<'_> {
    /// The configuration file's text.
    fn render(&self) -> Result<String> {
        let d = |p: &Path| p.display().to_string();
        // nginx workers run as `nobody` when the master is root unless told
        // otherwise, and could then not read the temporary directory.
        let is_root = fs::metadata(self.root).context("stat")?.uid() == 0;
        let mut c = String::new();
        if is_root {
            c.push_str("user root;\n");
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
        ensure!(
            !path.contains(['"', '$', '\\']) && !path.chars().any(char::is_control),
            "PATH has characters the nginx config cannot hold"
        );
        let mut upstream = String::new();
        for socket in self.sockets {
            writeln!(upstream, "        server unix:{};", d(socket)).context("formatting")?;
        }
        write!(
            c,
            r#"worker_processes 1;
pid "{pid}";
error_log "{error_log}" notice;

events {{
    worker_connections 256;
}}

http {{
    log_format driftless '$scheme\t$status\t$request_length\t$bytes_sent\t$request_method\t$request_uri\t$http_git_protocol';
    access_log "{access_log}" driftless;
    client_body_temp_path "{temp}/body";
    fastcgi_temp_path "{temp}/fastcgi";
    proxy_temp_path "{temp}/proxy";
    scgi_temp_path "{temp}/scgi";
    uwsgi_temp_path "{temp}/uwsgi";
    client_max_body_size 0;
    keepalive_timeout 30s;
    server_tokens off;

    upstream fcgiwrap {{
{upstream}    }}

    # /v0/REPO serves REPO as a server without protocol v2 would: the
    # Git-Protocol header is passed on neither as GIT_PROTOCOL nor as
    # HTTP_GIT_PROTOCOL (which git-http-backend also reads).
    map $uri $git_path_info {{
        ~^/v0(?<rest>/.*)$ $rest;
        default $uri;
    }}
    map $uri $git_protocol {{
        ~^/v0/ "";
        default $http_git_protocol;
    }}

    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate "{cert}";
        ssl_certificate_key "{key}";
        ssl_protocols TLSv1.2 TLSv1.3;

        location = /__driftless_ready {{
            access_log off;
            default_type text/plain;
            return 200 "{token}";
        }}

        # Read-only: no pushes, whatever git-http-backend would allow.
        if ($arg_service = "git-receive-pack") {{
            return 403;
        }}
        location ~ /git-receive-pack$ {{
            return 403;
        }}

        # /static/PATH: the files under the base dir as a plain web server
        # serves them (ETag, If-None-Match, Range): driftless publish's
        # output.
        location ^~ /static/ {{
            alias "{base}/";
        }}

        location / {{
            fastcgi_pass fcgiwrap;
            fastcgi_param SCRIPT_FILENAME "{backend}";
            fastcgi_param GIT_PROJECT_ROOT "{base}";
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param GIT_CONFIG_GLOBAL /dev/null;
            fastcgi_param HOME "{home}";
            fastcgi_param PATH "{path}";
            fastcgi_param PATH_INFO $git_path_info;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type if_not_empty;
            fastcgi_param CONTENT_LENGTH $content_length if_not_empty;
            fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding if_not_empty;
            fastcgi_param GIT_PROTOCOL $git_protocol if_not_empty;
            fastcgi_param HTTP_GIT_PROTOCOL $git_protocol;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
        }}
    }}
}}
"#,
            pid = d(&self.root.join("nginx.pid")),
            error_log = d(self.error_log),
            access_log = d(self.access_log),
            temp = d(self.temp),
            http_port = self.http_port,
            https_port = self.https_port,
            cert = d(&self.tls.cert),
            key = d(&self.tls.key),
            token = self.token,
            backend = d(self.backend),
            base = d(self.base),
            home = d(self.home),
        )
        .context("formatting nginx.conf")?;
        Ok(c)
    }

    /// Starts nginx in the foreground and waits until it serves our
    /// readiness token on the HTTP port (so the port is ours, and since
    /// nginx binds every listener before serving, the HTTPS one too).
    fn start(&self, group: &mut ProcessGroup) -> Result<NginxStart> {
        let conf = self.root.join("nginx.conf");
        fs::write(&conf, self.render()?).context("writing nginx.conf")?;
        // Only this attempt's errors decide whether a port was taken.
        let _ = fs::remove_file(self.error_log);
        let mut cmd = Command::new(find_program("nginx", "nginx")?);
        cmd.arg("-p")
            .arg(self.root)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(self.error_log)
            .arg("-g")
            .arg("daemon off;")
            .current_dir(self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let index = group.spawn(&mut cmd, "nginx (Debian package `nginx`)")?;
        let http = localhost(self.http_port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = group.members[index]
                .try_wait()
                .context("waiting for nginx")?
            {
                let log = fs::read_to_string(self.error_log).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Ok(NginxStart::PortTaken(log));
                }
                bail!("nginx exited ({status}) at start:\n{log}");
            }
            if probe_http(http, self.token) {
                return Ok(NginxStart::Ready);
            }
            if Instant::now() >= deadline {
                let log = fs::read_to_string(self.error_log).unwrap_or_default();
                bail!("nginx did not serve {http} within {READY_TIMEOUT:?}:\n{log}");
            }
            thread::sleep(POLL);
        }
    }
}

/// Whether `GET /__driftless_ready` on `addr` answers with `token`.
fn probe_http(addr: SocketAddr, token: &str) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(
            b"GET /__driftless_ready HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        Ok(response.starts_with("HTTP/1.1 200") && response.ends_with(token))
    };
    attempt().unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Fault-injecting TCP proxy
// ---------------------------------------------------------------------------

/// What a [`FaultProxy`] does to each connection. Byte budgets count bytes
/// from upstream to the client, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    None,
    /// After `n` bytes to the client, close both sides (a pack cut
    /// mid-transfer: the client sees EOF).
    CutAfter(u64),
    /// After `n` bytes to the client, forward nothing more to it but keep
    /// both connections open until the proxy is dropped (a hung server).
    StallAfter(u64),
    /// Flip one bit of the byte at offset `n` of what goes to the client
    /// (a server, or a man in the middle, that corrupts the pack).
    Corrupt(u64),
}

impl Fault {
    /// The per-connection byte budget from upstream to client, if any.
    fn budget(self) -> Option<u64> {
        match self {
            Fault::None | Fault::Corrupt(_) => None,
            Fault::CutAfter(n) | Fault::StallAfter(n) => Some(n),
        }
    }
}

/// Byte and connection counters of a [`FaultProxy`].
#[derive(Debug, Default)]
struct Counters {
    /// Connections accepted.
    connections: AtomicU64,
    /// Bytes forwarded client → upstream.
    to_upstream: AtomicU64,
    /// Bytes forwarded upstream → client.
    to_client: AtomicU64,
}

/// A TCP proxy on 127.0.0.1:0 to `upstream`, applying a [`Fault`] to every
/// connection and counting the bytes it forwards. TLS passes through
/// untouched, so it works in front of both [`SmartHttp`] listeners and
/// [`GitDaemon`]. Stops on drop.
pub struct FaultProxy {
    /// Listening address.
    addr: SocketAddr,
    /// Where connections go.
    upstream: SocketAddr,
    /// What happens to them.
    fault: Fault,
    /// Tells every loop to end.
    stop: Arc<AtomicBool>,
    /// Shared counters.
    counters: Arc<Counters>,
    /// The accept loop (it joins the connection threads).
    accepts: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts proxying connections on 127.0.0.1:0 to `upstream`.
    pub fn start(upstream: SocketAddr, fault: Fault) -> Result<Self> {
        let (listener, addr) = listen_nonblocking()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let accepts = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || proxy_accept_loop(&listener, upstream, fault, &stop, &counters))
                .context("starting the proxy thread")?
        };
        Ok(Self {
            addr,
            upstream,
            fault,
            stop,
            counters,
            accepts: Some(accepts),
        })
    }

    /// The listening address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `SCHEME://127.0.0.1:PORT/REPO`: the upstream's URL via the proxy.
    pub fn url(&self, scheme: &str, repo: &str) -> String {
        repo_url(&format!("{scheme}://{}", self.addr), repo)
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The fault applied.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from upstream to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.counters.to_client.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from clients to upstream so far.
    pub fn bytes_to_upstream(&self) -> u64 {
        self.counters.to_upstream.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accepts.take() {
            let _ = handle.join();
        }
    }
}

/// Accepts until stopped, [`MAX_LIFETIME`] or [`MAX_CONNECTIONS`]; one
/// thread per connection, all joined before returning.
fn proxy_accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    fault: Fault,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) {
    let deadline = Instant::now() + MAX_LIFETIME;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst)
        && Instant::now() < deadline
        && counters.connections.load(Ordering::SeqCst) < MAX_CONNECTIONS
    {
        match listener.accept() {
            Ok((client, _)) => {
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let stop = Arc::clone(stop);
                let counters = Arc::clone(counters);
                let spawned = thread::Builder::new()
                    .name("fault-proxy-conn".to_owned())
                    .spawn(move || {
                        proxy_connection(client, upstream, fault, &stop, &counters, deadline)
                    });
                if let Ok(handle) = spawned {
                    workers.push(handle);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
        let (done, running): (Vec<_>, Vec<_>) =
            workers.into_iter().partition(JoinHandle::is_finished);
        workers = running;
        for handle in done {
            let _ = handle.join();
        }
    }
    // Connection threads notice `stop` within a TICK.
    stop.store(true, Ordering::SeqCst);
    for handle in workers {
        let _ = handle.join();
    }
}

/// Serves one proxied connection.
fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    stop: &AtomicBool,
    counters: &Counters,
    deadline: Instant,
) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    for stream in [&client, &server] {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(TICK));
        let _ = stream.set_write_timeout(Some(TICK));
    }
    // Set when the connection is over for both directions.
    let closed = AtomicBool::new(false);
    let alive = || {
        !stop.load(Ordering::SeqCst) && !closed.load(Ordering::SeqCst) && Instant::now() < deadline
    };
    thread::scope(|scope| {
        scope.spawn(|| {
            // Client → upstream: forwarded as is; EOF is passed on as a
            // half-close.
            let _ = pump(
                &client,
                &server,
                (None, None),
                &counters.to_upstream,
                &alive,
            );
            let _ = server.shutdown(Shutdown::Write);
        });
        // Upstream → client, with the fault.
        let corrupt = match fault {
            Fault::Corrupt(at) => Some(at),
            _ => None,
        };
        let end = pump(
            &server,
            &client,
            (fault.budget(), corrupt),
            &counters.to_client,
            &alive,
        );
        match (end, fault) {
            (Pumped::Eof, _) => {
                // Upstream is done: pass the EOF on and let the client
                // finish (the scope waits for the other direction).
                let _ = client.shutdown(Shutdown::Write);
                return;
            }
            (Pumped::BudgetSpent, Fault::StallAfter(_)) => {
                // Hold both sockets open, forwarding nothing, until drop.
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    thread::sleep(TICK);
                }
            }
            _ => {}
        }
        // Cut, socket error, or stopping: close both sides at once.
        closed.store(true, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
}

/// Why a [`pump`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// The source closed its side.
    Eof,
    /// The byte budget was used up.
    BudgetSpent,
    /// A socket error, or told to stop.
    Ended,
}

/// Copies `from` → `to` until EOF, error, `alive()` turning false, or
/// `budget` bytes (never reading past the budget).
fn pump(
    mut from: &TcpStream,
    mut to: &TcpStream,
    (budget, corrupt): (Option<u64>, Option<u64>),
    counter: &AtomicU64,
    alive: &dyn Fn() -> bool,
) -> Pumped {
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded: u64 = 0;
    while alive() {
        let want = match budget {
            Some(limit) if forwarded >= limit => return Pumped::BudgetSpent,
            Some(limit) => buf
                .len()
                .min(usize::try_from(limit - forwarded).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => return Pumped::Eof,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Pumped::Ended,
        };
        if let Some(at) = corrupt.and_then(|at| at.checked_sub(forwarded)) {
            if let Some(byte) = usize::try_from(at).ok().and_then(|i| buf[..n].get_mut(i)) {
                *byte ^= 0x10;
            }
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if !alive() {
                return Pumped::Ended;
            }
            match to.write(chunk) {
                Ok(0) => return Pumped::Ended,
                Ok(written) => {
                    chunk = &chunk[written..];
                    forwarded += written as u64;
                    counter.fetch_add(written as u64, Ordering::SeqCst);
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pumped::Ended,
            }
        }
    }
    Pumped::Ended
}

/// Whether `e` is a socket timeout (`WouldBlock` or `TimedOut` on Linux).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
