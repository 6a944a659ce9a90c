//! The `ls-refs` command of protocol v2 as bytes: the request for exactly
//! one ref, and the strict parsing of the server's answer. Pure and
//! bounded; apart from the HTTP exchange that carries them, so that what
//! a hostile server may send is checked in one place, without a network.

use super::AGENT;
use super::error::clean_message;
use super::pkt;
use crate::types::ObjectFormat;

/// The body of a protocol v2 `ls-refs` request for exactly `ref_name` in a
/// `format` repository: `command=ls-refs`, our `agent`, the object format,
/// a delimiter, `ref-prefix REF`, a flush.
///
/// SHA-1 is asked for by sending no `object-format`: a client that sends
/// none is taken to use SHA-1 (gitprotocol-v2(5)); a SHA-256 repository
/// refuses such a client. The `agent` capability may be sent only when the
/// server advertised it; git's server always does.
pub fn ls_refs_request(ref_name: &str, format: ObjectFormat) -> Result<Vec<u8>, pkt::PktError> {
    let mut out = Vec::with_capacity(96 + AGENT.len() + ref_name.len());
    pkt::write_data(&mut out, &[b"command=ls-refs\n"])?;
    capabilities(&mut out, format)?;
    pkt::write_delim(&mut out);
    pkt::write_data(&mut out, &[b"ref-prefix ", ref_name.as_bytes(), b"\n"])?;
    pkt::write_flush(&mut out);
    Ok(out)
}

/// The capabilities every command sends: our `agent`, and `object-format`
/// for a repository that is not SHA-1.
pub fn capabilities(out: &mut Vec<u8>, format: ObjectFormat) -> Result<(), pkt::PktError> {
    pkt::write_data(out, &[b"agent=", AGENT.as_bytes(), b"\n"])?;
    if format != ObjectFormat::Sha1 {
        pkt::write_data(out, &[b"object-format=", format.name().as_bytes(), b"\n"])?;
    }
    Ok(())
}

