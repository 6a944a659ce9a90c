//! Where each received object goes, decided as it arrives: the
//! [`ObjectStore`] side of [`Incoming`]. Trust leads:
//!
//! - until the tag and its commit verify, every object is held in memory,
//!   within the unnamed bound, and the reader hands over every id before
//!   the next object, so the gate opens the moment both are in;
//! - then the verified commit's tree is named; a tree that arrives and is
//!   named names its entries in turn; a named tree is held in memory;
//! - a blob a named tree names is written, once, by the writing thread:
//!   from memory if it was held; else, while its id is computed, a blob
//!   of at most 1 MiB is held inflated and written from those bytes, and
//!   a larger one is held as its compressed bytes, which the writer
//!   inflates again (so a blob that inflates to 64 MiB costs what it took
//!   on the wire, not 64 MiB);
//! - anything else is recognised (inflated, hashed) and dropped, and
//!   counts against the unnamed bound; a delta built on a dropped object
//!   refuses the pack.
//!
//! Apart from `incoming`, which keeps the books and answers the fetch and
//! apply, because this is the policy.

use super::bounds::{Crossed, PENDING_RAW_BYTES};
use super::incoming::{Entry, Held, Incoming, Refusal, Sink, WHOLE_BLOB_BYTES};
use super::writer::{Source, Writer};
use crate::source::pack::{
    Base, BaseBytes, BaseObject, Begin, ObjectId, ObjectKind, ObjectStore, RESERVE, TreeEntries,
};

impl Incoming {
    fn trusted(&self) -> bool {
        self.gate.verified().is_some()
    }

    /// Every tree the release names has arrived: what is not named now
    /// never will be.
    fn trees_final(&self) -> bool {
        self.trusted() && self.named.missing_trees.is_empty()
    }

    /// Records why the pack is refused for good; the reader's error.
    fn refuse(&mut self, refusal: Refusal) -> String {
        let text = match &refusal {
            Refusal::Verify(e) => e.to_string(),
            Refusal::Bound(why) => why.clone(),
        };
        self.refusal.get_or_insert(refusal);
        text
    }

    fn crossed(&mut self, crossed: Crossed) -> String {
        self.refuse(Refusal::Bound(crossed.0))
    }

    fn unnamed(&mut self, size: u64) -> Result<(), String> {
        let trusted = self.trusted();
        self.bounds
            .unnamed(size, trusted)
            .map_err(|c| self.crossed(c))
    }

    fn writer(&self) -> Result<&Writer, String> {
        self.writer
            .as_ref()
            .ok_or_else(|| "a blob after the pack was settled".to_owned())
    }

    /// Where the object `object` goes, charged to its bound.
    fn sink_for(&mut self, object: &Begin) -> Result<Sink, String> {
        let size = object.size;
        let memory = || Sink::Memory(Vec::with_capacity((size as usize).min(RESERVE)));
        if !self.trusted() {
            self.unnamed(size)?;
            return Ok(memory());
        }
        let final_ = self.trees_final();
        match object.kind {
            ObjectKind::Tree if !final_ => {
                self.bounds.hold_named(size).map_err(|c| self.crossed(c))?;
                Ok(memory())
            }
            ObjectKind::Blob if !final_ => {
                self.unnamed(size)?;
                Ok(memory())
            }
            ObjectKind::Blob if !self.named.missing_blobs.is_empty() => {
                Ok(Sink::Pending(if size <= WHOLE_BLOB_BYTES {
                    Held::Whole(Vec::with_capacity(size as usize))
                } else {
                    Held::Raw(Vec::new())
                }))
            }
            _ => {
                self.unnamed(size)?;
                Ok(Sink::Pass)
            }
        }
    }

