//! TLS for driftless's own HTTP clients: channel polls, replacement
//! webhooks, health checks.
//!
//! They use rustls with ring (the crate that already checks every
//! signature), not OpenSSL: OpenSSL's initialisation and its parsed CA
//! store cost the long-running watcher about 4 MiB of resident memory, and
//! the watcher keeps an HTTP client for its whole life. libgit2 still uses
//! OpenSSL for its own HTTPS fetches, which run once at boot or in a
//! short-lived child process (see `watch`). Trusted roots are the
//! configured CA file when there is one, else the system's bundle, which
//! reqwest's platform verifier reads when a client is built: a few
//! milliseconds of CPU, paid by every evaluation child and every apply.
//! A client whose URLs are all plain `http://` (or `git://`) never speaks
//! TLS, so it trusts no root and the bundle is not read ([`plain_only`]).

use std::sync::Once;

/// A builder for an async HTTP client, with rustls's provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    #[allow(clippy::disallowed_methods)]
    reqwest::Client::builder()
}

/// A builder for a blocking HTTP client, with rustls's provider installed.
pub fn blocking_client_builder() -> reqwest::blocking::ClientBuilder {
    install_provider();
    #[allow(clippy::disallowed_methods)]
    reqwest::blocking::Client::builder()
}

/// Whether a client for `urls` may need TLS: one of them is not plain
/// `http://` (nor `git://`, which a reqwest client never fetches).
pub fn needs_tls<'a>(urls: impl IntoIterator<Item = &'a str>) -> bool {
    urls.into_iter().any(|url| {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("git")
    })
}

/// Makes an async client trust no root when none of `urls` needs TLS
/// ([`needs_tls`]): building it then does not read the system's bundle.
/// Every client here follows no redirect, so no request of such a client
/// reaches TLS; one that did could verify no certificate.
pub fn plain_only<'a>(
    builder: reqwest::ClientBuilder,
    urls: impl IntoIterator<Item = &'a str>,
) -> reqwest::ClientBuilder {
    if needs_tls(urls) {
        builder
    } else {
        builder.tls_certs_only(Vec::new())
    }
}

/// [`plain_only`] for a blocking client.
pub fn blocking_plain_only<'a>(
    builder: reqwest::blocking::ClientBuilder,
    urls: impl IntoIterator<Item = &'a str>,
) -> reqwest::blocking::ClientBuilder {
    if needs_tls(urls) {
        builder
    } else {
        builder.tls_certs_only(Vec::new())
    }
}

/// Makes ring rustls's process-wide crypto provider, once.
fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_that_are_all_plain_http_or_git_go_without_roots() {
        assert!(!needs_tls([
            "http://a/r.git",
            "HTTP://b:8080/",
            "git://c/r"
        ]));
        assert!(!needs_tls(std::iter::empty::<&str>()));
        for tls in [
            "https://a/r.git",
            "HTTPS://a",
            "ssh://a/r",
            "127.0.0.1:2379",
            "",
        ] {
            assert!(needs_tls(["http://a/", tls]), "{tls:?}");
        }
    }
}
