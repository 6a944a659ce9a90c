//! Delta application as the delta streams in: the copy and insert
//! instructions (gitformat-pack(5)) are parsed as their bytes arrive, the
//! base is read where it lies (in memory, or a file, a range at a time), and
//! the result leaves in chunks of at most [`OUT_CHUNK`] bytes. Neither the
//! delta nor its result is ever whole in memory, so a delta that claims a
//! 64 MiB result costs what its instructions cost, not 64 MiB. Every bound
//! [`apply_delta`](super::apply_delta) checks is checked here, in the same
//! cases; the fuzz target `delta` holds the two to the same answers.

use super::MAX_OBJECT_LEN;

/// The most result bytes handed on at once.
pub const OUT_CHUNK: usize = 64 * 1024;

/// The object a delta copies from.
pub trait DeltaBase {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// True when it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `out` with its bytes from `offset` on (the range is within
    /// its length).
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<(), String>;
}

impl DeltaBase for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<(), String> {
        let start = usize::try_from(offset).map_err(|_| "an offset past memory")?;
        let range = self
            .get(start..start + out.len())
            .ok_or("a read past the base")?;
        out.copy_from_slice(range);
        Ok(())
    }
}

/// Where the result goes.
pub trait DeltaSink {
    /// The delta's header has been read: the result will be `len` bytes.
    /// Called once, before any data.
    fn begin(&mut self, len: u64) -> Result<(), String>;
    /// The next bytes of the result.
    fn data(&mut self, bytes: &[u8]) -> Result<(), String>;
}

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The delta is not well formed or does not fit its base.
    Malformed(String),
    /// The base could not be read.
    Base(String),
    /// The sink refused the result.
    Sink(String),
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => f.write_str(why),
            Self::Base(why) => write!(f, "cannot read a delta's base: {why}"),
            Self::Sink(why) => f.write_str(why),
        }
    }
}

fn malformed(why: &str) -> DeltaError {
    DeltaError::Malformed(why.to_owned())
}

/// Where in the delta the next byte belongs.
#[derive(Debug, Clone, Copy)]
enum State {
    /// The base's size (`result` false) or the result's, base-128.
    Size {
        result: bool,
        value: u64,
        shift: u32,
    },
    /// The next instruction.
    Command,
    /// A copy's argument bytes: `need` in all, `got` so far.
    Copy {
        cmd: u8,
        args: [u8; 7],
        got: u8,
        need: u8,
    },
    /// An insert with this many bytes still to come.
    Insert(usize),
}

/// A delta being applied as its bytes arrive: [`DeltaStream::feed`] them
/// in any pieces, then [`DeltaStream::finish`].
pub struct DeltaStream {
    base_len: u64,
    result_len: u64,
    produced: u64,
    state: State,
    /// Result bytes not yet handed on.
    out: Vec<u8>,
}

impl DeltaStream {
    /// A delta against a base of `base_len` bytes.
    pub fn new(base_len: u64) -> Self {
        Self {
            base_len,
            result_len: 0,
            produced: 0,
            state: State::Size {
                result: false,
                value: 0,
                shift: 0,
            },
            out: Vec::new(),
        }
    }

    /// The result's length, once the header has been read.
    pub fn result_len(&self) -> Option<u64> {
        match self.state {
            State::Size { .. } => None,
            _ => Some(self.result_len),
        }
    }

