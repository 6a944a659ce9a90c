//! A git pack as a server streams it to a first boot.
//!
//! Input: the pack's bytes (`git pack-objects --stdout` output, header to
//! trailing checksum). Every object is kept in memory by a small store, as
//! `driftless::source::stream` keeps trees, commits and tags, so deltas resolve
//! against their bases.
//!
//! Property: no input panics or allocates without bound, and a pack that
//! is accepted was read to its last byte, with every object complete and
//! identified.

#![no_main]

use std::collections::HashMap;

use driftless::source::pack::{self, Base, ObjectId, ObjectKind, ObjectStore};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Memory {
    by_offset: HashMap<u64, (ObjectKind, Vec<u8>)>,
    ids: HashMap<ObjectId, u64>,
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

    fn end(&mut self) -> Result<(), String> {
        let (offset, kind, size, data) = self.current.take().ok_or("end outside an object")?;
        assert_eq!(data.len() as u64, size, "an object ended short");
        self.by_offset.insert(offset, (kind, data));
        Ok(())
    }

    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        assert!(self.by_offset.contains_key(&offset), "an id for no object");
        self.ids.entry(id).or_insert(offset);
        Ok(())
    }

    fn load(&mut self, base: Base) -> Result<Option<(ObjectKind, Vec<u8>)>, String> {
        let offset = match base {
            Base::Id(id) => self.ids.get(&id).copied(),
            Base::Offset(offset) => Some(offset),
        };
        Ok(offset.and_then(|offset| self.by_offset.get(&offset).cloned()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut store = Memory::default();
    if let Ok(summary) = pack::read_pack(data, &mut store) {
        assert_eq!(summary.bytes, data.len() as u64);
        assert!(store.current.is_none());
        assert_eq!(store.by_offset.len() as u64, u64::from(summary.objects));
        assert!(!store.ids.is_empty() || summary.objects == 0);
    }
});
