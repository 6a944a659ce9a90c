//! The origin a source's credentials belong to.
//!
//! A token (`source.token_file`, or user information in `source.url`) is
//! for the scheme, host and port of `source.url` alone. driftless's own
//! HTTP clients (the streamed fetch and the poll, reqwest) follow no
//! redirect at all: a redirect ends their attempt and libgit2 takes over.
//! libgit2 does follow: to any host on its first request of a fetch (its
//! default), and to another port or scheme of the same host on any (it
//! compares host names only). When the server it was sent to asks for
//! credentials, libgit2 asks driftless's callback for them with that
//! server's URL; the callback answers only when the URL is of the
//! configured origin ([`check`]) and refuses otherwise, which fails the
//! fetch at once (retrying would meet the same redirect).

use reqwest::Url;

/// Why credentials were refused to a server: the message of the error the
/// credential callback returns to libgit2 (an authentication error, so
/// not retried).
pub fn refusal(configured: &str, asking: &str) -> String {
    format!(
        "{} asked for the source's credentials after a redirect; they are sent only to \
         source.url's origin {}",
        without_secrets(asking),
        origin_text(configured)
    )
}

/// Whether credentials configured for `configured` may be given to a
/// server at `asking`: same scheme, host and port (the default port of the
/// scheme when none is written). Anything that does not parse as a URL is
/// no match.
pub fn same_origin(configured: &str, asking: &str) -> bool {
    match (Url::parse(configured), Url::parse(asking)) {
        (Ok(a), Ok(b)) => origin_of(&a) == origin_of(&b) && origin_of(&a).1.is_some(),
        _ => false,
    }
}

/// `Ok` when credentials for `configured` may go to `asking`; else the
/// libgit2 error the credential callback returns.
pub fn check(configured: &str, asking: &str) -> Result<(), git2::Error> {
    if same_origin(configured, asking) {
        return Ok(());
    }
    Err(git2::Error::new(
        git2::ErrorCode::Auth,
        git2::ErrorClass::Http,
        refusal(configured, asking),
    ))
}

/// Scheme, lowercase host and port of a URL.
fn origin_of(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_ascii_lowercase(),
        url.host_str().map(str::to_ascii_lowercase),
        url.port_or_known_default(),
    )
}

/// `scheme://host[:port]` of a URL, for messages.
fn origin_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let mut text = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
            if let Some(port) = u.port() {
                text.push_str(&format!(":{port}"));
            }
            text
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// A URL without user information, query or fragment, for messages.
fn without_secrets(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_origin_matches() {
        let configured = "http://git.example.com/fleet/release.git";
        for same in [
            "http://git.example.com/fleet/release.git/info/refs?service=git-upload-pack",
            "http://GIT.example.com:80/elsewhere.git",
            "http://user:pw@git.example.com/x",
        ] {
            assert!(same_origin(configured, same), "{same}");
            assert!(check(configured, same).is_ok());
        }
        for other in [
            "http://git.example.com:8080/fleet/release.git",
            "https://git.example.com/fleet/release.git",
            "http://git.example.org/fleet/release.git",
            "http://evil.example/git.example.com/",
            "git@git.example.com:fleet/release.git",
            "",
        ] {
            assert!(!same_origin(configured, other), "{other}");
        }
        assert!(!same_origin("file:///srv/r.git", "file:///srv/r.git"));
        let err = check(
            "http://127.0.0.1:8000/r.git",
            "http://u:secret@127.0.0.1:9000/r.git",
        )
        .expect_err("another port");
        assert_eq!(err.code(), git2::ErrorCode::Auth);
        assert_eq!(
            err.message(),
            "http://127.0.0.1:9000/r.git asked for the source's credentials after a redirect; \
             they are sent only to source.url's origin http://127.0.0.1:8000"
        );
    }
}
