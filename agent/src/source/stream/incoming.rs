//! The received objects of one release, as the pack parser hands them
//! over ([`ObjectStore`]): blobs go to files in a private staging
//! directory (through the writing thread), trees, commits and tags stay in
//! memory, and each is found again by its computed id. Apart from the
//! fetch itself, which only drives the transfer and the verification.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use super::writer::{WriteOp, Writer};
use crate::source::pack::{self, Base, ObjectId, ObjectKind, ObjectStore};

/// The staging directory's place on the node.
pub const INCOMING_PATH: &str = "/var/lib/driftless/incoming";

/// Trees, commits and tags are kept in memory; at most this many bytes of them.
const MAX_HELD: usize = 64 * 1024 * 1024;

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
