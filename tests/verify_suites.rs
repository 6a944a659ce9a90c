//! git's and OpenSSH's own signing tests, re-created for `driftless verify`.
//!
//! The cases of git's `t/t7031-verify-tag-signed-ssh.sh` and
//! `t/t7528-signed-commit-ssh.sh` (on the fixtures of `t/lib-gpg.sh`) and of
//! OpenSSH's `regress/sshsig.sh` that apply to signed tags and commits, made
//! here with the real `git`, `ssh-keygen` and `ssh-agent`; then the cases of
//! one key on several allowed_signers lines, and the trust files driftless
//! refuses by rule. git's verdict (`git verify-tag` / `git verify-commit`)
//! is the oracle: on every case driftless agrees with it, or refuses for one
//! of the stricter rules of docs/security.md, and the case names the rule
//! ([`Rule`]). driftless never accepts what git refuses ([`case`] checks
//! that every expectation says so).
//!
//! Left out, as they test nothing driftless decides: git's output formats
//! (`--raw`, `--format`, `%G?`, `rev-list --format`, `log.showSignature`),
//! its trust-level knob (`gpg.minTrustLevel`), signing-side checks (the
//! `gpg.format` values, no temporary files left by ssh-agent signing), the
//! ssh-keygen modes git never runs (`-Y verify -I` with a principal of the
//! caller's choice, `check-novalidate`, `match-principals`, `print-pubkey`,
//! signing with `-Ohashalg=sha1`) and OpenPGP double signatures. The tag
//! and commit cases run again in a SHA-256 repository.

mod support;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use support::sshsig::{SignOptions, Signer};
use support::verdict::{
    ALICE, EXIT_CONFIG, EXIT_REFUSED, Good, assert_good, assert_oracle, assert_refused_with,
    days_from_now, signers_time,
};
use support::{FIXED_DATE_RAW, KeyKind, PublicKey, Repo, Sandbox, SshKey, Target};

// ---------------------------------------------------------------------------
// The stricter rules, and the one way every case is judged.
// ---------------------------------------------------------------------------

/// A rule of docs/security.md by which driftless refuses what git accepts
/// (or refuses it with a configuration error instead of a verdict).
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// The line that admits the key must be valid at the current time too.
    CurrentTime,
    /// Only the key types docs/security.md lists sign.
    KeyType,
    /// A trust file must not list a key of another type or a certificate.
    KeyTypeListed {
        /// The line that lists it.
        line: usize,
    },
    /// Certificates do not sign.
    Certificate,
    /// An allowed_signers line that does not parse breaks the file.
    LineDoesNotParse {
        /// The line.
        line: usize,
    },
    /// A configured revoked-keys file must exist.
    MissingRevokedFile,
    /// A revoked-keys file must be a list of keys, not a KRL.
    Krl,
}

impl Rule {
    /// Every rule, for the documentation check.
    const ALL: [Rule; 7] = [
        Rule::CurrentTime,
        Rule::KeyType,
        Rule::KeyTypeListed { line: 0 },
        Rule::Certificate,
        Rule::LineDoesNotParse { line: 0 },
        Rule::MissingRevokedFile,
        Rule::Krl,
    ];

    /// Text of the rule's row in docs/security.md's "Stricter than git
    /// verify-tag" table.
    fn documented_as(self) -> &'static str {
        match self {
            Rule::CurrentTime => "**or** at the current time",
            Rule::KeyType => "a signature by a key of another type",
            Rule::KeyTypeListed { .. } => {
                "an allowed_signers or revoked-keys line holding a key of another type"
            }
            Rule::Certificate => "a signature by an OpenSSH certificate",
            Rule::LineDoesNotParse { .. } => "an allowed_signers line that does not parse",
            Rule::MissingRevokedFile => "a revoked-keys file that is missing",
            Rule::Krl => "a revoked-keys file in OpenSSH's binary KRL format",
        }
    }

    /// Exit code of driftless's refusal.
    fn exit_code(self) -> i32 {
        match self {
            Rule::CurrentTime | Rule::KeyType | Rule::Certificate => EXIT_REFUSED,
            _ => EXIT_CONFIG,
        }
    }

    /// Asserts that `reason` names the rule and the way out.
    fn check(self, reason: &str, allowed: &Path, revoked: Option<&Path>) {
        let accepted = "driftless accepts ssh-ed25519, ecdsa-sha2-nistp256, \
                        ecdsa-sha2-nistp384, ssh-rsa (2048 bits or more), \
                        sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com";
        let revoked = revoked.map(|p| p.display().to_string());
        let needles: Vec<String> = match self {
            Rule::CurrentTime => vec!["at the current time".into()],
            Rule::KeyType => vec!["is not supported".into(), accepted.into()],
            Rule::KeyTypeListed { line } => vec![format!(":{line}: "), "not supported".into()],
            Rule::Certificate => vec![
                "certificates".into(),
                "sign with the plain key and list that key in allowed_signers".into(),
            ],
            Rule::LineDoesNotParse { line } => vec![format!("{}:{line}: ", allowed.display())],
            Rule::MissingRevokedFile => vec![
                revoked.unwrap_or_default(),
                "git verify-tag only warns".into(),
                "create it (an empty file revokes nothing)".into(),
            ],
            Rule::Krl => vec![
                revoked.unwrap_or_default(),
                "KRL".into(),
                "list the revoked public keys in it one per line".into(),
            ],
        };
        for needle in needles {
            assert!(
                reason.contains(&needle),
                "the refusal by {self:?} says {needle:?}: {reason}"
            );
        }
    }
}

/// What git answers.
const GIT_ACCEPTS: bool = true;
/// What git answers.
const GIT_REFUSES: bool = false;

/// What driftless must answer.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// It accepts, through the line whose principals field is `principal`.
    Accepts {
        /// The signing key.
        key: &'a PublicKey,
        /// The principals field of the admitting line.
        principal: &'a str,
    },
    /// It refuses the signature (exit 5), as git does.
    Refuses,
    /// It refuses by a documented stricter rule.
    RefusesBy(Rule),
}

/// Judges one case: git's verdict first (proving the fixture is what the
/// case says), then driftless's. Returns driftless's refusal reason.
fn case(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    git_accepts: bool,
    expect: Expect<'_>,
) -> String {
    match expect {
        Expect::Accepts { key, principal } => {
            assert!(
                git_accepts,
                "{}: driftless must never accept what git refuses",
                target.subject()
            );
            accepts(repo, allowed, revoked, target, key, principal);
            String::new()
        }
        Expect::Refuses => {
            assert!(
                !git_accepts,
                "{}: a refusal where git accepts must name its rule",
                target.subject()
            );
            assert_oracle(repo, allowed, revoked, target, false);
            assert_refused_with(repo, allowed, revoked, target, EXIT_REFUSED)
        }
        Expect::RefusesBy(rule) => {
            assert_oracle(repo, allowed, revoked, target, git_accepts);
            let reason = assert_refused_with(repo, allowed, revoked, target, rule.exit_code());
            rule.check(&reason, allowed, revoked);
            reason
        }
    }
}

