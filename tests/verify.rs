//! End-to-end tests of `driftless verify`.
//!
//! Every fixture is made at run time with the real `git`, `ssh-keygen` and
//! `openssl` (see `support`), and wherever git's own answer is the right one,
//! `git verify-tag` / `git verify-commit` (which run `ssh-keygen -Y verify`)
//! is asked first as the oracle. Where driftless is deliberately stricter
//! than git, the test says so and why.

mod support;

use jiff::{SignedDuration, Timestamp};
use support::sshsig::{self, EcdsaCurve, SigAlg, SignOptions, Signer};
use support::verdict::{
    ALICE, EXIT_CONFIG, EXIT_USAGE, Good, TAG, assert_good, assert_oracle, assert_refused_by_both,
    assert_stricter_than_git, days_from_now, git_date, signers_time,
};
use support::{FIXED_DATE_RAW, KeyKind, Sandbox, Target};

// ---------------------------------------------------------------------------
// Every key type verifies, tag and commit.
// ---------------------------------------------------------------------------

/// Signs a tag and a commit with git and a fresh `ssh-keygen` key of `kind`
/// and checks both verify, with git and driftless agreeing.
fn good_with_git_signing(kind: KeyKind, commit_rev_as_head: bool) {
    let sb = Sandbox::new();
    let key = sb.keygen(kind, "alice");
    let repo = sb.repo("repo");
    let commit = repo.head();
    let tag_oid = repo.signed_tag(&key, TAG, None);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good::tag(&key.public, &commit, &tag_oid),
    );

    let signed = repo.signed_commit(&key, "signed commit");
    let rev = if commit_rev_as_head {
        "HEAD"
    } else {
        signed.as_str()
    };
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Commit(rev),
        &Good::commit(&key.public, &signed),
    );
}

/// Makes a tag and a commit signed in process by `signer` and checks both
/// verify, with git and driftless agreeing.
fn good_with_crafted_signing(sb: &Sandbox, signer: &Signer, opts: &SignOptions) {
    let key = sb.describe_key(&signer.public_line());
    let repo = sb.repo("repo");
    let commit = repo.head();
    let tag_oid = repo.crafted_tag(signer, TAG, opts);
    let allowed = sb.write_lines("allowed_signers", &[key.allowed(ALICE)]);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good::tag(&key, &commit, &tag_oid),
    );
    let signed = repo.crafted_commit(signer, opts);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Commit(&signed),
        &Good::commit(&key, &signed),
    );
}

#[test]
fn ed25519_tag_and_commit_verify() {
    good_with_git_signing(KeyKind::Ed25519, true);
}

#[test]
fn ecdsa_p256_tag_and_commit_verify() {
    good_with_git_signing(KeyKind::Ecdsa256, false);
}

#[test]
fn ecdsa_p384_tag_and_commit_verify() {
    good_with_git_signing(KeyKind::Ecdsa384, false);
}

#[test]
fn rsa_2048_rsa_sha2_512_tag_and_commit_verify() {
    // ssh-keygen -Y sign uses rsa-sha2-512 for RSA keys.
    good_with_git_signing(KeyKind::Rsa(2048), false);
}

#[test]
fn rsa_3072_tag_and_commit_verify() {
    good_with_git_signing(KeyKind::Rsa(3072), false);
}

#[test]
fn rsa_sha2_256_signatures_verify() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Rsa(2048), "alice");
    let signer = Signer::rsa_from_ssh_keygen(&key.private, &key.public.line);
    let opts = SignOptions {
        sig_alg: SigAlg::RsaSha256,
        ..SignOptions::default()
    };
    good_with_crafted_signing(&sb, &signer, &opts);
}

#[test]
fn sha256_hash_algorithm_verifies() {
    let sb = Sandbox::new();
    let opts = SignOptions {
        hash_alg: "sha256".to_owned(),
        ..SignOptions::default()
    };
    good_with_crafted_signing(&sb, &Signer::ed25519(), &opts);
}

