//! How a poll fails, in words safe to log: [`PollError`], server text
//! cleaned to one line, URLs without their credentials, and a few words on
//! common HTTP codes. Apart from the client so that the answer parser and
//! the libgit2 listing share them without depending on the HTTP side.

use std::time::Duration;

use reqwest::StatusCode;

use crate::source::permanent;

/// Longest server error text (`ERR` packet) kept in a [`PollError`].
const MAX_MESSAGE: usize = 300;

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
    #[error("polling {url}: HTTP status {status}{hint}{}", clause(permanent::http_status(*status)))]
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
    /// The answer exceeds [`PollOptions::max_answer_bytes`](super::PollOptions::max_answer_bytes).
    #[error("polling {url}: the answer exceeds {limit} bytes")]
    TooLarge {
        /// The source, redacted.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The server reported an error (an `ERR` packet).
    #[error(
        "polling {url}: the server reported: {message}{}",
        clause(permanent::server_message(message))
    )]
    Server {
        /// The source, redacted.
        url: String,
        /// The server's message, one line.
        message: String,
    },
    /// libgit2's ref listing failed.
    #[error("polling {url}: listing refs with libgit2 failed: {reason}{}", clause(*hint))]
    Fallback {
        /// The source, redacted.
        url: String,
        /// libgit2's message.
        reason: String,
        /// The setting to check when retrying cannot help.
        hint: Option<&'static str>,
    },
    /// An earlier libgit2 listing that overran the deadline still runs (a
    /// socket libgit2 is blocked on); no second one is started.
    #[error("polling {url}: an earlier ref listing has not finished")]
    Busy {
        /// The source, redacted.
        url: String,
    },
}

impl PollError {
    /// The setting to check when another attempt cannot help (see
    /// [`crate::source::permanent`]); `None` when one may.
    pub fn permanent(&self) -> Option<&'static str> {
        match self {
            PollError::Setup { reason, .. } if reason.contains("CA file") => {
                Some(permanent::CHECK_CA)
            }
            PollError::Setup { .. } => Some(permanent::CHECK_URL),
            PollError::BadRefName { .. } => Some("check release.tag and channel.reference"),
            PollError::Tls { .. } => Some(permanent::CHECK_CA),
            PollError::HttpStatus { status, .. } => permanent::http_status(*status),
            PollError::Server { message, .. } => permanent::server_message(message),
            PollError::Fallback { hint, .. } => *hint,
            PollError::Timeout { .. }
            | PollError::Connect { .. }
            | PollError::Transfer { .. }
            | PollError::Malformed { .. }
            | PollError::TooLarge { .. }
            | PollError::Busy { .. } => None,
        }
    }
}

/// `; HINT` for a message, or nothing.
fn clause(hint: Option<&'static str>) -> String {
    hint.map(|h| format!("; {h}")).unwrap_or_default()
}

/// One line of printable text, at most [`MAX_MESSAGE`] characters.
pub(super) fn clean_message(text: &[u8]) -> String {
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

/// An error and its sources, deduplicated, on one line, without the URL.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn looks_like_tls(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["certificate", "tls", "ssl", "handshake"]
        .iter()
        .any(|word| lower.contains(word))
}

/// A few words on what common HTTP error codes mean for a poll.
pub(super) fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (credentials missing or refused)",
        403 => " (access refused)",
        404 => " (no repository at this URL, or smart HTTP is disabled)",
        429 => " (rate limited)",
        500..=599 => " (server error)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
