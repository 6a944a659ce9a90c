//! Polling one ref of the release repository cheaply: the watcher asks, on
//! every node and every minute, which commit the fleet's channel ref (e.g.
//! `refs/heads/channel`) names.
//!
//! Over HTTP(S) one poll is one request whose cost does not grow with the
//! repository's refs: a git protocol v2 `ls-refs` command with the exact ref
//! as its `ref-prefix`, POSTed to `URL/git-upload-pack` with the header
//! `Git-Protocol: version=2` (gitprotocol-v2(5), gitprotocol-http(5)). A v0
//! ref advertisement, which is all libgit2 speaks, lists every branch and
//! tag instead. Protocol v2 is stateless, so the command is sent without
//! first fetching the capability advertisement (`GET info/refs`), which
//! would be a second request. The request is framed and the answer parsed
//! here ([`pkt`], [`ls_refs_request`], [`parse_ls_refs`]), both bounded.
//! Over `git://` the same command goes to git daemon on a connection of
//! its own, protocol v2 asked for in the request line (`daemon`).
//!
//! Where v2 is not available the poller lists the refs with libgit2 (one
//! v0 advertisement) on a blocking thread, bounded by the same timeouts:
//! for `ssh://` and `file://` URLs always, and for a server that shows it
//! does not speak v2 (git-http-backend behind a web server that does not
//! pass `Git-Protocol` on as `GIT_PROTOCOL` answers with an empty body; a
//! git daemon older than git 2.18 with a v0 advertisement). Such a server
//! is then polled through libgit2 for the next [`V2_RECHECK_POLLS`] polls
//! before v2 is tried again, so that a poll stays one request.
//!
//! Credentials are never logged: URLs in errors and logs are
//! [redacted](redact_url), the basic-auth header is marked sensitive.
//!
//! This file is the client ([`RefPoller`]): it picks v2 or the listing.
//! Beside it: `transport` (a v2 command over HTTP(S) or to git daemon),
//! `daemon` (`git://`), [`pkt`] (the pkt-line codec), `ls_refs` (the
//! request and the answer's parsing), `fallback` (the libgit2 listing),
//! `options` (the settings and where they come from) and `error`
//! ([`PollError`] and the helpers that keep messages one line and free of
//! credentials).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

mod daemon;
mod error;
mod fallback;
mod ls_refs;
mod object_format;
mod options;
pub mod pkt;
mod transport;

pub(crate) use error::error_chain as error_chain_of;
pub use error::{PollError, redact_url};
pub use ls_refs::{AnswerError, capabilities, is_object_id, ls_refs_request, parse_ls_refs};
pub use options::{BasicAuth, MAX_ANSWER_BYTES, PollOptions, options_for, poller_for};

use crate::types::ObjectFormat;
use error::{error_chain, looks_like_tls};
use fallback::Git2Listing;
use transport::Wire;

/// What driftless calls itself on the wire (User-Agent and v2 `agent`).
pub const AGENT: &str = concat!("driftless/", env!("CARGO_PKG_VERSION"));

/// After an HTTP server showed it does not speak protocol v2, this many
/// polls go straight to the libgit2 listing before v2 is tried again.
pub const V2_RECHECK_POLLS: u32 = 60;

/// The longest ref name a poll asks for (it must fit one pkt-line easily).
const MAX_REF_NAME: usize = 1024;

/// Idle HTTP connections are kept this long: a poll a minute opens a fresh
/// connection each time rather than racing a server's keep-alive timeout.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

const REQUEST_TYPE: &str = "application/x-git-upload-pack-request";
const RESULT_TYPE: &str = "application/x-git-upload-pack-result";

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One protocol v2 `ls-refs` command, over HTTP(S) or `git://`.
    V2,
    /// libgit2's ref listing (a v0 advertisement of every ref).
    Fallback,
}

/// The answer to one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefAnswer {
    /// The object id the ref names (lowercase hex); `None`: the server has
    /// no such ref.
    pub oid: Option<String>,
    /// How the answer was obtained.
    pub protocol: Protocol,
    /// With [`Protocol::V2`], the bytes of the response body. With
    /// [`Protocol::Fallback`] an estimate (libgit2 does not report transfer
    /// sizes): the pkt-line size of the refs it listed, capabilities and
    /// headers not counted.
    pub bytes_received: u64,
}