    /// Verifies the tag and its commit if both are in; once they verify,
    /// names the release's tree.
    fn try_open(&mut self) -> Result<(), String> {
        let (objects, ids) = (&self.objects, &self.ids);
        let lookup = |id: &ObjectId| match objects.get(ids.get(id)?)? {
            Entry::Memory { kind, bytes, .. } => Some((*kind, bytes.as_slice())),
            _ => None,
        };
        let tree = match self.gate.try_verify(lookup) {
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.refuse(Refusal::Verify(e))),
            Ok(Some(verified)) => verified.tree.clone(),
        };
        let tree = ObjectId::from_hex(&tree)
            .ok_or_else(|| format!("the verified commit names {tree:?}, not a tree id"))?;
        // The tag and the commit are the release's own now.
        for id in self.gate.signed().into_iter().flatten() {
            let Some(Entry::Memory { bytes, named, .. }) =
                self.ids.get(&id).and_then(|o| self.objects.get_mut(o))
            else {
                continue;
            };
            *named = true;
            let size = bytes.len() as u64;
            self.bounds.named_after_all(size);
            if let Err(c) = self.bounds.hold_named(size) {
                return Err(self.crossed(c));
            }
        }
        self.name_tree(tree)?;
        self.sweep_if_final();
        Ok(())
    }

    /// A verified tree names the tree `root`.
    fn name_tree(&mut self, root: ObjectId) -> Result<(), String> {
        let mut trees = vec![root];
        while let Some(id) = trees.pop() {
            if !self.named.trees.insert(id) {
                continue;
            }
            let held = matches!(
                self.ids.get(&id).and_then(|o| self.objects.get(o)),
                Some(Entry::Memory {
                    kind: ObjectKind::Tree,
                    ..
                })
            );
            if !held {
                self.named.missing_trees.insert(id);
                continue;
            }
            let blobs = self.receive_tree(id, &mut trees)?;
            for blob in blobs {
                self.name_blob(blob)?;
            }
        }
        Ok(())
    }

    /// The named tree `id` is in memory: held as the release's, its
    /// subtrees pushed on `trees`, its blobs returned.
    fn receive_tree(
        &mut self,
        id: ObjectId,
        trees: &mut Vec<ObjectId>,
    ) -> Result<Vec<ObjectId>, String> {
        self.named.missing_trees.remove(&id);
        let Some(Entry::Memory { bytes, named, .. }) =
            self.ids.get(&id).and_then(|o| self.objects.get_mut(o))
        else {
            return Ok(Vec::new());
        };
        if !*named {
            // Held before it was named: it counted as unnamed until now.
            *named = true;
            let size = bytes.len() as u64;
            self.bounds.named_after_all(size);
            if let Err(c) = self.bounds.hold_named(size) {
                return Err(self.crossed(c));
            }
        }
        let Some(Entry::Memory { bytes, .. }) = self.ids.get(&id).and_then(|o| self.objects.get(o))
        else {
            return Ok(Vec::new());
        };
        let mut blobs = Vec::new();
        for entry in TreeEntries::new(bytes, id.format()) {
            // A malformed entry stops the naming here; the release's index
            // reports it.
            let Ok((mode, _, child)) = entry else { break };
            match mode {
                0o40000 => trees.push(child),
                0o160000 => {}
                _ => blobs.push(child),
            }
        }
        Ok(blobs)
    }

    /// A verified tree names the blob `id`.
    fn name_blob(&mut self, id: ObjectId) -> Result<(), String> {
        if !self.named.blobs.insert(id) {
            return Ok(());
        }
        let offset = self.ids.get(&id).copied();
        match offset.map(|o| (o, self.objects.get(&o))) {
            Some((
                offset,
                Some(Entry::Memory {
                    kind: ObjectKind::Blob,
                    ..
                }),
            )) => self.keep_memory(offset),
            Some(_) => Ok(()),
            None => {
                self.named.missing_blobs.insert(id);
                Ok(())
            }
        }
    }

    /// Writes the named blob held in memory at `offset`.
    fn keep_memory(&mut self, offset: u64) -> Result<(), String> {
        let Some(Entry::Memory {
            kind: ObjectKind::Blob,
            bytes,
            named,
        }) = self.objects.remove(&offset)
        else {
            return Err(format!("no blob held at pack byte {offset}"));
        };
        let size = bytes.len() as u64;
        if !named {
            self.bounds.named_after_all(size);
        }
        self.keep(offset, size, Source::Bytes(bytes), &[])
    }

    /// Has the writer write the named blob at `offset`, and books its file.
    fn keep(&mut self, offset: u64, size: u64, source: Source, raw: &[u8]) -> Result<(), String> {
        let name = offset.to_string();
        self.writer()?.keep(name.clone(), size, source, raw)?;
        self.objects.insert(
            offset,
            Entry::File {
                name,
                size,
                sha256: None,
            },
        );
        Ok(())
    }

    /// Once every named tree is in, what is held without a name never
    /// will have one: dropped.
    fn sweep_if_final(&mut self) {
        if !self.trees_final() {
            return;
        }
        let unnamed: std::collections::HashSet<u64> = self
            .objects
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Memory { named: false, .. }))
            .map(|(o, _)| *o)
            .collect();
        if unnamed.is_empty() {
            return;
        }
        self.ids.retain(|_, o| !unnamed.contains(o));
        self.objects.retain(|o, _| !unnamed.contains(o));
        self.dropped.extend(unnamed);
        self.dropped.sort_unstable();
    }

    /// The file of the kept blob at `offset` (following a repeat to the
    /// first), and its size.
    fn file_of(&self, offset: u64) -> Result<(String, u64), String> {
        let entry = match self.objects.get(&offset) {
            Some(Entry::Same(id)) => self.object(id),
            other => other,
        };
        match entry {
            Some(Entry::File { name, size, .. }) => Ok((name.clone(), *size)),
            _ => Err(format!("the delta base at pack byte {offset} was not kept")),
        }
    }

    /// A blob identified while its compressed bytes were held.
    fn pending_identified(
        &mut self,
        offset: u64,
        id: ObjectId,
        size: u64,
        held: Held,
        base: Option<u64>,
    ) -> Result<(), String> {
        self.pending_raw -= held.len();
        self.pending_count -= 1;
        if !self.named.missing_blobs.remove(&id) {
            self.unnamed(size)?;
            self.dropped.push(offset);
            return Ok(());
        }
        self.ids.insert(id, offset);
        let raw = match held {
            Held::Whole(bytes) => return self.keep(offset, size, Source::Bytes(bytes), &[]),
            Held::Raw(raw) => raw,
        };
        let source = match base {
            None => Source::Zlib,
            Some(base) => {
                let (base, len) = self.file_of(base)?;
                Source::Delta { base, len }
            }
        };
        self.keep(offset, size, source, &raw)
    }

    /// An object held in memory identified.
    fn memory_identified(
        &mut self,
        offset: u64,
        id: ObjectId,
        kind: ObjectKind,
        size: u64,
    ) -> Result<(), String> {
        if !self.trusted() {
            if self.gate.waits_for(&id) {
                self.try_open()?;
            }
            return Ok(());
        }
        match kind {
            ObjectKind::Tree if self.named.missing_trees.contains(&id) => {
                let mut trees = Vec::new();
                let blobs = self.receive_tree(id, &mut trees)?;
                for blob in blobs {
                    self.name_blob(blob)?;
                }
                for tree in trees {
                    self.name_tree(tree)?;
                }
            }
            ObjectKind::Tree => {
                // Held as if named until its id said otherwise.
                self.bounds.release_named(size);
                if let Some(Entry::Memory { named, .. }) = self.objects.get_mut(&offset) {
                    *named = false;
                }
                self.unnamed(size)?;
            }
            ObjectKind::Blob if self.named.missing_blobs.remove(&id) => {
                self.keep_memory(offset)?;
            }
            _ => {}
        }
        self.sweep_if_final();
        Ok(())
    }
}

