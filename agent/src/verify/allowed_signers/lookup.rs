//! Which allowed_signers line vouches for a key, by git's own rule, and why
//! none does. Apart from the parser because it is the trust decision itself:
//! it must reach `git verify-tag`'s verdict (or a stricter one) on every
//! file, including files that list one key on several lines.
//!
//! git (`verify_ssh_signed_buffer` in `gpg-interface.c`) decides in two
//! steps, both with its verify time (the signer's claimed time, or the
//! current time when that is 0):
//!
//! 1. `ssh-keygen -Y find-principals` takes the first line that holds the key
//!    itself (not as `cert-authority`) and whose validity window contains the
//!    verify time, whatever its namespaces, and prints that line's principals
//!    up to the first empty entry (`sshsig_find_principals`).
//! 2. For each of those principals in turn, `ssh-keygen -Y verify -I
//!    PRINCIPAL -n git` accepts through the first line whose principals
//!    pattern list matches the principal (OpenSSH's `match_pattern_list`), that
//!    holds the key, allows the namespace and is valid at the verify time
//!    (`sshsig_check_allowed_keys`). Other lines never count.
//!
//! driftless follows both steps exactly, and then also requires the line that
//! admits the key to be valid at its other check times (the current time).

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;

use super::pattern::match_pattern_list;
use super::{CheckTime, Signer};
use crate::verify::sshkey::PublicKey;

/// A line of a trust file, shown as `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRef {
    /// The file as it was given.
    pub file: Arc<str>,
    /// The 1-based line number.
    pub line: usize,
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Which side of a line's validity window a time is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    /// Before `valid-after`.
    NotYetValid,
    /// After `valid-before`.
    Expired,
}

impl fmt::Display for Outside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outside::NotYetValid => "not yet valid",
            Outside::Expired => "expired",
        })
    }
}

/// How git's rule led to the line a refusal names, said when several lines
/// hold the key (with one, there is nothing to explain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The named line is the first line holding the key that is valid at
    /// git's verify time, so its principals are the signer's.
    FirstLine {
        /// How many lines hold the key (not counting `cert-authority` ones).
        holders: usize,
        /// What git's verify time is (`the signer's time`).
        when: &'static str,
        /// The line's principals field.
        principals: String,
    },
    /// `first` is that first line; the named line is a later one for the
    /// same principals.
    ForPrincipals {
        /// How many lines hold the key.
        holders: usize,
        /// What git's verify time is (`the signer's time`).
        when: &'static str,
        /// The first line holding the key, which named the principals.
        first: LineRef,
        /// Its principals field.
        principals: String,
    },
    /// No line holding the key is valid at git's verify time; the first of
    /// them is named.
    NoneValid {
        /// How many lines hold the key.
        holders: usize,
    },
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::FirstLine {
                holders,
                when,
                principals,
            } => write!(
                f,
                "; of the {holders} lines holding this key it is the first valid at {when}, so \
                 (as with git verify-tag) the signer is {principals:?} and lines for other \
                 principals do not count"
            ),
            Choice::ForPrincipals {
                holders,
                when,
                first,
                principals,
            } => write!(
                f,
                "; of the {holders} lines holding this key, {first} is the first valid at \
                 {when}, so (as with git verify-tag) the signer is {principals:?} and lines \
                 for other principals do not count"
            ),
            Choice::NoneValid { holders } => {
                write!(
                    f,
                    "; none of the {holders} lines holding this key is valid then"
                )
            }
        }
    }
}

/// `"; …"` for a choice, or nothing.
fn note(choice: &Option<Box<Choice>>) -> String {
    choice.as_ref().map(|c| c.to_string()).unwrap_or_default()
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
        "signed by {fingerprint}, which {line} trusts only as a cert-authority; driftless \
         does not accept certificate signers, so list the signing key itself on a line \
         without cert-authority"
    )]
    OnlyCertAuthority {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The first line that lists it.
        line: LineRef,
    },
    /// The line that decides may not sign in this namespace.
    #[error(
        "key {fingerprint} ({line}) may not sign for namespace {namespace:?}{}",
        note(choice)
    )]
    Namespace {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The line that refused.
        line: LineRef,
        /// The namespace that was asked for.
        namespace: String,
        /// How git's rule led to that line, when several hold the key.
        choice: Option<Box<Choice>>,
    },
    /// The line that decides was not valid at one of the times checked.
    #[error("key {fingerprint} ({line}) is {state} at {what} {at}{}", note(choice))]
    OutsideValidity {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The line that refused.
        line: LineRef,
        /// Which side of the window the time is on.
        state: Outside,
        /// `the signer's time` or `the current time`.
        what: &'static str,
        /// The time checked.
        at: Timestamp,
        /// How git's rule led to that line, when several hold the key.
        choice: Option<Box<Choice>>,
    },
    /// The first line holding the key names principals that no line
    /// holding the key matches (negated or over-long patterns).
    #[error(
        "key {fingerprint}: {first} is the first line holding it and takes the signer to be \
         {principals:?}, but no line holding the key matches that as a principal"
    )]
    NoLineForPrincipals {
        /// The signing key's fingerprint.
        fingerprint: String,
        /// The first line holding the key.
        first: LineRef,
        /// Its principals field.
        principals: String,
    },
}