/// Asserts git and driftless accept `target`, driftless naming `principal`
/// and `key`, the commit and the signer's time read from the object.
fn accepts(
    repo: &Repo<'_>,
    allowed: &Path,
    revoked: Option<&Path>,
    target: Target<'_>,
    key: &PublicKey,
    principal: &str,
) {
    let (object, commit, kind, who) = match target {
        Target::Tag(name) => (
            Some(repo.rev_parse(&format!("refs/tags/{name}"))),
            repo.rev_parse(&format!("refs/tags/{name}^{{commit}}")),
            "tag",
            "tagger ",
        ),
        Target::Commit(rev) => (
            None,
            repo.rev_parse(&format!("{rev}^{{commit}}")),
            "commit",
            "committer ",
        ),
    };
    let text = repo.cat_object(kind, object.as_deref().unwrap_or(&commit));
    let ident = text
        .lines()
        .find(|l| l.starts_with(who))
        .unwrap_or_else(|| panic!("no {who}line in\n{text}"));
    let seconds: i64 = ident
        .rsplit(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {ident:?}"));
    let signed_at = Timestamp::from_second(seconds)
        .expect("time in range")
        .to_string();
    assert_good(
        repo,
        allowed,
        revoked,
        target,
        &Good {
            principal,
            key,
            commit: &commit,
            tag_object: object.as_deref(),
            signed_at: &signed_at,
        },
    );
}

#[test]
fn every_rule_is_in_the_documented_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/security.md");
    let start = doc
        .find("## Stricter than `git verify-tag`")
        .expect("the stricter-than-git section");
    let end = doc[start + 3..]
        .find("\n## ")
        .map_or(doc.len(), |e| start + 3 + e);
    let table = &doc[start..end];
    for rule in Rule::ALL {
        assert!(
            table.contains(rule.documented_as()),
            "docs/security.md's table lists {rule:?} as {:?}",
            rule.documented_as()
        );
    }
}

// ---------------------------------------------------------------------------
// git's t/lib-gpg.sh fixtures, and t7031 (tags) and t7528 (commits).
// ---------------------------------------------------------------------------

/// The passphrase of lib-gpg.sh's protected key.
const PASSPHRASE: &str = "super_secret";

/// The keys and allowed_signers file of git's `t/lib-gpg.sh` (its GPGSSH
/// and GPGSSH_VERIFYTIME prerequisites), made afresh.
struct LibGpg {
    primary: SshKey,
    secondary: SshKey,
    protected: SshKey,
    ecdsa: SshKey,
    untrusted: SshKey,
    expired: SshKey,
    not_yet_valid: SshKey,
    timeboxed_valid: SshKey,
    timeboxed_invalid: SshKey,
    allowed: PathBuf,
}

impl LibGpg {
    fn new(sb: &Sandbox) -> Self {
        let primary = sb.keygen(KeyKind::Ed25519, "ed25519_ssh_signing_key");
        let secondary = sb.keygen(KeyKind::Rsa(2048), "rsa_2048_ssh_signing_key");
        let protected = keygen_protected(sb, "protected_ssh_signing_key");
        let ecdsa = sb.keygen(KeyKind::Ecdsa256, "ecdsa_ssh_signing_key");
        let untrusted = sb.keygen(KeyKind::Ed25519, "untrusted_ssh_signing_key");
        let expired = sb.keygen(KeyKind::Ed25519, "expired_ssh_signing_key");
        let not_yet_valid = sb.keygen(KeyKind::Ed25519, "notyetvalid_ssh_signing_key");
        let timeboxed_valid = sb.keygen(KeyKind::Ed25519, "timeboxed_valid_ssh_signing_key");
        let timeboxed_invalid = sb.keygen(KeyKind::Ed25519, "timeboxed_invalid_ssh_signing_key");
        // As lib-gpg.sh writes them: quoted principals with spaces, the
        // .pub file's comment, and a stray quote after it (a comment too).
        let pub_file = |key: &SshKey| {
            std::fs::read_to_string(key.private.with_extension("pub"))
                .expect("read .pub")
                .trim()
                .to_owned()
        };
        let lines = [
            format!("\"principal with number 1\" {}\"", pub_file(&primary)),
            format!("\"principal with number 2\" {}\"", pub_file(&secondary)),
            format!("\"principal with number 3\" {}\"", pub_file(&protected)),
            format!("\"principal with number 4\" {}\"", pub_file(&ecdsa)),
            format!(
                "\"timeboxed valid key\" valid-after=\"20050407000000\",valid-before=\"200504100000\" {}\"",
                pub_file(&timeboxed_valid)
            ),
            format!(
                "\"timeboxed invalid key\" valid-after=\"20050401000000\",valid-before=\"200504020000\" {}\"",
                pub_file(&timeboxed_invalid)
            ),
            format!(
                "\"principal with expired key\" valid-before=\"20000101000000\" {}\"",
                pub_file(&expired)
            ),
            format!(
                "\"principal with not yet valid key\" valid-after=\"29990101000000\" {}\"",
                pub_file(&not_yet_valid)
            ),
        ];
        let allowed = sb.write_lines("ssh.all_valid.allowedSignersFile", &lines);
        Self {
            primary,
            secondary,
            protected,
            ecdsa,
            untrusted,
            expired,
            not_yet_valid,
            timeboxed_valid,
            timeboxed_invalid,
            allowed,
        }
    }

    /// A repository configured to sign with the primary key, as the test
    /// scripts configure theirs.
    fn repo<'s>(&self, sb: &'s Sandbox, name: &str, object_format: &str) -> Repo<'s> {
        let repo = sb.repo_in(name, object_format);
        repo.git(&["config", "gpg.format", "ssh"]);
        repo.git(&[
            "config",
            "user.signingKey",
            &self.primary.private.display().to_string(),
        ]);
        repo
    }
}

/// Judges what lib-gpg.sh's keys with lifetimes signed (tags or commits
/// named `expired-signed` …), dated in 2005 by `test_tick`: `judge(name,
/// git's verdict, driftless's)`.
fn judge_lifetimes(judge: impl Fn(&str, bool, Expect<'_>) -> String) {
    for name in [
        "expired-signed",
        "notyetvalid-signed",
        "timeboxedinvalid-signed",
    ] {
        judge(name, GIT_REFUSES, Expect::Refuses);
    }
    // The window closed in 2005, so driftless refuses by its current-time
    // rule.
    judge(
        "timeboxedvalid-signed",
        GIT_ACCEPTS,
        Expect::RefusesBy(Rule::CurrentTime),
    );
}

/// `ssh-keygen -t ed25519` with lib-gpg.sh's passphrase.
fn keygen_protected(sb: &Sandbox, name: &str) -> SshKey {
    let private = sb.path(name);
    let mut cmd = sb.command("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        PASSPHRASE,
        "-C",
        "git ed25519 encrypted key",
        "-f",
    ])
    .arg(&private);
    sb.run_ok(cmd, None);
    let line = std::fs::read_to_string(private.with_extension("pub")).expect("read .pub");
    SshKey {
        public: sb.describe_key(line.trim()),
        private,
    }
}

/// git's `test_tick`: commit and author dates that start at git's test
/// epoch and advance a minute each time.
struct Tick(std::cell::Cell<i64>);

impl Tick {
    /// git's `test_tick` starting point: 2005-04-07 22:13:13 UTC.
    fn new() -> Self {
        Self(std::cell::Cell::new(1_112_911_993 - 60))
    }

    /// The next date, as git's raw `SECONDS -0700`.
    fn next(&self) -> String {
        self.0.set(self.0.get() + 60);
        format!("{} -0700", self.0.get())
    }
}

/// Runs git at `date` (committer and author).
fn git_at(repo: &Repo<'_>, date: &str, args: &[&str]) -> String {
    repo.git_env(
        &[("GIT_COMMITTER_DATE", date), ("GIT_AUTHOR_DATE", date)],
        args,
    )
}

/// Writes `text` to `name` in the work tree.
fn write_file(repo: &Repo<'_>, name: &str, text: &str) {
    std::fs::write(repo.dir.join(name), text).expect("write work tree file");
}

fn key_arg(key: &SshKey) -> String {
    key.private.display().to_string()
}

#[test]
fn git_t7031_verify_tag_cases() {
    t7031("sha1");
}

/// The same in a SHA-256 repository (git runs its tests in both).
#[test]
fn git_t7031_verify_tag_cases_sha256() {
    t7031("sha256");
}

