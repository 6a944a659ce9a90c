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

use std::collections::BTreeSet;

use crate::release::spec::{GroupSpec, Principal, UserSpec};

/// Where the user database lives on the node.
pub const PASSWD: &str = "/etc/passwd";
/// Where the group database lives on the node.
pub const GROUP: &str = "/etc/group";
/// Where user passwords live on the node.
pub const SHADOW: &str = "/etc/shadow";
/// Where group passwords and administrators live on the node.
pub const GSHADOW: &str = "/etc/gshadow";

/// System account ids, allocated from the top down (`SYS_UID_MIN`..`SYS_UID_MAX`).
const SYSTEM_IDS: (u32, u32) = (100, 999);
/// Normal account ids, allocated from the bottom up (`UID_MIN`..`UID_MAX`).
const NORMAL_IDS: (u32, u32) = (1000, 60000);

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
        Principal::Name(name) => Table::parse(Kind::Passwd, passwd)?
            .id_of(name.as_str(), UID)
            .ok_or_else(|| {
                format!(
                    "user {} is not in {PASSWD}; declare it under users",
                    name.as_str()
                )
            }),
    }
}

/// The gid of a group: a numeric id as is, a name looked up in `group` (the
/// text of `/etc/group`).
pub fn resolve_gid(p: &Principal, group: &str) -> Result<u32, String> {
    match p {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => Table::parse(Kind::Group, group)?
            .id_of(name.as_str(), GID)
            .ok_or_else(|| {
                format!(
                    "group {} is not in {GROUP}; declare it under groups",
                    name.as_str()
                )
            }),
    }
}

/// Field indices: the uid in passwd, the gid in group (and the primary gid
/// in passwd), the member list in group and gshadow.
const UID: usize = 2;
const GID: usize = 2;
const PASSWD_GID: usize = 3;
const MEMBERS: usize = 3;

/// The four account files and their shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Passwd,
    Group,
    Shadow,
    Gshadow,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Passwd => PASSWD,
            Kind::Group => GROUP,
            Kind::Shadow => SHADOW,
            Kind::Gshadow => GSHADOW,
        }
    }

    fn fields(self) -> usize {
        match self {
            Kind::Passwd => 7,
            Kind::Group | Kind::Gshadow => 4,
            Kind::Shadow => 9,
        }
    }

    /// Fields that must be numeric ids, with their names for messages.
    fn ids(self) -> &'static [(usize, &'static str)] {
        match self {
            Kind::Passwd => &[(UID, "uid"), (PASSWD_GID, "gid")],
            Kind::Group => &[(GID, "gid")],
            Kind::Shadow | Kind::Gshadow => &[],
        }
    }
}

/// One line of an account file.
#[derive(Debug, Clone)]
enum Line {
    /// An account: the colon-separated fields.
    Entry(Vec<String>),
    /// A blank line, a comment or an NIS `+`/`-` line, kept as is.
    Verbatim(String),
}

/// An account file as lines, rendered back exactly as it was read.
#[derive(Debug, Clone)]
struct Table {
    kind: Kind,
    lines: Vec<Line>,
    trailing_newline: bool,
}

impl Table {
    fn parse(kind: Kind, text: &str) -> Result<Self, String> {
        let (body, trailing_newline) = match text.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let mut lines = Vec::new();
        if !text.is_empty() {
            for (index, raw) in body.split('\n').enumerate() {
                let start = raw.trim_start();
                if start.is_empty() || start.starts_with(['#', '+', '-']) {
                    lines.push(Line::Verbatim(raw.to_owned()));
                    continue;
                }
                let fields: Vec<String> = raw.split(':').map(str::to_owned).collect();
                let at = format!("{} line {}", kind.path(), index + 1);
                if fields.len() != kind.fields() {
                    return Err(format!(
                        "{at}: expected {} fields separated by ':', found {}",
                        kind.fields(),
                        fields.len()
                    ));
                }
                for &(field, what) in kind.ids() {
                    if fields[field].parse::<u32>().is_err() {
                        return Err(format!("{at}: {what} {:?} is not a number", fields[field]));
                    }
                }
                lines.push(Line::Entry(fields));
            }
        }
        Ok(Table {
            kind,
            lines,
            trailing_newline,
        })
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (index, line) in self.lines.iter().enumerate() {
            if index > 0 {
                out.push('\n');
            }
            match line {
                Line::Entry(fields) => out.push_str(&fields.join(":")),
                Line::Verbatim(text) => out.push_str(text),
            }
        }
        if self.trailing_newline {
            out.push('\n');
        }
        out
    }

