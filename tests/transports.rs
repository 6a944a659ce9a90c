//! Smoke tests of the transport test servers in `support/servers.rs`.
//!
//! Each test makes its own bare repository (one commit carrying an
//! incompressible payload, and an annotated tag) in its own temporary
//! directory, starts its own servers on ephemeral 127.0.0.1 ports, and drives
//! them with the real `git` client (and with libgit2, which the agent uses),
//! so the harness is proven before agent tests rely on it. Every git command
//! runs with an isolated environment and a time limit.

#[path = "support/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use servers::{
    Fault, FaultProxy, Finished, GitDaemon, SmartHttp, Traffic, closed_port_url, git_command,
    noise, run_bounded,
};

/// The bare repository's path under the served directory.
const REPO: &str = "release.git";
/// The annotated tag of the fixture.
const TAG: &str = "v1.0.0";
/// Size of the incompressible file in the commit, so packs are big enough
/// to be cut or stalled mid-transfer.
const PAYLOAD: usize = 2 * 1024 * 1024;
/// Seed of the payload's bytes.
const PAYLOAD_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Where the fault tests cut or stall: well inside the pack.
const FAULT_AT: u64 = 100_000;
/// Time limit of an ordinary git command.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx may take to log a finished request.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Set in the environment of the child process that
/// `libgit2_https_trusts_only_the_test_ca` runs.
const CHILD_URL_VAR: &str = "DRIFTLESS_TRANSPORTS_CHILD_HTTPS_URL";

/// One test's world: HOME, the served directory with `release.git`, and
/// room for clones.
struct Fixture {
    /// Everything lives here.
    dir: tempfile::TempDir,
    /// The commit the tag points at.
    commit: String,
    /// The annotated tag object's id.
    tag: String,
}

