//! Users and groups, added the way `useradd --root` and `groupadd --root`
//! would add them, without running them: the four account files are parsed,
//! the missing groups and users are appended, and the new file contents are
//! handed back for the caller to write. Pure logic on strings, no I/O.
//!
//! Ids are allocated as those tools do with a default `login.defs(5)`:
//! system ids from 999 down to 100, normal ids from 1000 up to 60000, first
//! free. An id counts as taken when it appears anywhere in `/etc/passwd` (as
//! a uid or primary gid) or in `/etc/group`, so users and groups never share
//! an id by accident. Two pairings keep ids tidy: a user whose primary group
//! has the user's own name takes that group's gid as uid when it is free and
//! in the user's range, and a user's own group, when created, takes the
//! user's uid as gid when it is free.
//!
//! Existing accounts are kept as they are (an id pinned by the spec that
//! differs is an error); only missing supplementary-group memberships are
//! added. Lines the planner does not own (comments, blank lines, NIS `+`/`-`
//! lines) are kept verbatim, and unchanged files render byte for byte.

mod planner;
mod table;

pub use table::{GROUP, GSHADOW, PASSWD, SHADOW};

use crate::release::spec::{GroupSpec, Principal, UserSpec};
use planner::Planner;
use table::{GID, Kind, Table, UID};

/// The text of the node's account files ([`PASSWD`], [`GROUP`], [`SHADOW`],
/// [`GSHADOW`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFiles {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/shadow`; `None` when the root has none (then new users get a
    /// locked `!` password in `/etc/passwd` instead of `x`).
    pub shadow: Option<String>,
    /// `/etc/gshadow`; `None` when the root has none (then new groups get
    /// `!` in `/etc/group` instead of `x`).
    pub gshadow: Option<String>,
}

/// What [`plan_accounts`] would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsPlan {
    /// The new contents of the account files (equal to the input when
    /// nothing changes).
    pub files: AccountFiles,
    /// Groups created, in creation order (spec groups, then users' own groups).
    pub created_groups: Vec<String>,
    /// Users created, in spec order.
    pub created_users: Vec<String>,
    /// Other changes, one line each, e.g. `app: added to group docker`.
    pub changed: Vec<String>,
}

impl AccountsPlan {
    /// True when the plan leaves every file as it was.
    pub fn changes_nothing(&self) -> bool {
        self.created_groups.is_empty() && self.created_users.is_empty() && self.changed.is_empty()
    }
}

/// Plans adding `groups`, then `users`, to the account files in `current`.
///
/// A user's primary group is `group` when set (it must exist in the spec or
/// the file), otherwise the group of the user's own name, created when
/// missing. Supplementary `groups` must exist; the user is added to their
/// member lists in `/etc/group` and, when the group has a line there,
/// `/etc/gshadow`. New users get home `/home/NAME` (`/nonexistent` for system
/// users, as Debian's adduser does, so nothing is created or owned there by
/// accident), shell `/bin/sh` (`/usr/sbin/nologin` for system users), an
/// empty GECOS field, and a locked shadow line `NAME:!:::::::` (`*` for a
/// user with SSH keys, so key logins work) with an empty
/// last-change day so the output does not depend on the clock. New groups get
/// a gshadow line `NAME:!::MEMBERS`. New lines are appended in spec order.
///
/// Planning again on the result changes nothing.
pub fn plan_accounts(
    groups: &[GroupSpec],
    users: &[UserSpec],
    current: &AccountFiles,
) -> Result<AccountsPlan, String> {
    let mut planner = Planner {
        passwd: Table::parse(Kind::Passwd, &current.passwd)?,
        group: Table::parse(Kind::Group, &current.group)?,
        shadow: current
            .shadow
            .as_deref()
            .map(|t| Table::parse(Kind::Shadow, t))
            .transpose()?,
        gshadow: current
            .gshadow
            .as_deref()
            .map(|t| Table::parse(Kind::Gshadow, t))
            .transpose()?,
        created_groups: Vec::new(),
        created_users: Vec::new(),
        changed: Vec::new(),
    };
    for group in groups {
        planner.ensure_group(group)?;
    }
    for user in users {
        planner.ensure_user(user)?;
    }
    Ok(AccountsPlan {
        files: AccountFiles {
            passwd: planner.passwd.render(),
            group: planner.group.render(),
            shadow: planner.shadow.as_ref().map(Table::render),
            gshadow: planner.gshadow.as_ref().map(Table::render),
        },
        created_groups: planner.created_groups,
        created_users: planner.created_users,
        changed: planner.changed,
    })
}