    fn entries(&self) -> impl Iterator<Item = &[String]> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(fields) => Some(fields.as_slice()),
            Line::Verbatim(_) => None,
        })
    }

    /// The first entry named `name`, as the C library's lookups find it.
    fn find(&self, name: &str) -> Option<&[String]> {
        self.entries().find(|fields| fields[0] == name)
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|line| match line {
            Line::Entry(fields) if fields[0] == name => Some(fields),
            _ => None,
        })
    }

    /// The numeric field `field` of every entry (checked numeric by `parse`).
    fn ids(&self, field: usize) -> impl Iterator<Item = u32> + '_ {
        self.entries()
            .filter_map(move |fields| fields[field].parse().ok())
    }

    fn id_of(&self, name: &str, field: usize) -> Option<u32> {
        self.find(name)
            .and_then(|fields| fields[field].parse().ok())
    }

    /// The name of the first entry whose `field` is `id`.
    fn name_with_id(&self, field: usize, id: u32) -> Option<&str> {
        self.entries()
            .find(|f| f[field].parse() == Ok(id))
            .map(|f| f[0].as_str())
    }

    fn push(&mut self, fields: Vec<String>) {
        self.lines.push(Line::Entry(fields));
        self.trailing_newline = true;
    }

    /// Refuses to add `name` to a shadow file that already has it (a leftover
    /// from an account removed by hand).
    fn refuse_stale(&self, name: &str, owner: &str) -> Result<(), String> {
        match self.find(name) {
            Some(_) => Err(format!(
                "{name}: {} already has a line for it but {owner} does not; remove the stale \
                 line or add the account to {owner}",
                self.kind.path()
            )),
            None => Ok(()),
        }
    }
}

/// Adds `user` to a comma-separated member list; false when already there.
fn add_member(members: &mut String, user: &str) -> bool {
    if members.split(',').any(|m| m == user) {
        return false;
    }
    if !members.is_empty() {
        members.push(',');
    }
    members.push_str(user);
    true
}

struct Planner {
    passwd: Table,
    group: Table,
    shadow: Option<Table>,
    gshadow: Option<Table>,
    created_groups: Vec<String>,
    created_users: Vec<String>,
    changed: Vec<String>,
}

impl Planner {
    fn ensure_group(&mut self, spec: &GroupSpec) -> Result<(), String> {
        let name = spec.name.as_str();
        if let Some(gid) = self.group.id_of(name, GID) {
            return match spec.gid {
                Some(pinned) if pinned != gid => Err(format!(
                    "group {name}: the spec pins gid {pinned} but {GROUP} has it with gid {gid}"
                )),
                _ => {
                    self.complete_gshadow(name);
                    Ok(())
                }
            };
        }
        let gid = match spec.gid {
            Some(pinned) => {
                if let Some(other) = self.group.name_with_id(GID, pinned) {
                    return Err(format!(
                        "group {name}: gid {pinned} is already taken by group {other} in {GROUP}"
                    ));
                }
                pinned
            }
            None => self.allocate(spec.system, None, &format!("group {name}"))?,
        };
        self.add_group(name, gid)
    }

    fn ensure_user(&mut self, spec: &UserSpec) -> Result<(), String> {
        let name = spec.name.as_str();
        // A ':' or line break would split or add passwd lines.
        for (what, path) in [("home", &spec.home), ("shell", &spec.shell)] {
            if let Some(path) = path
                .as_ref()
                .filter(|p| p.as_str().contains([':', '\n', '\r']))
            {
                return Err(format!(
                    "user {name}: {what} {:?} must not contain ':' or a line break",
                    path.as_str()
                ));
            }
        }
        // The user's own group may exist from an interrupted run.
        if spec.group.is_none() && self.group.id_of(name, GID).is_some() {
            self.complete_gshadow(name);
        }
        match self.passwd.id_of(name, UID) {
            Some(uid) => {
                if let Some(pinned) = spec.uid.filter(|&pinned| pinned != uid) {
                    return Err(format!(
                        "user {name}: the spec pins uid {pinned} but {PASSWD} has it with uid {uid}"
                    ));
                }
                self.complete_shadow(spec);
            }
            None => self.create_user(spec)?,
        }
        for supplementary in &spec.groups {
            let group = supplementary.as_str();
            let Some(fields) = self.group.find_mut(group) else {
                return Err(format!(
                    "user {name}: supplementary group {group} is not in {GROUP}; declare it under \
                     groups"
                ));
            };
            let mut added = add_member(&mut fields[MEMBERS], name);
            if let Some(fields) = self.gshadow.as_mut().and_then(|t| t.find_mut(group)) {
                added |= add_member(&mut fields[MEMBERS], name);
            }
            if added {
                self.changed.push(format!("{name}: added to group {group}"));
            }
        }
        Ok(())
    }

