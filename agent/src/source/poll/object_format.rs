//! The object format of the polled repository, learned from the server:
//! SHA-1 until an `ls-refs` in SHA-1 finds no answer and the capability
//! advertisement names SHA-256 (git's upload-pack refuses a client of
//! another format). Apart from the poller, which only asks in the format
//! known so far.

use std::sync::atomic::Ordering;

use super::{Http, PollError, RefPoller, V2, advertised_format};
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

    /// One `ls-refs` request in the object format known so far; when it
    /// finds no v2 answer in SHA-1, the capability advertisement is asked
    /// for once, and a SHA-256 repository asked again in its format (git's
    /// upload-pack refuses a client of another format, which smart HTTP
    /// shows as an empty answer).
    pub(super) async fn ls_ref_v2(&self, http: &Http, ref_name: &str) -> Result<V2, PollError> {
        let format = self.object_format();
        let first = self.ls_ref_once(http, ref_name, format).await;
        if format != ObjectFormat::Sha1 || !matches!(first, Ok(V2::NotSpoken(_))) {
            return first;
        }
        match self.advertised_format(http).await {
            Some(ObjectFormat::Sha256) => {
                tracing::debug!(url = %self.redacted, "the repository is SHA-256");
                self.sha256.store(true, Ordering::SeqCst);
                self.ls_ref_once(http, ref_name, ObjectFormat::Sha256).await
            }
            _ => first,
        }
    }

    /// The object format the server's v2 capability advertisement names;
    /// `None` when there is none (any failure: the caller keeps what it had).
    async fn advertised_format(&self, http: &Http) -> Option<ObjectFormat> {
        let mut url = http.endpoint.clone();
        let path = url.path().trim_end_matches("/git-upload-pack").to_owned();
        url.set_path(&format!("{path}/info/refs"));
        url.set_query(Some("service=git-upload-pack"));
        let mut response = http.client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let limit = self.options.max_answer_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len() + chunk.len() > limit {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        advertised_format(&body)
    }
}
