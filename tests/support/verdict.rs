//! The verdict assertions of the `driftless verify` end-to-end tests: git's
//! verdict as the oracle, driftless's human and `--json` output, and the
//! one-line error. Shared by the `driftless verify` test files.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};

use super::{FIXED_DATE, Outcome, PublicKey, Repo, Target};

/// The principal most fixtures use.
pub const ALICE: &str = "alice@example.com";
/// The tag name most fixtures use.
pub const TAG: &str = "v1.2.0";

/// Exit code: usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: bad input or configuration.
pub const EXIT_CONFIG: i32 = 3;
/// Exit code: verification refused.
pub const EXIT_REFUSED: i32 = 5;

/// What a good verification must report.
pub struct Good<'a> {
    /// The allowed_signers principals field expected back.
    pub principal: &'a str,
    /// The signing key.
    pub key: &'a PublicKey,
    /// The commit the tag points at / the verified commit.
    pub commit: &'a str,
    /// The tag object id (`None` for `--commit`).
    pub tag_object: Option<&'a str>,
    /// The tagger / committer time.
    pub signed_at: &'a str,
}

impl<'a> Good<'a> {
    /// [`ALICE`]'s signature with `key` at [`FIXED_DATE`] on `commit`.
    pub fn commit(key: &'a PublicKey, commit: &'a str) -> Self {
        Self {
            principal: ALICE,
            key,
            commit,
            tag_object: None,
            signed_at: FIXED_DATE,
        }
    }

    /// [`ALICE`]'s signature with `key` at [`FIXED_DATE`] on the tag object
    /// `tag_object`, which points at `commit`.
    pub fn tag(key: &'a PublicKey, commit: &'a str, tag_object: &'a str) -> Self {
        Self {
            tag_object: Some(tag_object),
            ..Self::commit(key, commit)
        }
    }
}

/// Parses an RFC 3339 time, with a message naming the field.
pub fn timestamp(text: &str, what: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|err| panic!("{what} {text:?} is not an RFC 3339 time: {err}"))
}

/// Asserts git's verdict, to prove the fixture is what the test claims.
pub fn assert_oracle(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    accepts: bool,
) {
    let out = repo.oracle(allowed, revoked, target);
    assert_eq!(
        out.success(),
        accepts,
        "oracle (git verify-*) on {} expected to {} it\n{}",
        target.subject(),
        if accepts { "accept" } else { "refuse" },
        out.describe()
    );
}

/// Asserts git and driftless (human and `--json`) both accept, with the
/// expected details.
pub fn assert_good(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    good: &Good<'_>,
) {
    assert_oracle(repo, allowed, revoked, target, true);
    assert_driftless_good(repo, allowed, revoked, target, good);
}

/// Asserts driftless (human and `--json`) accepts, with the expected
/// details.
pub fn assert_driftless_good(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    good: &Good<'_>,
) {
    let out = repo.driftless(allowed, revoked, false, target);
    let ctx = out.describe();
    assert_eq!(out.code, Some(0), "driftless should accept\n{ctx}");
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("good signature on {}", target.subject()),
        "{ctx}"
    );
    match (target, good.tag_object) {
        (Target::Tag(name), Some(oid)) => {
            assert_eq!(out.field("tag"), Some(format!("{name} ({oid})")), "{ctx}");
        }
        _ => assert_eq!(out.field("tag"), None, "no tag line for --commit\n{ctx}"),
    }
    assert_eq!(out.field("commit").as_deref(), Some(good.commit), "{ctx}");
    assert_eq!(
        out.field("principal").as_deref(),
        Some(good.principal),
        "{ctx}"
    );
    let key = out
        .field("key")
        .unwrap_or_else(|| panic!("no key line\n{ctx}"));
    assert_eq!(
        key.split_whitespace().next(),
        Some(good.key.fingerprint.as_str()),
        "key line starts with ssh-keygen -l's fingerprint\n{ctx}"
    );
    assert!(
        key.ends_with(&format!("({})", good.key.label)),
        "key line ends with ssh-keygen -l's type label ({})\n{ctx}",
        good.key.label
    );
    let signed_at = out
        .field("signed at")
        .unwrap_or_else(|| panic!("no signed at line\n{ctx}"));
    assert_eq!(
        timestamp(&signed_at, "signed at"),
        timestamp(good.signed_at, "expected time"),
        "{ctx}"
    );

    let out = repo.driftless(allowed, revoked, true, target);
    let ctx = out.describe();
    assert_eq!(out.code, Some(0), "driftless --json should accept\n{ctx}");
    let json = out.json();
    let (kind, name) = match target {
        Target::Tag(name) => ("tag", name),
        Target::Commit(rev) => ("commit", rev),
    };
    assert_eq!(json["verified"], true, "{ctx}");
    assert_eq!(json["kind"], kind, "{ctx}");
    assert_eq!(json["name"], name, "{ctx}");
    assert_eq!(
        json["object"].as_str(),
        Some(good.tag_object.unwrap_or(good.commit)),
        "object is the tag object (or the commit)\n{ctx}"
    );
    assert_eq!(json["commit"].as_str(), Some(good.commit), "{ctx}");
    assert_eq!(json["principal"].as_str(), Some(good.principal), "{ctx}");
    assert_eq!(
        json["key_type"].as_str(),
        Some(good.key.key_type.as_str()),
        "{ctx}"
    );
    assert_eq!(
        json["fingerprint"].as_str(),
        Some(good.key.fingerprint.as_str()),
        "{ctx}"
    );
    let signed_at = json["signed_at"]
        .as_str()
        .unwrap_or_else(|| panic!("signed_at is a string\n{ctx}"));
    assert_eq!(
        timestamp(signed_at, "signed_at"),
        timestamp(good.signed_at, "expected time"),
        "{ctx}"
    );
}

