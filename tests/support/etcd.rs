//! A real etcd (Debian's `etcd-server`) for rollout tests: one member per
//! test on 127.0.0.1, ephemeral client and peer ports, a temporary data
//! directory, started in a [`ProcessGroup`] so that it never outlives the
//! test (dropping the server kills it; so does the test process dying).
//! Readiness is `/health` answering `{"health":"true"}`, polled in a loop
//! bounded by [`READY_TIMEOUT`].
//!
//! The test talks to it through the same JSON gateway as the agent, with
//! reqwest's blocking client: keys and values travel base64.
//!
//! Include it after `servers`: `#[path = "support/etcd.rs"] mod etcd;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::servers::{ProcessGroup, READY_TIMEOUT, closed_port};

/// Fresh port pairs etcd is tried on when another process took a port first.
const START_ATTEMPTS: u32 = 3;
/// Time limit of every request the test makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of what etcd has served ([`EtcdServer::load`]).
#[allow(dead_code)] // not every test reads it
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdLoad {
    /// gRPC calls started.
    pub calls: u64,
    /// CPU time of the etcd process (10 ms resolution).
    pub cpu: Duration,
    /// Events sent to watchers (one a watcher an event reaches).
    pub events: u64,
}

#[allow(dead_code)] // not every test reads it
impl EtcdLoad {
    /// What was served since `before`.
    pub fn since(self, before: Self) -> Self {
        Self {
            calls: self.calls.saturating_sub(before.calls),
            cpu: self.cpu.saturating_sub(before.cpu),
            events: self.events.saturating_sub(before.events),
        }
    }
}

/// A running (or stopped) single-member etcd.
pub struct EtcdServer {
    /// The data directory's parent; removed on drop.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// The running member, if it runs.
    group: Option<ProcessGroup>,
    http: reqwest::blocking::Client,
    /// Requests this handle sent through the JSON gateway (each one a
    /// gRPC call inside etcd), so [`EtcdServer::load`] can leave out the
    /// test's own.
    own_calls: AtomicU64,
    /// The root user's token, once authentication is enabled.
    token: Option<String>,
}

impl EtcdServer {
    /// Starts etcd on two free 127.0.0.1 ports.
    pub fn start() -> Result<Self> {
        let http = driftless::source::tls::blocking_client_builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = Self {
                dir: tempfile::Builder::new()
                    .prefix("driftless-etcd-")
                    .tempdir()
                    .context("creating etcd's temporary directory")?,
                client_port: closed_port()?,
                peer_port: closed_port()?,
                group: None,
                http: http.clone(),
                own_calls: AtomicU64::new(0),
                token: None,
            };
            match server.run() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Stops the member (SIGTERM, then SIGKILL); its data stays.
    pub fn stop(&mut self) {
        self.group = None;
    }

    /// Starts the stopped member again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.run()
    }