#[test]
fn ecdsa_signatures_with_padded_and_short_scalars_verify() {
    // An ECDSA r or s whose top bit is set is encoded as an mpint with a
    // leading zero byte; one whose top byte is zero is encoded shorter.
    // Both must verify, for plain and FIDO ECDSA keys.
    let cases = [
        (Signer::ecdsa(EcdsaCurve::P256), EcdsaCurve::P256),
        (Signer::ecdsa(EcdsaCurve::P384), EcdsaCurve::P384),
        (Signer::ecdsa_sk(), EcdsaCurve::P256),
    ];
    for (signer, curve) in cases {
        let sb = Sandbox::new();
        let key = sb.describe_key(&signer.public_line());
        let repo = sb.repo("repo");
        let allowed = sb.write_lines("allowed_signers", &[key.allowed(ALICE)]);
        let template = repo.commit_payload("MESSAGE");
        let n = curve.scalar_len();
        let mut padded = None;
        let mut short = None;
        for attempt in 0..20_000 {
            if padded.is_some() && short.is_some() {
                break;
            }
            let payload = template.replace("\n\nMESSAGE\n", &format!("\n\nattempt {attempt}\n"));
            let blob = signer.sign(payload.as_bytes(), &SignOptions::default());
            let (r, s) = sshsig::ecdsa_mpint_lengths(&blob);
            if padded.is_none() && r.max(s) == n + 1 {
                padded = Some((payload, blob));
            } else if short.is_none() && r.min(s) < n {
                short = Some((payload, blob));
            }
        }
        for (what, found) in [("padded", padded), ("short", short)] {
            let (payload, blob) =
                found.unwrap_or_else(|| panic!("no {what} scalar in 20000 signatures"));
            let signed = repo.commit_with_signature(&payload, &sshsig::armor(&blob));
            assert_good(
                &repo,
                &allowed,
                None,
                Target::Commit(&signed),
                &Good::commit(&key, &signed),
            );
        }
    }
}

#[test]
fn signed_merge_of_a_signed_tag_verifies() {
    // A signed merge commit of a signed tag carries a `mergetag` header
    // (with the tag's own signature inside) before its `gpgsig` header; the
    // signed payload keeps the mergetag and drops only gpgsig.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.git(&["commit", "-q", "--allow-empty", "-m", "feature work"]);
    repo.signed_tag(&key, "feature-1", None);
    repo.git(&["checkout", "-q", "main"]);
    repo.git_signed(
        &key,
        &[
            "merge",
            "-q",
            "-S",
            "--no-ff",
            "-m",
            "merge feature-1",
            "feature-1",
        ],
    );
    let merge = repo.head();
    let text = repo.cat_object("commit", &merge);
    assert!(text.contains("\nmergetag object "), "{text}");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Commit(&merge),
        &Good::commit(&key.public, &merge),
    );
}

#[test]
fn tag_message_quoting_an_armor_block_verifies() {
    // git takes the signature to start at the LAST line that begins an
    // armor block; release notes quoting such a block stay signed text.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let head = repo.head();
    let payload = format!(
        "object {head}\ntype commit\ntag {TAG}\ntagger {} {FIXED_DATE_RAW}\n\n\
         release notes quoting an old signature:\n{}{}\n{}\n",
        support::IDENT,
        sshsig::ARMOR_BEGIN,
        "\nAAAA",
        sshsig::ARMOR_END,
    );
    let sig = sb.ssh_keygen_sign(&key, "git", payload.as_bytes());
    let oid = repo.mktag(TAG, &format!("{payload}{sig}"));
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good::tag(&key.public, &head, &oid),
    );
}

#[test]
fn sk_ssh_ed25519_signatures_verify() {
    let sb = Sandbox::new();
    good_with_crafted_signing(&sb, &Signer::ed25519_sk(), &SignOptions::default());
}

#[test]
fn sk_ecdsa_p256_signatures_verify() {
    let sb = Sandbox::new();
    good_with_crafted_signing(&sb, &Signer::ecdsa_sk(), &SignOptions::default());
}

// ---------------------------------------------------------------------------
// allowed_signers matching.
// ---------------------------------------------------------------------------

#[test]
fn principal_is_the_matching_lines_field_as_written() {
    let sb = Sandbox::new();
    let bob = sb.keygen(KeyKind::Ed25519, "bob");
    let alice = sb.keygen(KeyKind::Ecdsa256, "alice");
    let repo = sb.repo("repo");
    let commit = repo.head();
    let tag_oid = repo.signed_tag(&alice, TAG, None);
    let principals = "alice@example.com,release@example.com";
    let allowed = sb.write_lines(
        "allowed_signers",
        &[
            "# release signers".to_owned(),
            String::new(),
            bob.public.allowed("bob@example.com"),
            alice.public.allowed_with(
                principals,
                r#"namespaces="file,git",valid-after="20200101",valid-before="21000101Z""#,
            ),
        ],
    );
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good {
            principal: principals,
            ..Good::tag(&alice.public, &commit, &tag_oid)
        },
    );
}

