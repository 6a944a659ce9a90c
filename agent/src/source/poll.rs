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
//!
//! Where v2 is not available the poller lists the refs with libgit2 (one
//! v0 advertisement) on a blocking thread, bounded by the same timeouts:
//! for `git://`, `ssh://` and `file://` URLs always, and for an HTTP server
//! that shows it does not honour `Git-Protocol: version=2` (git-http-backend
//! behind a web server that does not pass the header on as `GIT_PROTOCOL`
//! answers such a request with an empty body). Such a server is then polled
//! through libgit2 for the next [`V2_RECHECK_POLLS`] polls before v2 is
//! tried again, so that a poll stays one request.
//!
//! Credentials are never logged: URLs in errors and logs are
//! [redacted](redact_url), the basic-auth header is marked sensitive.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use reqwest::{StatusCode, Url};

/// What driftless calls itself on the wire (User-Agent and v2 `agent`).
pub const AGENT: &str = concat!("driftless/", env!("CARGO_PKG_VERSION"));

/// The default bound on one `ls-refs` answer: a single ref needs about a
/// hundred bytes, so this leaves room for hundreds of refs sharing the prefix.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// After an HTTP server showed it does not speak protocol v2, this many
/// polls go straight to the libgit2 listing before v2 is tried again.
pub const V2_RECHECK_POLLS: u32 = 60;

/// The longest ref name a poll asks for (it must fit one pkt-line easily).
const MAX_REF_NAME: usize = 1024;

/// Idle HTTP connections are kept this long: a poll a minute opens a fresh
/// connection each time rather than racing a server's keep-alive timeout.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Longest server error text (`ERR` packet) kept in a [`PollError`].
const MAX_MESSAGE: usize = 300;

const REQUEST_TYPE: &str = "application/x-git-upload-pack-request";
const RESULT_TYPE: &str = "application/x-git-upload-pack-result";

/// The pkt-line framing of git's wire protocol (gitprotocol-common(5),
/// gitprotocol-v2(5)): four hex digits giving the length of the line
/// including themselves, then the payload; `0000` is a flush packet, `0001`
/// a delimiter and `0002` a response end. Pure and bounded.
pub mod pkt {
    /// The longest pkt-line, length digits included.
    pub const MAX_PKT_LEN: usize = 65520;
    /// The longest payload of one pkt-line.
    pub const MAX_PAYLOAD: usize = MAX_PKT_LEN - 4;

    /// One decoded packet.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Packet<'a> {
        /// `0000`: the end of a message.
        Flush,
        /// `0001`: separates sections of a message.
        Delim,
        /// `0002`: the end of a response on a stateless connection.
        ResponseEnd,
        /// A data packet's payload (a trailing LF included, if sent).
        Data(&'a [u8]),
    }