fn t7031(object_format: &str) {
    let sb = Sandbox::new();
    let gpg = LibGpg::new(&sb);
    let repo = gpg.repo(&sb, "t7031", object_format);
    assert_eq!(
        repo.rev_parse("HEAD").len(),
        object_format_digits(object_format)
    );
    let tick = Tick::new();

    // 'create signed tags ssh'
    write_file(&repo, "file", "1\n");
    repo.git(&["add", "file"]);
    git_at(&repo, &tick.next(), &["commit", "-q", "-m", "initial"]);
    git_at(
        &repo,
        &tick.next(),
        &["tag", "-s", "-m", "initial", "initial"],
    );
    repo.git(&["branch", "side"]);
    write_file(&repo, "file", "2\n");
    let t = tick.next();
    git_at(&repo, &t, &["commit", "-q", "-a", "-m", "second"]);
    git_at(&repo, &t, &["tag", "-s", "-m", "second", "second"]);
    repo.git(&["checkout", "-q", "side"]);
    write_file(&repo, "elif", "3\n");
    repo.git(&["add", "elif"]);
    git_at(
        &repo,
        &tick.next(),
        &["commit", "-q", "-m", "third on side"],
    );
    repo.git(&["checkout", "-q", "main"]);
    let t = tick.next();
    git_at(&repo, &t, &["merge", "-q", "-S", "side"]);
    git_at(&repo, &t, &["tag", "-s", "-m", "merge", "merge"]);
    write_file(&repo, "file", "4\n");
    let t = tick.next();
    git_at(
        &repo,
        &t,
        &["commit", "-q", "-a", "-S", "-m", "fourth unsigned"],
    );
    git_at(
        &repo,
        &t,
        &["tag", "-a", "-m", "fourth-unsigned", "fourth-unsigned"],
    );
    let t = tick.next();
    git_at(
        &repo,
        &t,
        &["commit", "-q", "--amend", "-S", "-m", "fourth signed"],
    );
    git_at(&repo, &t, &["tag", "-s", "-m", "fourth", "fourth-signed"]);
    write_file(&repo, "file", "5\n");
    git_at(&repo, &tick.next(), &["commit", "-q", "-a", "-m", "fifth"]);
    repo.git(&["tag", "fifth-unsigned"]);
    repo.git(&["config", "commit.gpgsign", "true"]);
    write_file(&repo, "file", "6\n");
    let t = tick.next();
    git_at(&repo, &t, &["commit", "-q", "-a", "-m", "sixth"]);
    git_at(&repo, &t, &["tag", "-a", "-m", "sixth", "sixth-unsigned"]);
    let t = tick.next();
    git_at(&repo, &t, &["rebase", "-q", "-f", "HEAD^^"]);
    git_at(
        &repo,
        &t,
        &["tag", "-s", "-m", "6th", "sixth-signed", "HEAD^"],
    );
    git_at(&repo, &t, &["tag", "-m", "seventh", "-s", "seventh-signed"]);
    write_file(&repo, "file", "8\n");
    let t = tick.next();
    git_at(&repo, &t, &["commit", "-q", "-a", "-m", "eighth"]);
    let untrusted = key_arg(&gpg.untrusted);
    git_at(
        &repo,
        &t,
        &[
            "tag",
            &format!("-u{untrusted}"),
            "-m",
            "eighth",
            "eighth-signed-alt",
        ],
    );
    repo.git(&["config", "commit.gpgsign", "false"]);
    let secondary = key_arg(&gpg.secondary);
    git_at(
        &repo,
        &tick.next(),
        &["tag", "-s", "-u", &secondary, "-m", "rsa", "rsa-signed"],
    );

    // 'create signed tags with keys having defined lifetimes'
    for (key, name) in [
        (&gpg.expired, "expired"),
        (&gpg.not_yet_valid, "notyetvalid"),
        (&gpg.timeboxed_valid, "timeboxedvalid"),
        (&gpg.timeboxed_invalid, "timeboxedinvalid"),
    ] {
        write_file(&repo, "file", &format!("{name}\n"));
        let t = tick.next();
        let sign = format!("-S{}", key_arg(key));
        git_at(&repo, &t, &["commit", "-q", "-a", "-m", name, &sign]);
        let tag = format!("{name}-signed");
        let message = format!("{name}-signed");
        git_at(
            &repo,
            &t,
            &["tag", "-s", "-u", &key_arg(key), "-m", &message, &tag],
        );
    }

    let allowed = gpg.allowed.as_path();
    let primary = Expect::Accepts {
        key: &gpg.primary.public,
        principal: "principal with number 1",
    };
    let judge = |name: &str, git: bool, expect: Expect<'_>| {
        case(&repo, allowed, None, Target::Tag(name), git, expect)
    };

    // 'verify and show ssh signatures'
    for tag in [
        "initial",
        "second",
        "merge",
        "fourth-signed",
        "sixth-signed",
        "seventh-signed",
    ] {
        judge(tag, GIT_ACCEPTS, primary);
    }
    // lib-gpg.sh's RSA key, which t7031 itself does not sign with.
    judge(
        "rsa-signed",
        GIT_ACCEPTS,
        Expect::Accepts {
            key: &gpg.secondary.public,
            principal: "principal with number 2",
        },
    );
    for tag in ["fourth-unsigned", "fifth-unsigned", "sixth-unsigned"] {
        judge(tag, GIT_REFUSES, Expect::Refuses);
    }
    let reason = judge("eighth-signed-alt", GIT_REFUSES, Expect::Refuses);
    assert!(
        reason.contains(&gpg.untrusted.public.fingerprint),
        "names the untrusted key: {reason}"
    );

    // 'verify-tag exits failure on expired / not yet valid signature key',
    // 'verify-tag succeeds with tag date and key validity matching',
    // 'verify-tag fails with tag date outside of key validity'
    judge_lifetimes(judge);

    // 'detect fudged ssh signature'
    let raw = repo.cat_object("tag", "seventh-signed");
    let forged = raw.replacen("\ntag seventh-signed\n", "\ntag 7th-forged-signed\n", 1);
    assert_ne!(raw, forged);
    let oid = repo.hash_object("tag", forged.as_bytes(), false);
    repo.git(&["update-ref", "refs/tags/7th-forged-signed", &oid]);
    judge("7th-forged-signed", GIT_REFUSES, Expect::Refuses);
}

#[test]
fn git_t7528_signed_commit_cases() {
    t7528("sha1");
}

/// The same in a SHA-256 repository, whose commits git signs in a
/// `gpgsig-sha256` header.
#[test]
fn git_t7528_signed_commit_cases_sha256() {
    t7528("sha256");
}

/// Hex digits of an object id in `object_format`.
fn object_format_digits(object_format: &str) -> usize {
    match object_format {
        "sha256" => 64,
        _ => 40,
    }
}

