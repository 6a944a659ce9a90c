//! An age-encrypted source of the release, as data: the ciphertext is
//! parsed (binary or ASCII-armored) and its recipients named without
//! decrypting it, for `driftless verify` and for the error of a node that
//! lacks the identity; the plaintext a node opens is held in a
//! [`Plaintext`], which never prints and is zeroed when dropped.

use std::fmt;
use std::io::{BufReader, Read};
use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::release::spec::{Content, NodeSpec};
use crate::release::tree::Release;
use crate::types::TreePath;

/// An encrypted source larger than this is refused before it is parsed.
pub const MAX_SEALED_LEN: u64 = 1024 * 1024;
/// All of a release's secrets together, as the node holds them in memory
/// between decrypting and writing them.
pub const MAX_SEALED_TOTAL: u64 = 16 * 1024 * 1024;

/// An encrypted source of the release that is not a usable age file (the
/// release's fault: the spec's stage).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SealedError(pub String);

/// Checks every encrypted source `spec` names, without decrypting any:
/// each must be a regular file of the release of at most
/// [`MAX_SEALED_LEN`] bytes that parses as age and names a recipient a node
/// can hold ([`inspect`]). Returns each source with its header.
pub fn check_sources(
    release: &Release<'_>,
    spec: &NodeSpec,
) -> Result<Vec<(TreePath, SealedHeader)>, SealedError> {
    let mut out = Vec::new();
    for (i, file) in spec.files.iter().enumerate() {
        let Content::Encrypted(source) = &file.content else {
            continue;
        };
        let fail = |reason: String| {
            SealedError(format!(
                "{} (files[{i}]): secret {source}: {reason}",
                file.path
            ))
        };
        let bytes = release
            .read(source, MAX_SEALED_LEN)
            .map_err(|e| fail(e.reason))?;
        out.push((source.clone(), inspect(&bytes).map_err(fail)?));
    }
    Ok(out)
}

/// A recipient an age file names in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An X25519 recipient (`age1…`): age records no key id for it.
    X25519,
    /// An ssh-ed25519 key: age records the first 4 bytes of the SHA-256 of
    /// its public key, which is where its fingerprint starts.
    SshEd25519([u8; 4]),
    /// An ssh-rsa key (driftless does not decrypt with RSA keys).
    SshRsa([u8; 4]),
    /// Any other recipient type (a plugin, post-quantum keys …).
    Other(String),
}

impl Recipient {
    /// Whether a node's identity can be of this kind.
    pub fn can_open(&self) -> bool {
        matches!(self, Recipient::X25519 | Recipient::SshEd25519(_))
    }
}

impl fmt::Display for Recipient {
    /// `X25519 (age names no key)`, `ssh-ed25519 SHA256:GAUwq…`: the tag
    /// is 32 bits, so the first five characters of the key's fingerprint
    /// (as `ssh-keygen -l` prints it) are known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |tag: &[u8; 4]| {
            let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag);
            text[..5].to_owned()
        };
        match self {
            Recipient::X25519 => f.write_str("X25519 (age names no key)"),
            Recipient::SshEd25519(tag) => write!(f, "ssh-ed25519 SHA256:{}…", prefix(tag)),
            Recipient::SshRsa(tag) => write!(f, "ssh-rsa SHA256:{}…", prefix(tag)),
            Recipient::Other(kind) => write!(f, "{kind}"),
        }
    }
}

/// What the header of an age file says, read without decrypting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// Its recipients, in header order (grease stanzas left out).
    pub recipients: Vec<Recipient>,
}

impl SealedHeader {
    /// The recipients as one phrase for an error line.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.recipients.iter().map(|r| r.to_string()).collect();
        names.join(", ")
    }
}

/// Parses an age file (binary or ASCII-armored) far enough to check it is
/// one and to name its recipients. It must name at least one recipient a
/// node can hold the identity of (X25519 or ssh-ed25519); a file encrypted
/// to a passphrase is refused (a node has no one to type it).
pub fn inspect(bytes: &[u8]) -> Result<SealedHeader, String> {
    if bytes.len() as u64 > MAX_SEALED_LEN {
        return Err(format!(
            "{} bytes; an encrypted source may have at most {MAX_SEALED_LEN}",
            bytes.len()
        ));
    }
    let binary = dearmor(bytes)?;
    // age's own check of the header's structure (and its nonce after it).
    age::Decryptor::new_buffered(&binary[..])
        .map_err(|e| format!("not an age-encrypted file: {e}"))?;
    let mut rest = binary
        .strip_prefix(b"age-encryption.org/v1\n".as_slice())
        .ok_or("not an age v1 file")?;
    let mut recipients = Vec::new();
    let mut passphrase = false;
    while rest.starts_with(b"-> ") {
        let (after, stanza) = age_core::format::read::age_stanza(rest)
            .map_err(|_| "its header does not parse".to_owned())?;
        rest = after;
        let tag = |args: &[&str]| -> Option<[u8; 4]> {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(args.first()?)
                .ok()?;
            bytes.try_into().ok()
        };
        match stanza.tag {
            "X25519" => recipients.push(Recipient::X25519),
            "ssh-ed25519" => recipients.push(Recipient::SshEd25519(
                tag(&stanza.args).ok_or("an ssh-ed25519 stanza without a key tag")?,
            )),
            "ssh-rsa" => recipients.push(Recipient::SshRsa(
                tag(&stanza.args).ok_or("an ssh-rsa stanza without a key tag")?,
            )),
            "scrypt" => passphrase = true,
            // rage adds a stanza of a random type to every file, so that
            // parsers keep accepting unknown types.
            other if other.ends_with("-grease") => {}
            other => recipients.push(Recipient::Other(other.to_owned())),
        }
    }
    if passphrase {
        return Err(
            "encrypted to a passphrase; encrypt it to the nodes' recipients (age -r or -R)".into(),
        );
    }
    let header = SealedHeader { recipients };
    if !header.recipients.iter().any(Recipient::can_open) {
        let named = if header.recipients.is_empty() {
            "none".to_owned()
        } else {
            header.describe()
        };
        return Err(format!(
            "names no X25519 or ssh-ed25519 recipient a node could hold (it names: {named})"
        ));
    }
    Ok(header)
}

