//! Reading a git pack as it streams in (gitformat-pack(5), version 2).
//!
//! A first boot over HTTP(S) parses the pack while it arrives, instead of
//! letting libgit2 store and index it first and reading every blob back
//! afterwards: each object is inflated, its id computed (SHA-1 with
//! collision detection, as git and libgit2 do, or SHA-256 in a SHA-256
//! repository), and its bytes handed to an
//! [`ObjectStore`], which decides what to keep: the store is where trust
//! leads (see `source::stream`).
//!
//! The input is hostile until the release is verified: every length is
//! bounded, an object may not take more compressed bytes than deflate ever
//! needs for it, every delta is checked against its base and its declared
//! sizes and applied as it streams (neither it nor its result is ever
//! whole in memory), a delta base must have arrived, and been kept, before
//! the delta (git's pack-objects always writes bases first), and the pack's
//! trailing checksum must match. Nothing here decides trust; ids are
//! computed, never believed.
//!
//! This file is the store interface ([`ObjectStore`]) and the entry point
//! ([`read_pack`]). Beside it: `reader` (the byte-level reader), `object`
//! (ids and kinds), `hash` (the hashing thread), `delta` ([`apply_delta`],
//! whole), `delta_stream` ([`DeltaStream`], as the bytes arrive) and `tree`
//! (tree entries and the [`TreeIndex`]).

use std::io::{self, Read};
use std::sync::mpsc;

mod delta;
mod delta_stream;
mod hash;
mod object;
mod reader;
mod tree;

pub use delta::apply_delta;
pub use delta_stream::{DeltaBase, DeltaError, DeltaSink, DeltaStream, OUT_CHUNK, apply_streamed};
pub use object::{Base, ObjectFormat, ObjectHasher, ObjectId, ObjectKind};
pub use tree::{MAX_TREE_ENTRIES, TreeEntries, TreeIndex, index_tree};

use hash::{HASH_QUEUE, Hashing, hash_objects};

/// The most objects a pack may hold.
pub const MAX_OBJECTS: u32 = 1_000_000;

/// The largest object (inflated, or a delta's instructions), in bytes.
pub const MAX_OBJECT_LEN: u64 = 64 * 1024 * 1024;

/// The most memory reserved ahead for an object, whatever size it declares
/// (a declared size is a claim until the bytes arrive).
pub const RESERVE: usize = 1024 * 1024;

/// The most compressed bytes an object of `size` inflated bytes may take:
/// deflate never needs more than an eighth on top (zlib's own bound is far
/// below that), plus room for its headers. A stream that takes more is
/// padding, and would make a store that keeps compressed bytes hold them.
pub fn max_compressed(size: u64) -> u64 {
    size + size / 8 + 1024
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

/// An object as it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// Its offset in the pack.
    pub offset: u64,
    /// Its kind (a delta's is its base's).
    pub kind: ObjectKind,
    /// Its size in bytes (a delta's: of its result).
    pub size: u64,
    /// For a delta: the offset of its base, and the size of its instructions.
    pub delta: Option<(u64, u64)>,
}

/// The object a delta builds on, as the store has it.
pub struct BaseObject {
    /// Its offset in the pack.
    pub offset: u64,
    /// Its kind.
    pub kind: ObjectKind,
    /// Where its bytes are.
    pub bytes: BaseBytes,
}

/// Where a delta base's bytes are.
pub enum BaseBytes {
    /// In memory.
    Memory(Vec<u8>),
    /// In a file of this length, read a range at a time.
    File(std::fs::File, u64),
    /// In a file from this offset on, of this length.
    Span(std::fs::File, u64, u64),
}

impl DeltaBase for BaseBytes {
    fn len(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::File(_, len) | Self::Span(_, _, len) => *len,
        }
    }

    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt as _;
        match self {
            Self::Memory(bytes) => bytes.as_slice().read_at(offset, out),
            Self::File(file, _) => file
                .read_exact_at(out, offset)
                .map_err(|e| format!("cannot read a delta base back: {e}")),
            Self::Span(file, start, _) => file
                .read_exact_at(out, *start + offset)
                .map_err(|e| format!("cannot read a delta base back: {e}")),
        }
    }
}

/// Where the objects of a pack go, as they are read.
///
/// Ids are computed on a thread of their own while the next objects are
/// read, so an object's id reaches the store later, through
/// [`ObjectStore::identify`]. Every id of the objects ended so far has been
/// given before a delta asks for its base, when the store
/// [wants every id](ObjectStore::wants_every_id) before the next object,
/// and before [`read_pack`] returns.
pub trait ObjectStore {
    /// An object begins.
    fn begin(&mut self, object: Begin) -> Result<(), String>;
    /// The next compressed bytes of the object begun last, exactly as the
    /// pack holds them (for a delta, its instructions' zlib stream), from
    /// the first to the last. A store that keeps nothing ignores them.
    fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let _ = bytes;
        Ok(())
    }
    /// The next inflated bytes of the object begun last (for a delta, of
    /// its result).
    fn write(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The object begun last is complete.
    fn end(&mut self) -> Result<(), String>;
    /// The object that starts at `offset` has the id `id`.
    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String>;
    /// The object a delta builds on; `None` when no such object was kept.
    fn base(&mut self, base: Base) -> Result<Option<BaseObject>, String>;
    /// True when the store wants the id of every object read so far before
    /// the next one begins (while it waits for the objects trust needs).
    fn wants_every_id(&self) -> bool {
        false
    }
}

/// What a pack held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Objects read.
    pub objects: u32,
    /// Bytes of the pack, trailer included.
    pub bytes: u64,
}

/// Reads one pack of a `format` repository from `input` into `store`, to
/// its trailing checksum and the end of the input. The format decides the
/// ids (computed, and a delta's base), the trailer and the tree entries.
pub fn read_pack(
    input: impl Read,
    format: ObjectFormat,
    store: &mut impl ObjectStore,
) -> Result<Summary, PackError> {
    std::thread::scope(|scope| {
        let (ops, queue) = mpsc::sync_channel(HASH_QUEUE);
        let (done, ids) = mpsc::channel();
        std::thread::Builder::new()
            .name("hash".into())
            .spawn_scoped(scope, move || hash_objects(format, &queue, &done))
            .map_err(PackError::Io)?;
        let mut hashing = Hashing {
            ops,
            ids,
            pending: 0,
        };
        let summary = reader::read_objects(input, format, store, &mut hashing)?;
        hashing.settle(store, true)?;
        Ok(summary)
    })
}

#[cfg(test)]
mod tests;
