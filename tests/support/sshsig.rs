//! A small, test-only SSHSIG signer built on `ring`.
//!
//! `ssh-keygen -Y sign` makes ed25519, ECDSA and rsa-sha2-512 signatures on
//! its own; this module makes the ones it cannot make on this machine
//! (rsa-sha2-256, SHA-1 `ssh-rsa`, FIDO `sk-*` keys without a token) and the
//! deliberately malformed ones (unknown hash algorithm, trailing bytes in the
//! blob, wrong namespace, missing user-presence flag).
//!
//! Formats follow OpenSSH's PROTOCOL.sshsig, PROTOCOL.u2f and RFC 4253 §6.6.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

/// The armor header line of an SSH signature.
pub const ARMOR_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
/// The armor footer line of an SSH signature.
pub const ARMOR_END: &str = "-----END SSH SIGNATURE-----";

/// The FIDO application string that OpenSSH uses by default.
pub const SK_APPLICATION: &str = "ssh:";

/// User-presence flag of a FIDO signature.
pub const SK_FLAG_USER_PRESENT: u8 = 0x01;

/// Appends an SSH `string` (u32 big-endian length, then the bytes).
pub fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("SSH string shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an SSH `mpint` for a non-negative big-endian magnitude.
fn put_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let first = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let trimmed = &magnitude[first..];
    let mut value = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend_from_slice(trimmed);
    put_string(out, &value);
}

/// Which kind of key a [`Signer`] holds.
enum KeyMaterial {
    /// Plain `ssh-ed25519`.
    Ed25519(Ed25519KeyPair),
    /// `sk-ssh-ed25519@openssh.com`, simulated without a token.
    Ed25519Sk(Ed25519KeyPair),
    /// `sk-ecdsa-sha2-nistp256@openssh.com`, simulated without a token.
    EcdsaSk(EcdsaKeyPair),
    /// Plain `ecdsa-sha2-nistp256` / `ecdsa-sha2-nistp384`.
    Ecdsa(EcdsaKeyPair, EcdsaCurve),
    /// `ssh-rsa`; the PKCS#1 PEM file is kept for SHA-1 signing with openssl.
    Rsa {
        /// The key pair, for rsa-sha2-256 / rsa-sha2-512.
        pair: RsaKeyPair,
        /// The SSH public key blob, as read from the `.pub` file.
        blob: Vec<u8>,
        /// The PKCS#1 PEM private key file.
        pem_path: std::path::PathBuf,
    },
}

/// NIST curves for plain ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcdsaCurve {
    /// P-256 with SHA-256.
    P256,
    /// P-384 with SHA-384.
    P384,
}

impl EcdsaCurve {
    /// The curve name used in key blobs.
    fn name(self) -> &'static str {
        match self {
            EcdsaCurve::P256 => "nistp256",
            EcdsaCurve::P384 => "nistp384",
        }
    }

    /// The key type name.
    fn key_type(self) -> &'static str {
        match self {
            EcdsaCurve::P256 => "ecdsa-sha2-nistp256",
            EcdsaCurve::P384 => "ecdsa-sha2-nistp384",
        }
    }

    /// ring's fixed-length signing algorithm for the curve.
    fn ring_alg(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            EcdsaCurve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaCurve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }

    /// Length of a scalar (r or s) in bytes.
    pub fn scalar_len(self) -> usize {
        match self {
            EcdsaCurve::P256 => 32,
            EcdsaCurve::P384 => 48,
        }
    }
}

/// The signature algorithm used inside an SSHSIG blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlg {
    /// The key type's natural algorithm (ed25519, ecdsa-sk, ...), and for RSA
    /// keys `rsa-sha2-512`.
    Default,
    /// RSA PKCS#1 v1.5 with SHA-256 (`rsa-sha2-256`).
    RsaSha256,
    /// RSA PKCS#1 v1.5 with SHA-1 (`ssh-rsa`), made with openssl.
    RsaSha1,
}

/// Options for one SSHSIG signature; [`SignOptions::default`] is what git
/// would produce.
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// The SSHSIG namespace (git uses `git`).
    pub namespace: String,
    /// The hash algorithm name written in the blob.
    pub hash_alg: String,
    /// Signature algorithm.
    pub sig_alg: SigAlg,
    /// FIDO flags byte (only used for `sk-*` keys).
    pub sk_flags: u8,
    /// Bytes appended to the SSHSIG blob after the signature field.
    pub trailing: Vec<u8>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            namespace: "git".to_owned(),
            hash_alg: "sha512".to_owned(),
            sig_alg: SigAlg::Default,
            sk_flags: SK_FLAG_USER_PRESENT,
            trailing: Vec::new(),
        }
    }
}