/// The HTTP side of a poller, built once.
#[derive(Debug)]
struct Http {
    client: reqwest::Client,
    endpoint: Url,
}

/// Polls refs of one repository. Build it once and keep it: it holds the
/// HTTP client (connection pool, TLS configuration, headers).
#[derive(Debug)]
pub struct RefPoller {
    redacted: String,
    http: Option<Http>,
    /// For `git://`: git daemon, spoken to in protocol v2.
    daemon: Option<Box<daemon::Daemon>>,
    listing: Arc<Git2Listing>,
    options: PollOptions,
    /// Polls left that skip v2 (the server showed it lacks it).
    skip_v2: AtomicU32,
    /// Set while a libgit2 listing runs.
    listing_busy: Arc<AtomicBool>,
    /// Set once the server showed the repository is SHA-256.
    sha256: AtomicBool,
}

/// The result of a v2 attempt that produced no error.
enum V2 {
    Answer(RefAnswer),
    NotSpoken(String),
}

impl RefPoller {
    /// A poller for the repository at `url` (`https://`, `http://`,
    /// `git://`, `ssh://` or `file://`). Reads the CA file; makes no request.
    pub fn new(url: &str, options: PollOptions) -> Result<Self, PollError> {
        let redacted = redact_url(url);
        let setup = |reason: String| PollError::Setup {
            url: redacted.clone(),
            reason,
        };
        let mut parsed = Url::parse(url).map_err(|e| setup(format!("not a valid URL: {e}")))?;
        let scheme = parsed.scheme().to_owned();
        let daemon = match scheme.as_str() {
            "git" => Some(Box::new(daemon::Daemon::new(&parsed).map_err(setup)?)),
            _ => None,
        };
        let (http, listing) = match scheme.as_str() {
            "http" | "https" => {
                let mut basic_auth = options.basic_auth.clone();
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    if basic_auth.is_none() {
                        basic_auth = Some(BasicAuth {
                            user: percent_decode(parsed.username()),
                            token: percent_decode(parsed.password().unwrap_or_default()),
                        });
                    }
                    let _ = parsed.set_username("");
                    let _ = parsed.set_password(None);
                }
                parsed.set_fragment(None);
                parsed.set_query(None);
                let listing = Git2Listing {
                    url: parsed.to_string(),
                    https: scheme == "https",
                    ca_file: options.ca_file.clone(),
                    basic_auth: basic_auth.clone(),
                    ssh_key_file: None,
                };
                let path = parsed.path().trim_end_matches('/').to_owned();
                parsed.set_path(&format!("{path}/git-upload-pack"));
                let client =
                    build_client(&options, basic_auth.as_ref(), parsed.as_str()).map_err(setup)?;
                (
                    Some(Http {
                        client,
                        endpoint: parsed,
                    }),
                    listing,
                )
            }
            "git" | "ssh" | "file" => (
                None,
                Git2Listing {
                    url: url.to_owned(),
                    https: false,
                    ca_file: None,
                    basic_auth: None,
                    ssh_key_file: options.ssh_key_file.clone(),
                },
            ),
            other => {
                return Err(setup(format!(
                    "unsupported scheme {other:?} (https, http, git, ssh or file)"
                )));
            }
        };
        Ok(Self {
            redacted,
            http,
            daemon,
            listing: Arc::new(listing),
            options,
            skip_v2: AtomicU32::new(0),
            listing_busy: Arc::new(AtomicBool::new(false)),
            sha256: AtomicBool::new(false),
        })
    }

    /// The repository URL without credentials, as errors name it.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// Asks the server which object `ref_name` (a full name such as
    /// `refs/heads/channel`) names.
    ///
    /// Over HTTP(S) this is one `ls-refs` request, unless the server does
    /// not speak v2: then that poll also makes the libgit2 listing, and the
    /// next [`V2_RECHECK_POLLS`] polls make only it.
    ///
    /// Runs on a Tokio runtime with I/O and time enabled; the libgit2
    /// listing runs on its blocking pool.
    pub async fn ls_ref(&self, ref_name: &str) -> Result<RefAnswer, PollError> {
        if !is_pollable_ref(ref_name) {
            return Err(PollError::BadRefName {
                url: self.redacted.clone(),
                name: ref_name.chars().take(MAX_REF_NAME).collect(),
            });
        }
        let Some(wire) = self.wire() else {
            return self.list_with_git2(ref_name).await;
        };
        let skipped = self
            .skip_v2
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if skipped {
            return self.list_with_git2(ref_name).await;
        }
        match self.ls_ref_v2(wire, ref_name).await? {
            V2::Answer(answer) => {
                tracing::debug!(
                    url = %self.redacted,
                    ref_name,
                    oid = ?answer.oid,
                    bytes = answer.bytes_received,
                    "polled with protocol v2"
                );
                Ok(answer)
            }
            V2::NotSpoken(why) => {
                let listed = self.list_with_git2(ref_name).await;
                if self.learned_sha256(&listed) {
                    if let V2::Answer(answer) = self.ls_ref_v2(wire, ref_name).await? {
                        return Ok(answer);
                    }
                }
                tracing::info!(
                    "{} does not speak git protocol v2 ({why}); listing refs with libgit2 for the next {V2_RECHECK_POLLS} polls",
                    self.redacted
                );
                self.skip_v2.store(V2_RECHECK_POLLS, Ordering::SeqCst);
                listed
            }
        }
    }

    /// One `ls-refs` request in `format`.
    async fn ls_ref_once(
        &self,
        wire: Wire<'_>,
        ref_name: &str,
        format: ObjectFormat,
    ) -> Result<V2, PollError> {
        let body = ls_refs_request(ref_name, format).map_err(|e| self.malformed(e.to_string()))?;
        let started = Instant::now();
        let mut response = match self.send_v2(wire, body, started).await? {
            Ok(response) => response,
            Err(why) => return Ok(V2::NotSpoken(why)),
        };
        let limit = self.options.max_answer_bytes;
        let too_large = || PollError::TooLarge {
            url: self.redacted.clone(),
            limit,
        };
        let declared = response.declared_len();
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let capacity = declared.map_or(512, |n| usize::try_from(n).unwrap_or(limit));
        let mut answer = Vec::with_capacity(capacity.min(limit));
        while let Some(chunk) = self.next_chunk(&mut response, started).await? {
            if answer.len() + chunk.len() > limit {
                return Err(too_large());
            }
            answer.extend_from_slice(&chunk);
        }
        match parse_ls_refs(&answer, ref_name) {
            Ok(oid) => Ok(V2::Answer(RefAnswer {
                oid,
                protocol: Protocol::V2,
                bytes_received: answer.len() as u64,
            })),
            Err(AnswerError::NotV2(why)) => Ok(V2::NotSpoken(why.to_owned())),
            Err(AnswerError::Server(message)) => Err(PollError::Server {
                url: self.redacted.clone(),
                message,
            }),
            Err(other) => Err(self.malformed(other.to_string())),
        }
    }

    /// Sends a protocol v2 command over HTTP(S) or `git://` and streams
    /// the answer, chunk by chunk, to `each` (which returns false to stop).
    /// `Ok(Err(why))` when this source is neither or does not speak v2.
    pub async fn stream_command(
        &self,
        body: Vec<u8>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<Result<(), String>, PollError> {
        let Some(wire) = self.wire() else {
            return Ok(Err("neither an HTTP(S) nor a git:// source".into()));
        };
        let started = Instant::now();
        let mut answer = match self.send_v2(wire, body, started).await? {
            Ok(answer) => answer,
            Err(why) => return Ok(Err(why)),
        };
        while let Some(chunk) = self.next_chunk(&mut answer, started).await? {
            if !each(&chunk) {
                break;
            }
        }
        Ok(Ok(()))
    }

    fn malformed(&self, reason: String) -> PollError {
        PollError::Malformed {
            url: self.redacted.clone(),
            reason,
        }
    }

    /// Classifies a reqwest error; `waiting` says what a timeout waited for.
    fn request_error(
        &self,
        e: reqwest::Error,
        started: Instant,
        waiting: &'static str,
    ) -> PollError {
        let url = self.redacted.clone();
        let e = e.without_url();
        let reason = error_chain(&e);
        if e.is_timeout() {
            let what = if e.is_connect() {
                "the connection"
            } else {
                waiting
            };
            return PollError::Timeout {
                url,
                what,
                after: started.elapsed(),
            };
        }
        if self.listing.https && looks_like_tls(&reason) {
            return PollError::Tls { url, reason };
        }
        if e.is_connect() {
            return PollError::Connect { url, reason };
        }
        PollError::Transfer { url, reason }
    }
}

