//! The node's rules for a channel tip, in one place: the watcher's
//! evaluation, a first boot, baking and `driftless channel` all call
//! [`evaluate`], so an operator's command refuses exactly what a node
//! would.
//!
//! A tip is accepted when, in this order:
//! 1. it is signed by a channel signer, or by a refresh signer;
//! 2. its document is valid and names this node's channel and fleet;
//! 3. its sequence is not below the floor (the highest this node, or its
//!    image, has seen), nor equal to it with another commit (a conflict);
//! 4. it descends from the last tip this node accepted;
//! 5. a channel signer's document has its first parent's sequence plus
//!    one (or 1, when the parent holds no document of this channel); a
//!    refresh signer's document is its only parent's, field for field,
//!    but for the sequence (plus one) and the expiry, and that parent is
//!    itself accepted by these rules (back to a channel signer's commit,
//!    or to the last accepted tip, whose base is checked again);
//! 6. it has not expired at the time judged by (see `release::clock`).

use git2::{Oid, Repository};

use super::{ChannelFile, ChannelFileError, ChannelRefusal, ChannelState, Failures};
use crate::config::ChannelSettings;
use crate::release::clock::Judged;
use crate::types::TreePath;
use crate::verify::{ChannelRole, Roles, Verified};

/// The longest chain of refreshes followed back to the channel signer's
/// commit it renews (a refresh an hour for over a year); a channel
/// signer's commit (a move, or a refresh by a channel signer) starts anew.
pub const MAX_REFRESH_CHAIN: usize = 10_000;

/// What this node's config says a document must be for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The channel's name.
    pub channel: String,
    /// The fleet's name.
    pub fleet: String,
}

/// What a node already knows of its channel.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The highest sequence seen, its tip, and where it comes from (for
    /// messages: `the last this node accepted`, `this image's bake record`).
    pub floor: Option<(u64, String, String)>,
    /// A tip every new tip must be or descend from, and what it is (for
    /// messages: `the last tip this node accepted`).
    pub last: Option<(Oid, String)>,
    /// The last tip this node accepted, and the channel signer's commit
    /// its document rests on.
    pub accepted: Option<(Oid, Oid)>,
}

/// One verified commit of the channel and its documents.
struct Link {
    id: Oid,
    verified: Verified,
    role: ChannelRole,
    file: ChannelFile,
    failures: Failures,
}

/// Verifies the channel tip `tip` (already in `repo`) by the node's rules
/// (see the module's documentation) at the time `clock` judged.
pub fn evaluate(
    repo: &Repository,
    roles: &Roles,
    tip: Oid,
    expect: &Expect,
    known: &Known,
    settings: &ChannelSettings,
    clock: &Judged,
) -> Result<ChannelState, ChannelRefusal> {
    let state = verify_tip(repo, roles, tip, expect, known, settings, clock)?;
    if clock.at >= state.file.expires {
        return Err(ChannelRefusal::Expired {
            tip: state.tip,
            expires: state.file.expires,
            judged: clock.at,
            by: clock.by(),
        });
    }
    Ok(state)
}