/// A key that can make SSHSIG signatures in process.
pub struct Signer {
    /// The private key material.
    material: KeyMaterial,
    /// An OpenSSH certificate blob to put in SSHSIG blobs instead of the
    /// plain public key.
    certificate: Option<Vec<u8>>,
}

impl Signer {
    /// A fresh plain ed25519 key.
    pub fn ed25519() -> Self {
        Self {
            material: KeyMaterial::Ed25519(new_ed25519()),
            certificate: None,
        }
    }

    /// A fresh `sk-ssh-ed25519@openssh.com` key.
    pub fn ed25519_sk() -> Self {
        Self {
            material: KeyMaterial::Ed25519Sk(new_ed25519()),
            certificate: None,
        }
    }

    /// A fresh `sk-ecdsa-sha2-nistp256@openssh.com` key.
    pub fn ecdsa_sk() -> Self {
        Self {
            material: KeyMaterial::EcdsaSk(new_ecdsa(EcdsaCurve::P256)),
            certificate: None,
        }
    }

    /// A fresh plain ECDSA key on `curve`.
    pub fn ecdsa(curve: EcdsaCurve) -> Self {
        Self {
            material: KeyMaterial::Ecdsa(new_ecdsa(curve), curve),
            certificate: None,
        }
    }

    /// Loads an RSA key made by `ssh-keygen -t rsa` (private key at
    /// `private`, public key at `private.pub`). The private key file is
    /// converted in place to PKCS#1 PEM with `ssh-keygen -p -m PEM`, which
    /// `ssh-keygen -Y sign` still reads.
    pub fn rsa_from_ssh_keygen(private: &Path, public_line: &str) -> Self {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-p", "-N", "", "-P", "", "-m", "PEM", "-f"])
            .arg(private)
            .env("HOME", private.parent().expect("key in a directory"))
            .output()
            .expect("run ssh-keygen -p -m PEM");
        assert!(
            status.status.success(),
            "ssh-keygen -p -m PEM failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let pem = std::fs::read_to_string(private).expect("read PEM key");
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "expected a PKCS#1 PEM key, got: {}",
            pem.lines().next().unwrap_or_default()
        );
        let der = STANDARD.decode(body).expect("PEM body is base64");
        let pair = RsaKeyPair::from_der(&der).expect("ring accepts the PKCS#1 key");
        let blob_b64 = public_line
            .split_whitespace()
            .nth(1)
            .expect("public key line has a base64 field");
        let blob = STANDARD.decode(blob_b64).expect("public key is base64");
        Self {
            material: KeyMaterial::Rsa {
                pair,
                blob,
                pem_path: private.to_path_buf(),
            },
            certificate: None,
        }
    }

    /// Puts the certificate `blob` (of this signer's key) in signatures
    /// instead of the plain public key.
    pub fn with_certificate(mut self, blob: Vec<u8>) -> Self {
        self.certificate = Some(blob);
        self
    }

