//! Git tag and commit objects as signed data: where the signature is, what
//! exactly was signed, and the headers read from the signed bytes only.
//!
//! The split follows git (`parse_signed_buffer` for tags, the `gpgsig`
//! header for commits) so that driftless and `git verify-tag` judge the same
//! bytes; the header grammar is stricter than git's.

use jiff::Timestamp;

pub use crate::types::ObjectFormat;

/// Headers longer than this, or objects larger than [`MAX_OBJECT_LEN`], are
/// refused before any parsing work.
pub const MAX_OBJECT_LEN: usize = 1024 * 1024;

/// Lines that start a signature block in git objects, and their formats.
const SIGNATURE_STARTS: [(&str, &str); 4] = [
    ("-----BEGIN SSH SIGNATURE-----", "SSH"),
    ("-----BEGIN PGP SIGNATURE-----", "OpenPGP"),
    ("-----BEGIN PGP MESSAGE-----", "OpenPGP"),
    ("-----BEGIN SIGNED MESSAGE-----", "X.509"),
];

/// Why an object cannot be treated as signed data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// No signature at all.
    #[error("is not signed")]
    Unsigned,
    /// Signed, but not with an SSH key.
    #[error("is signed with {0}; only SSH signatures are accepted")]
    ForeignSignature(&'static str),
    /// The object's text does not follow git's format.
    #[error("malformed {kind} object: {reason}")]
    Malformed {
        /// `tag` or `commit`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An identity line (`tagger` or `committer`): who, and the claimed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `Name <email>` as written.
    pub who: String,
    /// The claimed signing time.
    pub when: Timestamp,
}

/// A tag object split into what was signed and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTag<'a> {
    /// Hex id of the tagged object.
    pub object: String,
    /// The tagged object's type (`commit` for releases).
    pub target_type: String,
    /// The `tag` header: the name the signer gave the tag.
    pub name: String,
    /// The `tagger` header.
    pub tagger: Identity,
    /// Exactly the bytes the signature covers.
    pub payload: &'a [u8],
    /// The armored signature.
    pub signature: &'a [u8],
}

/// A commit object split into what was signed and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommit {
    /// Hex id of the commit's tree.
    pub tree: String,
    /// The `committer` header.
    pub committer: Identity,
    /// Exactly the bytes the signature covers (the object without `gpgsig`).
    pub payload: Vec<u8>,
    /// The armored signature, continuation spaces removed.
    pub signature: Vec<u8>,
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> ObjectError {
    ObjectError::Malformed {
        kind,
        reason: reason.into(),
    }
}

/// Splits a raw tag object. The signature starts at the last line that
/// begins a signature block, as in git; the headers come from the payload.
pub fn parse_tag(raw: &[u8]) -> Result<SignedTag<'_>, ObjectError> {
    if raw.len() > MAX_OBJECT_LEN {
        return Err(malformed("tag", "object too large"));
    }
    let mut start = None;
    let mut offset = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if SIGNATURE_STARTS
            .iter()
            .any(|(s, _)| line.starts_with(s.as_bytes()))
        {
            start = Some(offset);
        }
        offset += line.len();
    }
    let start = start.ok_or(ObjectError::Unsigned)?;
    let (payload, signature) = raw.split_at(start);
    let format = SIGNATURE_STARTS
        .iter()
        .find(|(s, _)| signature.starts_with(s.as_bytes()))
        .map_or("SSH", |(_, f)| *f);
    if format != "SSH" {
        return Err(ObjectError::ForeignSignature(format));
    }
    let text =
        std::str::from_utf8(payload).map_err(|_| malformed("tag", "headers are not UTF-8"))?;
    let (headers, _message) = text
        .split_once("\n\n")
        .ok_or_else(|| malformed("tag", "no blank line after the headers"))?;
    let mut lines = headers.split('\n');
    let mut expect = |name: &str| -> Result<String, ObjectError> {
        let line = lines
            .next()
            .ok_or_else(|| malformed("tag", format!("missing {name} header")))?;
        line.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_owned)
            .ok_or_else(|| malformed("tag", format!("expected {name} header, found {line:?}")))
    };
    let object = expect("object")?;
    let target_type = expect("type")?;
    let name = expect("tag")?;
    let tagger = parse_identity("tag", &expect("tagger")?)?;
    if let Some(extra) = lines.next() {
        return Err(malformed("tag", format!("unexpected header {extra:?}")));
    }
    check_hex_id_any("tag", &object)?;
    Ok(SignedTag {
        object,
        target_type,
        name,
        tagger,
        payload,
        signature,
    })
}

