//! Tests of the terminate stage (`driftless::fleet::terminate`) against real parts:
//! `exec` and `drain` run shell scripts that record their arguments,
//! environment and order in files; `webhook` posts to a small HTTP receiver
//! on 127.0.0.1 that checks the HMAC with ring (`support/webhook.rs`), and
//! over HTTPS to nginx with a throw-away CA (`support/servers.rs`).
//! `poweroff` is never run: its command line is unit-tested in the module.
//!
//! Every test has its own temporary directory (the node root) and its own
//! receiver port, so tests run in parallel; every wait has a time limit.
//! Scripts are run as `/bin/sh SCRIPT`, so a freshly written file is read,
//! never executed (no ETXTBSY when another test forks meanwhile).

#[path = "support/servers.rs"]
mod servers;
#[path = "support/webhook.rs"]
mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftless::config::{ReplaceAction, ReplaceSettings};
use driftless::fleet::terminate::{CommandFailure, TerminateError, request_replacement, validate};
use driftless::record::replacement::{Reason, ReplacementRequest};
use driftless::types::{Interval, NodePath};
use webhook::{Answer, one_shot};

/// The secret both sides share in the webhook tests.
const SECRET: &str = "correct horse battery staple";
/// Where the tests put the webhook secret on the node.
const SECRET_PATH: &str = "/etc/driftless/webhook.secret";
/// Where the HTTPS test puts the receiver's CA on the node.
const CA_PATH: &str = "/etc/driftless/webhook-ca.pem";
/// Slack allowed on top of a time limit before a test calls it too slow.
const MARGIN: Duration = Duration::from_secs(3);

fn node_path(text: &str) -> NodePath {
    NodePath::new(text).expect("valid node path")
}

fn replacement(reason: Reason) -> ReplacementRequest {
    ReplacementRequest::new(
        "i-0123456789abcdef0",
        "v1.4.2",
        "0123456789abcdef0123456789abcdef01234567",
        Some("v1.5.0"),
        reason,
        "",
    )
}

fn settings(action: ReplaceAction, timeout: Duration) -> ReplaceSettings {
    ReplaceSettings {
        action,
        timeout: Interval(timeout),
        ..ReplaceSettings::default()
    }
}

/// Writes a shell script and returns the argv that runs it.
fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
    let path = dir.join(name);
    std::fs::write(&path, format!("set -u\n{body}\n")).expect("write script");
    vec!["/bin/sh".into(), path.display().to_string()]
}

