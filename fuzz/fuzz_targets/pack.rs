//! A git pack as a server streams it to a first boot.
//!
//! Input: the pack's bytes (`git pack-objects --stdout` output, header to
//! trailing checksum). Every object is kept in memory by a small store, as
//! `driftless::stream` keeps trees, commits and tags, so deltas resolve
//! against their bases.
//!
//! Property: no input panics or allocates without bound, and a pack that
//! is accepted was read to its last byte, with every object complete.

#![no_main]

use std::collections::HashMap;

use driftless::pack::{self, Base, ObjectId, ObjectKind, ObjectStore};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Memory {
    objects: HashMap<ObjectId, (ObjectKind, Vec<u8>)>,
    offsets: HashMap<u64, ObjectId>,
    current: Option<(u64, ObjectKind, u64, Vec<u8>)>,
}

impl ObjectStore for Memory {
    fn begin(&mut self, offset: u64, kind: ObjectKind, size: u64) -> Result<(), String> {
        assert!(self.current.is_none(), "an object begun inside another");
        assert!(size <= pack::MAX_OBJECT_LEN);
        self.current = Some((offset, kind, size, Vec::new()));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (_, _, size, data) = self.current.as_mut().ok_or("write outside an object")?;
        data.extend_from_slice(bytes);
        assert!(data.len() as u64 <= *size, "more bytes than the object declared");
        Ok(())
    }

    fn finish(&mut self, id: ObjectId) -> Result<(), String> {
        let (offset, kind, size, data) = self.current.take().ok_or("finish outside an object")?;
        assert_eq!(data.len() as u64, size, "an object finished short");
        self.offsets.insert(offset, id);
        self.objects.entry(id).or_insert((kind, data));
        Ok(())
    }

    fn load(&mut self, base: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String> {
        let id = match base {
            Base::Id(id) => Some(id),
            Base::Offset(offset) => self.offsets.get(&offset).copied(),
        };
        Ok(id.and_then(|id| self.objects.get(&id).cloned()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut store = Memory::default();
    if let Ok(summary) = pack::read_pack(data, &mut store) {
        assert_eq!(summary.bytes, data.len() as u64);
        assert!(store.current.is_none());
    }
});