#[test]
fn the_first_line_holding_the_key_decides_as_in_git() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let tag_oid = repo.signed_tag(&key, TAG, None);
    let head = repo.head();
    let good = Good::tag(&key.public, &head, &tag_oid);

    // An earlier line for the same key that expired before the tag:
    // ssh-keygen -Y find-principals passes over it, and the next one admits.
    let allowed = sb.write_lines(
        "allowed_signers_expired_first",
        &[
            key.public
                .allowed_with("old@example.com", r#"valid-before="20200101""#),
            key.public.allowed(ALICE),
        ],
    );
    assert_good(&repo, &allowed, None, Target::Tag(TAG), &good);

    // An earlier line for the same key that is limited to another
    // namespace: git's find-principals step takes that line's principal,
    // whatever its namespaces, and verifies for it alone, so git refuses;
    // so does driftless, naming the line that decided. (`ssh-keygen -Y
    // verify -I alice@example.com`, which git never runs here, accepts.)
    let allowed = sb.write_lines(
        "allowed_signers_other_namespace_first",
        &[
            key.public
                .allowed_with("files@example.com", r#"namespaces="file""#),
            key.public.allowed(ALICE),
        ],
    );
    let text = repo.cat_object("tag", &tag_oid);
    let (payload, sig) = text
        .split_once(sshsig::ARMOR_BEGIN)
        .expect("signed tag has an armored signature");
    let sig = format!("{}{sig}", sshsig::ARMOR_BEGIN);
    let check = sb.ssh_keygen_verify(&allowed, ALICE, &sig, payload.as_bytes());
    assert!(
        check.success(),
        "ssh-keygen -Y verify -I alice\n{}",
        check.describe()
    );
    let reason = assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
    let first = format!("{}:1", allowed.display());
    assert!(
        reason.contains(&first) && reason.contains("files@example.com"),
        "the reason names {first} and its principal: {reason}"
    );
}

#[test]
fn allowed_signers_syntax_variants_are_accepted() {
    // Spellings ssh-keygen accepts: a trailing key comment, tabs, leading
    // blanks, upper-case option names, CRLF line ends.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let tag_oid = repo.signed_tag(&key, TAG, None);
    let line = &key.public.line;
    let variants = [
        format!("{ALICE} {line} alice's laptop key"),
        format!("{ALICE}\t{}", line.replacen(' ', "\t", 1)),
        format!("   {ALICE}  {line}"),
        format!(r#"{ALICE} NAMESPACES="git",Valid-After="20200101" {line}"#),
        format!("# comment\r\n{ALICE} {line}\r"),
    ];
    for (i, variant) in variants.iter().enumerate() {
        let allowed = sb.write_lines(
            &format!("allowed_signers_{i}"),
            std::slice::from_ref(variant),
        );
        assert_good(
            &repo,
            &allowed,
            None,
            Target::Tag(TAG),
            &Good::tag(&key.public, &repo.head(), &tag_oid),
        );
    }
}

#[test]
fn validity_is_checked_at_the_signers_instant_whatever_the_offset() {
    // The tagger line's time is seconds since the epoch plus a display
    // offset; the window must be compared with the instant, not the wall
    // clock. The window starts a day ago, so the current time is inside it.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let valid_after = Timestamp::from_second(days_from_now(-1).as_second()).expect("whole seconds");
    let options = format!(r#"valid-after="{}""#, signers_time(valid_after));
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, &options)],
    );
    let hour = SignedDuration::from_hours(1);

    // One hour before the window, shown at +05:00 (wall clock inside it).
    let early = valid_after.checked_sub(hour).expect("time in range");
    repo.signed_tag_at(
        &key,
        "early",
        None,
        &format!("@{} +0500", early.as_second()),
    );
    assert_refused_by_both(&repo, &allowed, None, Target::Tag("early"));

    // One hour inside the window, shown at -05:00 (wall clock before it).
    let late = valid_after.checked_add(hour).expect("time in range");
    let oid = repo.signed_tag_at(&key, TAG, None, &format!("@{} -0500", late.as_second()));
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good {
            signed_at: &late.to_string(),
            ..Good::tag(&key.public, &repo.head(), &oid)
        },
    );
}