/// `'text'` for a shell script.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// An exec config with the time limit `limit` whose drain (`drain.sh`)
/// runs `drain` and whose command (`replace.sh`) runs `exec`: script
/// bodies in which `$log` names the one file both append to. Returns the
/// config and that file.
fn drain_then_exec(
    root: &Path,
    limit: Duration,
    drain: &str,
    exec: &str,
) -> (ReplaceSettings, PathBuf) {
    let log = root.join("order");
    let set_log = format!("log={}", sh_quote(&log));
    let mut config = settings(ReplaceAction::Exec, limit);
    config.drain = script(root, "drain.sh", &format!("{set_log}\n{drain}"));
    config.command = script(root, "replace.sh", &format!("{set_log}\n{exec}"));
    (config, log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// exec and drain
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn exec_gets_the_reason_as_last_argument_and_a_clean_environment() {
    let root = tempfile::tempdir().expect("temp dir");
    let out = root.path().join("record");
    let env_out = root.path().join("env");
    let mut config = settings(ReplaceAction::Exec, Duration::from_secs(10));
    config.command = script(
        root.path(),
        "mark-unhealthy.sh",
        &format!(
            "{{\n  printf 'argc=%s\\n' \"$#\"\n  for a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\n  \
             if read -r line; then echo \"stdin=$line\"; else echo stdin=eof; fi\n  \
             echo \"cwd=$(pwd)\"\n}} > {}\nenv > {}",
            sh_quote(&out),
            sh_quote(&env_out)
        ),
    );
    config.command.extend(["--region".into(), "eu west".into()]);
    let request = replacement(Reason::ReleaseChanged);

    request_replacement(root.path(), &config, &request)
        .await
        .expect("the command succeeds");

    assert_eq!(
        read(&out),
        "argc=3\narg=--region\narg=eu west\narg=release-changed: v1.4.2 -> v1.5.0\n\
         stdin=eof\ncwd=/\n"
    );
    let env: BTreeMap<String, String> = read(&env_out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let expected = [
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ("DRIFTLESS_NODE_ID", "i-0123456789abcdef0"),
        ("DRIFTLESS_REASON", "release-changed"),
        ("DRIFTLESS_PINNED", "v1.4.2"),
        (
            "DRIFTLESS_PINNED_COMMIT",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("DRIFTLESS_DESIRED", "v1.5.0"),
        ("DRIFTLESS_DETAIL", ""),
        ("DRIFTLESS_REQUEST_ID", request.request_id.as_str()),
    ];
    for (key, value) in expected {
        assert_eq!(env.get(key).map(String::as_str), Some(value), "{key}");
    }
    // Nothing of the agent's own environment leaks; the shell may add its own.
    let shell_own = ["PWD", "OLDPWD", "SHLVL", "_"];
    for key in env.keys() {
        assert!(
            expected.iter().any(|(k, _)| k == key) || shell_own.contains(&key.as_str()),
            "unexpected variable {key} in the command's environment"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_command_is_an_error_with_its_first_stderr_line() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut config = settings(ReplaceAction::Exec, Duration::from_secs(10));
    config.command = script(
        root.path(),
        "fail.sh",
        "echo 'some output' \necho >&2\necho 'cannot reach the cloud API' >&2\n\
         echo 'second line' >&2\nexit 3",
    );

    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("exit 3 is a failure");

    let text = err.to_string();
    assert!(
        matches!(
            &err,
            TerminateError::Command {
                action: ReplaceAction::Exec,
                failure: CommandFailure::Exit { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.starts_with("replace by exec: /bin/sh "), "{text}");
    assert!(
        text.ends_with("exited with status 3: cannot reach the cloud API"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_command_that_does_not_exist_is_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut config = settings(ReplaceAction::Exec, Duration::from_secs(10));
    let missing = root.path().join("no-such-program");
    config.command = vec![missing.display().to_string()];

    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("nothing to run");

    let text = err.to_string();
    assert!(text.contains("no-such-program cannot be started"), "{text}");
}

/// True once `pid` is gone (or a zombie nobody has reaped yet).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_command_past_its_time_limit_is_killed_with_its_children() {
    let root = tempfile::tempdir().expect("temp dir");
    let pid_file = root.path().join("sleep.pid");
    let limit = Duration::from_millis(500);
    let mut config = settings(ReplaceAction::Exec, limit);
    config.command = script(
        root.path(),
        "hang.sh",
        &format!("sleep 30 &\necho $! > {}\nwait", sh_quote(&pid_file)),
    );

    let started = Instant::now();
    let err = request_replacement(root.path(), &config, &replacement(Reason::ApplyFailed))
        .await
        .expect_err("the command hangs");
    let took = started.elapsed();

    assert!(took >= limit, "gave up after {took:?}");
    assert!(took < limit + MARGIN, "took {took:?}");
    assert!(
        matches!(
            &err,
            TerminateError::Command {
                failure: CommandFailure::Timeout(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("did not finish within 500ms; killed"),
        "{err}"
    );
    // The script's own child went down with it.
    let pid = read(&pid_file).trim().to_owned();
    let deadline = Instant::now() + MARGIN;
    while !is_dead(&pid) {
        assert!(
            Instant::now() < deadline,
            "sleep {pid} outlived the command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_request_kills_the_command() {
    let root = tempfile::tempdir().expect("temp dir");
    let pid_file = root.path().join("pids");
    let mut config = settings(ReplaceAction::Exec, Duration::from_secs(60));
    config.command = script(
        root.path(),
        "hang.sh",
        &format!("sleep 30 &\necho $$ $! > {}\nwait", sh_quote(&pid_file)),
    );

    let request = replacement(Reason::Drift);
    let cut_short = tokio::time::timeout(
        Duration::from_millis(500),
        request_replacement(root.path(), &config, &request),
    )
    .await;

    assert!(cut_short.is_err(), "the command cannot have finished");
    let pids = read(&pid_file);
    let deadline = Instant::now() + MARGIN;
    for pid in pids.split_whitespace() {
        while !is_dead(pid) {
            assert!(
                Instant::now() < deadline,
                "{pid} outlived the dropped request"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn drain_runs_before_the_action() {
    let root = tempfile::tempdir().expect("temp dir");
    let (config, log) = drain_then_exec(
        root.path(),
        Duration::from_secs(10),
        "sleep 0.2\necho \"drain $DRIFTLESS_REASON $#\" >> \"$log\"",
        "echo \"exec $1\" >> \"$log\"",
    );

    request_replacement(root.path(), &config, &replacement(Reason::ReleaseChanged))
        .await
        .expect("drained and replaced");

    assert_eq!(
        read(&log),
        "drain release-changed 0\nexec release-changed: v1.4.2 -> v1.5.0\n"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_drain_does_not_stop_the_request() {
    let root = tempfile::tempdir().expect("temp dir");
    let (config, log) = drain_then_exec(
        root.path(),
        Duration::from_secs(10),
        "echo drain >> \"$log\"\necho 'load balancer unreachable' >&2\nexit 1",
        "echo exec >> \"$log\"",
    );

    request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect("the node asks to be replaced anyway");

    assert_eq!(read(&log), "drain\nexec\n");
}

#[tokio::test(flavor = "current_thread")]
async fn a_hanging_drain_is_killed_and_the_request_goes_on() {
    let root = tempfile::tempdir().expect("temp dir");
    let limit = Duration::from_millis(400);
    let (config, log) = drain_then_exec(
        root.path(),
        limit,
        "echo drain >> \"$log\"\nsleep 30",
        "echo exec >> \"$log\"",
    );

    let started = Instant::now();
    request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect("the node asks to be replaced anyway");
    let took = started.elapsed();

    assert_eq!(read(&log), "drain\nexec\n");
    assert!(took >= limit && took < limit * 2 + MARGIN, "took {took:?}");
}

// ---------------------------------------------------------------------------
// webhook
// ---------------------------------------------------------------------------

/// A node root with the webhook secret (`contents`) at [`SECRET_PATH`].
fn root_with_secret(contents: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let file = node_path(SECRET_PATH).under(root.path());
    std::fs::create_dir_all(file.parent().expect("parent")).expect("create /etc/driftless");
    std::fs::write(&file, contents).expect("write the secret");
    root
}

fn webhook(url: &str, timeout: Duration) -> ReplaceSettings {
    let mut config = settings(ReplaceAction::Webhook, timeout);
    config.url = Some(url.to_owned());
    config.secret_file = Some(node_path(SECRET_PATH));
    config
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_posts_the_signed_request() {
    // The file ends with a newline, which is not part of the secret.
    let root = root_with_secret(&format!("{SECRET}\n"));
    let (url, received) = one_shot(SECRET, Answer::Status("200 OK", "")).await;
    let mut request = replacement(Reason::Drift);
    request.detail = "/etc/app.conf content changed".into();

    request_replacement(
        root.path(),
        &webhook(&url, Duration::from_secs(10)),
        &request,
    )
    .await
    .expect("the receiver accepts");

    let got = received.await.expect("receiver task");
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("POST", "/replace")
    );
    assert!(got.signature_ok, "signature did not verify: {got:?}");
    assert_eq!(
        got.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        got.headers.get("x-driftless-request-id"),
        Some(&request.request_id)
    );
    assert_eq!(
        got.headers.get("user-agent").map(String::as_str),
        Some(concat!("driftless/", env!("CARGO_PKG_VERSION")))
    );
    let body: ReplacementRequest = serde_json::from_slice(&got.body).expect("JSON body");
    assert_eq!(body, request);
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON body");
    assert_eq!(json["reason"], "drift");
    assert_eq!(json["pinned"], "v1.4.2");
    assert_eq!(json["desired"], "v1.5.0");
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_error_statuses_are_errors_naming_the_status() {
    let root = root_with_secret(SECRET);
    let (url, received) = one_shot(
        SECRET,
        Answer::Status("500 Internal Server Error", "queue is full\nretry later\n"),
    )
    .await;

    let err = request_replacement(
        root.path(),
        &webhook(&url, Duration::from_secs(10)),
        &replacement(Reason::ReleaseChanged),
    )
    .await
    .expect_err("500 is a failure");

    assert!(received.await.expect("receiver task").signature_ok);
    assert!(
        matches!(err, TerminateError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("replace by webhook: POST {url} answered 500 Internal Server Error: queue is full")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_wrong_secret_is_refused_by_the_receiver() {
    let root = root_with_secret("not the shared secret");
    let (url, received) = one_shot(SECRET, Answer::Status("200 OK", "")).await;

    let err = request_replacement(
        root.path(),
        &webhook(&url, Duration::from_secs(10)),
        &replacement(Reason::ReleaseChanged),
    )
    .await
    .expect_err("the receiver refuses the signature");

    assert!(!received.await.expect("receiver task").signature_ok);
    let text = err.to_string();
    assert!(
        text.contains("answered 401 Unauthorized: bad signature"),
        "{text}"
    );
    assert!(!text.contains("not the shared secret"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn redirects_are_not_followed() {
    let root = root_with_secret(SECRET);
    let (url, received) = one_shot(SECRET, Answer::Status("307 Temporary Redirect", "")).await;

    let err = request_replacement(
        root.path(),
        &webhook(&url, Duration::from_secs(10)),
        &replacement(Reason::ReleaseChanged),
    )
    .await
    .expect_err("a redirect is not a success");

    received.await.expect("receiver task");
    assert!(
        matches!(err, TerminateError::Status { status: 307, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_receiver_times_out() {
    let root = root_with_secret(SECRET);
    let (url, received) = one_shot(SECRET, Answer::Silence).await;
    let limit = Duration::from_millis(500);

    let started = Instant::now();
    let err = request_replacement(
        root.path(),
        &webhook(&url, limit),
        &replacement(Reason::ReleaseChanged),
    )
    .await
    .expect_err("no answer");
    let took = started.elapsed();

    received.abort();
    assert!(took < limit + MARGIN, "took {took:?}");
    assert!(matches!(err, TerminateError::Http { .. }), "{err:?}");
    assert!(err.to_string().ends_with("no answer within 500ms"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_receiver_is_an_error() {
    let root = root_with_secret(SECRET);
    let port = servers::closed_port().expect("a free port");
    let url = format!("http://127.0.0.1:{port}/replace");

    let err = request_replacement(
        root.path(),
        &webhook(&url, Duration::from_secs(5)),
        &replacement(Reason::ReleaseChanged),
    )
    .await
    .expect_err("nobody listens");

    let text = err.to_string();
    assert!(
        text.starts_with(&format!("replace by webhook: POST {url} failed: ")),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn unusable_secrets_are_refused_before_draining() {
    for (contents, reason) in [
        (None, "cannot open"),
        (Some("\n"), "the secret is empty"),
        (Some(""), "the secret is empty"),
    ] {
        let root = match contents {
            Some(text) => root_with_secret(text),
            None => tempfile::tempdir().expect("temp dir"),
        };
        let log = root.path().join("drained");
        // Nobody listens there: the request must fail before any attempt.
        let mut config = webhook("http://127.0.0.1:9/replace", Duration::from_secs(5));
        config.drain = script(
            root.path(),
            "drain.sh",
            &format!("echo drain >> {}", sh_quote(&log)),
        );

        let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
            .await
            .expect_err("no usable secret");

        let text = err.to_string();
        assert!(
            text.starts_with(&format!("replace by webhook: secret_file {SECRET_PATH}: ")),
            "{text}"
        );
        assert!(text.contains(reason), "{text}");
        assert!(!log.exists(), "the node was drained: {text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_secret_outside_the_root_is_not_followed() {
    let outside = tempfile::tempdir().expect("temp dir");
    let secret = outside.path().join("secret");
    std::fs::write(&secret, SECRET).expect("write");
    let root = tempfile::tempdir().expect("temp dir");
    let file = node_path(SECRET_PATH).under(root.path());
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(&secret, &file).expect("symlink");

    let err = request_replacement(
        root.path(),
        &webhook("http://127.0.0.1:9/replace", Duration::from_secs(5)),
        &replacement(Reason::Drift),
    )
    .await
    .expect_err("the symlink leads out of the root");

    assert!(matches!(err, TerminateError::File { .. }), "{err:?}");
}

/// A node root holding `ca` at [`CA_PATH`] and the secret.
fn root_with_ca(ca: &Path) -> tempfile::TempDir {
    let root = root_with_secret(SECRET);
    std::fs::copy(ca, node_path(CA_PATH).under(root.path())).expect("copy the CA");
    root
}

#[tokio::test(flavor = "current_thread")]
async fn https_trusts_only_the_configured_ca() {
    let served = tempfile::tempdir().expect("temp dir");
    let nginx = servers::SmartHttp::start(served.path()).expect("start nginx");
    // nginx answers 403 to any POST to .../git-receive-pack: an answer at
    // all means the TLS handshake succeeded.
    let url = nginx.https_url("release.git/git-receive-pack");
    let root = root_with_ca(nginx.ca_cert_path());
    let mut config = webhook(&url, Duration::from_secs(10));
    config.ca_file = Some(node_path(CA_PATH));

    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("nginx refuses the POST");
    assert!(
        matches!(err, TerminateError::Status { status: 403, .. }),
        "{err:?}"
    );
    // nginx's HTML error page is not quoted.
    assert!(err.to_string().ends_with("answered 403 Forbidden"), "{err}");
    let logged = nginx
        .wait_for_requests(1, Duration::from_secs(5))
        .expect("nginx logged the request");
    assert_eq!(logged.len(), 1, "{logged:?}");

    // Without the CA, the system's trust store does not know nginx's issuer.
    config.ca_file = None;
    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("the certificate is not trusted");
    assert!(matches!(err, TerminateError::Http { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // A CA file that is not a CA bundle is refused before any request.
    std::fs::write(node_path(CA_PATH).under(root.path()), "not PEM\n").expect("write");
    config.ca_file = Some(node_path(CA_PATH));
    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("no CA in the file");
    assert!(
        err.to_string()
            .starts_with(&format!("replace by webhook: ca_file {CA_PATH}: ")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------

#[test]
fn good_settings_validate() {
    assert_eq!(validate(&ReplaceSettings::default()), Ok(()));
    let mut exec = settings(ReplaceAction::Exec, Duration::from_secs(30));
    exec.command = vec!["/usr/local/bin/mark-unhealthy".into(), "--now".into()];
    exec.drain = vec!["/usr/local/bin/drain".into()];
    assert_eq!(validate(&exec), Ok(()));
    for url in [
        "https://fleet.example.com/replace",
        "http://127.0.0.1:8080/replace",
        "http://localhost/replace",
    ] {
        assert_eq!(
            validate(&webhook(url, Duration::from_secs(30))),
            Ok(()),
            "{url}"
        );
    }
    let mut with_ca = webhook("https://fleet.example.com/r", Duration::from_secs(30));
    with_ca.ca_file = Some(node_path(CA_PATH));
    assert_eq!(validate(&with_ca), Ok(()));
}

#[test]
fn each_misconfiguration_has_a_clear_message() {
    let secs = Duration::from_secs(30);
    let exec_with = |command: &[&str]| {
        let mut s = settings(ReplaceAction::Exec, secs);
        s.command = command.iter().map(|a| a.to_string()).collect();
        s
    };
    let cases: Vec<(ReplaceSettings, &str)> = vec![
        (
            settings(ReplaceAction::Poweroff, Duration::ZERO),
            "replace.timeout must be longer than zero",
        ),
        (
            exec_with(&[]),
            "replace.action is exec but replace.command is empty",
        ),
        (
            exec_with(&["mark-unhealthy"]),
            "replace.command: the program \"mark-unhealthy\" must be an absolute path",
        ),
        (
            exec_with(&["/bin/x", "a\0b"]),
            "replace.command: argument \"a\\0b\" contains a NUL byte",
        ),
        (
            {
                let mut s = exec_with(&["/bin/x"]);
                s.drain = vec!["drain.sh".into()];
                s
            },
            "replace.drain: the program \"drain.sh\" must be an absolute path",
        ),
        (
            {
                let mut s = exec_with(&["/bin/x"]);
                s.url = Some("https://fleet.example.com/r".into());
                s
            },
            "replace.url is set but replace.action is exec",
        ),
        (
            {
                let mut s = settings(ReplaceAction::Poweroff, secs);
                s.command = vec!["/bin/x".into()];
                s
            },
            "replace.command is set but replace.action is poweroff",
        ),
        (
            {
                let mut s = settings(ReplaceAction::Poweroff, secs);
                s.secret_file = Some(node_path(SECRET_PATH));
                s
            },
            "replace.secret_file is set but replace.action is poweroff",
        ),
        (
            {
                let mut s = webhook("https://fleet.example.com/r", secs);
                s.url = None;
                s
            },
            "replace.action is webhook but replace.url is not set",
        ),
        (
            {
                let mut s = webhook("https://fleet.example.com/r", secs);
                s.secret_file = None;
                s
            },
            "replace.action is webhook but replace.secret_file is not set",
        ),
        (
            webhook("http://fleet.example.com/r", secs),
            "must be https:// (http:// is only accepted for 127.0.0.1 and localhost)",
        ),
        (
            webhook("ftp://fleet.example.com/r", secs),
            "must be an https:// URL",
        ),
        (webhook("fleet.example.com/r", secs), "is not a valid URL"),
        (
            webhook("https://user:hunter2@fleet.example.com/r", secs),
            "must not contain credentials",
        ),
        (
            {
                let mut s = webhook("http://127.0.0.1:8080/r", secs);
                s.ca_file = Some(node_path(CA_PATH));
                s
            },
            "replace.ca_file is set but replace.url \"http://127.0.0.1:8080/r\" is not https://",
        ),
        (
            {
                let mut s = webhook("https://fleet.example.com/r", secs);
                s.command = vec!["/bin/x".into()];
                s
            },
            "replace.command is set but replace.action is webhook",
        ),
    ];
    for (config, expected) in cases {
        let message = validate(&config).expect_err(expected);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains('\n'), "{message:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_settings_are_refused_before_anything_runs() {
    let root = tempfile::tempdir().expect("temp dir");
    let log: PathBuf = root.path().join("drained");
    let mut config = settings(ReplaceAction::Exec, Duration::from_secs(5));
    config.drain = script(
        root.path(),
        "drain.sh",
        &format!("echo drain >> {}", sh_quote(&log)),
    );
    config.command = vec!["relative/program".into()];

    let err = request_replacement(root.path(), &config, &replacement(Reason::Drift))
        .await
        .expect_err("invalid");

    assert!(matches!(err, TerminateError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("replace: replace.command"),
        "{err}"
    );
    assert!(!log.exists());
}
