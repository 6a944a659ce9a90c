//! Webhook receivers for the `replace.action: webhook` tests: requests to
//! 127.0.0.1 are read whole, their `X-Driftless-Signature` checked with
//! ring against the shared secret, recorded and answered.
//!
//! * [`Receiver`]: a thread that takes every request until it is dropped
//!   and answers `200 OK` (`401` when the signature is wrong).
//! * [`one_shot`]: a Tokio task that takes one request and answers as an
//!   [`Answer`] says: a status and a body, or never.
//!
//! Both read requests with one [`RequestReader`] and answer with
//! [`Answer::response`].
//!
//! Include it after `servers.rs`, whose bounded wait it uses:
//! `#[path = "support/webhook.rs"] mod webhook;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::servers::wait_for;

/// How often a [`Receiver`]'s accept loop looks again.
const TICK: Duration = Duration::from_millis(20);
/// Lifetime cap of a [`Receiver`]'s accept loop.
const RECEIVER_LIFETIME: Duration = Duration::from_secs(300);
/// Socket timeout of a [`Receiver`] connection.
const RECEIVER_IO: Duration = Duration::from_secs(5);
/// Longest a [`one_shot`] receiver waits for its one request.
const ONE_SHOT_LIFETIME: Duration = Duration::from_secs(20);
/// The most bytes a request's head may take.
const MAX_HEAD: usize = 64 * 1024;

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether `X-Driftless-Signature` is `sha256=` and the HMAC-SHA256 of
    /// the body under the receiver's secret (checked with ring).
    pub signature_ok: bool,
}

impl Hook {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What a receiver answers a request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// This status line with `body`, when the signature is right; a
    /// request whose signature is wrong gets `401 Unauthorized`.
    Status(&'static str, &'static str),
    /// Nothing: the request is read and never answered.
    Silence,
}

impl Answer {
    /// The whole HTTP response to a request whose signature is
    /// `signature_ok`, or `None` for [`Answer::Silence`].
    pub fn response(self, signature_ok: bool) -> Option<String> {
        let Answer::Status(status, body) = self else {
            return None;
        };
        let (status, body) = if signature_ok {
            (status, body)
        } else {
            ("401 Unauthorized", "bad signature\n")
        };
        Some(format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             location: /elsewhere\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ))
    }
}

/// Reads one HTTP/1.1 request from the bytes a connection gives, whatever
/// the I/O, and checks its signature.
pub struct RequestReader {
    /// The shared secret the signature must be made with.
    secret: Vec<u8>,
    /// Everything read so far.
    data: Vec<u8>,
}

impl RequestReader {
    /// A reader checking signatures against `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
            data: Vec::new(),
        }
    }

    /// Where the head ends (the blank line), once it has been read.
    fn head_end(&self) -> Option<usize> {
        self.data.windows(4).position(|w| w == b"\r\n\r\n")
    }

    /// What the request still lacks: `"the headers"` or `"the body"`.
    pub fn missing(&self) -> &'static str {
        if self.head_end().is_some() {
            "the body"
        } else {
            "the headers"
        }
    }

    /// Adds `bytes` read from the connection; gives the request once it is
    /// whole (`Ok(None)` until then), or why it is not a request.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Hook>, String> {
        self.data.extend_from_slice(bytes);
        let Some(head_end) = self.head_end() else {
            return if self.data.len() > MAX_HEAD {
                Err(format!("no end of the headers in {MAX_HEAD} bytes"))
            } else {
                Ok(None)
            };
        };
        let head = String::from_utf8_lossy(&self.data[..head_end]);
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(path)) = (request_line.next(), request_line.next()) else {
            return Err(format!("not a request line: {head:?}"));
        };
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .ok_or("no content-length")?
            .parse()
            .map_err(|e| format!("content-length: {e}"))?;
        let Some(body) = self.data[head_end + 4..].get(..length) else {
            return Ok(None);
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret);
        let signature_ok = headers
            .get("x-driftless-signature")
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(decode_hex)
            .is_some_and(|tag| ring::hmac::verify(&key, body, &tag).is_ok());
        Ok(Some(Hook {
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.to_vec(),
            headers,
            signature_ok,
        }))
    }
}