impl Fixture {
    /// Makes `srv/release.git` with one commit and the annotated tag [`TAG`].
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-transports-")
            .tempdir()
            .context("creating the fixture directory")?;
        for sub in ["home", "srv", "work"] {
            std::fs::create_dir(dir.path().join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let mut fixture = Self {
            dir,
            commit: String::new(),
            tag: String::new(),
        };
        let work = fixture.path("work");
        fixture.git_ok(fixture.git().args(["init", "-q", "-b", "main"]).arg(&work))?;
        std::fs::write(work.join("README"), "a release\n").context("writing README")?;
        std::fs::write(work.join("payload.bin"), noise(PAYLOAD, PAYLOAD_SEED))
            .context("writing payload")?;
        fixture.git_ok(fixture.git_in(&work).args(["add", "."]))?;
        fixture.git_ok(
            fixture
                .git_in(&work)
                .args(["commit", "-q", "-m", "release"]),
        )?;
        fixture.git_ok(
            fixture
                .git_in(&work)
                .args(["tag", "-a", TAG, "-m", "release v1.0.0"]),
        )?;
        fixture.git_ok(
            fixture
                .git()
                .args(["clone", "-q", "--bare"])
                .arg(&work)
                .arg(fixture.path("srv").join(REPO)),
        )?;
        fixture.commit = fixture.git_ok(fixture.git_in(&work).args(["rev-parse", "HEAD"]))?;
        fixture.tag = fixture.git_ok(
            fixture
                .git_in(&work)
                .args(["rev-parse", &format!("refs/tags/{TAG}")]),
        )?;
        ensure!(fixture.commit != fixture.tag, "the tag must be annotated");
        Ok(fixture)
    }

    /// A path inside the fixture directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The served directory.
    fn srv(&self) -> PathBuf {
        self.path("srv")
    }

    /// An isolated `git` with a fixed identity.
    fn git(&self) -> Command {
        let mut cmd = git_command(&self.path("home"));
        cmd.current_dir(self.dir.path())
            .env("GIT_AUTHOR_NAME", "Test Tagger")
            .env("GIT_AUTHOR_EMAIL", "tagger@example.com")
            .env("GIT_COMMITTER_NAME", "Test Tagger")
            .env("GIT_COMMITTER_EMAIL", "tagger@example.com");
        cmd
    }

    /// [`Fixture::git`] with `-C dir`.
    fn git_in(&self, dir: &Path) -> Command {
        let mut cmd = self.git();
        cmd.arg("-C").arg(dir);
        cmd
    }

    /// Runs `cmd` with the ordinary time limit.
    fn run(&self, cmd: &mut Command) -> Result<Finished> {
        run_bounded(cmd, GIT_TIMEOUT)
    }

    /// Runs `cmd`, requiring success; returns its trimmed stdout.
    fn git_ok(&self, cmd: &mut Command) -> Result<String> {
        let done = self.run(cmd)?;
        ensure!(done.success(), "{cmd:?} failed: {}", done.describe());
        Ok(done.stdout.trim().to_owned())
    }

    /// Clones `url` (bare) into a fresh directory named `name`, with extra
    /// `-c` settings; returns the result and the destination.
    fn clone(&self, url: &str, name: &str, config: &[&str]) -> Result<(Finished, PathBuf)> {
        let dest = self.path(name);
        let mut cmd = self.git();
        for setting in config {
            cmd.args(["-c", setting]);
        }
        cmd.args(["clone", "-q", "--bare", url]).arg(&dest);
        Ok((self.run(&mut cmd)?, dest))
    }

    /// Checks a clone holds the fixture's commit and annotated tag.
    fn check_clone(&self, done: &Finished, dest: &Path) -> Result<()> {
        ensure!(done.success(), "clone failed: {}", done.describe());
        let head = self.git_ok(self.git_in(dest).args(["rev-parse", "refs/heads/main"]))?;
        let tag = self.git_ok(
            self.git_in(dest)
                .args(["rev-parse", &format!("refs/tags/{TAG}")]),
        )?;
        ensure!(head == self.commit, "cloned main {head} != {}", self.commit);
        ensure!(tag == self.tag, "cloned tag {tag} != {}", self.tag);
        Ok(())
    }

    /// Checks `git ls-remote` output lists main, the tag and its peeled commit.
    fn check_ls_remote(&self, done: &Finished) -> Result<()> {
        ensure!(done.success(), "ls-remote failed: {}", done.describe());
        for want in [
            format!("{}\trefs/heads/main", self.commit),
            format!("{}\trefs/tags/{TAG}", self.tag),
            format!("{}\trefs/tags/{TAG}^{{}}", self.commit),
        ] {
            ensure!(
                done.stdout.lines().any(|line| line == want),
                "ls-remote lacks {want:?}: {}",
                done.describe()
            );
        }
        Ok(())
    }

    /// `git ls-remote` of `url` with protocol v2, checked: the refs, the
    /// server speaking v2 and answering `ls-refs`.
    fn ls_remote_v2(&self, url: &str) -> Result<Finished> {
        let v2 = self.ls_remote(url, &["protocol.version=2"], true)?;
        self.check_ls_remote(&v2)?;
        ensure!(speaks_v2(&v2), "no protocol v2: {}", v2.describe());
        ensure!(
            v2.stderr.contains("ls-refs"),
            "no ls-refs: {}",
            v2.describe()
        );
        Ok(v2)
    }

    /// `git ls-remote` of `url` with protocol v0, checked: the refs, and no
    /// answer in v2.
    fn ls_remote_v0(&self, url: &str) -> Result<Finished> {
        let v0 = self.ls_remote(url, &["protocol.version=0"], true)?;
        self.check_ls_remote(&v0)?;
        ensure!(
            !speaks_v2(&v0),
            "v0 request answered in v2: {}",
            v0.describe()
        );
        Ok(v0)
    }

    /// Pushes the work tree's HEAD to `url` as `refs/heads/pushed`, which
    /// must fail and leave the served repository as it was; returns the
    /// push.
    fn push_refused(&self, url: &str) -> Result<Finished> {
        let pushed = self.run(self.git_in(&self.path("work")).args([
            "push",
            url,
            "HEAD:refs/heads/pushed",
        ]))?;
        ensure!(!pushed.success(), "push succeeded: {}", pushed.describe());
        let refs = self.git_ok(self.git_in(&self.srv().join(REPO)).args(["for-each-ref"]))?;
        ensure!(!refs.contains("pushed"), "the push landed: {refs}");
        Ok(pushed)
    }

    /// `git [-c k=v]... ls-remote URL`, optionally with `GIT_TRACE_PACKET=1`.
    fn ls_remote(&self, url: &str, config: &[&str], trace: bool) -> Result<Finished> {
        let mut cmd = self.git();
        for setting in config {
            cmd.args(["-c", setting]);
        }
        if trace {
            cmd.env("GIT_TRACE_PACKET", "1");
        }
        cmd.args(["ls-remote", url]);
        self.run(&mut cmd)
    }
}

/// Whether packet tracing shows the server speaking protocol v2.
fn speaks_v2(done: &Finished) -> bool {
    done.stderr
        .lines()
        .any(|line| line.contains("packet:") && line.contains("< version 2"))
}

#[test]
fn git_daemon_serves_clone_and_ls_remote() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let url = daemon.url(REPO);
    ensure!(url == format!("git://127.0.0.1:{}/{REPO}", daemon.port()));

