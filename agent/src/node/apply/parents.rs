//! Directories nobody declared. A managed path whose parents are missing
//! gets them from the run (root, 0755), so they are planned, recorded in
//! the manifest and watched like the spec's own entries, and a re-run
//! re-asserts the ones an interrupted run made. Also puts every entry after
//! its parents' entries, so a directory is always made before anything in
//! it. Apart from planning because the order is subtle enough to read (and
//! test) alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::plan::{Desired, Entry, IMPLICIT_ORIGIN};
use crate::record::state::State;
use crate::root::Kind;
use crate::types::NodePath;

/// A directory nobody declared, made because `child` lies beneath it:
/// recorded and watched, not locked (other software may add to it).
fn implicit(path: NodePath, child: &NodePath) -> Desired {
    Desired {
        path,
        entry: Entry::Directory {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
        origin: format!("{IMPLICIT_ORIGIN}{child}"),
        managed: true,
        lock: false,
        exclusive: false,
    }
}

/// The implicit parents an earlier run of the same release recorded (an
/// interrupted apply): they are re-asserted, whatever the node shows now.
pub fn recorded_parents(earlier: Option<&State>, commit: &str) -> BTreeSet<NodePath> {
    earlier
        .filter(|s| s.release.commit == commit)
        .map(|s| {
            s.manifest
                .iter()
                .filter(|e| e.kind == Kind::Directory && e.origin.starts_with(IMPLICIT_ORIGIN))
                .map(|e| e.path.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// `desired` with every entry placed after the entries of its parents
/// (declared directories are moved up when needed), and an implicit entry
/// before the first path beneath each undeclared parent that is `missing`
/// now or that an earlier run `recorded`.
pub(super) fn with_parents(
    desired: Vec<Desired>,
    recorded: &BTreeSet<NodePath>,
    missing: &mut dyn FnMut(&NodePath) -> anyhow::Result<bool>,
) -> anyhow::Result<Vec<Desired>> {
    let declared: BTreeMap<NodePath, usize> = desired
        .iter()
        .enumerate()
        .filter(|(_, d)| d.entry.kind() == Kind::Directory)
        .map(|(i, d)| (d.path.clone(), i))
        .collect();
    let mut order = Order {
        slots: desired.into_iter().map(Some).collect(),
        declared,
        recorded,
        seen: BTreeSet::new(),
        out: Vec::new(),
    };
    for i in 0..order.slots.len() {
        order.place(i, missing)?;
    }
    Ok(order.out)
}

struct Order<'a> {
    slots: Vec<Option<Desired>>,
    declared: BTreeMap<NodePath, usize>,
    recorded: &'a BTreeSet<NodePath>,
    /// Parents already placed, or found present and undeclared.
    seen: BTreeSet<NodePath>,
    out: Vec<Desired>,
}

impl Order<'_> {
    fn place(
        &mut self,
        i: usize,
        missing: &mut dyn FnMut(&NodePath) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let Some(d) = self.slots[i].take() else {
            return Ok(());
        };
        for parent in d.path.ancestors() {
            if !self.seen.insert(parent.clone()) {
                continue;
            }
            if let Some(&j) = self.declared.get(&parent) {
                self.place(j, missing)?;
            } else if self.recorded.contains(&parent) || missing(&parent)? {
                self.out.push(implicit(parent, &d.path));
            }
        }
        self.seen.insert(d.path.clone());
        self.out.push(d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NodePath {
        NodePath::new(s).expect("valid path")
    }

    fn dir(path: &str, uid: u32) -> Desired {
        Desired {
            path: p(path),
            entry: Entry::Directory {
                mode: 0o750,
                uid,
                gid: uid,
            },
            origin: format!("directories[{path}]"),
            managed: true,
            lock: true,
            exclusive: false,
        }
    }

    fn link(path: &str) -> Desired {
        Desired {
            path: p(path),
            entry: Entry::Link { target: "x".into() },
            origin: "links[0]".into(),
            managed: true,
            lock: true,
            exclusive: false,
        }
    }

    fn plan(desired: Vec<Desired>, present: &[&str], recorded: &[&str]) -> Vec<(String, String)> {
        let present: BTreeSet<NodePath> = present.iter().map(|s| p(s)).collect();
        let recorded: BTreeSet<NodePath> = recorded.iter().map(|s| p(s)).collect();
        let mut asked = Vec::new();
        let mut missing = |path: &NodePath| {
            asked.push(path.clone());
            Ok(!present.contains(path))
        };
        let out = with_parents(desired, &recorded, &mut missing).expect("ordered");
        let unique: BTreeSet<&NodePath> = asked.iter().collect();
        assert_eq!(unique.len(), asked.len(), "each parent is looked at once");
        out.into_iter()
            .map(|d| (d.path.to_string(), d.origin))
            .collect()
    }

    #[test]
    fn missing_parents_come_first_and_present_ones_are_left_alone() {
        let got = plan(
            vec![dir("/opt/app", 5), link("/opt/app/current"), link("/etc/x")],
            &["/etc"],
            &[],
        );
        let want = [
            ("/opt", "implicit parent of /opt/app"),
            ("/opt/app", "directories[/opt/app]"),
            ("/opt/app/current", "links[0]"),
            ("/etc/x", "links[0]"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_declared_parent_listed_later_is_moved_up() {
        let got = plan(
            vec![
                dir("/home/u/www", 5),
                link("/home/u/www/i"),
                dir("/home/u", 5),
            ],
            &["/home"],
            &[],
        );
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/home/u", "/home/u/www", "/home/u/www/i"]);
        assert!(got.iter().all(|(_, o)| !o.starts_with(IMPLICIT_ORIGIN)));
    }

    #[test]
    fn a_parent_an_earlier_run_made_is_kept_though_it_exists_now() {
        let got = plan(vec![link("/srv/a/b")], &["/srv", "/srv/a"], &["/srv"]);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/srv", "/srv/a/b"]);
        assert_eq!(got[0].1, "implicit parent of /srv/a/b");
    }
}
