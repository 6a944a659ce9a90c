//! One allowed-signers line: `principals [options] keytype base64 [comment]`,
//! with its options and ssh-keygen's validity times. Apart from the file as a
//! whole and from lookup because it is the part that reads untrusted text
//! token by token; it knows nothing of other lines or of signatures.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::pattern::check_pattern_list;
use crate::verify::sshkey::{self, KeyError, PublicKey};

/// One trusted key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// 1-based line number in the file.
    pub line: usize,
    /// The principals field as written (comma-separated patterns).
    pub principals: String,
    /// `cert-authority`: the key only vouches for certificates, never signs itself.
    pub cert_authority: bool,
    /// `namespaces="…"`: the pattern list of namespaces this key may sign for.
    pub namespaces: Option<String>,
    /// `valid-after="…"`.
    pub valid_after: Option<Timestamp>,
    /// `valid-before="…"`.
    pub valid_before: Option<Timestamp>,
    /// The key.
    pub key: PublicKey,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.principals, self.key.fingerprint())
    }
}

/// The whitespace that separates tokens.
pub(super) const WHITESPACE: &[char] = &[' ', '\t', '\r'];
const LINE_FORMAT: &str = "expected: principals [options] keytype base64 [comment]";
const KNOWN_OPTIONS: &str =
    "driftless knows cert-authority, namespaces=\"…\", valid-after=\"…\" and valid-before=\"…\"";

/// Splits off the next whitespace-delimited token; `None` at end of line.
fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(WHITESPACE);
    if s.is_empty() {
        return None;
    }
    let end = s.find(WHITESPACE).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

pub(super) fn parse_line(
    raw: &str,
    line: usize,
    local: &TimeZone,
) -> Result<Option<Signer>, String> {
    let rest = raw.trim_start_matches(WHITESPACE);
    if rest.trim_end_matches(WHITESPACE).is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    // Principals: one token, either wholly quoted or free of quotes.
    let (principals, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"').ok_or("unterminated quoted principals")?;
        let after = &quoted[end + 1..];
        if !after.starts_with(WHITESPACE) {
            return Err("expected whitespace after the quoted principals".into());
        }
        (&quoted[..end], after)
    } else {
        let (token, after) = next_token(rest).ok_or("missing principals")?;
        if token.contains('"') {
            return Err("stray quote in principals".into());
        }
        (token, after)
    };
    if principals.is_empty() {
        return Err("empty principals".into());
    }
    // ssh-keygen -Y find-principals stops at an empty entry: what follows
    // would silently never count.
    if principals.ends_with(',') {
        return Err(format!(
            "the principals list {principals:?} ends with a comma: principals are one field, comma-separated with no spaces (alice@example.com,bob@example.com); remove the comma, or the space after it"
        ));
    }
    if principals.split(',').any(str::is_empty) {
        return Err(format!(
            "empty entry in the principals list {principals:?}; remove the extra comma"
        ));
    }
    check_pattern_list(principals, "principal")?;
    if sshkey::is_key_type_name(principals) {
        return Err(format!(
            "line starts with the key type {principals}; {LINE_FORMAT}"
        ));
    }
    let (first, after_first) =
        next_token(rest).ok_or_else(|| format!("missing key; {LINE_FORMAT}"))?;
    if !sshkey::is_key_type_name(first) && next_token(after_first).is_none() {
        return Err(format!("missing key after {first:?}; {LINE_FORMAT}"));
    }
    // A second principal after a space reads as the options field: say so
    // instead of calling it an unknown option.
    if !sshkey::is_key_type_name(first) && (first.contains('@') || first.starts_with(',')) {
        return Err(format!(
            "{first:?} looks like a principal, not an option: principals are one field with no spaces; join them with commas (alice@example.com,bob@example.com)"
        ));
    }
    let (options, key_text) = if sshkey::is_key_type_name(first) {
        (Options::default(), rest)
    } else {
        let (options_text, after) = split_options(rest.trim_start_matches(WHITESPACE))?;
        (parse_options(options_text, local)?, after)
    };
    let key = parse_key(key_text, "replace the key or remove the line")?;
    Ok(Some(Signer {
        line,
        principals: principals.to_owned(),
        cert_authority: options.cert_authority,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    }))
}

/// Parses `keytype base64 [comment]`. `if_unsupported` is appended to the
/// error for a key type OpenSSH knows but driftless does not accept (or a
/// certificate): what to do about the line.
pub(super) fn parse_key(text: &str, if_unsupported: &str) -> Result<PublicKey, String> {
    let (key_type, rest) = next_token(text).ok_or("missing key")?;
    if !sshkey::is_key_type_name(key_type) {
        return Err(format!("unknown key type {key_type:?}"));
    }
    let (base64, _comment) =
        next_token(rest).ok_or_else(|| format!("missing base64 data after {key_type}"))?;
    PublicKey::from_openssh(key_type, base64).map_err(|e| match e {
        KeyError::Unsupported(_) | KeyError::Certificate(_) => format!("{e}; {if_unsupported}"),
        KeyError::Malformed(_) => e.to_string(),
    })
}