/// [`evaluate`] but for the expiry (rule 6): what a floor records, since
/// even a stale document is a state the channel has reached.
pub fn verify_tip(
    repo: &Repository,
    roles: &Roles,
    tip: Oid,
    expect: &Expect,
    known: &Known,
    settings: &ChannelSettings,
    clock: &Judged,
) -> Result<ChannelState, ChannelRefusal> {
    let tip_hex = tip.to_string();
    let top =
        link(repo, roles, tip, true, expect, settings, clock).map_err(|e| e.refusal(&tip_hex))?;
    if let Some((floor, floor_tip, source)) = &known.floor {
        if top.file.sequence < *floor {
            return Err(ChannelRefusal::Replayed {
                tip: tip_hex,
                sequence: top.file.sequence,
                floor: *floor,
                floor_tip: floor_tip.clone(),
                source_of_floor: source.clone(),
            });
        }
        if top.file.sequence == *floor && *floor_tip != tip_hex {
            return Err(ChannelRefusal::Conflict {
                tip: tip_hex,
                sequence: *floor,
                other: floor_tip.clone(),
                source_of_floor: source.clone(),
            });
        }
    }
    if let Some((last, what)) = known.last.as_ref().filter(|(last, _)| *last != tip) {
        if !repo.graph_descendant_of(tip, *last).unwrap_or(false) {
            return Err(ChannelRefusal::NotForward {
                tip: tip_hex,
                last: last.to_string(),
                what: what.clone(),
            });
        }
    }
    let base = rests_on(repo, roles, &top, expect, known, settings, clock)
        .map_err(|e| e.refusal(&tip_hex))?;
    Ok(ChannelState {
        tip: tip_hex,
        signer: top.verified.principal,
        fingerprint: top.verified.fingerprint,
        role: top.role,
        base: base.to_string(),
        committed_at: top.verified.signed_at,
        file: top.file,
        failures: top.failures,
    })
}

/// Why a link of the chain is refused, before it is told which tip.
enum Broken {
    Signature(crate::verify::VerifyError),
    File(ChannelFileError),
    Binding(&'static str, String, String),
    Refresh(String),
    Sequence(String),
    Repository(String),
}

impl Broken {
    fn refusal(self, tip: &str) -> ChannelRefusal {
        let tip = tip.to_owned();
        match self {
            Broken::Signature(source) => ChannelRefusal::Signature { tip, source },
            Broken::File(source) => ChannelRefusal::File { tip, source },
            Broken::Binding(what, found, expected) => ChannelRefusal::Binding {
                tip,
                what,
                found,
                expected,
            },
            Broken::Refresh(reason) => ChannelRefusal::Refresh { tip, reason },
            Broken::Sequence(reason) => ChannelRefusal::Sequence { tip, reason },
            Broken::Repository(reason) => ChannelRefusal::Repository { tip, reason },
        }
    }