    /// The SSH key type name, as the first field of a public key line.
    pub fn key_type(&self) -> &'static str {
        match self.material {
            KeyMaterial::Ed25519(_) => "ssh-ed25519",
            KeyMaterial::Ed25519Sk(_) => "sk-ssh-ed25519@openssh.com",
            KeyMaterial::EcdsaSk(_) => "sk-ecdsa-sha2-nistp256@openssh.com",
            KeyMaterial::Ecdsa(_, curve) => curve.key_type(),
            KeyMaterial::Rsa { .. } => "ssh-rsa",
        }
    }

    /// The SSH wire-format public key blob.
    pub fn public_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.material {
            KeyMaterial::Ed25519(pair) => {
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, pair.public_key().as_ref());
            }
            KeyMaterial::Ed25519Sk(pair) => {
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, pair.public_key().as_ref());
                put_string(&mut out, SK_APPLICATION.as_bytes());
            }
            KeyMaterial::EcdsaSk(pair) => {
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, b"nistp256");
                put_string(&mut out, pair.public_key().as_ref());
                put_string(&mut out, SK_APPLICATION.as_bytes());
            }
            KeyMaterial::Ecdsa(pair, curve) => {
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, curve.name().as_bytes());
                put_string(&mut out, pair.public_key().as_ref());
            }
            KeyMaterial::Rsa { blob, .. } => out.extend_from_slice(blob),
        }
        out
    }

    /// `TYPE BASE64` — a public key line without a comment, as used in
    /// allowed_signers and revoked-keys files.
    pub fn public_line(&self) -> String {
        format!(
            "{} {}",
            self.key_type(),
            STANDARD.encode(self.public_blob())
        )
    }

    /// Makes the SSH signature blob (`string type || string sig [|| flags
    /// || counter]`) over `data`.
    fn ssh_signature(&self, data: &[u8], opts: &SignOptions) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.material {
            KeyMaterial::Ed25519(pair) => {
                assert_eq!(opts.sig_alg, SigAlg::Default, "ed25519 has one algorithm");
                put_string(&mut out, b"ssh-ed25519");
                put_string(&mut out, pair.sign(data).as_ref());
            }
            KeyMaterial::Ed25519Sk(pair) => {
                let counter: u32 = 7;
                let to_sign = sk_message(data, opts.sk_flags, counter);
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, pair.sign(&to_sign).as_ref());
                out.push(opts.sk_flags);
                out.extend_from_slice(&counter.to_be_bytes());
            }
            KeyMaterial::EcdsaSk(pair) => {
                let counter: u32 = 11;
                let to_sign = sk_message(data, opts.sk_flags, counter);
                let rng = SystemRandom::new();
                let fixed = pair.sign(&rng, &to_sign).expect("ECDSA P-256 signing");
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, &ecdsa_r_s(fixed.as_ref(), 32));
                out.push(opts.sk_flags);
                out.extend_from_slice(&counter.to_be_bytes());
            }
            KeyMaterial::Ecdsa(pair, curve) => {
                let rng = SystemRandom::new();
                let fixed = pair.sign(&rng, data).expect("ECDSA signing");
                put_string(&mut out, self.key_type().as_bytes());
                put_string(&mut out, &ecdsa_r_s(fixed.as_ref(), curve.scalar_len()));
            }
            KeyMaterial::Rsa { pair, pem_path, .. } => {
                let (name, sig) = match opts.sig_alg {
                    SigAlg::RsaSha1 => {
                        let sig = openssl_sha1_sign(pem_path, data);
                        // Prove the SHA-1 signature is itself valid, so that a
                        // refusal can only be about the algorithm.
                        signature::UnparsedPublicKey::new(
                            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                            pair.public().as_ref(),
                        )
                        .verify(data, &sig)
                        .expect("openssl's SHA-1 RSA signature verifies with ring");
                        ("ssh-rsa", sig)
                    }
                    SigAlg::RsaSha256 => (
                        "rsa-sha2-256",
                        ring_rsa_sign(pair, &signature::RSA_PKCS1_SHA256, data),
                    ),
                    SigAlg::Default => (
                        "rsa-sha2-512",
                        ring_rsa_sign(pair, &signature::RSA_PKCS1_SHA512, data),
                    ),
                };
                put_string(&mut out, name.as_bytes());
                put_string(&mut out, &sig);
            }
        }
        out
    }

    /// Makes an SSHSIG blob over `message`.
    pub fn sign(&self, message: &[u8], opts: &SignOptions) -> Vec<u8> {
        let digest: Vec<u8> = match opts.hash_alg.as_str() {
            "sha256" => ring::digest::digest(&ring::digest::SHA256, message)
                .as_ref()
                .to_vec(),
            "sha384" => ring::digest::digest(&ring::digest::SHA384, message)
                .as_ref()
                .to_vec(),
            // "sha512" and any made-up name: SHA-512, so that only the name
            // in the blob is wrong.
            _ => ring::digest::digest(&ring::digest::SHA512, message)
                .as_ref()
                .to_vec(),
        };
        let mut signed = b"SSHSIG".to_vec();
        put_string(&mut signed, opts.namespace.as_bytes());
        put_string(&mut signed, b"");
        put_string(&mut signed, opts.hash_alg.as_bytes());
        put_string(&mut signed, &digest);

        let mut blob = b"SSHSIG".to_vec();
        blob.extend_from_slice(&1u32.to_be_bytes());
        let public = self
            .certificate
            .clone()
            .unwrap_or_else(|| self.public_blob());
        put_string(&mut blob, &public);
        put_string(&mut blob, opts.namespace.as_bytes());
        put_string(&mut blob, b"");
        put_string(&mut blob, opts.hash_alg.as_bytes());
        put_string(&mut blob, &self.ssh_signature(&signed, opts));
        blob.extend_from_slice(&opts.trailing);
        blob
    }

    /// Makes an armored SSHSIG signature over `message`.
    pub fn sign_armored(&self, message: &[u8], opts: &SignOptions) -> String {
        armor(&self.sign(message, opts))
    }
}