/// A refusal found while trying lines, and whether git would have accepted
/// through that line (it was refused only at driftless's own check times).
struct Refusal {
    error: NotTrusted,
    git_accepts: bool,
}

/// Finds the line that lets `key` sign in `namespace`, by git's rule (see
/// the module documentation). `times[0]` is git's verify time; the admitting
/// line must also be valid at every other one. `file` names the file in
/// errors.
pub(super) fn authorize<'s>(
    signers: &'s [Signer],
    file: &Arc<str>,
    key: &PublicKey,
    namespace: &str,
    times: &[CheckTime],
) -> Result<&'s Signer, NotTrusted> {
    let fingerprint = || key.fingerprint();
    let at = |s: &Signer| LineRef {
        file: Arc::clone(file),
        line: s.line,
    };
    let holders: Vec<&Signer> = signers
        .iter()
        .filter(|s| s.key == *key && !s.cert_authority)
        .collect();
    let several = holders.len() > 1;
    let git_time = times.first();

    // Step 1: ssh-keygen -Y find-principals.
    let Some(first) = holders
        .iter()
        .copied()
        .find(|s| git_time.is_none_or(|t| s.validity_at(t.at).is_none()))
    else {
        return Err(match (holders.first(), git_time) {
            (Some(s), Some(t)) => NotTrusted::OutsideValidity {
                fingerprint: fingerprint(),
                line: at(s),
                state: s.validity_at(t.at).unwrap_or(Outside::Expired),
                what: t.what,
                at: t.at,
                choice: several.then(|| {
                    Box::new(Choice::NoneValid {
                        holders: holders.len(),
                    })
                }),
            },
            _ => match signers.iter().find(|s| s.key == *key) {
                Some(ca) => NotTrusted::OnlyCertAuthority {
                    fingerprint: fingerprint(),
                    line: at(ca),
                },
                None => NotTrusted::UnknownKey {
                    fingerprint: fingerprint(),
                },
            },
        });
    };

    // Step 2: ssh-keygen -Y verify -I PRINCIPAL, principal by principal.
    let when = git_time.map_or("any time", |t| t.what);
    let choice_for = |s: &Signer| {
        several.then(|| {
            Box::new(if std::ptr::eq(s, first) {
                Choice::FirstLine {
                    holders: holders.len(),
                    when,
                    principals: first.principals.clone(),
                }
            } else {
                Choice::ForPrincipals {
                    holders: holders.len(),
                    when,
                    first: at(first),
                    principals: first.principals.clone(),
                }
            })
        })
    };
    let (mut git_accepts, mut own, mut other) = (None, None, None);
    let principals = first.principals.split(',').take_while(|p| !p.is_empty());
    for principal in principals {
        for signer in holders
            .iter()
            .copied()
            .filter(|s| match_pattern_list(principal, &s.principals))
        {
            let Some(refusal) = refusal(signer, namespace, times, || {
                (fingerprint(), at(signer), choice_for(signer))
            }) else {
                return Ok(signer);
            };
            let slot = if refusal.git_accepts {
                &mut git_accepts
            } else if std::ptr::eq(signer, first) {
                &mut own
            } else {
                &mut other
            };
            slot.get_or_insert(refusal.error);
        }
    }
    // Where git would have accepted, driftless's own rule is the reason;
    // otherwise the first line's refusal, which decided who the signer is.
    Err(git_accepts
        .or(own)
        .or(other)
        .unwrap_or_else(|| NotTrusted::NoLineForPrincipals {
            fingerprint: fingerprint(),
            first: at(first),
            principals: first.principals.clone(),
        }))
}

