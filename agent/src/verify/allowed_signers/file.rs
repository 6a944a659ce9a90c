//! Reading a trust file from disk: the size limit, the refusal of OpenSSH's
//! binary KRL format and of NUL bytes, UTF-8, what to say about a missing
//! file, and the error that names file and line. Apart so that the
//! allowed-signers and revoked-keys files are read the same way.

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

/// Reads a trust file as text. `if_missing` is appended to the error when
/// the file does not exist: what to do, for a file git would do without.
pub(super) fn read_trust_file(path: &Path, if_missing: &str) -> Result<String, TrustFileError> {
    let source_name = path.display().to_string();
    let fail = |line: Option<usize>, reason: String| TrustFileError {
        source_name: source_name.clone(),
        line,
        reason,
    };
    let bytes = read_limited(path, MAX_TRUST_FILE_LEN).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound if !if_missing.is_empty() => format!("; {if_missing}"),
            _ => String::new(),
        };
        fail(None, format!("cannot read: {e}{hint}"))
    })?;
    if bytes.starts_with(b"SSHKRL\n\0") {
        return Err(fail(
            None,
            "is an OpenSSH KRL, which driftless does not read: list the revoked public \
             keys in it one per line instead (`ssh-keygen -Q -l -f FILE` shows what a KRL \
             revokes)"
                .into(),
        ));
    }
    // ssh-keygen reads each line as a C string, which ends at a NUL byte:
    // the rest of the line would be ignored.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(fail(
            Some(line),
            "contains a NUL byte (ssh-keygen would ignore the rest of the line)".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|_| fail(None, "not UTF-8 text".into()))
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
