//! Armored SSH signatures, SSHSIG blobs and public-key blobs, then verification.
//!
//! Input: `SIGNATURE [NUL MESSAGE]`. The bytes before the first NUL are read
//! as armored text (armor never contains a NUL) and whatever follows it is the
//! message to verify. The whole input is also read as a raw SSHSIG blob and as
//! a raw public-key blob, because SSH wire data is full of NULs and the fuzzer
//! finds its structure faster without base64 in the way.
//!
//! Property: no input panics, and the parsers keep their documented contracts.

#![no_main]

use driftless::verify::sshkey::PublicKey;
use driftless::verify::sshsig::{self, SshSig, SshSigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (text, message) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    match sshsig::dearmor(text) {
        Ok(blob) => {
            // `from_armored` is `dearmor` then `parse`: both must agree.
            assert_eq!(
                SshSig::from_armored(text).is_ok(),
                SshSig::parse(&blob).is_ok()
            );
            check_sshsig(&blob, message);
        }
        Err(_) => assert!(SshSig::from_armored(text).is_err()),
    }
    check_sshsig(data, message);
    if let Ok(key) = PublicKey::from_blob(data) {
        check_key(&key);
    }
});

/// Parses `blob` as SSHSIG and, when it parses, verifies it over `message`.
fn check_sshsig(blob: &[u8], message: &[u8]) {
    let Ok(sig) = SshSig::parse(blob) else {
        return;
    };
    check_key(&sig.public_key);
    let in_git = sig.verify("git", message);
    if sig.namespace != "git" {
        assert!(
            matches!(in_git, Err(SshSigError::Namespace { .. })),
            "namespace {:?} accepted as git: {in_git:?}",
            sig.namespace
        );
    }
    // Verifying in the signature's own namespace reaches the hash and key
    // checks whatever namespace the input names.
    let _ = sig.verify(&sig.namespace, message);
}

/// A parsed key must re-parse to itself, from its blob and from its text form.
fn check_key(key: &PublicKey) {
    assert_eq!(PublicKey::from_blob(key.blob()).as_ref(), Ok(key));
    let line = key.to_string();
    let (key_type, base64) = line
        .split_once(' ')
        .expect("a key displays as `TYPE BASE64`");
    assert_eq!(key_type, key.algorithm());
    assert_eq!(PublicKey::from_openssh(key_type, base64).as_ref(), Ok(key));
    let fingerprint = key.fingerprint();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let _ = key.label();
}
