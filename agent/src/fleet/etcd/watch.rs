//! etcd's streaming watch through the JSON gateway: `POST /v3/watch` with
//! one create request opens a response that never ends by itself, one JSON
//! message a line (`{"result": {...}}`): first `created`, then the events
//! of the watched keys as they happen, or `canceled` with a reason (a
//! compacted start revision, a token etcd no longer accepts).
//!
//! The stream is network input from a server others may reach, so it is
//! bounded before anything is parsed: a message longer than
//! [`MAX_MESSAGE_LEN`] or a stream longer than [`MAX_STREAM_LEN`] ends it
//! with an error, the first message must come within the client's time
//! limit, and the caller bounds the stream's life (it reads through
//! [`WatchStream::next`] under its own deadline). Only keys, the kind and
//! the create revision of each event are kept; values are never decoded.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use super::{B64, Etcd, EtcdError, Failure, decode_text, number, prefix_end};

mod message;

pub use message::{EventKind, WatchEvent};
use message::{Message, parse_message};

/// The longest message (one line) read from a watch stream. A group's
/// events are a few hundred bytes each; etcd batches at most a few of them.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;
/// The most bytes one watch stream may carry before it is dropped.
pub const MAX_STREAM_LEN: usize = 16 * 1024 * 1024;
/// An open watch.
pub struct WatchStream {
    response: reqwest::Response,
    /// Bytes received and not yet split into lines.
    pending: Vec<u8>,
    /// How much of `pending` holds no line end.
    searched: usize,
    /// Bytes received on this stream so far.
    received: usize,
    /// The endpoint, for errors.
    endpoint: String,
}

