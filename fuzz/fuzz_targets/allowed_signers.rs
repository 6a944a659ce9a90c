//! `allowed_signers` and revoked-keys files, then authorization.
//!
//! Input: the file's text (inputs that are not UTF-8 are skipped, as the
//! loader refuses them). Every signer that parses is then authorized with its
//! own key in the `git` namespace, at times around its validity window. Each
//! line also goes through `parse_time` and, as a namespaces pattern list,
//! through `match_pattern_list`.
//!
//! Property: no input panics, and a key that a parsed line lists is never
//! reported as unknown.

#![no_main]

use driftless::verify::allowed_signers::{
    self, AllowedSigners, CheckTime, NotTrusted, RevokedKeys, Signer,
};
use jiff::Timestamp;
use jiff::tz::{self, TimeZone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(allowed) = AllowedSigners::parse(text, "fuzz", &TimeZone::UTC) {
        for signer in allowed.signers() {
            authorize_own_key(&allowed, signer);
        }
    }
    let _ = RevokedKeys::parse(text, "fuzz");
    let east = TimeZone::fixed(tz::offset(14));
    let west = TimeZone::fixed(tz::offset(-12));
    for line in text.split('\n') {
        for zone in [&TimeZone::UTC, &east, &west] {
            if let Ok(at) = allowed_signers::parse_time(line, zone) {
                assert!(at > Timestamp::UNIX_EPOCH, "{line:?} parsed as {at}");
            }
        }
        let _ = allowed_signers::match_pattern_list("git", line);
    }
});

/// Authorizes `signer`'s own key at times inside, at and outside its window.
fn authorize_own_key(allowed: &AllowedSigners, signer: &Signer) {
    let mut instants = vec![
        Timestamp::MIN,
        Timestamp::UNIX_EPOCH,
        Timestamp::constant(1_767_323_045, 0),
        Timestamp::MAX,
    ];
    instants.extend(signer.valid_after);
    instants.extend(signer.valid_before);
    for at in instants {
        let times = [CheckTime {
            at,
            what: "the fuzzed time",
        }];
        match allowed.authorize(&signer.key, "git", &times) {
            Ok(found) => assert_eq!(found.key, signer.key),
            Err(NotTrusted::UnknownKey { fingerprint }) => {
                panic!(
                    "line {} lists {fingerprint}, yet it is unknown",
                    signer.line
                )
            }
            Err(_) => {}
        }
    }
    let _ = signer.to_string();
}