    /// The same refusal, said of an older commit the tip rests on.
    fn of_parent(self, parent: Oid) -> Self {
        let within = |reason: String| format!("the commit it renews, {parent}: {reason}");
        match self {
            Broken::Signature(e) => Broken::Refresh(within(format!("refused: {e}"))),
            Broken::File(e) => Broken::Refresh(within(e.to_string())),
            Broken::Binding(what, found, expected) => Broken::Refresh(within(format!(
                "a document for {what} {found:?}, not {expected:?}"
            ))),
            Broken::Refresh(r) | Broken::Sequence(r) | Broken::Repository(r) => {
                Broken::Refresh(within(r))
            }
        }
    }
}

/// Verifies one commit and reads its documents. The tip is verified at
/// the time judged; an older commit of a refresh chain at its own signing
/// time (a refresh key may have been rotated since), revocation included.
fn link(
    repo: &Repository,
    roles: &Roles,
    id: Oid,
    is_tip: bool,
    expect: &Expect,
    settings: &ChannelSettings,
    clock: &Judged,
) -> Result<Link, Broken> {
    let name = id.to_string();
    let (verified, role) = if is_tip {
        roles.verify_channel_commit(repo, &name, id, clock.at)
    } else {
        roles.verify_channel_commit_as_signed(repo, &name, id)
    }
    .map_err(Broken::Signature)?;
    let (file, failures) = documents(repo, id, settings)?;
    if file.channel != expect.channel {
        return Err(Broken::Binding(
            "channel",
            file.channel,
            expect.channel.clone(),
        ));
    }
    if file.fleet != expect.fleet {
        return Err(Broken::Binding("fleet", file.fleet, expect.fleet.clone()));
    }
    if verified.signed_at > file.expires {
        return Err(Broken::File(ChannelFileError {
            file: settings.file.to_string(),
            reason: format!(
                "signed at {}, after it expires ({})",
                verified.signed_at, file.expires
            ),
        }));
    }
    Ok(Link {
        id,
        verified,
        role,
        file,
        failures,
    })
}

/// The channel file and failures file of commit `id`, not verified.
fn documents(
    repo: &Repository,
    id: Oid,
    settings: &ChannelSettings,
) -> Result<(ChannelFile, Failures), Broken> {
    let tree = repo
        .find_commit(id)
        .and_then(|c| c.tree())
        .map_err(|e| Broken::Repository(e.message().to_owned()))?;
    let text = tree_text(repo, &tree, &settings.file)?.ok_or_else(|| {
        Broken::File(ChannelFileError {
            file: settings.file.to_string(),
            reason: "not in the channel branch's tree".into(),
        })
    })?;
    let file = ChannelFile::parse(&text, settings.file.as_str()).map_err(Broken::File)?;
    let failures = match tree_text(repo, &tree, &settings.failures_file)? {
        Some(text) => {
            Failures::parse(&text, settings.failures_file.as_str()).map_err(Broken::File)?
        }
        None => Failures::default(),
    };
    Ok((file, failures))
}

/// The channel signer's commit `top`'s document rests on (rule 5).
fn rests_on(
    repo: &Repository,
    roles: &Roles,
    top: &Link,
    expect: &Expect,
    known: &Known,
    settings: &ChannelSettings,
    clock: &Judged,
) -> Result<Oid, Broken> {
    if top.role == ChannelRole::Channel {
        check_move_sequence(repo, top, expect, settings)?;
        return Ok(top.id);
    }
    let mut newer = (top.id, top.file.clone(), top.failures.clone());
    for _ in 0..MAX_REFRESH_CHAIN {
        let parent = only_parent(repo, newer.0)?;
        if let Some((last, base)) = known.accepted.filter(|(last, _)| *last == parent) {
            // Accepted before by these rules: compare, and check its
            // base's signature again (a key may have expired since).
            let (file, failures) = documents(repo, parent, settings)?;
            same_but_freshness(&newer, &file, &failures)?;
            let (_, role) = roles
                .verify_channel_commit(repo, &base.to_string(), base, clock.at)
                .map_err(|e| {
                    Broken::Refresh(format!(
                        "the channel commit it renews, {base}, is refused: {e}"
                    ))
                })?;
            if role != ChannelRole::Channel {
                return Err(Broken::Refresh(format!(
                    "{base}, which {last} renews, is not signed by a channel signer"
                )));
            }
            return Ok(base);
        }
        let older = link(repo, roles, parent, false, expect, settings, clock)
            .map_err(|e| e.of_parent(parent))?;
        same_but_freshness(&newer, &older.file, &older.failures)?;
        if older.role == ChannelRole::Channel {
            check_move_sequence(repo, &older, expect, settings).map_err(|e| e.of_parent(parent))?;
            return Ok(older.id);
        }
        newer = (older.id, older.file, older.failures);
    }
    Err(Broken::Refresh(format!(
        "more than {MAX_REFRESH_CHAIN} refreshes since the last channel signer's commit; a channel signer must sign one (driftless channel refresh with a channel key)"
    )))
}

/// A refresh's only parent.
fn only_parent(repo: &Repository, id: Oid) -> Result<Oid, Broken> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| Broken::Repository(e.message().to_owned()))?;
    if commit.parent_count() != 1 {
        return Err(Broken::Refresh(format!(
            "signed by a refresh signer, {id} must have exactly one parent (it has {})",
            commit.parent_count()
        )));
    }
    commit
        .parent_id(0)
        .map_err(|e| Broken::Repository(e.message().to_owned()))
}

