//! Raw git tag and commit objects, split into signed payload and signature.
//!
//! Input: the object's bytes as `git cat-file tag|commit` prints them; every
//! input goes to both `parse_tag` and `parse_commit`. An object that parses
//! then has its signature dearmored and verified over its payload, as a node
//! does before it trusts anything the object says.
//!
//! Property: no input panics, and a parsed object keeps the documented
//! contract (an SSH signature, a hex object id, a tag split losslessly).

#![no_main]

use driftless::verify::object;
use driftless::verify::sshsig::{ARMOR_BEGIN, SshSig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tag) = object::parse_tag(data) {
        assert_eq!([tag.payload, tag.signature].concat(), data);
        assert!(tag.signature.starts_with(ARMOR_BEGIN.as_bytes()));
        assert!(is_object_id(&tag.object), "{:?}", tag.object);
        verify(tag.payload, tag.signature);
    }
    if let Ok(commit) = object::parse_commit(data, driftless::types::ObjectFormat::Sha1) {
        assert!(commit.signature.starts_with(ARMOR_BEGIN.as_bytes()));
        assert!(is_object_id(&commit.tree), "{:?}", commit.tree);
        assert!(commit.payload.len() < data.len());
        verify(&commit.payload, &commit.signature);
    }
});

fn verify(payload: &[u8], armored: &[u8]) {
    if let Ok(sig) = SshSig::from_armored(armored) {
        let _ = sig.verify("git", payload);
    }
}

/// A SHA-1 or SHA-256 object id in lowercase hex.
fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