fn t7528(object_format: &str) {
    let sb = Sandbox::new();
    let gpg = LibGpg::new(&sb);
    let repo = gpg.repo(&sb, "t7528", object_format);
    assert_eq!(
        repo.rev_parse("HEAD").len(),
        object_format_digits(object_format)
    );
    let tick = Tick::new();
    let at = |args: &[&str]| git_at(&repo, &tick.next(), args);

    // 'create signed commits'
    write_file(&repo, "file", "1\n");
    repo.git(&["add", "file"]);
    at(&["commit", "-q", "-S", "-m", "initial"]);
    repo.git(&["tag", "initial"]);
    repo.git(&["branch", "side"]);
    write_file(&repo, "file", "2\n");
    at(&["commit", "-q", "-a", "-S", "-m", "second"]);
    repo.git(&["tag", "second"]);
    repo.git(&["checkout", "-q", "side"]);
    write_file(&repo, "elif", "3\n");
    repo.git(&["add", "elif"]);
    at(&["commit", "-q", "-m", "third on side"]);
    repo.git(&["checkout", "-q", "main"]);
    at(&["merge", "-q", "-S", "side"]);
    repo.git(&["tag", "merge"]);
    write_file(&repo, "file", "4\n");
    at(&["commit", "-q", "-a", "-m", "fourth unsigned"]);
    repo.git(&["tag", "fourth-unsigned"]);
    at(&["commit", "-q", "--amend", "-S", "-m", "fourth signed"]);
    repo.git(&["tag", "fourth-signed"]);
    repo.git(&["config", "commit.gpgsign", "true"]);
    write_file(&repo, "file", "5\n");
    at(&["commit", "-q", "-a", "-m", "fifth signed"]);
    repo.git(&["tag", "fifth-signed"]);
    repo.git(&["config", "commit.gpgsign", "false"]);
    write_file(&repo, "file", "6\n");
    at(&["commit", "-q", "-a", "-m", "sixth"]);
    repo.git(&["tag", "sixth-unsigned"]);
    repo.git(&["config", "commit.gpgsign", "true"]);
    write_file(&repo, "file", "7\n");
    at(&["commit", "-q", "-a", "-m", "seventh", "--no-gpg-sign"]);
    repo.git(&["tag", "seventh-unsigned"]);
    at(&["rebase", "-q", "-f", "HEAD^^"]);
    repo.git(&["tag", "sixth-signed", "HEAD^"]);
    repo.git(&["tag", "seventh-signed"]);
    write_file(&repo, "file", "8\n");
    let untrusted = format!("-S{}", key_arg(&gpg.untrusted));
    at(&["commit", "-q", "-a", "-m", "eighth", &untrusted]);
    repo.git(&["tag", "eighth-signed-alt"]);
    // commit.gpgsign is still on, but commit-tree signs only when asked.
    let date = tick.next();
    let env = [
        ("GIT_COMMITTER_DATE", date.as_str()),
        ("GIT_AUTHOR_DATE", date.as_str()),
    ];
    let commit_tree = |args: &[&str], message: &str| {
        let mut cmd = repo.git_command();
        cmd.args(["commit-tree", "HEAD^{tree}"])
            .args(args)
            .envs(env);
        sb.run_ok(cmd, Some(message.as_bytes()))
            .stdout
            .trim()
            .to_owned()
    };
    let ninth = commit_tree(&[], "9\n");
    repo.git(&["tag", "ninth-unsigned", &ninth]);
    let tenth = commit_tree(&["-S"], "10\n");
    repo.git(&["tag", "tenth-signed", &tenth]);
    let eleventh = commit_tree(&["--gpg-sign"], "11\n");
    repo.git(&["tag", "eleventh-signed", &eleventh]);
    let twelfth = commit_tree(
        &[&format!("--gpg-sign={}", key_arg(&gpg.untrusted))],
        "12\n",
    );
    repo.git(&["tag", "twelfth-signed-alt", &twelfth]);
    write_file(&repo, "file", "13\n");
    let ecdsa = format!("-S{}", key_arg(&gpg.ecdsa));
    at(&["commit", "-q", "-a", "-m", "thirteenth", &ecdsa]);
    repo.git(&["tag", "thirteenth-signed-ecdsa"]);

    // 'create signed commits with keys having defined lifetimes'
    for (key, name) in [
        (&gpg.expired, "expired"),
        (&gpg.not_yet_valid, "notyetvalid"),
        (&gpg.timeboxed_valid, "timeboxedvalid"),
        (&gpg.timeboxed_invalid, "timeboxedinvalid"),
    ] {
        write_file(&repo, "file", &format!("{name}\n"));
        let sign = format!("-S{}", key_arg(key));
        at(&["commit", "-q", "-a", "-m", name, &sign]);
        repo.git(&["tag", &format!("{name}-signed")]);
    }

    // 'detect fudged signature' and 'detect fudged signature with NUL'
    let raw = repo.cat_object("commit", "seventh-signed");
    let forged = raw.replacen("\n\nseventh", "\n\n7th forged", 1);
    assert_ne!(raw, forged);
    let forged1 = repo.hash_object("commit", forged.as_bytes(), false);
    let forged2 = repo.hash_object("commit", format!("{raw}\0wik\n").as_bytes(), true);

    // 'amending already signed commit'
    repo.git(&["checkout", "-q", "-f", "fourth-signed^0"]);
    at(&["commit", "-q", "--amend", "-S", "--no-edit"]);
    let amended = repo.head();

    let allowed = gpg.allowed.as_path();
    let judge = |rev: &str, git: bool, expect: Expect<'_>| {
        case(&repo, allowed, None, Target::Commit(rev), git, expect)
    };
    let primary = || Expect::Accepts {
        key: &gpg.primary.public,
        principal: "principal with number 1",
    };

    // 'verify and show signatures'
    for rev in [
        "initial",
        "second",
        "merge",
        "fourth-signed",
        "fifth-signed",
        "sixth-signed",
        "seventh-signed",
        "tenth-signed",
        "eleventh-signed",
        amended.as_str(),
    ] {
        judge(rev, GIT_ACCEPTS, primary());
    }
    judge(
        "thirteenth-signed-ecdsa",
        GIT_ACCEPTS,
        Expect::Accepts {
            key: &gpg.ecdsa.public,
            principal: "principal with number 4",
        },
    );
    for rev in [
        "merge^2",
        "fourth-unsigned",
        "sixth-unsigned",
        "seventh-unsigned",
        "ninth-unsigned",
    ] {
        judge(rev, GIT_REFUSES, Expect::Refuses);
    }
    // 'verify-commit exits failure on untrusted signature'
    for rev in ["eighth-signed-alt", "twelfth-signed-alt"] {
        let reason = judge(rev, GIT_REFUSES, Expect::Refuses);
        assert!(
            reason.contains(&gpg.untrusted.public.fingerprint),
            "names the untrusted key: {reason}"
        );
    }
    // The lifetimes.
    judge_lifetimes(judge);
    // The fudged commits.
    judge(&forged1, GIT_REFUSES, Expect::Refuses);
    judge(&forged2, GIT_REFUSES, Expect::Refuses);
}

/// An `ssh-agent` of the test's own, stopped (by its pid) when dropped.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
}

