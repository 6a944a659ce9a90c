//! A small client for etcd v3's JSON gateway (`/v3/...`, served by every
//! etcd since 3.3 on its client port): the handful of calls the rollout
//! coordinator needs (lease grant, keep-alive and revoke; a transaction that
//! creates a key only if it is absent; range by prefix; delete if unchanged),
//! over reqwest, and the gateway's streaming watch ([`watch`]).
//!
//! Why the gateway and not an etcd client crate: the crates speak gRPC
//! (tonic, prost, hyper 1, tower) and generate their code from etcd's
//! `.proto` files at build time (tonic-build/prost-build, which need
//! `protoc`), with TLS through rustls or a second OpenSSL stack. The agent
//! already has reqwest with the system's TLS for its webhook; a handful of
//! JSON calls and one streamed one add no dependency and no build step, and
//! keep one TLS configuration.
//!
//! Keys and values are base64 in the gateway's JSON, and 64-bit numbers are
//! strings; fields equal to zero (or false) are left out of answers. Every
//! request has a time limit; the endpoints are tried in turn, starting with
//! the last one that answered. Errors are one line naming the endpoints and
//! what to check; a password is never part of one.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::config::RolloutSettings;
use crate::root::Root;

#[cfg(test)]
pub(crate) mod fake;
mod kv;
pub mod watch;

/// Password files larger than this are refused.
const MAX_PASSWORD_LEN: u64 = 4096;
/// Client certificate and key files larger than this are refused.
const MAX_PEM_LEN: u64 = 1024 * 1024;
/// Answers larger than this are refused (a range over a group's slots is a
/// few kilobytes).
const MAX_ANSWER_LEN: usize = 4 * 1024 * 1024;

/// A failed etcd call: one line, naming what was tried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("etcd {call}: {reason}")]
pub struct EtcdError {
    /// The call (`lease grant`, `txn`, ...).
    pub call: &'static str,
    /// What failed, with each endpoint tried.
    pub reason: String,
    /// etcd's gRPC status code, when etcd itself refused the request.
    pub code: Option<i64>,
}

/// gRPC's status code for something that does not exist: in a request
/// that puts a key on a lease, the lease.
const NOT_FOUND: i64 = 5;

impl EtcdError {
    /// A failure of `call` that etcd did not answer with a status code.
    pub fn new(call: &'static str, reason: impl Into<String>) -> Self {
        Self {
            call,
            reason: reason.into(),
            code: None,
        }
    }

    /// True when etcd refused a put because its lease does not exist (it
    /// ran out, or was revoked).
    pub fn lease_not_found(&self) -> bool {
        self.code == Some(NOT_FOUND) && self.reason.contains("lease not found")
    }
}

/// A client of one etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    client: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first next time.
    preferred: AtomicUsize,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// The time limit of each request (and of a watch's first answer).
    timeout: Duration,
}

/// One key-value pair of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (UTF-8, lossily).
    pub value: String,
    /// The revision that last changed it.
    pub mod_revision: i64,
    /// The revision that created it.
    pub create_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// What went wrong on one endpoint.
