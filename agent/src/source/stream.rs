//! First boot over HTTP(S): the pinned tag fetched with one protocol v2
//! `ls-refs` and one `fetch` (shallow, `deepen 1`), its pack parsed while it
//! streams in ([`crate::source::pack`]), and each blob written once, to a private
//! staging directory on the root's filesystem, from where apply renames it
//! beside its target. libgit2's fetch would store and index the pack first,
//! and apply would then inflate and hash every blob a second time.
//!
//! Trust is unchanged: nothing received is used before the tag's signature
//! verifies, and only objects reachable from the verified commit by their
//! computed ids are ever read. A server that does not speak protocol v2 is
//! fetched from with libgit2, into the cache, as before.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{AgentConfig, TagName};
use crate::source::fetch::{FetchError, Retries};
use crate::source::pack::{self, Base, ObjectId, ObjectKind, ObjectStore};
use crate::source::poll::{self, PollError, Protocol, RefPoller, pkt};
use crate::verify::{self, Trust, Verified};

/// The staging directory's place on the node.
pub const INCOMING_PATH: &str = "/var/lib/driftless/incoming";

/// Trees, commits and tags are kept in memory; at most this many bytes of them.
const MAX_HELD: usize = 64 * 1024 * 1024;

/// Section lines before the pack (shallow-info and the like) accepted.
const MAX_SECTION_LINES: usize = 100_000;

/// The received objects of one release: blobs as files in the staging
/// directory, the rest in memory. The directory goes when this is dropped.
pub struct Incoming {
    dir: PathBuf,
    dir_fd: OwnedFd,
    /// Every object received, by its offset in the pack.
    objects: HashMap<u64, Held>,
    /// The offset of each id's first object.
    ids: HashMap<ObjectId, u64>,
    current: Option<Current>,
    held: usize,
    /// Writes blobs while the pack is read; gone once [`Incoming::settle`] ran.
    writer: Option<Writer>,
    /// Files of objects received twice, removed when the writer is done.
    duplicates: Vec<String>,
}

/// A received object.
enum Held {
    Memory(ObjectKind, Vec<u8>),
    /// A blob; its SHA-256 is known once the writer is done.
    File {
        name: String,
        size: u64,
        sha256: Option<[u8; 32]>,
    },
}

struct Current {
    offset: u64,
    kind: ObjectKind,
    sink: Sink,
}

enum Sink {
    Memory(Vec<u8>),
    File { name: String, size: u64 },
}

/// Creates, writes and hashes (SHA-256) received blobs on a thread of its
/// own, while the reading thread inflates the pack and computes ids.
struct Writer {
    ops: mpsc::SyncSender<WriteOp>,
    thread: std::thread::JoinHandle<Result<HashMap<String, [u8; 32]>, String>>,
}

enum WriteOp {
    /// Creates the file `name` in the staging directory.
    Open(String),
    /// Appends to the file opened last.
    Data(Vec<u8>),
    /// Closes it, recording its SHA-256.
    Close,
    /// Answers once every operation before it is done.
    Flush(mpsc::SyncSender<Result<(), String>>),
}

/// Writer operations in flight (a blob's chunk is at most 64 KiB).
const WRITE_QUEUE: usize = 16;

impl Writer {
    fn start(dir: PathBuf) -> io::Result<Self> {
        let (ops, queue) = mpsc::sync_channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("write".into())
            .spawn(move || write_blobs(&dir, &queue))?;
        Ok(Self { ops, thread })
    }

    fn send(&self, op: WriteOp) -> Result<(), String> {
        self.ops
            .send(op)
            .map_err(|_| "the writing thread ended".to_owned())
    }