    fn run(&mut self) -> Result<()> {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.log_path()).context("creating etcd's log")?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut group = ProcessGroup::new()?;
        let index = group
            .spawn(&mut cmd, "etcd (Debian package `etcd-server`)")
            .context("is the Debian package etcd-server installed?")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = group.members[index].try_wait()? {
                bail!(
                    "etcd exited with {status} before it was ready: {}",
                    self.log_tail()
                );
            }
            if self.healthy() {
                self.group = Some(group);
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd was not healthy within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/health", self.url()))
            .send()
            .and_then(|r| r.text())
            .is_ok_and(|t| t.contains("\"health\":\"true\""))
    }

    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.try_post(path, body)
            .unwrap_or_else(|e| panic!("etcd {path}: {e:#}"))
    }

    fn try_post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        self.own_calls.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.post(format!("{}{path}", self.url()));
        if let Some(token) = &self.token {
            request = request.header("Authorization", token);
        }
        let text = request
            .body(body.to_string())
            .send()
            .and_then(|r| r.text())?;
        serde_json::from_str(&text).with_context(|| format!("etcd answered {text}"))
    }

    /// Every key under `prefix` with its value, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.try_get_prefix(prefix)
            .unwrap_or_else(|e| panic!("etcd range {prefix}: {e:#}"))
    }

    /// [`EtcdServer::get_prefix`], or why etcd did not answer (e.g. while
    /// it is stopped).
    pub fn try_get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut end = prefix.as_bytes().to_vec();
        let last = end.pop().expect("a non-empty prefix");
        end.push(last + 1);
        let answer = self.try_post(
            "/v3/kv/range",
            serde_json::json!({ "key": B64.encode(prefix), "range_end": B64.encode(end) }),
        )?;
        let decode = |v: &serde_json::Value| -> Result<String> {
            Ok(String::from_utf8(
                B64.decode(v.as_str().unwrap_or_default())?,
            )?)
        };
        let Some(kvs) = answer["kvs"].as_array() else {
            return Ok(Vec::new());
        };
        kvs.iter()
            .map(|kv| Ok((decode(&kv["key"])?, decode(&kv["value"])?)))
            .collect()
    }

    /// The lease `key` is attached to (`None`: no such key, or no lease).
    pub fn lease_of(&self, key: &str) -> Option<String> {
        let answer = self
            .try_post(
                "/v3/kv/range",
                serde_json::json!({ "key": B64.encode(key) }),
            )
            .unwrap_or_else(|e| panic!("etcd range {key}: {e:#}"));
        answer["kvs"][0]["lease"].as_str().map(str::to_owned)
    }

    /// Turns authentication on, as an operator would: a root user, a role
    /// that may read and write the keys under `prefix`, and `user` with
    /// `password` in that role. The test's own requests go on as root.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) -> Result<()> {
        let root_password = "root-password-of-the-test";
        let mut end = prefix.as_bytes().to_vec();
        let last = end.pop().context("a non-empty prefix")?;
        end.push(last + 1);
        let steps = [
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": "root", "password": root_password }),
            ),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": "root", "role": "root" }),
            ),
            ("/v3/auth/role/add", serde_json::json!({ "name": "fleet" })),
            (
                "/v3/auth/role/grant",
                serde_json::json!({ "name": "fleet", "perm": {
                    "permType": "READWRITE", "key": B64.encode(prefix), "range_end": B64.encode(end)
                }}),
            ),
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": user, "password": password }),
            ),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": user, "role": "fleet" }),
            ),
            ("/v3/auth/enable", serde_json::json!({})),
        ];
        for (path, body) in steps {
            let answer = self.try_post(path, body)?;
            if answer.get("error").is_some() || answer.get("code").is_some() {
                bail!("etcd {path}: {answer}");
            }
        }
        let answer = self.try_post(
            "/v3/auth/authenticate",
            serde_json::json!({ "name": "root", "password": root_password }),
        )?;
        let token = answer["token"]
            .as_str()
            .with_context(|| format!("no root token: {answer}"))?;
        self.token = Some(token.to_owned());
        Ok(())
    }

    /// Grants the role that [`EtcdServer::enable_auth`] made read-write
    /// access to the keys under `prefix` as well.
    pub fn grant_prefix(&self, prefix: &str) -> Result<()> {
        let mut end = prefix.as_bytes().to_vec();
        let last = end.pop().context("a non-empty prefix")?;
        end.push(last + 1);
        let answer = self.try_post(
            "/v3/auth/role/grant",
            serde_json::json!({ "name": "fleet", "perm": {
                "permType": "READWRITE", "key": B64.encode(prefix), "range_end": B64.encode(end)
            }}),
        )?;
        if answer.get("error").is_some() || answer.get("code").is_some() {
            bail!("etcd role grant {prefix}: {answer}");
        }
        Ok(())
    }

    /// What the member has served so far, from its `/metrics`: gRPC calls
    /// started (the JSON gateway's requests and watch streams become
    /// gRPC calls inside etcd) by others than this handle, and its
    /// process's CPU time (the test's own calls included), and the events
    /// it sent to watchers.
    #[allow(dead_code)] // not every test reads it
    pub fn load(&self) -> Result<EtcdLoad> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .context("reading etcd's /metrics")?;
        let mut load = EtcdLoad::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if name.starts_with("grpc_server_started_total{") {
                load.calls += value as u64;
            } else if name == "etcd_debugging_mvcc_events_total" {
                load.events = value as u64;
            } else if name == "process_cpu_seconds_total" {
                load.cpu = Duration::from_secs_f64(value);
            }
        }
        load.calls = load
            .calls
            .saturating_sub(self.own_calls.load(Ordering::Relaxed));
        Ok(load)
    }

    /// Puts `key` = `value` (no lease).
    pub fn put(&self, key: &str, value: &str) {
        self.post(
            "/v3/kv/put",
            serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        );
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        self.post(
            "/v3/kv/deleterange",
            serde_json::json!({ "key": B64.encode(key) }),
        );
    }
}
