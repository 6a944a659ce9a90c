//! Trust files: git's `gpg.ssh.allowedSignersFile` format, exactly as
//! ssh-keygen(1) documents it under ALLOWED SIGNERS, and a revoked-keys list.
//!
//! Each allowed-signers line is `principals [options] keytype base64 [comment]`
//! with the options `cert-authority`, `namespaces="…"`, `valid-after="…"` and
//! `valid-before="…"`. Unlike ssh-keygen, which skips lines it cannot parse, a
//! line that does not parse makes the whole file an error naming file and
//! line: a trust file that is not what its author thinks must not half-work.

use std::fmt;
use std::path::Path;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::sshkey::{self, PublicKey};

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

/// Public keys that must never be trusted, one per line (`keytype base64
/// [comment]`), with blank lines and `#` comments.
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys {
    keys: Vec<PublicKey>,
}

impl RevokedKeys {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrustFileError> {
        let text = read_trust_file(path)?;
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
            keys.push(parse_key(rest).map_err(fail)?);
        }
        Ok(Self { keys })
    }

    /// True when `key` is revoked.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

const WHITESPACE: &[char] = &[' ', '\t', '\r'];
const LINE_FORMAT: &str = "expected: principals [options] keytype base64 [comment]";

fn read_trust_file(path: &Path) -> Result<String, TrustFileError> {
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

/// Splits off the next whitespace-delimited token; `None` at end of line.
fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(WHITESPACE);
    if s.is_empty() {
        return None;
    }
    let end = s.find(WHITESPACE).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn parse_line(raw: &str, line: usize, local: &TimeZone) -> Result<Option<Signer>, String> {
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
    let (options, key_text) = if sshkey::is_key_type_name(first) {
        (Options::default(), rest)
    } else {
        let (options_text, after) = split_options(rest.trim_start_matches(WHITESPACE))?;
        (parse_options(options_text, local)?, after)
    };
    let key = parse_key(key_text)?;
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

/// Parses `keytype base64 [comment]`.
fn parse_key(text: &str) -> Result<PublicKey, String> {
    let (key_type, rest) = next_token(text).ok_or("missing key")?;
    if !sshkey::is_key_type_name(key_type) {
        return Err(format!("unknown key type {key_type:?}"));
    }
    let (base64, _comment) =
        next_token(rest).ok_or_else(|| format!("missing base64 data after {key_type}"))?;
    PublicKey::from_openssh(key_type, base64).map_err(|e| e.to_string())
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
                "namespaces" => options.namespaces.replace(value).is_some(),
                "valid-after" => options
                    .valid_after
                    .replace(parse_time(&value, local)?)
                    .is_some(),
                "valid-before" => options
                    .valid_before
                    .replace(parse_time(&value, local)?)
                    .is_some(),
                _ => return Err(format!("unknown option {name:?}")),
            };
            if slot_taken {
                return Err(format!("repeated {name} option"));
            }
            text = after;
        } else {
            return Err(format!(
                "unknown option {:?}",
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

/// OpenSSH's `match_pattern_list`: a comma-separated list of `*`/`?` globs,
/// where a `!`-negated match refuses outright and otherwise any match accepts.
pub fn match_pattern_list(value: &str, patterns: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(value.as_bytes(), negated.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(value.as_bytes(), pattern.as_bytes()),
        }
    }
    matched
}

/// `*` and `?` wildcard matching in O(len(value) × len(pattern)): on a
/// mismatch only the last `*` is retried, one byte further (naive recursion
/// on every `*` is exponential in the number of stars).
fn glob(value: &[u8], pattern: &[u8]) -> bool {
    let (mut v, mut p) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                retry = Some((p, v));
                p += 1;
            }
            Some(&c) if c == b'?' || c == value[v] => {
                v += 1;
                p += 1;
            }
            _ => match retry {
                Some((star, from)) => {
                    p = star + 1;
                    v = from + 1;
                    retry = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.principals, self.key.fingerprint())
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

    #[test]
    fn pattern_lists_follow_openssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("git", "file,g?t"));
        assert!(match_pattern_list("git", "*"));
        assert!(!match_pattern_list("git", "file"));
        assert!(!match_pattern_list("git", "*,!git"));
        assert!(!match_pattern_list("git", "gi"));
        assert!(
            match_pattern_list("git", "*t")
                && match_pattern_list("git", "g*")
                && match_pattern_list("git", "*i*")
        );
        assert!(!match_pattern_list("git", "*x*") && !match_pattern_list("git", "g?"));
        assert!(match_pattern_list("", "*") && !match_pattern_list("", "?"));
        // Thousands of stars cost microseconds, not minutes (found by fuzzing).
        let stars = format!("{}x", "*".repeat(5000));
        let started = std::time::Instant::now();
        assert!(!match_pattern_list("git", &stars));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
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

    #[test]
    fn revoked_keys_list() {
        let revoked = RevokedKeys::parse(&format!("# revoked\n\n{KEY} old laptop\n"), "revoked")
            .expect("parses");
        let key = PublicKey::from_openssh("ssh-ed25519", &KEY[12..]).expect("key");
        assert!(revoked.contains(&key));
        assert!(RevokedKeys::parse("garbage\n", "revoked").is_err());
    }
}