impl Etcd {
    /// The keys under `prefix` (never their values) and the revision of
    /// the store they were read at: where a watch that is to miss nothing
    /// starts, one revision later.
    pub async fn keys(&self, prefix: &str) -> Result<(i64, Vec<String>), EtcdError> {
        let mut request = super::range_request(prefix, false);
        request["keys_only"] = json!(true);
        let answer = self.call("range", "/v3/kv/range", request).await?;
        let revision = number(&answer["header"]["revision"]);
        let keys = answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(|kv| decode_text(&kv["key"])).collect())
            .unwrap_or_default();
        Ok((revision, keys))
    }

    /// Watches every key under each of `prefixes`, and the deletes under
    /// each of `deletes_of` (with the deleted key's create revision), from
    /// `start_revision` on, in one stream (one create request a prefix,
    /// sent together). Returns once etcd said every watch exists (within
    /// the client's time limit); the stream itself has no end but the
    /// caller's.
    pub async fn watch(
        &self,
        prefixes: &[&str],
        deletes_of: &[&str],
        start_revision: i64,
    ) -> Result<WatchStream, EtcdError> {
        let create = |prefix: &str, deletes_only: bool| {
            let mut create = json!({
                "key": B64.encode(prefix),
                "range_end": B64.encode(prefix_end(prefix.as_bytes())),
                "start_revision": start_revision.to_string(),
            });
            if deletes_only {
                create["filters"] = json!(["NOPUT"]);
                create["prev_kv"] = json!(true);
            }
            format!("{}\n", json!({ "create_request": create }))
        };
        let body: String = prefixes
            .iter()
            .map(|prefix| create(prefix, false))
            .chain(deletes_of.iter().map(|prefix| create(prefix, true)))
            .collect();
        let (body, watches) = (&body, prefixes.len() + deletes_of.len());
        self.each_endpoint("watch", |endpoint| async move {
            self.with_token(&endpoint, |token| {
                let endpoint = &endpoint;
                async move { self.open_watch(endpoint, body, watches, token).await }
            })
            .await
        })
        .await
    }

    async fn open_watch(
        &self,
        endpoint: &str,
        body: &str,
        watches: usize,
        token: Option<String>,
    ) -> Result<WatchStream, Failure> {
        let mut request = self
            .client
            .post(format!("{endpoint}/v3/watch"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // The client's limit is for whole requests; this one lasts as
            // long as its reader wants (which bounds it).
            .timeout(Duration::from_secs(24 * 3600))
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let limit = self.timeout;
        let response = tokio::time::timeout(limit, request.send())
            .await
            .map_err(|_| Failure::Endpoint("timed out".into()))?
            .map_err(|e| Failure::Endpoint(crate::fleet::terminate::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Endpoint(format!("answered {status}")));
        }
        let mut stream = WatchStream {
            response,
            pending: Vec::new(),
            searched: 0,
            received: 0,
            endpoint: endpoint.to_owned(),
        };
        // etcd answers each create request in turn; events come after.
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..watches {
            let message = tokio::time::timeout_at(deadline, stream.message())
                .await
                .map_err(|_| {
                    Failure::Endpoint("no answer to the watch request in time".into())
                })??;
            match message {
                Message::Created => {}
                Message::Canceled {
                    code: Some(code),
                    reason,
                } => {
                    return Err(Failure::Refused {
                        code,
                        message: reason,
                    });
                }
                Message::Canceled { code: None, reason } => return Err(Failure::Endpoint(reason)),
                Message::Events(_) => {
                    return Err(Failure::Endpoint(
                        "events before the watch was created: is this etcd's client port?".into(),
                    ));
                }
            }
        }
        Ok(stream)
    }
}

impl WatchStream {
    /// The events of the next message (none for a progress message). An
    /// error ends the stream: etcd canceled the watch or closed the
    /// connection, or it sent more than the bounds allow.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, EtcdError> {
        let message = self.message().await;
        let error =
            |reason: String| EtcdError::new("watch", format!("{}: {reason}", self.endpoint));
        match message {
            Ok(Message::Events(events)) => Ok(events),
            Ok(Message::Created) => Ok(Vec::new()),
            Ok(Message::Canceled { reason, .. }) => {
                Err(error(format!("etcd ended the watch: {reason}")))
            }
            Err(
                Failure::Endpoint(reason)
                | Failure::Refused {
                    message: reason, ..
                },
            ) => Err(error(reason)),
        }
    }

    /// The next message, read within the bounds.
    async fn message(&mut self) -> Result<Message, Failure> {
        loop {
            if let Some(at) = self.pending[self.searched..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line: Vec<u8> = self.pending.drain(..=self.searched + at).collect();
                self.searched = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_message(&line).map_err(Failure::Endpoint);
            }
            // No line end so far: the next chunk is searched alone.
            self.searched = self.pending.len();
            if self.pending.len() > MAX_MESSAGE_LEN {
                return Err(Failure::Endpoint(format!(
                    "a watch message longer than {MAX_MESSAGE_LEN} bytes"
                )));
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| Failure::Endpoint(crate::fleet::terminate::error_chain(&e)))?
                .ok_or_else(|| Failure::Endpoint("etcd closed the watch".into()))?;
            self.received = self.received.saturating_add(chunk.len());
            if self.received > MAX_STREAM_LEN {
                return Err(Failure::Endpoint(format!(
                    "more than {MAX_STREAM_LEN} bytes on one watch stream"
                )));
            }
            self.pending.extend_from_slice(&chunk);
        }
    }
}

// The streams below come from the fake in `etcd::fake`: no real etcd sends
// headers without a first message, an endless line, endless progress
// messages, garbage, or events one byte a chunk. What a real etcd sends is
// tested against one in `tests/handover.rs` (and, for the messages' shape,
// with lines copied from etcd 3.4's gateway below).
#[cfg(test)]
mod tests {
    use super::super::fake::{self, FakeEtcd, Watch};
    use super::*;

    const LIMIT: Duration = Duration::from_millis(500);

    async fn open(watch: Watch) -> (FakeEtcd, Result<WatchStream, EtcdError>) {
        let server = FakeEtcd::start(&[], watch).await;
        let etcd = fake::client(&server.url, LIMIT);
        let stream = bounded(etcd.watch(&["/driftless/g/"], &[], 6)).await;
        (server, stream)
    }

