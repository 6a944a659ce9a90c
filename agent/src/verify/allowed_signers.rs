//! Trust files: git's `gpg.ssh.allowedSignersFile` format, exactly as
//! ssh-keygen(1) documents it under ALLOWED SIGNERS, and a revoked-keys list.
//!
//! Each allowed-signers line is `principals [options] keytype base64 [comment]`
//! with the options `cert-authority`, `namespaces="…"`, `valid-after="…"` and
//! `valid-before="…"`. Unlike ssh-keygen, which skips lines it cannot parse, a
//! line that does not parse makes the whole file an error naming file and
//! line: a trust file that is not what its author thinks must not half-work.
//! Which line vouches for a key follows git's own two-step rule (`lookup`).

mod file;
mod line;
mod lookup;
mod pattern;
mod revoked;

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::sshkey::PublicKey;

pub(crate) use file::read_limited;
use file::read_trust_file;
pub use file::{MAX_TRUST_FILE_LEN, TrustFileError};
use line::parse_line;
pub use line::{Signer, parse_time};
pub use lookup::{Choice, LineRef, NotTrusted, Outside};
pub use pattern::{MAX_SUBPATTERN_LEN, match_pattern_list};
pub use revoked::RevokedKeys;

/// A point in time at which a key must be valid, with what it means. The
/// first of the times given to [`AllowedSigners::authorize`] is git's
/// verify time, the one `ssh-keygen` checks.
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
    /// The file's name, for errors that name a line.
    source_name: Arc<str>,
}

impl AllowedSigners {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrustFileError> {
        let text = read_trust_file(path, "")?;
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
        Ok(Self {
            signers,
            source_name: source_name.into(),
        })
    }

    /// The trusted lines, in file order.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Finds the line that lets `key` sign in `namespace`, by git's rule:
    /// the first line holding the key that is valid at `times[0]` (git's
    /// verify time) names the signer's principals, and only a line for one
    /// of those may admit the key (see `lookup`). The admitting line must be
    /// valid at every one of `times`. Otherwise says why not, naming the
    /// file and line that decided.
    pub fn authorize(
        &self,
        key: &PublicKey,
        namespace: &str,
        times: &[CheckTime],
    ) -> Result<&Signer, NotTrusted> {
        lookup::authorize(&self.signers, &self.source_name, key, namespace, times)
    }
}

impl Signer {
    /// `None` when the key is valid at `at`, else which side of the window
    /// `at` is on.
    fn validity_at(&self, at: Timestamp) -> Option<Outside> {
        if self.valid_after.is_some_and(|after| at < after) {
            Some(Outside::NotYetValid)
        } else if self.valid_before.is_some_and(|before| at > before) {
            Some(Outside::Expired)
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
            (format!("alice {KEY}\nbob,,carol {KEY}"), 2),
            (format!("alice {KEY}\n,bob {KEY}"), 2),
            (format!("alice {KEY}\nbob, {KEY}"), 2),
            (format!("alice {KEY}\nbob,{} {KEY}", "x".repeat(1023)), 2),
            (
                format!(
                    "alice {KEY}\nbob namespaces=\"git,!{}\" {KEY}",
                    "x".repeat(1023)
                ),
                2,
            ),
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
    fn a_misplaced_comma_or_space_is_named_as_such() {
        // The second principal after a space is not "an unknown option".
        for bad in [
            format!("alice@example.com ,bob@example.com {KEY}"),
            format!("alice@example.com bob@example.com {KEY}"),
        ] {
            let err = parse(&bad).expect_err(&bad).to_string();
            assert!(
                err.contains("looks like a principal") && err.contains("join them with commas"),
                "{err}"
            );
        }
        for bad in [
            format!("alice@example.com, {KEY}"),
            format!("alice@example.com, bob@example.com {KEY}"),
        ] {
            let err = parse(&bad).expect_err(&bad).to_string();
            assert!(err.contains("ends with a comma"), "{err}");
        }
        let err = parse(&format!("bob octopus {KEY}"))
            .expect_err("unknown option")
            .to_string();
        assert!(
            err.contains("unknown option \"octopus\"") && err.contains("cert-authority"),
            "{err}"
        );
    }

    #[test]
    fn authorize_names_cert_authority_lines_and_unknown_keys() {
        let signers = parse(&format!("ca cert-authority {KEY}\n")).expect("parses");
        let key = signers.signers()[0].key.clone();
        let now = [CheckTime {
            at: "2026-01-01T00:00:00Z".parse().expect("ts"),
            what: "the current time",
        }];
        let err = signers.authorize(&key, "git", &now).expect_err("refused");
        assert!(
            matches!(&err, NotTrusted::OnlyCertAuthority { line, .. } if line.to_string() == "signers:1"),
            "{err}"
        );
        assert!(err.to_string().contains("without cert-authority"), "{err}");
        let stranger = parse("").expect("empty file parses");
        assert!(matches!(
            stranger.authorize(&key, "git", &now),
            Err(NotTrusted::UnknownKey { .. })
        ));
    }
}