/// The tree of a commit object of a `format` repository, signed or not:
/// git writes `tree <id>` as its first header, and a commit without one is
/// not a commit.
pub fn commit_tree(raw: &[u8], format: ObjectFormat) -> Result<String, ObjectError> {
    let digits = format.hex_len();
    let line = raw
        .strip_prefix(b"tree ")
        .and_then(|rest| rest.get(..=digits))
        .filter(|line| line[digits] == b'\n')
        .ok_or_else(|| malformed("commit", "does not start with a tree header"))?;
    let tree = std::str::from_utf8(&line[..digits])
        .map_err(|_| malformed("commit", "a tree id that is not hex"))?;
    check_hex_id("commit", tree, format)?;
    Ok(tree.to_owned())
}

/// The header git signs a commit of a `format` repository under:
/// `gpgsig` (SHA-1) or `gpgsig-sha256` (git's `gpg_sig_headers`).
pub fn signature_header(format: ObjectFormat) -> &'static str {
    match format {
        ObjectFormat::Sha1 => "gpgsig",
        ObjectFormat::Sha256 => "gpgsig-sha256",
    }
}

/// Splits a raw commit object of a `format` repository: the signature
/// header of that format ([`signature_header`], with its continuation
/// lines) is the signature, and everything else is the payload, as in git
/// (`parse_buffer_signed_by_header`). A signature header of the other
/// format is refused (git would leave it out of the payload and ignore it;
/// driftless takes no unsigned bytes beside a signature).
pub fn parse_commit(raw: &[u8], format: ObjectFormat) -> Result<SignedCommit, ObjectError> {
    let header = signature_header(format);
    if raw.len() > MAX_OBJECT_LEN {
        return Err(malformed("commit", "object too large"));
    }
    let header_end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .ok_or_else(|| malformed("commit", "no blank line after the headers"))?;
    let (headers, body) = raw.split_at(header_end);
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut in_signature = false;
    let (mut tree, mut committer) = (None, None);
    for line in headers.split_inclusive(|&b| b == b'\n') {
        if let Some(continuation) = line.strip_prefix(b" ") {
            if in_signature {
                signature
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(continuation);
            } else {
                payload.extend_from_slice(line);
            }
            continue;
        }
        in_signature = false;
        let ours = line
            .strip_prefix(header.as_bytes())
            .and_then(|rest| rest.strip_prefix(b" "));
        if let Some(first) = ours {
            if signature.is_some() {
                return Err(malformed(
                    "commit",
                    format!("more than one {header} header"),
                ));
            }
            signature = Some(first.to_vec());
            in_signature = true;
            continue;
        }
        if line.starts_with(b"gpgsig") {
            let name = line.split(|&b| b == b' ').next().unwrap_or_default();
            return Err(malformed(
                "commit",
                format!(
                    "a {} header in a {} repository, whose commits are signed in {header}",
                    String::from_utf8_lossy(name).trim_end(),
                    format.name()
                ),
            ));
        }
        payload.extend_from_slice(line);
        let text =
            std::str::from_utf8(line).map_err(|_| malformed("commit", "headers are not UTF-8"))?;
        let text = text.trim_end_matches('\n');
        if let Some(v) = text.strip_prefix("tree ") {
            if tree.replace(v.to_owned()).is_some() {
                return Err(malformed("commit", "more than one tree header"));
            }
        } else if let Some(v) = text.strip_prefix("committer ") {
            if committer.replace(parse_identity("commit", v)?).is_some() {
                return Err(malformed("commit", "more than one committer header"));
            }
        }
    }
    payload.extend_from_slice(body);
    let signature = signature.ok_or(ObjectError::Unsigned)?;
    if !signature.starts_with(SIGNATURE_STARTS[0].0.as_bytes()) {
        let format = SIGNATURE_STARTS
            .iter()
            .find(|(s, _)| signature.starts_with(s.as_bytes()))
            .map_or("an unknown format", |(_, f)| *f);
        return Err(ObjectError::ForeignSignature(format));
    }
    let tree = tree.ok_or_else(|| malformed("commit", "missing tree header"))?;
    check_hex_id("commit", &tree, format)?;
    let committer = committer.ok_or_else(|| malformed("commit", "missing committer header"))?;
    Ok(SignedCommit {
        tree,
        committer,
        payload,
        signature,
    })
}

