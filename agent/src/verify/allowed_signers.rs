//! Trust files: git's `gpg.ssh.allowedSignersFile` format, exactly as
//! ssh-keygen(1) documents it under ALLOWED SIGNERS, and a revoked-keys list.
//!
//! Each allowed-signers line is `principals [options] keytype base64 [comment]`
//! with the options `cert-authority`, `namespaces="…"`, `valid-after="…"` and
//! `valid-before="…"`. Unlike ssh-keygen, which skips lines it cannot parse, a
//! line that does not parse makes the whole file an error naming file and
//! line: a trust file that is not what its author thinks must not half-work.

mod file;
mod line;
mod pattern;
mod revoked;

use std::path::Path;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::sshkey::PublicKey;

pub(crate) use file::read_limited;
use file::read_trust_file;
pub use file::{MAX_TRUST_FILE_LEN, TrustFileError};
use line::parse_line;
pub use line::{Signer, parse_time};
pub use pattern::match_pattern_list;
pub use revoked::RevokedKeys;

/// Why no line of the allowed-signers file vouches for a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTrusted {
    /// No line lists the key.
    #[error("signed by a key not in allowed_signers ({fingerprint})")]
    UnknownKey {
        /// The signing key's fingerprint.
        fingerprint: String,
    },
    /// The key is listed only as a certificate authority.
    #[error(
        "signed by {fingerprint}, which allowed_signers line {line} trusts only as a cert-authority"
    )]
    OnlyCertAuthority {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The line that lists it.
        line: usize,
    },
    /// The key may not sign in this namespace.
    #[error(
        "key {fingerprint} (allowed_signers line {line}) may not sign for namespace {namespace:?}"
    )]
    Namespace {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The line that lists it.
        line: usize,
        /// The namespace that was asked for.
        namespace: String,
    },
    /// The key was not valid at one of the times checked.
    #[error("key {fingerprint} (allowed_signers line {line}) is {state} at {what} {at}")]
    OutsideValidity {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The line that lists it.
        line: usize,
        /// `not yet valid` or `expired`.
        state: &'static str,
        /// `the signer's time` or `the current time`.
        what: &'static str,
        /// The time checked.
        at: Timestamp,
    },
}

/// A point in time at which a key must be valid, with what it means.
#[derive(Debug, Clone, Copy)]
pub struct CheckTime {
    /// The instant.
    pub at: Timestamp,
    /// For messages: `the signer's time` or `the current time`.
    pub what: &'static str,
}

/// A parsed allowed-signers file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    signers: Vec<Signer>,
}

impl AllowedSigners {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrustFileError> {
        let text = read_trust_file(path)?;
        // Finding the system zone walks the zoneinfo tree: only when needed.
        let local = if text.contains("valid-") {
            TimeZone::system()
        } else {
            TimeZone::UTC
        };
        Self::parse(&text, &path.display().to_string(), &local)
    }