    /// Waits until everything sent is written; the first error, if any.
    fn flush(&self) -> Result<(), String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(WriteOp::Flush(reply))?;
        answer
            .recv()
            .map_err(|_| "the writing thread ended".to_owned())?
    }

    /// Waits for the thread; every blob's SHA-256 by file name.
    fn finish(self) -> Result<HashMap<String, [u8; 32]>, String> {
        drop(self.ops);
        self.thread
            .join()
            .map_err(|_| "the writing thread failed".to_owned())?
    }
}

/// The writing thread: runs until the queue closes; after an error it only
/// drains the queue, and reports the error at the end.
fn write_blobs(
    dir: &Path,
    queue: &mpsc::Receiver<WriteOp>,
) -> Result<HashMap<String, [u8; 32]>, String> {
    let mut digests = HashMap::new();
    let mut open: Option<(String, File, ring::digest::Context)> = None;
    let mut failed: Option<String> = None;
    let fail = |e: io::Error| format!("cannot write {}: {e}", dir.display());
    for op in queue {
        match op {
            WriteOp::Open(name) if failed.is_none() => {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(dir.join(&name))
                {
                    Ok(file) => {
                        let sha256 = ring::digest::Context::new(&ring::digest::SHA256);
                        open = Some((name, file, sha256));
                    }
                    Err(e) => failed = Some(fail(e)),
                }
            }
            WriteOp::Data(bytes) => {
                if let Some((_, file, sha256)) = &mut open {
                    sha256.update(&bytes);
                    if let Err(e) = file.write_all(&bytes) {
                        failed = Some(fail(e));
                        open = None;
                    }
                }
            }
            WriteOp::Close => {
                if let Some((name, file, sha256)) = open.take() {
                    start_writeback(&file);
                    let mut digest = [0u8; 32];
                    digest.copy_from_slice(sha256.finish().as_ref());
                    digests.insert(name, digest);
                }
            }
            WriteOp::Flush(reply) => {
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
            WriteOp::Open(_) => {}
        }
    }
    failed.map_or(Ok(digests), Err)
}

/// A blob received into the staging directory.
#[derive(Debug, Clone, Copy)]
pub struct StagedBlob<'a> {
    /// The staging directory.
    pub dir: BorrowedFd<'a>,
    /// The file's name in it.
    pub name: &'a str,
    /// Its size.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

impl Incoming {
    /// An empty staging directory under `root` (a stale one, left by a
    /// killed run, is removed first).
    pub fn create(root: &Path) -> io::Result<Self> {
        let dir = root.join(&INCOMING_PATH[1..]);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let dir_fd = OwnedFd::from(File::open(&dir)?);
        let writer = Writer::start(dir.clone())?;
        Ok(Self {
            dir,
            dir_fd,
            objects: HashMap::new(),
            ids: HashMap::new(),
            current: None,
            held: 0,
            writer: Some(writer),
            duplicates: Vec::new(),
        })
    }

    /// Waits until every received blob is written, and records their
    /// SHA-256. Call once the pack is read, before any blob is used.
    pub fn settle(&mut self) -> Result<(), String> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let digests = writer.finish()?;
        for held in self.objects.values_mut() {
            if let Held::File { name, sha256, .. } = held {
                *sha256 = Some(
                    *digests
                        .get(name)
                        .ok_or_else(|| format!("blob file {name} was not written"))?,
                );
            }
        }
        for name in self.duplicates.drain(..) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        Ok(())
    }

    /// A tree, commit or tag received, with its kind.
    pub fn held(&self, id: &ObjectId) -> Option<(ObjectKind, &[u8])> {
        match self.object(id)? {
            Held::Memory(kind, bytes) => Some((*kind, bytes)),
            Held::File { .. } => None,
        }
    }

    /// A blob received.
    pub fn blob(&self, id: &ObjectId) -> Option<StagedBlob<'_>> {
        match self.object(id)? {
            Held::File {
                name,
                size,
                sha256: Some(sha256),
            } => Some(StagedBlob {
                dir: self.dir_fd.as_fd(),
                name,
                size: *size,
                sha256: *sha256,
            }),
            Held::File { sha256: None, .. } => None,
            Held::Memory(..) => None,
        }
    }

    /// The bytes of a received blob.
    pub fn blob_bytes(&self, id: &ObjectId) -> io::Result<Vec<u8>> {
        match self.object(id) {
            Some(Held::File { name, .. }) => std::fs::read(self.dir.join(name)),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {id} was not received"),
            )),
        }
    }

    /// Every entry of the tree `root` by path (object id and git mode),
    /// checking that every tree and file of it arrived, as git checks a
    /// fetch's connectivity. Submodules (mode 160000) are only named.
    pub fn index(&self, root: &ObjectId) -> Result<crate::source::pack::TreeIndex, String> {
        let mut map = HashMap::new();
        let mut pending = vec![(String::new(), *root)];
        while let Some((dir, id)) = pending.pop() {
            let raw = match self.held(&id) {
                Some((ObjectKind::Tree, raw)) => raw,
                _ => return Err(format!("tree {id} (/{dir}) is missing from the pack")),
            };
            for entry in pack::TreeEntries(raw) {
                let (mode, name, child) = entry.map_err(|e| format!("tree {id}: {e}"))?;
                if map.len() >= crate::source::pack::MAX_TREE_ENTRIES {
                    return Err(format!(
                        "the tree has more than {} entries",
                        crate::source::pack::MAX_TREE_ENTRIES
                    ));
                }
                let path = format!("{dir}{name}");
                match mode {
                    0o40000 => pending.push((format!("{path}/"), child)),
                    0o160000 => {}
                    _ if self.blob(&child).is_none() => {
                        return Err(format!("file /{path} ({child}) is missing from the pack"));
                    }
                    _ => {}
                }
                map.insert(path, (child, mode));
            }
        }
        Ok(map)
    }

    /// The object with the id `id`.
    fn object(&self, id: &ObjectId) -> Option<&Held> {
        self.objects.get(self.ids.get(id)?)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.finish();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ObjectStore for Incoming {
    fn begin(&mut self, offset: u64, kind: ObjectKind, size: u64) -> Result<(), String> {
        let sink = if kind == ObjectKind::Blob {
            let name = offset.to_string();
            self.writer()?.send(WriteOp::Open(name.clone()))?;
            Sink::File { name, size }
        } else {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if self.held.saturating_add(size) > MAX_HELD {
                return Err(format!(
                    "the pack holds more than {} MiB of trees, commits and tags",
                    MAX_HELD >> 20
                ));
            }
            self.held += size;
            Sink::Memory(Vec::with_capacity(size.min(pack::RESERVE)))
        };
        self.current = Some(Current { offset, kind, sink });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.current {
            Some(Current {
                sink: Sink::Memory(held),
                ..
            }) => held.extend_from_slice(bytes),
            Some(Current {
                sink: Sink::File { .. },
                ..
            }) => self.writer()?.send(WriteOp::Data(bytes.to_vec()))?,
            None => return Err("object data outside an object".into()),
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        let Current { offset, kind, sink } = self.current.take().ok_or("no object begun")?;
        let held = match sink {
            Sink::Memory(bytes) => Held::Memory(kind, bytes),
            Sink::File { name, size } => {
                self.writer()?.send(WriteOp::Close)?;
                Held::File {
                    name,
                    size,
                    sha256: None,
                }
            }
        };
        self.objects.insert(offset, held);
        Ok(())
    }

    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        if self.ids.contains_key(&id) {
            // The same object twice: the first is kept. The second stays
            // known by its offset (a delta may name it as its base), and
            // its file goes once the writer is done.
            if let Some(Held::File { name, .. }) = self.objects.get(&offset) {
                self.duplicates.push(name.clone());
            }
            return Ok(());
        }
        self.ids.insert(id, offset);
        Ok(())
    }

    fn load(&mut self, base: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String> {
        let offset = match base {
            Base::Id(id) => self.ids.get(&id).copied(),
            Base::Offset(offset) => Some(offset),
        };
        match offset.and_then(|offset| self.objects.get(&offset)) {
            None => Ok(None),
            Some(Held::Memory(kind, bytes)) => Ok(Some((*kind, bytes.clone()))),
            Some(Held::File { name, .. }) => {
                if let Some(writer) = &self.writer {
                    writer.flush()?;
                }
                std::fs::read(self.path_of(name))
                    .map(|bytes| Some((ObjectKind::Blob, bytes)))
                    .map_err(|e| format!("cannot read back a delta base: {e}"))
            }
        }
    }
}

impl Incoming {
    fn writer(&self) -> Result<&Writer, String> {
        self.writer
            .as_ref()
            .ok_or_else(|| "a blob after the pack was settled".to_owned())
    }
}

/// Starts writing a received file to disk now, while the pack still
/// streams in, so that apply's sync later has little left to wait for. A
/// hint: durability still comes from that sync.
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for as long as `file` is borrowed.
    let _ = unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// The body of a protocol v2 `fetch` of one object, shallow, with nothing
/// held locally: the server answers with the pack at once.
pub fn fetch_request(oid: &str) -> Result<Vec<u8>, pkt::PktError> {
    let mut out = Vec::with_capacity(256);
    pkt::write_data(&mut out, &[b"command=fetch\n"])?;
    pkt::write_data(&mut out, &[b"agent=", poll::AGENT.as_bytes(), b"\n"])?;
    pkt::write_delim(&mut out);
    for line in ["no-progress\n", "ofs-delta\n", "deepen 1\n"] {
        pkt::write_data(&mut out, &[line.as_bytes()])?;
    }
    pkt::write_data(&mut out, &[b"want ", oid.as_bytes(), b"\n"])?;
    pkt::write_data(&mut out, &[b"done\n"])?;
    pkt::write_flush(&mut out);
    Ok(out)
}

/// What the network thread hands over.
enum Message {
    /// The ref's object id (`None`: no such ref).
    Ref(Option<String>),
    /// Bytes of the `fetch` response.
    Data(Vec<u8>),
    /// The server does not speak v2.
    NotV2(String),
    /// The request failed.
    Failed(PollError),
}

/// Why one attempt did not bring the release.
enum AttemptError {
    /// The server does not speak v2: fetch with libgit2.
    NotV2(String),
    /// The server has no such tag.
    NoSuchRef,
    /// Retrying cannot help.
    Permanent(String),
    /// Worth another attempt.
    Transient(String),
}

/// Reads the `fetch` response: sections up to `packfile`, then the pack's
/// bytes from side band 1 until the flush packet.
struct Response<'m> {
    messages: &'m mpsc::Receiver<Message>,
    wait: Duration,
    pending: Vec<u8>,
    pos: usize,
    /// Pack bytes of the current data packet not yet handed out.
    band: (usize, usize),
    in_pack: bool,
    done: bool,
}

impl<'m> Response<'m> {
    /// A response read from what the network thread sends on `messages`,
    /// waiting at most `wait` for each part.
    fn new(messages: &'m mpsc::Receiver<Message>, wait: Duration) -> Self {
        Self {
            messages,
            wait,
            pending: Vec::with_capacity(256 * 1024),
            pos: 0,
            band: (0, 0),
            in_pack: false,
            done: false,
        }
    }

    /// Makes sure `n` unread bytes are buffered; false at a clean end.
    fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.pending.len() - self.pos < n {
            if self.pos > 0 {
                self.pending.drain(..self.pos);
                self.pos = 0;
            }
            match self.messages.recv_timeout(self.wait) {
                Ok(Message::Data(bytes)) => self.pending.extend_from_slice(&bytes),
                Ok(Message::Failed(e)) => return Err(io::Error::other(e.to_string())),
                // The fetch request was answered, but not as v2 answers.
                Ok(Message::NotV2(why)) => {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, why));
                }
                Ok(Message::Ref(_)) => {
                    return Err(io::Error::other(
                        "unexpected message from the network thread",
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the server sent nothing for {:?}", self.wait),
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The next pkt-line: `None` for a flush, `Some(range)` of a data
    /// packet's payload in `pending`; delimiters and response ends are
    /// reported as empty payloads.
    fn packet(&mut self) -> io::Result<Option<(usize, usize)>> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if !self.want(4)? {
            return Err(bad("the answer ends before the pack does".into()));
        }
        let digits = &self.pending[self.pos..self.pos + 4];
        let text = std::str::from_utf8(digits).map_err(|_| bad("a bad pkt-line length".into()))?;
        let len = usize::from_str_radix(text, 16)
            .map_err(|_| bad(format!("a bad pkt-line length {text:?}")))?;
        self.pos += 4;
        match len {
            0 => Ok(None),
            1 | 2 => Ok(Some((self.pos, self.pos))),
            3 => Err(bad("a reserved pkt-line length".into())),
            len if len > pkt::MAX_PKT_LEN => Err(bad(format!("a pkt-line of {len} bytes"))),
            len => {
                if !self.want(len - 4)? {
                    return Err(bad("the answer ends inside a pkt-line".into()));
                }
                let start = self.pos;
                self.pos += len - 4;
                Ok(Some((start, self.pos)))
            }
        }
    }

    /// Skips the sections before the pack.
    fn skip_to_pack(&mut self) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        for line in 0..MAX_SECTION_LINES {
            let Some((start, end)) = self.packet()? else {
                return Err(bad("the answer ends without a pack".into()));
            };
            let payload = &self.pending[start..end];
            if let Some(message) = payload.strip_prefix(b"ERR ") {
                return Err(bad(format!(
                    "the server refused: {}",
                    String::from_utf8_lossy(pkt::text(message)).trim()
                )));
            }
            match pkt::text(payload) {
                b"packfile" => return Ok(()),
                b"packfile-uris" => {
                    return Err(bad(
                        "the server offers the pack by URI, which driftless never asks for".into(),
                    ));
                }
                _ if line == 0
                    && !matches!(
                        pkt::text(payload),
                        b"shallow-info" | b"acknowledgments" | b"wanted-refs"
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "answered the v2 fetch with {:?}",
                            String::from_utf8_lossy(&payload[..payload.len().min(40)])
                        ),
                    ));
                }
                _ => {}
            }
        }
        Err(bad(format!(
            "more than {MAX_SECTION_LINES} lines before the pack"
        )))
    }
}

