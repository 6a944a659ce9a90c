//! OpenSSH public keys and their signatures, verified with ring.
//!
//! Supported: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`,
//! `ssh-rsa` keys (signatures `rsa-sha2-256`/`rsa-sha2-512` only, modulus of
//! at least 2048 bits), and the FIDO types `sk-ssh-ed25519@openssh.com` and
//! `sk-ecdsa-sha2-nistp256@openssh.com` (user presence required).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::digest;
use ring::signature::{self, UnparsedPublicKey};

use super::wire::{Reader, WireError};

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// FIDO authenticator flag: the user touched the key when signing.
const SK_USER_PRESENT: u8 = 0x01;

/// Why a public key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key's wire encoding is broken.
    #[error("malformed {0} public key")]
    Malformed(String),
    /// A key type driftless does not verify.
    #[error(
        "key type {0:?} is not supported{why}; driftless accepts {ACCEPTED_KEY_TYPES}",
        why = why_unsupported(.0)
    )]
    Unsupported(String),
    /// An OpenSSH certificate; certificate signers are not supported yet.
    #[error(
        "OpenSSH certificates ({0:?}) are not supported: sign with the plain key and list that \
         key in allowed_signers"
    )]
    Certificate(String),
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature's wire encoding is broken or has trailing bytes.
    #[error("malformed signature")]
    Malformed,
    /// The signature names an algorithm that does not belong to the key.
    #[error("signature algorithm {found} does not match the {key} key")]
    AlgorithmMismatch {
        /// The key's type.
        key: String,
        /// The algorithm the signature claims.
        found: String,
    },
    /// RSA with SHA-1 (`ssh-rsa`), which OpenSSH's signature format forbids.
    #[error("RSA signature uses SHA-1 (ssh-rsa); only rsa-sha2-256 and rsa-sha2-512 are accepted")]
    RsaSha1,
    /// An RSA key below [`MIN_RSA_BITS`].
    #[error("RSA key has {0} bits; at least 2048 are required")]
    RsaTooSmall(usize),
    /// A FIDO signature made without the user touching the key.
    #[error("security-key signature was made without user presence")]
    NoUserPresence,
    /// The signature does not match the signed data and key.
    #[error("signature does not match the signed content")]
    Invalid,
    /// A signature kind driftless does not verify.
    #[error("unsupported signature algorithm {0}")]
    Unsupported(String),
}

impl From<WireError> for SignatureError {
    fn from(_: WireError) -> Self {
        SignatureError::Malformed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn algorithm(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    Ed25519 {
        pk: Vec<u8>,
    },
    Ecdsa {
        curve: Curve,
        point: Vec<u8>,
    },
    Rsa {
        e: Vec<u8>,
        n: Vec<u8>,
    },
    SkEd25519 {
        pk: Vec<u8>,
        application: Vec<u8>,
    },
    SkEcdsa {
        point: Vec<u8>,
        application: Vec<u8>,
    },
}

/// A parsed OpenSSH public key. Two keys are equal when their canonical wire
/// encodings are equal; parsing accepts only canonical encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: &'static str,
    blob: Vec<u8>,
    material: Material,
}

const ED25519: &str = "ssh-ed25519";
const ECDSA_P256: &str = "ecdsa-sha2-nistp256";
const ECDSA_P384: &str = "ecdsa-sha2-nistp384";
const RSA: &str = "ssh-rsa";
const SK_ED25519: &str = "sk-ssh-ed25519@openssh.com";
const SK_ECDSA: &str = "sk-ecdsa-sha2-nistp256@openssh.com";

/// The key types driftless verifies, for messages that refuse another.
pub const ACCEPTED_KEY_TYPES: &str = "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, \
    ssh-rsa (2048 bits or more), sk-ssh-ed25519@openssh.com and \
    sk-ecdsa-sha2-nistp256@openssh.com";

/// Why a key type OpenSSH knows is refused, for the message.
fn why_unsupported(name: &str) -> &'static str {
    match name {
        "ssh-dss" => " (DSA keys are at most 1024 bits and OpenSSH has dropped them)",
        "ecdsa-sha2-nistp521" => " (ring, driftless's verifier, has no P-521)",
        _ => "",
    }
}

/// Every key type name driftless verifies, as written in key files.
pub const KEY_TYPES: [&str; 6] = [ED25519, ECDSA_P256, ECDSA_P384, RSA, SK_ED25519, SK_ECDSA];

