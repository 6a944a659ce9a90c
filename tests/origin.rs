//! Where a source's credentials go, and which failures a fetch gives up on
//! at once.
//!
//! Credentials: a release repository behind origins of one real nginx on
//! 127.0.0.1 (each port its own origin; [`front`]), in front of nginx +
//! git-http-backend. The configured origin redirects to another origin
//! that would accept the token and serve the release; the token
//! (`source.token_file`, HTTP basic auth) must never reach it, on any
//! transport that sends one: the streamed first-boot fetch and the channel
//! poll (reqwest), libgit2's fetch into the cache (apply, `driftless
//! fetch`, the watcher's evaluate-channel) and libgit2's ref listing (the
//! poll's fallback). The control: the configured origin itself asking for
//! the token, directly or after a redirect within itself, gets it.
//!
//! Permanent errors: a wrong URL (HTTP 404 from git-http-backend, `no such
//! repository` from git daemon) fails within seconds with a hint naming
//! `source.url`, over every transport, while a server that is down is
//! still retried until the deadline.

#[path = "support/front.rs"]
mod front;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::time::Duration;

use base64::Engine as _;
use front::{Front, Logged, Role};
use release::{Config, Key, NodeRoot, REPO, Release, TAG, Tagging, World};
use servers::SmartHttp;

/// Exit code: the release could not be fetched.
const EXIT_FETCH: i32 = 4;
/// A recognisable token.
const TOKEN: &str = "drtok_4d1e-ORIGIN-SECRET-77c2";
/// The user the token goes with (`source.token_user`'s default).
const USER: &str = "git";
/// Fetch settings: a deadline far longer than a permanent failure may take.
/// `require_v2: false`: a redirect is not protocol v2 to the streamed
/// fetch, and these tests follow where libgit2 takes the token after one
/// (a node refuses such a source by default).
const FETCH: &str = "{connect_timeout: 2s, io_timeout: 5s, deadline: 30s, retry_initial: 200ms, \
                     retry_max: 1s, require_v2: false}";
/// How long a fetch that must not be retried may take.
const AT_ONCE: Duration = Duration::from_secs(10);

/// The origins of the credential tests, by index.
const REDIRECTOR: usize = 0;
const FOREIGN: usize = 1;
const OWN: usize = 2;

/// A world with the release published and served, and three origins: one
/// that redirects every request to another origin, that other origin
/// (which would accept the token and serve the release), and an origin
/// that asks for the token itself and has a path that moved within it.
struct Origins {
    world: World,
    key: Key,
    _http: SmartHttp,
    front: Front,
}

impl Origins {
    fn new(status: u16) -> Self {
        let world = World::new();
        let key = world.keygen("release");
        let release = Release::new("files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n");
        world.publish(REPO, &release, TAG, Tagging::Signed(&key));
        let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
        let basic = Some((USER.to_owned(), TOKEN.to_owned()));
        let upstream = http.http_addr();
        let front = Front::start(&[
            Role::Redirect {
                status,
                to: FOREIGN,
            },
            Role::Serve {
                upstream,
                basic: basic.clone(),
            },
            Role::Moved {
                from: "/moved/".to_owned(),
                to: "/".to_owned(),
                upstream,
                basic,
            },
        ])
        .expect("start the origins");
        Self {
            world,
            key,
            _http: http,
            front,
        }
    }

    /// A root whose source is `url`, with the token in its token file.
    fn root(&self, name: &str, url: &str) -> NodeRoot {
        let mut config = Config::new(url);
        config.token_file = Some("/etc/driftless/git-token".to_owned());
        config.fetch = FETCH.to_owned();
        let root = self.world.configured_root(name, &self.key, &config);
        root.write("/etc/driftless/git-token", format!("{TOKEN}\n"));
        root
    }
}

/// Whether a logged request carried the token (basic auth, any user).
fn carries_token(entry: &Logged) -> bool {
    entry
        .authorization
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|pair| String::from_utf8_lossy(&pair).contains(TOKEN))
}

/// Asserts that the foreign origin was asked (so the test means
/// something) and never shown the token.
fn assert_kept_from_foreign(origins: &Origins, what: &str) {
    // nginx logs a request once its answer is sent: the client may be done
    // before the line is written.
    let foreign = servers::wait_for(Duration::from_secs(5), || {
        Some(origins.front.log_of(FOREIGN)).filter(|log| !log.is_empty())
    })
    .unwrap_or_default();
    assert!(
        !foreign.is_empty(),
        "{what}: the redirect was followed to the foreign origin at least once"
    );
    let leaked: Vec<&Logged> = foreign.iter().filter(|e| carries_token(e)).collect();
    assert!(
        leaked.is_empty(),
        "{what}: the token reached the foreign origin: {leaked:?}"
    );
    assert!(
        foreign.iter().all(|e| e.authorization.is_empty()),
        "{what}: no credentials of any kind went there: {foreign:?}"
    );
}