    /// Input that is not a sequence of well-formed pkt-lines.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum PktError {
        /// The input ends inside a length or a payload.
        #[error("truncated pkt-line at byte {at}")]
        Truncated {
            /// Offset of the packet's length digits.
            at: usize,
        },
        /// The length is not four hex digits.
        #[error("bad pkt-line length {text:?} at byte {at}")]
        BadLength {
            /// Offset of the length digits.
            at: usize,
            /// The four bytes found, escaped.
            text: String,
        },
        /// The length is `0003`, which no packet uses.
        #[error("reserved pkt-line length {len} at byte {at}")]
        Reserved {
            /// Offset of the length digits.
            at: usize,
            /// The length found.
            len: usize,
        },
        /// The length exceeds [`MAX_PKT_LEN`].
        #[error("pkt-line length {len} at byte {at} exceeds {MAX_PKT_LEN}")]
        TooLong {
            /// Offset of the length digits.
            at: usize,
            /// The length found.
            len: usize,
        },
        /// A payload to encode does not fit one pkt-line.
        #[error("a payload of {len} bytes does not fit in a pkt-line")]
        PayloadTooLong {
            /// The payload's length.
            len: usize,
        },
    }

    /// Reads packets from a byte string, one at a time.
    #[derive(Debug, Clone)]
    pub struct Reader<'a> {
        input: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        /// A reader at the start of `input`.
        pub fn new(input: &'a [u8]) -> Self {
            Self { input, pos: 0 }
        }

        /// The offset of the next packet.
        pub fn position(&self) -> usize {
            self.pos
        }

        /// The bytes not read yet.
        pub fn rest(&self) -> &'a [u8] {
            &self.input[self.pos..]
        }

        /// The next packet; `None` at the end of the input.
        pub fn next_packet(&mut self) -> Result<Option<Packet<'a>>, PktError> {
            let at = self.pos;
            let rest = self.rest();
            if rest.is_empty() {
                return Ok(None);
            }
            let Some(digits) = rest.get(..4) else {
                return Err(PktError::Truncated { at });
            };
            let mut len = 0usize;
            for &digit in digits {
                let value = match digit {
                    b'0'..=b'9' => digit - b'0',
                    b'a'..=b'f' => digit - b'a' + 10,
                    b'A'..=b'F' => digit - b'A' + 10,
                    _ => {
                        return Err(PktError::BadLength {
                            at,
                            text: digits.escape_ascii().to_string(),
                        });
                    }
                };
                len = len * 16 + usize::from(value);
            }
            let packet = match len {
                0 => Packet::Flush,
                1 => Packet::Delim,
                2 => Packet::ResponseEnd,
                3 => return Err(PktError::Reserved { at, len }),
                len if len > MAX_PKT_LEN => return Err(PktError::TooLong { at, len }),
                len => match rest.get(4..len) {
                    Some(payload) => Packet::Data(payload),
                    None => return Err(PktError::Truncated { at }),
                },
            };
            self.pos += len.max(4);
            Ok(Some(packet))
        }
    }

    /// Appends a data packet made of `parts`, concatenated.
    pub fn write_data(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), PktError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_PAYLOAD {
            return Err(PktError::PayloadTooLong { len });
        }
        write_len(out, len + 4);
        for part in parts {
            out.extend_from_slice(part);
        }
        Ok(())
    }

    /// Appends a flush packet (`0000`).
    pub fn write_flush(out: &mut Vec<u8>) {
        out.extend_from_slice(b"0000");
    }

    /// Appends a delimiter packet (`0001`).
    pub fn write_delim(out: &mut Vec<u8>) {
        out.extend_from_slice(b"0001");
    }

    /// Appends a response-end packet (`0002`).
    pub fn write_response_end(out: &mut Vec<u8>) {
        out.extend_from_slice(b"0002");
    }

    fn write_len(out: &mut Vec<u8>, len: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for shift in [12, 8, 4, 0] {
            out.push(HEX[(len >> shift) & 0xf]);
        }
    }

    /// A payload without its trailing LF (receivers must accept both).
    pub fn text(payload: &[u8]) -> &[u8] {
        payload.strip_suffix(b"\n").unwrap_or(payload)
    }
}

/// The body of a protocol v2 `ls-refs` request for exactly `ref_name`:
/// `command=ls-refs`, our `agent`, a delimiter, `ref-prefix REF`, a flush.
///
/// No `object-format`: a client that sends none is taken to use SHA-1
/// (gitprotocol-v2(5)). The `agent` capability may be sent only when the
/// server advertised it; git's server always does.
pub fn ls_refs_request(ref_name: &str) -> Result<Vec<u8>, pkt::PktError> {
    let mut out = Vec::with_capacity(64 + AGENT.len() + ref_name.len());
    pkt::write_data(&mut out, &[b"command=ls-refs\n"])?;
    pkt::write_data(&mut out, &[b"agent=", AGENT.as_bytes(), b"\n"])?;
    pkt::write_delim(&mut out);
    pkt::write_data(&mut out, &[b"ref-prefix ", ref_name.as_bytes(), b"\n"])?;
    pkt::write_flush(&mut out);
    Ok(out)
}

