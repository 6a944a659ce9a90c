//! The pkt-line framing of git's wire protocol (gitprotocol-common(5),
//! gitprotocol-v2(5)): four hex digits giving the length of the line
//! including themselves, then the payload; `0000` is a flush packet, `0001`
//! a delimiter and `0002` a response end. Pure and bounded.
//!
//! Apart from the poll because the streamed fetch
//! ([`crate::source::stream`]) frames its request and reads its response
//! with the same codec.

/// The longest pkt-line, length digits included.
pub const MAX_PKT_LEN: usize = 65520;
/// The longest payload of one pkt-line.
pub const MAX_PAYLOAD: usize = MAX_PKT_LEN - 4;

/// One decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`: the end of a message.
    Flush,
    /// `0001`: separates sections of a message.
    Delim,
    /// `0002`: the end of a response on a stateless connection.
    ResponseEnd,
    /// A data packet's payload (a trailing LF included, if sent).
    Data(&'a [u8]),
}

/// Input that is not a sequence of well-formed pkt-lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The input ends inside a length or a payload.
    #[error("truncated pkt-line at byte {at}")]
    Truncated {
        /// Offset of the packet's length digits.
        at: usize,
    },
    /// The length is not four hex digits.
    #[error("bad pkt-line length {text:?} at byte {at}")]
    BadLength {
        /// Offset of the length digits.
        at: usize,
        /// The four bytes found, escaped.
        text: String,
    },
    /// The length is `0003`, which no packet uses.
    #[error("reserved pkt-line length {len} at byte {at}")]
    Reserved {
        /// Offset of the length digits.
        at: usize,
        /// The length found.
        len: usize,
    },
    /// The length exceeds [`MAX_PKT_LEN`].
    #[error("pkt-line length {len} at byte {at} exceeds {MAX_PKT_LEN}")]
    TooLong {
        /// Offset of the length digits.
        at: usize,
        /// The length found.
        len: usize,
    },
    /// A payload to encode does not fit one pkt-line.
    #[error("a payload of {len} bytes does not fit in a pkt-line")]
    PayloadTooLong {
        /// The payload's length.
        len: usize,
    },
}

/// Reads packets from a byte string, one at a time.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// The offset of the next packet.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.input[self.pos..]
    }

    /// The next packet; `None` at the end of the input.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'a>>, PktError> {
        let at = self.pos;
        let rest = self.rest();
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(digits) = rest.get(..4) else {
            return Err(PktError::Truncated { at });
        };
        let mut len = 0usize;
        for &digit in digits {
            let value = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => {
                    return Err(PktError::BadLength {
                        at,
                        text: digits.escape_ascii().to_string(),
                    });
                }
            };
            len = len * 16 + usize::from(value);
        }
        let packet = match len {
            0 => Packet::Flush,
            1 => Packet::Delim,
            2 => Packet::ResponseEnd,
            3 => return Err(PktError::Reserved { at, len }),
            len if len > MAX_PKT_LEN => return Err(PktError::TooLong { at, len }),
            len => match rest.get(4..len) {
                Some(payload) => Packet::Data(payload),
                None => return Err(PktError::Truncated { at }),
            },
        };
        self.pos += len.max(4);
        Ok(Some(packet))
    }
}

/// Appends a data packet made of `parts`, concatenated.
pub fn write_data(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), PktError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_PAYLOAD {
        return Err(PktError::PayloadTooLong { len });
    }
    write_len(out, len + 4);
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Appends a flush packet (`0000`).
pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends a delimiter packet (`0001`).
pub fn write_delim(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

/// Appends a response-end packet (`0002`).
pub fn write_response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0002");
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in [12, 8, 4, 0] {
        out.push(HEX[(len >> shift) & 0xf]);
    }
}

/// A payload without its trailing LF (receivers must accept both).
pub fn text(payload: &[u8]) -> &[u8] {
    payload.strip_suffix(b"\n").unwrap_or(payload)
}

/// Every packet of `input`, for tests.
#[cfg(test)]
pub(crate) fn packets(input: &[u8]) -> Result<Vec<Packet<'_>>, PktError> {
    let mut reader = Reader::new(input);
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet()? {
        out.push(packet);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::poll::pkt;

    #[test]
    fn pkt_lines_decode() {
        assert_eq!(
            packets(b"0006a\n0005a000bfoobar\n000400000001000200").expect_err("trailing"),
            PktError::Truncated { at: 38 }
        );
        assert_eq!(
            packets(b"0006a\n0005a000bfoobar\n0004000000010002").expect("valid"),
            vec![
                Packet::Data(b"a\n"),
                Packet::Data(b"a"),
                Packet::Data(b"foobar\n"),
                Packet::Data(b""),
                Packet::Flush,
                Packet::Delim,
                Packet::ResponseEnd,
            ]
        );
        assert_eq!(packets(b"").expect("empty"), vec![]);
        assert_eq!(
            packets(b"000AABCDEF").expect("upper hex"),
            vec![Packet::Data(b"ABCDEF")]
        );
        assert_eq!(pkt::text(b"x\n"), b"x");
        assert_eq!(pkt::text(b"x"), b"x");
    }

    #[test]
    fn malformed_pkt_lines_are_refused() {
        for (input, error) in [
            (&b"000"[..], PktError::Truncated { at: 0 }),
            (b"0009abc", PktError::Truncated { at: 0 }),
            (b"0005a0", PktError::Truncated { at: 5 }),
            (
                b"00x5a",
                PktError::BadLength {
                    at: 0,
                    text: "00x5".to_owned(),
                },
            ),
            (
                b"-001",
                PktError::BadLength {
                    at: 0,
                    text: "-001".to_owned(),
                },
            ),
            (
                b" 005a",
                PktError::BadLength {
                    at: 0,
                    text: " 005".to_owned(),
                },
            ),
            (b"0003", PktError::Reserved { at: 0, len: 3 }),
            (b"fff1", PktError::TooLong { at: 0, len: 65521 }),
            (b"ffff", PktError::TooLong { at: 0, len: 65535 }),
        ] {
            assert_eq!(packets(input).expect_err("malformed"), error, "{input:?}");
        }
        // The longest legal packet is fine.
        let mut big = b"fff0".to_vec();
        big.resize(65520, b'x');
        assert_eq!(packets(&big).expect("65520 bytes").len(), 1);
    }

    #[test]
    fn pkt_lines_encode() {
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[b"a\n"]).expect("fits");
        pkt::write_data(&mut out, &[b"foo", b"bar\n"]).expect("fits");
        pkt::write_delim(&mut out);
        pkt::write_flush(&mut out);
        pkt::write_response_end(&mut out);
        assert_eq!(out, b"0006a\n000bfoobar\n000100000002");
        let payload = vec![b'x'; pkt::MAX_PAYLOAD];
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[&payload]).expect("the largest payload fits");
        assert_eq!(&out[..4], b"fff0");
        assert_eq!(
            pkt::write_data(&mut out, &[&payload, b"y"]),
            Err(PktError::PayloadTooLong { len: 65517 })
        );
    }
}
