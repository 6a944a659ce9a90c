//! cloud-init user-data, read for the files it writes: a node's agent
//! config usually travels inside it (`write_files`), where a typo passes
//! `cloud-init schema` and is found only at boot. This reads a
//! `#cloud-config` document as cloud-init does for `write_files` (the
//! `encoding` values it knows: plain, base64, gzip, both), so the config
//! inside can be checked with the node's own parser before any node boots.

use std::io::Read as _;

use base64::Engine as _;

use super::{ConfigError, MAX_CONFIG_LEN};

/// User-data larger than this is refused (cloud providers cap it at 16 to
/// 64 KiB; this leaves room).
pub const MAX_USER_DATA_LEN: u64 = 1024 * 1024;

/// A file cloud-init writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path on the node.
    pub path: String,
    /// Its content, decoded (lossily as UTF-8).
    pub content: String,
    /// Where it stands in the user-data, for messages: `write_files[0]`.
    pub place: String,
}

/// True when `text` is cloud-init user-data (a `#cloud-config` document).
pub fn is_user_data(text: &str) -> bool {
    text.starts_with("#cloud-config")
}

/// The files a `#cloud-config` document writes, decoded. `name` names the
/// document in errors.
pub fn written_files(text: &str, name: &str) -> Result<Vec<WrittenFile>, ConfigError> {
    let fail = |reason: String| ConfigError {
        path: name.to_owned(),
        reason,
    };
    if text.len() as u64 > MAX_USER_DATA_LEN {
        return Err(fail(format!("larger than {MAX_USER_DATA_LEN} bytes")));
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| fail(format!("not valid YAML, so cloud-init ignores it: {e}")))?;
    let Some(files) = doc.get("write_files") else {
        return Ok(Vec::new());
    };
    let files = files
        .as_sequence()
        .ok_or_else(|| fail("write_files must be a list".into()))?;
    let mut out = Vec::new();
    for (i, entry) in files.iter().enumerate() {
        let place = format!("write_files[{i}]");
        let field = |key: &str| entry.get(key).and_then(serde_yaml::Value::as_str);
        let Some(path) = field("path") else {
            return Err(fail(format!("{place}: no path")));
        };
        let content = field("content").unwrap_or("");
        let encoding = field("encoding").unwrap_or("text/plain");
        let bytes =
            decode(content, encoding).map_err(|e| fail(format!("{place} ({path}): {e}")))?;
        out.push(WrittenFile {
            path: path.to_owned(),
            content: String::from_utf8_lossy(&bytes).into_owned(),
            place,
        });
    }
    Ok(out)
}

/// Decodes `content` as cloud-init does for `encoding`, at most
/// [`MAX_CONFIG_LEN`] bytes of output.
fn decode(content: &str, encoding: &str) -> Result<Vec<u8>, String> {
    let base64 = |text: &str| {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| format!("not base64: {e}"))
    };
    let gunzip = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .take(MAX_CONFIG_LEN + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("not gzip: {e}"))?;
        Ok::<_, String>(out)
    };
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "text/plain" | "" => content.as_bytes().to_vec(),
        "b64" | "base64" => base64(content)?,
        "gz" | "gzip" => gunzip(content.as_bytes().to_vec())?,
        "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => gunzip(base64(content)?)?,
        other => return Err(format!("unknown encoding {other:?}")),
    };
    if bytes.len() as u64 > MAX_CONFIG_LEN {
        return Err(format!("more than {MAX_CONFIG_LEN} bytes once decoded"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_user_data_writes_the_config() {
        let text = include_str!("../../../cloud-init/user-data.yaml");
        assert!(is_user_data(text));
        let files = written_files(text, "user-data.yaml").expect("parses");
        assert_eq!(files[0].path, super::super::DEFAULT_CONFIG_PATH);
        super::super::AgentConfig::parse(&files[0].content, "agent.yaml").expect("valid config");
    }

    #[test]
    fn encodings_are_decoded_as_cloud_init_does() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("release: x\n");
        let text = format!(
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: b64\n    content: {b64}\n  - path: /b\n    content: plain\n"
        );
        let files = written_files(&text, "u").expect("parses");
        assert_eq!(files[0].content, "release: x\n");
        assert_eq!(files[1].content, "plain");
        let bad =
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: rot13\n    content: x\n";
        let err = written_files(bad, "u")
            .expect_err("unknown encoding")
            .to_string();
        assert!(
            err.contains("write_files[0]") && err.contains("rot13"),
            "{err}"
        );
    }
}