/// True when `name` looks like an OpenSSH key type (supported or not), so a
/// parser can tell a key from an options field.
pub fn is_key_type_name(name: &str) -> bool {
    KEY_TYPES.contains(&name)
        || name.ends_with("-cert-v01@openssh.com")
        || matches!(
            name,
            "ssh-dss" | "ecdsa-sha2-nistp521" | "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
        )
}

impl PublicKey {
    /// Parses a key from its wire encoding (the base64-decoded middle field of
    /// an `authorized_keys` line, or the `publickey` field of an SSHSIG).
    pub fn from_blob(blob: &[u8]) -> Result<Self, KeyError> {
        let mut r = Reader::new(blob);
        let name = r
            .text()
            .map_err(|_| KeyError::Malformed("unnamed".into()))?;
        let malformed = |_| KeyError::Malformed(name.to_owned());
        let (algorithm, material) = match name {
            ED25519 => (
                ED25519,
                Material::Ed25519 {
                    pk: ed25519_pk(&mut r).map_err(malformed)?,
                },
            ),
            ECDSA_P256 => (
                ECDSA_P256,
                ecdsa(&mut r, "nistp256", Curve::P256).map_err(malformed)?,
            ),
            ECDSA_P384 => (
                ECDSA_P384,
                ecdsa(&mut r, "nistp384", Curve::P384).map_err(malformed)?,
            ),
            RSA => {
                let e = r.positive_mpint().map_err(malformed)?.to_vec();
                let n = r.positive_mpint().map_err(malformed)?.to_vec();
                if e.is_empty() || n.is_empty() {
                    return Err(KeyError::Malformed(name.to_owned()));
                }
                (RSA, Material::Rsa { e, n })
            }
            SK_ED25519 => {
                let pk = ed25519_pk(&mut r).map_err(malformed)?;
                let application = r.string().map_err(malformed)?.to_vec();
                (SK_ED25519, Material::SkEd25519 { pk, application })
            }
            SK_ECDSA => match ecdsa(&mut r, "nistp256", Curve::P256).map_err(malformed)? {
                Material::Ecdsa { point, .. } => {
                    let application = r.string().map_err(malformed)?.to_vec();
                    (SK_ECDSA, Material::SkEcdsa { point, application })
                }
                _ => unreachable!("ecdsa() returns Material::Ecdsa"),
            },
            other if other.ends_with("-cert-v01@openssh.com") => {
                return Err(KeyError::Certificate(other.to_owned()));
            }
            other => return Err(KeyError::Unsupported(other.to_owned())),
        };
        r.finish()
            .map_err(|_| KeyError::Malformed(name.to_owned()))?;
        Ok(Self {
            algorithm,
            blob: blob.to_vec(),
            material,
        })
    }

    /// Parses the `TYPE BASE64` pair of a key line; the type must match the blob.
    pub fn from_openssh(key_type: &str, base64: &str) -> Result<Self, KeyError> {
        let blob = STANDARD
            .decode(base64)
            .map_err(|_| KeyError::Malformed(key_type.to_owned()))?;
        let key = Self::from_blob(&blob)?;
        if key.algorithm != key_type {
            return Err(KeyError::Malformed(key_type.to_owned()));
        }
        Ok(key)
    }

