//! Health checks: the node counts as up only when every check passes. A
//! check is retried until its timeout, since services take a moment to start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::release::spec::{HealthCheck, Probe};

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
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = match &check.probe {
            Probe::Exec(argv) => exec(argv, remaining),
            Probe::Http { url, status } => http(url, *status, remaining),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() + check.interval.0 >= deadline => {
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
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("{program} exited with {status}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish in time"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn http(url: &str, expected: u16, limit: Duration) -> Result<(), String> {
    let client = crate::source::tls::blocking_client_builder()
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