    /// The next bytes of the delta.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        base: &mut impl DeltaBase,
        sink: &mut impl DeltaSink,
    ) -> Result<(), DeltaError> {
        while let Some((&b, rest)) = input.split_first() {
            match &mut self.state {
                State::Size {
                    result,
                    value,
                    shift,
                } => {
                    input = rest;
                    if *shift > 63 {
                        return Err(malformed("a delta size does not fit 64 bits"));
                    }
                    *value |= u64::from(b & 0x7f) << *shift;
                    *shift += 7;
                    if b & 0x80 != 0 {
                        continue;
                    }
                    let (is_result, size) = (*result, *value);
                    self.size_read(is_result, size, sink)?;
                }
                State::Command => {
                    input = rest;
                    self.state = match b {
                        0 => return Err(malformed("a delta holds the reserved instruction 0")),
                        cmd if cmd & 0x80 != 0 => {
                            let need = (cmd & 0x7f).count_ones() as u8;
                            State::Copy {
                                cmd,
                                args: [0; 7],
                                got: 0,
                                need,
                            }
                        }
                        len => {
                            let len = usize::from(len);
                            if self.produced + len as u64 > self.result_len {
                                return Err(malformed("a delta writes past its declared result"));
                            }
                            State::Insert(len)
                        }
                    };
                    if let State::Copy { need: 0, cmd, .. } = self.state {
                        self.copy(cmd, [0; 7], base, sink)?;
                    }
                }
                State::Copy {
                    cmd,
                    args,
                    got,
                    need,
                } => {
                    input = rest;
                    args[usize::from(*got)] = b;
                    *got += 1;
                    if got == need {
                        let (cmd, args) = (*cmd, *args);
                        self.copy(cmd, args, base, sink)?;
                    }
                }
                State::Insert(left) => {
                    let n = (*left).min(input.len());
                    let (bytes, rest) = input.split_at(n);
                    input = rest;
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Command;
                    }
                    self.emit(bytes, sink)?;
                }
            }
        }
        Ok(())
    }

    /// The delta has ended: checks that it ended between instructions,
    /// with the whole declared result built, and hands on the rest.
    pub fn finish(mut self, sink: &mut impl DeltaSink) -> Result<(), DeltaError> {
        match self.state {
            State::Size { .. } => return Err(malformed("a delta ends inside its header")),
            State::Copy { .. } => return Err(malformed("a delta ends inside a copy")),
            State::Insert(_) => return Err(malformed("a delta ends inside an insert")),
            State::Command => {}
        }
        if self.produced != self.result_len {
            return Err(DeltaError::Malformed(format!(
                "a delta builds {} bytes, not the {} it declares",
                self.produced, self.result_len
            )));
        }
        self.flush(sink)
    }

    fn size_read(
        &mut self,
        is_result: bool,
        size: u64,
        sink: &mut impl DeltaSink,
    ) -> Result<(), DeltaError> {
        if !is_result {
            if size != self.base_len {
                return Err(DeltaError::Malformed(format!(
                    "a delta for a base of {size} bytes applied to one of {}",
                    self.base_len
                )));
            }
            self.state = State::Size {
                result: true,
                value: 0,
                shift: 0,
            };
            return Ok(());
        }
        if size > MAX_OBJECT_LEN {
            return Err(DeltaError::Malformed(format!(
                "a delta result of {size} bytes; at most {MAX_OBJECT_LEN}"
            )));
        }
        self.result_len = size;
        self.state = State::Command;
        sink.begin(size).map_err(DeltaError::Sink)
    }

    /// One copy instruction: `cmd`'s low bits say which offset and size
    /// bytes follow, in `args`, in that order.
    fn copy(
        &mut self,
        cmd: u8,
        args: [u8; 7],
        base: &mut impl DeltaBase,
        sink: &mut impl DeltaSink,
    ) -> Result<(), DeltaError> {
        self.state = State::Command;
        let mut next = args.iter();
        let mut field = |bits: u8, count: usize| {
            let mut value = 0u64;
            for i in 0..count {
                if bits & (1 << i) != 0 {
                    value |= u64::from(*next.next().unwrap_or(&0)) << (8 * i);
                }
            }
            value
        };
        let offset = field(cmd & 0x0f, 4);
        let mut len = field((cmd >> 4) & 0x07, 3);
        if len == 0 {
            len = 0x10000;
        }
        if offset + len > self.base_len {
            return Err(malformed("a delta copies from outside its base"));
        }
        if self.produced + len > self.result_len {
            return Err(malformed("a delta writes past its declared result"));
        }
        let mut at = offset;
        let end = offset + len;
        while at < end {
            if self.out.len() == OUT_CHUNK {
                self.flush(sink)?;
            }
            let room = OUT_CHUNK - self.out.len();
            let n = usize::try_from(end - at).map_or(room, |left| left.min(room));
            let start = self.out.len();
            self.out.resize(start + n, 0);
            base.read_at(at, &mut self.out[start..])
                .map_err(DeltaError::Base)?;
            at += n as u64;
            self.produced += n as u64;
        }
        Ok(())
    }

    fn emit(&mut self, mut bytes: &[u8], sink: &mut impl DeltaSink) -> Result<(), DeltaError> {
        while !bytes.is_empty() {
            if self.out.len() == OUT_CHUNK {
                self.flush(sink)?;
            }
            let n = (OUT_CHUNK - self.out.len()).min(bytes.len());
            self.out.extend_from_slice(&bytes[..n]);
            self.produced += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut impl DeltaSink) -> Result<(), DeltaError> {
        if !self.out.is_empty() {
            sink.data(&self.out).map_err(DeltaError::Sink)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Applies `delta` to `base` fed in pieces of `piece` bytes, collecting
/// the result: what the tests and the fuzz target compare with
/// [`apply_delta`](super::apply_delta).
pub fn apply_streamed(base: &[u8], delta: &[u8], piece: usize) -> Result<Vec<u8>, DeltaError> {
    struct Collect(Vec<u8>, Option<u64>);
    impl DeltaSink for Collect {
        fn begin(&mut self, len: u64) -> Result<(), String> {
            if self.1.replace(len).is_some() {
                return Err("begun twice".into());
            }
            Ok(())
        }
        fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
            if self.1.is_none() || bytes.len() > OUT_CHUNK {
                return Err("data before the header, or too much at once".into());
            }
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    let mut stream = DeltaStream::new(base.len() as u64);
    let mut sink = Collect(Vec::new(), None);
    let mut base = base;
    for chunk in delta.chunks(piece.max(1)) {
        stream.feed(chunk, &mut base, &mut sink)?;
    }
    stream.finish(&mut sink)?;
    Ok(sink.0)
}

#[cfg(test)]
mod tests {
    use super::super::apply_delta;
    use super::*;

    /// A delta of `base` (10 bytes) to `result_len` with `body` instructions.
    fn delta(result_len: u8, body: &[u8]) -> Vec<u8> {
        let mut d = vec![10, result_len];
        d.extend_from_slice(body);
        d
    }

    #[test]
    fn streamed_deltas_agree_with_whole_ones_in_every_piece_size() {
        let base = b"0123456789";
        let cases = [
            delta(4, &[0x91, 2, 4]),
            delta(3, &[3, b'a', b'b', b'c']),
            delta(7, &[0x91, 2, 4, 3, b'x', b'y', b'z']),
            delta(10, &[0x80 | 0x10, 10]),
            delta(0, &[]),
            vec![9, 4, 0x91, 2, 4],
            delta(4, &[0x91, 8, 4]),
            delta(3, &[0x91, 2, 4]),
            delta(5, &[0x91, 2, 4]),
            delta(4, &[0]),
            delta(4, &[5, b'a']),
            vec![10],
            vec![10, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            delta(4, &[0x91, 2]),
            vec![
                0x8a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0,
            ],
        ];
        for d in cases {
            let whole = apply_delta(base, &d);
            for piece in 1..=d.len().max(1) {
                let streamed = apply_streamed(base, &d, piece);
                assert_eq!(
                    whole.is_ok(),
                    streamed.is_ok(),
                    "{d:?} in pieces of {piece}: {whole:?} vs {streamed:?}"
                );
                if let (Ok(w), Ok(s)) = (&whole, &streamed) {
                    assert_eq!(w, s, "{d:?} in pieces of {piece}");
                }
            }
        }
    }

    #[test]
    fn a_large_result_leaves_in_bounded_chunks() {
        // A 1 MiB base copied 16 times (64 KiB copies), as a bomb would.
        let base = vec![0u8; 1 << 20];
        let mut d = Vec::new();
        let size = |mut v: u64, d: &mut Vec<u8>| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                d.push(b);
                break;
            }
            d.push(b | 0x80);
        };
        size(1 << 20, &mut d);
        size(16 << 16, &mut d);
        d.extend([0x80; 16]);
        struct Largest(usize, u64);
        impl DeltaSink for Largest {
            fn begin(&mut self, _: u64) -> Result<(), String> {
                Ok(())
            }
            fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
                self.0 = self.0.max(bytes.len());
                self.1 += bytes.len() as u64;
                Ok(())
            }
        }
        let mut sink = Largest(0, 0);
        let mut stream = DeltaStream::new(base.len() as u64);
        stream
            .feed(&d, &mut base.as_slice(), &mut sink)
            .expect("feed");
        stream.finish(&mut sink).expect("finish");
        assert_eq!(sink.1, 16 << 16);
        assert!(sink.0 <= OUT_CHUNK);
    }
}
