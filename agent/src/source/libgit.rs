//! Starting libgit2 the way a small agent needs it.
//!
//! When libgit2 starts (on the first use of git2, even just to read a local
//! repository) it builds its OpenSSL context and eagerly parses the whole
//! system CA bundle: about 100 ms with OpenSSL 3, more than the rest of a
//! `driftless verify` a hundred times over, and paid again by every agent
//! start at boot. So driftless starts libgit2 with an empty bundle and hands
//! it the CAs only when an HTTPS fetch actually needs them.
//!
//! libgit2 also maps pack files in windows of up to 1 GiB and keeps up to
//! 8 GiB mapped, so reading a release's blobs kept the whole pack resident
//! (mapped pages count in the resident set). Small windows keep the agent's
//! peak memory below `git clone`'s (measured by `cargo bench --bench apply`).

use std::path::PathBuf;
use std::sync::{Once, OnceLock};

const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// The CA bundle that was in effect before libgit2 started.
static SYSTEM_BUNDLE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Pack windows: 256 KiB each, at most 512 KiB mapped.
const MWINDOW_SIZE: usize = 256 * 1024;
const MWINDOW_MAPPED_LIMIT: usize = 512 * 1024;

/// Set once libgit2 has started, by either way.
static STARTED: Once = Once::new();

/// Starts libgit2 without loading any CA, with small pack windows. Call
/// first thing in `main`, while the process has a single thread.
pub fn start() {
    STARTED.call_once(start_without_cas);
}

/// Starts libgit2 late, from any thread, in a process that did not need it
/// at first (the watcher, whose HTTP polls do without it, and which needs
/// it only to list refs over other transports). The empty-bundle trick
/// needs a single thread, so here libgit2 parses the system CA bundle once.
#[allow(unsafe_code)]
pub fn ensure_started() {
    STARTED.call_once(|| {
        // The environment is untouched here, so `system_bundle` finds the
        // bundle itself when an HTTPS fetch asks.
        let _ = git2::Config::new();
        // SAFETY: inside `call_once`, before anything in this process has
        // used libgit2 (every use starts it first, through here or `start`).
        unsafe { set_small_windows() };
    });
}

/// libgit2's pack windows: small, so a pack is never resident as a whole.
///
/// # Safety
/// No other libgit2 call may run at the same time.
#[allow(unsafe_code)]
unsafe fn set_small_windows() {
    // SAFETY: the caller guarantees no concurrent libgit2 use.
    unsafe {
        let _ = git2::opts::set_mwindow_size(MWINDOW_SIZE);
        let _ = git2::opts::set_mwindow_mapped_limit(MWINDOW_MAPPED_LIMIT);
    }
}

#[allow(unsafe_code)]
fn start_without_cas() {
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
    // SAFETY: libgit2 globals, set once before any thread or repository exists.
    unsafe { set_small_windows() };
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