    fn create_user(&mut self, spec: &UserSpec) -> Result<(), String> {
        let name = spec.name.as_str();
        if let Some(shadow) = &self.shadow {
            shadow.refuse_stale(name, PASSWD)?;
        }
        let primary = spec.group.as_ref().map_or(name, |g| g.as_str());
        let existing_gid = self.group.id_of(primary, GID);
        if spec.group.is_some() && existing_gid.is_none() {
            return Err(format!(
                "user {name}: primary group {primary} is not in {GROUP}; declare it under groups"
            ));
        }
        let uid = match spec.uid {
            Some(pinned) => {
                if let Some(other) = self.passwd.name_with_id(UID, pinned) {
                    return Err(format!(
                        "user {name}: uid {pinned} is already taken by user {other} in {PASSWD}"
                    ));
                }
                pinned
            }
            None => {
                // Pair the uid with the gid of the user's own group.
                let own_gid = existing_gid.filter(|_| primary == name);
                self.allocate(spec.system, own_gid, &format!("user {name}"))?
            }
        };
        let gid = match existing_gid {
            Some(gid) => gid,
            None => {
                let gid = if self.gid_in_use(uid) {
                    self.allocate(spec.system, None, &format!("group {name}"))?
                } else {
                    uid
                };
                self.add_group(name, gid)?;
                gid
            }
        };
        let default_home;
        let home = match &spec.home {
            Some(home) => home.as_str(),
            None if spec.system => "/nonexistent",
            None => {
                default_home = format!("/home/{name}");
                &default_home
            }
        };
        let shell = match &spec.shell {
            Some(shell) => shell.as_str(),
            None if spec.system => "/usr/sbin/nologin",
            None => "/bin/sh",
        };
        // No password ever. `!` marks the account locked, which OpenSSH
        // (without PAM) also takes to forbid key logins; a user given SSH
        // keys gets `*` instead: no password, but not locked.
        let no_password = if spec.ssh_authorized_keys.is_empty() {
            "!"
        } else {
            "*"
        };
        let password = if self.shadow.is_some() {
            "x"
        } else {
            no_password
        };
        let (uid, gid) = (uid.to_string(), gid.to_string());
        self.passwd
            .push(fields(&[name, password, &uid, &gid, "", home, shell]));
        if let Some(shadow) = &mut self.shadow {
            shadow.push(fields(&[name, no_password, "", "", "", "", "", "", ""]));
        }
        self.created_users.push(name.to_owned());
        Ok(())
    }

    /// An apply interrupted between writing `/etc/group` and `/etc/gshadow`
    /// leaves a group the spec creates without its gshadow line: add it, as
    /// the uninterrupted run would have, so every run ends the same.
    fn complete_gshadow(&mut self, name: &str) {
        if let Some(gshadow) = self.gshadow.as_mut().filter(|t| t.find(name).is_none()) {
            gshadow.push(fields(&[name, "!", "", ""]));
            self.changed
                .push(format!("{name}: added missing {GSHADOW} line"));
        }
    }

    /// Likewise for a user the spec creates and `/etc/shadow`.
    fn complete_shadow(&mut self, spec: &UserSpec) {
        let name = spec.name.as_str();
        let no_password = if spec.ssh_authorized_keys.is_empty() {
            "!"
        } else {
            "*"
        };
        if let Some(shadow) = self.shadow.as_mut().filter(|t| t.find(name).is_none()) {
            shadow.push(fields(&[name, no_password, "", "", "", "", "", "", ""]));
            self.changed
                .push(format!("{name}: added missing {SHADOW} line"));
        }
    }

    fn add_group(&mut self, name: &str, gid: u32) -> Result<(), String> {
        if let Some(gshadow) = &self.gshadow {
            gshadow.refuse_stale(name, GROUP)?;
        }
        let password = if self.gshadow.is_some() { "x" } else { "!" };
        self.group
            .push(fields(&[name, password, &gid.to_string(), ""]));
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.push(fields(&[name, "!", "", ""]));
        }
        self.created_groups.push(name.to_owned());
        Ok(())
    }

    /// True when `id` is a gid in the group file or a primary gid in passwd.
    fn gid_in_use(&self, id: u32) -> bool {
        self.group
            .ids(GID)
            .chain(self.passwd.ids(PASSWD_GID))
            .any(|g| g == id)
    }

    /// The first id free in both files, in the system or normal range;
    /// `prefer` when it is free as a uid and in that range.
    fn allocate(&self, system: bool, prefer: Option<u32>, what: &str) -> Result<u32, String> {
        let (low, high) = if system { SYSTEM_IDS } else { NORMAL_IDS };
        let uids: BTreeSet<u32> = self.passwd.ids(UID).collect();
        if let Some(id) = prefer.filter(|id| (low..=high).contains(id) && !uids.contains(id)) {
            return Ok(id);
        }
        let used: BTreeSet<u32> = uids
            .into_iter()
            .chain(self.passwd.ids(PASSWD_GID))
            .chain(self.group.ids(GID))
            .collect();
        let free = |id: &u32| !used.contains(id);
        let found = if system {
            (low..=high).rev().find(free)
        } else {
            (low..=high).find(free)
        };
        found.ok_or_else(|| {
            let kind = if system { "system" } else { "normal" };
            format!("{what}: no free {kind} id left between {low} and {high}")
        })
    }
}

fn fields(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
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
            Err("user bob is not in /etc/passwd; declare it under users".into())
        );
        assert_eq!(
            resolve_gid(&Principal::Name(name("wheel")), GROUP_TEXT),
            Err("group wheel is not in /etc/group; declare it under groups".into())
        );
        assert!(resolve_gid(&Principal::Name(name("x")), "x:x:1\n").is_err());
    }
}