    let (done, dest) = fx.clone(&url, "clone", &[])?;
    fx.check_clone(&done, &dest).with_context(|| daemon.log())?;
    fx.check_ls_remote(&fx.ls_remote(&url, &[], false)?)?;
    ensure!(
        daemon.connections() >= 2,
        "connections: {}",
        daemon.connections()
    );
    Ok(())
}

#[test]
fn git_daemon_speaks_protocol_v2_and_v0() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let url = daemon.url(REPO);

    fx.ls_remote_v2(&url)?;
    fx.ls_remote_v0(&url)?;
    Ok(())
}

#[test]
fn git_daemon_refuses_push() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    fx.push_refused(&daemon.url(REPO))?;
    Ok(())
}

#[test]
fn smart_http_serves_clone_and_ls_remote_over_http() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.http_url(REPO);
    ensure!(url == format!("http://{}/{REPO}", http.http_addr()));

    let (done, dest) = fx.clone(&url, "clone", &[])?;
    fx.check_clone(&done, &dest)
        .with_context(|| http.error_log())?;
    fx.check_ls_remote(&fx.ls_remote(&url, &[], false)?)?;
    Ok(())
}

#[test]
fn smart_http_serves_https_trusting_only_its_ca() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.https_url(REPO);
    let ca = http.ca_cert_path().to_str().context("CA path")?.to_owned();

    // Trust via the environment...
    let dest = fx.path("clone");
    let done = fx.run(
        fx.git()
            .env("GIT_SSL_CAINFO", &ca)
            .args(["clone", "-q", "--bare", &url])
            .arg(&dest),
    )?;
    fx.check_clone(&done, &dest)
        .with_context(|| http.error_log())?;
    // ... and via config.
    fx.check_ls_remote(&fx.ls_remote(&url, &[&format!("http.sslCAInfo={ca}")], false)?)?;

    // Without the CA the certificate must be rejected.
    let untrusted = fx.ls_remote(&url, &[], false)?;
    ensure!(
        !untrusted.success(),
        "untrusted TLS accepted: {}",
        untrusted.describe()
    );
    ensure!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "failed, but not on the certificate: {}",
        untrusted.describe()
    );

    let entries = http.wait_for_requests(1, LOG_TIMEOUT)?;
    ensure!(
        entries
            .iter()
            .any(|e| e.scheme == "https" && e.status == 200),
        "no https request logged: {entries:?}"
    );
    Ok(())
}

#[test]
fn smart_http_passes_protocol_v2_through() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.http_url(REPO);

    fx.ls_remote_v2(&url)?;
    let v2_log = http.wait_for_requests(2, LOG_TIMEOUT)?;
    ensure!(
        v2_log
            .iter()
            .all(|e| e.git_protocol.as_deref() == Some("version=2") && e.status == 200),
        "v2 requests without Git-Protocol: version=2: {v2_log:?}"
    );
    ensure!(
        v2_log
            .iter()
            .any(|e| e.method == "POST" && e.uri.ends_with("/git-upload-pack")),
        "no ls-refs POST: {v2_log:?}"
    );

    fx.ls_remote_v0(&url)?;
    let all = http.wait_for_requests(v2_log.len() + 1, LOG_TIMEOUT)?;
    ensure!(
        all[v2_log.len()..].iter().all(|e| e.git_protocol.is_none()),
        "v0 request carried Git-Protocol: {all:?}"
    );
    Ok(())
}

#[test]
fn smart_http_is_read_only() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let pushed = fx.push_refused(&http.http_url(REPO))?;
    ensure!(
        pushed.stderr.contains("403"),
        "push not refused with 403: {}",
        pushed.describe()
    );
    Ok(())
}

#[test]
fn smart_http_access_log_measures_traffic() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.http_url(REPO);
    ensure!(
        http.traffic()? == Traffic::default(),
        "the readiness probe is logged"
    );

    let (done, dest) = fx.clone(&url, "clone", &["protocol.version=2"])?;
    fx.check_clone(&done, &dest)?;
    let clone_log = http.wait_for_requests(3, LOG_TIMEOUT)?;
    let clone = Traffic::of(&clone_log);
    // v2 clone: GET info/refs, POST ls-refs, POST fetch.
    ensure!(clone.requests == 3, "clone requests: {clone_log:?}");
    ensure!(
        clone.bytes_sent > PAYLOAD as u64 && clone.request_bytes > 0,
        "clone traffic {clone:?}"
    );
    ensure!(
        clone_log[0].method == "GET"
            && clone_log[0].uri == format!("/{REPO}/info/refs?service=git-upload-pack"),
        "first request {:?}",
        clone_log[0]
    );

    // A poll (v2 ls-remote of one ref) costs two small requests.
    let poll = fx.ls_remote(&url, &["protocol.version=2"], false)?;
    ensure!(poll.success(), "poll failed: {}", poll.describe());
    let all = http.wait_for_requests(clone_log.len() + 2, LOG_TIMEOUT)?;
    let poll_cost = Traffic::of(&all[clone_log.len()..]);
    ensure!(poll_cost.requests == 2, "poll requests: {all:?}");
    ensure!(poll_cost.bytes_sent < 4096, "poll cost {poll_cost:?}");
    ensure!(
        http.traffic()?.requests == 5,
        "total: {:?}",
        http.traffic()?
    );
    Ok(())
}