/// Why `signer`'s line does not admit the key, or `None` when it does:
/// its namespaces, then its window at git's verify time, then at the others.
fn refusal(
    signer: &Signer,
    namespace: &str,
    times: &[CheckTime],
    context: impl FnOnce() -> (String, LineRef, Option<Box<Choice>>),
) -> Option<Refusal> {
    if signer
        .namespaces
        .as_deref()
        .is_some_and(|ns| !match_pattern_list(namespace, ns))
    {
        let (fingerprint, line, choice) = context();
        return Some(Refusal {
            error: NotTrusted::Namespace {
                fingerprint,
                line,
                namespace: namespace.to_owned(),
                choice,
            },
            git_accepts: false,
        });
    }
    let (index, time, state) = times
        .iter()
        .enumerate()
        .find_map(|(i, t)| signer.validity_at(t.at).map(|state| (i, t, state)))?;
    let (fingerprint, line, choice) = context();
    Some(Refusal {
        error: NotTrusted::OutsideValidity {
            fingerprint,
            line,
            state,
            what: time.what,
            at: time.at,
            choice,
        },
        git_accepts: index > 0,
    })
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::verify::allowed_signers::AllowedSigners;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICSsaCwSQYr1DzU1CVErJUE7doQ46Myrx2qynjfLmBao";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOi9bWQZI21M+0gR0LzzY79fSlBRsGsskRgd45nXTVC";

    /// The signer's time and the current time of every case.
    const SIGNED: &str = "2026-01-02T00:00:00Z";
    const NOW: &str = "2026-03-01T00:00:00Z";

    fn times(signed: &str) -> [CheckTime; 2] {
        [
            CheckTime {
                at: signed.parse().expect("ts"),
                what: "the signer's time",
            },
            CheckTime {
                at: NOW.parse().expect("ts"),
                what: "the current time",
            },
        ]
    }

    /// Authorizes KEY in namespace `git` against `lines`, signed at `signed`.
    fn decide(lines: &[String], signed: &str) -> Result<usize, NotTrusted> {
        let text = lines.join("\n");
        let signers = AllowedSigners::parse(&text, "as", &TimeZone::UTC).expect("parses");
        let key = PublicKey::from_openssh("ssh-ed25519", &KEY[12..]).expect("key");
        signers
            .authorize(&key, "git", &times(signed))
            .map(|s| s.line)
    }

    fn line(principals: &str, options: &str) -> String {
        format!("{principals} {options} {KEY}").replace("  ", " ")
    }

    #[test]
    fn the_first_line_holding_the_key_names_the_signer() {
        // Accepted: (lines, the line that admits the key).
        let accepted = [
            // A later line for the same principal admits it.
            (
                vec![line("alice", r#"namespaces="file""#), line("alice", "")],
                2,
            ),
            // A later line whose pattern matches the first line's principal.
            (
                vec![
                    line("files@example.com", r#"namespaces="file""#),
                    line("*@example.com", ""),
                ],
                2,
            ),
            // Every principal of the first line is tried in turn.
            (vec![line("a,b", r#"namespaces="file""#), line("b", "")], 2),
            // Lines not valid at the signer's time are passed over.
            (
                vec![
                    line("old", r#"namespaces="file",valid-before="20251201Z""#),
                    line("alice", ""),
                ],
                2,
            ),
            // cert-authority lines never hold a plain key.
            (
                vec![
                    line("files", "cert-authority"),
                    format!("other {OTHER}"),
                    line("alice", ""),
                ],
                3,
            ),
            // Valid at the signer's time but not now: git accepts through
            // the first line, driftless through the next one for alice.
            (
                vec![
                    line("alice", r#"valid-before="20260201Z""#),
                    line("alice", ""),
                ],
                2,
            ),
        ];
        for (lines, expected) in accepted {
            assert_eq!(
                decide(&lines, SIGNED).map_err(|e| e.to_string()),
                Ok(expected),
                "{lines:?}"
            );
        }

        // Refused: (lines, the line named, text the error must hold).
        let refused = [
            (
                vec![line("files", r#"namespaces="file""#), line("alice", "")],
                1,
                "the first valid at the signer's time, so (as with git verify-tag) the signer \
                 is \"files\"",
            ),
            // Valid at the signer's time, expired now: it still decides.
            (
                vec![
                    line("files", r#"namespaces="file",valid-before="20260201Z""#),
                    line("alice", ""),
                ],
                1,
                "may not sign for namespace \"git\"",
            ),
            // Refused only by driftless's current-time rule: that is the reason.
            (
                vec![
                    line("alice", r#"valid-before="20260201Z""#),
                    line("alice", r#"namespaces="file""#),
                ],
                1,
                "is expired at the current time",
            ),
            // The first line's principals, as patterns, match no line.
            (
                vec![line("!bob", r#"namespaces="file""#), line("alice", "")],
                1,
                "no line holding the key matches",
            ),
            // No line valid at the signer's time.
            (
                vec![
                    line("a", r#"valid-before="20251201Z""#),
                    line(
                        "b",
                        r#"valid-after="20260101Z",valid-before="202601011200Z""#,
                    ),
                ],
                1,
                "none of the 2 lines holding this key is valid then",
            ),
            // cert-authority only.
            (vec![line("alice", "cert-authority")], 1, "cert-authority"),
        ];
        for (lines, named, text) in refused {
            let err = decide(&lines, SIGNED).expect_err(&format!("{lines:?}"));
            let message = err.to_string();
            assert!(message.contains(&format!("as:{named}")), "{message}");
            assert!(message.contains(text), "{text:?} in {message}");
        }
    }

    #[test]
    fn one_line_says_nothing_about_other_lines() {
        let err = decide(&[line("alice", r#"namespaces="file""#)], SIGNED).expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "key {} (as:1) may not sign for namespace \"git\"",
                PublicKey::from_openssh("ssh-ed25519", &KEY[12..])
                    .expect("key")
                    .fingerprint()
            )
        );
    }
}
