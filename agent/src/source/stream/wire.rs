//! The protocol v2 `fetch` on the wire: the request for one object, and
//! the response read as the network thread hands it over, its sections
//! skipped and the pack's bytes taken from side band 1. Apart from the
//! attempt that drives it, so that the framing of what a hostile server
//! sends is checked, and tested, without a network.

use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Duration;

use crate::source::poll::{self, PollError, pkt};
use crate::types::ObjectFormat;

/// Section lines before the pack (shallow-info and the like) accepted.
const MAX_SECTION_LINES: usize = 100_000;

/// The body of a protocol v2 `fetch` of one object, shallow, with nothing
/// held locally: the server answers with the pack at once. The object
/// format is the id's (64 hex digits: SHA-256).
pub fn fetch_request(oid: &str) -> Result<Vec<u8>, pkt::PktError> {
    request(oid, true, None)
}

/// The body of a protocol v2 `fetch` of a channel's tip `oid` with its
/// history, but for what `have` (the tip this node holds) reaches; no
/// `thin-pack`, so every delta's base is in the pack.
pub fn channel_request(oid: &str, have: Option<&str>) -> Result<Vec<u8>, pkt::PktError> {
    request(oid, false, have)
}

/// `command=fetch` of `oid`, of depth 1 when `deepen` says, telling the
/// server what the node `have`s.
fn request(oid: &str, deepen: bool, have: Option<&str>) -> Result<Vec<u8>, pkt::PktError> {
    let mut out = Vec::with_capacity(256);
    pkt::write_data(&mut out, &[b"command=fetch\n"])?;
    let format = ObjectFormat::of_hex_len(oid.len()).unwrap_or_default();
    poll::capabilities(&mut out, format)?;
    pkt::write_delim(&mut out);
    for line in ["no-progress\n", "ofs-delta\n"] {
        pkt::write_data(&mut out, &[line.as_bytes()])?;
    }
    if deepen {
        pkt::write_data(&mut out, &[b"deepen 1\n"])?;
    }
    pkt::write_data(&mut out, &[b"want ", oid.as_bytes(), b"\n"])?;
    if let Some(have) = have {
        pkt::write_data(&mut out, &[b"have ", have.as_bytes(), b"\n"])?;
    }
    pkt::write_data(&mut out, &[b"done\n"])?;
    pkt::write_flush(&mut out);
    Ok(out)
}

/// What the network thread hands over.
pub(super) enum Message {
    /// The ref's object id (`None`: no such ref).
    Ref(Option<String>),
    /// Bytes of the `fetch` response.
    Data(Vec<u8>),
    /// The server does not speak v2.
    NotV2(String),
    /// The request failed.
    Failed(PollError),
}

/// Reads the `fetch` response: sections up to `packfile`, then the pack's
/// bytes from side band 1 until the flush packet.
pub(super) struct Response<'m> {
    messages: &'m mpsc::Receiver<Message>,
    wait: Duration,
    pending: Vec<u8>,
    pos: usize,
    /// Pack bytes of the current data packet not yet handed out.
    band: (usize, usize),
    in_pack: bool,
    done: bool,
}

impl<'m> Response<'m> {
    /// A response read from what the network thread sends on `messages`,
    /// waiting at most `wait` for each part.
    pub(super) fn new(messages: &'m mpsc::Receiver<Message>, wait: Duration) -> Self {
        Self {
            messages,
            wait,
            pending: Vec::with_capacity(256 * 1024),
            pos: 0,
            band: (0, 0),
            in_pack: false,
            done: false,
        }
    }