/// Lower-case hex to bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------
// A receiver of every request
// ---------------------------------------------------------------------------

/// A webhook receiver on 127.0.0.1:0: every request is read whole, its
/// signature checked, recorded, and answered `200 OK` (`401` when the
/// signature is wrong). Stops on drop.
pub struct Receiver {
    /// The listening address.
    addr: SocketAddr,
    /// What was received.
    hooks: Arc<Mutex<Vec<Hook>>>,
    /// Tells the accept loop to end.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver sharing `secret` with the node.
    pub fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let hooks = Arc::clone(&hooks);
            let stop = Arc::clone(&stop);
            let secret = secret.as_bytes().to_vec();
            thread::Builder::new()
                .name(format!("receiver-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &secret, &hooks, &stop))
                .expect("start the receiver thread")
        };
        Self {
            addr,
            hooks,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL requests go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request received so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().expect("receiver lock").clone()
    }

    /// The requests once there are at least `count`, waiting up to `timeout`.
    pub fn wait_for_hooks(&self, count: usize, timeout: Duration) -> Option<Vec<Hook>> {
        wait_for(timeout, || {
            let hooks = self.hooks();
            (hooks.len() >= count).then_some(hooks)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until told to stop or [`RECEIVER_LIFETIME`] passes.
fn accept_loop(listener: &TcpListener, secret: &[u8], hooks: &Mutex<Vec<Hook>>, stop: &AtomicBool) {
    let end = Instant::now() + RECEIVER_LIFETIME;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Some(hook) = serve(stream, secret) {
                    hooks.lock().expect("receiver lock").push(hook);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Reads one request, checks it and answers `200 OK`; `None` when it is not
/// a whole HTTP request.
fn serve(mut stream: TcpStream, secret: &[u8]) -> Option<Hook> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(RECEIVER_IO)).ok()?;
    stream.set_write_timeout(Some(RECEIVER_IO)).ok()?;
    let mut reader = RequestReader::new(secret);
    let mut buf = [0u8; 4096];
    let hook = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(hook) = reader.push(&buf[..n]).ok()? {
            break hook;
        }
    };
    if let Some(response) = Answer::Status("200 OK", "").response(hook.signature_ok) {
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.flush();
    }
    Some(hook)
}

// ---------------------------------------------------------------------------
// A receiver of one request
// ---------------------------------------------------------------------------

/// Starts a receiver on 127.0.0.1 that takes one request, checks its
/// signature against `secret`, and answers as `answer` says. Returns the URL
/// (path `/replace`) and the task that ends with the request.
pub async fn one_shot(
    secret: &'static str,
    answer: Answer,
) -> (String, tokio::task::JoinHandle<Hook>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        tokio::time::timeout(ONE_SHOT_LIFETIME, serve_one(listener, secret, answer))
            .await
            .expect("the receiver got its request in time")
    });
    (format!("http://{addr}/replace"), task)
}

/// Takes one connection, reads its request and answers it.
async fn serve_one(listener: tokio::net::TcpListener, secret: &str, answer: Answer) -> Hook {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut reader = RequestReader::new(secret.as_bytes());
    let mut buf = [0u8; 4096];
    let hook = loop {
        let n = stream.read(&mut buf).await.expect("read the request");
        assert!(
            n > 0,
            "the client closed before the end of {}",
            reader.missing()
        );
        if let Some(hook) = reader
            .push(&buf[..n])
            .unwrap_or_else(|e| panic!("not a request: {e}"))
        {
            break hook;
        }
    };
    match answer.response(hook.signature_ok) {
        None => tokio::time::sleep(ONE_SHOT_LIFETIME).await,
        Some(response) => {
            stream
                .write_all(response.as_bytes())
                .await
                .expect("write the answer");
            let _ = stream.shutdown().await;
        }
    }
    hook
}