impl Read for Response<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.in_pack {
            self.skip_to_pack()?;
            self.in_pack = true;
        }
        while self.band.0 == self.band.1 {
            if self.done {
                return Ok(0);
            }
            let Some((start, end)) = self.packet()? else {
                self.done = true;
                return Ok(0);
            };
            let Some((&band, data)) = self.pending[start..end].split_first() else {
                continue;
            };
            match band {
                1 => self.band = (start + 1, end),
                2 => {}
                3 => {
                    return Err(io::Error::other(format!(
                        "the server failed while sending the pack: {}",
                        String::from_utf8_lossy(pkt::text(data)).trim()
                    )));
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("pack data on unknown side band {other}"),
                    ));
                }
            }
        }
        let n = out.len().min(self.band.1 - self.band.0);
        out[..n].copy_from_slice(&self.pending[self.band.0..self.band.0 + n]);
        self.band.0 += n;
        Ok(n)
    }
}

/// A release fetched and verified by streaming.
pub struct Streamed {
    /// Its objects.
    pub incoming: Incoming,
    /// The verification that admitted it.
    pub verified: Verified,
    /// Every entry of its tree, by path: object id and git mode.
    pub index: crate::source::pack::TreeIndex,
}

/// Whether a source at `url` may be streamed from: HTTP(S) only (other
/// transports go through libgit2).
pub fn can_stream(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Fetches and verifies `tag` from an HTTP(S) source by streaming, retrying
/// within the fetch deadline. `Ok(None)`: the source is not HTTP(S) or does
/// not speak protocol v2, and libgit2 should fetch it.
pub fn fetch_tag(
    root: &Path,
    config: &AgentConfig,
    tag: &TagName,
    trust: &Trust,
) -> anyhow::Result<Option<Streamed>> {
    let url = &config.source.url;
    if !can_stream(url.as_str()) {
        return Ok(None);
    }
    let ref_name = format!("refs/tags/{}", tag.as_str());
    let mut retries = Retries::new(&ref_name, &config.source, &config.fetch);
    loop {
        retries.attempts += 1;
        let message = match attempt(root, config, &ref_name, retries.remaining()) {
            Ok((incoming, tag_id)) => {
                let verified = verify_received(&incoming, tag_id, tag, trust)?;
                let tree = ObjectId::from_hex(&verified.tree).ok_or_else(|| {
                    anyhow::anyhow!("tag {}: {:?} is not a tree id", tag.as_str(), verified.tree)
                })?;
                match incoming.index(&tree) {
                    Ok(index) => {
                        return Ok(Some(Streamed {
                            incoming,
                            verified,
                            index,
                        }));
                    }
                    // An incomplete pack is the server's fault: try again.
                    Err(missing) => missing,
                }
            }
            Err(AttemptError::NotV2(why)) => {
                tracing::info!(
                    "{} does not stream a v2 fetch ({why}); fetching with libgit2",
                    url.redacted()
                );
                return Ok(None);
            }
            Err(AttemptError::NoSuchRef) => {
                return Err(FetchError::NoSuchRef {
                    name: ref_name,
                    url: url.redacted(),
                }
                .into());
            }
            Err(AttemptError::Permanent(reason)) => {
                return Err(FetchError::Refused {
                    name: ref_name,
                    url: url.redacted(),
                    reason,
                }
                .into());
            }
            Err(AttemptError::Transient(message)) => message,
        };
        retries.after_failure(message)?;
    }
}

/// One attempt: `ls-refs` for the tag, then the `fetch`, parsed as it
/// arrives into a fresh staging directory.
fn attempt(
    root: &Path,
    config: &AgentConfig,
    ref_name: &str,
    remaining: Duration,
) -> Result<(Incoming, ObjectId), AttemptError> {
    let poller = crate::source::poll::poller_for(root, config, remaining)
        .map_err(|e| AttemptError::Permanent(crate::error::one_line(&e)))?;
    let io_timeout = config.fetch.io_timeout.0;
    let (send, messages) = mpsc::sync_channel(4);
    let wanted = ref_name.to_owned();
    let network = std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || network(&poller, &wanted, &send))
        .map_err(|e| AttemptError::Transient(format!("cannot start the fetch thread: {e}")))?;
    let received = receive(root, &messages, io_timeout, remaining);
    drop(messages);
    let _ = network.join();
    received
}

