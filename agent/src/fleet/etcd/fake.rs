//! A hand-written stand-in for etcd's JSON gateway, for unit tests of the
//! watch's bounds only: a real etcd never sends an endless line, a flood
//! of events, or headers without a first message, so a hostile peer has to
//! be faked. It serves `/v3/kv/range` with a fixed answer and `/v3/watch`
//! with what the test scripts (and refuses everything else, lease grants
//! counted), on 127.0.0.1 and an ephemeral port, one
//! request a connection; it stops with the test's runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{B64, Etcd};
use crate::config::{Coordinator, RolloutSettings};
use crate::types::Interval;

/// How the fake answers a watch.
#[derive(Clone)]
pub enum Watch {
    /// These chunks, then silence with the connection open.
    Chunks(Vec<Vec<u8>>),
    /// These chunks, then the end of the answer.
    ChunksThenClose(Vec<Vec<u8>>),
    /// Headers only, then silence.
    Silent,
    /// A chunk made by the function for each index, one every `every`,
    /// without end.
    Flood {
        /// Makes chunk `n`.
        chunk: fn(usize) -> Vec<u8>,
        /// The pause between chunks.
        every: Duration,
    },
}

/// A running fake.
pub struct FakeEtcd {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Watch requests received.
    pub watches: Arc<AtomicUsize>,
    /// Lease grants asked for (each answered 404).
    pub grants: Arc<AtomicUsize>,
}

/// The first message of a watch.
pub fn created() -> Vec<u8> {
    br#"{"result":{"header":{"revision":"5"},"created":true}}
"#
    .to_vec()
}

/// The first messages of a stream of `watches` watches (one a create
/// request).
pub fn created_n(watches: usize) -> Vec<u8> {
    created().repeat(watches)
}

/// A message with one event on `key`.
pub fn event(kind: &str, key: &str) -> Vec<u8> {
    let kind = if kind == "PUT" {
        String::new()
    } else {
        format!(r#""type":"{kind}","#)
    };
    format!(
        "{{\"result\":{{\"header\":{{\"revision\":\"6\"}},\"events\":[{{{kind}\"kv\":{{\"key\":\"{}\"}}}}]}}}}\n",
        B64.encode(key)
    )
    .into_bytes()
}

/// Rollout settings for group `g` with one slot, etcd at `url`, `timeout`
/// a request.
pub fn settings(url: &str, timeout: Duration) -> RolloutSettings {
    RolloutSettings {
        coordinator: Coordinator::Etcd,
        endpoints: vec![url.to_owned()],
        group: "g".to_owned(),
        max_in_flight: 1,
        timeout: Interval(timeout),
        ..RolloutSettings::default()
    }
}

/// A client of etcd at `url`.
pub fn client(url: &str, timeout: Duration) -> Etcd {
    let root = tempfile::tempdir().expect("a temporary root");
    Etcd::new(root.path(), &settings(url, timeout)).expect("a client")
}

impl FakeEtcd {
    /// Serves `slots` as the keys of every range, and `watch` to every watch.
    pub async fn start(slots: &[&str], watch: Watch) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let kvs: Vec<String> = slots
            .iter()
            .map(|k| format!(r#"{{"key":"{}"}}"#, B64.encode(k)))
            .collect();
        let range = format!(
            r#"{{"header":{{"revision":"5"}},"kvs":[{}],"count":"{}"}}"#,
            kvs.join(","),
            slots.len()
        );
        let watches = Arc::new(AtomicUsize::new(0));
        let grants = Arc::new(AtomicUsize::new(0));
        let counts = (watches.clone(), grants.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(socket, range.clone(), watch.clone(), counts.clone()));
            }
        });
        Self {
            url,
            watches,
            grants,
        }
    }

    /// Watch requests so far.
    pub fn watch_count(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }
}

/// One request on one connection.
async fn serve(
    mut socket: TcpStream,
    range: String,
    watch: Watch,
    (watches, grants): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as much body as Content-Length says (small here).
    let head_end = loop {
        let Ok(n) = socket.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if request.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    if head.starts_with("post /v3/kv/range") {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{range}",
            range.len()
        );
        let _ = socket.write_all(answer.as_bytes()).await;
        return;
    }
    if head.starts_with("post /v3/lease/grant") {
        grants.fetch_add(1, Ordering::SeqCst);
    }
    if !head.starts_with("post /v3/watch") {
        let _ = socket
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    watches.fetch_add(1, Ordering::SeqCst);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let send = async |socket: &mut TcpStream, chunk: &[u8]| {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        socket.write_all(&framed).await.is_ok()
    };
    let hold = match watch {
        Watch::Chunks(chunks) => {
            for chunk in &chunks {
                if !send(&mut socket, chunk).await {
                    return;
                }
            }
            true
        }
        Watch::ChunksThenClose(chunks) => {
            for chunk in &chunks {
                if !send(&mut socket, chunk).await {
                    return;
                }
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
            false
        }
        Watch::Silent => true,
        Watch::Flood { chunk, every } => {
            for n in 0.. {
                if !send(&mut socket, &chunk(n)).await {
                    return;
                }
                tokio::time::sleep(every).await;
            }
            false
        }
    };
    if hold {
        // Until the client goes away.
        let _ = socket.read(&mut buf).await;
    }
}