#[test]
fn a_branch_is_not_a_tag() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    // A branch named like a release, at a signed commit: not a tag.
    repo.signed_commit(&key, "signed commit");
    repo.git(&["branch", TAG]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));

    // Once a signed tag of that name exists, the tag is what is verified.
    repo.git(&["commit", "-q", "--allow-empty", "-m", "unsigned"]);
    let commit = repo.head();
    let oid = repo.signed_tag(&key, TAG, Some(&commit));
    repo.git(&["branch", "-f", TAG, "HEAD~1"]);
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good::tag(&key.public, &commit, &oid),
    );
}

#[test]
fn key_not_in_allowed_signers_is_refused_and_named() {
    let sb = Sandbox::new();
    let alice = sb.keygen(KeyKind::Ed25519, "alice");
    let stranger = sb.keygen(KeyKind::Ed25519, "stranger");
    let repo = sb.repo("repo");
    repo.signed_tag(&stranger, TAG, None);
    let signed = repo.signed_commit(&stranger, "by a stranger");
    let allowed = sb.write_lines("allowed_signers", &[alice.public.allowed(ALICE)]);
    for target in [Target::Tag(TAG), Target::Commit(&signed)] {
        let reason = assert_refused_by_both(&repo, &allowed, None, target);
        assert!(
            reason.contains(&stranger.public.fingerprint),
            "the reason names the stranger's fingerprint {}: {reason}",
            stranger.public.fingerprint
        );
    }
}

#[test]
fn tampered_tag_message_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let oid = repo.signed_tag(&key, TAG, None);
    let text = repo.cat_object("tag", &oid);
    let tampered = text.replacen("release v1.2.0", "release v6.6.6", 1);
    assert_ne!(text, tampered);
    repo.mktag(TAG, &tampered);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn tampered_commit_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let oid = repo.signed_commit(&key, "signed commit");
    let text = repo.cat_object("commit", &oid);
    let tampered = text.replacen("signed commit", "signed commit, then edited", 1);
    assert_ne!(text, tampered);
    let forged = repo.hash_object("commit", tampered.as_bytes(), false);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Commit(&forged));
}

#[test]
fn unsigned_annotated_tag_and_unsigned_commit_are_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.git(&["tag", "-a", "-m", "not signed", TAG]);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
    assert_refused_by_both(&repo, &allowed, None, Target::Commit("HEAD"));
}

#[test]
fn lightweight_tag_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    // Even a lightweight tag of a signed commit: the tag itself is unsigned.
    repo.signed_commit(&key, "signed commit");
    repo.git(&["tag", TAG]);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn signature_in_namespace_file_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let payload = repo.tag_payload(TAG, &repo.head(), "commit", FIXED_DATE_RAW);
    let sig = sb.ssh_keygen_sign(&key, "file", payload.as_bytes());
    repo.mktag(TAG, &format!("{payload}{sig}"));
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let reason = assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
    assert!(
        reason.contains("file"),
        "the reason names the namespace: {reason}"
    );
}

#[test]
fn namespace_that_only_differs_in_case_or_suffix_is_refused() {
    // The namespace must be exactly `git`.
    let sb = Sandbox::new();
    let signer = Signer::ed25519();
    let key = sb.describe_key(&signer.public_line());
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.allowed(ALICE)]);
    for (i, namespace) in ["Git", "git ", "gitx", ""].into_iter().enumerate() {
        let name = format!("ns{i}");
        let opts = SignOptions {
            namespace: namespace.to_owned(),
            ..SignOptions::default()
        };
        repo.crafted_tag(&signer, &name, &opts);
        assert_refused_by_both(&repo, &allowed, None, Target::Tag(&name));
    }
}

