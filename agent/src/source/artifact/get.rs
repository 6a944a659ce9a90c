//! Reading a file of a static source: a GET over HTTP(S) (no redirect, no
//! proxy, the source's CA file and token, each wait bounded by
//! `fetch.io_timeout`, the whole request by what is left of
//! `fetch.deadline`), or a file under a `file://` base (an image being
//! baked). The body is handed over as a reader; what it is worth is for
//! the caller to judge.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, RANGE};
use reqwest::{StatusCode, Url};

use crate::config::AgentConfig;
use crate::source::poll::{self, error_chain_of};

/// Why a file could not be read.
#[derive(Debug)]
pub enum GetError {
    /// Asking again cannot help (missing, refused, a redirect).
    Permanent(String),
    /// Worth another attempt (a timeout, a cut connection, a server error).
    Transient(String),
}

/// Where the files are.
enum Base {
    Http { client: reqwest::Client, url: Url },
    File(PathBuf),
}

/// Reads files of one static source.
pub struct Fetcher {
    base: Base,
    redacted: String,
    wait: Duration,
}

/// What the network thread hands over.
enum Part {
    /// The response's status was good: the body follows. Its ETag.
    Head(Option<String>),
    Data(Vec<u8>),
    Failed(GetError),
}

impl Fetcher {
    /// A fetcher of `source.url` with the config's transport settings;
    /// each request ends within `deadline`.
    pub fn new(root: &Path, config: &AgentConfig, deadline: Duration) -> anyhow::Result<Self> {
        let redacted = config.source.url.redacted();
        let url = base_url(config)?;
        let wait = super::patience(config);
        let base = match url.scheme() {
            "file" => Base::File(
                url.to_file_path()
                    .map_err(|()| anyhow::anyhow!("source.url {redacted} is not a local path"))?,
            ),
            "http" | "https" => {
                let options = poll::options_for(root, config, deadline)?;
                let auth = options.basic_auth.clone();
                let client =
                    poll::http_client(&options, auth.as_ref(), HeaderMap::new(), url.as_str())
                        .map_err(|e| anyhow::anyhow!("source.url {redacted}: {e}"))?;
                Base::Http { client, url }
            }
            other => anyhow::bail!(
                "source.kind static cannot read {other}:// URLs; use https://, http:// or file://"
            ),
        };
        Ok(Self {
            base,
            redacted,
            wait,
        })
    }

    /// `BASE/PATH`, without credentials, for messages.
    pub fn describe(&self, path: &[String]) -> String {
        format!("{}/{}", self.redacted.trim_end_matches('/'), path.join("/"))
    }

    /// The file at `path` (segments under the base), at most `limit` bytes.
    pub fn read_small(&self, path: &[String], limit: u64) -> Result<Vec<u8>, GetError> {
        let body = self.open(path)?;
        super::read_bounded(body, limit)
            .map_err(|e| self.failed(path, &e, e.kind() != io::ErrorKind::Other))
    }

    /// The file at `path` as a reader.
    pub fn open(&self, path: &[String]) -> Result<Box<dyn Read + Send + '_>, GetError> {
        match &self.base {
            Base::File(dir) => {
                let file = path.iter().fold(dir.clone(), |p, s| p.join(s));
                match std::fs::File::open(&file) {
                    Ok(f) => Ok(Box::new(f)),
                    Err(e) => Err(GetError::Permanent(format!(
                        "cannot read {}: {}; publish it with driftless publish",
                        file.display(),
                        e.kind()
                    ))),
                }
            }
            Base::Http { client, url } => {
                let url = under(url, path);
                let (body, etag) = self.get(client, url.clone(), path, None)?;
                Ok(Box::new(Resuming {
                    fetcher: self,
                    client: client.clone(),
                    url,
                    path: path.to_vec(),
                    etag,
                    pos: 0,
                    resumes: MAX_RESUMES,
                    body,
                }))
            }
        }
    }

    /// One GET of `url`; from byte `from` on (a range request that holds
    /// only while the file is still the one of ETag `etag`), when given.
    fn get(
        &self,
        client: &reqwest::Client,
        url: Url,
        path: &[String],
        from: Option<(u64, &str)>,
    ) -> Result<(Body, Option<String>), GetError> {
        let (send, parts) = mpsc::sync_channel(4);
        let mut request = client.get(url);
        if let Some((at, etag)) = from {
            request = request
                .header(RANGE, format!("bytes={at}-"))
                .header(IF_RANGE, etag);
        }
        let what = self.describe(path);
        let at = from.map(|(at, _)| at);
        let network = std::thread::Builder::new()
            .name("static-get".into())
            .spawn(move || network(request, &what, at, &send))
            .map_err(|e| GetError::Transient(format!("cannot start the fetch thread: {e}")))?;
        let body = Body {
            parts: Some(parts),
            network: Some(network),
            wait: self.wait,
            pending: Vec::new(),
            pos: 0,
        };
        match body.recv() {
            Ok(Some(Part::Head(etag))) => Ok((body, etag)),
            Ok(Some(Part::Failed(e))) => Err(e),
            Ok(Some(Part::Data(_)) | None) => Err(GetError::Transient(format!(
                "{}: the fetch thread ended without an answer",
                self.describe(path)
            ))),
            Err(e) => Err(GetError::Transient(format!("{}: {e}", self.describe(path)))),
        }
    }

    fn failed(&self, path: &[String], e: &io::Error, transient: bool) -> GetError {
        let message = format!("{}: {e}", self.describe(path));
        if transient {
            GetError::Transient(message)
        } else {
            GetError::Permanent(message)
        }
    }
}

