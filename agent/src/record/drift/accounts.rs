//! The account tables against what apply left: every user and group of
//! `/etc/passwd` and `/etc/group` (the spec's and the image's) field by
//! field, whether each account of `/etc/shadow` and `/etc/gshadow` has a
//! password, and who administers and belongs to each group. A new account
//! is drift, and one with uid or gid 0 is named as a second root.
//!
//! The files' lines are read here again rather than through the node
//! stage's planner, which comes later in the pipeline and edits them.

use std::collections::BTreeMap;

use super::Difference;
use crate::record::effective::AccountsRecord;
use crate::root::{Root, RootError};
use crate::types::NodePath;

/// The account files, as `node::accounts` names them.
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
const SHADOW: &str = "/etc/shadow";
const GSHADOW: &str = "/etc/gshadow";
/// Account files larger than this are not read.
const MAX_LEN: u64 = 16 * 1024 * 1024;

/// The account files of the node (`/etc/passwd`, `group`, `shadow`, `gshadow`).
pub const FILES: [&str; 4] = [PASSWD, GROUP, SHADOW, GSHADOW];

fn read(root: &Root, path: &str) -> Result<Option<String>, RootError> {
    let node = NodePath::new(path).map_err(|reason| RootError {
        path: path.to_owned(),
        reason,
    })?;
    Ok(root
        .read_optional(&node, MAX_LEN)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The account lines of a file: blank lines, comments and NIS `+`/`-`
/// lines skipped, each split at `:`.
fn entries(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.is_empty() || t.starts_with(['#', '+', '-']))
        })
        .map(|l| l.split(':').collect())
        .collect()
}

/// `locked`, `none` or `set`, from a shadow password field.
fn password_class(field: &str) -> &'static str {
    if field.is_empty() {
        "none"
    } else if field.starts_with(['!', '*']) {
        "locked"
    } else {
        "set"
    }
}

fn shadow_summary(text: &str) -> BTreeMap<String, String> {
    entries(text)
        .into_iter()
        .filter_map(|f| Some((f.first()?.to_string(), password_class(f.get(1)?).to_owned())))
        .collect()
}

fn gshadow_summary(text: &str) -> BTreeMap<String, String> {
    entries(text)
        .into_iter()
        .filter_map(|f| {
            let class = password_class(f.get(1)?);
            Some((
                f.first()?.to_string(),
                format!("{class}:{}:{}", f.get(2)?, f.get(3)?),
            ))
        })
        .collect()
}

/// The tables as they are now, to record.
pub fn record(root: &Root) -> Result<Option<AccountsRecord>, RootError> {
    let Some(passwd) = read(root, PASSWD)? else {
        return Ok(None);
    };
    Ok(Some(AccountsRecord {
        passwd,
        group: read(root, GROUP)?.unwrap_or_default(),
        shadow: read(root, SHADOW)?.map(|t| shadow_summary(&t)),
        gshadow: read(root, GSHADOW)?.map(|t| gshadow_summary(&t)),
    }))
}

/// One table compared: `fields` names each field after the first (the
/// name); `privileged` is the field whose `0` makes a second root.
struct Table<'a> {
    file: &'a str,
    what: &'a str,
    fields: &'a [&'static str],
    privileged: Option<usize>,
}

impl Table<'_> {
    fn compare(&self, before: &[Vec<&str>], now: &[Vec<&str>], out: &mut Vec<Difference>) {
        let by_name = |lines: &[Vec<&str>]| {
            let mut map: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
            for f in lines {
                let fields = f.iter().map(|s| (*s).to_owned()).collect();
                map.entry(f[0].to_owned()).or_default().push(fields);
            }
            map
        };
        let (before, now) = (by_name(before), by_name(now));
        let at = |name: &str| format!("{}:{name}", self.file);
        for (name, was) in &before {
            let Some(is) = now.get(name) else {
                out.push(Difference {
                    path: at(name),
                    aspect: "missing",
                    expected: self.what.to_owned(),
                    found: "nothing".into(),
                });
                continue;
            };
            let (was, is) = (&was[0], &is[0]);
            for (i, field) in self.fields.iter().enumerate() {
                let get = |f: &Vec<String>| f.get(i + 1).cloned().unwrap_or_default();
                if get(was) != get(is) {
                    out.push(Difference {
                        path: at(name),
                        aspect: field,
                        expected: get(was),
                        found: get(is),
                    });
                }
            }
        }
        for (name, lines) in &now {
            let known = before.get(name).map_or(0, Vec::len);
            for line in lines.iter().skip(known) {
                let mut found = format!("a {} not there when the release was applied", self.what);
                if let Some(i) = self.privileged {
                    let id = line.get(i).map(String::as_str).unwrap_or("");
                    found = format!("{found}, id {id}");
                    if id == "0" {
                        found.push_str(&format!(
                            ": a second root {}",
                            if self.what == "user" {
                                "account"
                            } else {
                                "group"
                            }
                        ));
                    }
                }
                out.push(Difference {
                    path: at(name),
                    aspect: "added",
                    expected: "nothing".into(),
                    found,
                });
            }
        }
    }
}

