//! OpenSSH's signature format (PROTOCOL.sshsig): the armored text git stores,
//! the SSHSIG blob inside it, and the signed data rebuilt for verification.
//!
//! Parsing is stricter than `ssh-keygen -Y verify`: exactly one armored block
//! and nothing after its footer but a single newline, canonical base64, no
//! trailing bytes anywhere, version 1 only, an empty reserved field.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;

use super::sshkey::{KeyError, PublicKey, SignatureError};
use super::wire::{self, Reader};

/// The first line of an armored SSH signature.
pub const ARMOR_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
/// The last line of an armored SSH signature.
pub const ARMOR_END: &str = "-----END SSH SIGNATURE-----";
const MAGIC: &[u8; 6] = b"SSHSIG";
const VERSION: u32 = 1;
/// Armored signatures larger than this are refused before decoding (a real
/// one is well under 2 KiB even for 8192-bit RSA).
pub const MAX_ARMOR_LEN: usize = 16 * 1024;

/// Why an SSH signature could not be parsed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshSigError {
    /// The armor lines are missing, misplaced, or followed by other text.
    #[error("malformed signature armor: {0}")]
    Armor(&'static str),
    /// The SSHSIG blob is truncated, has trailing bytes, or a wrong magic.
    #[error("malformed SSHSIG blob: {0}")]
    Blob(&'static str),
    /// An SSHSIG version other than 1.
    #[error("unsupported SSHSIG version {0}")]
    Version(u32),
    /// The signing key inside the signature cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature was made for another purpose than the one expected.
    #[error("signature namespace is {found:?}, expected {expected:?}")]
    Namespace {
        /// The namespace the verifier requires.
        expected: String,
        /// The namespace inside the signature.
        found: String,
    },
    /// A hash other than sha256 or sha512.
    #[error("unsupported signature hash algorithm {0:?} (sha256 or sha512 required)")]
    HashAlgorithm(String),
    /// The cryptographic check failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A parsed SSHSIG blob.
#[derive(Debug, Clone)]
pub struct SshSig {
    /// The key that claims to have signed.
    pub public_key: PublicKey,
    /// The purpose the signer declared (`git` for git objects).
    pub namespace: String,
    /// `sha256` or `sha512`: the hash of the message that was signed.
    pub hash_algorithm: String,
    signature: Vec<u8>,
}

/// Decodes an armored signature. The text must be exactly the header line,
/// base64 lines, and the footer line, optionally followed by one newline.
pub fn dearmor(text: &[u8]) -> Result<Vec<u8>, SshSigError> {
    if text.len() > MAX_ARMOR_LEN {
        return Err(SshSigError::Armor("signature is too large"));
    }
    let text = std::str::from_utf8(text).map_err(|_| SshSigError::Armor("not ASCII text"))?;
    let body = text
        .strip_prefix(ARMOR_BEGIN)
        .and_then(|t| t.strip_prefix('\n'))
        .ok_or(SshSigError::Armor("missing header line"))?;
    let body = body.strip_suffix('\n').unwrap_or(body);
    let body = body
        .strip_suffix(ARMOR_END)
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or(SshSigError::Armor("missing footer line, or text after it"))?;
    let mut encoded = String::with_capacity(body.len());
    for line in body.split('\n') {
        if line.is_empty()
            || !line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            return Err(SshSigError::Armor("invalid base64 line"));
        }
        encoded.push_str(line);
    }
    STANDARD
        .decode(encoded)
        .map_err(|_| SshSigError::Armor("invalid base64"))
}

impl SshSig {
    /// Parses an SSHSIG blob (the decoded armor).
    pub fn parse(blob: &[u8]) -> Result<Self, SshSigError> {
        let truncated = |_| SshSigError::Blob("truncated");
        let mut r = Reader::new(blob);
        if r.bytes(MAGIC.len()).map_err(truncated)? != MAGIC {
            return Err(SshSigError::Blob("missing SSHSIG magic"));
        }
        let version = r.u32().map_err(truncated)?;
        if version != VERSION {
            return Err(SshSigError::Version(version));
        }
        let public_key = PublicKey::from_blob(r.string().map_err(truncated)?)?;
        let namespace = r.text().map_err(truncated)?.to_owned();
        if !r.string().map_err(truncated)?.is_empty() {
            return Err(SshSigError::Blob("reserved field is not empty"));
        }
        let hash_algorithm = r.text().map_err(truncated)?.to_owned();
        let signature = r.string().map_err(truncated)?.to_vec();
        r.finish()
            .map_err(|_| SshSigError::Blob("trailing bytes after the signature"))?;
        Ok(Self {
            public_key,
            namespace,
            hash_algorithm,
            signature,
        })
    }

    /// Parses an armored signature.
    pub fn from_armored(text: &[u8]) -> Result<Self, SshSigError> {
        Self::parse(&dearmor(text)?)
    }

    /// Checks that this signature, made for `namespace`, covers `message`.
    pub fn verify(&self, namespace: &str, message: &[u8]) -> Result<(), SshSigError> {
        if self.namespace != namespace {
            return Err(SshSigError::Namespace {
                expected: namespace.to_owned(),
                found: self.namespace.clone(),
            });
        }
        let hash = match self.hash_algorithm.as_str() {
            "sha256" => &digest::SHA256,
            "sha512" => &digest::SHA512,
            other => return Err(SshSigError::HashAlgorithm(other.to_owned())),
        };
        let mut signed = Vec::with_capacity(128);
        signed.extend_from_slice(MAGIC);
        wire::put_string(&mut signed, namespace.as_bytes());
        wire::put_string(&mut signed, b"");
        wire::put_string(&mut signed, self.hash_algorithm.as_bytes());
        wire::put_string(&mut signed, digest::digest(hash, message).as_ref());
        self.public_key.verify(&self.signature, &signed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made once with `ssh-keygen -Y sign -n git` over MESSAGE (OpenSSH 9.2).
    const EXAMPLE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg4NzPoN38oKrF78jrm0YPyLpUTd
Ewk+2Q3kxYIRFDNaYAAAADZ2l0AAAAAAAAAAZzaGE1MTIAAABTAAAAC3NzaC1lZDI1NTE5
AAAAQMnJ3fZ53o1ne01KGCYXED67TlaEaYINVxeK4a3vgkGN/Anv454QsIb8AxRJLiqMOp
PUbO1dHIBFZlrqThq/1Qs=
-----END SSH SIGNATURE-----
";
    const MESSAGE: &[u8] = b"driftless unit fixture\n";
    // `ssh-keygen -l` of the signing key.
    const FINGERPRINT: &str = "SHA256:KQQ7KCJ023FujxyDTdgb9mesRiaz+sSsELqAKiJwHeo";

    #[test]
    fn verifies_an_ssh_keygen_signature() {
        let sig = SshSig::from_armored(EXAMPLE.as_bytes()).expect("parses");
        assert_eq!(sig.namespace, "git");
        assert_eq!(sig.hash_algorithm, "sha512");
        assert_eq!(sig.public_key.fingerprint(), FINGERPRINT);
        sig.verify("git", MESSAGE).expect("good signature");
        assert!(matches!(
            sig.verify("file", MESSAGE),
            Err(SshSigError::Namespace { .. })
        ));
        assert!(matches!(
            sig.verify("git", b"driftless unit fixture!"),
            Err(SshSigError::Signature(SignatureError::Invalid))
        ));
    }

    #[test]
    fn armor_must_end_at_the_footer() {
        let with_tail = format!("{EXAMPLE}extra\n");
        assert!(matches!(
            dearmor(with_tail.as_bytes()),
            Err(SshSigError::Armor(_))
        ));
        let without_newline = EXAMPLE.trim_end();
        assert!(dearmor(without_newline.as_bytes()).is_ok());
        let two_newlines = format!("{EXAMPLE}\n");
        assert!(dearmor(two_newlines.as_bytes()).is_err());
        let blank_line = EXAMPLE.replacen("\nEwk", "\n\nEwk", 1);
        assert!(dearmor(blank_line.as_bytes()).is_err());
        let crlf = EXAMPLE.replace('\n', "\r\n");
        assert!(dearmor(crlf.as_bytes()).is_err());
    }

    #[test]
    fn blob_refuses_trailing_bytes_and_other_versions() {
        let mut blob = dearmor(EXAMPLE.as_bytes()).expect("dearmor");
        blob.push(0);
        assert!(matches!(SshSig::parse(&blob), Err(SshSigError::Blob(_))));
        blob.pop();
        blob[9] = 2;
        assert!(matches!(SshSig::parse(&blob), Err(SshSigError::Version(2))));
    }
}
