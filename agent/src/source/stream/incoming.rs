//! The received objects of one release, as the pack parser hands them
//! over: what is kept and where, found again by computed id. Trust leads:
//! until the tag and its commit have verified nothing is written (the
//! staging directory stays empty, everything is held in memory within
//! [`bounds`](super::bounds)); after that a blob gets a file only when a
//! verified tree names it, once, and trees stay in memory. The decisions
//! are in `store` (the [`ObjectStore`](crate::source::pack::ObjectStore)
//! side); this file is the books and what the fetch and apply read.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use super::bounds::Bounds;
use super::trust::Gate;
use super::writer::Writer;
use crate::source::pack::{self, Begin, ObjectId, ObjectKind};
use crate::verify::{Trust, Verified, VerifyError};

/// The staging directory's place on the node.
pub const INCOMING_PATH: &str = "/var/lib/driftless/incoming";

/// The received objects of one release: named blobs as files in the
/// staging directory, the release's trees, commit and tag in memory. The
/// directory goes when this is dropped.
pub struct Incoming {
    pub(super) dir: PathBuf,
    pub(super) dir_fd: OwnedFd,
    pub(super) gate: Gate,
    /// What the verified trees name, once the gate opened.
    pub(super) named: Named,
    /// Every object still known, by its offset in the pack.
    pub(super) objects: HashMap<u64, Entry>,
    /// The offset of each id's object (the first, if it came twice).
    pub(super) ids: HashMap<ObjectId, u64>,
    /// Offsets of objects recognised and dropped, in pack order.
    pub(super) dropped: Vec<u64>,
    pub(super) current: Option<(Begin, Sink)>,
    pub(super) bounds: Bounds,
    /// Bytes held by [`Entry::Pending`] objects (compressed or whole), and
    /// how many of them there are.
    pub(super) pending_raw: usize,
    pub(super) pending_count: usize,
    /// Writes named blobs while the pack is read; gone once
    /// [`Incoming::settle`] ran.
    pub(super) writer: Option<Writer>,
    /// Why the pack was refused for good, once it was.
    pub(super) refusal: Option<Refusal>,
}

/// Why a pack was refused for good: no attempt will fetch it again.
#[derive(Debug)]
pub enum Refusal {
    /// The tag, or the commit it names, does not verify.
    Verify(VerifyError),
    /// A bound on what the pack may cost was crossed.
    Bound(String),
}

/// What the verified trees name.
#[derive(Debug, Default)]
pub(super) struct Named {
    /// Trees named, arrived or not.
    pub(super) trees: HashSet<ObjectId>,
    /// Named trees that have not arrived.
    pub(super) missing_trees: HashSet<ObjectId>,
    /// Blobs named, kept or not.
    pub(super) blobs: HashSet<ObjectId>,
    /// Named blobs not kept yet.
    pub(super) missing_blobs: HashSet<ObjectId>,
}

/// A received object.
pub(super) enum Entry {
    /// In memory: the verified tag and commit and the trees the release
    /// names (`named`), or an object held without a name yet (before the
    /// gate opened, or before the tree that may name it arrived).
    Memory {
        kind: ObjectKind,
        bytes: Vec<u8>,
        named: bool,
    },
    /// A blob whose id is being computed, held as the bytes it would be
    /// written from (and its base's offset, for a delta).
    Pending {
        size: u64,
        held: Held,
        base: Option<u64>,
    },
    /// An object only recognised: dropped once its id is known.
    Passing,
    /// A named blob, as a file in the staging directory; its SHA-256 is
    /// known once the writer is done.
    File {
        name: String,
        size: u64,
        sha256: Option<[u8; 32]>,
    },
    /// The same object as the one with this id, which came first.
    Same(ObjectId),
}

/// Where the object being read goes.
pub(super) enum Sink {
    /// Its inflated bytes, into memory.
    Memory(Vec<u8>),
    /// Its compressed bytes, or for a small blob its inflated bytes, into
    /// memory while its id is computed.
    Pending(Held),
    /// Nowhere.
    Pass,
}