/// Parses `Name <email> SECONDS +HHMM`.
fn parse_identity(kind: &'static str, value: &str) -> Result<Identity, ObjectError> {
    let bad = || malformed(kind, format!("malformed identity {value:?}"));
    let close = value.rfind('>').ok_or_else(bad)?;
    let (who, when) = value.split_at(close + 1);
    let mut parts = when.split(' ');
    let (Some(""), Some(seconds), Some(zone), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let zone_ok = zone.len() == 5
        && zone.starts_with(['+', '-'])
        && zone[1..].bytes().all(|b| b.is_ascii_digit());
    if !zone_ok || seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds: i64 = seconds.parse().map_err(|_| bad())?;
    let when = Timestamp::from_second(seconds).map_err(|_| bad())?;
    Ok(Identity {
        who: who.to_owned(),
        when,
    })
}

/// Checks that `id` is a lowercase hex id of either format.
fn check_hex_id_any(kind: &'static str, id: &str) -> Result<(), ObjectError> {
    ObjectFormat::of_hex(id)
        .map(|_| ())
        .ok_or_else(|| malformed(kind, format!("invalid object id {id:?}")))
}

/// Checks that `id` is a lowercase hex id of `format`.
fn check_hex_id(kind: &'static str, id: &str, format: ObjectFormat) -> Result<(), ObjectError> {
    check_hex_id_any(kind, id)?;
    if id.len() == format.hex_len() {
        Ok(())
    } else {
        Err(malformed(
            kind,
            format!("object id {id:?} is not a {} id", format.name()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n";
    const OBJECT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn tag(headers: &str) -> String {
        format!("{headers}\n\nrelease notes\n{SIG}")
    }

    #[test]
    fn splits_a_tag_like_git() {
        let raw = tag(&format!(
            "object {OBJECT}\ntype commit\ntag v1\ntagger A <a@b> 1700000000 +0100"
        ));
        let t = parse_tag(raw.as_bytes()).expect("parses");
        assert_eq!((t.name.as_str(), t.target_type.as_str()), ("v1", "commit"));
        assert_eq!(
            t.tagger.when,
            Timestamp::from_second(1_700_000_000).expect("ts")
        );
        assert!(t.payload.ends_with(b"release notes\n"));
        assert_eq!(t.signature, SIG.as_bytes());
    }

    #[test]
    fn tag_refusals() {
        let base = format!("object {OBJECT}\ntype commit\ntag v1\ntagger A <a@b> 1700000000 +0100");
        assert_eq!(
            parse_tag(format!("{base}\n\nno signature\n").as_bytes()),
            Err(ObjectError::Unsigned)
        );
        let pgp =
            format!("{base}\n\nm\n-----BEGIN PGP SIGNATURE-----\nx\n-----END PGP SIGNATURE-----\n");
        assert_eq!(
            parse_tag(pgp.as_bytes()),
            Err(ObjectError::ForeignSignature("OpenPGP"))
        );
        for bad in [
            format!("type commit\nobject {OBJECT}\ntag v1\ntagger A <a@b> 1 +0000"),
            format!("object {OBJECT}\ntype commit\ntag v1"),
            format!("{base}\nextra header"),
            format!("object {OBJECT}\ntype commit\ntag v1\ntagger A <a@b> soon +0000"),
            "object xyz\ntype commit\ntag v1\ntagger A <a@b> 1 +0000".to_owned(),
        ] {
            assert!(
                matches!(
                    parse_tag(tag(&bad).as_bytes()),
                    Err(ObjectError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn splits_a_commit_like_git() {
        let sig_header = SIG.trim_end().replace('\n', "\n ");
        let raw = format!(
            "tree {OBJECT}\nparent {OBJECT}\nauthor A <a@b> 1 +0000\ncommitter C <c@d> 1700000000 +0000\ngpgsig {sig_header}\n\nmessage\n"
        );
        let c = parse_commit(raw.as_bytes(), ObjectFormat::Sha1).expect("parses");
        assert_eq!(c.signature, SIG.as_bytes());
        assert_eq!(c.committer.who, "C <c@d>");
        let expected = format!(
            "tree {OBJECT}\nparent {OBJECT}\nauthor A <a@b> 1 +0000\ncommitter C <c@d> 1700000000 +0000\n\nmessage\n"
        );
        assert_eq!(c.payload, expected.as_bytes());
        let twice = raw.replace("\n\nmessage", &format!("\ngpgsig {sig_header}\n\nmessage"));
        assert!(parse_commit(twice.as_bytes(), ObjectFormat::Sha1).is_err());
        // In a SHA-256 repository the signature is gpgsig-sha256, and a
        // gpgsig header is refused rather than left unsigned.
        assert!(matches!(
            parse_commit(raw.as_bytes(), ObjectFormat::Sha256),
            Err(ObjectError::Malformed { .. })
        ));
        let tree = "ab".repeat(32);
        let sha256 = raw
            .replace("gpgsig ", "gpgsig-sha256 ")
            .replace(&format!("tree {OBJECT}"), &format!("tree {tree}"));
        let c = parse_commit(sha256.as_bytes(), ObjectFormat::Sha256).expect("parses");
        assert_eq!(
            (c.signature.as_slice(), c.tree.as_str()),
            (SIG.as_bytes(), tree.as_str())
        );
        assert!(!c.payload.windows(6).any(|w| w == b"gpgsig"));
        assert_eq!(
            commit_tree(sha256.as_bytes(), ObjectFormat::Sha256),
            Ok(tree)
        );
        assert!(commit_tree(sha256.as_bytes(), ObjectFormat::Sha1).is_err());
        assert!(parse_commit(sha256.as_bytes(), ObjectFormat::Sha1).is_err());
        let unsigned = expected;
        assert_eq!(
            parse_commit(unsigned.as_bytes(), ObjectFormat::Sha1).map(|_| ()),
            Err(ObjectError::Unsigned)
        );
    }
}
