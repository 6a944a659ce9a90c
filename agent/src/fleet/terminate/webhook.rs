//! The `webhook` action: the signed JSON POST, its secret and CA bundle read
//! beneath the root, and the receiver's answer. Apart because it is the one
//! action that speaks HTTP; etcd borrows its CA bundle reader and its error
//! chain.

use std::path::Path;
use std::time::Duration;

use super::validate::is_loopback;
use super::{QUOTE_CHARS, TerminateError, first_line, human};
use crate::config::ReplaceSettings;
use crate::error::clip;
use crate::record::replacement::ReplacementRequest;
use crate::root::{Root, hex};
use crate::types::NodePath;

/// Webhook secret files larger than this are refused.
pub const MAX_SECRET_LEN: u64 = 64 * 1024;
/// Webhook CA bundles larger than this are refused.
pub const MAX_CA_LEN: u64 = 1024 * 1024;
/// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Driftless-Signature";
/// Header carrying [`ReplacementRequest::request_id`].
pub const REQUEST_ID_HEADER: &str = "X-Driftless-Request-Id";

/// Most bytes of a webhook receiver's error answer read.
const ANSWER_KEEP: usize = 4 * 1024;

/// The webhook signature header's value: `sha256=` and the lowercase hex
/// HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

/// A webhook request ready to send.
pub(super) struct Webhook {
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
    signature: String,
    request_id: String,
}

impl Webhook {
    pub(super) fn prepare(
        root: &Path,
        settings: &ReplaceSettings,
        request: &ReplacementRequest,
    ) -> Result<Self, TerminateError> {
        // `validate` has checked both are set.
        let url = settings.url.clone().unwrap_or_default();
        let secret_file = settings
            .secret_file
            .as_ref()
            .ok_or_else(|| TerminateError::Invalid("replace.secret_file is not set".into()))?;
        let root = Root::open(root).map_err(|e| TerminateError::File {
            what: "secret_file",
            path: secret_file.to_string(),
            reason: e.to_string(),
        })?;
        let secret = read_secret(&root, secret_file)?;
        let body = serde_json::to_vec(request).map_err(|e| TerminateError::Http {
            url: url.clone(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let signature = signature(&secret, &body);
        let limit = settings.timeout.0;
        let builder = crate::source::tls::client_builder();
        let mut builder = crate::source::tls::plain_only(builder, [url.as_str()])
            .user_agent(concat!("driftless/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limit)
            .timeout(limit);
        if let Some(ca_file) = &settings.ca_file {
            builder = builder.tls_certs_only(read_ca(&root, ca_file)?);
        }
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| TerminateError::Invalid(e.to_string()))?;
        if is_loopback(&parsed) {
            // A receiver on this node is never reached through a proxy.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| TerminateError::Http {
            url: url.clone(),
            reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Self {
            client,
            url,
            body,
            signature,
            request_id: request.request_id.clone(),
        })
    }

    pub(super) async fn send(self, limit: Duration) -> Result<(), TerminateError> {
        let Webhook {
            client,
            url,
            body,
            signature,
            request_id,
        } = self;
        let failed = |e: reqwest::Error| TerminateError::Http {
            url: url.clone(),
            reason: if e.is_timeout() {
                format!("no answer within {}", human(limit))
            } else {
                error_chain(&e.without_url())
            },
        };
        let mut response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(REQUEST_ID_HEADER, request_id)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The first line of a plain-text answer helps whoever reads the log
        // (HTML is left out); a receiver that does not finish it in time
        // only loses that.
        let plain = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/plain")
            });
        let mut answer = Vec::new();
        while plain && answer.len() < ANSWER_KEEP {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        answer.truncate(ANSWER_KEEP);
        Err(TerminateError::Status {
            url,
            status: status.as_u16(),
            answer: first_line(&answer).unwrap_or_default(),
        })
    }
}

fn read_secret(root: &Root, path: &NodePath) -> Result<Vec<u8>, TerminateError> {
    let bad = |reason: String| TerminateError::File {
        what: "secret_file",
        path: path.to_string(),
        reason,
    };
    // RootError names the path and the system's reason, never the content.
    let mut secret = root.read(path, MAX_SECRET_LEN).map_err(|e| bad(e.reason))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(bad("the secret is empty".into()));
    }
    Ok(secret)
}

fn read_ca(root: &Root, path: &NodePath) -> Result<Vec<reqwest::Certificate>, TerminateError> {
    read_ca_bundle(root, path).map_err(|reason| TerminateError::File {
        what: "ca_file",
        path: path.to_string(),
        reason,
    })
}

/// Reads a PEM CA bundle under the root: at least one certificate, or why not.
pub(crate) fn read_ca_bundle(
    root: &Root,
    path: &NodePath,
) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = root.read(path, MAX_CA_LEN).map_err(|e| e.reason)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM CA bundle: {}", error_chain(&e)))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// An error and its sources on one short line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    clip(&parts.join(": "), 2 * QUOTE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
