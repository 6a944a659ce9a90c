//! The SSH wire encoding (RFC 4251 §5): big-endian `uint32`, length-prefixed
//! `string`, and `mpint`. A reader over a borrowed buffer that never panics and
//! never reads past the end: every malformed input becomes an error.

/// A cursor over SSH wire-encoded bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

/// The input ended early or held a value that does not fit its declared length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated or malformed SSH wire data")]
pub struct WireError;

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Takes exactly `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    /// Takes a big-endian `uint32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Takes a length-prefixed `string` (arbitrary bytes).
    pub fn string(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// Takes a `string` that must be UTF-8 (names, namespaces, algorithms).
    pub fn text(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.string()?).map_err(|_| WireError)
    }

    /// Takes a non-negative `mpint` and returns its magnitude without leading
    /// zero bytes. Negative numbers and non-minimal encodings are refused, as
    /// OpenSSH refuses them.
    pub fn positive_mpint(&mut self) -> Result<&'a [u8], WireError> {
        let raw = self.string()?;
        match raw {
            [] => Ok(raw),
            [first, ..] if first & 0x80 != 0 => Err(WireError),
            [0, second, ..] if second & 0x80 == 0 => Err(WireError),
            [0] => Err(WireError),
            [0, rest @ ..] => Ok(rest),
            _ => Ok(raw),
        }
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails unless every byte has been consumed: trailing data is never ignored.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError)
        }
    }
}

/// Appends `bytes` as an SSH `string` (used to rebuild signed data).
pub fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_refuses_overruns() {
        let mut r = Reader::new(b"\0\0\0\x03abc\0\0\0\x09ab");
        assert_eq!(r.string(), Ok(&b"abc"[..]));
        assert_eq!(r.string(), Err(WireError));
    }

    #[test]
    fn mpint_rules_match_openssh() {
        fn m(b: &[u8]) -> Result<&[u8], WireError> {
            Reader::new(b).positive_mpint()
        }
        assert_eq!(m(b"\0\0\0\x02\x00\x80"), Ok(&b"\x80"[..]));
        assert_eq!(m(b"\0\0\0\x01\x7f"), Ok(&b"\x7f"[..]));
        assert_eq!(m(b"\0\0\0\x01\x80"), Err(WireError), "negative");
        assert_eq!(m(b"\0\0\0\x02\x00\x01"), Err(WireError), "non-minimal");
        assert_eq!(m(b"\0\0\0\0"), Ok(&b""[..]), "zero");
    }

    #[test]
    fn finish_refuses_trailing_bytes() {
        let mut r = Reader::new(b"\0\0\0\x01x!");
        r.string().expect("string");
        assert!(r.finish().is_err());
    }
}