    /// Makes sure `n` unread bytes are buffered; false at a clean end.
    fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.pending.len() - self.pos < n {
            if self.pos > 0 {
                self.pending.drain(..self.pos);
                self.pos = 0;
            }
            match self.messages.recv_timeout(self.wait) {
                Ok(Message::Data(bytes)) => self.pending.extend_from_slice(&bytes),
                Ok(Message::Failed(e)) => return Err(io::Error::other(e.to_string())),
                // The fetch request was answered, but not as v2 answers.
                Ok(Message::NotV2(why)) => {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, why));
                }
                Ok(Message::Ref(_)) => {
                    return Err(io::Error::other(
                        "unexpected message from the network thread",
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the server sent nothing for {:?}", self.wait),
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The next pkt-line: `None` for a flush, `Some(range)` of a data
    /// packet's payload in `pending`; delimiters and response ends are
    /// reported as empty payloads.
    fn packet(&mut self) -> io::Result<Option<(usize, usize)>> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if !self.want(4)? {
            return Err(bad("the answer ends before the pack does".into()));
        }
        let digits = &self.pending[self.pos..self.pos + 4];
        let text = std::str::from_utf8(digits).map_err(|_| bad("a bad pkt-line length".into()))?;
        let len = usize::from_str_radix(text, 16)
            .map_err(|_| bad(format!("a bad pkt-line length {text:?}")))?;
        self.pos += 4;
        match len {
            0 => Ok(None),
            1 | 2 => Ok(Some((self.pos, self.pos))),
            3 => Err(bad("a reserved pkt-line length".into())),
            len if len > pkt::MAX_PKT_LEN => Err(bad(format!("a pkt-line of {len} bytes"))),
            len => {
                if !self.want(len - 4)? {
                    return Err(bad("the answer ends inside a pkt-line".into()));
                }
                let start = self.pos;
                self.pos += len - 4;
                Ok(Some((start, self.pos)))
            }
        }
    }

    /// Skips the sections before the pack.
    fn skip_to_pack(&mut self) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        for line in 0..MAX_SECTION_LINES {
            let Some((start, end)) = self.packet()? else {
                return Err(bad("the answer ends without a pack".into()));
            };
            let payload = &self.pending[start..end];
            if let Some(message) = payload.strip_prefix(b"ERR ") {
                return Err(bad(format!(
                    "the server refused: {}",
                    String::from_utf8_lossy(pkt::text(message)).trim()
                )));
            }
            match pkt::text(payload) {
                b"packfile" => return Ok(()),
                b"packfile-uris" => {
                    return Err(bad(
                        "the server offers the pack by URI, which driftless never asks for".into(),
                    ));
                }
                _ if line == 0
                    && !matches!(
                        pkt::text(payload),
                        b"shallow-info" | b"acknowledgments" | b"wanted-refs"
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "answered the v2 fetch with {:?}",
                            String::from_utf8_lossy(&payload[..payload.len().min(40)])
                        ),
                    ));
                }
                _ => {}
            }
        }
        Err(bad(format!(
            "more than {MAX_SECTION_LINES} lines before the pack"
        )))
    }
}