/// `source.url`, parsed, its path ending in `/`.
fn base_url(config: &AgentConfig) -> anyhow::Result<Url> {
    let mut url = Url::parse(config.source.url.as_str()).map_err(|e| {
        anyhow::anyhow!(
            "source.url {} is not a valid URL: {e}",
            config.source.url.redacted()
        )
    })?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `base/a/b`, each segment escaped.
fn under(base: &Url, path: &[String]) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    url
}

/// The URL of `path` under an HTTP(S) `source.url`.
pub(super) fn file_url(config: &AgentConfig, path: &[String]) -> anyhow::Result<Url> {
    Ok(under(&base_url(config)?, path))
}

/// The network side of one GET, on its own thread with its own runtime.
fn network(
    request: reqwest::RequestBuilder,
    what: &str,
    from: Option<u64>,
    send: &mpsc::SyncSender<Part>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = send.send(Part::Failed(GetError::Transient(format!(
                "no async runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(async {
        let transfer = |e: reqwest::Error| {
            GetError::Transient(format!("{what}: {}", error_chain_of(&e.without_url())))
        };
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let _ = send.send(Part::Failed(transfer(e)));
                return;
            }
        };
        let judged = match from {
            None => judge_status(response.status(), what),
            Some(at) => judge_range(&response, at, what),
        };
        if let Err(e) = judged {
            let _ = send.send(Part::Failed(e));
            return;
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        if send.send(Part::Head(etag)).is_err() {
            return;
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if send.send(Part::Data(chunk.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = send.send(Part::Failed(transfer(e)));
                    return;
                }
            }
        }
    });
}

/// A good status, or why not (and whether asking again may help).
pub(super) fn judge_status(status: StatusCode, what: &str) -> Result<(), GetError> {
    if status == StatusCode::OK {
        return Ok(());
    }
    let code = status.as_u16();
    if status.is_redirection() {
        return Err(GetError::Permanent(format!(
            "{what}: HTTP status {code}, a redirect (not followed: point source.url at where \
             the files are)"
        )));
    }
    if matches!(code, 404 | 410) {
        return Err(GetError::Permanent(format!(
            "{what}: HTTP status {code}: not published there (run driftless publish, or check \
             source.url)"
        )));
    }
    let transient = status.is_server_error() || matches!(code, 408 | 425 | 429);
    let message = format!("{what}: HTTP status {code}");
    Err(if transient {
        GetError::Transient(message)
    } else {
        GetError::Permanent(message)
    })
}

/// The answer to a range request from byte `at`: the rest of the same
/// file (206, from `at`), else why not (a 200 means the file changed since
/// the download began: If-Range did not match).
fn judge_range(response: &reqwest::Response, at: u64, what: &str) -> Result<(), GetError> {
    let status = response.status();
    if status != StatusCode::PARTIAL_CONTENT {
        judge_status(status, what)?;
        return Err(GetError::Transient(format!(
            "{what}: the file changed while it was downloaded (HTTP status {}); starting again",
            status.as_u16()
        )));
    }
    let range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !range.starts_with(&format!("bytes {at}-")) {
        return Err(GetError::Transient(format!(
            "{what}: asked for the rest from byte {at}, got {:?}",
            range.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// How many times one download resumes after a cut before the attempt
/// fails (and the fetch starts again, within its deadline).
pub const MAX_RESUMES: u32 = 5;

/// A download that resumes where it was cut: a range request from the
/// byte it reached, valid only while the file is the one of its ETag
/// (`If-Range`), at most [`MAX_RESUMES`] times. Whatever the bytes, they
/// are judged as one stream by the reader downstream.
struct Resuming<'f> {
    fetcher: &'f Fetcher,
    client: reqwest::Client,
    url: Url,
    path: Vec<String>,
    etag: Option<String>,
    pos: u64,
    resumes: u32,
    body: Body,
}

impl Read for Resuming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.body.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                    let Some(etag) = self.etag.clone().filter(|_| self.resumes > 0) else {
                        return Err(e);
                    };
                    self.resumes -= 1;
                    tracing::warn!(
                        "{}: cut at byte {} ({e}); resuming with a range request",
                        self.fetcher.describe(&self.path),
                        self.pos
                    );
                    let from = Some((self.pos, etag.as_str()));
                    let (body, _) = self
                        .fetcher
                        .get(&self.client, self.url.clone(), &self.path, from)
                        .map_err(|e| match e {
                            GetError::Permanent(m) | GetError::Transient(m) => {
                                io::Error::new(io::ErrorKind::ConnectionAborted, m)
                            }
                        })?;
                    self.body = body;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A response body as a reader; each wait for more is bounded.
struct Body {
    parts: Option<mpsc::Receiver<Part>>,
    network: Option<std::thread::JoinHandle<()>>,
    wait: Duration,
    pending: Vec<u8>,
    pos: usize,
}

impl Body {
    /// The next part; `None` at the end.
    fn recv(&self) -> io::Result<Option<Part>> {
        let Some(parts) = &self.parts else {
            return Ok(None);
        };
        match parts.recv_timeout(self.wait) {
            Ok(part) => Ok(Some(part)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server sent nothing for {:?}", self.wait),
            )),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.pending.len() {
            match self.recv()? {
                Some(Part::Data(bytes)) => {
                    self.pending = bytes;
                    self.pos = 0;
                }
                Some(Part::Failed(GetError::Transient(e) | GetError::Permanent(e))) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e));
                }
                Some(Part::Head(_)) => return Err(io::Error::other("a second response head")),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // The receiver goes first, so a network thread blocked on a send ends.
        drop(self.parts.take());
        if let Some(network) = self.network.take() {
            let _ = network.join();
        }
    }
}
