//! The account files as tables of lines: parsed, looked up, appended to and
//! rendered back byte for byte. Apart from the planner because it knows the
//! files' shapes (fields, ids, verbatim lines) and nothing of which
//! accounts a spec wants.

/// Where the user database lives on the node.
pub const PASSWD: &str = "/etc/passwd";
/// Where the group database lives on the node.
pub const GROUP: &str = "/etc/group";
/// Where user passwords live on the node.
pub const SHADOW: &str = "/etc/shadow";
/// Where group passwords and administrators live on the node.
pub const GSHADOW: &str = "/etc/gshadow";

/// Field indices: the uid in passwd, the gid in group (and the primary gid
/// in passwd), the member list in group and gshadow.
pub(super) const UID: usize = 2;
pub(super) const GID: usize = 2;
pub(super) const PASSWD_GID: usize = 3;
pub(super) const MEMBERS: usize = 3;

/// The four account files and their shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) struct Table {
    kind: Kind,
    lines: Vec<Line>,
    trailing_newline: bool,
}

impl Table {
    pub(super) fn parse(kind: Kind, text: &str) -> Result<Self, String> {
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

    pub(super) fn render(&self) -> String {
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
    pub(super) fn find(&self, name: &str) -> Option<&[String]> {
        self.entries().find(|fields| fields[0] == name)
    }

    pub(super) fn find_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|line| match line {
            Line::Entry(fields) if fields[0] == name => Some(fields),
            _ => None,
        })
    }

    /// The numeric field `field` of every entry (checked numeric by `parse`).
    pub(super) fn ids(&self, field: usize) -> impl Iterator<Item = u32> + '_ {
        self.entries()
            .filter_map(move |fields| fields[field].parse().ok())
    }

    pub(super) fn id_of(&self, name: &str, field: usize) -> Option<u32> {
        self.find(name)
            .and_then(|fields| fields[field].parse().ok())
    }

    /// The name of the first entry whose `field` is `id`.
    pub(super) fn name_with_id(&self, field: usize, id: u32) -> Option<&str> {
        self.entries()
            .find(|f| f[field].parse() == Ok(id))
            .map(|f| f[0].as_str())
    }

    pub(super) fn push(&mut self, fields: Vec<String>) {
        self.lines.push(Line::Entry(fields));
        self.trailing_newline = true;
    }

    /// Refuses to add `name` to a shadow file that already has it (a leftover
    /// from an account removed by hand).
    pub(super) fn refuse_stale(&self, name: &str, owner: &str) -> Result<(), String> {
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
pub(super) fn add_member(members: &mut String, user: &str) -> bool {
    if members.split(',').any(|m| m == user) {
        return false;
    }
    if !members.is_empty() {
        members.push(',');
    }
    members.push_str(user);
    true
}