/// Splits the options field (which may contain quoted spaces) from the rest.
fn split_options(text: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ' ' | '\t' if !in_quotes => return Ok((&text[..i], &text[i..])),
            _ => {}
        }
    }
    Err(if in_quotes {
        "unterminated quote in options"
    } else {
        "missing key after options"
    }
    .into())
}

#[derive(Debug, Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
}

fn parse_options(mut text: &str, local: &TimeZone) -> Result<Options, String> {
    let mut options = Options::default();
    loop {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("cert-authority")
            && !lower["cert-authority".len()..].starts_with(|c: char| c != ',')
        {
            if options.cert_authority {
                return Err("repeated cert-authority option".into());
            }
            options.cert_authority = true;
            text = &text["cert-authority".len()..];
        } else if let Some((name, value, after)) = quoted_option(text)? {
            let slot_taken = match name.as_str() {
                "namespaces" => {
                    check_pattern_list(&value, "namespace")?;
                    options.namespaces.replace(value).is_some()
                }
                "valid-after" => options
                    .valid_after
                    .replace(parse_time(&value, local)?)
                    .is_some(),
                "valid-before" => options
                    .valid_before
                    .replace(parse_time(&value, local)?)
                    .is_some(),
                _ => return Err(format!("unknown option {name:?}; {KNOWN_OPTIONS}")),
            };
            if slot_taken {
                return Err(format!("repeated {name} option"));
            }
            text = after;
        } else {
            return Err(format!(
                "unknown option {:?}; {KNOWN_OPTIONS}",
                text.split(',').next().unwrap_or(text)
            ));
        }
        match text.strip_prefix(',') {
            None if text.is_empty() => break,
            None => return Err("unknown key option".into()),
            Some("") => return Err("unexpected end of options".into()),
            Some(next) => text = next,
        }
    }
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before) {
        if before <= after {
            return Err("valid-before is not after valid-after".into());
        }
    }
    Ok(options)
}

/// Parses `name="value"` (with `\"` escapes) at the start of `text`.
fn quoted_option(text: &str) -> Result<Option<(String, String, &str)>, String> {
    let Some(eq) = text.find('=') else {
        return Ok(None);
    };
    let name = text[..eq].to_ascii_lowercase();
    if name.is_empty() || name.contains(',') {
        return Ok(None);
    }
    let quoted = text[eq + 1..]
        .strip_prefix('"')
        .ok_or_else(|| format!("option {name} needs a quoted value"))?;
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok(Some((name, value, &quoted[i + 1..]))),
            '\\' if quoted[i + 1..].starts_with('"') => {
                value.push('"');
                chars.next();
            }
            c => value.push(c),
        }
    }
    Err(format!("option {name} has no closing quote"))
}

/// Parses ssh-keygen's absolute times: `YYYYMMDD`, `YYYYMMDDHHMM` or
/// `YYYYMMDDHHMMSS`, in UTC when suffixed `Z` (or `UTC`), else in local time.
pub fn parse_time(value: &str, local: &TimeZone) -> Result<Timestamp, String> {
    let bad = || format!("invalid time {value:?} (expected YYYYMMDD[HHMM[SS]][Z])");
    let upper = value.to_ascii_uppercase();
    let (digits, utc) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, true)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, true)
    } else {
        (upper.as_str(), false)
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let field = |range: std::ops::Range<usize>| {
        digits
            .get(range)
            .map_or(Ok(0), |s| s.parse::<i16>().map_err(|_| bad()))
    };
    let datetime = DateTime::new(
        field(0..4)?,
        field(4..6)? as i8,
        field(6..8)? as i8,
        field(8..10)? as i8,
        field(10..12)? as i8,
        field(12..14)? as i8,
        0,
    )
    .map_err(|_| bad())?;
    let zone = if utc { TimeZone::UTC } else { local.clone() };
    let at = zone.to_timestamp(datetime).map_err(|_| bad())?;
    if at <= Timestamp::UNIX_EPOCH {
        return Err(bad());
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_ssh_keygen() {
        let utc = TimeZone::UTC;
        assert_eq!(
            parse_time("20240102", &utc),
            "2024-01-02T00:00:00Z".parse().map_err(|_| String::new())
        );
        assert_eq!(
            parse_time("202401021304Z", &utc),
            "2024-01-02T13:04:00Z".parse().map_err(|_| String::new())
        );
        assert_eq!(
            parse_time("20240102130405utc", &utc),
            "2024-01-02T13:04:05Z".parse().map_err(|_| String::new())
        );
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(
            parse_time("20240102", &plus2),
            "2024-01-01T22:00:00Z".parse().map_err(|_| String::new())
        );
        assert_eq!(
            parse_time("20240102Z", &plus2),
            "2024-01-02T00:00:00Z".parse().map_err(|_| String::new())
        );
        for bad in [
            "2024010",
            "20241301",
            "20240230",
            "2024-01-02",
            "20240102X",
            "19700101Z",
        ] {
            assert!(parse_time(bad, &utc).is_err(), "{bad}");
        }
    }
}