#[test]
fn fault_proxy_none_forwards_and_counts() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let http = SmartHttp::start(&fx.srv())?;

    let git_proxy = FaultProxy::start(daemon.addr(), Fault::None)?;
    let (done, dest) = fx.clone(&git_proxy.url("git", REPO), "via-git", &[])?;
    fx.check_clone(&done, &dest)?;
    ensure!(
        git_proxy.connections() == 1,
        "connections {}",
        git_proxy.connections()
    );
    ensure!(git_proxy.bytes_to_upstream() > 0, "nothing sent upstream");
    ensure!(
        git_proxy.bytes_to_client() > PAYLOAD as u64,
        "to client: {}",
        git_proxy.bytes_to_client()
    );

    let http_proxy = FaultProxy::start(http.http_addr(), Fault::None)?;
    let (done, dest) = fx.clone(&http_proxy.url("http", REPO), "via-http", &[])?;
    fx.check_clone(&done, &dest)?;
    ensure!(http_proxy.bytes_to_upstream() > 0, "nothing sent upstream");
    ensure!(
        http_proxy.bytes_to_client() > PAYLOAD as u64,
        "too little to client"
    );

    // TLS passes through: the certificate names 127.0.0.1, any port.
    let tls_proxy = FaultProxy::start(http.https_addr(), Fault::None)?;
    let ca = format!("http.sslCAInfo={}", http.ca_cert_path().display());
    fx.check_ls_remote(&fx.ls_remote(&tls_proxy.url("https", REPO), &[&ca], false)?)?;
    ensure!(tls_proxy.bytes_to_client() > 0 && tls_proxy.bytes_to_upstream() > 0);
    Ok(())
}

#[test]
fn fault_proxy_cut_after_breaks_git_clone() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let proxy = FaultProxy::start(daemon.addr(), Fault::CutAfter(FAULT_AT))?;
    let (done, dest) = fx.clone(&proxy.url("git", REPO), "clone", &[])?;
    ensure!(
        !done.success() && !done.timed_out(),
        "clone: {}",
        done.describe()
    );
    ensure!(!dest.exists(), "a failed clone left {}", dest.display());
    ensure!(
        done.stderr.contains("early EOF"),
        "clone: {}",
        done.describe()
    );
    ensure!(
        proxy.bytes_to_client() == FAULT_AT,
        "forwarded {} bytes",
        proxy.bytes_to_client()
    );
    Ok(())
}

#[test]
fn fault_proxy_cut_after_breaks_http_clone() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let proxy = FaultProxy::start(http.http_addr(), Fault::CutAfter(FAULT_AT))?;
    let (done, _) = fx.clone(&proxy.url("http", REPO), "clone", &[])?;
    ensure!(
        !done.success() && !done.timed_out(),
        "clone: {}",
        done.describe()
    );
    let sent = proxy.bytes_to_client();
    ensure!(
        sent >= FAULT_AT && sent < PAYLOAD as u64,
        "forwarded {sent} bytes over {} connections",
        proxy.connections()
    );
    Ok(())
}

#[test]
fn fault_proxy_stall_after_trips_git_low_speed_limit() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let proxy = FaultProxy::start(http.http_addr(), Fault::StallAfter(FAULT_AT))?;
    let dest = fx.path("clone");
    let start = Instant::now();
    let done = run_bounded(
        fx.git()
            .args(["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=2"])
            .args(["clone", "-q", "--bare", &proxy.url("http", REPO)])
            .arg(&dest),
        Duration::from_secs(30),
    )?;
    let elapsed = start.elapsed();
    ensure!(
        !done.timed_out(),
        "the stall was not noticed: {}",
        done.describe()
    );
    ensure!(
        !done.success(),
        "clone succeeded through a stall: {}",
        done.describe()
    );
    ensure!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    ensure!(
        done.stderr.contains("too slow"),
        "failed, but not on the low-speed limit: {}",
        done.describe()
    );
    let sent = proxy.bytes_to_client();
    ensure!(
        sent >= FAULT_AT && sent < PAYLOAD as u64,
        "forwarded {sent} bytes"
    );
    Ok(())
}

