//! The channel from a static source: `channels/NAME.bundle`, the channel
//! branch as a git bundle (v2: a signature line, one `ID REF` line, a blank
//! line, then a pack of the branch's history), the one file of a publish
//! directory whose content changes.
//!
//! The watcher polls it with a conditional GET (`If-None-Match` with the
//! ETag of the last answer): an unchanged channel costs a 304, and a
//! changed one only its header, which names the new tip. Only a tip not
//! seen before is fetched whole, by the evaluation child, into the
//! quarantine the git path uses ([`crate::source::quarantine`]), and is
//! judged there by exactly the same rules ([`crate::release::channel`]).
//! Nothing the header or the server says is trusted: a 304 or an old tip is
//! what a frozen git server can say too, and freshness catches both.

use std::io::Read;

use reqwest::Url;
use reqwest::header::{ETAG, HeaderMap, IF_NONE_MATCH};

use super::get::{GetError, judge_status};
use crate::config::AgentConfig;

/// The longest bundle header read: the signature line and one ref.
pub const MAX_HEADER: usize = 4096;

/// The longest ETag kept.
const MAX_ETAG: usize = 256;

/// The first line of a bundle driftless reads.
const SIGNATURE: &str = "# v2 git bundle\n";

/// The path of a channel's bundle under the base: `channels/NAME.bundle`.
pub fn channel_path(config: &AgentConfig) -> Vec<String> {
    let name = config.channel_name();
    let mut segments: Vec<String> = std::iter::once("channels".to_owned())
        .chain(name.split('/').map(str::to_owned))
        .collect();
    if let Some(last) = segments.last_mut() {
        last.push_str(".bundle");
    }
    segments
}

/// Parses a bundle's header from its first bytes: `Ok(Some((tip, len)))`
/// once whole (`len` bytes long), `Ok(None)` while more is needed. It must
/// carry exactly `ref_name`, and no prerequisite (publish bundles the
/// whole branch).
pub fn parse_header(bytes: &[u8], ref_name: &str) -> Result<Option<(String, usize)>, String> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\n\n") else {
        if bytes.len() >= MAX_HEADER {
            return Err(format!("no bundle header within {MAX_HEADER} bytes"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes[..=end]).map_err(|_| "a header that is not UTF-8")?;
    let Some(refs) = text.strip_prefix(SIGNATURE) else {
        return Err("not a v2 git bundle (driftless publish writes those)".into());
    };
    let mut tip = None;
    for line in refs.lines() {
        let (id, name) = line.split_once(' ').unwrap_or((line, ""));
        let hex = id.len() == 40 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex || name != ref_name || tip.is_some() {
            return Err(format!(
                "the bundle's header must name {ref_name} alone, by a full object id; it has {:?}",
                line.chars().take(120).collect::<String>()
            ));
        }
        tip = Some(id.to_owned());
    }
    match tip {
        Some(tip) => Ok(Some((tip, end + 2))),
        None => Err(format!("the bundle names no {ref_name}")),
    }
}

/// Reads a bundle's header from `input`, leaving it at the pack (a byte at
/// a time: at most [`MAX_HEADER`] of them, and nothing read past it).
pub fn read_header(input: &mut impl Read, ref_name: &str) -> Result<String, String> {
    let mut header = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return Err("the bundle ends inside its header".into()),
            Ok(_) => header.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        if byte[0] == b'\n' {
            if let Some((tip, _)) = parse_header(&header, ref_name)? {
                return Ok(tip);
            }
        } else if header.len() >= MAX_HEADER {
            return Err(format!("no bundle header within {MAX_HEADER} bytes"));
        }
    }
}

/// The tip the channel's bundle names, from its header alone.
pub fn read_tip(fetcher: &super::Fetcher, config: &AgentConfig) -> Result<String, String> {
    let path = channel_path(config);
    let mut body = fetcher.open(&path).map_err(|e| match e {
        GetError::Permanent(m) | GetError::Transient(m) => m,
    })?;
    read_header(&mut body, &config.channel_ref())
        .map_err(|why| format!("{}: {why}", fetcher.describe(&path)))
}

/// What a poll of the channel's bundle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    /// The tip the bundle names.
    pub tip: String,
    /// The answer's ETag, to send next time.
    pub etag: Option<String>,
    /// Whether the server answered 304 Not Modified.
    pub unchanged: bool,
}

/// Polls a static source's channel bundle.
#[derive(Debug)]
pub struct ChannelPoll {
    client: reqwest::Client,
    url: Url,
    ref_name: String,
    shown: String,
}

