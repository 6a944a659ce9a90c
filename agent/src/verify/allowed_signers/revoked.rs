//! The revoked-keys file: public keys refused whatever the allowed-signers
//! file says. Apart because it shares only the key syntax and the file
//! reading with allowed signers, not their options or lookup.

use std::path::Path;

use super::file::{TrustFileError, read_trust_file};
use super::line::{WHITESPACE, parse_key};
use crate::verify::sshkey::PublicKey;

/// What to do when the revoked-keys file is missing. git only warns and
/// verifies without it; driftless refuses, since a revocation list that is
/// silently not read revokes nothing.
const IF_MISSING: &str = "git verify-tag only warns about a missing revocation file, but \
    driftless refuses to verify without it: create it (an empty file revokes nothing) or \
    remove the revoked-keys setting";

/// What to do about a revoked key of a type driftless does not accept.
const IF_UNSUPPORTED: &str = "driftless refuses a signature by such a key anyway, so remove \
    the line";

/// Public keys that must never be trusted, one per line (`keytype base64
/// [comment]`), with blank lines and `#` comments.
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys {
    keys: Vec<PublicKey>,
}

impl RevokedKeys {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrustFileError> {
        let text = read_trust_file(path, IF_MISSING)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses file contents; `source_name` names the file in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, TrustFileError> {
        let mut keys = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let fail = |reason: String| TrustFileError {
                source_name: source_name.to_owned(),
                line: Some(index + 1),
                reason,
            };
            let rest = raw.trim_matches(WHITESPACE);
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            keys.push(parse_key(rest, IF_UNSUPPORTED).map_err(fail)?);
        }
        Ok(Self { keys })
    }

    /// True when `key` is revoked.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICSsaCwSQYr1DzU1CVErJUE7doQ46Myrx2qynjfLmBao";

    #[test]
    fn revoked_keys_list() {
        let revoked = RevokedKeys::parse(&format!("# revoked\n\n{KEY} old laptop\n"), "revoked")
            .expect("parses");
        let key = PublicKey::from_openssh("ssh-ed25519", &KEY[12..]).expect("key");
        assert!(revoked.contains(&key));
        assert!(RevokedKeys::parse("garbage\n", "revoked").is_err());
    }
}