impl Read for Response<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.in_pack {
            self.skip_to_pack()?;
            self.in_pack = true;
        }
        while self.band.0 == self.band.1 {
            if self.done {
                return Ok(0);
            }
            let Some((start, end)) = self.packet()? else {
                self.done = true;
                return Ok(0);
            };
            let Some((&band, data)) = self.pending[start..end].split_first() else {
                continue;
            };
            match band {
                1 => self.band = (start + 1, end),
                2 => {}
                3 => {
                    return Err(io::Error::other(format!(
                        "the server failed while sending the pack: {}",
                        String::from_utf8_lossy(pkt::text(data)).trim()
                    )));
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("pack data on unknown side band {other}"),
                    ));
                }
            }
        }
        let n = out.len().min(self.band.1 - self.band.0);
        out[..n].copy_from_slice(&self.pending[self.band.0..self.band.0 + n]);
        self.band.0 += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pkt::write_data(&mut out, &[payload]).expect("fits");
        out
    }

    /// Feeds `parts` as the network thread would, each part one chunk,
    /// and reads the pack bytes the response carries.
    fn read_response(parts: &[Vec<u8>]) -> io::Result<Vec<u8>> {
        let (send, messages) = mpsc::sync_channel(parts.len() + 1);
        for part in parts {
            send.send(Message::Data(part.clone())).expect("queue");
        }
        drop(send);
        let mut response = Response::new(&messages, Duration::from_secs(5));
        let mut out = Vec::new();
        response.read_to_end(&mut out)?;
        Ok(out)
    }

    fn sections(pack: &[&[u8]]) -> Vec<u8> {
        let mut out = packet(b"shallow-info\n");
        out.extend(packet(
            b"shallow 1111111111111111111111111111111111111111\n",
        ));
        pkt::write_delim(&mut out);
        out.extend(packet(b"packfile\n"));
        for data in pack {
            out.extend(packet(data));
        }
        pkt::write_flush(&mut out);
        out
    }

    #[test]
    fn the_pack_is_read_from_side_band_one_across_chunks() {
        let body = sections(&[b"\x02progress\n", b"\x01PACK", b"\x01rest", b"\x02more\n"]);
        for split in 1..body.len() {
            let parts = vec![body[..split].to_vec(), body[split..].to_vec()];
            assert_eq!(
                read_response(&parts).expect("read"),
                b"PACKrest",
                "split {split}"
            );
        }
    }

    #[test]
    fn request_asks_for_one_object_shallow_without_progress() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let body = fetch_request(oid).expect("request");
        let mut reader = pkt::Reader::new(&body);
        let mut lines = Vec::new();
        while let Some(p) = reader.next_packet().expect("pkt-lines") {
            lines.push(match p {
                pkt::Packet::Data(d) => String::from_utf8_lossy(d).into_owned(),
                pkt::Packet::Delim => "DELIM".into(),
                pkt::Packet::Flush => "FLUSH".into(),
                pkt::Packet::ResponseEnd => "END".into(),
            });
        }
        assert_eq!(lines[0], "command=fetch\n");
        assert!(lines[1].starts_with("agent=driftless/"));
        assert_eq!(
            lines[2..],
            [
                "DELIM",
                "no-progress\n",
                "ofs-delta\n",
                "deepen 1\n",
                &format!("want {oid}\n"),
                "done\n",
                "FLUSH"
            ]
        );
        let sha256 = "0123456789abcdef".repeat(4);
        let body = String::from_utf8(fetch_request(&sha256).expect("request")).expect("text");
        assert!(body.contains("0019object-format=sha256\n0001"), "{body}");
        assert!(body.contains(&format!("want {sha256}\n")), "{body}");
    }

    #[test]
    fn a_fetch_answered_without_v2_asks_for_libgit2() {
        let (send, messages) = mpsc::sync_channel(1);
        send.send(Message::NotV2("HTTP status 400".into()))
            .expect("queue");
        let mut response = Response::new(&messages, Duration::from_secs(5));
        let e = response.read(&mut [0; 8]).expect_err("not v2");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }

    #[test]
    fn errors_and_surprises_in_the_answer_are_refused() {
        let unsupported = |e: &io::Error| e.kind() == io::ErrorKind::Unsupported;
        let cases: Vec<(Vec<u8>, &str, bool)> = vec![
            (
                packet(b"ERR upload-pack: not our ref\n"),
                "not our ref",
                false,
            ),
            (sections(&[b"\x03disk full\n"]), "disk full", false),
            (sections(&[b"\x05odd"]), "unknown side band 5", false),
            (packet(b"packfile-uris\n"), "by URI", false),
            (packet(b"NAK\n"), "answered the v2 fetch", true),
            (b"00".to_vec(), "ends before the pack", false),
            (b"zzzz".to_vec(), "pkt-line length", false),
            (
                {
                    let mut b = packet(b"shallow-info\n");
                    pkt::write_flush(&mut b);
                    b
                },
                "without a pack",
                false,
            ),
        ];
        for (body, says, is_unsupported) in cases {
            let e = read_response(&[body]).expect_err(says);
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
            assert_eq!(unsupported(&e), is_unsupported, "{e}");
        }
    }
}
