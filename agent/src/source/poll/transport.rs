//! The two transports a protocol v2 command goes over: a POST to smart
//! HTTP(S) (gitprotocol-http(5)), or a connection to git daemon for
//! `git://` ([`super::daemon`]). Either way a command is a request body of
//! pkt-lines and its answer a stream of bytes, so `ls-refs`, the streamed
//! fetch and its bounds are the same over both. Apart from the poller,
//! which decides what to ask.

use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::daemon::{self, Daemon};
use super::error::{clean_message, status_hint};
use super::{Http, PollError, RESULT_TYPE, RefPoller};

/// Where this poller's v2 commands go.
#[derive(Clone, Copy)]
pub(super) enum Wire<'a> {
    Http(&'a Http),
    Daemon(&'a Daemon),
}

/// The answer to one command, read as it arrives.
pub(super) enum Body {
    Http(reqwest::Response),
    Daemon(daemon::Answer),
}

impl Body {
    /// The answer's length, when the server declared it.
    pub(super) fn declared_len(&self) -> Option<u64> {
        match self {
            Body::Http(response) => response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
            Body::Daemon(_) => None,
        }
    }
}

impl RefPoller {
    /// The transport of this source's v2 commands; `None` for `ssh://` and
    /// `file://`, which only libgit2 reads.
    pub(super) fn wire(&self) -> Option<Wire<'_>> {
        match (&self.http, &self.daemon) {
            (Some(http), _) => Some(Wire::Http(http)),
            (None, Some(daemon)) => Some(Wire::Daemon(daemon)),
            (None, None) => None,
        }
    }

    /// Sends one protocol v2 command (a request body of pkt-lines) and
    /// returns its answer once it shows the server speaks v2; `Ok(Err(why))`
    /// when it does not.
    pub(super) async fn send_v2(
        &self,
        wire: Wire<'_>,
        body: Vec<u8>,
        started: Instant,
    ) -> Result<Result<Body, String>, PollError> {
        match wire {
            Wire::Http(http) => Ok(self.post_v2(http, body, started).await?.map(Body::Http)),
            Wire::Daemon(daemon) => {
                let o = &self.options;
                let sent = daemon
                    .command(&body, o.connect_timeout, o.io_timeout, o.deadline)
                    .await;
                Ok(sent
                    .map_err(|f| self.daemon_error(f, started))?
                    .map(Body::Daemon))
            }
        }
    }

    /// The next bytes of `body`; `None` at its end.
    pub(super) async fn next_chunk(
        &self,
        body: &mut Body,
        started: Instant,
    ) -> Result<Option<Vec<u8>>, PollError> {
        match body {
            Body::Http(response) => Ok(response
                .chunk()
                .await
                .map_err(|e| self.request_error(e, started, "the rest of the answer"))?
                .map(Vec::from)),
            Body::Daemon(answer) => answer
                .chunk()
                .await
                .map_err(|f| self.daemon_error(f, started)),
        }
    }

    /// Sends one protocol v2 command over HTTP(S) and returns the response
    /// once its status and content type show a smart HTTP answer;
    /// `Ok(Err(why))` when the server does not speak v2.
    async fn post_v2(
        &self,
        http: &Http,
        body: Vec<u8>,
        started: Instant,
    ) -> Result<Result<reqwest::Response, String>, PollError> {
        let response = http
            .client
            .post(http.endpoint.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(e, started, "the response"))?;
        let status = response.status();
        if status.is_redirection()
            || matches!(
                status,
                StatusCode::BAD_REQUEST
                    | StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::LENGTH_REQUIRED
                    | StatusCode::UNSUPPORTED_MEDIA_TYPE
                    | StatusCode::NOT_IMPLEMENTED
            )
        {
            return Ok(Err(format!("HTTP status {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(PollError::HttpStatus {
                url: self.redacted.clone(),
                status: status.as_u16(),
                hint: status_hint(status),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        if !content_type.is_some_and(|t| t.eq_ignore_ascii_case(RESULT_TYPE)) {
            return Ok(Err(format!(
                "content type {}",
                clean_message(content_type.unwrap_or("(none)").as_bytes())
            )));
        }
        Ok(Ok(response))
    }

    fn daemon_error(&self, failure: daemon::Failure, started: Instant) -> PollError {
        let url = self.redacted.clone();
        match failure {
            daemon::Failure::Connect(reason) => PollError::Connect { url, reason },
            daemon::Failure::Timeout(what) => PollError::Timeout {
                url,
                what,
                after: started.elapsed(),
            },
            daemon::Failure::Transfer(reason) => PollError::Transfer { url, reason },
            daemon::Failure::Server(message) => PollError::Server { url, message },
        }
    }
}
