//! The hashing thread: each object's id is computed (SHA-1 with collision
//! detection, or SHA-256) on a thread of its own while the reader inflates the next
//! objects, and handed to the store in order. Apart from the reader, which
//! only feeds it, so that the hand-over of ids reads in one place.

use std::sync::mpsc;

use super::object::{ObjectFormat, ObjectHasher, ObjectId, ObjectKind};
use super::{ObjectStore, PackError};

/// Objects being hashed, queued for the hashing thread.
pub(super) const HASH_QUEUE: usize = 16;

/// Work for the hashing thread.
pub(super) enum HashOp {
    /// An object of this kind and size, at this offset, begins.
    Begin(u64, ObjectKind, u64),
    /// Its next bytes.
    Data(Vec<u8>),
    /// It is complete.
    End,
}

/// The reading side of the hashing thread: what was sent, and how many
/// ended objects still wait for their id.
pub(super) struct Hashing {
    pub(super) ops: mpsc::SyncSender<HashOp>,
    pub(super) ids: mpsc::Receiver<(u64, Option<ObjectId>)>,
    pub(super) pending: usize,
}

impl Hashing {
    pub(super) fn send(&self, op: HashOp) -> Result<(), PackError> {
        self.ops
            .send(op)
            .map_err(|_| PackError::Store("the hashing thread ended".into()))
    }

    pub(super) fn begin(&self, at: u64, kind: ObjectKind, size: u64) -> Result<(), PackError> {
        self.send(HashOp::Begin(at, kind, size))
    }

    /// Ends the object begun last, and passes on the ids computed so far.
    pub(super) fn end(&mut self, store: &mut impl ObjectStore) -> Result<(), PackError> {
        self.send(HashOp::End)?;
        self.pending += 1;
        self.settle(store, false)
    }

    /// Hands the store the ids computed so far; with `all`, waits for every
    /// pending one.
    pub(super) fn settle(
        &mut self,
        store: &mut impl ObjectStore,
        all: bool,
    ) -> Result<(), PackError> {
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

/// The hashing thread: each object's id is the `format` hash of
/// `"<kind> <size>\0"` and its content (`None`: a SHA-1 collision).
pub(super) fn hash_objects(
    format: ObjectFormat,
    queue: &mpsc::Receiver<HashOp>,
    ids: &mpsc::Sender<(u64, Option<ObjectId>)>,
) {
    let mut current: Option<(u64, ObjectHasher)> = None;
    for op in queue {
        match op {
            HashOp::Begin(offset, kind, size) => {
                current = Some((offset, ObjectHasher::object(format, kind.as_str(), size)));
            }
            HashOp::Data(bytes) => {
                if let Some((_, hasher)) = &mut current {
                    hasher.update(&bytes);
                }
            }
            HashOp::End => {
                if let Some((offset, hasher)) = current.take() {
                    if ids.send((offset, hasher.finish())).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