#[test]
fn a_token_never_follows_a_redirect_to_another_origin() {
    for status in [302, 307] {
        let origins = Origins::new(status);
        let url = origins.front.url(REDIRECTOR, REPO);
        let root = origins.root(&format!("node-{status}"), &url);
        let before = root.snapshot();

        // The first boot: streamed (reqwest, which does not follow), then
        // libgit2 into the cache.
        let apply = root.apply();
        apply.refused(EXIT_FETCH, &[&url, "source.url"]);
        assert!(apply.elapsed < AT_ONCE, "not retried\n{}", apply.describe());
        assert_eq!(
            release::diff(&before, &root.snapshot()),
            Vec::<String>::new()
        );
        // libgit2's fetch alone (the cache exists now).
        let fetch = root.driftless("fetch", &[], &[]);
        fetch.refused(EXIT_FETCH, &[&url, "source.url"]);
        assert_kept_from_foreign(&origins, &format!("{status}: apply and fetch"));
        // The configured origin got the token with the v2 request reqwest
        // sends (preemptively, to it alone).
        assert!(
            origins.front.log_of(REDIRECTOR).iter().any(carries_token),
            "the token was offered to the configured origin"
        );
    }
}

#[test]
fn a_token_goes_to_its_own_origin_also_after_a_redirect_within_it() {
    let origins = Origins::new(307);
    for (name, path) in [
        ("direct", REPO.to_owned()),
        ("moved", format!("moved/{REPO}")),
    ] {
        let url = origins.front.url(OWN, &path);
        let root = origins.root(name, &url);
        root.apply().ok();
        assert_eq!(root.read_text("/etc/motd"), "hello\n");
        // libgit2 alone, into the cache: re-fetch by asking again.
        root.driftless("fetch", &[], &[]).ok();
    }
    let own = origins.front.log_of(OWN);
    assert!(own.iter().any(carries_token), "{own:?}");
    assert!(
        own.iter()
            .any(|e| e.status == 301 && e.request.contains("/moved/")),
        "the moved path was redirected within the origin: {own:?}"
    );
    assert!(origins.front.log_of(FOREIGN).is_empty());
}

/// Polls `url` once with the token, as the watcher does.
fn poll(
    url: &str,
) -> Result<driftless::source::poll::RefAnswer, driftless::source::poll::PollError> {
    use driftless::source::poll::{BasicAuth, PollOptions, RefPoller};
    let options = PollOptions {
        basic_auth: Some(BasicAuth {
            user: USER.to_owned(),
            token: TOKEN.to_owned(),
        }),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(20),
        ..PollOptions::default()
    };
    let poller = RefPoller::new(url, options).expect("a poller");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(poller.ls_ref(&format!("refs/tags/{TAG}")))
}