/// The uid of a user: a numeric id as is, a name looked up in `passwd` (the
/// text of `/etc/passwd`).
pub fn resolve_uid(p: &Principal, passwd: &str) -> Result<u32, String> {
    match p {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => {
            let table = Table::parse(Kind::Passwd, passwd)?;
            table.id_of(name.as_str(), UID).ok_or_else(|| {
                missing(
                    "user",
                    name.as_str(),
                    PASSWD,
                    "users",
                    table.name_with_id(UID, 0),
                )
            })
        }
    }
}

/// The gid of a group: a numeric id as is, a name looked up in `group` (the
/// text of `/etc/group`).
pub fn resolve_gid(p: &Principal, group: &str) -> Result<u32, String> {
    match p {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => {
            let table = Table::parse(Kind::Group, group)?;
            table.id_of(name.as_str(), GID).ok_or_else(|| {
                missing(
                    "group",
                    name.as_str(),
                    GROUP,
                    "groups",
                    table.name_with_id(GID, 0),
                )
            })
        }
    }
}

/// Why a name does not resolve, with what to do: a table without root's
/// own entry (`root0` is the name holding id 0) means the root lacks the
/// image's account files, not that the spec lacks a declaration.
fn missing(what: &str, name: &str, file: &str, section: &str, root0: Option<&str>) -> String {
    if root0.is_none() {
        return format!(
            "{what} {name} is not in {file}, which has no entry for id 0: this root lacks the image's account files; give it {PASSWD} and {GROUP} (at least root's lines), or use a numeric id"
        );
    }
    format!("{what} {name} is not in {file}; declare it under {section}, or use one the image has")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::spec::AccountName;
    use crate::types::NodePath;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment: with colons\n\
        systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP_TEXT: &str = "root:x:0:\n\
        daemon:x:1:\n\
        docker:x:999:alice\n\
        systemd-network:x:998:\n\
        alice:x:1000:\n\
        nogroup:x:65534:\n";
    const SHADOW_TEXT: &str = "root:*:19000:0:99999:7:::\n\
        daemon:*:19000:0:99999:7:::\n\
        systemd-network:!*:19000::::::\n\
        alice:$y$j9T$hash:19000:0:99999:7:::\n\
        nobody:*:19000:0:99999:7:::\n";
    const GSHADOW_TEXT: &str = "root:*::\n\
        daemon:*::\n\
        docker:!::alice\n\
        systemd-network:!*::\n\
        alice:!::\n\
        nogroup:*::\n";

    fn debian() -> AccountFiles {
        AccountFiles {
            passwd: PASSWD_TEXT.into(),
            group: GROUP_TEXT.into(),
            shadow: Some(SHADOW_TEXT.into()),
            gshadow: Some(GSHADOW_TEXT.into()),
        }
    }

    fn name(n: &str) -> AccountName {
        AccountName::new(n).expect("valid test name")
    }

    fn group(n: &str, system: bool, gid: Option<u32>) -> GroupSpec {
        GroupSpec {
            name: name(n),
            system,
            gid,
        }
    }

    fn user(n: &str, system: bool) -> UserSpec {
        UserSpec {
            name: name(n),
            system,
            uid: None,
            group: None,
            groups: Vec::new(),
            home: None,
            shell: None,
            ssh_authorized_keys: Vec::new(),
        }
    }

    /// The lines `after` has beyond `before`, which must be its prefix.
    fn appended<'a>(before: &str, after: &'a str) -> &'a str {
        after.strip_prefix(before).expect("existing lines are kept")
    }

    fn plan(groups: &[GroupSpec], users: &[UserSpec], files: &AccountFiles) -> AccountsPlan {
        let plan = plan_accounts(groups, users, files).expect("plan succeeds");
        let again = plan_accounts(groups, users, &plan.files).expect("second plan succeeds");
        assert!(
            again.changes_nothing(),
            "second plan is not idempotent: {again:?}"
        );
        assert_eq!(again.files, plan.files);
        plan
    }

    fn refused(groups: &[GroupSpec], users: &[UserSpec], files: &AccountFiles) -> String {
        plan_accounts(groups, users, files).expect_err("plan is refused")
    }

    #[test]
    fn files_round_trip_byte_for_byte() {
        let odd = "root:x:0:0:root:/root:/bin/bash\n\n  \n#comment\n+@netgroup::::::\n-bob::::::\n\
                   +\nweird:x:5:5::/:/bin/sh\r\nlast:x:6:6:::";
        for text in ["", "\n", "\n\n", odd, PASSWD_TEXT] {
            let table = Table::parse(Kind::Passwd, text).expect("parses");
            assert_eq!(table.render(), text);
        }
        for (kind, text) in [
            (Kind::Group, GROUP_TEXT),
            (Kind::Shadow, SHADOW_TEXT),
            (Kind::Gshadow, GSHADOW_TEXT),
        ] {
            assert_eq!(Table::parse(kind, text).expect("parses").render(), text);
        }
        let plan = plan(&[], &[], &debian());
        assert!(plan.changes_nothing());
        assert_eq!(plan.files, debian());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err = Table::parse(Kind::Passwd, "root:x:0:0:root:/root:/bin/bash\nbad:x:1\n")
            .expect_err("short line");
        assert_eq!(
            err,
            "/etc/passwd line 2: expected 7 fields separated by ':', found 3"
        );
        let err = Table::parse(Kind::Group, "# c\nstaff:x:abc:\n").expect_err("bad gid");
        assert_eq!(err, "/etc/group line 2: gid \"abc\" is not a number");
        let err = Table::parse(Kind::Shadow, "root:*:1\n").expect_err("short line");
        assert!(
            err.starts_with("/etc/shadow line 1: expected 9 fields"),
            "{err}"
        );
        let mut files = debian();
        files.gshadow = Some("root:*:\n".into());
        let err = refused(&[], &[], &files);
        assert_eq!(
            err,
            "/etc/gshadow line 1: expected 4 fields separated by ':', found 3"
        );
    }

    #[test]
    fn the_documented_example_creates_a_system_account() {
        // groups: [{name: app, system: true}]; users: [{name: app, system: true}]
        let files = debian();
        let plan = plan(&[group("app", true, None)], &[user("app", true)], &files);
        assert_eq!(plan.created_groups, ["app"]);
        assert_eq!(plan.created_users, ["app"]);
        assert!(plan.changed.is_empty());
        // 999 and 998 are taken; the user pairs with its group's gid.
        assert_eq!(
            appended(&files.passwd, &plan.files.passwd),
            "app:x:997:997::/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(appended(&files.group, &plan.files.group), "app:x:997:\n");
        assert_eq!(
            appended(SHADOW_TEXT, plan.files.shadow.as_deref().expect("kept")),
            "app:!:::::::\n"
        );
        assert_eq!(
            appended(GSHADOW_TEXT, plan.files.gshadow.as_deref().expect("kept")),
            "app:!::\n"
        );
    }

    #[test]
    fn normal_users_get_their_own_group_and_defaults() {
        let files = debian();
        let mut bob = user("bob", false);
        bob.groups = vec![name("docker")];
        let plan = plan(&[], &[bob], &files);
        assert_eq!(plan.created_groups, ["bob"]);
        assert_eq!(plan.created_users, ["bob"]);
        assert_eq!(plan.changed, ["bob: added to group docker"]);
        assert_eq!(
            appended(&files.passwd, &plan.files.passwd),
            "bob:x:1001:1001::/home/bob:/bin/sh\n"
        );
        assert!(plan.files.group.contains("\ndocker:x:999:alice,bob\n"));
        assert!(
            plan.files
                .group
                .ends_with("nogroup:x:65534:\nbob:x:1001:\n")
        );
        let gshadow = plan.files.gshadow.as_deref().expect("kept");
        assert!(gshadow.contains("\ndocker:!::alice,bob\n") && gshadow.ends_with("\nbob:!::\n"));
    }

    #[test]
    fn allocation_skips_ids_taken_in_either_file() {
        let files = AccountFiles {
            passwd: "root:x:0:0::/root:/bin/sh\nu:x:1000:1003::/:/bin/sh\n".into(),
            group: "root:x:0:\ng1:x:1001:\nsys:x:999:\n".into(),
            shadow: None,
            gshadow: None,
        };
        let plan = plan(
            &[group("g2", false, None), group("s2", true, None)],
            &[user("v", false), user("w", false)],
            &files,
        );
        // 1000 is a uid, 1001 a gid, 1003 a primary gid without a group line.
        assert_eq!(
            appended(&files.group, &plan.files.group),
            "g2:!:1002:\ns2:!:998:\nv:!:1004:\nw:!:1005:\n"
        );
        assert_eq!(
            appended(&files.passwd, &plan.files.passwd),
            "v:!:1004:1004::/home/v:/bin/sh\nw:!:1005:1005::/home/w:/bin/sh\n"
        );
        assert_eq!(plan.files.shadow, None);
    }

    #[test]
    fn own_group_takes_another_gid_when_the_uid_is_taken_as_gid() {
        let files = AccountFiles {
            passwd: "root:x:0:0::/root:/bin/sh\n".into(),
            group: "root:x:0:\nstaff:x:1500:\n".into(),
            shadow: None,
            gshadow: None,
        };
        let mut pinned = user("p", false);
        pinned.uid = Some(1500);
        let plan = plan(&[], &[pinned], &files);
        assert_eq!(
            appended(&files.passwd, &plan.files.passwd),
            "p:!:1500:1000::/home/p:/bin/sh\n"
        );
        assert_eq!(appended(&files.group, &plan.files.group), "p:!:1000:\n");
    }

    #[test]
    fn explicit_settings_are_used() {
        let files = debian();
        let mut web = user("web", false);
        web.uid = Some(2000);
        web.group = Some(name("www"));
        web.home = Some(NodePath::new("/srv/web").expect("valid"));
        web.shell = Some(NodePath::new("/bin/bash").expect("valid"));
        let plan = plan(&[group("www", false, Some(33))], &[web], &files);
        assert_eq!(plan.created_groups, ["www"]);
        assert_eq!(appended(&files.group, &plan.files.group), "www:x:33:\n");
        assert_eq!(
            appended(&files.passwd, &plan.files.passwd),
            "web:x:2000:33::/srv/web:/bin/bash\n"
        );
    }

    #[test]
    fn existing_accounts_are_kept_and_only_gain_memberships() {
        let files = debian();
        let mut alice = user("alice", false);
        alice.uid = Some(1000);
        alice.groups = vec![name("docker"), name("systemd-network")];
        let plan = plan(&[group("docker", true, Some(999))], &[alice], &files);
        assert!(plan.created_groups.is_empty() && plan.created_users.is_empty());
        assert_eq!(plan.changed, ["alice: added to group systemd-network"]);
        assert_eq!(plan.files.passwd, files.passwd);
        assert!(plan.files.group.contains("\nsystemd-network:x:998:alice\n"));
        let gshadow = plan.files.gshadow.as_deref().expect("kept");
        assert!(gshadow.contains("\nsystemd-network:!*::alice\n"));
    }

    #[test]
    fn a_file_without_final_newline_gets_one_before_new_lines() {
        let files = AccountFiles {
            passwd: "root:x:0:0::/root:/bin/sh".into(),
            group: "root:x:0:".into(),
            shadow: Some(String::new()),
            gshadow: Some(String::new()),
        };
        let plan = plan(&[], &[user("svc", true)], &files);
        assert_eq!(
            plan.files.passwd,
            "root:x:0:0::/root:/bin/sh\nsvc:x:999:999::/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(plan.files.group, "root:x:0:\nsvc:x:999:\n");
        assert_eq!(plan.files.shadow.as_deref(), Some("svc:!:::::::\n"));
        assert_eq!(plan.files.gshadow.as_deref(), Some("svc:!::\n"));
    }

    #[test]
    fn conflicts_are_refused_with_a_reason() {
        let files = debian();
        assert_eq!(
            refused(&[group("docker", true, Some(500))], &[], &files),
            "group docker: the spec pins gid 500 but /etc/group has it with gid 999"
        );
        assert_eq!(
            refused(&[group("web", true, Some(998))], &[], &files),
            "group web: gid 998 is already taken by group systemd-network in /etc/group"
        );
        let mut alice = user("alice", false);
        alice.uid = Some(1234);
        assert_eq!(
            refused(&[], &[alice], &files),
            "user alice: the spec pins uid 1234 but /etc/passwd has it with uid 1000"
        );
        let mut bob = user("bob", false);
        bob.uid = Some(1000);
        assert_eq!(
            refused(&[], &[bob.clone()], &files),
            "user bob: uid 1000 is already taken by user alice in /etc/passwd"
        );
        bob.uid = None;
        bob.group = Some(name("web"));
        assert_eq!(
            refused(&[], &[bob.clone()], &files),
            "user bob: primary group web is not in /etc/group; declare it under groups"
        );
        bob.group = None;
        bob.groups = vec![name("wheel")];
        assert_eq!(
            refused(&[], &[bob], &files),
            "user bob: supplementary group wheel is not in /etc/group; declare it under groups"
        );
        let mut colon = user("c", false);
        colon.home = Some(NodePath::new("/srv/a:b").expect("valid"));
        assert_eq!(
            refused(&[], &[colon], &files),
            "user c: home \"/srv/a:b\" must not contain ':' or a line break"
        );
        let mut newline = user("n", false);
        newline.shell = Some(NodePath::new("/bin/sh\nroot2:x:0:0::/:/bin/sh").expect("valid"));
        assert!(refused(&[], &[newline], &files).starts_with("user n: shell "));
        let mut stale = debian();
        stale.shadow = Some(format!("{SHADOW_TEXT}ghost:!:::::::\n"));
        assert_eq!(
            refused(&[], &[user("ghost", true)], &stale),
            "ghost: /etc/shadow already has a line for it but /etc/passwd does not; remove the \
             stale line or add the account to /etc/passwd"
        );
    }

    #[test]
    fn exhausted_ranges_are_reported() {
        let passwd: String = (100..=999)
            .map(|id| format!("u{id}:x:{id}:0::/:/bin/sh\n"))
            .collect();
        let files = AccountFiles {
            passwd,
            group: "root:x:0:\n".into(),
            shadow: None,
            gshadow: None,
        };
        assert_eq!(
            refused(&[group("late", true, None)], &[], &files),
            "group late: no free system id left between 100 and 999"
        );
    }

    #[test]
    fn principals_resolve_by_name_or_pass_through() {
        let alice = Principal::Name(name("alice"));
        assert_eq!(resolve_uid(&alice, PASSWD_TEXT), Ok(1000));
        assert_eq!(resolve_uid(&Principal::Id(42), ""), Ok(42));
        assert_eq!(
            resolve_gid(&Principal::Name(name("docker")), GROUP_TEXT),
            Ok(999)
        );
        assert_eq!(resolve_gid(&Principal::Id(7), "garbage"), Ok(7));
        assert_eq!(
            resolve_uid(&Principal::Name(name("bob")), PASSWD_TEXT),
            Err(
                "user bob is not in /etc/passwd; declare it under users, or use one the image has"
                    .into()
            )
        );
        assert_eq!(
            resolve_gid(&Principal::Name(name("wheel")), GROUP_TEXT),
            Err(
                "group wheel is not in /etc/group; declare it under groups, or use one the image has"
                    .into()
            )
        );
        // A root without the image's account files: the message says so,
        // not "declare root under users".
        let err = resolve_uid(&Principal::Name(name("root")), "").expect_err("no passwd");
        assert!(
            err.contains("lacks the image's account files") && !err.contains("declare it"),
            "{err}"
        );
        assert!(resolve_gid(&Principal::Name(name("x")), "x:x:1\n").is_err());
    }
}