    /// Parses file contents; `source_name` names the file in errors, and
    /// `local` is the zone for times without a `Z` suffix.
    pub fn parse(text: &str, source_name: &str, local: &TimeZone) -> Result<Self, TrustFileError> {
        let mut signers = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let fail = |reason: String| TrustFileError {
                source_name: source_name.to_owned(),
                line: Some(line),
                reason,
            };
            if let Some(signer) = parse_line(raw, line, local).map_err(fail)? {
                signers.push(signer);
            }
        }
        Ok(Self { signers })
    }

    /// The trusted lines, in file order.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Finds the first line that lets `key` sign in `namespace` at every one
    /// of `times`; otherwise says why not, naming the first line that lists
    /// the key.
    pub fn authorize(
        &self,
        key: &PublicKey,
        namespace: &str,
        times: &[CheckTime],
    ) -> Result<&Signer, NotTrusted> {
        let fingerprint = || key.fingerprint();
        let mut first_refusal = None;
        for signer in self.signers.iter().filter(|s| s.key == *key) {
            let refusal = if signer.cert_authority {
                Some(NotTrusted::OnlyCertAuthority {
                    fingerprint: fingerprint(),
                    line: signer.line,
                })
            } else if signer
                .namespaces
                .as_deref()
                .is_some_and(|ns| !match_pattern_list(namespace, ns))
            {
                Some(NotTrusted::Namespace {
                    fingerprint: fingerprint(),
                    line: signer.line,
                    namespace: namespace.to_owned(),
                })
            } else {
                times.iter().find_map(|t| {
                    signer
                        .validity_at(t.at)
                        .map(|state| NotTrusted::OutsideValidity {
                            fingerprint: fingerprint(),
                            line: signer.line,
                            state,
                            what: t.what,
                            at: t.at,
                        })
                })
            };
            match refusal {
                None => return Ok(signer),
                Some(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        Err(first_refusal.unwrap_or_else(|| NotTrusted::UnknownKey {
            fingerprint: fingerprint(),
        }))
    }
}

impl Signer {
    /// `None` when the key is valid at `at`, else `not yet valid` or `expired`.
    fn validity_at(&self, at: Timestamp) -> Option<&'static str> {
        if self.valid_after.is_some_and(|after| at < after) {
            Some("not yet valid")
        } else if self.valid_before.is_some_and(|before| at > before) {
            Some("expired")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICSsaCwSQYr1DzU1CVErJUE7doQ46Myrx2qynjfLmBao";

    fn parse(text: &str) -> Result<AllowedSigners, TrustFileError> {
        AllowedSigners::parse(text, "signers", &TimeZone::UTC)
    }

    #[test]
    fn parses_every_documented_form() {
        let text = format!(
            "# comment\n\n  alice@example.com {KEY} alice's key\n\
             \"bob@example.com,carol@*\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20300101Z\" {KEY}\n\
             *@example.com cert-authority {KEY}\n"
        );
        let signers = parse(&text).expect("parses");
        let s = signers.signers();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].line, s[0].principals.as_str()),
            (3, "alice@example.com")
        );
        assert_eq!(s[1].principals, "bob@example.com,carol@*");
        assert_eq!(s[1].namespaces.as_deref(), Some("git,file"));
        assert_eq!(
            s[1].valid_after,
            Some("2024-01-01T00:00:00Z".parse().expect("ts"))
        );
        assert_eq!(
            s[1].valid_before,
            Some("2030-01-01T00:00:00Z".parse().expect("ts"))
        );
        assert!(s[2].cert_authority);
    }

    #[test]
    fn every_bad_line_is_an_error_with_its_line_number() {
        for (bad, line) in [
            (format!("alice {KEY}\nbob unknown-option {KEY}"), 2),
            (format!("alice {KEY}\nbob namespaces=git {KEY}"), 2),
            (format!("alice {KEY}\nbob valid-after=\"2024\" {KEY}"), 2),
            (
                format!(
                    "alice {KEY}\nbob valid-after=\"20300101\",valid-before=\"20200101\" {KEY}"
                ),
                2,
            ),
            (
                format!("alice {KEY}\nbob namespaces=\"a\",namespaces=\"b\" {KEY}"),
                2,
            ),
            (format!("alice {KEY}\nbob namespaces=\"git\","), 2),
            ("alice ssh-ed25519 AAAA\nbob".to_owned(), 1),
            (format!("alice {KEY}\nbob ssh-rsa {}", &KEY[12..]), 2),
            (format!("alice {KEY}\nbob"), 2),
            (format!("alice {KEY}\n\"bob {KEY}"), 2),
            (format!("alice {KEY}\nbob ssh-dss AAAAB3NzaC1kc3M="), 2),
        ] {
            let err = parse(&bad).expect_err(&bad);
            assert_eq!(err.line, Some(line), "{bad}: {err}");
            assert!(
                err.to_string().starts_with(&format!("signers:{line}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn authorize_explains_refusals() {
        let text = format!(
            "ca cert-authority {KEY}\nns namespaces=\"file\" {KEY}\nold valid-before=\"20200101Z\" {KEY}\n"
        );
        let signers = parse(&text).expect("parses");
        let key = signers.signers()[0].key.clone();
        let now = [CheckTime {
            at: "2026-01-01T00:00:00Z".parse().expect("ts"),
            what: "the current time",
        }];
        let err = signers.authorize(&key, "git", &now).expect_err("refused");
        assert!(
            matches!(err, NotTrusted::OnlyCertAuthority { line: 1, .. }),
            "{err}"
        );
        let good = parse(&format!("{text}ok {KEY}")).expect("parses");
        assert_eq!(
            good.authorize(&key, "git", &now)
                .expect("trusted")
                .principals,
            "ok"
        );
        let stranger = parse("").expect("empty file parses");
        assert!(matches!(
            stranger.authorize(&key, "git", &now),
            Err(NotTrusted::UnknownKey { .. })
        ));
    }
}