fn summary_lines(map: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    map.iter()
        .map(|(name, v)| {
            let mut f = vec![name.clone()];
            f.extend(v.split(':').map(str::to_owned));
            f
        })
        .collect()
}

fn borrowed(lines: &[Vec<String>]) -> Vec<Vec<&str>> {
    lines
        .iter()
        .map(|f| f.iter().map(String::as_str).collect())
        .collect()
}

/// How the account tables differ from the record.
pub fn compare(root: &Root, recorded: &AccountsRecord) -> Vec<Difference> {
    let mut out = Vec::new();
    let unreadable = |path: &str, e: RootError| Difference {
        path: path.to_owned(),
        aspect: "content",
        expected: "a readable account file".into(),
        found: e.reason,
    };
    let current = |path: &str, out: &mut Vec<Difference>| match read(root, path) {
        Ok(text) => text,
        Err(e) => {
            out.push(unreadable(path, e));
            None
        }
    };
    let passwd = current(PASSWD, &mut out).unwrap_or_default();
    Table {
        file: PASSWD,
        what: "user",
        fields: &["password", "uid", "gid", "gecos", "home", "shell"],
        privileged: Some(2),
    }
    .compare(&entries(&recorded.passwd), &entries(&passwd), &mut out);
    let group = current(GROUP, &mut out).unwrap_or_default();
    Table {
        file: GROUP,
        what: "group",
        fields: &["password", "gid", "members"],
        privileged: Some(2),
    }
    .compare(&entries(&recorded.group), &entries(&group), &mut out);
    let shadows = [
        (SHADOW, &recorded.shadow, "user", &["password"][..]),
        (
            GSHADOW,
            &recorded.gshadow,
            "group",
            &["password", "admins", "members"][..],
        ),
    ];
    for (path, was, what, fields) in shadows {
        let now = current(path, &mut out);
        let summarise = if path == SHADOW {
            shadow_summary
        } else {
            gshadow_summary
        };
        let (was, now) = (
            summary_lines(&was.clone().unwrap_or_default()),
            summary_lines(&now.as_deref().map(summarise).unwrap_or_default()),
        );
        Table {
            file: path,
            what,
            fields,
            privileged: None,
        }
        .compare(&borrowed(&was), &borrowed(&now), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        for (path, text) in files {
            std::fs::write(dir.path().join(&path[1..]), text).expect("write");
        }
        let root = Root::open(dir.path()).expect("root");
        (dir, root)
    }

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:997:997::/nonexistent:/usr/sbin/nologin\n";
    const GROUP_TEXT: &str = "root:x:0:\nsudo:x:27:\napp:x:997:\n";
    const SHADOW_TEXT: &str = "root:*:19000::::::\ndaemon:*:19000::::::\napp:!:::::::\n";

    #[test]
    fn each_account_change_is_named() {
        let (dir, root) = root_with(&[
            (PASSWD, PASSWD_TEXT),
            (GROUP, GROUP_TEXT),
            (SHADOW, SHADOW_TEXT),
        ]);
        let recorded = record(&root).expect("read").expect("passwd exists");
        assert!(compare(&root, &recorded).is_empty());
        let passwd = PASSWD_TEXT.replace(
            "app:x:997:997::/nonexistent:/usr/sbin/nologin",
            "app:x:0:997::/nonexistent:/bin/bash",
        ) + "toor:x:0:0::/root:/bin/sh\n";
        std::fs::write(dir.path().join("etc/passwd"), passwd).expect("edit passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            GROUP_TEXT.replace("sudo:x:27:", "sudo:x:27:app"),
        )
        .expect("edit group");
        std::fs::write(
            dir.path().join("etc/shadow"),
            SHADOW_TEXT.replace("daemon:*:", "daemon:$y$j9T$abc:"),
        )
        .expect("edit shadow");
        let lines: Vec<String> = compare(&root, &recorded)
            .iter()
            .map(ToString::to_string)
            .collect();
        for expected in [
            "/etc/passwd:app: uid changed (0, expected 997)",
            "/etc/passwd:app: shell changed (/bin/bash, expected /usr/sbin/nologin)",
            "/etc/group:sudo: members changed (app, expected )",
            "/etc/shadow:daemon: password changed (set, expected locked)",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected}\n{lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("/etc/passwd:toor: added")
                    && l.contains("a second root account")),
            "{lines:#?}"
        );
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .expect("delete users");
        let found = compare(&root, &recorded);
        assert!(
            found
                .iter()
                .any(|d| d.path == "/etc/passwd:app" && d.aspect == "missing"),
            "{found:?}"
        );
    }
}