/// The binary form of an age file that may be ASCII-armored.
pub fn dearmor(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut binary = Vec::with_capacity(bytes.len());
    age::armor::ArmoredReader::new(bytes)
        .take(MAX_SEALED_LEN + 1)
        .read_to_end(&mut binary)
        .map_err(|e| format!("not an age-encrypted file: {e}"))?;
    Ok(binary)
}

/// The plaintext of a secret: zeroed when the last copy is dropped, never
/// printed (`Debug` shows no byte of it).
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(Arc<Zeroizing<Vec<u8>>>);

impl Plaintext {
    /// Reads at most `limit` bytes into a buffer allocated once and never
    /// grown (a grown buffer would leave a copy behind in freed memory).
    pub fn read_from(reader: impl Read, limit: usize) -> std::io::Result<Self> {
        let mut reader = BufReader::new(reader);
        let mut buffer = Zeroizing::new(vec![0u8; limit]);
        let mut filled = 0;
        loop {
            if filled == limit {
                let mut probe = Zeroizing::new([0u8; 1]);
                if reader.read(&mut probe[..])? != 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the plaintext is larger than {limit} bytes"),
                    ));
                }
                break;
            }
            match reader.read(&mut buffer[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        buffer.truncate(filled);
        Ok(Self(Arc::new(buffer)))
    }

    /// The bytes, to be written to their target and nowhere else.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its length.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// True when it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipients_of_a_header_are_named() {
        // A header made by hand in age's format (the stanza bodies are
        // placeholders: nothing here decrypts). The MAC is not checked
        // before decryption, so any 32 bytes do.
        let body = "A".repeat(43);
        let mac = base64::engine::general_purpose::STANDARD_NO_PAD.encode([7u8; 32]);
        let header = format!(
            "age-encryption.org/v1\n-> X25519 {body}\n{body}\n-> ssh-ed25519 GAUwqA {body}\n{body}\n-> x-grease a b\n\n--- {mac}\n"
        );
        let mut file = header.into_bytes();
        file.extend_from_slice(&[0u8; 16]);
        let got = inspect(&file).expect("a well-formed header");
        assert_eq!(
            got.recipients,
            vec![
                Recipient::X25519,
                Recipient::SshEd25519([0x18, 0x05, 0x30, 0xa8])
            ]
        );
        assert_eq!(
            got.describe(),
            "X25519 (age names no key), ssh-ed25519 SHA256:GAUwq…"
        );
    }

    #[test]
    fn files_that_are_not_age_or_name_no_usable_recipient_are_refused() {
        let err = inspect(b"password=hunter2\n").expect_err("plain text");
        assert!(err.contains("not an age"), "{err}");
        let mac = base64::engine::general_purpose::STANDARD_NO_PAD.encode([7u8; 32]);
        let salt = "A".repeat(22);
        let scrypt = format!(
            "age-encryption.org/v1\n-> scrypt {salt} 18\n{}\n--- {mac}\n",
            "A".repeat(43)
        );
        let mut file = scrypt.into_bytes();
        file.extend_from_slice(&[0u8; 16]);
        let err = inspect(&file).expect_err("a passphrase");
        assert!(err.contains("passphrase"), "{err}");
        let other = format!(
            "age-encryption.org/v1\n-> piv-p256 abc {}\n{}\n--- {mac}\n",
            "A".repeat(43),
            "A".repeat(43)
        );
        let mut file = other.into_bytes();
        file.extend_from_slice(&[0u8; 16]);
        let err = inspect(&file).expect_err("no usable recipient");
        assert!(err.contains("it names: piv-p256"), "{err}");
        let big = vec![b'a'; MAX_SEALED_LEN as usize + 1];
        assert!(inspect(&big).expect_err("too large").contains("at most"));
    }

    #[test]
    fn plaintext_is_bounded_and_never_printed() {
        let p = Plaintext::read_from(&b"s3cr3t"[..], 6).expect("fits");
        assert_eq!(p.bytes(), b"s3cr3t");
        assert_eq!(format!("{p:?}"), "Plaintext(<secret>)");
        let err = Plaintext::read_from(&b"s3cr3t!"[..], 6).expect_err("one byte too many");
        assert!(err.to_string().contains("larger than 6"), "{err}");
    }
}
