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
//!
//! This file is the reader ([`read_pack`]) and its store interface
//! ([`ObjectStore`]). Beside it: `object` (ids and kinds), `hash` (the
//! hashing thread), `delta` ([`apply_delta`]) and `tree` (tree entries
//! and the [`TreeIndex`]).

use std::io::{self, Read};
use std::sync::mpsc;

use flate2::{Decompress, FlushDecompress, Status};
use sha1_checked::Digest as _;

mod delta;
mod hash;
mod object;
mod tree;

pub use delta::apply_delta;
pub use object::{Base, ObjectId, ObjectKind};
pub use tree::{MAX_TREE_ENTRIES, TreeEntries, TreeIndex};

use hash::{HASH_QUEUE, HashOp, Hashing, hash_objects};

/// The most objects a pack may hold.
pub const MAX_OBJECTS: u32 = 1_000_000;

/// The largest object (inflated, or a delta's instructions), in bytes.
pub const MAX_OBJECT_LEN: u64 = 64 * 1024 * 1024;

/// The most memory reserved ahead for an object, whatever size it declares
/// (a declared size is a claim until the bytes arrive).
pub const RESERVE: usize = 1024 * 1024;

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
}
