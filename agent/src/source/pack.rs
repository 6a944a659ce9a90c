//! Reading a git pack as it streams in (gitformat-pack(5), version 2).
//!
//! A first boot over HTTP(S) parses the pack while it arrives, instead of
//! letting libgit2 store and index it first and reading every blob back
//! afterwards: each object is inflated once, its id computed once (SHA-1
//! with collision detection, as git and libgit2 do), and its bytes handed to
//! an [`ObjectStore`] that writes them where they will be needed.
//!
//! The input is hostile until the release is verified: every length is
//! bounded, every delta is checked against its base and its declared sizes,
//! a delta base must have arrived before the delta (git's pack-objects
//! always writes bases first), and the pack's trailing checksum must match.
//! Nothing here decides trust; ids are computed, never believed.

use std::io::{self, Read};
use std::sync::mpsc;

use flate2::{Decompress, FlushDecompress, Status};
use sha1_checked::Digest as _;

/// The most objects a pack may hold.
pub const MAX_OBJECTS: u32 = 1_000_000;

/// The largest object (inflated, or a delta's instructions), in bytes.
pub const MAX_OBJECT_LEN: u64 = 64 * 1024 * 1024;

/// The most memory reserved ahead for an object, whatever size it declares
/// (a declared size is a claim until the bytes arrive).
pub const RESERVE: usize = 1024 * 1024;

/// A SHA-1 object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 20]);

impl ObjectId {
    /// Parses 40 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// The 40 hex digits.
    pub fn to_hex(&self) -> String {
        crate::root::hex(&self.0)
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The four kinds of git object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A commit.
    Commit,
    /// A tree.
    Tree,
    /// A blob (a file's content).
    Blob,
    /// An annotated tag.
    Tag,
}

impl ObjectKind {
    /// The name git hashes into the object's header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Tree => "tree",
            Self::Blob => "blob",
            Self::Tag => "tag",
        }
    }
}

/// Where a delta's base is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The object starting at this pack offset.
    Offset(u64),
    /// The object with this id.
    Id(ObjectId),
}

/// A pack that cannot be read. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the input failed (the connection, a timeout).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The input is not a well-formed pack.
    #[error("malformed pack at byte {offset}: {reason}")]
    Malformed {
        /// Where in the pack.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An object's bytes were crafted to collide under SHA-1.
    #[error("object at pack byte {offset} is a SHA-1 collision attack; refusing the pack")]
    Collision {
        /// Where in the pack.
        offset: u64,
    },
    /// The store refused or failed to keep an object.
    #[error("{0}")]
    Store(String),
}

/// Where the objects of a pack go, as they are read.
///
/// Ids are computed on a thread of their own while the next objects are
/// read, so an object's id reaches the store later, through
/// [`ObjectStore::identify`]. Every id of the objects ended so far has been
/// given before a delta asks for its base by id, and every id before
/// [`read_pack`] returns.
pub trait ObjectStore {
    /// An object of `kind` and `size` bytes, starting at pack `offset`, begins.
    fn begin(&mut self, offset: u64, kind: ObjectKind, size: u64) -> Result<(), String>;
    /// The next bytes of the object begun last.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The object begun last is complete.
    fn end(&mut self) -> Result<(), String>;
    /// The object that starts at `offset` has the id `id`.
    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String>;
    /// The kind and content of a complete object, for a delta built on it;
    /// `None` when no such object has been stored.
    fn load(&mut self, base: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String>;
}

/// What a pack held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Objects read.
    pub objects: u32,
    /// Bytes of the pack, trailer included.
    pub bytes: u64,
}

const BUFFER: usize = 64 * 1024;