/// An `ls-refs` answer that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The framing is broken.
    #[error(transparent)]
    Pkt(#[from] pkt::PktError),
    /// The server sent an `ERR` packet.
    #[error("{0}")]
    Server(String),
    /// The answer is not protocol v2 (empty, or a v0 ref advertisement):
    /// the server did not honour `Git-Protocol: version=2`.
    #[error("not a protocol v2 answer: {0}")]
    NotV2(&'static str),
    /// A line is not `OID SP REFNAME *(SP ATTRIBUTE)`.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based packet number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The answer names the ref twice.
    #[error("the ref is listed twice")]
    Duplicate,
    /// The answer stops before its flush packet.
    #[error("the answer ends without its flush packet")]
    MissingFlush,
    /// Something follows the flush packet.
    #[error("unexpected data after the flush packet")]
    TrailingData,
}

/// Finds `ref_name` in the body of an `ls-refs` answer: `Some(oid)` when a
/// line names exactly that ref, `None` when none does (lines of other refs
/// sharing the prefix, e.g. `refs/heads/channel-old`, are skipped). Every
/// line must carry a well-formed object id; an `unborn` line counts as
/// absent. The answer ends with a flush packet, optionally followed by a
/// response-end packet.
pub fn parse_ls_refs(body: &[u8], ref_name: &str) -> Result<Option<String>, AnswerError> {
    if body.is_empty() {
        return Err(AnswerError::NotV2("empty answer"));
    }
    let mut reader = pkt::Reader::new(body);
    let mut found: Option<Option<&[u8]>> = None;
    let mut line = 0usize;
    loop {
        line += 1;
        let payload = match reader.next_packet()? {
            None => return Err(AnswerError::MissingFlush),
            Some(pkt::Packet::Flush) => break,
            Some(pkt::Packet::Delim | pkt::Packet::ResponseEnd) => {
                return Err(AnswerError::BadLine {
                    line,
                    reason: "a delimiter before the flush packet",
                });
            }
            Some(pkt::Packet::Data(payload)) => payload,
        };
        if let Some(message) = payload.strip_prefix(b"ERR ") {
            return Err(AnswerError::Server(clean_message(pkt::text(message))));
        }
        if line == 1 {
            if payload.starts_with(b"# service=") {
                return Err(AnswerError::NotV2("a smart HTTP v0 advertisement"));
            }
            if payload.contains(&0) {
                return Err(AnswerError::NotV2("a v0 ref advertisement"));
            }
            if pkt::text(payload) == b"version 1" {
                return Err(AnswerError::NotV2("protocol version 1"));
            }
        }
        let text = pkt::text(payload);
        let bad = |reason| AnswerError::BadLine { line, reason };
        let mut fields = text.split(|&b| b == b' ');
        let oid = fields.next().unwrap_or_default();
        let name = fields.next().ok_or_else(|| bad("no ref name"))?;
        if name.is_empty() {
            return Err(bad("an empty ref name"));
        }
        let oid = match oid {
            b"unborn" => None,
            oid if is_object_id(oid) => Some(oid),
            _ => return Err(bad("not an object id")),
        };
        for attribute in fields {
            let valid = match attribute.strip_prefix(b"peeled:") {
                Some(peeled) => is_object_id(peeled),
                None => attribute.starts_with(b"symref-target:"),
            };
            if !valid {
                return Err(bad("a bad ref attribute"));
            }
        }
        if name == ref_name.as_bytes() {
            if found.is_some() {
                return Err(AnswerError::Duplicate);
            }
            found = Some(oid);
        }
    }
    match reader.next_packet()? {
        None => {}
        Some(pkt::Packet::ResponseEnd) if reader.rest().is_empty() => {}
        Some(_) => return Err(AnswerError::TrailingData),
    }
    Ok(found
        .flatten()
        .map(|oid| String::from_utf8_lossy(oid).into_owned()))
}

/// Whether `text` is a SHA-1 or SHA-256 object id in lowercase hex.
pub fn is_object_id(text: &[u8]) -> bool {
    matches!(text.len(), 40 | 64) && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One line of printable text, at most [`MAX_MESSAGE`] characters.
fn clean_message(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}

/// `url` without user information, query or fragment, for logs and errors.
/// Works on any text, parseable or not.
pub fn redact_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        // scp-like `user@host:path`, or not a URL at all.
        return match url.split_once('@') {
            Some((_, host)) if !url.contains('/') || url.find('@') < url.find('/') => {
                host.to_owned()
            }
            _ => url.to_owned(),
        };
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut out = format!("{scheme}://{host}");
    if rest.contains('/') {
        out.push('/');
        out.push_str(path);
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One protocol v2 `ls-refs` request over HTTP(S).
    V2Http,
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
    /// With [`Protocol::V2Http`], the bytes of the response body. With
    /// [`Protocol::Fallback`] an estimate (libgit2 does not report transfer
    /// sizes): the pkt-line size of the refs it listed, capabilities and
    /// headers not counted.
    pub bytes_received: u64,
}

/// HTTP basic-auth credentials: a user name and an access token. The
/// token never appears in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct BasicAuth {
    /// The user name (`git` for most forges' tokens).
    pub user: String,
    /// The token, sent as the password.
    pub token: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How a [`RefPoller`] reaches the server.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence from the server while waiting for or reading the
    /// answer.
    pub io_timeout: Duration,
    /// Longest time for one poll (one request, or one libgit2 listing).
    pub deadline: Duration,
    /// PEM bundle of the CAs trusted for HTTPS instead of the system's: when
    /// given, only these are trusted.
    pub ca_file: Option<PathBuf>,
    /// Credentials for HTTP(S). Without them, user information in the URL
    /// (`https://user:token@host/...`) is used.
    pub basic_auth: Option<BasicAuth>,
    /// Private key for `ssh://` URLs (libgit2 listing).
    pub ssh_key_file: Option<PathBuf>,
    /// Largest `ls-refs` answer accepted, in bytes.
    pub max_answer_bytes: usize,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(20),
            deadline: Duration::from_secs(30),
            ca_file: None,
            basic_auth: None,
            ssh_key_file: None,
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }
}