/// A refresh (`newer`) may change only the sequence (by one) and the expiry.
fn same_but_freshness(
    newer: &(Oid, ChannelFile, Failures),
    file: &ChannelFile,
    failures: &Failures,
) -> Result<(), Broken> {
    let (id, new_file, new_failures) = newer;
    let mut changed = changed_fields(new_file, file);
    if new_failures != failures {
        changed.push("the failures file".to_owned());
    }
    if !changed.is_empty() {
        return Err(Broken::Refresh(format!(
            "signed by a refresh signer, {id} changes {} (a refresh may change only the expiry)",
            changed.join(", ")
        )));
    }
    if new_file.sequence != file.sequence.saturating_add(1) {
        return Err(Broken::Sequence(format!(
            "{id} has sequence {}, not {} (its parent's plus one)",
            new_file.sequence,
            file.sequence.saturating_add(1)
        )));
    }
    Ok(())
}

/// The fields in which two documents differ, sequence and expiry aside.
pub fn changed_fields(a: &ChannelFile, b: &ChannelFile) -> Vec<String> {
    let value = |f: &ChannelFile| serde_json::to_value(f.without_freshness()).unwrap_or_default();
    let (a, b) = (value(a), value(b));
    let keys: std::collections::BTreeSet<&String> = a
        .as_object()
        .into_iter()
        .chain(b.as_object())
        .flat_map(|m| m.keys())
        .collect();
    keys.into_iter()
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .cloned()
        .collect()
}

/// A channel signer's document has its first parent's sequence plus one,
/// or 1 when that parent holds no document of this channel and fleet.
fn check_move_sequence(
    repo: &Repository,
    link: &Link,
    expect: &Expect,
    settings: &ChannelSettings,
) -> Result<(), Broken> {
    let commit = repo
        .find_commit(link.id)
        .map_err(|e| Broken::Repository(e.message().to_owned()))?;
    let parent_sequence = match commit.parent_id(0) {
        Err(_) => None,
        Ok(parent) => documents(repo, parent, settings)
            .ok()
            .filter(|(f, _)| f.channel == expect.channel && f.fleet == expect.fleet)
            .map(|(f, _)| f.sequence),
    };
    let want = parent_sequence.map_or(1, |s| s.saturating_add(1));
    if link.file.sequence != want {
        let after = match parent_sequence {
            Some(s) => format!("its parent's {s} plus one"),
            None => "1: its parent holds no document of this channel".to_owned(),
        };
        return Err(Broken::Sequence(format!(
            "{} has sequence {}, not {want} ({after})",
            link.id, link.file.sequence
        )));
    }
    Ok(())
}

/// Why a file of the channel tree could not be read.
impl From<TreeText> for Broken {
    fn from(e: TreeText) -> Self {
        match e {
            TreeText::Unreadable(reason) => Broken::Repository(reason),
            TreeText::Invalid(e) => Broken::File(e),
        }
    }
}

/// Why a file of the channel tree could not be read.
pub enum TreeText {
    /// The repository could not be read.
    Unreadable(String),
    /// The path is not a UTF-8 file.
    Invalid(ChannelFileError),
}

/// The text of `path` in `tree`, or `None` when the tree has no such entry.
pub fn tree_text(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    path: &TreePath,
) -> Result<Option<String>, TreeText> {
    let invalid = |reason: &str| {
        TreeText::Invalid(ChannelFileError {
            file: path.to_string(),
            reason: reason.to_owned(),
        })
    };
    let Ok(entry) = tree.get_path(std::path::Path::new(path.as_str())) else {
        return Ok(None);
    };
    if entry.kind() != Some(git2::ObjectType::Blob) {
        return Err(invalid("not a file in the channel branch's tree"));
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| TreeText::Unreadable(e.message().to_owned()))?;
    if blob.size() > super::MAX_CHANNEL_LEN {
        return Err(invalid(&format!(
            "larger than {} bytes",
            super::MAX_CHANNEL_LEN
        )));
    }
    let text = std::str::from_utf8(blob.content()).map_err(|_| invalid("not UTF-8"))?;
    Ok(Some(text.to_owned()))
}