impl Agent {
    /// Starts `ssh-agent -D -a SOCKET` and waits (at most 10 s) until its
    /// socket accepts connections.
    fn start(sb: &Sandbox) -> Self {
        let socket = sb.path("agent.sock");
        let mut cmd = sb.command("ssh-agent");
        cmd.arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd.spawn().expect("start ssh-agent");
        let agent = Self { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "ssh-agent did not listen on its socket in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        agent
    }

    /// `ssh-add KEY`, with `passphrase` given through SSH_ASKPASS.
    fn add(&self, sb: &Sandbox, key: &SshKey, passphrase: Option<&str>) {
        let mut cmd = sb.command("ssh-add");
        cmd.arg("-q")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &self.socket);
        if let Some(passphrase) = passphrase {
            let script = sb.write("askpass", format!("#!/bin/sh\necho '{passphrase}'\n"));
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))
                .expect("chmod askpass");
            cmd.env("SSH_ASKPASS", &script)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        sb.run_ok(cmd, None);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn git_t7528_commits_signed_through_ssh_agent_with_literal_keys() {
    // 'sign commits using literal public keys with ssh-agent', and
    // lib-gpg.sh's passphrase-protected key, which git signs with only
    // through an agent. The private keys are moved away, so the agent signs.
    let sb = Sandbox::new();
    let gpg = LibGpg::new(&sb);
    let repo = gpg.repo(&sb, "agent", "sha1");
    repo.git(&["config", "--unset", "user.signingKey"]);
    let agent = Agent::start(&sb);
    agent.add(&sb, &gpg.primary, None);
    agent.add(&sb, &gpg.ecdsa, None);
    agent.add(&sb, &gpg.protected, Some(PASSPHRASE));
    for key in [&gpg.primary, &gpg.ecdsa, &gpg.protected] {
        std::fs::rename(&key.private, key.private.with_extension("moved")).expect("move key");
    }
    let socket = agent.socket.display().to_string();
    let env = [("SSH_AUTH_SOCK", socket.as_str())];
    let primary = &gpg.primary.public.line;
    let ecdsa = &gpg.ecdsa.public.line;
    let protected = &gpg.protected.public.line;
    let mut made = Vec::new();
    for (i, (how, key, principal)) in [
        (
            format!("-S{primary}"),
            &gpg.primary,
            "principal with number 1",
        ),
        (
            String::from("config"),
            &gpg.primary,
            "principal with number 1",
        ),
        (
            format!("-Skey::{ecdsa}"),
            &gpg.ecdsa,
            "principal with number 4",
        ),
        (
            String::from("key::config"),
            &gpg.ecdsa,
            "principal with number 4",
        ),
        (
            format!("-S{protected}"),
            &gpg.protected,
            "principal with number 3",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        write_file(&repo, "file", &format!("{i}\n"));
        repo.git(&["add", "file"]);
        let sign = match how.as_str() {
            "config" => {
                repo.git(&["config", "user.signingKey", primary]);
                String::from("-S")
            }
            "key::config" => {
                repo.git(&["config", "user.signingKey", &format!("key::{ecdsa}")]);
                String::from("-S")
            }
            _ => how,
        };
        repo.git_env(&env, &["commit", "-q", "-m", &format!("agent {i}"), &sign]);
        made.push((repo.head(), key, principal));
    }
    drop(agent);
    for (commit, key, principal) in &made {
        case(
            &repo,
            &gpg.allowed,
            None,
            Target::Commit(commit),
            GIT_ACCEPTS,
            Expect::Accepts {
                key: &key.public,
                principal,
            },
        );
    }
}

// ---------------------------------------------------------------------------
// OpenSSH's regress/sshsig.sh, key type by key type, in namespace git.
// ---------------------------------------------------------------------------

/// The principal of sshsig.sh's allowed_signers lines.
const SIG_PRINCIPAL: &str = "user@example.com";

/// A key that signs: with `ssh-keygen -Y sign`, or in process (FIDO keys,
/// which need no authenticator that way).
enum SigningKey {
    /// A key `ssh-keygen` made and signs with.
    Tool(SshKey),
    /// A key driftless's test support signs with.
    InProcess(Signer),
}

impl SigningKey {
    fn public(&self, sb: &Sandbox) -> PublicKey {
        match self {
            SigningKey::Tool(key) => key.public.clone(),
            SigningKey::InProcess(signer) => sb.describe_key(&signer.public_line()),
        }
    }

    /// An armored signature of `data` in `namespace`, with `hash` (or the
    /// signer's default, sha512).
    fn sign(&self, sb: &Sandbox, data: &[u8], namespace: &str, hash: Option<&str>) -> String {
        match self {
            SigningKey::Tool(key) => {
                let option = hash.map(|h| format!("-Ohashalg={h}"));
                let options: Vec<&str> = option.iter().map(String::as_str).collect();
                sb.ssh_keygen_sign_with(key, namespace, &options, data)
            }
            SigningKey::InProcess(signer) => signer.sign_armored(
                data,
                &SignOptions {
                    namespace: namespace.to_owned(),
                    hash_alg: hash.unwrap_or("sha512").to_owned(),
                    ..SignOptions::default()
                },
            ),
        }
    }
}

/// A tag `name` on HEAD dated `date_raw` (`SECONDS +HHMM`), signed by `key`
/// in `namespace` with `hash`.
fn make_tag(
    sb: &Sandbox,
    repo: &Repo<'_>,
    key: &SigningKey,
    name: &str,
    date_raw: &str,
    hash: Option<&str>,
) -> String {
    let payload = repo.tag_payload(name, &repo.head(), "commit", date_raw);
    let sig = key.sign(sb, payload.as_bytes(), "git", hash);
    repo.mktag(name, &format!("{payload}{sig}"))
}

/// `SECONDS +0000` for a `YYYY-MM-DD` date (midnight UTC).
fn raw_date(day: &str) -> String {
    let at: Timestamp = format!("{day}T00:00:00Z").parse().expect("date");
    format!("{} +0000", at.as_second())
}

/// `SECONDS +0000` for a time `days` from now.
fn raw_days_from_now(days: i64) -> String {
    format!("{} +0000", days_from_now(days).as_second())
}

/// Runs sshsig.sh's cases that apply to git for one key. `supported`:
/// driftless accepts the key type. When it does not, every allowed_signers
/// file that lists the key is refused by [`Rule::KeyTypeListed`], and a
/// signature by it by [`Rule::KeyType`].
fn sshsig_cases(make_key: impl FnOnce(&Sandbox) -> SigningKey, supported: bool) {
    let sb = Sandbox::new();
    let key = make_key(&sb);
    let public = key.public(&sb);
    let wrong = sb.keygen(KeyKind::Ed25519, "wrong-key");
    let repo = sb.repo("repo");
    let signers = |name: &str, options: &str| {
        let line = if options.is_empty() {
            public.allowed(SIG_PRINCIPAL)
        } else {
            public.allowed_with(SIG_PRINCIPAL, options)
        };
        sb.write_lines(name, &[line])
    };
    // driftless's answer on a file that lists the key: `expect` if it
    // accepts the key type.
    let listed = |expect: Expect<'static>| {
        if supported {
            expect
        } else {
            Expect::RefusesBy(Rule::KeyTypeListed { line: 1 })
        }
    };
    let good = || {
        if supported {
            Expect::Accepts {
                key: &public,
                principal: SIG_PRINCIPAL,
            }
        } else {
            Expect::RefusesBy(Rule::KeyTypeListed { line: 1 })
        }
    };
    fn tag(name: &str) -> Target<'_> {
        Target::Tag(name)
    }

    // Sign with each hash; verify.
    let plain = signers("allowed_signers", "");
    for (name, hash) in [
        ("hash-default", None),
        ("hash-sha256", Some("sha256")),
        ("hash-sha512", Some("sha512")),
    ] {
        make_tag(&sb, &repo, &key, name, FIXED_DATE_RAW, hash);
        case(&repo, &plain, None, tag(name), GIT_ACCEPTS, good());
    }
    let signed = tag("hash-default");
    // The same signature on a commit.
    let payload = repo.commit_payload("sshsig commit");
    let sig = key.sign(&sb, payload.as_bytes(), "git", None);
    let commit = repo.commit_with_signature(&payload, &sig);
    case(
        &repo,
        &plain,
        None,
        Target::Commit(&commit),
        GIT_ACCEPTS,
        good(),
    );

