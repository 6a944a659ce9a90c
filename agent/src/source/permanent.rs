//! Which failures of a fetch or a poll retrying cannot mend, and which
//! setting to check for each: a wrong `source.url` (HTTP 404, git daemon's
//! "repository not exported") used to be retried until the fetch deadline
//! (minutes, at first boot). A fetch gives up at once on these, with the
//! hint; what can heal is retried: a refused or timed-out connection, a
//! server error (5xx), a timeout (408), a rate limit (429), a broken
//! transfer.
//!
//! Each function answers `Some(hint)` for a permanent failure, `None` for
//! one worth retrying.

/// The hint for a URL that names no repository.
pub const CHECK_URL: &str = "check source.url";
/// The hint for credentials the server refused or asked for.
pub const CHECK_CREDENTIALS: &str =
    "check source.token_file and source.token_user, or source.ssh_key_file";
/// The hint for a server certificate no trusted CA issued.
pub const CHECK_CA: &str = "check source.ca_file";
/// The hint for an SSH host key the node does not know.
pub const CHECK_HOST_KEY: &str = "check source.ssh_known_hosts";

/// The hint for a SHA-256 repository on a transport that goes through
/// libgit2 (which has no SHA-256).
pub const SERVE_SMART_HTTP: &str = "a SHA-256 release is fetched only by the streamed first boot over smart HTTP(S) with git protocol v2 (not into a cache, not for the channel)";

/// libgit2's refusal of a SHA-256 repository, said as what failed and
/// where; `None` for any other error. libgit2 learns the format from the
/// remote's capabilities (`object-format=sha256`) or the repository's
/// config (`extensions.objectFormat`), and names it in its message.
pub fn sha256_through_libgit2(message: &str, url: &str) -> Option<String> {
    if !(message.contains("object format") && message.contains("sha256")) {
        return None;
    }
    let transport = match url.split_once("://") {
        // Over HTTP(S) libgit2 fetches the channel, into a cache, and from
        // a server without protocol v2.
        Some((scheme @ ("http" | "https"), _)) => format!("this fetch over {scheme}:// goes"),
        Some((scheme, _)) => format!("driftless fetches {scheme}://"),
        None => "this fetch goes".to_owned(),
    };
    Some(format!(
        "the repository is SHA-256, and {transport} through libgit2, which cannot read SHA-256"
    ))
}

/// An HTTP status: client errors are permanent, but for a timeout (408)
/// and a rate limit (429).
pub fn http_status(status: u16) -> Option<&'static str> {
    match status {
        401 | 403 | 407 => Some(CHECK_CREDENTIALS),
        408 | 429 => None,
        400..=499 => Some(CHECK_URL),
        _ => None,
    }
}

/// A git server's own error text (an `ERR` packet): a repository that is
/// missing or not exported is permanent; anything else may pass.
pub fn server_message(text: &str) -> Option<&'static str> {
    let text = text.to_ascii_lowercase();
    [
        "not exported",
        "no such repository",
        "repository not found",
        "not found",
        "does not appear to be a git repository",
        "does not exist",
    ]
    .iter()
    .any(|needle| text.contains(needle))
    .then_some(CHECK_URL)
}

