//! The byte-level reader of a pack: the header, each object's header,
//! its zlib stream inflated a buffer at a time (handing the store both the
//! compressed and the inflated bytes), deltas applied as they stream, and
//! the trailing checksum. Apart from the store interface in `pack.rs`, so
//! that what a store sees, and when, reads in one place.

use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};
use sha1::Digest as _;

use super::hash::{HashOp, Hashing};
use super::{
    Base, Begin, DeltaBase as _, DeltaError, DeltaSink, DeltaStream, MAX_OBJECT_LEN, MAX_OBJECTS,
    ObjectFormat, ObjectId, ObjectKind, ObjectStore, PackError, Summary, max_compressed,
};

const BUFFER: usize = 64 * 1024;

fn malformed(offset: u64, reason: impl Into<String>) -> PackError {
    PackError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// Reads the pack's header, every object and the trailer.
pub(super) fn read_objects(
    input: impl Read,
    format: ObjectFormat,
    store: &mut impl ObjectStore,
    hashing: &mut Hashing,
) -> Result<Summary, PackError> {
    let mut reader = Reader {
        input,
        buf: vec![0; BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
        offset: 0,
        format,
        checksum: Checksum::new(format),
        zlib: Decompress::new(true),
        out: vec![0; BUFFER].into_boxed_slice(),
    };
    let mut header = [0u8; 12];
    reader.read_exact(&mut header)?;
    if &header[..4] != b"PACK" {
        return Err(malformed(0, "does not start with PACK"));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(malformed(4, format!("unsupported pack version {version}")));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if count > MAX_OBJECTS {
        return Err(malformed(
            8,
            format!("{count} objects; at most {MAX_OBJECTS}"),
        ));
    }
    for _ in 0..count {
        if store.wants_every_id() {
            hashing.settle(store, true)?;
        }
        reader.object(store, hashing)?;
    }
    let expected = reader.checksum.clone().finish();
    let mut trailer = [0u8; 32];
    let trailer = &mut trailer[..format.id_len()];
    let at = reader.offset;
    reader.read_exact_unhashed(trailer)?;
    if *trailer != *expected {
        return Err(malformed(at, "the trailing checksum does not match"));
    }
    if reader.fill()? {
        return Err(malformed(reader.offset, "data after the trailing checksum"));
    }
    Ok(Summary {
        objects: count,
        bytes: reader.offset,
    })
}

/// The pack's trailing checksum, in the repository's format.
#[derive(Clone)]
enum Checksum {
    Sha1(sha1::Sha1),
    Sha256(ring::digest::Context),
}

impl Checksum {
    fn new(format: ObjectFormat) -> Self {
        match format {
            ObjectFormat::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ObjectFormat::Sha256 => Self::Sha256(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finish().as_ref().to_vec(),
        }
    }
}

struct Reader<R> {
    input: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The pack offset of `buf[start]`.
    offset: u64,
    /// The repository's object format.
    format: ObjectFormat,
    /// The hash of every pack byte consumed so far (the trailer checks it;
    /// it names no object, so SHA-1 needs no collision detection here).
    checksum: Checksum,
    zlib: Decompress,
    out: Box<[u8]>,
}

impl<R: Read> Reader<R> {
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
        malformed(self.offset, "the pack ends early")
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
                return Err(malformed(at, "object size does not fit 64 bits"));
            }
            size |= u64::from(b & 0x7f) << shift;
            shift += 7;
            more = b & 0x80 != 0;
        }
        if size > MAX_OBJECT_LEN {
            return Err(malformed(
                at,
                format!("an object of {size} bytes; at most {MAX_OBJECT_LEN}"),
            ));
        }
        let kind = match code {
            1 => ObjectKind::Commit,
            2 => ObjectKind::Tree,
            3 => ObjectKind::Blob,
            4 => ObjectKind::Tag,
            6 | 7 => return self.delta(at, code, size, store, hashing),
            other => return Err(malformed(at, format!("unknown object type {other}"))),
        };
        hashing.begin(at, kind, size)?;
        store
            .begin(Begin {
                offset: at,
                kind,
                size,
                delta: None,
            })
            .map_err(PackError::Store)?;
        self.inflate(at, size, |raw, made| {
            store.raw(raw).map_err(PackError::Store)?;
            if !made.is_empty() {
                hashing.send(HashOp::Data(made.to_vec()))?;
                store.write(made).map_err(PackError::Store)?;
            }
            Ok(())
        })?;
        store.end().map_err(PackError::Store)?;
        hashing.end(store)
    }

    /// A delta of `size` instruction bytes: its base, then its
    /// instructions applied as they are inflated.
    fn delta(
        &mut self,
        at: u64,
        code: u8,
        size: u64,
        store: &mut impl ObjectStore,
        hashing: &mut Hashing,
    ) -> Result<(), PackError> {
        let base = if code == 6 {
            let distance = self.ofs_distance(at)?;
            Base::Offset(
                at.checked_sub(distance)
                    .filter(|_| distance > 0)
                    .ok_or_else(|| malformed(at, "a delta base before the pack's start"))?,
            )
        } else {
            let mut id = [0u8; 32];
            let id = &mut id[..self.format.id_len()];
            self.read_exact(id)?;
            Base::Id(
                ObjectId::from_bytes(self.format, id)
                    .ok_or_else(|| malformed(at, "a delta base id of the wrong length"))?,
            )
        };
        // Every object before this one is identified, so that the store
        // knows whether it kept the base.
        hashing.settle(store, true)?;
        let mut base_object = store
            .base(base)
            .map_err(PackError::Store)?
            .ok_or_else(|| malformed(at, format!("delta base {base:?} has not arrived")))?;
        let mut stream = DeltaStream::new(base_object.bytes.len());
        let mut out = DeltaOut {
            begin: Begin {
                offset: at,
                kind: base_object.kind,
                size: 0,
                delta: Some((base_object.offset, size)),
            },
            store,
            hashing,
            begun: false,
            raw: Vec::new(),
        };
        let failed = |e: DeltaError| match e {
            DeltaError::Malformed(why) => malformed(at, why),
            DeltaError::Base(why) | DeltaError::Sink(why) => PackError::Store(why),
        };
        self.inflate(at, size, |raw, made| {
            stream
                .feed(made, &mut base_object.bytes, &mut out)
                .map_err(failed)?;
            out.raw(raw)
        })?;
        stream.finish(&mut out).map_err(failed)?;
        let DeltaOut { store, hashing, .. } = out;
        store.end().map_err(PackError::Store)?;
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
                .ok_or_else(|| malformed(at, "a delta base before the pack's start"))?;
        }
        Ok(distance)
    }

    /// Inflates one zlib stream of exactly `size` bytes, handing `sink`
    /// each step's compressed bytes and the bytes they inflated to.
    fn inflate(
        &mut self,
        at: u64,
        size: u64,
        mut sink: impl FnMut(&[u8], &[u8]) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        self.zlib.reset(true);
        let limit = max_compressed(size);
        let mut produced = 0u64;
        let mut taken = 0u64;
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
                .map_err(|e| malformed(at, format!("bad compressed data: {e}")))?;
            let used = (self.zlib.total_in() - in_before) as usize;
            let made = (self.zlib.total_out() - out_before) as usize;
            produced += made as u64;
            taken += used as u64;
            if produced > size {
                return Err(malformed(
                    at,
                    format!("inflates past its size of {size} bytes"),
                ));
            }
            if taken > limit {
                return Err(malformed(
                    at,
                    format!("takes more than {limit} compressed bytes for {size}"),
                ));
            }
            sink(&self.buf[self.start..self.start + used], &self.out[..made])?;
            self.consume(used);
            match status {
                Status::StreamEnd => break,
                _ if used == 0 && made == 0 && self.start < self.end => {
                    return Err(malformed(at, "compressed data makes no progress"));
                }
                _ => {}
            }
        }
        if produced != size {
            return Err(malformed(
                at,
                format!("inflates to {produced} bytes, not the {size} it declares"),
            ));
        }
        Ok(())
    }
}

