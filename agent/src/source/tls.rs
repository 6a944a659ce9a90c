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
//! reqwest's platform verifier reads when a client is built (a few
//! milliseconds of CPU, also for a client that only ever speaks plain
//! HTTP).

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

/// Makes ring rustls's process-wide crypto provider, once.
fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