/// A libgit2 error.
pub fn libgit2(e: &git2::Error) -> Option<&'static str> {
    let message = e.message();
    if sha256_through_libgit2(message, "").is_some() {
        return Some(SERVE_SMART_HTTP);
    }
    if message.contains("source.ssh_known_hosts") {
        return Some(CHECK_HOST_KEY);
    }
    if e.class() == git2::ErrorClass::Ssl || e.code() == git2::ErrorCode::Certificate {
        return Some(CHECK_CA);
    }
    if e.code() == git2::ErrorCode::Auth {
        // A redirect to another origin that asked for the token: the URL
        // is what is wrong (see crate::source::origin).
        if message.contains("after a redirect") {
            return Some(CHECK_URL);
        }
        return Some(CHECK_CREDENTIALS);
    }
    if let Some(status) = message
        .strip_prefix("unexpected http status code: ")
        .and_then(|code| code.trim().parse::<u16>().ok())
    {
        return http_status(status);
    }
    if let Some(text) = message.strip_prefix("remote error: ") {
        return server_message(text);
    }
    // A scheme libgit2 has no transport for, or a path that is no repository.
    let wrong_url = [
        "unsupported URL protocol",
        "cannot redirect from",
        "could not find repository",
    ];
    wrong_url
        .iter()
        .any(|needle| message.contains(needle))
        .then_some(CHECK_URL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sha256_repository_through_libgit2_is_said_plainly() {
        let said = |m: &str, url: &str| sha256_through_libgit2(m, url);
        assert_eq!(
            said("unknown remote object format 'sha256'", "git://h/r.git").as_deref(),
            Some(
                "the repository is SHA-256, and driftless fetches git:// through libgit2, which cannot read SHA-256"
            )
        );
        let https = said("unknown object format 'sha256'", "https://h/r.git");
        assert!(https.is_some_and(|s| s.contains("this fetch over https:// goes through libgit2")));
        assert_eq!(said("unknown object format 'md5'", "file:///r"), None);
        assert_eq!(said("could not find repository", "file:///r"), None);
    }

    #[test]
    fn what_heals_is_retried() {
        for status in [404, 410, 400, 405, 422] {
            assert_eq!(http_status(status), Some(CHECK_URL), "{status}");
        }
        assert_eq!(http_status(401), Some(CHECK_CREDENTIALS));
        assert_eq!(http_status(403), Some(CHECK_CREDENTIALS));
        for status in [408, 429, 500, 502, 503, 504, 200, 302] {
            assert_eq!(http_status(status), None, "{status}");
        }
        for text in [
            "access denied or repository not exported: /release.git",
            "no such repository: /nope.git",
            "Repository not found.",
            "'/srv/x.git' does not appear to be a git repository",
        ] {
            assert_eq!(server_message(text), Some(CHECK_URL), "{text}");
        }
        for text in [
            "upload-pack: not our ref",
            "too many connections, try later",
        ] {
            assert_eq!(server_message(text), None, "{text}");
        }
    }

    #[test]
    fn libgit2_errors_are_read_by_class_code_and_text() {
        use git2::{Error, ErrorClass, ErrorCode};
        let http = |m: &str| Error::new(ErrorCode::GenericError, ErrorClass::Http, m);
        assert_eq!(
            libgit2(&http("unexpected http status code: 404")),
            Some(CHECK_URL)
        );
        assert_eq!(libgit2(&http("unexpected http status code: 503")), None);
        let net = |m: &str| Error::new(ErrorCode::GenericError, ErrorClass::Net, m);
        assert_eq!(
            libgit2(&net(
                "remote error: access denied or repository not exported: /r.git"
            )),
            Some(CHECK_URL)
        );
        assert_eq!(
            libgit2(&net("failed to connect to 127.0.0.1: Connection refused")),
            None
        );
        assert_eq!(libgit2(&net("early EOF")), None);
        let auth = |m: &str| Error::new(ErrorCode::Auth, ErrorClass::Http, m);
        assert_eq!(
            libgit2(&auth("too many redirects or authentication replays")),
            Some(CHECK_CREDENTIALS)
        );
        assert_eq!(
            libgit2(&auth(
                "http://h:2/r asked for the source's credentials after a redirect; …"
            )),
            Some(CHECK_URL)
        );
        let ssl = Error::new(
            ErrorCode::GenericError,
            ErrorClass::Ssl,
            "certificate verify failed",
        );
        assert_eq!(libgit2(&ssl), Some(CHECK_CA));
        let host = Error::new(
            ErrorCode::Certificate,
            ErrorClass::Callback,
            "host key of h is not in source.ssh_known_hosts",
        );
        assert_eq!(libgit2(&host), Some(CHECK_HOST_KEY));
        let scheme = Error::new(
            ErrorCode::GenericError,
            ErrorClass::Net,
            "unsupported URL protocol",
        );
        assert_eq!(libgit2(&scheme), Some(CHECK_URL));
    }
}