/// Reads one pack from `input` into `store`, to its trailing checksum and the
/// end of the input.
pub fn read_pack(input: impl Read, store: &mut impl ObjectStore) -> Result<Summary, PackError> {
    std::thread::scope(|scope| {
        let (ops, queue) = mpsc::sync_channel(HASH_QUEUE);
        let (done, ids) = mpsc::channel();
        std::thread::Builder::new()
            .name("hash".into())
            .spawn_scoped(scope, move || hash_objects(&queue, &done))
            .map_err(PackError::Io)?;
        let mut hashing = Hashing {
            ops,
            ids,
            pending: 0,
        };
        let summary = read_objects(input, store, &mut hashing)?;
        hashing.settle(store, true)?;
        Ok(summary)
    })
}

fn read_objects(
    input: impl Read,
    store: &mut impl ObjectStore,
    hashing: &mut Hashing,
) -> Result<Summary, PackError> {
    let mut reader = Reader {
        input,
        buf: vec![0; BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
        offset: 0,
        checksum: sha1::Sha1::new(),
        zlib: Decompress::new(true),
        out: vec![0; BUFFER].into_boxed_slice(),
    };
    let mut header = [0u8; 12];
    reader.read_exact(&mut header)?;
    if &header[..4] != b"PACK" {
        return Err(reader.malformed(0, "does not start with PACK"));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(reader.malformed(4, format!("unsupported pack version {version}")));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if count > MAX_OBJECTS {
        return Err(reader.malformed(8, format!("{count} objects; at most {MAX_OBJECTS}")));
    }
    for _ in 0..count {
        reader.object(store, hashing)?;
    }
    let expected: [u8; 20] = reader.checksum.clone().finalize().into();
    let mut trailer = [0u8; 20];
    let at = reader.offset;
    reader.read_exact_unhashed(&mut trailer)?;
    if trailer != expected {
        return Err(reader.malformed(at, "the trailing checksum does not match"));
    }
    if reader.fill()? {
        return Err(reader.malformed(reader.offset, "data after the trailing checksum"));
    }
    Ok(Summary {
        objects: count,
        bytes: reader.offset,
    })
}

struct Reader<R> {
    input: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The pack offset of `buf[start]`.
    offset: u64,
    /// SHA-1 of every pack byte consumed so far (the trailer checks it; it
    /// names no object, so it needs no collision detection).
    checksum: sha1::Sha1,
    zlib: Decompress,
    out: Box<[u8]>,
}

impl<R: Read> Reader<R> {
    fn malformed(&self, offset: u64, reason: impl Into<String>) -> PackError {
        PackError::Malformed {
            offset,
            reason: reason.into(),
        }
    }

    /// Makes sure unread input is buffered; false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        self.start = 0;
        self.end = 0;
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.checksum.update(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.offset += n as u64;
    }

    fn truncated(&self) -> PackError {
        self.malformed(self.offset, "the pack ends early")
    }

    fn byte(&mut self) -> Result<u8, PackError> {
        if !self.fill()? {
            return Err(self.truncated());
        }
        let b = self.buf[self.start];
        self.consume(1);
        Ok(b)
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), PackError> {
        for slot in out {
            *slot = self.byte()?;
        }
        Ok(())
    }

    fn read_exact_unhashed(&mut self, out: &mut [u8]) -> Result<(), PackError> {
        for slot in out {
            if !self.fill()? {
                return Err(self.truncated());
            }
            *slot = self.buf[self.start];
            self.start += 1;
            self.offset += 1;
        }
        Ok(())
    }

    /// One object: its header, its (inflated) data, its id.
    fn object(
        &mut self,
        store: &mut impl ObjectStore,
        hashing: &mut Hashing,
    ) -> Result<(), PackError> {
        let at = self.offset;
        let first = self.byte()?;
        let code = (first >> 4) & 7;
        let mut size = u64::from(first & 0x0f);
        let mut shift = 4;
        let mut more = first & 0x80 != 0;
        while more {
            let b = self.byte()?;
            if shift > 57 {
                return Err(self.malformed(at, "object size does not fit 64 bits"));
            }
            size |= u64::from(b & 0x7f) << shift;
            shift += 7;
            more = b & 0x80 != 0;
        }
        if size > MAX_OBJECT_LEN {
            return Err(self.malformed(
                at,
                format!("an object of {size} bytes; at most {MAX_OBJECT_LEN}"),
            ));
        }
        let kind = match code {
            1 => Some(ObjectKind::Commit),
            2 => Some(ObjectKind::Tree),
            3 => Some(ObjectKind::Blob),
            4 => Some(ObjectKind::Tag),
            6 | 7 => None,
            other => return Err(self.malformed(at, format!("unknown object type {other}"))),
        };
        let store_err = |e: String| PackError::Store(e);
        if let Some(kind) = kind {
            hashing.begin(at, kind, size)?;
            store.begin(at, kind, size).map_err(store_err)?;
            self.inflate(at, size, |bytes| {
                hashing.send(HashOp::Data(bytes.to_vec()))?;
                store.write(bytes).map_err(PackError::Store)
            })?;
            store.end().map_err(store_err)?;
            return hashing.end(store);
        }
        let base = if code == 6 {
            let distance = self.ofs_distance(at)?;
            Base::Offset(
                at.checked_sub(distance)
                    .filter(|_| distance > 0)
                    .ok_or_else(|| self.malformed(at, "a delta base before the pack's start"))?,
            )
        } else {
            let mut id = [0u8; 20];
            self.read_exact(&mut id)?;
            Base::Id(ObjectId(id))
        };
        let mut delta = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(RESERVE));
        self.inflate(at, size, |bytes| {
            delta.extend_from_slice(bytes);
            Ok(())
        })?;
        if let Base::Id(_) = base {
            // The base may be any object read so far: wait for every id.
            hashing.settle(store, true)?;
        }
        let (kind, base_bytes) = store
            .load(base)
            .map_err(store_err)?
            .ok_or_else(|| self.malformed(at, format!("delta base {base:?} has not arrived")))?;
        let result =
            apply_delta(&base_bytes, &delta).map_err(|reason| self.malformed(at, reason))?;
        drop(base_bytes);
        let len = result.len() as u64;
        hashing.begin(at, kind, len)?;
        store.begin(at, kind, len).map_err(store_err)?;
        store.write(&result).map_err(store_err)?;
        store.end().map_err(store_err)?;
        hashing.send(HashOp::Data(result))?;
        hashing.end(store)
    }

    /// The distance back to an offset delta's base (git's offset encoding).
    fn ofs_distance(&mut self, at: u64) -> Result<u64, PackError> {
        let mut b = self.byte()?;
        let mut distance = u64::from(b & 0x7f);
        while b & 0x80 != 0 {
            b = self.byte()?;
            distance = distance
                .checked_add(1)
                .and_then(|d| d.checked_mul(128))
                .map(|d| d | u64::from(b & 0x7f))
                .filter(|&d| d <= at)
                .ok_or_else(|| self.malformed(at, "a delta base before the pack's start"))?;
        }
        Ok(distance)
    }

    /// Inflates one zlib stream of exactly `size` bytes, handing them to `sink`.
    fn inflate(
        &mut self,
        at: u64,
        size: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        self.zlib.reset(true);
        let mut produced = 0u64;
        loop {
            if !self.fill()? {
                return Err(self.truncated());
            }
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let status = self
                .zlib
                .decompress(
                    &self.buf[self.start..self.end],
                    &mut self.out,
                    FlushDecompress::None,
                )
                .map_err(|e| self.malformed(at, format!("bad compressed data: {e}")))?;
            let used = (self.zlib.total_in() - in_before) as usize;
            let made = (self.zlib.total_out() - out_before) as usize;
            self.consume(used);
            produced += made as u64;
            if produced > size {
                return Err(self.malformed(at, format!("inflates past its size of {size} bytes")));
            }
            sink(&self.out[..made])?;
            match status {
                Status::StreamEnd => break,
                _ if used == 0 && made == 0 && self.start < self.end => {
                    return Err(self.malformed(at, "compressed data makes no progress"));
                }
                _ => {}
            }
        }
        if produced != size {
            return Err(self.malformed(
                at,
                format!("inflates to {produced} bytes, not the {size} it declares"),
            ));
        }
        Ok(())
    }
}

/// Objects being hashed, queued for the hashing thread.
const HASH_QUEUE: usize = 16;

/// Work for the hashing thread.
enum HashOp {
    /// An object of this kind and size, at this offset, begins.
    Begin(u64, ObjectKind, u64),
    /// Its next bytes.
    Data(Vec<u8>),
    /// It is complete.
    End,
}

/// The reading side of the hashing thread: what was sent, and how many
/// ended objects still wait for their id.
struct Hashing {
    ops: mpsc::SyncSender<HashOp>,
    ids: mpsc::Receiver<(u64, Option<ObjectId>)>,
    pending: usize,
}

impl Hashing {
    fn send(&self, op: HashOp) -> Result<(), PackError> {
        self.ops
            .send(op)
            .map_err(|_| PackError::Store("the hashing thread ended".into()))
    }

    fn begin(&self, at: u64, kind: ObjectKind, size: u64) -> Result<(), PackError> {
        self.send(HashOp::Begin(at, kind, size))
    }

    /// Ends the object begun last, and passes on the ids computed so far.
    fn end(&mut self, store: &mut impl ObjectStore) -> Result<(), PackError> {
        self.send(HashOp::End)?;
        self.pending += 1;
        self.settle(store, false)
    }

    /// Hands the store the ids computed so far; with `all`, waits for every
    /// pending one.
    fn settle(&mut self, store: &mut impl ObjectStore, all: bool) -> Result<(), PackError> {
        while self.pending > 0 {
            let next = if all {
                self.ids.recv().ok()
            } else {
                match self.ids.try_recv() {
                    Ok(next) => Some(next),
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let (offset, id) =
                next.ok_or_else(|| PackError::Store("the hashing thread ended".into()))?;
            self.pending -= 1;
            let id = id.ok_or(PackError::Collision { offset })?;
            store.identify(offset, id).map_err(PackError::Store)?;
        }
        Ok(())
    }
}

/// The hashing thread: each object's id is SHA-1 of `"<kind> <size>\0"`
/// and its content, with collision detection (`None`: a collision).
fn hash_objects(queue: &mpsc::Receiver<HashOp>, ids: &mpsc::Sender<(u64, Option<ObjectId>)>) {
    let mut current: Option<(u64, sha1_checked::Sha1)> = None;
    for op in queue {
        match op {
            HashOp::Begin(offset, kind, size) => {
                let mut hasher = sha1_checked::Sha1::new();
                hasher.update(format!("{} {size}\0", kind.as_str()).as_bytes());
                current = Some((offset, hasher));
            }
            HashOp::Data(bytes) => {
                if let Some((_, hasher)) = &mut current {
                    hasher.update(&bytes);
                }
            }
            HashOp::End => {
                if let Some((offset, hasher)) = current.take() {
                    let result = hasher.try_finalize();
                    let id = (!result.has_collision()).then(|| ObjectId((*result.hash()).into()));
                    if ids.send((offset, id)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A delta's little-endian base-128 size.
fn delta_size(delta: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *delta.get(*pos).ok_or("a delta ends inside its header")?;
        *pos += 1;
        if shift > 63 {
            return Err("a delta size does not fit 64 bits".into());
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Rebuilds an object from its base and a delta (copy and insert
/// instructions, gitformat-pack(5)), checking every bound.
pub fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    let mut pos = 0;
    let base_len = delta_size(delta, &mut pos)?;
    if base_len != base.len() as u64 {
        return Err(format!(
            "a delta for a base of {base_len} bytes applied to one of {}",
            base.len()
        ));
    }
    let result_len = delta_size(delta, &mut pos)?;
    if result_len > MAX_OBJECT_LEN {
        return Err(format!(
            "a delta result of {result_len} bytes; at most {MAX_OBJECT_LEN}"
        ));
    }
    let result_len = result_len as usize;
    let mut out = Vec::with_capacity(result_len.min(RESERVE));
    while pos < delta.len() {
        let cmd = delta[pos];
        pos += 1;
        if cmd & 0x80 != 0 {
            let mut field = |bits: u8, count: usize| -> Result<usize, String> {
                let mut value = 0usize;
                for i in 0..count {
                    if bits & (1 << i) != 0 {
                        let b = *delta.get(pos).ok_or("a delta ends inside a copy")?;
                        pos += 1;
                        value |= usize::from(b) << (8 * i);
                    }
                }
                Ok(value)
            };
            let offset = field(cmd & 0x0f, 4)?;
            let mut len = field((cmd >> 4) & 0x07, 3)?;
            if len == 0 {
                len = 0x10000;
            }
            let copied = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or("a delta copies from outside its base")?;
            if out.len() + len > result_len {
                return Err("a delta writes past its declared result".into());
            }
            out.extend_from_slice(copied);
        } else if cmd != 0 {
            let len = usize::from(cmd);
            let inserted = delta
                .get(pos..pos + len)
                .ok_or("a delta ends inside an insert")?;
            if out.len() + len > result_len {
                return Err("a delta writes past its declared result".into());
            }
            out.extend_from_slice(inserted);
            pos += len;
        } else {
            return Err("a delta holds the reserved instruction 0".into());
        }
    }
    if out.len() != result_len {
        return Err(format!(
            "a delta builds {} bytes, not the {result_len} it declares",
            out.len()
        ));
    }
    Ok(out)
}

/// Every entry of a release tree by path: object id and git mode.
pub type TreeIndex = std::collections::HashMap<String, (ObjectId, u32)>;

/// The most entries a release tree may have, subtrees included (a tree that
/// names the same subtree many times could otherwise multiply its paths):
/// four times the node spec's own limit on entries.
pub const MAX_TREE_ENTRIES: usize = 400_000;

/// The entries of a tree object, parsed strictly: `<octal mode> <name>\0<20-byte id>`.
pub struct TreeEntries<'a>(pub &'a [u8]);

impl<'a> Iterator for TreeEntries<'a> {
    type Item = Result<(u32, &'a str, ObjectId), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let entry = (|| {
            let space = self.0.iter().position(|&b| b == b' ').ok_or("no mode")?;
            let mode = std::str::from_utf8(&self.0[..space]).map_err(|_| "a bad mode")?;
            if mode.is_empty() || mode.len() > 6 || mode.starts_with('0') {
                return Err("a bad mode");
            }
            let mode = u32::from_str_radix(mode, 8).map_err(|_| "a bad mode")?;
            let rest = &self.0[space + 1..];
            let nul = rest.iter().position(|&b| b == 0).ok_or("no name end")?;
            let name = std::str::from_utf8(&rest[..nul]).map_err(|_| "a name that is not UTF-8")?;
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err("a bad name");
            }
            let id: [u8; 20] = rest
                .get(nul + 1..nul + 21)
                .ok_or("an entry cut short")?
                .try_into()
                .map_err(|_| "an entry cut short")?;
            self.0 = &rest[nul + 21..];
            Ok((mode, name, ObjectId(id)))
        })();
        if entry.is_err() {
            self.0 = &[];
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::process::{Command, Stdio};

    /// Keeps every object in memory.
    #[derive(Default)]
    struct Memory {
        by_offset: HashMap<u64, (ObjectKind, Vec<u8>)>,
        objects: HashMap<ObjectId, (ObjectKind, Vec<u8>)>,
        ids: HashMap<ObjectId, u64>,
        current: Option<(u64, ObjectKind, Vec<u8>)>,
    }

    impl ObjectStore for Memory {
        fn begin(&mut self, offset: u64, kind: ObjectKind, size: u64) -> Result<(), String> {
            self.current = Some((offset, kind, Vec::with_capacity(size as usize)));
            Ok(())
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.current
                .as_mut()
                .ok_or("no object")?
                .2
                .extend_from_slice(bytes);
            Ok(())
        }
        fn end(&mut self) -> Result<(), String> {
            let (offset, kind, bytes) = self.current.take().ok_or("no object")?;
            self.by_offset.insert(offset, (kind, bytes));
            Ok(())
        }
        fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
            let object = self.by_offset.get(&offset).ok_or("unknown offset")?.clone();
            self.ids.entry(id).or_insert(offset);
            self.objects.entry(id).or_insert(object);
            Ok(())
        }
        fn load(&mut self, base: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String> {
            let offset = match base {
                Base::Id(id) => self.ids.get(&id).copied(),
                Base::Offset(o) => Some(o),
            };
            Ok(offset.and_then(|o| self.by_offset.get(&o).cloned()))
        }
    }

    fn git(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .stderr(Stdio::inherit())
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}");
        out.stdout
    }

    /// A repository whose files are near copies of each other (so that
    /// pack-objects makes deltas), and a pack of all of it made by git.
    fn fixture(ofs_delta: bool) -> (tempfile::TempDir, Vec<u8>, Vec<(String, String)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        git(path, &["init", "-q", "-b", "main", "."]);
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!(
                "line {i} of a file that pack-objects will deltify\n"
            ));
        }
        for n in 0..6 {
            let mut variant = text.clone();
            variant.push_str(&format!("variant {n}\n"));
            std::fs::write(path.join(format!("f{n}.txt")), variant).expect("write");
        }
        git(path, &["add", "."]);
        git(path, &["commit", "-q", "-m", "one"]);
        git(path, &["tag", "-a", "-m", "a tag", "v1"]);
        let listed =
            String::from_utf8(git(path, &["rev-list", "--objects", "--all"])).expect("utf-8");
        let ids: Vec<(String, String)> = listed
            .lines()
            .map(|l| {
                let id = l.split(' ').next().unwrap_or_default().to_owned();
                let kind = String::from_utf8(git(path, &["cat-file", "-t", &id]))
                    .expect("utf-8")
                    .trim()
                    .to_owned();
                (id, kind)
            })
            .collect();
        let mut args = vec!["pack-objects", "--stdout", "--revs", "-q"];
        if ofs_delta {
            args.push("--delta-base-offset");
        }
        let mut child = Command::new("git")
            .args(&args)
            .current_dir(path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("pack-objects");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(b"refs/tags/v1\n").expect("write revs");
        }
        let out = child.wait_with_output().expect("pack-objects output");
        assert!(out.status.success());
        (dir, out.stdout, ids)
    }

    #[test]
    fn reads_what_git_packs_with_both_kinds_of_delta() {
        for ofs in [true, false] {
            let (dir, pack, ids) = fixture(ofs);
            let mut store = Memory::default();
            let summary = read_pack(&pack[..], &mut store).expect("read pack");
            assert_eq!(summary.objects as usize, ids.len());
            assert_eq!(summary.bytes, pack.len() as u64);
            for (id, kind) in &ids {
                let oid = ObjectId::from_hex(id).expect("hex");
                let (found_kind, bytes) = store.objects.get(&oid).expect("object present");
                assert_eq!(found_kind.as_str(), kind);
                let expected = git(dir.path(), &["cat-file", kind, id]);
                assert_eq!(bytes, &expected, "{kind} {id}");
            }
        }
    }

    #[test]
    fn git_made_deltas_of_the_fixture() {
        // The test above is worth something only if the packs hold deltas.
        struct Loads(Vec<Base>, Memory);
        impl ObjectStore for Loads {
            fn begin(&mut self, o: u64, k: ObjectKind, s: u64) -> Result<(), String> {
                self.1.begin(o, k, s)
            }
            fn write(&mut self, b: &[u8]) -> Result<(), String> {
                self.1.write(b)
            }
            fn end(&mut self) -> Result<(), String> {
                self.1.end()
            }
            fn identify(&mut self, o: u64, id: ObjectId) -> Result<(), String> {
                self.1.identify(o, id)
            }
            fn load(&mut self, b: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String> {
                self.0.push(b);
                self.1.load(b)
            }
        }
        for ofs in [true, false] {
            let (_dir, pack, _) = fixture(ofs);
            let mut loads = Loads(Vec::new(), Memory::default());
            read_pack(&pack[..], &mut loads).expect("read");
            assert!(
                !loads.0.is_empty(),
                "pack-objects deltified the near copies"
            );
            assert!(
                loads.0.iter().all(|b| matches!(b, Base::Offset(_)) == ofs),
                "offset deltas exactly when asked for"
            );
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let (_dir, pack, _) = fixture(true);
        for cut in (0..pack.len()).step_by(97).chain([pack.len() - 1]) {
            let result = read_pack(&pack[..cut], &mut Memory::default());
            assert!(result.is_err(), "a pack cut at {cut} was accepted");
        }
        let mut extra = pack.clone();
        extra.push(0);
        assert!(read_pack(&extra[..], &mut Memory::default()).is_err());
        for at in (0..pack.len()).step_by(53) {
            let mut bad = pack.clone();
            bad[at] ^= 0x40;
            assert!(
                read_pack(&bad[..], &mut Memory::default()).is_err(),
                "a pack with byte {at} flipped was accepted"
            );
        }
    }

    #[test]
    fn deltas_are_bounded() {
        let base = b"0123456789";
        // base size 10, result 4: copy 4 bytes from offset 2.
        assert_eq!(
            apply_delta(base, &[10, 4, 0x91, 2, 4]).expect("copy"),
            b"2345"
        );
        // insert.
        assert_eq!(
            apply_delta(base, &[10, 3, 3, b'a', b'b', b'c']).expect("insert"),
            b"abc"
        );
        for (delta, why) in [
            (&[9, 4, 0x91, 2, 4][..], "wrong base size"),
            (&[10, 4, 0x91, 8, 4][..], "copy past the base"),
            (&[10, 3, 0x91, 2, 4][..], "writes past the result"),
            (&[10, 5, 0x91, 2, 4][..], "result too short"),
            (&[10, 4, 0][..], "reserved instruction"),
            (&[10, 4, 5, b'a'][..], "insert past the end"),
            (&[10][..], "header cut"),
            (&[10, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..], "huge result"),
        ] {
            assert!(apply_delta(base, delta).is_err(), "{why}");
        }
    }

    #[test]
    fn object_ids_round_trip() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(ObjectId::from_hex(hex).expect("hex").to_hex(), hex);
        assert!(ObjectId::from_hex(&hex.to_uppercase()).is_none());
        assert!(ObjectId::from_hex(&hex[1..]).is_none());
    }

    #[test]
    fn tree_entries_parse_strictly() {
        let mut raw = b"100644 a.txt\0".to_vec();
        raw.extend_from_slice(&[1; 20]);
        raw.extend_from_slice(b"40000 dir\0");
        raw.extend_from_slice(&[2; 20]);
        let entries: Vec<_> = TreeEntries(&raw).collect::<Result<_, _>>().expect("parse");
        assert_eq!(
            entries,
            vec![
                (0o100644, "a.txt", ObjectId([1; 20])),
                (0o40000, "dir", ObjectId([2; 20]))
            ]
        );
        for bad in [
            &b"100644 a\0short"[..],
            b"0100644 a\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 ..\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 a/b\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 \0aaaaaaaaaaaaaaaaaaaa",
            b"10x644 a\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 a",
        ] {
            assert!(
                TreeEntries(bad).any(|e| e.is_err()),
                "{:?} was accepted",
                bad.escape_ascii().to_string()
            );
        }
    }
}
