//! Reading a trust file from disk: the size limit, the refusal of OpenSSH's
//! binary KRL format, UTF-8, and the error that names file and line. Apart so
//! that the allowed-signers and revoked-keys files are read the same way.

use std::path::Path;

/// Trust files larger than this are refused (a fleet's signers fit in a few KiB).
pub const MAX_TRUST_FILE_LEN: u64 = 1024 * 1024;

/// A trust file that cannot be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TrustFileError {
    /// The file's path as given.
    pub source_name: String,
    /// The 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub reason: String,
}

pub(super) fn read_trust_file(path: &Path) -> Result<String, TrustFileError> {
    let fail = |reason: String| TrustFileError {
        source_name: path.display().to_string(),
        line: None,
        reason,
    };
    let bytes =
        read_limited(path, MAX_TRUST_FILE_LEN).map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.starts_with(b"SSHKRL\n\0") {
        return Err(fail(
            "OpenSSH KRL files are not supported; list revoked public keys one per line".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))
}

/// Reads a whole file, refusing one larger than `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}