/// The network side of an attempt, on its own thread with its own runtime.
fn network(poller: &RefPoller, ref_name: &str, send: &mpsc::SyncSender<Message>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = send.send(Message::NotV2(format!("no async runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async {
        let oid = match poller.ls_ref(ref_name).await {
            Ok(answer) if answer.protocol != Protocol::V2Http => {
                let _ = send.send(Message::NotV2("no v2 ls-refs".into()));
                return;
            }
            Ok(answer) => answer.oid,
            Err(e) => {
                let _ = send.send(Message::Failed(e));
                return;
            }
        };
        let Some(oid) = oid else {
            let _ = send.send(Message::Ref(None));
            return;
        };
        let Ok(body) = fetch_request(&oid) else {
            let _ = send.send(Message::NotV2(
                "the object id does not fit a request".into(),
            ));
            return;
        };
        if send.send(Message::Ref(Some(oid))).is_err() {
            return;
        }
        let outcome = poller
            .stream_command(body, |chunk| {
                send.send(Message::Data(chunk.to_vec())).is_ok()
            })
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let _ = send.send(Message::NotV2(why));
            }
            Err(e) => {
                let _ = send.send(Message::Failed(e));
            }
        }
    });
}

/// The receiving side of an attempt.
fn receive(
    root: &Path,
    messages: &mpsc::Receiver<Message>,
    io_timeout: Duration,
    remaining: Duration,
) -> Result<(Incoming, ObjectId), AttemptError> {
    let wait = io_timeout + Duration::from_secs(1);
    let first = messages
        .recv_timeout(remaining.max(wait))
        .map_err(|_| AttemptError::Transient("the fetch thread ended without an answer".into()))?;
    let oid = match first {
        Message::Ref(Some(oid)) => oid,
        Message::Ref(None) => return Err(AttemptError::NoSuchRef),
        Message::NotV2(why) => return Err(AttemptError::NotV2(why)),
        Message::Failed(e) => return Err(classify(e)),
        Message::Data(_) => return Err(AttemptError::Transient("data before the ref".into())),
    };
    let tag_id = ObjectId::from_hex(&oid)
        .ok_or_else(|| AttemptError::NotV2(format!("{oid} is not a SHA-1 object id")))?;
    let mut incoming = Incoming::create(root)
        .map_err(|e| AttemptError::Permanent(format!("cannot create {INCOMING_PATH}: {e}")))?;
    let mut response = Response::new(messages, wait);
    let read = pack::read_pack(&mut response, &mut incoming).and_then(|summary| {
        incoming.settle().map_err(pack::PackError::Store)?;
        Ok(summary)
    });
    match read {
        Ok(summary) => {
            tracing::debug!(
                objects = summary.objects,
                bytes = summary.bytes,
                "pack received"
            );
        }
        Err(pack::PackError::Io(e)) if e.kind() == io::ErrorKind::Unsupported => {
            return Err(AttemptError::NotV2(e.to_string()));
        }
        Err(e @ pack::PackError::Collision { .. }) => {
            return Err(AttemptError::Permanent(e.to_string()));
        }
        Err(e) => return Err(AttemptError::Transient(e.to_string())),
    }
    Ok((incoming, tag_id))
}