    /// `future`, or a failed test when a missing bound lets it run on.
    async fn bounded<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), future)
            .await
            .expect("the bound under test did not end this")
    }

    #[tokio::test]
    async fn a_stream_that_never_says_created_is_dropped_in_time() {
        let started = std::time::Instant::now();
        let (_server, silent) = open(Watch::Silent).await;
        let error = silent
            .err()
            .expect("no first message: an error")
            .to_string();
        assert!(
            error.contains("no answer to the watch request in time"),
            "{error}"
        );
        assert!(started.elapsed() < LIMIT * 4, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_stream_of_two_watches_waits_for_both_to_be_created() {
        // One create request a prefix: etcd answers each. A stream that
        // confirmed one and then sends events was not set up as asked.
        let one = Watch::Chunks(vec![
            fake::created(),
            fake::event("DELETE", "/driftless/g/slots/0"),
        ]);
        let server = FakeEtcd::start(&[], one).await;
        let etcd = fake::client(&server.url, LIMIT);
        let error = bounded(etcd.watch(
            &["/driftless/g/slots/", "/driftless/g/failures/v2/"],
            &[],
            6,
        ))
        .await
        .err()
        .expect("one created for two watches: an error")
        .to_string();
        assert!(
            error.contains("events before the watch was created"),
            "{error}"
        );

        let both = Watch::Chunks(vec![
            fake::created_n(2),
            fake::event("DELETE", "/driftless/g/slots/0"),
        ]);
        let server = FakeEtcd::start(&[], both).await;
        let etcd = fake::client(&server.url, LIMIT);
        let mut stream = bounded(etcd.watch(
            &["/driftless/g/slots/", "/driftless/g/failures/v2/"],
            &[],
            6,
        ))
        .await
        .expect("both created");
        let events = bounded(stream.next()).await.expect("the event");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, EventKind::Delete);
    }

    #[tokio::test]
    async fn an_endless_line_ends_the_stream_at_the_message_bound() {
        let (_server, stream) = open(Watch::Flood {
            chunk: |n| {
                if n == 0 {
                    fake::created()
                } else {
                    vec![b'x'; 64 * 1024]
                }
            },
            every: Duration::ZERO,
        })
        .await;
        let mut stream = stream.expect("created");
        let error = bounded(stream.next())
            .await
            .expect_err("too long")
            .to_string();
        assert!(error.contains("longer than 1048576 bytes"), "{error}");
        assert!(
            stream.received <= MAX_MESSAGE_LEN + 2 * 64 * 1024 + 1024,
            "read {} bytes",
            stream.received
        );
    }

    #[tokio::test]
    async fn a_stream_ends_at_its_byte_bound() {
        // Endless progress messages: each valid, together too much.
        let (_server, stream) = open(Watch::Flood {
            chunk: |n| {
                if n == 0 {
                    fake::created()
                } else {
                    format!("{{\"result\":{{\"header\":{{\"revision\":\"{n}\"}}}}}}\n")
                        .repeat(200)
                        .into_bytes()
                }
            },
            every: Duration::ZERO,
        })
        .await;
        let mut stream = stream.expect("created");
        let mut messages = 0u64;
        let error = bounded(async {
            loop {
                match stream.next().await {
                    Ok(events) => {
                        assert!(events.is_empty());
                        messages += 1;
                    }
                    Err(e) => break e.to_string(),
                }
            }
        })
        .await;
        assert!(error.contains("more than 16777216 bytes"), "{error}");
        assert!(messages > 1000, "{messages} messages before the bound");
    }

    #[tokio::test]
    async fn a_closed_or_garbled_stream_is_an_error() {
        let (_server, stream) = open(Watch::ChunksThenClose(vec![fake::created()])).await;
        let error = stream.expect("created").next().await.expect_err("closed");
        assert!(
            error.to_string().contains("etcd closed the watch"),
            "{error}"
        );

        let (_server, stream) = open(Watch::Chunks(vec![fake::created(), b"{]\n".to_vec()])).await;
        let error = stream.expect("created").next().await.expect_err("garbled");
        assert!(error.to_string().contains("not JSON"), "{error}");

        let (_server, stream) = open(Watch::Chunks(vec![fake::event("PUT", "/k")])).await;
        let error = stream.err().expect("events before created").to_string();
        assert!(error.contains("before the watch was created"), "{error}");
    }

    #[tokio::test]
    async fn events_come_through_split_anywhere() {
        let mut bytes = fake::created();
        bytes.extend(fake::event("PUT", "/driftless/g/slots/0"));
        bytes.extend(fake::event("DELETE", "/driftless/g/slots/0"));
        // One byte a chunk: lines are put back together.
        let chunks = bytes.iter().map(|b| vec![*b]).collect();
        let (_server, stream) = open(Watch::Chunks(chunks)).await;
        let mut stream = stream.expect("created");
        let put = stream.next().await.expect("a put");
        assert_eq!(put[0].kind, EventKind::Put);
        assert_eq!(put[0].key, "/driftless/g/slots/0");
        let delete = stream.next().await.expect("a delete");
        assert_eq!(delete[0].kind, EventKind::Delete);
    }
}