/// A fresh ECDSA key pair on `curve`.
fn new_ecdsa(curve: EcdsaCurve) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve.ring_alg(), &rng).expect("generate ECDSA key");
    EcdsaKeyPair::from_pkcs8(curve.ring_alg(), pkcs8.as_ref(), &rng).expect("load fresh ECDSA key")
}

/// `mpint r || mpint s` from ring's fixed-length `r || s`.
fn ecdsa_r_s(fixed: &[u8], scalar_len: usize) -> Vec<u8> {
    let (r, s) = fixed.split_at(scalar_len);
    let mut out = Vec::new();
    put_mpint(&mut out, r);
    put_mpint(&mut out, s);
    out
}

/// A cursor over SSH wire data.
pub struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Takes `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        assert!(self.rest.len() >= n, "SSH data too short");
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    /// Takes a big-endian u32.
    pub fn u32(&mut self) -> u32 {
        let bytes: [u8; 4] = self.bytes(4).try_into().expect("four bytes");
        u32::from_be_bytes(bytes)
    }

    /// Takes an SSH `string`.
    pub fn string(&mut self) -> &'a [u8] {
        let len = usize::try_from(self.u32()).expect("u32 fits usize");
        self.bytes(len)
    }
}

/// The encoded lengths of the `r` and `s` mpints in an ECDSA (plain or
/// sk) SSHSIG blob.
pub fn ecdsa_mpint_lengths(blob: &[u8]) -> (usize, usize) {
    let mut blob = Reader::new(blob);
    assert_eq!(blob.bytes(6), b"SSHSIG");
    blob.u32(); // version
    blob.string(); // public key
    blob.string(); // namespace
    blob.string(); // reserved
    blob.string(); // hash algorithm
    let mut sig = Reader::new(blob.string());
    sig.string(); // signature type
    let mut inner = Reader::new(sig.string());
    let r = inner.string().len();
    let s = inner.string().len();
    (r, s)
}

/// A fresh ed25519 key pair.
fn new_ed25519() -> Ed25519KeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate ed25519 key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("load fresh ed25519 key")
}

/// What a FIDO authenticator signs: sha256(application) || flags ||
/// counter || sha256(data).
fn sk_message(data: &[u8], flags: u8, counter: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        ring::digest::digest(&ring::digest::SHA256, SK_APPLICATION.as_bytes()).as_ref(),
    );
    out.push(flags);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// RSA PKCS#1 v1.5 signature with ring.
fn ring_rsa_sign(
    pair: &RsaKeyPair,
    alg: &'static dyn signature::RsaEncoding,
    data: &[u8],
) -> Vec<u8> {
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(alg, &SystemRandom::new(), data, &mut sig)
        .expect("RSA signing");
    sig
}

/// RSA PKCS#1 v1.5 signature with SHA-1, which ring cannot make: openssl.
fn openssl_sha1_sign(pem_path: &Path, data: &[u8]) -> Vec<u8> {
    let dir = pem_path.parent().expect("key in a directory");
    let input = dir.join("sha1-input.bin");
    let output = dir.join("sha1-output.bin");
    std::fs::write(&input, data).expect("write data to sign");
    let result = Command::new("openssl")
        .args(["dgst", "-sha1", "-sign"])
        .arg(pem_path)
        .arg("-out")
        .arg(&output)
        .arg(&input)
        .output()
        .expect("run openssl dgst");
    assert!(
        result.status.success(),
        "openssl dgst -sha1 -sign failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read(&output).expect("read openssl signature")
}

/// Armors an SSHSIG blob the way ssh-keygen does: base64 wrapped at 70
/// columns between the header and footer lines, ending with a newline.
pub fn armor(blob: &[u8]) -> String {
    let b64 = STANDARD.encode(blob);
    let mut out = String::new();
    out.push_str(ARMOR_BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(ARMOR_END);
    out.push('\n');
    out
}

/// Decodes an armored SSH signature back to its blob.
pub fn dearmor(armored: &str) -> Vec<u8> {
    let start = armored.find(ARMOR_BEGIN).expect("armor header present") + ARMOR_BEGIN.len();
    let end = armored.find(ARMOR_END).expect("armor footer present");
    let body: String = armored[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).expect("armor body is base64")
}