/// Builds the HTTP client: the v2 headers, and the rest as [`http_client`].
fn build_client(
    options: &PollOptions,
    auth: Option<&BasicAuth>,
    url: &str,
) -> Result<reqwest::Client, String> {
    let mut headers = HeaderMap::new();
    headers.insert("git-protocol", HeaderValue::from_static("version=2"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(REQUEST_TYPE));
    headers.insert(ACCEPT, HeaderValue::from_static(RESULT_TYPE));
    http_client(options, auth, headers, url)
}

/// An HTTP client of the source: timeouts, no redirects (a redirected
/// git server is left to libgit2; a static source is refused), no proxy
/// (as libgit2's fetch), `headers` on every request, basic auth (a
/// sensitive header), and the CA file as the only trusted roots (none for
/// a plain `http://` `url`: see [`crate::source::tls::plain_only`]).
pub(crate) fn http_client(
    options: &PollOptions,
    auth: Option<&BasicAuth>,
    mut headers: HeaderMap,
    url: &str,
) -> Result<reqwest::Client, String> {
    if let Some(auth) = auth {
        use base64::Engine as _;
        let pair = format!("{}:{}", auth.user, auth.token);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| "the basic-auth credentials are not valid in a header".to_owned())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let builder = crate::source::tls::client_builder();
    let mut builder = crate::source::tls::plain_only(builder, [url])
        .user_agent(AGENT)
        .default_headers(headers)
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.io_timeout)
        .timeout(options.deadline)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(IDLE_CONNECTION);
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {}", path.display(), e.kind()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {}: {}", path.display(), error_chain(&e)))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// Whether `name` can be sent as a `ref-prefix`: `HEAD` or a `refs/` name of
/// printable ASCII without spaces, of bounded length.
fn is_pollable_ref(name: &str) -> bool {
    (name == "HEAD" || name.starts_with("refs/"))
        && name.len() <= MAX_REF_NAME
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Decodes `%XX` escapes (URL user information); invalid escapes stay.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let options = PollOptions {
            basic_auth: Some(BasicAuth {
                user: "git".to_owned(),
                token: "s3cret-token".to_owned(),
            }),
            ..PollOptions::default()
        };
        assert!(!format!("{options:?}").contains("s3cret"));
        let poller =
            RefPoller::new("https://u:pa%40ss@example.invalid/r.git", options).expect("valid");
        let debug = format!("{poller:?}");
        use base64::Engine as _;
        let header = base64::engine::general_purpose::STANDARD.encode("git:s3cret-token");
        assert!(debug.contains("Sensitive"), "{debug}");
        for secret in ["s3cret", "pa%40ss", "pa@ss", header.as_str()] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert_eq!(poller.redacted_url(), "https://example.invalid/r.git");
        let err =
            RefPoller::new("gopher://u:pw@h/r", PollOptions::default()).expect_err("bad scheme");
        assert!(!err.to_string().contains("pw"), "{err}");
        let err = RefPoller::new(
            "https://u:pw@h/r",
            PollOptions {
                ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
                ..PollOptions::default()
            },
        )
        .expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn url_credentials_become_basic_auth() {
        let poller = RefPoller::new(
            "https://git:pa%40ss@example.invalid/r.git/",
            PollOptions::default(),
        )
        .expect("valid");
        let auth = poller.listing.basic_auth.as_ref().expect("from the URL");
        assert_eq!((auth.user.as_str(), auth.token.as_str()), ("git", "pa@ss"));
        assert_eq!(poller.listing.url, "https://example.invalid/r.git/");
        let endpoint = poller.http.as_ref().expect("http").endpoint.as_str();
        assert_eq!(endpoint, "https://example.invalid/r.git/git-upload-pack");
        assert_eq!(percent_decode("a%2x%41%"), "a%2xA%");
    }

    #[test]
    fn ref_names_are_checked() {
        for good in ["refs/heads/channel", "HEAD", "refs/tags/v1.0"] {
            assert!(is_pollable_ref(good), "{good}");
        }
        for bad in [
            "",
            "channel",
            "refs/heads/a b",
            "refs/heads/\n",
            "refs/heads/é",
        ] {
            assert!(!is_pollable_ref(bad), "{bad:?}");
        }
        assert!(!is_pollable_ref(&format!(
            "refs/{}",
            "x".repeat(MAX_REF_NAME)
        )));
    }
}