#[test]
fn allowed_signers_namespaces_without_git_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, r#"namespaces="file""#)],
    );
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn valid_before_in_the_past_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    // The tag is dated FIXED_DATE (2026-01-02), after this.
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, r#"valid-before="20251231""#)],
    );
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn valid_after_in_the_future_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let signed_at = days_from_now(-1);
    repo.signed_tag_at(&key, TAG, None, &git_date(signed_at));
    let options = format!(r#"valid-after="{}""#, signers_time(days_from_now(30)));
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, &options)],
    );
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn validity_window_around_both_times_is_accepted() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let signed_at = days_from_now(-3);
    let tag_oid = repo.signed_tag_at(&key, TAG, None, &git_date(signed_at));
    let options = format!(
        r#"valid-after="{}",valid-before="{}""#,
        signers_time(days_from_now(-10)),
        signers_time(days_from_now(10))
    );
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, &options)],
    );
    let expected_time = Timestamp::from_second(signed_at.as_second())
        .expect("whole seconds")
        .to_string();
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag(TAG),
        &Good {
            signed_at: &expected_time,
            ..Good::tag(&key.public, &repo.head(), &tag_oid)
        },
    );
}

#[test]
fn cert_authority_line_does_not_admit_the_ca_key_as_a_signer() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, "cert-authority")],
    );
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn revoked_key_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ecdsa256, "alice");
    let other = sb.keygen(KeyKind::Ed25519, "other");
    let repo = sb.repo("repo");
    let tag_oid = repo.signed_tag(&key, TAG, None);
    let signed = repo.signed_commit(&key, "signed commit");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);

    // A revoked-keys file that lists another key only: still good.
    let unrelated = sb.write_lines(
        "revoked-other",
        &["# revoked keys".to_owned(), other.public.line.clone()],
    );
    assert_good(
        &repo,
        &allowed,
        Some(&unrelated),
        Target::Tag(TAG),
        &Good::tag(&key.public, &repo.rev_parse("HEAD~1"), &tag_oid),
    );

    // Comments, blank lines and key comments, authorized_keys style.
    let revoked = sb.write_lines(
        "revoked",
        &[
            "# keys revoked after the 2026 incident".to_owned(),
            String::new(),
            format!("{} other key", other.public.line),
            format!("{} alice laptop", key.public.line),
            String::new(),
        ],
    );
    for target in [Target::Tag(TAG), Target::Commit(&signed)] {
        let reason = assert_refused_by_both(&repo, &allowed, Some(&revoked), target);
        assert!(
            reason.contains(&key.public.fingerprint),
            "the reason names the revoked key: {reason}"
        );
    }
}

#[test]
fn pgp_signature_block_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let payload = repo.tag_payload(TAG, &repo.head(), "commit", FIXED_DATE_RAW);
    let pgp = "-----BEGIN PGP SIGNATURE-----\n\n\
               iHUEABYKAB0WIQQtZ3H0bm90IGEgcmVhbCBzaWduYXR1cmUAAAoJEG5vdCByZWFs\n\
               =abcd\n\
               -----END PGP SIGNATURE-----\n";
    repo.mktag(TAG, &format!("{payload}{pgp}"));
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn unknown_hash_algorithm_is_refused() {
    let sb = Sandbox::new();
    let signer = Signer::ed25519();
    let key = sb.describe_key(&signer.public_line());
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.allowed(ALICE)]);
    for (i, hash_alg) in ["sha384", "sha1", "SHA512"].into_iter().enumerate() {
        let name = format!("h{i}");
        let opts = SignOptions {
            hash_alg: hash_alg.to_owned(),
            ..SignOptions::default()
        };
        repo.crafted_tag(&signer, &name, &opts);
        let reason = assert_refused_by_both(&repo, &allowed, None, Target::Tag(&name));
        assert!(
            reason.contains(hash_alg),
            "the reason names the hash algorithm: {reason}"
        );
    }
}

#[test]
fn trailing_bytes_in_the_sshsig_blob_are_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);

    // A real ssh-keygen signature with bytes appended to its blob.
    let payload = repo.tag_payload(TAG, &repo.head(), "commit", FIXED_DATE_RAW);
    let sig = sb.ssh_keygen_sign(&key, "git", payload.as_bytes());
    let mut blob = sshsig::dearmor(&sig);
    blob.extend_from_slice(b"\0\0\0\x04junk");
    repo.mktag(TAG, &format!("{payload}{}", sshsig::armor(&blob)));
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));

    // The same on a commit, signed in process.
    let signer = Signer::ed25519();
    let crafted_key = sb.describe_key(&signer.public_line());
    let allowed = sb.write_lines("allowed_signers_2", &[crafted_key.allowed(ALICE)]);
    let opts = SignOptions {
        trailing: vec![0, 0, 0, 0],
        ..SignOptions::default()
    };
    let signed = repo.crafted_commit(&signer, &opts);
    assert_refused_by_both(&repo, &allowed, None, Target::Commit(&signed));
}

