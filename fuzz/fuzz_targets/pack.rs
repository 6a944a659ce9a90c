//! A git pack as a server streams it to a first boot.
//!
//! Input: the pack's bytes (`git pack-objects --stdout` output, header to
//! trailing checksum). Every object is kept in memory by a small store, so
//! deltas resolve against their bases, and so are the compressed bytes the
//! reader hands over for each (a first boot keeps those of a blob while its
//! id is computed, and inflates them again to write it).
//!
//! Property: no input panics or allocates without bound; a pack that is
//! accepted was read to its last byte, with every object complete and
//! identified; and each object's compressed bytes are at most
//! `pack::max_compressed` of what they inflate to, and inflate again to
//! exactly the object (or, for a delta, to its instructions).

#![no_main]

use std::collections::HashMap;
use std::io::Read as _;

use driftless::source::pack::{
    self, Base, BaseBytes, BaseObject, Begin, ObjectId, ObjectKind, ObjectStore,
};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Memory {
    by_offset: HashMap<u64, (ObjectKind, Vec<u8>)>,
    ids: HashMap<ObjectId, u64>,
    current: Option<(Begin, Vec<u8>, Vec<u8>)>,
}

impl ObjectStore for Memory {
    fn begin(&mut self, object: Begin) -> Result<(), String> {
        assert!(self.current.is_none(), "an object begun inside another");
        assert!(object.size <= pack::MAX_OBJECT_LEN);
        self.current = Some((object, Vec::new(), Vec::new()));
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (_, _, raw) = self.current.as_mut().ok_or("raw outside an object")?;
        raw.extend_from_slice(bytes);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (object, data, _) = self.current.as_mut().ok_or("write outside an object")?;
        data.extend_from_slice(bytes);
        assert!(data.len() as u64 <= object.size, "more bytes than the object declared");
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        let (object, data, raw) = self.current.take().ok_or("end outside an object")?;
        assert_eq!(data.len() as u64, object.size, "an object ended short");
        let inflated_len = object.delta.map_or(object.size, |(_, len)| len);
        assert!(raw.len() as u64 <= pack::max_compressed(inflated_len));
        let mut again = Vec::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .read_to_end(&mut again)
            .expect("the compressed bytes handed over inflate again");
        assert_eq!(again.len() as u64, inflated_len);
        if object.delta.is_none() {
            assert_eq!(again, data, "and to the object itself");
        }
        self.by_offset.insert(object.offset, (object.kind, data));
        Ok(())
    }

    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        assert!(self.by_offset.contains_key(&offset), "an id for no object");
        self.ids.entry(id).or_insert(offset);
        Ok(())
    }

    fn base(&mut self, base: Base) -> Result<Option<BaseObject>, String> {
        let offset = match base {
            Base::Id(id) => self.ids.get(&id).copied(),
            Base::Offset(offset) => Some(offset),
        };
        Ok(offset.and_then(|offset| {
            let (kind, bytes) = self.by_offset.get(&offset)?.clone();
            Some(BaseObject {
                offset,
                kind,
                bytes: BaseBytes::Memory(bytes),
            })
        }))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut store = Memory::default();
    if let Ok(summary) = pack::read_pack(data, pack::ObjectFormat::Sha1, &mut store) {
        assert_eq!(summary.bytes, data.len() as u64);
        assert!(store.current.is_none());
        assert_eq!(store.by_offset.len() as u64, u64::from(summary.objects));
        assert!(!store.ids.is_empty() || summary.objects == 0);
    }
});