/// Where a delta's result goes: the hashing thread and the store, which
/// learn of the object once the delta's header has said its size.
struct DeltaOut<'a, S> {
    begin: Begin,
    store: &'a mut S,
    hashing: &'a mut Hashing,
    begun: bool,
    /// Compressed bytes read before the object began.
    raw: Vec<u8>,
}

impl<S: ObjectStore> DeltaOut<'_, S> {
    fn raw(&mut self, raw: &[u8]) -> Result<(), PackError> {
        if !self.begun {
            self.raw.extend_from_slice(raw);
            return Ok(());
        }
        if !self.raw.is_empty() {
            let early = std::mem::take(&mut self.raw);
            self.store.raw(&early).map_err(PackError::Store)?;
        }
        self.store.raw(raw).map_err(PackError::Store)
    }
}

impl<S: ObjectStore> DeltaSink for DeltaOut<'_, S> {
    fn begin(&mut self, len: u64) -> Result<(), String> {
        self.begin.size = len;
        self.hashing
            .begin(self.begin.offset, self.begin.kind, len)
            .map_err(|e| e.to_string())?;
        self.store.begin(self.begin)?;
        self.begun = true;
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.hashing
            .send(HashOp::Data(bytes.to_vec()))
            .map_err(|e| e.to_string())?;
        self.store.write(bytes)
    }
}
