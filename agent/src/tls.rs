//! When libgit2 starts (on the first use of git2, even just to read a local
//! repository) it builds its OpenSSL context and eagerly parses the whole
//! system CA bundle: about 100 ms with OpenSSL 3, more than the rest of a
//! `driftless verify` a hundred times over, and paid again by every agent
//! start at boot. So driftless starts libgit2 with an empty bundle and hands
//! it the CAs only when an HTTPS fetch actually needs them.

use std::path::PathBuf;
use std::sync::OnceLock;

const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// The CA bundle that was in effect before libgit2 started.
static SYSTEM_BUNDLE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Starts libgit2 without loading any CA. Call once, first thing in `main`,
/// while the process has a single thread.
#[allow(unsafe_code)]
pub fn start_git_without_cas() {
    let original = std::env::var_os(CERT_FILE_VAR);
    let bundle = original
        .clone()
        .map(PathBuf::from)
        .or_else(|| openssl_probe::probe().cert_file);
    let _ = SYSTEM_BUNDLE.set(bundle);
    // SAFETY: called at the top of `main`, before any other thread exists,
    // so nothing can read the environment concurrently.
    unsafe { std::env::set_var(CERT_FILE_VAR, "/dev/null") };
    // Creating a config initialises libgit2 (and its OpenSSL context), once.
    let _ = git2::Config::new();
    // SAFETY: as above; still single-threaded.
    unsafe {
        match original {
            Some(value) => std::env::set_var(CERT_FILE_VAR, value),
            None => std::env::remove_var(CERT_FILE_VAR),
        }
    }
}

/// The system CA bundle, for HTTPS fetches without a configured `ca_file`.
pub fn system_bundle() -> Option<PathBuf> {
    SYSTEM_BUNDLE
        .get_or_init(|| {
            std::env::var_os(CERT_FILE_VAR)
                .map(PathBuf::from)
                .or_else(|| openssl_probe::probe().cert_file)
        })
        .clone()
}