    /// The key type name, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The canonical wire encoding.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The fingerprint exactly as `ssh-keygen -l` prints it: `SHA256:` and the
    /// unpadded base64 of the SHA-256 of the key blob.
    pub fn fingerprint(&self) -> String {
        let hash = digest::digest(&digest::SHA256, &self.blob);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(hash.as_ref()))
    }

    /// The short type label `ssh-keygen -l` prints in parentheses.
    pub fn label(&self) -> &'static str {
        match self.material {
            Material::Ed25519 { .. } => "ED25519",
            Material::Ecdsa { .. } => "ECDSA",
            Material::Rsa { .. } => "RSA",
            Material::SkEd25519 { .. } => "ED25519-SK",
            Material::SkEcdsa { .. } => "ECDSA-SK",
        }
    }

    /// Checks `signature` (an SSH signature blob: algorithm name, signature
    /// bytes, and for FIDO keys flags and counter) over `message`.
    pub fn verify(&self, signature: &[u8], message: &[u8]) -> Result<(), SignatureError> {
        let mut r = Reader::new(signature);
        let sig_alg = r.text()?;
        let mismatch = || SignatureError::AlgorithmMismatch {
            key: self.algorithm.to_owned(),
            found: sig_alg.to_owned(),
        };
        match &self.material {
            Material::Ed25519 { pk } => {
                if sig_alg != ED25519 {
                    return Err(mismatch());
                }
                let sig = r.string()?;
                r.finish()?;
                check(&signature::ED25519, pk, message, sig)
            }
            Material::Ecdsa { curve, point } => {
                if sig_alg != self.algorithm {
                    return Err(mismatch());
                }
                let sig = fixed_ecdsa_signature(r.string()?, *curve)?;
                r.finish()?;
                check(curve.algorithm(), point, message, &sig)
            }
            Material::Rsa { e, n } => {
                let params: &'static signature::RsaParameters = match sig_alg {
                    "rsa-sha2-256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "rsa-sha2-512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "ssh-rsa" => return Err(SignatureError::RsaSha1),
                    _ => return Err(mismatch()),
                };
                let sig = r.string()?;
                r.finish()?;
                let bits = bit_length(n);
                if bits < MIN_RSA_BITS {
                    return Err(SignatureError::RsaTooSmall(bits));
                }
                // OpenSSH left-pads a short signature to the modulus length.
                if sig.len() > n.len() {
                    return Err(SignatureError::Invalid);
                }
                let mut padded = vec![0u8; n.len() - sig.len()];
                padded.extend_from_slice(sig);
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, &padded)
                    .map_err(|_| SignatureError::Invalid)
            }
            Material::SkEd25519 { pk, application } => {
                if sig_alg != SK_ED25519 {
                    return Err(mismatch());
                }
                let sig = r.string()?;
                let (flags, counter) = (r.u8()?, r.u32()?);
                r.finish()?;
                let signed = sk_signed_data(application, flags, counter, message)?;
                check(&signature::ED25519, pk, &signed, sig)
            }
            Material::SkEcdsa { point, application } => {
                if sig_alg != SK_ECDSA {
                    return Err(mismatch());
                }
                let sig = fixed_ecdsa_signature(r.string()?, Curve::P256)?;
                let (flags, counter) = (r.u8()?, r.u32()?);
                r.finish()?;
                let signed = sk_signed_data(application, flags, counter, message)?;
                check(Curve::P256.algorithm(), point, &signed, &sig)
            }
        }
    }
}

impl fmt::Display for PublicKey {
    /// Formats as an `authorized_keys` key: `TYPE BASE64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, STANDARD.encode(&self.blob))
    }
}

fn ed25519_pk(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let pk = r.string()?;
    if pk.len() != 32 {
        return Err(WireError);
    }
    Ok(pk.to_vec())
}

fn ecdsa(r: &mut Reader<'_>, curve_name: &str, curve: Curve) -> Result<Material, WireError> {
    if r.text()? != curve_name {
        return Err(WireError);
    }
    let point = r.string()?;
    // Only uncompressed points (0x04 || X || Y), as OpenSSH writes them.
    if point.len() != 1 + 2 * curve.field_len() || point[0] != 0x04 {
        return Err(WireError);
    }
    Ok(Material::Ecdsa {
        curve,
        point: point.to_vec(),
    })
}

/// Converts SSH's `string(mpint r || mpint s)` into ring's fixed `r || s`.
fn fixed_ecdsa_signature(inner: &[u8], curve: Curve) -> Result<Vec<u8>, SignatureError> {
    let mut r = Reader::new(inner);
    let (sig_r, sig_s) = (r.positive_mpint()?, r.positive_mpint()?);
    r.finish()?;
    let len = curve.field_len();
    if sig_r.len() > len || sig_s.len() > len {
        return Err(SignatureError::Malformed);
    }
    let mut fixed = vec![0u8; 2 * len];
    fixed[len - sig_r.len()..len].copy_from_slice(sig_r);
    fixed[2 * len - sig_s.len()..].copy_from_slice(sig_s);
    Ok(fixed)
}

/// What a FIDO authenticator actually signs: SHA-256 of the application,
/// the flags, the counter, and SHA-256 of the message.
fn sk_signed_data(
    application: &[u8],
    flags: u8,
    counter: u32,
    message: &[u8],
) -> Result<Vec<u8>, SignatureError> {
    if flags & SK_USER_PRESENT == 0 {
        return Err(SignatureError::NoUserPresence);
    }
    let mut signed = Vec::with_capacity(32 + 1 + 4 + 32);
    signed.extend_from_slice(digest::digest(&digest::SHA256, application).as_ref());
    signed.push(flags);
    signed.extend_from_slice(&counter.to_be_bytes());
    signed.extend_from_slice(digest::digest(&digest::SHA256, message).as_ref());
    Ok(signed)
}

fn check(
    algorithm: &'static dyn signature::VerificationAlgorithm,
    public_key: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<(), SignatureError> {
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, sig)
        .map_err(|_| SignatureError::Invalid)
}

fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}
