//! End-to-end tests of `driftless::source::poll`: one ref polled over real git
//! servers on 127.0.0.1 (nginx + git-http-backend, git daemon), through a
//! stalling proxy, and against small in-process HTTP servers that play a
//! v0-only git server or answer with canned responses.
//!
//! The cost figures (bytes the server sent per poll, for 10 and 20,000
//! tags, next to `git ls-remote`) are printed to stderr: run with
//! `cargo test --test poll -- --nocapture`.

#[path = "support/servers.rs"]
mod servers;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use driftless::source::poll::{BasicAuth, PollError, PollOptions, Protocol, RefAnswer, RefPoller};
use servers::{
    AccessEntry, Fault, FaultProxy, GitDaemon, SmartHttp, Traffic, closed_port_url, git_command,
    isolate_git_env, localhost, run_bounded,
};

/// The ref every test polls.
const CHANNEL: &str = "refs/heads/channel";
/// A ref sharing the channel's name as a prefix, pointing elsewhere.
const CHANNEL_OLD: &str = "refs/heads/channel-old";
/// The repository with few tags.
const SMALL: &str = "small.git";
/// The repository with many tags.
const BIG: &str = "big.git";
/// Tags in [`SMALL`].
const SMALL_TAGS: usize = 10;
/// Tags in [`BIG`].
const BIG_TAGS: usize = 20_000;
/// Time limit of a git command.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long nginx may take to log a finished request.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// The poller's socket silence limit in the tests. libgit2's copy is
/// process-wide and set by the first listing, so every test uses this one.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime cap of the in-process HTTP servers.
const MINI_LIFETIME: Duration = Duration::from_secs(300);

/// One test's world: HOME and the served directory with [`SMALL`] (and,
/// when asked, [`BIG`]), both with the same two commits.
struct Fixture {
    /// Everything lives here.
    dir: tempfile::TempDir,
    /// The commit `refs/heads/channel` names.
    channel: String,
    /// The commit `refs/heads/channel-old` names.
    old: String,
}

