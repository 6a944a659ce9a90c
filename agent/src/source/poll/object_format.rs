//! The object format of the polled repository, learned from the server:
//! SHA-1 until an `ls-refs` in SHA-1 finds no answer (git's upload-pack
//! refuses a client of another format, which smart HTTP shows as an empty
//! answer) and the libgit2 listing that follows finds the repository
//! SHA-256; then `ls-refs` is asked again in SHA-256, and from then on. A
//! SHA-1 poll stays one request, and a server without v2 two as before.
//! Apart from the poller, which only asks in the format known so far.

use std::sync::atomic::Ordering;

use super::{PollError, RefAnswer, RefPoller, V2, Wire};
use crate::source::permanent::SERVE_SMART_HTTP;
use crate::types::ObjectFormat;

impl RefPoller {
    /// The repository's object format, as far as the server has shown it.
    pub fn object_format(&self) -> ObjectFormat {
        if self.sha256.load(Ordering::SeqCst) {
            ObjectFormat::Sha256
        } else {
            ObjectFormat::Sha1
        }
    }

    /// One `ls-refs` request in the object format known so far.
    pub(super) async fn ls_ref_v2(&self, wire: Wire<'_>, ref_name: &str) -> Result<V2, PollError> {
        self.ls_ref_once(wire, ref_name, self.object_format()).await
    }

    /// Whether the libgit2 listing that `listed` is failed because the
    /// repository is SHA-256, which libgit2 reads from the advertisement's
    /// `object-format` capability and cannot handle; then the repository
    /// is known to be SHA-256 from here on, and v2 worth asking again.
    pub(super) fn learned_sha256(&self, listed: &Result<RefAnswer, PollError>) -> bool {
        let sha256 = matches!(
            listed,
            Err(PollError::Fallback { hint: Some(hint), .. }) if *hint == SERVE_SMART_HTTP
        );
        if sha256 && self.object_format() == ObjectFormat::Sha1 {
            tracing::debug!(url = %self.redacted, "the repository is SHA-256");
            self.sha256.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}