/// An `ls-refs` answer that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The framing is broken.
    #[error(transparent)]
    Pkt(#[from] pkt::PktError),
    /// The server sent an `ERR` packet.
    #[error("{0}")]
    Server(String),
    /// The answer is not protocol v2 (empty, or a v0 ref advertisement):
    /// the server did not honour `Git-Protocol: version=2`.
    #[error("not a protocol v2 answer: {0}")]
    NotV2(&'static str),
    /// A line is not `OID SP REFNAME *(SP ATTRIBUTE)`.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based packet number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The answer names the ref twice.
    #[error("the ref is listed twice")]
    Duplicate,
    /// The answer stops before its flush packet.
    #[error("the answer ends without its flush packet")]
    MissingFlush,
    /// Something follows the flush packet.
    #[error("unexpected data after the flush packet")]
    TrailingData,
}

/// Finds `ref_name` in the body of an `ls-refs` answer: `Some(oid)` when a
/// line names exactly that ref, `None` when none does (lines of other refs
/// sharing the prefix, e.g. `refs/heads/channel-old`, are skipped). Every
/// line must carry a well-formed object id; an `unborn` line counts as
/// absent. The answer ends with a flush packet, optionally followed by a
/// response-end packet.
pub fn parse_ls_refs(body: &[u8], ref_name: &str) -> Result<Option<String>, AnswerError> {
    if body.is_empty() {
        return Err(AnswerError::NotV2("empty answer"));
    }
    let mut reader = pkt::Reader::new(body);
    let mut found: Option<Option<&[u8]>> = None;
    let mut line = 0usize;
    loop {
        line += 1;
        let payload = match reader.next_packet()? {
            None => return Err(AnswerError::MissingFlush),
            Some(pkt::Packet::Flush) => break,
            Some(pkt::Packet::Delim | pkt::Packet::ResponseEnd) => {
                return Err(AnswerError::BadLine {
                    line,
                    reason: "a delimiter before the flush packet",
                });
            }
            Some(pkt::Packet::Data(payload)) => payload,
        };
        if let Some(message) = payload.strip_prefix(b"ERR ") {
            return Err(AnswerError::Server(clean_message(pkt::text(message))));
        }
        if line == 1 {
            if payload.starts_with(b"# service=") {
                return Err(AnswerError::NotV2("a smart HTTP v0 advertisement"));
            }
            if payload.contains(&0) {
                return Err(AnswerError::NotV2("a v0 ref advertisement"));
            }
            if pkt::text(payload) == b"version 1" {
                return Err(AnswerError::NotV2("protocol version 1"));
            }
        }
        let text = pkt::text(payload);
        let bad = |reason| AnswerError::BadLine { line, reason };
        let mut fields = text.split(|&b| b == b' ');
        let oid = fields.next().unwrap_or_default();
        let name = fields.next().ok_or_else(|| bad("no ref name"))?;
        if name.is_empty() {
            return Err(bad("an empty ref name"));
        }
        let oid = match oid {
            b"unborn" => None,
            oid if is_object_id(oid) => Some(oid),
            _ => return Err(bad("not an object id")),
        };
        for attribute in fields {
            let valid = match attribute.strip_prefix(b"peeled:") {
                Some(peeled) => is_object_id(peeled),
                None => attribute.starts_with(b"symref-target:"),
            };
            if !valid {
                return Err(bad("a bad ref attribute"));
            }
        }
        if name == ref_name.as_bytes() {
            if found.is_some() {
                return Err(AnswerError::Duplicate);
            }
            found = Some(oid);
        }
    }
    match reader.next_packet()? {
        None => {}
        Some(pkt::Packet::ResponseEnd) if reader.rest().is_empty() => {}
        Some(_) => return Err(AnswerError::TrailingData),
    }
    Ok(found
        .flatten()
        .map(|oid| String::from_utf8_lossy(oid).into_owned()))
}

/// Whether `text` is a SHA-1 or SHA-256 object id in lowercase hex.
pub fn is_object_id(text: &[u8]) -> bool {
    matches!(text.len(), 40 | 64) && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::poll::pkt::{Packet, PktError, packets};

    const OID_A: &str = "1111111111111111111111111111111111111111";
    const OID_B: &str = "2222222222222222222222222222222222222222";
    const OID_256: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    /// A well-formed answer made of `lines`, a flush, and `tail`.
    fn answer(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            pkt::write_data(&mut out, &[line.as_bytes(), b"\n"]).expect("fits");
        }
        pkt::write_flush(&mut out);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn the_request_asks_for_exactly_one_prefix() {
        let body = ls_refs_request("refs/heads/channel", ObjectFormat::Sha1).expect("fits");
        let expected = format!(
            "0014command=ls-refs\n{:04x}agent={AGENT}\n00010022ref-prefix refs/heads/channel\n0000",
            AGENT.len() + 11
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
        assert_eq!(packets(&body).expect("valid").last(), Some(&Packet::Flush));
        assert!(ls_refs_request(&"x".repeat(70_000), ObjectFormat::Sha1).is_err());
        let body = ls_refs_request("refs/tags/v1", ObjectFormat::Sha256).expect("fits");
        assert!(
            String::from_utf8_lossy(&body).contains("\n0019object-format=sha256\n0001"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn answers_are_parsed() {
        let body = answer(
            &[
                &format!("{OID_A} refs/heads/channel"),
                &format!("{OID_B} refs/heads/channel-old"),
            ],
            b"",
        );
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Ok(Some(OID_A.to_owned()))
        );
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel-old"),
            Ok(Some(OID_B.to_owned()))
        );
        assert_eq!(parse_ls_refs(&body, "refs/heads/chan"), Ok(None));
        // Nothing under the prefix: just a flush.
        assert_eq!(parse_ls_refs(b"0000", "refs/heads/channel"), Ok(None));
        // A response-end packet may follow; attributes, SHA-256 and a
        // missing LF are fine.
        let mut body = Vec::new();
        pkt::write_data(
            &mut body,
            &[format!("{OID_256} refs/tags/v1 peeled:{OID_256} symref-target:refs/x").as_bytes()],
        )
        .expect("fits");
        pkt::write_flush(&mut body);
        pkt::write_response_end(&mut body);
        assert_eq!(
            parse_ls_refs(&body, "refs/tags/v1"),
            Ok(Some(OID_256.to_owned()))
        );
        // An unborn HEAD is no object.
        let body = answer(&["unborn HEAD symref-target:refs/heads/main"], b"");
        assert_eq!(parse_ls_refs(&body, "HEAD"), Ok(None));
    }

    #[test]
    fn an_err_packet_is_the_servers_message() {
        let mut body = Vec::new();
        pkt::write_data(&mut body, &[b"ERR access denied\n"]).expect("fits");
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Err(AnswerError::Server("access denied".to_owned()))
        );
        // Also after some refs, and with control characters scrubbed.
        let mut body = answer(&[], b"");
        body.clear();
        pkt::write_data(
            &mut body,
            &[format!("{OID_A} refs/heads/channel\n").as_bytes()],
        )
        .expect("fits");
        pkt::write_data(&mut body, &[b"ERR two\nlines\x1b[31m"]).expect("fits");
        assert_eq!(
            parse_ls_refs(&body, "refs/heads/channel"),
            Err(AnswerError::Server("two lines [31m".to_owned()))
        );
    }

    #[test]
    fn v0_answers_are_recognised() {
        assert!(matches!(
            parse_ls_refs(b"", "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let smart = b"001e# service=git-upload-pack\n0000";
        assert!(matches!(
            parse_ls_refs(smart, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let mut v0 = Vec::new();
        pkt::write_data(
            &mut v0,
            &[format!("{OID_A} HEAD\0multi_ack side-band-64k\n").as_bytes()],
        )
        .expect("fits");
        pkt::write_flush(&mut v0);
        assert!(matches!(
            parse_ls_refs(&v0, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
        let v1 = answer(&["version 1"], b"");
        assert!(matches!(
            parse_ls_refs(&v1, "refs/heads/channel"),
            Err(AnswerError::NotV2(_))
        ));
    }

    #[test]
    fn malformed_answers_are_refused() {
        let r = "refs/heads/channel";
        let line = format!("{OID_A} {r}");
        let full = answer(&[&line], b"");
        // Truncated anywhere before the flush.
        for cut in 1..full.len() {
            let result = parse_ls_refs(&full[..cut], r);
            assert!(
                matches!(
                    result,
                    Err(AnswerError::Pkt(PktError::Truncated { .. }) | AnswerError::MissingFlush)
                ),
                "cut at {cut}: {result:?}"
            );
        }
        for (lines, tail, what) in [
            (vec![line.as_str()], &b"0005x"[..], "data after the flush"),
            (vec![line.as_str()], b"0001", "a delimiter after the flush"),
            (
                vec![line.as_str()],
                b"00020000",
                "data after the response end",
            ),
            (vec![line.as_str(), line.as_str()], b"", "a duplicate"),
            (vec![OID_A], b"", "no ref name"),
            (vec!["1111 refs/heads/channel"], b"", "a short oid"),
            (
                vec!["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA refs/heads/channel"],
                b"",
                "an uppercase oid",
            ),
            (
                vec!["gggggggggggggggggggggggggggggggggggggggg refs/heads/channel"],
                b"",
                "a non-hex oid",
            ),
            (
                vec!["1111111111111111111111111111111111111111  refs/heads/channel"],
                b"",
                "an empty ref name",
            ),
            (
                vec!["1111111111111111111111111111111111111111 refs/heads/channel peeled:xyz"],
                b"",
                "a bad attribute",
            ),
            (
                vec!["1111111111111111111111111111111111111111 refs/heads/channel wat"],
                b"",
                "an unknown attribute",
            ),
        ] {
            let body = answer(&lines, tail);
            let result = parse_ls_refs(&body, r);
            assert!(
                result.is_err() && !matches!(result, Err(AnswerError::NotV2(_))),
                "{what}: {result:?}"
            );
        }
        // A delimiter inside the list.
        let mut body = Vec::new();
        pkt::write_data(&mut body, &[line.as_bytes()]).expect("fits");
        pkt::write_delim(&mut body);
        pkt::write_flush(&mut body);
        assert!(matches!(
            parse_ls_refs(&body, r),
            Err(AnswerError::BadLine { line: 2, .. })
        ));
        // A bad length in the middle.
        let mut body = answer(&[&line], b"");
        body.splice(0..0, *b"zzzz");
        assert!(matches!(
            parse_ls_refs(&body, r),
            Err(AnswerError::Pkt(PktError::BadLength { .. }))
        ));
    }

    #[test]
    fn object_ids() {
        assert!(is_object_id(OID_A.as_bytes()));
        assert!(is_object_id(OID_256.as_bytes()));
        assert!(!is_object_id(&OID_256.as_bytes()[..63]));
        assert!(!is_object_id(b""));
        assert!(!is_object_id(b"unborn"));
    }
}