/// Asserts driftless refuses with `code` (human and `--json`), the error
/// being one `error: SUBJECT: REASON` line; returns the reason.
pub fn assert_refused_with(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    code: i32,
) -> String {
    let out = repo.driftless(allowed, revoked, false, target);
    let reason = assert_error_line(&out, &target.subject(), code);

    let out = repo.driftless(allowed, revoked, true, target);
    let ctx = out.describe();
    assert_eq!(out.code, Some(code), "driftless --json exit code\n{ctx}");
    let json = out.json();
    let (kind, name) = match target {
        Target::Tag(name) => ("tag", name),
        Target::Commit(rev) => ("commit", rev),
    };
    assert_eq!(json["verified"], false, "{ctx}");
    assert_eq!(json["kind"], kind, "{ctx}");
    assert_eq!(json["name"], name, "{ctx}");
    let json_reason = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error is a string\n{ctx}"));
    // The same reason as the human error line, up to numbers (a reason may
    // quote the current time, which moved between the two runs).
    assert_eq!(
        mask_numbers(json_reason),
        mask_numbers(&reason),
        "JSON error is the human error line's reason\n{ctx}"
    );
    reason
}

/// `text` with every run of ASCII digits replaced by `#`.
pub fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// Asserts stderr is exactly one `error: SUBJECT: REASON` line and the exit
/// code is `code`; returns the reason.
pub fn assert_error_line(out: &Outcome, subject: &str, code: i32) -> String {
    let ctx = out.describe();
    assert_eq!(out.code, Some(code), "driftless exit code\n{ctx}");
    let stderr = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    assert!(!stderr.contains('\n'), "stderr is exactly one line\n{ctx}");
    let prefix = format!("error: {subject}: ");
    let reason = stderr
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("stderr starts with {prefix:?}\n{ctx}"));
    assert!(!reason.trim().is_empty(), "a reason is given\n{ctx}");
    reason.to_owned()
}

/// Git refuses and driftless refuses with exit 5.
pub fn assert_refused_by_both(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
) -> String {
    assert_oracle(repo, allowed, revoked, target, false);
    assert_refused_with(repo, allowed, revoked, target, EXIT_REFUSED)
}

/// Git accepts but driftless, being stricter, refuses with exit 5.
pub fn assert_stricter_than_git(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
) -> String {
    assert_oracle(repo, allowed, revoked, target, true);
    assert_refused_with(repo, allowed, revoked, target, EXIT_REFUSED)
}

/// A time `days` days from now (negative: in the past).
pub fn days_from_now(days: i64) -> Timestamp {
    Timestamp::now()
        .checked_add(SignedDuration::from_hours(24 * days))
        .expect("time in range")
}

/// allowed_signers time syntax, UTC: `YYYYMMDDHHMMSSZ`.
pub fn signers_time(ts: Timestamp) -> String {
    ts.strftime("%Y%m%d%H%M%SZ").to_string()
}

/// git's raw date syntax `@SECONDS +0000`.
pub fn git_date(ts: Timestamp) -> String {
    format!("@{} +0000", ts.as_second())
}
