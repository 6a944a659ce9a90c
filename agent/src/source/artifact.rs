//! Releases as static signed files: what `driftless publish` writes, and
//! a first boot from them (`source.kind: static`).
//!
//! A publish directory holds, under its base URL:
//! - `releases/TAG_OBJECT.pack`: one release, a git pack of exactly what a
//!   depth-1 fetch of its tag carries (the signed tag and its commit first,
//!   then the trees, then the blobs), named by the id of the signed tag
//!   object, so an object store or a CDN may cache it for ever;
//! - `releases/TAG_OBJECT.head.pack`: the same release's head, a pack of
//!   its signed tag and the commit it names alone: what a watching node
//!   fetches to judge a channel move (a few hundred bytes, not the release);
//! - `tags/TAG`: the id of the tag object `TAG` names, one line (a tag is
//!   never made again under the same name, so this too never changes).
//!
//! Nothing in them is trusted: the pack is read through exactly the store,
//! gate and bounds of the streamed git fetch ([`crate::source::stream::
//! read_release`]): the object whose computed id is the one asked for must
//! be the tag, signed by a release signer, named as the node's config says,
//! before any blob is written; a file whose bytes are another release, or
//! junk, never produces that object and is refused within the same bounds
//! (`fetch.max_bytes`, 8 MiB or 4,096 objects before the tag verifies).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::config::{AgentConfig, TagName};
use crate::source::fetch::{FetchError, Retries};
use crate::source::pack::ObjectId;
use crate::source::stream::{PackFailure, Streamed, read_release};
use crate::verify::Trust;

pub mod channel;
mod get;
mod into;

pub use channel::{ChannelPoll, Polled};
pub use get::{Fetcher, GetError};
pub use into::{fetch_channel_into, fetch_release_into, head_time};

/// The longest `tags/TAG` file read: an object id and a newline, with room.
pub const MAX_TAG_FILE: u64 = 256;

/// The path of a release's pack under the base: `releases/ID.pack`.
pub fn release_path(tag_object: &ObjectId) -> Vec<String> {
    vec!["releases".into(), format!("{}.pack", tag_object.to_hex())]
}

/// The path of a release's head under the base: `releases/ID.head.pack`.
pub fn head_path(tag_object: &ObjectId) -> Vec<String> {
    vec![
        "releases".into(),
        format!("{}.head.pack", tag_object.to_hex()),
    ]
}

/// The path of a tag's pointer under the base: `tags/TAG` (a tag name with
/// slashes is a path of directories).
pub fn tag_path(tag: &TagName) -> Vec<String> {
    std::iter::once("tags".to_owned())
        .chain(tag.as_str().split('/').map(str::to_owned))
        .collect()
}

/// Parses a `tags/TAG` file: one full lower-case SHA-1 object id, then an
/// optional newline.
pub fn parse_tag_file(bytes: &[u8]) -> Result<ObjectId, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let hex = text.strip_suffix('\n').unwrap_or(text);
    let lower = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match ObjectId::from_hex(hex) {
        Some(id) if lower && hex.len() == 40 => Ok(id),
        _ => Err(format!(
            "{:?} is not one object id on one line",
            text.chars().take(80).collect::<String>()
        )),
    }
}

/// Why one attempt did not bring the release.
enum Attempt {
    Permanent(anyhow::Error),
    Transient(String),
}

/// Fetches the release `tag` from a static source and verifies it on the
/// way in, retrying within `fetch.deadline`: a cut or incomplete download
/// is tried again, a refusal is final. `object`: the tag object a verified
/// channel names (else `tags/TAG` says which).
pub fn fetch_tag(
    root: &Path,
    config: &AgentConfig,
    tag: &TagName,
    object: Option<ObjectId>,
    trust: &Trust,
) -> anyhow::Result<Streamed> {
    let name = format!("release {}", tag.as_str());
    let mut retries = Retries::new(&name, &config.source, &config.fetch);
    loop {
        retries.attempts += 1;
        let fetcher = Fetcher::new(root, config, retries.remaining())?;
        let message = match attempt(root, config, &fetcher, (tag, object), trust) {
            Ok(streamed) => return Ok(streamed),
            Err(Attempt::Permanent(e)) => return Err(e),
            Err(Attempt::Transient(message)) => message,
        };
        retries.after_failure(message)?;
    }
}

/// One attempt: the tag's pointer, then its pack, read as it arrives.
fn attempt(
    root: &Path,
    config: &AgentConfig,
    fetcher: &Fetcher,
    (tag, object): (&TagName, Option<ObjectId>),
    trust: &Trust,
) -> Result<Streamed, Attempt> {
    let refused = |url: String, reason: String| {
        Attempt::Permanent(
            FetchError::Refused {
                name: format!("release {}", tag.as_str()),
                url,
                reason,
                hint: None,
            }
            .into(),
        )
    };
    let classify = |e: GetError| match e {
        GetError::Permanent(reason) => refused(config.source.url.redacted(), reason),
        GetError::Transient(reason) => Attempt::Transient(reason),
    };
    let id = match object {
        Some(id) => id,
        None => {
            let pointer = fetcher
                .read_small(&tag_path(tag), MAX_TAG_FILE)
                .map_err(classify)?;
            parse_tag_file(&pointer).map_err(|why| {
                Attempt::Permanent(anyhow::anyhow!(
                    "{}: {why}; publish the release again with driftless publish",
                    fetcher.describe(&tag_path(tag))
                ))
            })?
        }
    };
    let path = release_path(&id);
    let body = fetcher.open(&path).map_err(classify)?;
    let max_bytes = config.fetch.max_bytes.0;
    match read_release(root, body, id, tag, trust, max_bytes) {
        Ok(streamed) => Ok(streamed),
        Err(PackFailure::Transient(why)) => Err(Attempt::Transient(format!(
            "{}: {why}",
            fetcher.describe(&path)
        ))),
        Err(PackFailure::NotThatObject) => Err(refused(
            fetcher.describe(&path),
            format!(
                "the file does not hold tag object {}: its bytes are not what its name says; \
                 refusing it",
                id.to_hex()
            ),
        )),
        Err(PackFailure::Refused(why)) => Err(refused(fetcher.describe(&path), why)),
        Err(PackFailure::Verify(e)) => Err(Attempt::Permanent(e.context(format!(
            "{} (tag object {})",
            fetcher.describe(&path),
            id.to_hex()
        )))),
    }
}

/// Reads at most `limit` bytes of `input`; more is an error.
pub(crate) fn read_bounded(mut input: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    input.by_ref().take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(out)
}

/// How long a reader waits for the next part of a body.
fn patience(config: &AgentConfig) -> Duration {
    config.fetch.io_timeout.0 + Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_file_is_one_id_on_one_line() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_tag_file(format!("{id}\n").as_bytes()).map(|i| i.to_hex()),
            Ok(id.to_owned())
        );
        assert!(parse_tag_file(id.as_bytes()).is_ok());
        for bad in [
            format!("{id}\n\n"),
            id.to_uppercase(),
            format!(" {id}"),
            id[..39].to_owned(),
            String::new(),
        ] {
            assert!(parse_tag_file(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let tag = TagName::new("release/v1").expect("tag");
        assert_eq!(tag_path(&tag), ["tags", "release", "v1"]);
        assert!(read_bounded(&b"12345"[..], 4).is_err());
        assert_eq!(read_bounded(&b"1234"[..], 4).expect("within"), b"1234");
    }
}