enum Failure {
    /// The endpoint could not be used (connection, TLS, time, 5xx): try the next.
    Endpoint(String),
    /// etcd refused the request itself: the same everywhere.
    Refused {
        /// gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
}

/// gRPC's status code for a token etcd no longer accepts.
const UNAUTHENTICATED: i64 = 16;

impl Etcd {
    /// A client for `settings.endpoints`, with the TLS files and password
    /// read beneath `root`.
    pub fn new(root: &Path, settings: &RolloutSettings) -> anyhow::Result<Self> {
        let limit = settings.timeout.0;
        let builder = crate::source::tls::client_builder();
        let mut builder =
            crate::source::tls::plain_only(builder, settings.endpoints.iter().map(String::as_str))
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(limit)
                .timeout(limit);
        let handle = Root::open(root)?;
        if let Some(ca) = &settings.ca_file {
            let certs = crate::fleet::terminate::read_ca_bundle(&handle, ca)
                .map_err(|e| anyhow::anyhow!("rollout.ca_file {ca}: {e}"))?;
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
            let read = |p: &crate::types::NodePath| {
                handle
                    .read(p, MAX_PEM_LEN)
                    .map_err(|e| anyhow::anyhow!("rollout: {e}"))
            };
            // rustls reads the key and its certificate chain from one PEM text.
            let mut pem = read(key)?;
            pem.push(b'\n');
            pem.extend(read(cert)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "rollout.cert_file {cert} / key_file {key}: not a PEM certificate and private key: {}",
                        crate::fleet::terminate::error_chain(&e)
                    )
                })?;
            builder = builder.identity(identity);
        }
        let credentials = match (&settings.username, &settings.password_file) {
            (Some(user), Some(file)) => {
                let bytes = handle
                    .read(file, MAX_PASSWORD_LEN)
                    .map_err(|e| anyhow::anyhow!("rollout.password_file: {e}"))?;
                let password = String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("rollout.password_file {file} is not UTF-8"))?;
                let password = password.trim_end_matches(['\r', '\n']).to_owned();
                if password.is_empty() {
                    anyhow::bail!("rollout.password_file {file} is empty");
                }
                Some((user.clone(), password))
            }
            _ => None,
        };
        Ok(Self {
            client: builder.build()?,
            endpoints: settings
                .endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            preferred: AtomicUsize::new(0),
            credentials,
            token: Mutex::new(None),
            timeout: limit,
        })
    }

    /// Calls `path` on each endpoint in turn until one answers.
    async fn call(&self, call: &'static str, path: &str, body: Value) -> Result<Value, EtcdError> {
        let body = &body;
        self.each_endpoint(call, |endpoint| async move {
            self.with_token(&endpoint, |token| {
                let endpoint = &endpoint;
                async move { self.post(endpoint, path, body, token.as_deref()).await }
            })
            .await
        })
        .await
    }

    /// `attempt` on each endpoint in turn, starting with the last one that
    /// answered, until one answers or one refuses (a refusal is the same
    /// everywhere).
    async fn each_endpoint<T, F: Future<Output = Result<T, Failure>>>(
        &self,
        call: &'static str,
        mut attempt: impl FnMut(String) -> F,
    ) -> Result<T, EtcdError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..self.endpoints.len() {
            let index = (start + i) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match attempt(endpoint.clone()).await {
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Failure::Refused { code, message }) => {
                    return Err(EtcdError {
                        call,
                        reason: format!(
                            "{endpoint} refused it: {message} (gRPC code {code}){}",
                            hint(code)
                        ),
                        code: Some(code),
                    });
                }
                Err(Failure::Endpoint(reason)) => tried.push(format!("{endpoint}: {reason}")),
            }
        }
        Err(EtcdError::new(
            call,
            format!(
                "no endpoint answered ({}); check rollout.endpoints and that etcd is up and reachable",
                tried.join("; ")
            ),
        ))
    }

    /// `request` on one endpoint with the auth token when configured
    /// (authenticating first, and once more when etcd no longer accepts
    /// the token).
    async fn with_token<T, F: Future<Output = Result<T, Failure>>>(
        &self,
        endpoint: &str,
        mut request: impl FnMut(Option<String>) -> F,
    ) -> Result<T, Failure> {
        for attempt in 0..2 {
            let token = match &self.credentials {
                Some(credentials) => Some(self.token(endpoint, credentials).await?),
                None => None,
            };
            match request(token).await {
                Err(Failure::Refused { code, .. }) if code == UNAUTHENTICATED && attempt == 0 => {
                    self.set_token(None);
                }
                other => return other,
            }
        }
        Err(Failure::Endpoint("authentication keeps failing".into()))
    }

    /// The auth token, authenticating when there is none.
    async fn token(
        &self,
        endpoint: &str,
        (user, password): &(String, String),
    ) -> Result<String, Failure> {
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(token);
        }
        let answer = self
            .post(
                endpoint,
                "/v3/auth/authenticate",
                &json!({ "name": user, "password": password }),
                None,
            )
            .await
            // etcd refuses a wrong name or password as an invalid argument
            // (gRPC code 3): to the operator it is a refused login.
            .map_err(|failure| match failure {
                Failure::Refused { message, .. } => Failure::Refused {
                    code: UNAUTHENTICATED,
                    message,
                },
                other => other,
            })?;
        let token = answer["token"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            return Err(Failure::Refused {
                code: UNAUTHENTICATED,
                message: format!("no token for user {user:?}: is authentication enabled?"),
            });
        }
        self.set_token(Some(token.clone()));
        Ok(token)
    }

    fn set_token(&self, token: Option<String>) {
        if let Ok(mut slot) = self.token.lock() {
            *slot = token;
        }
    }

    async fn post(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .client
            .post(format!("{endpoint}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let response = request.send().await.map_err(|e| {
            Failure::Endpoint(if e.is_timeout() {
                "timed out".to_owned()
            } else {
                crate::fleet::terminate::error_chain(&e)
            })
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure::Endpoint(format!(
                "reading the answer: {}",
                crate::fleet::terminate::error_chain(&e)
            ))
        })?;
        if bytes.len() > MAX_ANSWER_LEN {
            return Err(Failure::Endpoint(format!(
                "answer larger than {MAX_ANSWER_LEN} bytes"
            )));
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            Failure::Endpoint(format!(
                "answered {status} with something other than JSON: is this etcd's client port?"
            ))
        })?;
        // Errors come as {"error", "code", "message"}, at the top or, for
        // streamed calls, inside "error".
        let error = if answer.get("code").is_some() {
            &answer
        } else {
            &answer["error"]
        };
        if let Some(code) = error.get("code").map(number).filter(|c| *c != 0) {
            let message = error["message"].as_str().unwrap_or("no message").to_owned();
            return Err(if status.is_server_error() && code == 14 {
                Failure::Endpoint(message)
            } else {
                Failure::Refused { code, message }
            });
        }
        if !status.is_success() {
            return Err(Failure::Endpoint(format!("answered {status}")));
        }
        Ok(answer)
    }
}

/// What to do about a refusal, by gRPC code.
fn hint(code: i64) -> &'static str {
    match code {
        UNAUTHENTICATED => "; check rollout.username and rollout.password_file",
        7 => "; grant the user read-write access to the /driftless/ prefix",
        _ => "",
    }
}

/// A range request for every key under `prefix`.
fn range_request(prefix: &str, count_only: bool) -> Value {
    json!({
        "key": B64.encode(prefix),
        "range_end": B64.encode(prefix_end(prefix.as_bytes())),
        "count_only": count_only,
    })
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

/// A 64-bit number the gateway wrote as a string (or a number); 0 when absent.
fn number(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A key or value as the gateway writes it (base64), lossily as text.
fn decode_text(value: &Value) -> String {
    value
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// An answer, cut short for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_cover_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/driftless/g/slots/"), b"/driftless/g/slots0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn numbers_come_as_strings_or_not_at_all() {
        assert_eq!(
            number(&json!("4111120238004854278")),
            4_111_120_238_004_854_278
        );
        assert_eq!(number(&json!(7)), 7);
        assert_eq!(number(&Value::Null), 0);
        assert_eq!(number(&json!("x")), 0);
    }
}