impl ChannelPoll {
    /// A poller of `config`'s channel at its static source; each poll ends
    /// within `deadline`.
    pub fn new(
        root: &std::path::Path,
        config: &AgentConfig,
        deadline: std::time::Duration,
    ) -> anyhow::Result<Self> {
        if config.source.url.as_str().starts_with("file://") {
            anyhow::bail!(
                "source.kind static: the watcher polls the channel over https:// or http://; \
                 a file:// source serves a baked image's first boot only"
            );
        }
        let options = crate::source::poll::options_for(root, config, deadline)?;
        let client = crate::source::poll::http_client(
            &options,
            options.basic_auth.as_ref(),
            HeaderMap::new(),
            config.source.url.as_str(),
        )
        .map_err(anyhow::Error::msg)?;
        let path = channel_path(config);
        let url = super::get::file_url(config, &path)?;
        let shown = format!(
            "{}/{}",
            config.source.url.redacted().trim_end_matches('/'),
            path.join("/")
        );
        Ok(Self {
            client,
            url,
            ref_name: config.channel_ref(),
            shown,
        })
    }

    /// The bundle's path under the base URL, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One conditional GET: `known` is the ETag and tip of the last answer.
    /// `Ok(None)`: the server has no such file (404 or 410).
    pub async fn poll(&self, known: Option<(&str, &str)>) -> Result<Option<Polled>, String> {
        let mut request = self.client.get(self.url.clone());
        if let Some((etag, _)) = known {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let fail = |e: reqwest::Error| {
            format!(
                "{}: {}",
                self.shown,
                crate::source::poll::error_chain_of(&e.without_url())
            )
        };
        let mut response = request.send().await.map_err(fail)?;
        if let (reqwest::StatusCode::NOT_MODIFIED, Some((etag, tip))) = (response.status(), known) {
            return Ok(Some(Polled {
                tip: tip.to_owned(),
                etag: Some(etag.to_owned()),
                unchanged: true,
            }));
        }
        if matches!(response.status().as_u16(), 404 | 410) {
            return Ok(None);
        }
        judge_status(response.status(), &self.shown).map_err(|e| match e {
            GetError::Permanent(m) | GetError::Transient(m) => m,
        })?;
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_ETAG && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        let mut header = Vec::with_capacity(256);
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            header.extend_from_slice(&chunk[..chunk.len().min(MAX_HEADER)]);
            if let Some((tip, _)) = parse_header(&header, &self.ref_name)
                .map_err(|why| format!("{}: {why}", self.shown))?
            {
                // The rest (the pack) is for the evaluation, if the tip is new.
                return Ok(Some(Polled {
                    tip,
                    etag,
                    unchanged: false,
                }));
            }
        }
        Err(format!("{}: the bundle ends inside its header", self.shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIP: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_header_names_the_channel_alone() {
        let good = format!("{SIGNATURE}{TIP} refs/heads/channel\n\nPACK....");
        assert_eq!(
            parse_header(good.as_bytes(), "refs/heads/channel"),
            Ok(Some((TIP.to_owned(), good.len() - 8)))
        );
        assert_eq!(
            read_header(&mut good.as_bytes(), "refs/heads/channel"),
            Ok(TIP.to_owned())
        );
        assert_eq!(
            parse_header(&good.as_bytes()[..30], "refs/heads/channel"),
            Ok(None)
        );
        for bad in [
            format!("# v3 git bundle\n{TIP} refs/heads/channel\n\n"),
            format!("{SIGNATURE}{TIP} refs/heads/other\n\n"),
            format!("{SIGNATURE}-{TIP} prerequisite\n{TIP} refs/heads/channel\n\n"),
            format!("{SIGNATURE}{TIP} refs/heads/channel\n{TIP} refs/heads/channel\n\n"),
            format!("{SIGNATURE}{} refs/heads/channel\n\n", TIP.to_uppercase()),
            format!("{SIGNATURE}\n"),
        ] {
            assert!(
                parse_header(bad.as_bytes(), "refs/heads/channel").is_err(),
                "{bad:?}"
            );
        }
        let endless = format!("{SIGNATURE}{}", "x".repeat(MAX_HEADER));
        assert!(parse_header(endless.as_bytes(), "refs/heads/channel").is_err());
        assert!(read_header(&mut endless.as_bytes(), "refs/heads/channel").is_err());
    }
}