// ---------------------------------------------------------------------------
// Where driftless is deliberately stricter than git.
// ---------------------------------------------------------------------------

#[test]
fn text_after_the_armor_footer_is_refused() {
    // Stricter than git: ssh-keygen ignores whatever follows the footer, so
    // bytes there are unauthenticated yet shown as part of the tag message
    // (or commit header). driftless allows nothing after the footer but its
    // newline.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let head = repo.head();
    for (name, extra) in [
        ("text", "release notes: approved by nobody\n"),
        ("blank", "\n"),
    ] {
        let payload = repo.tag_payload(name, &head, "commit", FIXED_DATE_RAW);
        let sig = sb.ssh_keygen_sign(&key, "git", payload.as_bytes());
        assert!(sig.ends_with(&format!("{}\n", sshsig::ARMOR_END)));
        let oid = repo.mktag(name, &format!("{payload}{sig}{extra}"));
        assert!(
            repo.cat_object("tag", &oid)
                .ends_with(&format!("{}\n{extra}", sshsig::ARMOR_END)),
            "git kept the text after the footer"
        );
        assert_stricter_than_git(&repo, &allowed, None, Target::Tag(name));
    }

    // The same inside a commit's gpgsig header.
    let payload = repo.commit_payload("text after the footer");
    let sig = sb.ssh_keygen_sign(&key, "git", payload.as_bytes());
    let signed = repo.commit_with_signature(&payload, &format!("{sig}approved by nobody\n"));
    assert_stricter_than_git(&repo, &allowed, None, Target::Commit(&signed));
}

#[test]
fn rsa_sha1_signature_is_refused() {
    // Stricter than git in principle: driftless refuses `ssh-rsa` (PKCS#1
    // v1.5 with SHA-1) signatures outright, SHA-1 not being collision
    // resistant. The ssh-keygen behind git here (OpenSSH 9.2) refuses them
    // too, so git is the oracle; the signer checks with ring that the
    // signature itself is valid, so the refusal is about the algorithm.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Rsa(2048), "alice");
    let signer = Signer::rsa_from_ssh_keygen(&key.private, &key.public.line);
    let repo = sb.repo("repo");
    let opts = SignOptions {
        sig_alg: SigAlg::RsaSha1,
        ..SignOptions::default()
    };
    repo.crafted_tag(&signer, TAG, &opts);
    let signed = repo.crafted_commit(&signer, &opts);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_refused_by_both(&repo, &allowed, None, Target::Tag(TAG));
    assert_refused_by_both(&repo, &allowed, None, Target::Commit(&signed));
}

#[test]
fn rsa_1024_key_is_refused() {
    // Stricter than git: ssh-keygen accepts 1024-bit RSA keys; driftless
    // requires a modulus of at least 2048 bits.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Rsa(1024), "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let reason = assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
    assert!(
        reason.contains("1024"),
        "the reason gives the key size: {reason}"
    );
}

#[test]
fn tag_header_must_match_the_requested_name() {
    // Stricter than git: git verify-tag checks only the signature, so a
    // signed v1 object under refs/tags/v2 passes as "v2". driftless requires
    // the object's own `tag` header to be the name asked for.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let v1 = repo.signed_tag(&key, "v1", None);
    repo.git(&["update-ref", "refs/tags/v2", &v1]);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let reason = assert_stricter_than_git(&repo, &allowed, None, Target::Tag("v2"));
    assert!(
        reason.contains("v1"),
        "the reason gives the header's name: {reason}"
    );
    // The same object under its own name is good.
    assert_good(
        &repo,
        &allowed,
        None,
        Target::Tag("v1"),
        &Good::tag(&key.public, &repo.head(), &v1),
    );
}