    // "verify with limited namespace"
    let limited = signers("limited", r#"namespaces="git,whatever""#);
    case(&repo, &limited, None, signed, GIT_ACCEPTS, good());
    // "verify with bad signers": an unknown option, the line skipped by
    // ssh-keygen, breaks the file for driftless.
    let octopus = signers("octopus", "octopus");
    case(
        &repo,
        &octopus,
        None,
        signed,
        GIT_REFUSES,
        Expect::RefusesBy(Rule::LineDoesNotParse { line: 1 }),
    );
    // "verify with wrong key": only another key is listed.
    let wrong_key = sb.write_lines("wrong", &[wrong.public.allowed(SIG_PRINCIPAL)]);
    let by_key_type = if supported {
        Expect::Refuses
    } else {
        Expect::RefusesBy(Rule::KeyType)
    };
    case(&repo, &wrong_key, None, signed, GIT_REFUSES, by_key_type);
    // "verify with wrong data": the signature of one tag on another text.
    let payload = repo.tag_payload("wrong-data", &repo.head(), "commit", FIXED_DATE_RAW);
    let sig = key.sign(&sb, payload.as_bytes(), "git", None);
    repo.mktag(
        "wrong-data",
        &format!("{}{sig}", payload.replace("release", "tampered")),
    );
    let refused = listed(Expect::Refuses);
    case(&repo, &plain, None, tag("wrong-data"), GIT_REFUSES, refused);
    // "verify with wrong namespace": signed for another purpose.
    let payload = repo.tag_payload("other-ns", &repo.head(), "commit", FIXED_DATE_RAW);
    let sig = key.sign(&sb, payload.as_bytes(), "test-namespace", None);
    repo.mktag("other-ns", &format!("{payload}{sig}"));
    case(&repo, &plain, None, tag("other-ns"), GIT_REFUSES, refused);
    // "verify with excluded namespace", and "find-principals with missing
    // namespace" (the line names namespaces, none of them git).
    for (name, options) in [
        ("excluded", r#"namespaces="whatever""#),
        ("test1-test2", r#"namespaces="test1,test2""#),
    ] {
        let excluded = signers(name, options);
        case(&repo, &excluded, None, signed, GIT_REFUSES, refused);
    }

    // Key lifespans: valid 1980..1990, signed in 1985, 1979 and 1991. git
    // checks the signer's time only; driftless also the current time.
    let lifespan = signers(
        "lifespan",
        r#"valid-after="19800101",valid-before="19900101""#,
    );
    let expired_now = listed(Expect::RefusesBy(Rule::CurrentTime));
    for (name, day, git) in [
        ("in-1985", "1985-01-01", GIT_ACCEPTS),
        ("in-1979", "1979-01-01", GIT_REFUSES),
        ("in-1991", "1991-01-01", GIT_REFUSES),
    ] {
        make_tag(&sb, &repo, &key, name, &raw_date(day), None);
        let expect = if git { expired_now } else { refused };
        case(&repo, &lifespan, None, tag(name), git, expect);
    }
    // "verify with expired lifespan (now)": git passes no verify time for a
    // signer's time of 0, so ssh-keygen checks the current time.
    make_tag(&sb, &repo, &key, "at-epoch", "0 +0000", None);
    case(
        &repo,
        &lifespan,
        None,
        tag("at-epoch"),
        GIT_REFUSES,
        refused,
    );

    // "verify with revoked key" (on the regress's own line, and on a plain
    // one) and "verify with unrevoked key".
    let revoked = sb.write_lines("revoked_keys", std::slice::from_ref(&public.line));
    let whatever = signers("revoked-whatever", r#"namespaces="whatever""#);
    case(
        &repo,
        &whatever,
        Some(&revoked),
        signed,
        GIT_REFUSES,
        refused,
    );
    let reason = case(&repo, &plain, Some(&revoked), signed, GIT_REFUSES, refused);
    if supported {
        assert!(reason.contains("revoked"), "{reason}");
    }
    let unrevoked = sb.write_lines("unrevoked_keys", std::slice::from_ref(&wrong.public.line));
    case(&repo, &plain, Some(&unrevoked), signed, GIT_ACCEPTS, good());

    // "Duplicate principals & keys in allowed_signers but with different
    // validities": 1980..1990 and 1985..2000, signed outside both, in the
    // first only, in both and in the second only.
    let duplicates = sb.write_lines(
        "duplicates",
        &[
            public.allowed_with(
                SIG_PRINCIPAL,
                r#"valid-after="19800101",valid-before="19900101""#,
            ),
            public.allowed_with(
                SIG_PRINCIPAL,
                r#"valid-after="19850101",valid-before="20000101""#,
            ),
        ],
    );
    for (name, day, git) in [
        ("dup-2010", "2010-01-01", GIT_REFUSES),
        ("dup-1983", "1983-01-01", GIT_ACCEPTS),
        ("dup-1988", "1988-01-01", GIT_ACCEPTS),
        ("dup-1995", "1995-01-01", GIT_ACCEPTS),
    ] {
        make_tag(&sb, &repo, &key, name, &raw_date(day), None);
        let expect = if git { expired_now } else { refused };
        case(&repo, &duplicates, None, tag(name), git, expect);
    }
    // The same two windows moved to today, so that the current time is in
    // them: driftless agrees with git, tag by tag.
    let moved = sb.write_lines(
        "duplicates-now",
        &[
            public.allowed_with(
                SIG_PRINCIPAL,
                &format!(
                    r#"valid-after="{}",valid-before="{}""#,
                    signers_time(days_from_now(-40)),
                    signers_time(days_from_now(1)),
                ),
            ),
            public.allowed_with(
                SIG_PRINCIPAL,
                &format!(
                    r#"valid-after="{}",valid-before="{}""#,
                    signers_time(days_from_now(-20)),
                    signers_time(days_from_now(40)),
                ),
            ),
        ],
    );
    for (name, days, git) in [
        ("now-outside", -60, GIT_REFUSES),
        ("now-first", -30, GIT_ACCEPTS),
        ("now-both", -10, GIT_ACCEPTS),
        ("now-second", 5, GIT_ACCEPTS),
    ] {
        make_tag(&sb, &repo, &key, name, &raw_days_from_now(days), None);
        let expect = if git { good() } else { refused };
        case(&repo, &moved, None, tag(name), git, expect);
    }
}

#[test]
fn openssh_sshsig_ed25519() {
    sshsig_cases(
        |sb| SigningKey::Tool(sb.keygen(KeyKind::Ed25519, "k")),
        true,
    );
}

#[test]
fn openssh_sshsig_ecdsa_p256() {
    sshsig_cases(
        |sb| SigningKey::Tool(sb.keygen(KeyKind::Ecdsa256, "k")),
        true,
    );
}

#[test]
fn openssh_sshsig_ecdsa_p384() {
    sshsig_cases(
        |sb| SigningKey::Tool(sb.keygen(KeyKind::Ecdsa384, "k")),
        true,
    );
}

#[test]
fn openssh_sshsig_rsa() {
    sshsig_cases(
        |sb| SigningKey::Tool(sb.keygen(KeyKind::Rsa(2048), "k")),
        true,
    );
}

#[test]
fn openssh_sshsig_sk_ed25519() {
    sshsig_cases(|_| SigningKey::InProcess(Signer::ed25519_sk()), true);
}

#[test]
fn openssh_sshsig_sk_ecdsa() {
    sshsig_cases(|_| SigningKey::InProcess(Signer::ecdsa_sk()), true);
}

#[test]
fn openssh_sshsig_ecdsa_p521_is_refused_by_key_type() {
    // git accepts P-521 keys; driftless's verifier (ring) has no P-521.
    sshsig_cases(
        |sb| SigningKey::Tool(sb.keygen(KeyKind::Ecdsa521, "k")),
        false,
    );
}

#[test]
fn openssh_sshsig_dsa_is_refused_by_key_type() {
    // The ssh-keygen here still signs and verifies with DSA; driftless
    // does not accept it.
    sshsig_cases(|sb| SigningKey::Tool(sb.keygen(KeyKind::Dsa, "k")), false);
}

#[test]
fn openssh_sshsig_certificates() {
    // sshsig.sh's certificate cases: a key certified by a CA for
    // user@example.com, valid 1984..1986, signing tags dated within and
    // around that. git accepts through cert-authority lines; driftless
    // refuses every certificate signature by rule.
    let sb = Sandbox::new();
    let ca = sb.keygen(KeyKind::Ed25519, "sigca-key");
    let user = Signer::ed25519();
    let user_line = user.public_line();
    let cert = sb.certify_with(&ca, &user_line, SIG_PRINCIPAL, &["-V", "19840101:19860101"]);
    let key = SigningKey::InProcess(user.with_certificate(support::key_blob(&cert)));
    let plain_user = sb.describe_key(&user_line);
    let repo = sb.repo("repo");
    for (name, day) in [
        ("1979", "1979-01-01"),
        ("1981", "1981-01-01"),
        ("1984", "1984-06-01"),
        ("1985", "1985-01-01"),
        ("1989", "1989-01-01"),
        ("1991", "1991-01-01"),
    ] {
        make_tag(&sb, &repo, &key, name, &raw_date(day), None);
    }
    let file = |name: &str, line: String| sb.write_lines(name, &[line]);
    let ca_line = |principals: &str, options: &str| {
        ca.public
            .allowed_with(principals, &format!("cert-authority{options}"))
    };
    let certificate = || Expect::RefusesBy(Rule::Certificate);
    let judge = |allowed: &Path, revoked: Option<&Path>, name: &str, git: bool| {
        let expect = if git { certificate() } else { Expect::Refuses };
        let reason = case(&repo, allowed, revoked, Target::Tag(name), git, expect);
        assert!(reason.contains("certificates"), "{reason}");
    };

    // "verify cert good CA", "find-principals cert good wildcard CA".
    judge(
        &file("good-ca", ca_line(SIG_PRINCIPAL, "")),
        None,
        "1985",
        GIT_ACCEPTS,
    );
    judge(
        &file("wildcard", ca_line("*@example.com", "")),
        None,
        "1985",
        GIT_ACCEPTS,
    );
    // The certificate's own validity.
    for name in ["1981", "1989"] {
        judge(
            &file("good-ca-2", ca_line(SIG_PRINCIPAL, "")),
            None,
            name,
            GIT_REFUSES,
        );
    }
    // "Set lifespan of CA key": 1980..1990, then 1980..1982.
    let ca_window = |name: &str, before: &str| {
        let options = format!(r#",valid-after="19800101",valid-before="{before}""#);
        file(name, ca_line(SIG_PRINCIPAL, &options))
    };
    let ca_life = ca_window("ca-lifespan", "19900101");
    judge(&ca_life, None, "1985", GIT_ACCEPTS);
    for name in ["1979", "1981", "1989", "1991"] {
        judge(&ca_life, None, name, GIT_REFUSES);
    }
    let ca_short = ca_window("ca-short", "19820101");
    judge(&ca_short, None, "1984", GIT_REFUSES);
    // "verify key not marked as CA", "verify cert with wrong principal",
    // "verify cert with revoked CA" (the user's plain key listed).
    judge(
        &file("ca-unmarked", ca.public.allowed(SIG_PRINCIPAL)),
        None,
        "1985",
        GIT_REFUSES,
    );
    judge(
        &file("josef", ca_line("josef.k@example.com", "")),
        None,
        "1985",
        GIT_REFUSES,
    );
    let revoked_ca = sb.write_lines("revoked_ca", std::slice::from_ref(&ca.public.line));
    judge(
        &file("plain-user", plain_user.allowed(SIG_PRINCIPAL)),
        Some(&revoked_ca),
        "1985",
        GIT_REFUSES,
    );

    // "verify signing key listed as CA": a plain signature by a key that
    // the file trusts only as a cert-authority.
    let signer_key = sb.keygen(KeyKind::Ed25519, "signer");
    make_tag(
        &sb,
        &repo,
        &SigningKey::Tool(signer_key.clone()),
        "plain",
        FIXED_DATE_RAW,
        None,
    );
    let listed_as_ca = file(
        "listed-as-ca",
        signer_key
            .public
            .allowed_with(SIG_PRINCIPAL, "cert-authority"),
    );
    let reason = case(
        &repo,
        &listed_as_ca,
        None,
        Target::Tag("plain"),
        GIT_REFUSES,
        Expect::Refuses,
    );
    assert!(
        reason.contains("only as a cert-authority")
            && reason.contains("without cert-authority")
            && reason.contains(&format!("{}:1", listed_as_ca.display())),
        "names the line and the way out: {reason}"
    );
}

// ---------------------------------------------------------------------------
// One key on several allowed_signers lines: git's find-principals, then
// verify for the principals of the first line holding the key.
// ---------------------------------------------------------------------------

/// A signed tag `v1` and commit by a fresh key, dated three days ago.
struct Several {
    sb: Sandbox,
    key: SshKey,
    other: SshKey,
}

impl Several {
    fn new() -> Self {
        let sb = Sandbox::new();
        let key = sb.keygen(KeyKind::Ed25519, "alice");
        let other = sb.keygen(KeyKind::Ed25519, "other");
        Self { sb, key, other }
    }

    /// An allowed_signers line for the key.
    fn line(&self, principals: &str, options: &str) -> String {
        if options.is_empty() {
            self.key.public.allowed(principals)
        } else {
            self.key.public.allowed_with(principals, options)
        }
    }
}

/// `valid-before` or `valid-after` `days` from now.
fn window(option: &str, days: i64) -> String {
    format!(r#"{option}="{}""#, signers_time(days_from_now(days)))
}

#[test]
fn several_lines_one_key_follow_gits_first_line() {
    let s = Several::new();
    let sb = &s.sb;
    let repo = sb.repo("repo");
    let signed = format!("@{} +0000", days_from_now(-3).as_second());
    repo.signed_tag_at(&s.key, "v1", None, &signed);
    let commit = repo.signed_commit_at(&s.key, "signed commit", &signed);
    let accepts = |principal| Expect::Accepts {
        key: &s.key.public,
        principal,
    };
    let not_git = r#"namespaces="file""#;
    let files = "files@example.com";
    let both = format!("{files},{ALICE}");
    let expired_before = format!("{not_git},{}", window("valid-before", -5));
    let expired_since = format!("{not_git},{}", window("valid-before", -1));
    let valid_since = format!("{not_git},{}", window("valid-after", -10));
    let expires_today = window("valid-before", -1);
    let not_bob = format!("!bob,{ALICE}");
    // (the lines, git's verdict, driftless's, the line a refusal names)
    let cases: Vec<(Vec<String>, bool, Expect<'_>, Option<usize>)> = vec![
        // The first line holding the key allows another namespace only: git
        // verifies for its principal alone and refuses, whatever follows.
        (
            vec![s.line(files, not_git), s.line(ALICE, "")],
            GIT_REFUSES,
            Expect::Refuses,
            Some(1),
        ),
        // The same principal on a later line admits the key.
        (
            vec![s.line(ALICE, not_git), s.line(ALICE, "")],
            GIT_ACCEPTS,
            accepts(ALICE),
            None,
        ),
        // A later line whose pattern matches the first line's principal
        // admits it; one that matches but also excludes git does not.
        (
            vec![s.line(files, not_git), s.line("*@example.com", "")],
            GIT_ACCEPTS,
            accepts("*@example.com"),
            None,
        ),
        (
            vec![s.line(files, not_git), s.line("*@example.com", not_git)],
            GIT_REFUSES,
            Expect::Refuses,
            Some(1),
        ),
        // Every principal of the first line is tried, in order.
        (
            vec![s.line(&both, not_git), s.line(ALICE, "")],
            GIT_ACCEPTS,
            accepts(ALICE),
            None,
        ),
        // A first line that expired before the signer's time is passed
        // over; one valid then still decides, even if it has expired since.
        (
            vec![s.line(files, &expired_before), s.line(ALICE, "")],
            GIT_ACCEPTS,
            accepts(ALICE),
            None,
        ),
        (
            vec![s.line(files, &expired_since), s.line(ALICE, "")],
            GIT_REFUSES,
            Expect::Refuses,
            Some(1),
        ),
        (
            vec![s.line(files, &valid_since), s.line(ALICE, "")],
            GIT_REFUSES,
            Expect::Refuses,
            Some(1),
        ),
        // Valid at the signer's time but expired now: git accepts through
        // the first line; driftless through the next line for the same
        // principal, or, when that one allows another namespace only, not
        // at all.
        (
            vec![s.line(ALICE, &expires_today), s.line(ALICE, "")],
            GIT_ACCEPTS,
            accepts(ALICE),
            None,
        ),
        (
            vec![s.line(ALICE, &expires_today), s.line(ALICE, not_git)],
            GIT_ACCEPTS,
            Expect::RefusesBy(Rule::CurrentTime),
            Some(1),
        ),
        // cert-authority lines and other keys' lines never hold the key.
        (
            vec![
                s.line(ALICE, "cert-authority"),
                s.other.public.allowed(ALICE),
                s.line(files, not_git),
                s.line(ALICE, ""),
            ],
            GIT_REFUSES,
            Expect::Refuses,
            Some(3),
        ),
        (
            vec![s.line(ALICE, "cert-authority"), s.line(ALICE, "")],
            GIT_ACCEPTS,
            accepts(ALICE),
            None,
        ),
        // The first line's principals are matched as ssh-keygen matches
        // them: "!bob" is a principal that the pattern "*" matches, and
        // that the list "!bob,alice…" does not.
        (
            vec![s.line(&not_bob, not_git), s.line("*", "")],
            GIT_ACCEPTS,
            accepts("*"),
            None,
        ),
        (
            vec![s.line("!bob", not_git), s.line(ALICE, "")],
            GIT_REFUSES,
            Expect::Refuses,
            Some(1),
        ),
    ];
    for (n, (lines, git, expect, named)) in cases.into_iter().enumerate() {
        let allowed = sb.write_lines(&format!("allowed_signers_{n}"), &lines);
        for target in [Target::Tag("v1"), Target::Commit(&commit)] {
            let reason = case(&repo, &allowed, None, target, git, expect);
            if let Some(line) = named {
                let at = format!("{}:{line}", allowed.display());
                assert!(reason.contains(&at), "case {n} names {at}: {reason}");
            }
            if n == 0 {
                assert!(
                    reason.contains("may not sign for namespace \"git\"")
                        && reason.contains(&format!("the signer is \"{files}\"")),
                    "says why the first line decides: {reason}"
                );
            }
        }
    }
}

#[test]
fn several_lines_one_key_at_the_epoch_use_the_current_time_as_git_does() {
    // git passes ssh-keygen no verify time for a signer's time of 0, so
    // find-principals picks the first line valid now, not in 1970.
    let s = Several::new();
    let sb = &s.sb;
    let repo = sb.repo("repo");
    repo.signed_tag_at(&s.key, "v1", None, "@0 +0000");
    // Two lines: files@example.com (not for git) with `window`, then alice.
    let lines = |name: &str, window: &str| {
        let options = format!(r#"namespaces="file",{window}"#);
        let lines = [s.line("files@example.com", &options), s.line(ALICE, "")];
        sb.write_lines(name, &lines)
    };
    let first_valid_now = lines("valid_now_first", r#"valid-after="20200101""#);
    let reason = case(
        &repo,
        &first_valid_now,
        None,
        Target::Tag("v1"),
        GIT_REFUSES,
        Expect::Refuses,
    );
    assert!(
        reason.contains(&format!("{}:1", first_valid_now.display())),
        "{reason}"
    );
    let first_expired = lines("expired_first", r#"valid-before="20200101""#);
    case(
        &repo,
        &first_expired,
        None,
        Target::Tag("v1"),
        GIT_ACCEPTS,
        Expect::Accepts {
            key: &s.key.public,
            principal: ALICE,
        },
    );
}

// ---------------------------------------------------------------------------
// Trust files driftless refuses by rule, and what it says.
// ---------------------------------------------------------------------------

#[test]
fn trust_files_refused_by_rule_name_the_rule_and_the_way_out() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let dsa = sb.keygen(KeyKind::Dsa, "dsa");
    let p521 = sb.keygen(KeyKind::Ecdsa521, "p521");
    let ca = sb.keygen(KeyKind::Ed25519, "ca");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, "v1", None);
    let v1 = Target::Tag("v1");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let good = || Expect::Accepts {
        key: &key.public,
        principal: ALICE,
    };
    case(&repo, &allowed, None, v1, GIT_ACCEPTS, good());

    // A missing revoked-keys file: git warns and verifies without it.
    let missing = sb.path("no-such-revoked-keys");
    case(
        &repo,
        &allowed,
        Some(&missing),
        v1,
        GIT_ACCEPTS,
        Expect::RefusesBy(Rule::MissingRevokedFile),
    );

    // A KRL: git reads it; driftless reads plain lists only.
    let other = sb.keygen(KeyKind::Ed25519, "other");
    for (name, revokes, git) in [
        ("krl-other", &other, GIT_ACCEPTS),
        ("krl-signer", &key, GIT_REFUSES),
    ] {
        let krl = sb.path(name);
        let mut cmd = sb.command("ssh-keygen");
        cmd.args(["-q", "-k", "-f"])
            .arg(&krl)
            .arg(revokes.private.with_extension("pub"));
        sb.run_ok(cmd, None);
        case(
            &repo,
            &allowed,
            Some(&krl),
            v1,
            git,
            Expect::RefusesBy(Rule::Krl),
        );
    }

    // Keys of other types, and certificates, listed for someone else.
    let cert = sb.certify(&ca, &other.public.line, "other@example.com");
    let cert_line = cert
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    for (i, line) in [
        dsa.public.allowed("dsa@example.com"),
        p521.public.allowed("p521@example.com"),
        format!("other@example.com {cert_line}"),
    ]
    .into_iter()
    .enumerate()
    {
        let listed = sb.write_lines(
            &format!("allowed_signers_listed_{i}"),
            &[line, key.public.allowed(ALICE)],
        );
        case(
            &repo,
            &listed,
            None,
            v1,
            GIT_ACCEPTS,
            Expect::RefusesBy(Rule::KeyTypeListed { line: 1 }),
        );
    }
    let revoked_dsa = sb.write_lines("revoked_dsa", std::slice::from_ref(&dsa.public.line));
    let reason = case(
        &repo,
        &allowed,
        Some(&revoked_dsa),
        v1,
        GIT_ACCEPTS,
        Expect::RefusesBy(Rule::KeyTypeListed { line: 1 }),
    );
    assert!(reason.contains("remove the line"), "{reason}");

    // Lines ssh-keygen reads differently or not at all.
    let long = "x".repeat(1023);
    for (name, lines, git, line) in [
        // A NUL byte: ssh-keygen reads the line up to it, and skips it.
        (
            "nul",
            vec![
                format!("{ALICE}\0 {}", key.public.line),
                key.public.allowed(ALICE),
            ],
            GIT_ACCEPTS,
            1,
        ),
        // Empty principals: ssh-keygen stops at the first one.
        (
            "leading-comma",
            vec![key.public.allowed(&format!(",{ALICE}"))],
            GIT_REFUSES,
            1,
        ),
        (
            "trailing-comma",
            vec![key.public.allowed(&format!("{ALICE},"))],
            GIT_ACCEPTS,
            1,
        ),
        // A pattern too long for ssh-keygen's buffer: the list matches
        // nothing.
        (
            "long-namespace",
            vec![
                key.public
                    .allowed_with(ALICE, &format!("namespaces=\"git,{long}\"")),
            ],
            GIT_REFUSES,
            1,
        ),
        (
            "long-principal",
            vec![key.public.allowed(&format!("{ALICE},{long}"))],
            GIT_REFUSES,
            1,
        ),
    ] {
        let file = sb.write_lines(name, &lines);
        case(
            &repo,
            &file,
            None,
            v1,
            git,
            Expect::RefusesBy(Rule::LineDoesNotParse { line }),
        );
    }
}
