//! The libgit2 listing: where protocol v2 is not available (`git://`,
//! `ssh://` and `file://` sources, or an HTTP server that ignores
//! `Git-Protocol: version=2`), the refs come from one v0 advertisement,
//! listed by libgit2 on a blocking thread within the poll's deadline.
//! Apart from the HTTP client because it drives libgit2's process-wide
//! state (CA bundle, socket timeouts) and its own thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::{PollError, clean_message};
use super::options::BasicAuth;
use super::{Protocol, RefAnswer, RefPoller};

/// What the libgit2 listing needs.
#[derive(Debug, Clone)]
pub(super) struct Git2Listing {
    /// The URL libgit2 connects to (HTTP user information removed).
    pub(super) url: String,
    pub(super) https: bool,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) basic_auth: Option<BasicAuth>,
    pub(super) ssh_key_file: Option<PathBuf>,
}

impl RefPoller {
    /// Lists the refs with libgit2 on a blocking thread, within the deadline.
    pub(super) async fn list_with_git2(&self, ref_name: &str) -> Result<RefAnswer, PollError> {
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
                hint: None,
            }),
            Ok(Ok(Err((reason, hint)))) => Err(PollError::Fallback { url, reason, hint }),
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

/// Why a listing failed, and the setting to check when retrying cannot help.
type ListingError = (String, Option<&'static str>);

impl Git2Listing {
    /// Connects, lists every ref, and picks `ref_name`; returns its oid and
    /// the estimated advertisement size. Blocking. An error comes with the
    /// setting to check when retrying cannot help.
    fn list(&self, ref_name: &str) -> Result<(Option<String>, u64), ListingError> {
        let message = |e: git2::Error| {
            let hint = crate::source::permanent::libgit2(&e);
            let said = crate::source::permanent::sha256_through_libgit2(e.message(), &self.url);
            let reason = said.unwrap_or_else(|| clean_message(e.message().as_bytes()));
            (reason, hint)
        };
        if self.https {
            // libgit2's CA bundle is process-wide: the configured one, else
            // the system's (see crate::source::tls: libgit2 starts with none).
            let bundle = self
                .ca_file
                .clone()
                .or_else(crate::source::libgit::system_bundle);
            if let Some(bundle) = bundle {
                crate::source::fetch::use_ca_file(&bundle)
                    .map_err(|e| (e.to_string(), Some(crate::source::permanent::CHECK_CA)))?;
            }
        }
        let mut remote = git2::Remote::create_detached(self.url.as_str()).map_err(message)?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut asked = 0u32;
        callbacks.credentials(move |url, username, allowed| {
            asked += 1;
            if asked > 1 {
                return Err(crate::source::fetch::auth_error(
                    "the server refused the configured credentials",
                ));
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(auth) = &self.basic_auth {
                    // `url` is where libgit2 is now: after a redirect, maybe elsewhere.
                    crate::source::origin::check(&self.url, url)?;
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
            Err(crate::source::fetch::auth_error(
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