#[test]
fn signed_tag_of_a_tree_is_refused() {
    // Stricter than git: the tag must point at a commit (type commit).
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let tree = repo.rev_parse("HEAD^{tree}");
    repo.signed_tag(&key, TAG, Some(&tree));
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn signed_tag_of_a_signed_tag_is_refused() {
    // Stricter than git: a tag of a tag (type tag) is refused even though
    // both signatures are good; only tags of commits are releases.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, "inner", None);
    repo.signed_tag(&key, TAG, Some("refs/tags/inner"));
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_oracle(&repo, &allowed, None, Target::Tag("inner"), true);
    assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn signed_tag_of_a_missing_commit_is_refused() {
    // Stricter than git: git verify-tag checks the tag's signature only;
    // driftless requires the tagged commit to exist.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let payload = repo.tag_payload(TAG, missing, "commit", FIXED_DATE_RAW);
    let sig = sb.ssh_keygen_sign(&key, "git", payload.as_bytes());
    let oid = repo.hash_object("tag", format!("{payload}{sig}").as_bytes(), true);
    repo.git(&["update-ref", &format!("refs/tags/{TAG}"), &oid]);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let reason = assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
    assert!(
        reason.contains(missing),
        "the reason names the commit: {reason}"
    );
}

#[test]
fn key_expired_since_signing_is_refused() {
    // Stricter than git: git checks valid-before only at the signer's
    // claimed time (the tagger date, which the signer chooses). driftless
    // also checks it at the current time, so an expired key cannot sign
    // back-dated tags.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let signed_at = git_date(days_from_now(-10));
    repo.signed_tag_at(&key, TAG, None, &signed_at);
    let signed = repo.signed_commit_at(&key, "back-dated", &signed_at);
    let options = format!(r#"valid-before="{}""#, signers_time(days_from_now(-5)));
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, &options)],
    );
    assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
    assert_stricter_than_git(&repo, &allowed, None, Target::Commit(&signed));
}

#[test]
fn key_not_yet_valid_now_is_refused_even_if_signer_time_is_in_window() {
    // Stricter than git: git checks valid-after only at the signer's
    // claimed time; a tag dated in the future passes git. driftless also
    // checks the current time.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag_at(&key, TAG, None, &git_date(days_from_now(400)));
    let options = format!(r#"valid-after="{}""#, signers_time(days_from_now(365)));
    let allowed = sb.write_lines(
        "allowed_signers",
        &[key.public.allowed_with(ALICE, &options)],
    );
    assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
}

#[test]
fn sk_signature_without_user_presence_is_refused() {
    // Stricter than git: ssh-keygen -Y verify accepts FIDO signatures whose
    // user-presence flag is clear (no touch); driftless requires it.
    // 0x04 is "user verified" without "user present".
    for (signer, flags) in [(Signer::ed25519_sk(), 0x00), (Signer::ecdsa_sk(), 0x04)] {
        let sb = Sandbox::new();
        let key = sb.describe_key(&signer.public_line());
        let repo = sb.repo("repo");
        let opts = SignOptions {
            sk_flags: flags,
            ..SignOptions::default()
        };
        repo.crafted_tag(&signer, TAG, &opts);
        let signed = repo.crafted_commit(&signer, &opts);
        let allowed = sb.write_lines("allowed_signers", &[key.allowed(ALICE)]);
        assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
        assert_stricter_than_git(&repo, &allowed, None, Target::Commit(&signed));
    }
}

#[test]
fn certificate_signatures_are_refused() {
    // Stricter than git: a signature by a key certified by a cert-authority
    // line's CA passes git; driftless does not support certificates yet and
    // refuses them.
    let sb = Sandbox::new();
    let ca = sb.keygen(KeyKind::Ed25519, "ca");
    let user = Signer::ed25519();
    let cert_line = sb.certify(&ca, &user.public_line(), ALICE);
    let signer = user.with_certificate(support::key_blob(&cert_line));
    let repo = sb.repo("repo");
    repo.crafted_tag(&signer, TAG, &SignOptions::default());
    let allowed = sb.write_lines(
        "allowed_signers",
        &[ca.public.allowed_with(ALICE, "cert-authority")],
    );
    let reason = assert_stricter_than_git(&repo, &allowed, None, Target::Tag(TAG));
    assert!(
        reason.to_lowercase().contains("cert"),
        "the reason says certificates: {reason}"
    );
}

// ---------------------------------------------------------------------------
// Bad input and usage.
// ---------------------------------------------------------------------------

#[test]
fn unparseable_allowed_signers_line_is_a_config_error_naming_file_and_line() {
    // Stricter than git: ssh-keygen skips lines it cannot parse (and so
    // accepts here, since a good line follows); driftless treats any such
    // line as a broken file.
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    let bad_lines = [
        format!("{ALICE} ssh-ed25519 !!!not-base64!!!"),
        format!("{ALICE} ssh-ed25519"),
        ALICE.to_owned(),
        format!(r#"{ALICE} namespaces="git {}"#, key.public.line),
        format!("{ALICE} ssh-frobnicate AAAAC3NzaC1lZDI1NTE5"),
        // An option the installed ssh-keygen does not know ("bad options:
        // unknown key option").
        key.public.allowed_with(ALICE, "verify-required"),
    ];
    for (i, bad) in bad_lines.iter().enumerate() {
        let allowed = sb.write_lines(
            &format!("allowed_signers_{i}"),
            &[
                "# comment".to_owned(),
                String::new(),
                bad.clone(),
                key.public.allowed(ALICE),
            ],
        );
        assert_oracle(&repo, &allowed, None, Target::Tag(TAG), true);
        for json in [false, true] {
            let out = repo.driftless(&allowed, None, json, Target::Tag(TAG));
            let ctx = format!("bad line {bad:?}, --json {json}\n{}", out.describe());
            assert_eq!(out.code, Some(EXIT_CONFIG), "{ctx}");
            let all = format!("{}{}", out.stdout, out.stderr);
            let location = format!("{}:3", allowed.display());
            assert!(all.contains(&location), "names {location}\n{ctx}");
        }
    }
}

#[test]
fn unreadable_inputs_are_config_errors() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    repo.signed_tag(&key, TAG, None);
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);

    let missing = sb.path("no-such-allowed-signers");
    let out = repo.driftless(&missing, None, false, Target::Tag(TAG));
    assert_eq!(
        out.code,
        Some(EXIT_CONFIG),
        "missing allowed_signers\n{}",
        out.describe()
    );

    let missing_revoked = sb.path("no-such-revoked-keys");
    let out = repo.driftless(&allowed, Some(&missing_revoked), false, Target::Tag(TAG));
    assert_eq!(
        out.code,
        Some(EXIT_CONFIG),
        "missing revoked-keys\n{}",
        out.describe()
    );

    let bad_revoked = sb.write_lines(
        "revoked-bad",
        &[
            "# revoked".to_owned(),
            "ssh-ed25519 %%%garbage%%%".to_owned(),
        ],
    );
    let out = repo.driftless(&allowed, Some(&bad_revoked), false, Target::Tag(TAG));
    assert_eq!(
        out.code,
        Some(EXIT_CONFIG),
        "unparseable revoked-keys\n{}",
        out.describe()
    );

    let out = sb.driftless([
        "verify".as_ref(),
        "--repo".as_ref(),
        sb.path("not-a-repo").as_os_str(),
        "--allowed-signers".as_ref(),
        allowed.as_os_str(),
        TAG.as_ref(),
    ]);
    assert_eq!(
        out.code,
        Some(EXIT_CONFIG),
        "repository cannot be opened\n{}",
        out.describe()
    );
}