impl ObjectStore for Incoming {
    fn begin(&mut self, object: Begin) -> Result<(), String> {
        let instructions = object.delta.map_or(0, |(_, len)| len);
        self.bounds
            .inflate(object.size, instructions)
            .map_err(|c| self.crossed(c))?;
        let sink = self.sink_for(&object)?;
        self.current = Some((object, sink));
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.bounds.raw(bytes.len()).map_err(|c| self.crossed(c))?;
        if let Some((_, Sink::Pending(Held::Raw(raw)))) = &mut self.current {
            raw.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.current {
            Some((_, Sink::Memory(held) | Sink::Pending(Held::Whole(held)))) => {
                held.extend_from_slice(bytes);
            }
            Some(_) => {}
            None => return Err("object data outside an object".into()),
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        let (object, sink) = self.current.take().ok_or("no object begun")?;
        let entry = match sink {
            Sink::Memory(bytes) => Entry::Memory {
                kind: object.kind,
                bytes,
                // A tree after the gate opened is held as the release's
                // until its id says otherwise.
                named: self.trusted() && object.kind == ObjectKind::Tree,
            },
            Sink::Pending(held) => {
                self.pending_raw += held.len();
                self.pending_count += 1;
                Entry::Pending {
                    size: object.size,
                    held,
                    base: object.delta.map(|(base, _)| base),
                }
            }
            Sink::Pass => Entry::Passing,
        };
        self.objects.insert(object.offset, entry);
        Ok(())
    }

    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        let entry = self
            .objects
            .remove(&offset)
            .ok_or_else(|| format!("an id for no object (pack byte {offset})"))?;
        if self.ids.contains_key(&id) {
            // The same object again: its first copy stands for it.
            match entry {
                Entry::Memory {
                    bytes, named: true, ..
                } => {
                    self.bounds.release_named(bytes.len() as u64);
                    self.unnamed(bytes.len() as u64)?;
                }
                Entry::Pending { size, held, .. } => {
                    self.pending_raw -= held.len();
                    self.pending_count -= 1;
                    self.unnamed(size)?;
                }
                _ => {}
            }
            self.objects.insert(offset, Entry::Same(id));
            return Ok(());
        }
        match entry {
            Entry::Memory { kind, bytes, named } => {
                let size = bytes.len() as u64;
                self.objects
                    .insert(offset, Entry::Memory { kind, bytes, named });
                self.ids.insert(id, offset);
                self.memory_identified(offset, id, kind, size)
            }
            Entry::Pending { size, held, base } => {
                self.pending_identified(offset, id, size, held, base)
            }
            Entry::Passing => {
                self.dropped.push(offset);
                Ok(())
            }
            Entry::File { .. } | Entry::Same(_) => Err(format!(
                "the object at pack byte {offset} was identified twice"
            )),
        }
    }

    fn base(&mut self, base: Base) -> Result<Option<BaseObject>, String> {
        let offset = match base {
            Base::Offset(offset) => offset,
            Base::Id(id) => match self.ids.get(&id) {
                Some(offset) => *offset,
                None => return Ok(None),
            },
        };
        let offset = match self.objects.get(&offset) {
            Some(Entry::Same(id)) => self.ids.get(id).copied().unwrap_or(offset),
            _ => offset,
        };
        match self.objects.get(&offset) {
            Some(Entry::Memory { kind, bytes, .. }) => Ok(Some(BaseObject {
                offset,
                kind: *kind,
                bytes: BaseBytes::Memory(bytes.clone()),
            })),
            Some(Entry::File { name, size, .. }) => {
                let (name, size) = (name.clone(), *size);
                self.writer()?.flush()?;
                let file = std::fs::File::open(self.dir.join(&name))
                    .map_err(|e| format!("cannot read back a delta base: {e}"))?;
                Ok(Some(BaseObject {
                    offset,
                    kind: ObjectKind::Blob,
                    bytes: BaseBytes::File(file, size),
                }))
            }
            Some(_) => Err(format!(
                "the delta base at pack byte {offset} is still being identified"
            )),
            None if self.dropped.binary_search(&offset).is_ok() => {
                Err(self.refuse(Refusal::Bound(
                    "a delta builds on an object the verified release does not name (git \
                     never sends one); refusing the pack"
                        .into(),
                )))
            }
            None => Ok(None),
        }
    }

    fn wants_every_id(&self) -> bool {
        // While the gate is shut or trees are missing, every id may change
        // what the next object is; once the blobs still pending could be
        // all the release still lacks, the next one may be junk for sure.
        !self.trees_final()
            || self.pending_raw > PENDING_RAW_BYTES
            || (self.pending_count > 0 && self.pending_count >= self.named.missing_blobs.len())
    }
}
