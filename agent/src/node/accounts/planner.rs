//! The planner behind [`plan_accounts`](super::plan_accounts): which groups
//! and users are added, with which ids, and which memberships they gain.
//! Apart from the table model because it decides, as `useradd` and
//! `groupadd` would, while the tables only hold and edit lines.

use std::collections::BTreeSet;

use super::table::{
    GID, GROUP, GSHADOW, MEMBERS, PASSWD, PASSWD_GID, SHADOW, Table, UID, add_member,
};
use crate::release::spec::{GroupSpec, UserSpec};

/// System account ids, allocated from the top down (`SYS_UID_MIN`..`SYS_UID_MAX`).
const SYSTEM_IDS: (u32, u32) = (100, 999);
/// Normal account ids, allocated from the bottom up (`UID_MIN`..`UID_MAX`).
const NORMAL_IDS: (u32, u32) = (1000, 60000);

pub(super) struct Planner {
    pub(super) passwd: Table,
    pub(super) group: Table,
    pub(super) shadow: Option<Table>,
    pub(super) gshadow: Option<Table>,
    pub(super) created_groups: Vec<String>,
    pub(super) created_users: Vec<String>,
    pub(super) changed: Vec<String>,
}

impl Planner {
    pub(super) fn ensure_group(&mut self, spec: &GroupSpec) -> Result<(), String> {
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

    pub(super) fn ensure_user(&mut self, spec: &UserSpec) -> Result<(), String> {
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