#[test]
fn missing_tag_is_refused() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    assert_oracle(&repo, &allowed, None, Target::Tag(TAG), false);
    let out = repo.driftless(&allowed, None, false, Target::Tag(TAG));
    assert_ne!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr.starts_with(&format!("error: tag {TAG}: ")),
        "{}",
        out.describe()
    );
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    let key = sb.keygen(KeyKind::Ed25519, "alice");
    let repo = sb.repo("repo");
    let allowed = sb.write_lines("allowed_signers", &[key.public.allowed(ALICE)]);
    let repo_dir = repo.dir.as_os_str();
    let cases: [Vec<&std::ffi::OsStr>; 3] = [
        // No --allowed-signers.
        vec!["verify".as_ref(), "--repo".as_ref(), repo_dir, TAG.as_ref()],
        // Neither a tag nor --commit.
        vec![
            "verify".as_ref(),
            "--repo".as_ref(),
            repo_dir,
            "--allowed-signers".as_ref(),
            allowed.as_os_str(),
        ],
        // Unknown option.
        vec![
            "verify".as_ref(),
            "--repo".as_ref(),
            repo_dir,
            "--allowed-signers".as_ref(),
            allowed.as_os_str(),
            "--no-such-option".as_ref(),
            TAG.as_ref(),
        ],
    ];
    for args in cases {
        let out = sb.driftless(&args);
        assert_eq!(out.code, Some(EXIT_USAGE), "{args:?}\n{}", out.describe());
    }
}