/// How a blob waiting for its id is held.
pub(super) enum Held {
    /// Its compressed bytes from the pack (and, for a delta, its
    /// instructions): the writer inflates them again, so that a blob
    /// that inflates to 64 MiB costs what it took on the wire.
    Raw(Vec<u8>),
    /// Its bytes, inflated (a blob of at most [`WHOLE_BLOB_BYTES`]): the
    /// writer writes them as they are, without inflating twice.
    Whole(Vec<u8>),
}

impl Held {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Raw(bytes) | Self::Whole(bytes) => bytes.len(),
        }
    }
}

/// The largest blob held inflated while its id is computed.
pub(super) const WHOLE_BLOB_BYTES: u64 = 1024 * 1024;

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
    /// killed run, is removed first), for the objects of the tag `tag`
    /// named `name`, which `trust` must verify, within `max_bytes`.
    pub fn create(
        root: &Path,
        tag: ObjectId,
        name: &str,
        trust: &Trust,
        max_bytes: u64,
    ) -> io::Result<Self> {
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
            gate: Gate::new(tag, name, trust.clone()),
            named: Named::default(),
            objects: HashMap::new(),
            ids: HashMap::new(),
            dropped: Vec::new(),
            current: None,
            bounds: Bounds::new(max_bytes),
            pending_raw: 0,
            pending_count: 0,
            writer: Some(writer),
            refusal: None,
        })
    }

    /// Waits until every kept blob is written, and records their SHA-256.
    /// Call once the pack is read, before any blob is used.
    pub fn settle(&mut self) -> Result<(), String> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let digests = writer.finish()?;
        for entry in self.objects.values_mut() {
            if let Entry::File { name, sha256, .. } = entry {
                *sha256 = Some(
                    *digests
                        .get(name)
                        .ok_or_else(|| format!("blob file {name} was not written"))?,
                );
            }
        }
        Ok(())
    }

    /// Why the pack was refused for good, if it was.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// The verification of the tag, once it and its commit verified;
    /// else why the pack, read to its end, does not verify.
    pub fn verified(&mut self) -> Result<Verified, VerifyError> {
        if let Some(verified) = self.gate.verified() {
            return Ok(verified.clone());
        }
        let objects = &self.objects;
        let ids = &self.ids;
        Err(self.gate.never_verified(|id| memory(objects, ids, id)))
    }

    /// A tree, commit or tag received, with its kind.
    pub fn held(&self, id: &ObjectId) -> Option<(ObjectKind, &[u8])> {
        memory(&self.objects, &self.ids, id)
    }

    /// A blob received.
    pub fn blob(&self, id: &ObjectId) -> Option<StagedBlob<'_>> {
        match self.object(id)? {
            Entry::File {
                name,
                size,
                sha256: Some(sha256),
            } => Some(StagedBlob {
                dir: self.dir_fd.as_fd(),
                name,
                size: *size,
                sha256: *sha256,
            }),
            _ => None,
        }
    }

    /// The bytes of a received blob.
    pub fn blob_bytes(&self, id: &ObjectId) -> io::Result<Vec<u8>> {
        match self.object(id) {
            Some(Entry::File { name, .. }) => std::fs::read(self.dir.join(name)),
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
            for entry in pack::TreeEntries::new(raw, id.format()) {
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
    pub(super) fn object(&self, id: &ObjectId) -> Option<&Entry> {
        self.objects.get(self.ids.get(id)?)
    }
}

/// The tree, commit or tag with the id `id`, in memory.
fn memory<'a>(
    objects: &'a HashMap<u64, Entry>,
    ids: &HashMap<ObjectId, u64>,
    id: &ObjectId,
) -> Option<(ObjectKind, &'a [u8])> {
    match objects.get(ids.get(id)?)? {
        Entry::Memory { kind, bytes, .. } => Some((*kind, bytes)),
        _ => None,
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
