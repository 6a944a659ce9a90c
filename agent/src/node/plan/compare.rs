//! The difference between what a plan wants and what is on the node: one
//! [`Step`] an entry, and how `driftless plan` prints it.

use std::collections::BTreeMap;
use std::fmt;

use super::{Bytes, Change, Current, Desired, Entry, PlanError, Step};
use crate::root::{Kind, hex};
use crate::types::NodePath;

/// Compares each desired entry with what is on the node (`None`: absent).
/// A directory in the way of a file or link, or anything in the way of a
/// directory, is an error: the agent never deletes what it did not make.
pub fn diff(
    desired: Vec<Desired>,
    current: &BTreeMap<NodePath, Option<Current>>,
) -> Result<Vec<Step>, PlanError> {
    desired
        .into_iter()
        .map(|d| {
            let change = match current.get(&d.path).cloned().flatten() {
                None => Change::Create,
                Some(c) => compare(&d, &c)?,
            };
            Ok(Step { desired: d, change })
        })
        .collect()
}

fn compare(d: &Desired, c: &Current) -> Result<Change, PlanError> {
    let in_the_way = |what: &str| {
        PlanError(format!(
            "{} ({}): a {what} is in the way; refusing to remove it",
            d.path, d.origin
        ))
    };
    let mut what = Vec::new();
    match (&d.entry, c.kind) {
        (Entry::Directory { mode, uid, gid }, Kind::Directory) => {
            owner_mode(&mut what, *mode, *uid, *gid, c)
        }
        (Entry::Directory { .. }, Kind::File | Kind::Link) => {
            return Err(in_the_way(&kind_name(c.kind)));
        }
        (
            Entry::File {
                sha256,
                mode,
                uid,
                gid,
                ..
            },
            Kind::File,
        ) => {
            // An unknown digest means the node has no file of that size.
            if sha256.is_none() || c.sha256 != *sha256 {
                what.push("content");
            }
            owner_mode(&mut what, *mode, *uid, *gid, c);
        }
        (Entry::Link { target }, Kind::Link) => {
            if c.target.as_deref() != Some(target.as_str()) {
                what.push("target");
            }
        }
        (Entry::File { .. } | Entry::Link { .. }, Kind::File | Kind::Link) => what.push("kind"),
        (_, kind) => return Err(in_the_way(&kind_name(kind))),
    }
    Ok(if what.is_empty() {
        Change::Unchanged
    } else {
        Change::Update(what)
    })
}

fn owner_mode(what: &mut Vec<&'static str>, mode: u32, uid: u32, gid: u32, c: &Current) {
    if c.mode != mode {
        what.push("mode");
    }
    if c.uid != uid {
        what.push("owner");
    }
    if c.gid != gid {
        what.push("group");
    }
}

fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::File => "file",
        Kind::Directory => "directory",
        Kind::Link => "symlink",
        Kind::Other => "special file",
    }
    .to_owned()
}

impl fmt::Display for Step {
    /// One line for `driftless plan`: `create file /etc/app/app.conf (files[0], 0640 998:998)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.desired;
        let detail = match &d.entry {
            Entry::Directory { mode, uid, gid } => format!("directory, {mode:04o} {uid}:{gid}"),
            Entry::File {
                content: Bytes::Secret(s),
                mode,
                uid,
                gid,
                ..
            } => format!("{}, {mode:04o} {uid}:{gid}", s.describe()),
            Entry::File {
                sha256,
                mode,
                uid,
                gid,
                content,
            } => {
                format!(
                    "file, {} bytes, {mode:04o} {uid}:{gid}{}",
                    content.len(),
                    sha256
                        .map(|s| format!(", sha256 {}", &hex(&s)[..12]))
                        .unwrap_or_default()
                )
            }
            Entry::Link { target } => format!("link -> {target}"),
        };
        write!(
            f,
            "{:<10} {} ({detail}; {})",
            self.change.to_string(),
            d.path,
            d.origin
        )
    }
}