/// Which failures of a request are worth retrying.
fn classify(e: PollError) -> AttemptError {
    match e {
        PollError::Tls { .. } | PollError::Setup { .. } => AttemptError::Permanent(e.to_string()),
        PollError::HttpStatus {
            status: 401 | 403, ..
        } => AttemptError::Permanent(e.to_string()),
        other => AttemptError::Transient(other.to_string()),
    }
}

/// Verifies the received tag exactly as one in the cache is verified: its
/// signature, its name, and that it tags a commit that arrived.
fn verify_received(
    incoming: &Incoming,
    tag_id: ObjectId,
    tag: &TagName,
    trust: &Trust,
) -> anyhow::Result<Verified> {
    use anyhow::Context as _;
    let verified = {
        let (kind, raw) = incoming
            .held(&tag_id)
            .ok_or(verify::VerifyError::NotFound)
            .with_context(|| format!("tag {}", tag.as_str()))?;
        let tree_of = |commit: &str| {
            let id = ObjectId::from_hex(commit)?;
            match incoming.held(&id)? {
                (ObjectKind::Commit, raw) => verify::object::commit_tree(raw).ok(),
                _ => None,
            }
        };
        verify::verify_tag_raw(
            tag.as_str(),
            &tag_id.to_hex(),
            kind.as_str(),
            raw,
            tree_of,
            trust,
            Timestamp::now(),
        )
        .map_err(anyhow::Error::from)
        .with_context(|| format!("tag {}", tag.as_str()))?
    };
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[payload]).expect("fits");
        out
    }

    /// Feeds `parts` as the network thread would, each part one chunk,
    /// and reads the pack bytes the response carries.
    fn read_response(parts: &[Vec<u8>]) -> io::Result<Vec<u8>> {
        let (send, messages) = mpsc::sync_channel(parts.len() + 1);
        for part in parts {
            send.send(Message::Data(part.clone())).expect("queue");
        }
        drop(send);
        let mut response = Response::new(&messages, Duration::from_secs(5));
        let mut out = Vec::new();
        response.read_to_end(&mut out)?;
        Ok(out)
    }

    fn sections(pack: &[&[u8]]) -> Vec<u8> {
        let mut out = packet(b"shallow-info\n");
        out.extend(packet(
            b"shallow 1111111111111111111111111111111111111111\n",
        ));
        pkt::write_delim(&mut out);
        out.extend(packet(b"packfile\n"));
        for data in pack {
            out.extend(packet(data));
        }
        pkt::write_flush(&mut out);
        out
    }

    #[test]
    fn the_pack_is_read_from_side_band_one_across_chunks() {
        let body = sections(&[b"\x02progress\n", b"\x01PACK", b"\x01rest", b"\x02more\n"]);
        for split in 1..body.len() {
            let parts = vec![body[..split].to_vec(), body[split..].to_vec()];
            assert_eq!(
                read_response(&parts).expect("read"),
                b"PACKrest",
                "split {split}"
            );
        }
    }

    #[test]
    fn request_asks_for_one_object_shallow_without_progress() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let body = fetch_request(oid).expect("request");
        let mut reader = pkt::Reader::new(&body);
        let mut lines = Vec::new();
        while let Some(p) = reader.next_packet().expect("pkt-lines") {
            lines.push(match p {
                pkt::Packet::Data(d) => String::from_utf8_lossy(d).into_owned(),
                pkt::Packet::Delim => "DELIM".into(),
                pkt::Packet::Flush => "FLUSH".into(),
                pkt::Packet::ResponseEnd => "END".into(),
            });
        }
        assert_eq!(lines[0], "command=fetch\n");
        assert!(lines[1].starts_with("agent=driftless/"));
        assert_eq!(
            lines[2..],
            [
                "DELIM",
                "no-progress\n",
                "ofs-delta\n",
                "deepen 1\n",
                &format!("want {oid}\n"),
                "done\n",
                "FLUSH"
            ]
        );
    }

    #[test]
    fn a_fetch_answered_without_v2_asks_for_libgit2() {
        let (send, messages) = mpsc::sync_channel(1);
        send.send(Message::NotV2("HTTP status 400".into()))
            .expect("queue");
        let mut response = Response::new(&messages, Duration::from_secs(5));
        let e = response.read(&mut [0; 8]).expect_err("not v2");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }

    #[test]
    fn errors_and_surprises_in_the_answer_are_refused() {
        let unsupported = |e: &io::Error| e.kind() == io::ErrorKind::Unsupported;
        let cases: Vec<(Vec<u8>, &str, bool)> = vec![
            (
                packet(b"ERR upload-pack: not our ref\n"),
                "not our ref",
                false,
            ),
            (sections(&[b"\x03disk full\n"]), "disk full", false),
            (sections(&[b"\x05odd"]), "unknown side band 5", false),
            (packet(b"packfile-uris\n"), "by URI", false),
            (packet(b"NAK\n"), "answered the v2 fetch", true),
            (b"00".to_vec(), "ends before the pack", false),
            (b"zzzz".to_vec(), "pkt-line length", false),
            (
                {
                    let mut b = packet(b"shallow-info\n");
                    pkt::write_flush(&mut b);
                    b
                },
                "without a pack",
                false,
            ),
        ];
        for (body, says, is_unsupported) in cases {
            let e = read_response(&[body]).expect_err(says);
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
            assert_eq!(unsupported(&e), is_unsupported, "{e}");
        }
    }
}