#[test]
fn closed_port_refuses_connections() -> Result<()> {
    let fx = Fixture::new()?;
    for scheme in ["git", "http", "https"] {
        let url = closed_port_url(scheme)?;
        let done = fx.ls_remote(&url, &[], false)?;
        ensure!(!done.success(), "{url} answered: {}", done.describe());
        ensure!(
            done.elapsed < Duration::from_secs(10),
            "{url} took {:?}",
            done.elapsed
        );
        let stderr = done.stderr.to_lowercase();
        ensure!(
            stderr.contains("refused") || stderr.contains("failed to connect"),
            "{url}: {}",
            done.describe()
        );
    }
    Ok(())
}

#[test]
fn servers_stop_when_dropped() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let http = SmartHttp::start(&fx.srv())?;
    let proxy = FaultProxy::start(http.http_addr(), Fault::StallAfter(0))?;
    // A connection held open by the stall must not keep anything alive.
    let held = std::net::TcpStream::connect(proxy.addr()).context("connecting to the proxy")?;
    let addrs = [
        daemon.addr(),
        http.http_addr(),
        http.https_addr(),
        proxy.addr(),
    ];
    for addr in addrs {
        std::net::TcpStream::connect(addr).with_context(|| format!("{addr} not listening"))?;
    }
    let start = Instant::now();
    drop(proxy);
    drop(http);
    drop(daemon);
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        start.elapsed()
    );
    drop(held);
    for addr in addrs {
        if std::net::TcpStream::connect(addr).is_ok() {
            bail!("{addr} still accepts connections after drop");
        }
    }
    Ok(())
}

/// Names libgit2 lists for `url`, or its error.
fn libgit2_refs(url: &str) -> std::result::Result<Vec<String>, git2::Error> {
    let mut remote = git2::Remote::create_detached(url)?;
    remote.connect(git2::Direction::Fetch)?;
    let names = remote
        .list()?
        .iter()
        .map(|head| head.name().to_owned())
        .collect();
    remote.disconnect()?;
    Ok(names)
}

#[test]
fn libgit2_lists_refs_over_git_and_http() -> Result<()> {
    let fx = Fixture::new()?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let http = SmartHttp::start(&fx.srv())?;
    for url in [daemon.url(REPO), http.http_url(REPO)] {
        let names = libgit2_refs(&url).with_context(|| format!("libgit2 on {url}"))?;
        ensure!(
            names.iter().any(|n| n == &format!("refs/tags/{TAG}")),
            "{url}: {names:?}"
        );
    }
    Ok(())
}

#[test]
fn libgit2_https_trusts_only_the_test_ca() -> Result<()> {
    let fx = Fixture::new()?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.https_url(REPO);

    match libgit2_refs(&url) {
        Ok(names) => bail!("libgit2 trusted an unknown CA: {names:?}"),
        Err(e) => ensure!(
            e.class() == git2::ErrorClass::Ssl || e.code() == git2::ErrorCode::Certificate,
            "failed, but not on the certificate: {e}"
        ),
    }

    // libgit2's CA store is process-wide, so trust the test CA in a child
    // process (this test binary running only `libgit2_https_child`).
    let exe = std::env::current_exe().context("current test binary")?;
    let done = run_bounded(
        Command::new(exe)
            .args([
                "--exact",
                "libgit2_https_child",
                "--include-ignored",
                "--nocapture",
            ])
            .env(CHILD_URL_VAR, &url)
            .env("SSL_CERT_FILE", http.ca_cert_path()),
        GIT_TIMEOUT,
    )?;
    ensure!(
        done.success() && done.stdout.contains("1 passed"),
        "child: {}",
        done.describe()
    );
    Ok(())
}

/// Run by `libgit2_https_trusts_only_the_test_ca` in a child process whose
/// `SSL_CERT_FILE` is the test CA.
#[test]
#[ignore = "helper: run by libgit2_https_trusts_only_the_test_ca in a child process"]
fn libgit2_https_child() -> Result<()> {
    let url =
        std::env::var(CHILD_URL_VAR).context("run by libgit2_https_trusts_only_the_test_ca")?;
    let names = libgit2_refs(&url).with_context(|| format!("libgit2 on {url}"))?;
    ensure!(
        names.iter().any(|n| n == &format!("refs/tags/{TAG}")),
        "{names:?}"
    );
    Ok(())
}