/// A poll that did not produce an answer. Messages are one line and name
/// the URL without credentials.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The poller could not be set up (URL, CA file, HTTP client).
    #[error("polling {url}: {reason}")]
    Setup {
        /// The source, redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The ref name cannot be asked for.
    #[error("polling {url}: {name:?} is not a ref name to poll")]
    BadRefName {
        /// The source, redacted.
        url: String,
        /// The name, as given.
        name: String,
    },
    /// No answer in time.
    #[error("polling {url}: timed out after {after:.1?} waiting for {what}")]
    Timeout {
        /// The source, redacted.
        url: String,
        /// What was being waited for.
        what: &'static str,
        /// Time spent.
        after: Duration,
    },
    /// The TLS handshake failed (e.g. a certificate no trusted CA issued).
    #[error("polling {url}: TLS failed: {reason}")]
    Tls {
        /// The source, redacted.
        url: String,
        /// The TLS library's explanation.
        reason: String,
    },
    /// No connection (refused, unreachable, name not resolved).
    #[error("polling {url}: cannot connect: {reason}")]
    Connect {
        /// The source, redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection broke during the exchange.
    #[error("polling {url}: transfer failed: {reason}")]
    Transfer {
        /// The source, redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an HTTP error status.
    #[error("polling {url}: HTTP status {status}{hint}")]
    HttpStatus {
        /// The source, redacted.
        url: String,
        /// The status code.
        status: u16,
        /// A short explanation for common codes, starting with a space.
        hint: &'static str,
    },
    /// The answer is not a well-formed `ls-refs` answer.
    #[error("polling {url}: malformed answer: {reason}")]
    Malformed {
        /// The source, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The answer exceeds [`PollOptions::max_answer_bytes`].
    #[error("polling {url}: the answer exceeds {limit} bytes")]
    TooLarge {
        /// The source, redacted.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The server reported an error (an `ERR` packet).
    #[error("polling {url}: the server reported: {message}")]
    Server {
        /// The source, redacted.
        url: String,
        /// The server's message, one line.
        message: String,
    },
    /// libgit2's ref listing failed.
    #[error("polling {url}: listing refs with libgit2 failed: {reason}")]
    Fallback {
        /// The source, redacted.
        url: String,
        /// libgit2's message.
        reason: String,
    },
    /// An earlier libgit2 listing that overran the deadline still runs (a
    /// socket libgit2 is blocked on); no second one is started.
    #[error("polling {url}: an earlier ref listing has not finished")]
    Busy {
        /// The source, redacted.
        url: String,
    },
}

/// The HTTP side of a poller, built once.
#[derive(Debug)]
struct Http {
    client: reqwest::Client,
    endpoint: Url,
}

/// What the libgit2 listing needs.
#[derive(Debug, Clone)]
struct Git2Listing {
    /// The URL libgit2 connects to (HTTP user information removed).
    url: String,
    https: bool,
    ca_file: Option<PathBuf>,
    basic_auth: Option<BasicAuth>,
    ssh_key_file: Option<PathBuf>,
}

/// Polls refs of one repository. Build it once and keep it: it holds the
/// HTTP client (connection pool, TLS configuration, headers).
#[derive(Debug)]
pub struct RefPoller {
    redacted: String,
    http: Option<Http>,
    listing: Arc<Git2Listing>,
    options: PollOptions,
    /// Polls left that skip v2 (the server showed it lacks it).
    skip_v2: AtomicU32,
    /// Set while a libgit2 listing runs.
    listing_busy: Arc<AtomicBool>,
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
                let client = build_client(&options, basic_auth.as_ref()).map_err(setup)?;
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
            listing: Arc::new(listing),
            options,
            skip_v2: AtomicU32::new(0),
            listing_busy: Arc::new(AtomicBool::new(false)),
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
        let Some(http) = &self.http else {
            return self.list_with_git2(ref_name).await;
        };
        let skipped = self
            .skip_v2
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if skipped {
            return self.list_with_git2(ref_name).await;
        }
        match self.ls_ref_v2(http, ref_name).await? {
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
                tracing::info!(
                    "{} does not speak git protocol v2 ({why}); listing refs with libgit2 for the next {V2_RECHECK_POLLS} polls",
                    self.redacted
                );
                self.skip_v2.store(V2_RECHECK_POLLS, Ordering::SeqCst);
                self.list_with_git2(ref_name).await
            }
        }
    }

    /// One `ls-refs` request.
    async fn ls_ref_v2(&self, http: &Http, ref_name: &str) -> Result<V2, PollError> {
        let body = ls_refs_request(ref_name).map_err(|e| self.malformed(e.to_string()))?;
        let started = Instant::now();
        let mut response = match self.post_v2(http, body, started).await? {
            Ok(response) => response,
            Err(why) => return Ok(V2::NotSpoken(why)),
        };
        let limit = self.options.max_answer_bytes;
        let too_large = || PollError::TooLarge {
            url: self.redacted.clone(),
            limit,
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let capacity = declared.map_or(512, |n| usize::try_from(n).unwrap_or(limit));
        let mut answer = Vec::with_capacity(capacity.min(limit));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_error(e, started, "the rest of the answer"))?
        {
            if answer.len() + chunk.len() > limit {
                return Err(too_large());
            }
            answer.extend_from_slice(&chunk);
        }
        match parse_ls_refs(&answer, ref_name) {
            Ok(oid) => Ok(V2::Answer(RefAnswer {
                oid,
                protocol: Protocol::V2Http,
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

    /// Sends one protocol v2 command (a request body of pkt-lines) and
    /// returns the response once its status and content type show a smart
    /// HTTP answer; `Ok(Err(why))` when the server does not speak v2.
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

    /// Sends a protocol v2 command over HTTP(S) and streams the response
    /// body, chunk by chunk, to `each` (which returns false to stop).
    /// `Ok(Err(why))` when this source is not HTTP(S) or does not speak v2.
    pub async fn stream_command(
        &self,
        body: Vec<u8>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<Result<(), String>, PollError> {
        let Some(http) = &self.http else {
            return Ok(Err("not an HTTP(S) source".into()));
        };
        let started = Instant::now();
        let mut response = match self.post_v2(http, body, started).await? {
            Ok(response) => response,
            Err(why) => return Ok(Err(why)),
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_error(e, started, "the rest of the answer"))?
        {
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

    /// Lists the refs with libgit2 on a blocking thread, within the deadline.
    async fn list_with_git2(&self, ref_name: &str) -> Result<RefAnswer, PollError> {
        let url = self.redacted.clone();
        if self.listing_busy.swap(true, Ordering::SeqCst) {
            return Err(PollError::Busy { url });
        }
        let busy = BusyGuard(Arc::clone(&self.listing_busy));
        // The watcher starts libgit2 only when a listing needs it.
        crate::source::libgit::ensure_started();
        bound_libgit2_sockets(self.options.connect_timeout, self.options.io_timeout);
        let listing = Arc::clone(&self.listing);
        let wanted = ref_name.to_owned();
        let started = Instant::now();
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            listing.list(&wanted)
        });
        match tokio::time::timeout(self.options.deadline, task).await {
            Err(_) => Err(PollError::Timeout {
                url,
                what: "the libgit2 ref listing",
                after: started.elapsed(),
            }),
            Ok(Err(join)) => Err(PollError::Fallback {
                url,
                reason: format!("the listing thread failed: {join}"),
            }),
            Ok(Ok(Err(reason))) => Err(PollError::Fallback { url, reason }),
            Ok(Ok(Ok((oid, bytes_received)))) => {
                tracing::debug!(url = %self.redacted, ref_name, ?oid, "polled with libgit2");
                Ok(RefAnswer {
                    oid,
                    protocol: Protocol::Fallback,
                    bytes_received,
                })
            }
        }
    }
}

/// Clears the busy flag when the listing thread ends, however it ends.
struct BusyGuard(Arc<AtomicBool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Git2Listing {
    /// Connects, lists every ref, and picks `ref_name`; returns its oid and
    /// the estimated advertisement size. Blocking.
    fn list(&self, ref_name: &str) -> Result<(Option<String>, u64), String> {
        let message = |e: git2::Error| clean_message(e.message().as_bytes());
        if self.https {
            // libgit2's CA bundle is process-wide: the configured one, else
            // the system's (see crate::source::tls: libgit2 starts with none).
            let bundle = self
                .ca_file
                .clone()
                .or_else(crate::source::libgit::system_bundle);
            if let Some(bundle) = bundle {
                crate::source::fetch::use_ca_file(&bundle).map_err(|e| e.to_string())?;
            }
        }
        let mut remote = git2::Remote::create_detached(self.url.as_str()).map_err(message)?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut asked = 0u32;
        callbacks.credentials(move |_url, username, allowed| {
            asked += 1;
            if asked > 1 {
                return Err(git2::Error::from_str(
                    "the server refused the configured credentials",
                ));
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(auth) = &self.basic_auth {
                    return git2::Cred::userpass_plaintext(&auth.user, &auth.token);
                }
            }
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                if let Some(key) = &self.ssh_key_file {
                    return git2::Cred::ssh_key(username.unwrap_or("git"), None, key, None);
                }
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(username.unwrap_or("git"));
            }
            Err(git2::Error::from_str(
                "the server asked for credentials and none are configured",
            ))
        });
        let connection = remote
            .connect_auth(git2::Direction::Fetch, Some(callbacks), None)
            .map_err(message)?;
        let mut oid = None;
        let mut bytes = 0u64;
        for head in connection.list().map_err(message)? {
            let id = head.oid().to_string();
            bytes += (4 + id.len() + 1 + head.name().len() + 1) as u64;
            if head.name() == ref_name {
                oid = Some(id);
            }
        }
        Ok((oid, bytes))
    }
}

/// Builds the HTTP client: timeouts, no redirects (a redirected server is
/// left to libgit2), no proxy (as libgit2's fetch), the v2 headers, basic
/// auth (a sensitive header), and the CA file as the only trusted roots.
fn build_client(
    options: &PollOptions,
    auth: Option<&BasicAuth>,
) -> Result<reqwest::Client, String> {
    let mut headers = HeaderMap::new();
    headers.insert("git-protocol", HeaderValue::from_static("version=2"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(REQUEST_TYPE));
    headers.insert(ACCEPT, HeaderValue::from_static(RESULT_TYPE));
    if let Some(auth) = auth {
        use base64::Engine as _;
        let pair = format!("{}:{}", auth.user, auth.token);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| "the basic-auth credentials are not valid in a header".to_owned())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = crate::source::tls::client_builder()
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

/// An error and its sources, deduplicated, on one line, without the URL.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = clean_message(err.to_string().as_bytes());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() {
        "unknown error".to_owned()
    } else {
        parts.join(": ")
    }
}

/// Whether an error text is about TLS or certificates.
fn looks_like_tls(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["certificate", "tls", "ssl", "handshake"]
        .iter()
        .any(|word| lower.contains(word))
}

/// A few words on what common HTTP error codes mean for a poll.
fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (credentials missing or refused)",
        403 => " (access refused)",
        404 => " (no repository at this URL, or smart HTTP is disabled)",
        429 => " (rate limited)",
        500..=599 => " (server error)",
        _ => "",
    }
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

static LIBGIT2_TIMEOUTS: Once = Once::new();

/// Bounds libgit2's socket waits for the listing, unless something else
/// (the fetch) already set them: libgit2 keeps these process-wide and its
/// default is to wait forever.
#[allow(unsafe_code)]
fn bound_libgit2_sockets(connect: Duration, io: Duration) {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    LIBGIT2_TIMEOUTS.call_once(|| {
        // SAFETY: libgit2 documents these options as unsynchronised globals
        // (plain integers). They are written once, under `Once`, and only
        // when still unset, i.e. before any transfer configured them.
        unsafe {
            if git2::opts::get_server_connect_timeout_in_milliseconds() == Ok(0) {
                let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect));
            }
            if git2::opts::get_server_timeout_in_milliseconds() == Ok(0) {
                let _ = git2::opts::set_server_timeout_in_milliseconds(millis(io));
            }
        }
    });
}

/// A poller of the source, with its transport settings; `deadline` bounds
/// each request.
pub fn poller_for(
    root_path: &std::path::Path,
    config: &crate::config::AgentConfig,
    deadline: std::time::Duration,
) -> anyhow::Result<RefPoller> {
    let source = &config.source;
    let basic_auth = match &source.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file.under(root_path))
                .map_err(|e| anyhow::anyhow!("cannot read {file}: {}", e.kind()))?;
            Some(BasicAuth {
                user: source.token_user.clone(),
                token: text.trim().to_owned(),
            })
        }
        None => None,
    };
    let options = PollOptions {
        connect_timeout: config.fetch.connect_timeout.0,
        io_timeout: config.fetch.io_timeout.0,
        deadline,
        ca_file: source.ca_file.as_ref().map(|p| p.under(root_path)),
        basic_auth,
        ssh_key_file: source.ssh_key_file.as_ref().map(|p| p.under(root_path)),
        ..Default::default()
    };
    Ok(RefPoller::new(source.url.as_str(), options)?)
}

#[cfg(test)]
mod tests {
    use super::pkt::{Packet, PktError, Reader};
    use super::*;

    const OID_A: &str = "1111111111111111111111111111111111111111";
    const OID_B: &str = "2222222222222222222222222222222222222222";
    const OID_256: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn packets(input: &[u8]) -> Result<Vec<Packet<'_>>, PktError> {
        let mut reader = Reader::new(input);
        let mut out = Vec::new();
        while let Some(packet) = reader.next_packet()? {
            out.push(packet);
        }
        Ok(out)
    }

    /// A well-formed answer made of `lines`, a flush, and `tail`.
    fn answer(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            pkt::write_data(&mut out, &[line.as_bytes(), b"\n"]).expect("fits");
        }
        pkt::write_flush(&mut out);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn pkt_lines_decode() {
        assert_eq!(
            packets(b"0006a\n0005a000bfoobar\n000400000001000200").expect_err("trailing"),
            PktError::Truncated { at: 38 }
        );
        assert_eq!(
            packets(b"0006a\n0005a000bfoobar\n0004000000010002").expect("valid"),
            vec![
                Packet::Data(b"a\n"),
                Packet::Data(b"a"),
                Packet::Data(b"foobar\n"),
                Packet::Data(b""),
                Packet::Flush,
                Packet::Delim,
                Packet::ResponseEnd,
            ]
        );
        assert_eq!(packets(b"").expect("empty"), vec![]);
        assert_eq!(
            packets(b"000AABCDEF").expect("upper hex"),
            vec![Packet::Data(b"ABCDEF")]
        );
        assert_eq!(pkt::text(b"x\n"), b"x");
        assert_eq!(pkt::text(b"x"), b"x");
    }

    #[test]
    fn malformed_pkt_lines_are_refused() {
        for (input, error) in [
            (&b"000"[..], PktError::Truncated { at: 0 }),
            (b"0009abc", PktError::Truncated { at: 0 }),
            (b"0005a0", PktError::Truncated { at: 5 }),
            (
                b"00x5a",
                PktError::BadLength {
                    at: 0,
                    text: "00x5".to_owned(),
                },
            ),
            (
                b"-001",
                PktError::BadLength {
                    at: 0,
                    text: "-001".to_owned(),
                },
            ),
            (
                b" 005a",
                PktError::BadLength {
                    at: 0,
                    text: " 005".to_owned(),
                },
            ),
            (b"0003", PktError::Reserved { at: 0, len: 3 }),
            (b"fff1", PktError::TooLong { at: 0, len: 65521 }),
            (b"ffff", PktError::TooLong { at: 0, len: 65535 }),
        ] {
            assert_eq!(packets(input).expect_err("malformed"), error, "{input:?}");
        }
        // The longest legal packet is fine.
        let mut big = b"fff0".to_vec();
        big.resize(65520, b'x');
        assert_eq!(packets(&big).expect("65520 bytes").len(), 1);
    }

    #[test]
    fn pkt_lines_encode() {
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[b"a\n"]).expect("fits");
        pkt::write_data(&mut out, &[b"foo", b"bar\n"]).expect("fits");
        pkt::write_delim(&mut out);
        pkt::write_flush(&mut out);
        pkt::write_response_end(&mut out);
        assert_eq!(out, b"0006a\n000bfoobar\n000100000002");
        let payload = vec![b'x'; pkt::MAX_PAYLOAD];
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[&payload]).expect("the largest payload fits");
        assert_eq!(&out[..4], b"fff0");
        assert_eq!(
            pkt::write_data(&mut out, &[&payload, b"y"]),
            Err(PktError::PayloadTooLong { len: 65517 })
        );
    }

    #[test]
    fn the_request_asks_for_exactly_one_prefix() {
        let body = ls_refs_request("refs/heads/channel").expect("fits");
        let expected = format!(
            "0014command=ls-refs\n{:04x}agent={AGENT}\n00010022ref-prefix refs/heads/channel\n0000",
            AGENT.len() + 11
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
        assert_eq!(packets(&body).expect("valid").last(), Some(&Packet::Flush));
        assert!(ls_refs_request(&"x".repeat(70_000)).is_err());
    }

    #[test]
    fn answers_are_parsed() {
        let body = answer(
            &[
                &format!("{OID_A} refs/heads/channel"),
                &format!("{OID_B} refs/heads/channel-old"),
            ],
            b"",
        );
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Ok(Some(OID_A.to_owned()))
        );
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel-old"),
            Ok(Some(OID_B.to_owned()))
        );
        assert_eq!(parse_ls_refs(&body, "refs/heads/chan"), Ok(None));
        // Nothing under the prefix: just a flush.
        assert_eq!(parse_ls_refs(b"0000", "refs/heads/channel"), Ok(None));
        // A response-end packet may follow; attributes, SHA-256 and a
        // missing LF are fine.
        let mut body = Vec::new();
        pkt::write_data(
            &mut body,
            &[format!("{OID_256} refs/tags/v1 peeled:{OID_256} symref-target:refs/x").as_bytes()],
        )
        .expect("fits");
        pkt::write_flush(&mut body);
        pkt::write_response_end(&mut body);
        assert_eq!(
            parse_ls_refs(&body, "refs/tags/v1"),
            Ok(Some(OID_256.to_owned()))
        );
        // An unborn HEAD is no object.
        let body = answer(&["unborn HEAD symref-target:refs/heads/main"], b"");
        assert_eq!(parse_ls_refs(&body, "HEAD"), Ok(None));
    }

    #[test]
    fn an_err_packet_is_the_servers_message() {
        let mut body = Vec::new();
        pkt::write_data(&mut body, &[b"ERR access denied\n"]).expect("fits");
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Err(AnswerError::Server("access denied".to_owned()))
        );
        // Also after some refs, and with control characters scrubbed.
        let mut body = answer(&[], b"");
        body.clear();
        pkt::write_data(
            &mut body,
            &[format!("{OID_A} refs/heads/channel\n").as_bytes()],
        )
        .expect("fits");
        pkt::write_data(&mut body, &[b"ERR two\nlines\x1b[31m"]).expect("fits");
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Err(AnswerError::Server("two lines [31m".to_owned()))
        );
    }

    #[test]
    fn v0_answers_are_recognised() {
        assert!(matches!(
            parse_ls_refs(b"", "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let smart = b"001e# service=git-upload-pack\n0000";
        assert!(matches!(
            parse_ls_refs(smart, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let mut v0 = Vec::new();
        pkt::write_data(
            &mut v0,
            &[format!("{OID_A} HEAD\0multi_ack side-band-64k\n").as_bytes()],
        )
        .expect("fits");
        pkt::write_flush(&mut v0);
        assert!(matches!(
            parse_ls_refs(&v0, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let v1 = answer(&["version 1"], b"");
        assert!(matches!(
            parse_ls_refs(&v1, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
    }

    #[test]
    fn malformed_answers_are_refused() {
        let r = "refs/heads/channel";
        let line = format!("{OID_A} {r}");
        let full = answer(&[&line], b"");
        // Truncated anywhere before the flush.
        for cut in 1..full.len() {
            let result = parse_ls_refs(&full[..cut], r);
            assert!(
                matches!(
                    result,
                    Err(AnswerError::Pkt(PktError::Truncated { .. }) | AnswerError::MissingFlush)
                ),
                "cut at {cut}: {result:?}"
            );
        }
        for (lines, tail, what) in [
            (vec![line.as_str()], &b"0005x"[..], "data after the flush"),
            (vec![line.as_str()], b"0001", "a delimiter after the flush"),
            (
                vec![line.as_str()],
                b"00020000",
                "data after the response end",
            ),
            (vec![line.as_str(), line.as_str()], b"", "a duplicate"),
            (vec![OID_A], b"", "no ref name"),
            (vec!["1111 refs/heads/channel"], b"", "a short oid"),
            (
                vec!["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA refs/heads/channel"],
                b"",
                "an uppercase oid",
            ),
            (
                vec!["gggggggggggggggggggggggggggggggggggggggg refs/heads/channel"],
                b"",
                "a non-hex oid",
            ),
            (
                vec!["1111111111111111111111111111111111111111  refs/heads/channel"],
                b"",
                "an empty ref name",
            ),
            (
                vec!["1111111111111111111111111111111111111111 refs/heads/channel peeled:xyz"],
                b"",
                "a bad attribute",
            ),
            (
                vec!["1111111111111111111111111111111111111111 refs/heads/channel wat"],
                b"",
                "an unknown attribute",
            ),
        ] {
            let body = answer(&lines, tail);
            let result = parse_ls_refs(&body, r);
            assert!(
                result.is_err() && !matches!(result, Err(AnswerError::NotV2(_))),
                "{what}: {result:?}"
            );
        }
        // A delimiter inside the list.
        let mut body = Vec::new();
        pkt::write_data(&mut body, &[line.as_bytes()]).expect("fits");
        pkt::write_delim(&mut body);
        pkt::write_flush(&mut body);
        assert!(matches!(
            parse_ls_refs(&body, r),
            Err(AnswerError::BadLine { line: 2, .. })
        ));
        // A bad length in the middle.
        let mut body = answer(&[&line], b"");
        body.splice(0..0, *b"zzzz");
        assert!(matches!(
            parse_ls_refs(&body, r),
            Err(AnswerError::Pkt(PktError::BadLength { .. }))
        ));
    }

    #[test]
    fn urls_are_redacted() {
        for (url, redacted) in [
            (
                "https://user:secret@git.example.com/fleet/r.git",
                "https://git.example.com/fleet/r.git",
            ),
            (
                "https://tok@en@git.example.com:8443/r.git?private_token=x#f",
                "https://git.example.com:8443/r.git",
            ),
            ("https://git.example.com", "https://git.example.com"),
            ("ssh://git@host/r.git", "ssh://host/r.git"),
            ("git@host:fleet/r.git", "host:fleet/r.git"),
            ("file:///srv/r.git", "file:///srv/r.git"),
            ("http://a\nb@c/d", "http://c/d"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

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

    #[test]
    fn object_ids() {
        assert!(is_object_id(OID_A.as_bytes()));
        assert!(is_object_id(OID_256.as_bytes()));
        assert!(!is_object_id(&OID_256.as_bytes()[..63]));
        assert!(!is_object_id(b""));
        assert!(!is_object_id(b"unborn"));
    }

    #[test]
    fn error_messages_are_one_line() {
        let err = PollError::Server {
            url: "https://h/r".to_owned(),
            message: clean_message(b"a\nb\r\nc"),
        };
        assert_eq!(
            err.to_string(),
            "polling https://h/r: the server reported: a b  c"
        );
        let long = clean_message(&[b'x'; 1000]);
        assert_eq!(long.chars().count(), MAX_MESSAGE + 1);
    }
}
