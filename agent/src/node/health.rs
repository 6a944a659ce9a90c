//! Health checks: the node counts as up only when every check passes. A
//! check is retried until its timeout, since services take a moment to start.
//!
//! An exec check runs on the host, as the agent (root), with the host's
//! `/` (not under `--root`: on a node both are `/`), stdin closed and its
//! environment the agent's. Its output (stdout and stderr together) is not
//! logged while it passes; the last lines of a failing attempt's output
//! ([`TAIL_LINES`] lines, at most [`TAIL_BYTES`] bytes kept) end the error,
//! which apply records and `status` shows.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::release::spec::{HealthCheck, Probe};

/// How many lines of a failing exec check's output its error shows.
pub const TAIL_LINES: usize = 5;
/// How many bytes of an exec check's output are kept (the last ones).
pub const TAIL_BYTES: usize = 4096;

/// A check that did not pass in time.
#[derive(Debug, thiserror::Error)]
#[error("health check {check} did not pass within {timeout:?}: {last}")]
pub struct HealthError {
    /// The check, for people.
    pub check: String,
    /// Its timeout.
    pub timeout: Duration,
    /// The last attempt's failure.
    pub last: String,
}

/// Runs every check in order; the first that does not pass ends the run.
pub fn run_all(checks: &[HealthCheck]) -> Result<(), HealthError> {
    checks.iter().try_for_each(run)
}

/// Runs one check until it passes or its timeout expires.
pub fn run(check: &HealthCheck) -> Result<(), HealthError> {
    let deadline = Instant::now() + check.timeout.0;
    // The last attempt that failed on its own: an attempt cut short by the
    // deadline says less than it.
    let mut earlier: Option<String> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = match &check.probe {
            Probe::Exec(argv) => exec(argv, remaining),
            Probe::Http { url, status } => http(url, *status, remaining),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() + check.interval.0 >= deadline => {
                let last = match earlier {
                    Some(earlier) if Instant::now() >= deadline => earlier,
                    _ => last,
                };
                return Err(HealthError {
                    check: describe(&check.probe),
                    timeout: check.timeout.0,
                    last,
                });
            }
            Err(last) => {
                tracing::debug!(
                    "health check {} not yet passing: {last}",
                    describe(&check.probe)
                );
                earlier = Some(last);
                std::thread::sleep(check.interval.0);
            }
        }
    }
}

/// A check as a person would name it.
pub fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Exec(argv) => format!("exec {}", argv.join(" ")),
        Probe::Http { url, status } => format!("http {url} (expecting {status})"),
    }
}

fn exec(argv: &[String], limit: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    // stdout and stderr into one pipe, read by a thread that keeps the tail.
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let write_err = write_end.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_err))
        .spawn();
    let mut child = spawned.map_err(|e| format!("cannot run {program}: {e}"))?;
    let tail = Arc::new(Mutex::new((Vec::new(), false)));
    let reader = {
        let tail = Arc::clone(&tail);
        let mut pipe = std::fs::File::from(read_end);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let Ok(mut kept) = tail.lock() else { return };
                if n == 0 {
                    kept.1 = true;
                    return;
                }
                kept.0.extend_from_slice(&buf[..n]);
                let excess = kept.0.len().saturating_sub(TAIL_BYTES);
                kept.0.drain(..excess);
            }
        })
    };
    let deadline = Instant::now() + limit;
    let outcome = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => break Ok(()),
            Some(status) => break Err(format!("{program} exited with {status}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{program} did not finish in time"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // The output's end, unless a process the check left behind holds the
    // pipe open: then what arrived within a moment.
    let waited = Instant::now();
    while !tail.lock().map(|t| t.1).unwrap_or(true) && waited.elapsed() < Duration::from_millis(200)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if tail.lock().map(|t| t.1).unwrap_or(false) {
        let _ = reader.join();
    }
    let text = tail.lock().map(|t| last_lines(&t.0)).unwrap_or_default();
    outcome.map_err(|e| {
        if text.is_empty() {
            format!("{e} (no output)")
        } else {
            format!("{e}; its output ended with: {text}")
        }
    })
}

/// The last [`TAIL_LINES`] non-empty lines of `bytes`, joined with ` | `.
fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| crate::error::clip(l, 200))
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ")
}

fn http(url: &str, expected: u16, limit: Duration) -> Result<(), String> {
    let builder = crate::source::tls::blocking_client_builder();
    let client = crate::source::tls::blocking_plain_only(builder, [url])
        .timeout(limit.max(Duration::from_millis(100)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let status = client
        .get(url)
        .send()
        .map_err(|e| format!("{e}"))?
        .status()
        .as_u16();
    if status == expected {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Interval;

    fn check(probe: Probe, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            probe,
            timeout: Interval(Duration::from_millis(timeout_ms)),
            interval: Interval(Duration::from_millis(50)),
        }
    }

    #[test]
    fn exec_checks_pass_and_fail_on_exit_status() {
        assert!(run(&check(Probe::Exec(vec!["/bin/true".into()]), 2000)).is_ok());
        let err = run(&check(Probe::Exec(vec!["/bin/false".into()]), 300)).expect_err("fails");
        assert!(err.to_string().contains("/bin/false exited"), "{err}");
        // A failing check's last lines end the error; the earlier ones do not.
        let script = "for i in 1 2 3 4 5 6 7; do echo line $i; done; echo oops >&2; exit 3";
        let err = run(&check(
            Probe::Exec(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            300,
        ))
        .expect_err("fails")
        .to_string();
        assert!(
            err.ends_with("its output ended with: line 4 | line 5 | line 6 | line 7 | oops"),
            "{err}"
        );
        // Output beyond the kept bytes costs nothing but time.
        let flood = format!(
            "head -c {} /dev/zero | tr '\\0' x; echo; echo last; exit 1",
            10 * TAIL_BYTES
        );
        let err = run(&check(
            Probe::Exec(vec!["/bin/sh".into(), "-c".into(), flood]),
            2000,
        ))
        .expect_err("fails")
        .to_string();
        assert!(
            err.ends_with(" | last") && err.len() < TAIL_BYTES,
            "{}",
            err.len()
        );
        let started = Instant::now();
        let err = run(&check(
            Probe::Exec(vec!["/bin/sleep".into(), "10".into()]),
            300,
        ))
        .expect_err("times out");
        assert!(err.to_string().contains("did not finish in time"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_attempt_cut_by_the_deadline_does_not_hide_the_failure_before_it() {
        // The first attempt fails and says why; every later one hangs until
        // the deadline cuts it.
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let script = format!(
            "if [ -e {0} ]; then sleep 10; fi; touch {0}; echo port 8080 refused; exit 1",
            marker.display()
        );
        let err = run(&check(
            Probe::Exec(vec!["/bin/sh".into(), "-c".into(), script]),
            1000,
        ))
        .expect_err("fails")
        .to_string();
        assert!(
            err.ends_with("exited with exit status: 1; its output ended with: port 8080 refused"),
            "{err}"
        );
    }

    #[test]
    fn http_checks_compare_the_status() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for answer in ["503 Service Unavailable", "200 OK"] {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        let url = format!("http://{addr}/ready");
        // The first answer is 503, so the check passes on its second attempt.
        run(&check(Probe::Http { url, status: 200 }, 5000))
            .expect("passes once the service is ready");
        server.join().expect("server thread");
    }
}