#[test]
fn a_poll_never_takes_the_token_to_another_origin() {
    let origins = Origins::new(307);
    // The configured origin redirects: reqwest does not follow, and the
    // libgit2 listing it falls back to refuses to hand over the token.
    let url = origins.front.url(REDIRECTOR, REPO);
    let err = poll(&url).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("source.url"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert_kept_from_foreign(&origins, "poll");
    // The control: the own origin answers the same poll.
    let own = poll(&origins.front.url(OWN, REPO)).expect("polled");
    assert!(own.oid.is_some(), "{own:?}");
}

// ---------------------------------------------------------------------------
// Permanent errors
// ---------------------------------------------------------------------------

/// A standalone `git daemon` (not `--inetd`) on 127.0.0.1 serving `base`
/// as a stock daemon does: only repositories with `git-daemon-export-ok`,
/// errors not spelled out ("access denied or repository not exported").
struct StockDaemon {
    port: u16,
    _group: servers::ProcessGroup,
}

impl StockDaemon {
    fn start(base: &std::path::Path) -> Self {
        for _ in 0..5 {
            let port = servers::closed_port().expect("a free port");
            let mut group = servers::ProcessGroup::new().expect("process group");
            let mut cmd = servers::git_command(base);
            cmd.arg("daemon")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg("--reuseaddr")
                .arg(base)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let index = group
                .spawn(&mut cmd, "git daemon")
                .expect("start git daemon");
            let up = servers::wait_for(servers::READY_TIMEOUT, || {
                if let Ok(Some(_)) = group.members[index].try_wait() {
                    return Some(false);
                }
                std::net::TcpStream::connect(servers::localhost(port))
                    .ok()
                    .map(|_| true)
            });
            if up == Some(true) {
                return Self {
                    port,
                    _group: group,
                };
            }
        }
        panic!("git daemon did not listen in 5 attempts");
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

/// A root whose source is `url`, with [`FETCH`]'s 30 s deadline.
fn wrong_url_root(world: &World, key: &Key, name: &str, url: &str) -> NodeRoot {
    let mut config = Config::new(url);
    config.fetch = FETCH.to_owned();
    world.configured_root(name, key, &config)
}

/// Asserts a fetch that gave up at once, with the hint, changing nothing.
fn assert_given_up_at_once(root: &NodeRoot, run: &release::Run, url: &str, why: &str) {
    let line = run.refused(EXIT_FETCH, &[url, why, "(not retried); check source.url"]);
    assert!(
        line.ends_with("; check source.url"),
        "the hint ends the line: {line}"
    );
    assert!(
        run.elapsed < AT_ONCE,
        "given up at once, not after the 30 s deadline\n{}",
        run.describe()
    );
    // The test's own server may answer one request with a 502 under load
    // (a 5xx is worth retrying); what must never be retried is the answer
    // that cannot heal.
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains("retry_in") && l.contains(why)),
        "no second attempt after {why}\n{}",
        run.describe()
    );
    assert!(root.state().is_none(), "nothing recorded but the failure");
}

#[test]
fn a_wrong_url_fails_at_once_with_a_hint() {
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new("files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n");
    world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let daemon = servers::GitDaemon::start(&world.srv()).expect("start git daemon");
    let stock = StockDaemon::start(&world.srv());

    let cases = [
        // nginx + git-http-backend, protocol v2: the streamed fetch's request.
        ("http-v2", http.http_url("nope.git"), "404"),
        // The same server without v2: libgit2's listing, then its fetch.
        ("http-v0", http.v0_url("nope.git"), "404"),
        // git daemon --informative-errors, and a stock daemon whose
        // repository is there but not exported.
        ("daemon", daemon.url("nope.git"), "no such repository"),
        ("stock", stock.url(REPO), "not exported"),
    ];
    for (name, url, why) in &cases {
        let root = wrong_url_root(&world, &key, name, url);
        let before = root.snapshot();
        let apply = root.apply();
        assert_given_up_at_once(&root, &apply, url, why);
        assert_eq!(
            release::diff(&before, &root.snapshot()),
            Vec::<String>::new()
        );
        // libgit2 alone, into the cache.
        let fetch = root.driftless("fetch", &[], &[]);
        assert_given_up_at_once(&root, &fetch, url, why);
    }

    // The control: what can heal is still retried until the deadline.
    let refused = servers::closed_port_url("http").expect("a closed port");
    let mut config = Config::new(&refused);
    config.fetch =
        "{connect_timeout: 1s, io_timeout: 2s, deadline: 4s, retry_initial: 200ms, retry_max: 1s}"
            .to_owned();
    let root = world.configured_root("down", &key, &config);
    let run = root.apply();
    run.refused(EXIT_FETCH, &["could not fetch", "attempts"]);
    assert!(
        run.stderr.matches("retry_in").count() >= 2,
        "connection refused is retried\n{}",
        run.describe()
    );
}

#[test]
fn a_poll_of_a_wrong_url_says_which_setting_to_check() {
    use driftless::source::poll::{PollOptions, RefPoller};
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new("files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n");
    world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let stock = StockDaemon::start(&world.srv());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for url in [
        http.http_url("nope.git"),
        http.v0_url("nope.git"),
        stock.url(REPO),
    ] {
        let poller = RefPoller::new(&url, PollOptions::default()).expect("poller");
        let err = runtime
            .block_on(poller.ls_ref("refs/heads/channel"))
            .expect_err("no repository there");
        assert_eq!(err.permanent(), Some("check source.url"), "{url}: {err}");
        assert!(err.to_string().ends_with("; check source.url"), "{err}");
    }
    let refused = servers::closed_port_url("http").expect("a closed port");
    let poller = RefPoller::new(&refused, PollOptions::default()).expect("poller");
    let err = runtime
        .block_on(poller.ls_ref("refs/heads/channel"))
        .expect_err("nobody listens");
    assert_eq!(err.permanent(), None, "{err}");
}