impl Fixture {
    /// Makes `srv/small.git`, and `srv/big.git` when `big`.
    fn new(big: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-poll-")
            .tempdir()
            .context("creating the fixture directory")?;
        for sub in ["home", "srv"] {
            std::fs::create_dir(dir.path().join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let mut fx = Self {
            dir,
            channel: String::new(),
            old: String::new(),
        };
        let (channel, old) = fx.make_repo(SMALL, SMALL_TAGS)?;
        if big {
            let (big_channel, big_old) = fx.make_repo(BIG, BIG_TAGS)?;
            ensure!(
                (&big_channel, &big_old) == (&channel, &old),
                "fixed dates make the same commits"
            );
        }
        fx.channel = channel;
        fx.old = old;
        Ok(fx)
    }

    /// A bare repository with two commits (`channel-old`, then `channel`)
    /// and `tags` lightweight tags on the second, written in one
    /// `update-ref --stdin` and packed.
    fn make_repo(&self, name: &str, tags: usize) -> Result<(String, String)> {
        let repo = self.srv().join(name);
        self.git_ok(
            self.git()
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(&repo),
        )?;
        let tree = self.git_ok(self.git_in(&repo).arg("mktree").stdin(Stdio::null()))?;
        let old = self.git_ok(self.git_in(&repo).args(["commit-tree", &tree, "-m", "old"]))?;
        let channel = self.git_ok(self.git_in(&repo).args([
            "commit-tree",
            &tree,
            "-p",
            &old,
            "-m",
            "channel",
        ]))?;
        let mut script = format!("create {CHANNEL} {channel}\ncreate {CHANNEL_OLD} {old}\n");
        for i in 0..tags {
            script.push_str(&format!(
                "create refs/tags/v1.{}.{} {channel}\n",
                i / 100,
                i % 100
            ));
        }
        let script_path = self.dir.path().join(format!("{name}.refs"));
        std::fs::write(&script_path, script).context("writing the ref script")?;
        // One process for all the refs; run_bounded closes stdin, so the
        // shell redirects it.
        let mut update = Command::new("/bin/sh");
        isolate_git_env(&mut update, &self.dir.path().join("home"));
        update
            .arg("-c")
            .arg("exec git -C \"$REPO\" update-ref --stdin < \"$SCRIPT\"")
            .env("REPO", &repo)
            .env("SCRIPT", &script_path);
        let done = run_bounded(&mut update, GIT_TIMEOUT)?;
        ensure!(done.success(), "update-ref --stdin: {}", done.describe());
        self.git_ok(self.git_in(&repo).args(["pack-refs", "--all"]))?;
        let count = self.git_ok(self.git_in(&repo).args(["for-each-ref", "--format=x"]))?;
        ensure!(
            count.lines().count() == tags + 2,
            "{name} has {} refs",
            count.lines().count()
        );
        Ok((channel, old))
    }

    /// The served directory.
    fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// An isolated `git` with a fixed identity and fixed dates.
    fn git(&self) -> Command {
        let mut cmd = git_command(&self.dir.path().join("home"));
        cmd.current_dir(self.dir.path())
            .env("GIT_AUTHOR_NAME", "Fleet")
            .env("GIT_AUTHOR_EMAIL", "fleet@example.com")
            .env("GIT_COMMITTER_NAME", "Fleet")
            .env("GIT_COMMITTER_EMAIL", "fleet@example.com")
            .env("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z");
        cmd
    }

    /// [`Fixture::git`] with `-C dir`.
    fn git_in(&self, dir: &Path) -> Command {
        let mut cmd = self.git();
        cmd.arg("-C").arg(dir);
        cmd
    }

    /// Runs `cmd`, requiring success; returns its trimmed stdout.
    fn git_ok(&self, cmd: &mut Command) -> Result<String> {
        let done = run_bounded(cmd, GIT_TIMEOUT)?;
        ensure!(done.success(), "{cmd:?} failed: {}", done.describe());
        Ok(done.stdout.trim().to_owned())
    }

    /// `git rev-parse REF` in the served repository `repo`.
    fn rev_parse(&self, repo: &str, name: &str) -> Result<String> {
        self.git_ok(
            self.git_in(&self.srv().join(repo))
                .args(["rev-parse", name]),
        )
    }

    /// `git -c protocol.version=V ls-remote URL refs/heads/channel`; checks
    /// it prints the channel's commit.
    fn ls_remote(&self, url: &str, version: u8) -> Result<()> {
        let out = self.git_ok(self.git().args([
            "-c",
            &format!("protocol.version={version}"),
            "ls-remote",
            url,
            CHANNEL,
        ]))?;
        ensure!(
            out == format!("{}\t{CHANNEL}", self.channel),
            "ls-remote v{version} printed {out:?}"
        );
        Ok(())
    }
}

/// Options every test starts from: short connect timeout, [`IO_TIMEOUT`].
fn options() -> PollOptions {
    PollOptions {
        connect_timeout: Duration::from_secs(5),
        io_timeout: IO_TIMEOUT,
        deadline: Duration::from_secs(30),
        ..PollOptions::default()
    }
}

/// The access log entries after the first `mark`, once there are `count`.
fn entries_after(http: &SmartHttp, mark: usize, count: usize) -> Result<Vec<AccessEntry>> {
    http.wait_for_requests(mark + count, LOG_TIMEOUT)?;
    // A moment more, so that an unexpected extra request would show.
    thread::sleep(Duration::from_millis(100));
    let all = http.access_log()?;
    Ok(all[mark..].to_vec())
}

/// Polls `url` once and checks the request nginx logged: exactly one
/// `ls-refs` POST with `Git-Protocol: version=2`. Returns the answer and
/// that request.
async fn poll_once(
    http: &SmartHttp,
    poller: &RefPoller,
    name: &str,
) -> Result<(RefAnswer, AccessEntry)> {
    let mark = http.access_log()?.len();
    let answer = poller.ls_ref(name).await?;
    let logged = entries_after(http, mark, 1)?;
    ensure!(
        logged.len() == 1,
        "one poll made {} requests: {logged:?}",
        logged.len()
    );
    let entry = logged[0].clone();
    ensure!(
        entry.method == "POST"
            && entry.uri.ends_with("/git-upload-pack")
            && entry.status == 200
            && entry.git_protocol.as_deref() == Some("version=2"),
        "not a v2 ls-refs request: {entry:?}"
    );
    ensure!(answer.protocol == Protocol::V2, "{answer:?}");
    Ok((answer, entry))
}

/// The requests and bytes of `git ls-remote` at protocol `version`.
fn ls_remote_cost(fx: &Fixture, http: &SmartHttp, url: &str, version: u8) -> Result<Traffic> {
    let mark = http.access_log()?.len();
    fx.ls_remote(url, version)?;
    let expected = if version == 2 { 2 } else { 1 };
    Ok(Traffic::of(&entries_after(http, mark, expected)?))
}

#[tokio::test(flavor = "current_thread")]
async fn one_v2_request_per_poll_whatever_the_number_of_tags() -> Result<()> {
    let fx = Fixture::new(true)?;
    let http = SmartHttp::start(&fx.srv())?;
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (repo, tags) in [(SMALL, SMALL_TAGS), (BIG, BIG_TAGS)] {
        let url = http.http_url(repo);
        let poller = RefPoller::new(&url, options())?;
        let (answer, entry) = poll_once(&http, &poller, CHANNEL).await?;
        ensure!(
            answer.oid.as_deref() == Some(fx.rev_parse(repo, "channel")?.as_str()),
            "{repo}: {answer:?}"
        );
        // The same poller, again: same cost, one request each.
        for _ in 0..3 {
            let (again, again_entry) = poll_once(&http, &poller, CHANNEL).await?;
            ensure!(again == answer, "{again:?} != {answer:?}");
            ensure!(
                again_entry.bytes_sent == entry.bytes_sent,
                "{again_entry:?} vs {entry:?}"
            );
        }
        // A ref sharing the prefix is told apart.
        let (old, _) = poll_once(&http, &poller, CHANNEL_OLD).await?;
        ensure!(old.oid.as_deref() == Some(fx.old.as_str()), "{old:?}");

        let v0 = ls_remote_cost(&fx, &http, &url, 0)?;
        let v2 = ls_remote_cost(&fx, &http, &url, 2)?;
        costs.push((entry.bytes_sent, answer.bytes_received, v0, v2));
        rows.push(format!(
            "{tags:>6} tags | driftless v2: 1 request, {:>4} bytes sent ({} body) | git ls-remote v2: {} requests, {:>5} bytes | git ls-remote v0: {} request, {:>8} bytes",
            entry.bytes_sent,
            answer.bytes_received,
            v2.requests,
            v2.bytes_sent,
            v0.requests,
            v0.bytes_sent
        ));
    }
    eprintln!(
        "bytes the server sent for one poll of {CHANNEL} (status line and headers included):"
    );
    for row in &rows {
        eprintln!("  {row}");
    }
    let [(small, small_body, small_v0, _), (big, big_body, big_v0, _)] = costs[..] else {
        bail!("two measurements expected");
    };
    ensure!(
        small == big && small_body == big_body,
        "the poll's cost grew with the tags: {small} -> {big} bytes"
    );
    ensure!(
        big_v0.bytes_sent > 100 * big && big_v0.bytes_sent > 10 * small_v0.bytes_sent,
        "v0 should grow with the tags: {small_v0:?} -> {big_v0:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_ref_is_none() -> Result<()> {
    let fx = Fixture::new(false)?;
    let http = SmartHttp::start(&fx.srv())?;
    let poller = RefPoller::new(&http.http_url(SMALL), options())?;
    for missing in ["refs/heads/chan", "refs/heads/nope", "refs/heads/channel/x"] {
        let (answer, _) = poll_once(&http, &poller, missing).await?;
        ensure!(answer.oid.is_none(), "{missing}: {answer:?}");
    }
    // A repository that is not there is an HTTP error, not a missing ref.
    // Under load the test server's fcgiwrap now and then drops a request,
    // which nginx answers 502: that (and only that) is asked again, a few
    // times.
    let absent = RefPoller::new(&http.http_url("absent.git"), options())?;
    for attempt in 1..=5 {
        match absent.ls_ref(CHANNEL).await {
            Err(PollError::HttpStatus { status: 404, .. }) => return Ok(()),
            Err(PollError::HttpStatus { status: 502, .. }) if attempt < 5 => {
                eprintln!("the test server answered 502 (attempt {attempt}); asking again");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => bail!("absent repository: {other:?}\n{}", http.error_log()),
        }
    }
    bail!(
        "absent repository: no answer but 502 in 5 attempts\n{}",
        http.error_log()
    )
}

#[tokio::test(flavor = "current_thread")]
async fn https_trusts_the_configured_ca_only() -> Result<()> {
    let fx = Fixture::new(false)?;
    let http = SmartHttp::start(&fx.srv())?;
    let url = http.https_url(SMALL);
    let trusted = RefPoller::new(
        &url,
        PollOptions {
            ca_file: Some(http.ca_cert_path().to_path_buf()),
            ..options()
        },
    )?;
    let (answer, entry) = poll_once(&http, &trusted, CHANNEL).await?;
    ensure!(entry.scheme == "https", "{entry:?}");
    ensure!(
        answer.oid.as_deref() == Some(fx.channel.as_str()),
        "{answer:?}"
    );

    // The system's roots do not know the test CA, nor does another CA.
    let other = SmartHttp::start(&fx.srv())?;
    for ca_file in [None, Some(other.ca_cert_path().to_path_buf())] {
        let poller = RefPoller::new(
            &url,
            PollOptions {
                ca_file: ca_file.clone(),
                ..options()
            },
        )?;
        match poller.ls_ref(CHANNEL).await {
            Err(e @ PollError::Tls { .. }) => {
                eprintln!("untrusted certificate, CA {ca_file:?}: {e}");
            }
            other => bail!("CA {ca_file:?}: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn git_urls_speak_v2_and_file_urls_fall_back_to_libgit2() -> Result<()> {
    let fx = Fixture::new(false)?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let file_url = format!("file://{}", fx.srv().join(SMALL).display());
    // git daemon answers protocol v2 itself; file:// is libgit2's alone.
    for (url, protocol) in [
        (daemon.url(SMALL), Protocol::V2),
        (file_url, Protocol::Fallback),
    ] {
        let poller = RefPoller::new(&url, options())?;
        let before = daemon.connections();
        let answer = poller.ls_ref(CHANNEL).await?;
        ensure!(
            answer.protocol == protocol && answer.oid.as_deref() == Some(fx.channel.as_str()),
            "{url}: {answer:?}"
        );
        ensure!(answer.bytes_received > 0, "{answer:?}");
        let missing = poller.ls_ref("refs/heads/nope").await?;
        ensure!(
            missing.oid.is_none() && missing.protocol == protocol,
            "{url}: {missing:?}"
        );
        let old = poller.ls_ref(CHANNEL_OLD).await?;
        ensure!(
            old.oid.as_deref() == Some(fx.old.as_str()),
            "{url}: {old:?}"
        );
        if url.starts_with("git://") {
            ensure!(
                daemon.connections() - before == 3,
                "three polls, {} connections",
                daemon.connections() - before
            );
            // One ref asked for: the answer does not grow with the tags.
            ensure!(answer.bytes_received < 200, "{answer:?}");
        }
    }
    let missing_repo = RefPoller::new(&daemon.url("nope.git"), options())?;
    match missing_repo.ls_ref(CHANNEL).await {
        Err(e @ (PollError::Server { .. } | PollError::Transfer { .. })) => {
            eprintln!("a repository git daemon does not export: {e}");
        }
        other => bail!("a repository git daemon does not export: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_v0_only_http_server_is_polled_through_libgit2() -> Result<()> {
    let fx = Fixture::new(false)?;
    let server = MiniHttp::start(cgi_handler(fx.srv(), fx.dir.path().join("home")))?;
    let poller = RefPoller::new(&server.url(SMALL), options())?;

    let first = poller.ls_ref(CHANNEL).await?;
    ensure!(
        first.protocol == Protocol::Fallback && first.oid.as_deref() == Some(fx.channel.as_str()),
        "{first:?}"
    );
    let requests = server.requests();
    let lines: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    ensure!(
        lines
            == [
                format!("POST /{SMALL}/git-upload-pack"),
                format!("GET /{SMALL}/info/refs?service=git-upload-pack"),
            ],
        "first poll: {lines:?}"
    );
    ensure!(
        requests[0].header("git-protocol") == Some("version=2")
            && requests[0].header("content-type") == Some("application/x-git-upload-pack-request")
            && requests[0].header("accept") == Some("application/x-git-upload-pack-result")
            && requests[0]
                .header("user-agent")
                .is_some_and(|ua| ua.starts_with("driftless/")),
        "v2 request headers: {:?}",
        requests[0].headers
    );

    // The next polls skip v2: one request each.
    for _ in 0..2 {
        let again = poller.ls_ref(CHANNEL).await?;
        ensure!(
            again.protocol == Protocol::Fallback && again.oid == first.oid,
            "{again:?}"
        );
    }
    let requests = server.requests();
    ensure!(
        requests.len() == 4 && requests[2..].iter().all(|r| r.method == "GET"),
        "later polls: {:?}",
        requests.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_server_times_out() -> Result<()> {
    let fx = Fixture::new(false)?;
    let http = SmartHttp::start(&fx.srv())?;
    let io_timeout = Duration::from_secs(1);
    // Silent from the start, and silent in the middle of the headers.
    for stall_after in [0, 40] {
        let proxy = FaultProxy::start(http.http_addr(), Fault::StallAfter(stall_after))?;
        let url = proxy
            .url("http", SMALL)
            .replace("http://", "http://fleet:s3cret@");
        let poller = RefPoller::new(
            &url,
            PollOptions {
                io_timeout,
                deadline: Duration::from_secs(5),
                ..options()
            },
        )?;
        let start = Instant::now();
        let result = poller.ls_ref(CHANNEL).await;
        let elapsed = start.elapsed();
        let err = match result {
            Err(e @ PollError::Timeout { .. }) => e,
            other => bail!("stall after {stall_after}: {other:?}"),
        };
        let message = err.to_string();
        eprintln!("stalled after {stall_after} bytes: {message} ({elapsed:?})");
        ensure!(
            elapsed >= io_timeout && elapsed < io_timeout + Duration::from_secs(2),
            "took {elapsed:?}"
        );
        ensure!(
            !message.contains("s3cret") && !message.contains("fleet") && !message.contains('\n'),
            "{message}"
        );
        ensure!(message.contains(&proxy.url("http", SMALL)), "{message}");
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_git_daemon_hits_the_deadline() -> Result<()> {
    // git:// is driftless's own protocol v2 client: a stall ends at the
    // deadline, and leaves nothing behind that the next poll waits for.
    let fx = Fixture::new(false)?;
    let daemon = GitDaemon::start(&fx.srv())?;
    let proxy = FaultProxy::start(daemon.addr(), Fault::StallAfter(0))?;
    let deadline = Duration::from_millis(1500);
    let poller = RefPoller::new(
        &proxy.url("git", SMALL),
        PollOptions {
            deadline,
            ..options()
        },
    )?;
    for poll in 0..2 {
        let start = Instant::now();
        let result = poller.ls_ref(CHANNEL).await;
        let elapsed = start.elapsed();
        ensure!(
            matches!(result, Err(PollError::Timeout { .. })),
            "poll {poll}: {result:?}"
        );
        ensure!(
            elapsed >= deadline && elapsed < deadline + Duration::from_secs(2),
            "poll {poll} took {elapsed:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_libgit2_listing_hits_the_deadline() -> Result<()> {
    // A server without v2 is listed by libgit2, which a deadline cannot
    // stop: this one answers the v2 request as a v0 server would, then
    // never answers the listing (for longer than libgit2's socket timeout).
    let stall = IO_TIMEOUT + Duration::from_secs(3);
    let server = MiniHttp::start(Arc::new(move |req: &Request| {
        if req.method == "GET" {
            thread::sleep(stall);
            return respond("500 Internal Server Error", "text/plain", b"");
        }
        respond(
            "200 OK",
            "application/x-git-upload-pack-advertisement",
            b"001e# service=git-upload-pack\n0000",
        )
    }))?;
    let deadline = Duration::from_millis(1500);
    let poller = RefPoller::new(
        &server.url(SMALL),
        PollOptions {
            deadline,
            ..options()
        },
    )?;
    let start = Instant::now();
    let result = poller.ls_ref(CHANNEL).await;
    let elapsed = start.elapsed();
    ensure!(
        matches!(result, Err(PollError::Timeout { .. })),
        "{result:?}"
    );
    ensure!(
        elapsed >= deadline && elapsed < deadline + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    // libgit2 still waits on the stalled socket: no second listing is piled
    // on top...
    let again = poller.ls_ref(CHANNEL).await;
    ensure!(matches!(again, Err(PollError::Busy { .. })), "{again:?}");
    // ... until libgit2's own socket timeout ends it, and the next poll can
    // start a listing again (which waits behind the stalled answer in turn).
    let next = loop {
        match poller.ls_ref(CHANNEL).await {
            Err(PollError::Busy { .. }) if start.elapsed() < IO_TIMEOUT * 3 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    let freed = start.elapsed();
    ensure!(matches!(next, Err(PollError::Timeout { .. })), "{next:?}");
    eprintln!(
        "stalled libgit2 listing: deadline after {elapsed:?}, libgit2 gave up within {freed:?}"
    );
    // Busy past the deadline, and freed by libgit2's own socket timeouts
    // (process-wide: the first poller of this test process set them).
    ensure!(
        freed > deadline * 2 && freed < IO_TIMEOUT + deadline + Duration::from_secs(3),
        "libgit2's listing ended after {freed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn connection_refused_is_a_connect_error() -> Result<()> {
    for scheme in ["http", "https"] {
        let url = closed_port_url(scheme)?;
        let poller = RefPoller::new(&url, options())?;
        let start = Instant::now();
        match poller.ls_ref(CHANNEL).await {
            Err(e @ PollError::Connect { .. }) => eprintln!("{e}"),
            other => bail!("{url}: {other:?}"),
        }
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn server_errors_and_bad_answers_are_reported() -> Result<()> {
    const OID: &str = "0123456789abcdef0123456789abcdef01234567";
    let token = "t0ken-Secret";
    let expected_auth = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("fleet:{token}"))
        )
    };
    let wanted_auth = expected_auth.clone();
    let server = MiniHttp::start(Arc::new(move |req: &Request| {
        let result = |body: &[u8]| respond("200 OK", RESULT_TYPE, body);
        let repo = req.target.split('/').nth(1).unwrap_or_default();
        match repo {
            "err.git" => result(pkt_line("ERR access denied\n").as_bytes()),
            "huge.git" => {
                let mut body = Vec::new();
                for i in 0..2000 {
                    let line = pkt_line(&format!("{OID} refs/heads/channel-{i:05}\n"));
                    body.extend_from_slice(line.as_bytes());
                }
                body.extend_from_slice(b"0000");
                result(&body)
            }
            "garbage.git" => {
                result(format!("{}0000", pkt_line("this is not a ref line\n")).as_bytes())
            }
            "truncated.git" => result(pkt_line(&format!("{OID} refs/heads/channel\n")).as_bytes()),
            "v0.git" => respond(
                "200 OK",
                "application/x-git-upload-pack-advertisement",
                b"001e# service=git-upload-pack\n0000",
            ),
            "broken.git" => respond("500 Internal Server Error", "text/plain", b"oops"),
            "private.git" if req.header("authorization") == Some(wanted_auth.as_str()) => result(
                format!("{}0000", pkt_line(&format!("{OID} refs/heads/channel\n"))).as_bytes(),
            ),
            "private.git" => respond("401 Unauthorized", "text/plain", b"who are you"),
            _ => respond("404 Not Found", "text/plain", b""),
        }
    }))?;
    let poll = |repo: &str, options: PollOptions| {
        let url = server.url(repo);
        async move { RefPoller::new(&url, options)?.ls_ref(CHANNEL).await }
    };

    let err = poll("err.git", options()).await;
    ensure!(
        matches!(&err, Err(PollError::Server { message, .. }) if message == "access denied"),
        "{err:?}"
    );
    let err = poll("huge.git", options()).await;
    ensure!(
        matches!(err, Err(PollError::TooLarge { limit: 65536, .. })),
        "{err:?}"
    );
    for repo in ["garbage.git", "truncated.git"] {
        let err = poll(repo, options()).await;
        ensure!(
            matches!(err, Err(PollError::Malformed { .. })),
            "{repo}: {err:?}"
        );
    }
    let err = poll("broken.git", options()).await;
    ensure!(
        matches!(err, Err(PollError::HttpStatus { status: 500, .. })),
        "{err:?}"
    );

    let with_token = PollOptions {
        basic_auth: Some(BasicAuth {
            user: "fleet".to_owned(),
            token: token.to_owned(),
        }),
        ..options()
    };
    let answer = poll("private.git", with_token.clone()).await?;
    ensure!(answer.oid.as_deref() == Some(OID), "{answer:?}");
    // The same credentials given in the URL.
    let in_url = server
        .url("private.git")
        .replace("http://", &format!("http://fleet:{token}@"));
    let answer = RefPoller::new(&in_url, options())?.ls_ref(CHANNEL).await?;
    ensure!(answer.oid.as_deref() == Some(OID), "{answer:?}");
    // Explicit credentials win over the URL's user information.
    let explicit = RefPoller::new(&in_url.replace(token, "wrong"), with_token.clone())?;
    ensure!(
        explicit.ls_ref(CHANNEL).await.is_ok(),
        "explicit credentials"
    );
    let err = poll("private.git", options()).await;
    match &err {
        Err(e @ PollError::HttpStatus { status: 401, .. }) => eprintln!("{e}"),
        other => bail!("{other:?}"),
    }
    for request in server.requests() {
        if let Some(auth) = request.header("authorization") {
            ensure!(auth == expected_auth, "sent {auth:?}");
        }
    }

    // A v0 advertisement in answer to the POST means no v2: the poller
    // turns to libgit2, which this canned server cannot satisfy.
    let before = server.requests().len();
    let err = poll("v0.git", options()).await;
    ensure!(matches!(err, Err(PollError::Fallback { .. })), "{err:?}");
    let after = server.requests();
    ensure!(
        after.len() == before + 2 && after[before + 1].method == "GET",
        "{:?}",
        &after[before..]
            .iter()
            .map(|r| &r.target)
            .collect::<Vec<_>>()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// A small in-process HTTP/1.1 server (one request per connection)
// ---------------------------------------------------------------------------

/// `Content-Type` of an `ls-refs` answer.
const RESULT_TYPE: &str = "application/x-git-upload-pack-result";

/// One request as received.
#[derive(Clone, Debug)]
struct Request {
    /// `GET`, `POST`.
    method: String,
    /// Path and query.
    target: String,
    /// Header names (lowercase) and values.
    headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Makes the whole response to a request.
type Handler = Arc<dyn Fn(&Request) -> Vec<u8> + Send + Sync>;

/// `text` as one pkt-line.
fn pkt_line(text: &str) -> String {
    format!("{:04x}{text}", text.len() + 4)
}

/// A complete response with `Connection: close`.
fn respond(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// An HTTP server on 127.0.0.1:0 that answers each connection's single
/// request with a [`Handler`] and records the requests. Bounded: each
/// connection has socket timeouts, the accept loop a lifetime; stops on drop.
struct MiniHttp {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    accepts: Option<JoinHandle<()>>,
}

impl MiniHttp {
    /// Starts serving.
    fn start(handler: Handler) -> Result<Self> {
        let listener = TcpListener::bind(localhost(0)).context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr().context("local address")?;
        listener.set_nonblocking(true).context("non-blocking")?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepts = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                let deadline = Instant::now() + MINI_LIFETIME;
                let mut served = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && served < 1000 {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            // One at a time: the tests make one request at a time.
                            let _ = serve_one(stream, &handler, &requests);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            requests,
            accepts: Some(accepts),
        })
    }

    /// `http://127.0.0.1:PORT/REPO`.
    fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }

    /// The requests so far.
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for MiniHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accepts.take() {
            let _ = handle.join();
        }
    }
}

/// Reads one request from `stream`, records it and writes the handler's
/// response.
fn serve_one(
    mut stream: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<Request>>,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(buf.len() < 64 * 1024, "request head too large");
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let target = start.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    ensure!(length <= 1024 * 1024, "request body too large");
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Request {
        method,
        target,
        headers,
        body,
    };
    let response = handler(&request);
    if let Ok(mut all) = requests.lock() {
        all.push(request);
    }
    stream.write_all(&response)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// A handler that runs `git http-backend` as a CGI program for every
/// request, like the nginx harness but without passing `Git-Protocol` on
/// as `GIT_PROTOCOL`: a smart HTTP server that speaks only protocol v0.
fn cgi_handler(base: PathBuf, home: PathBuf) -> Handler {
    Arc::new(move |req: &Request| {
        run_cgi(&base, &home, req).unwrap_or_else(|e| {
            respond(
                "500 Internal Server Error",
                "text/plain",
                format!("{e:#}").as_bytes(),
            )
        })
    })
}

/// Runs `git http-backend` for one request (bounded) and turns its CGI
/// output into an HTTP response.
fn run_cgi(base: &Path, home: &Path, req: &Request) -> Result<Vec<u8>> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut cmd = Command::new("git");
    isolate_git_env(&mut cmd, home);
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", base)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(content_type) = req.header("content-type") {
        cmd.env("CONTENT_TYPE", content_type);
    }
    let mut child = cmd.spawn().context("starting git http-backend")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let body = req.body.clone();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("git http-backend ran too long");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = writer.join();
    let output = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no CGI header end")?;
    let head = String::from_utf8_lossy(&output[..split]).into_owned();
    let body = &output[split + 4..];
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for line in head.split("\r\n") {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned();
            }
            Some(_) => {
                response.push_str(line);
                response.push_str("\r\n");
            }
            None => {}
        }
    }
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Ok(out)
}
