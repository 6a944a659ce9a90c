//! Resolving a node path the strict way: one component at a time from the
//! root's handle, following no symlink, and refusing a directory on the way
//! that someone other than root (or the owner the spec declares for it)
//! could change. Every access to a managed path goes through the [`Dir`]
//! handles resolved here, so an entry's steps (stage, chown, chmod, rename,
//! lock) happen relative to the one directory that was checked, never by
//! looking its path up again.
//!
//! A handle stays shared while anything holds it: the entries of one
//! directory staged in one batch are all written, and renamed, in the
//! directory that was resolved first.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Weak};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;

use super::{Root, RootError, describe};
use crate::types::NodePath;

/// A directory beneath the root, reached without following a symlink.
#[derive(Debug, Clone)]
pub struct Dir {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) path: NodePath,
}

impl Dir {
    pub(super) fn new(fd: OwnedFd, path: NodePath) -> Self {
        Self {
            fd: Arc::new(fd),
            path,
        }
    }

    /// The directory's node path.
    pub fn path(&self) -> &NodePath {
        &self.path
    }

    /// The handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the entry `name` of this directory with `flags`, following no
    /// symlink (a final one included).
    pub fn open(&self, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        if name.is_empty() {
            return nix::fcntl::openat(
                self.fd(),
                ".",
                flags | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            );
        }
        let how = OpenHow::new()
            .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(strict());
        nix::fcntl::openat2(self.fd(), name, how)
    }

    /// Creates the file `name` for writing (mode 0600 until its owner and
    /// mode are set); it must not exist.
    pub fn create(&self, name: &str) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(nix::sys::stat::Mode::from_bits_truncate(0o600))
            .resolve(strict());
        nix::fcntl::openat2(self.fd(), name, how)
    }

    /// `lstat` of the entry `name`; `None` when there is none.
    pub fn stat(&self, name: &str) -> nix::Result<Option<nix::sys::stat::FileStat>> {
        match nix::sys::stat::fstatat(self.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn strict() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// What the resolver remembers: who may own which directory, and the
/// handles still held.
#[derive(Debug, Default)]
pub(super) struct Walker {
    /// Directories the spec (or the recorded manifest) declares, by owner.
    owners: BTreeMap<NodePath, u32>,
    held: HashMap<NodePath, Weak<OwnedFd>>,
}

/// Why a directory on the way to a path was not used.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A symlink, with its target.
    Link { at: NodePath, target: String },
    /// Owned by someone who is neither root nor its declared owner.
    Owner {
        at: NodePath,
        uid: u32,
        declared: Option<u32>,
    },
    /// Writable by every user, without the sticky bit.
    OpenToAll { at: NodePath, mode: u32 },
    /// Something other than a directory.
    NotDir { at: NodePath },
    /// The system refused.
    Io { at: NodePath, errno: Errno },
}

impl Refusal {
    /// The errno closest to the refusal, for callers that only branch on one.
    pub(super) fn errno(&self) -> Errno {
        match self {
            Refusal::Link { .. } => Errno::ELOOP,
            Refusal::Owner { .. } | Refusal::OpenToAll { .. } => Errno::EACCES,
            Refusal::NotDir { .. } => Errno::ENOTDIR,
            Refusal::Io { errno, .. } => *errno,
        }
    }

    /// The error for an access to `entry` that this refusal stopped.
    pub(super) fn error(self, entry: &NodePath) -> RootError {
        let reason = match self {
            Refusal::Link { at, target } => {
                let instead = match unlinked(&at, &target, entry) {
                    Some(path) if path != *entry => {
                        format!("; name {path} in the spec if that is the path meant")
                    }
                    _ => String::new(),
                };
                format!(
                    "{at} is a symlink (to {target}): driftless follows no symlink on the way \
                     to a path it manages{instead}"
                )
            }
            Refusal::Owner { at, uid, declared } => {
                let allowed = match declared {
                    Some(d) => format!("root or its declared owner {d}"),
                    None => "root".to_owned(),
                };
                format!(
                    "{at} is owned by uid {uid}, not {allowed}: its owner could redirect the \
                     write; give it to root, or declare it in the spec with the owner it is meant to have"
                )
            }
            Refusal::OpenToAll { at, mode } => format!(
                "{at} is writable by every user (mode {mode:04o}, no sticky bit): anyone could \
                 swap what lies beneath it; tighten its mode, or declare it in the spec"
            ),
            Refusal::NotDir { at } => format!("{at} is not a directory"),
            Refusal::Io { at, errno } => format!("cannot open {at}: {}", describe(errno)),
        };
        RootError {
            path: entry.to_string(),
            reason,
        }
    }
}

/// `entry` with the symlink at `at` (pointing to `target`) replaced by
/// where it leads, worked out on the text alone; `None` when that is not a
/// valid node path.
fn unlinked(at: &NodePath, target: &str, entry: &NodePath) -> Option<NodePath> {
    let rest = entry.as_str().strip_prefix(at.as_str())?;
    let mut parts: Vec<String> = Vec::new();
    if !target.starts_with('/') {
        let parent = at.parent()?;
        parts.extend(
            parent
                .as_str()
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        );
    }
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c.to_owned()),
        }
    }
    let text = match (parts.is_empty(), rest.is_empty()) {
        // The link leads to the root itself.
        (true, true) => "/".to_owned(),
        (true, false) => rest.to_owned(),
        (false, _) => format!("/{}{rest}", parts.join("/")),
    };
    NodePath::new(&text).ok()
}

impl Root {
    /// Sets the owners the spec declares for its directories: a directory on
    /// the way to a managed path must be owned by root (or by the caller,
    /// for an unprivileged apply into a scratch root) or by its declared
    /// owner. Forgets the handles resolved under the previous declaration.
    pub fn declare_owners(&self, owners: impl IntoIterator<Item = (NodePath, u32)>) {
        let mut walker = self.walker();
        walker.owners = owners.into_iter().collect();
        walker.held.clear();
    }

    pub(super) fn walker(&self) -> std::sync::MutexGuard<'_, Walker> {
        // A panic while holding it leaves nothing half-done: the map is a cache.
        self.walker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The root itself as a [`Dir`].
    pub(super) fn top(&self) -> Dir {
        Dir {
            fd: Arc::clone(&self.fd),
            path: NodePath::new("/").unwrap_or_else(|_| unreachable!("valid constant")),
        }
    }

    /// The directory `path`, resolved strictly; `None` when it, or a
    /// directory above it, does not exist.
    pub(super) fn find_dir(&self, path: &NodePath) -> Result<Option<Dir>, Refusal> {
        let mut chain = path.ancestors();
        if path.as_str() != "/" {
            chain.push(path.clone());
        }
        let me = nix::unistd::geteuid().as_raw();
        let mut walker = self.walker();
        // Start from the deepest directory still held.
        let mut current = self.top();
        let mut from = 0;
        for (i, p) in chain.iter().enumerate().rev() {
            if let Some(fd) = walker.held.get(p).and_then(Weak::upgrade) {
                current = Dir {
                    fd,
                    path: p.clone(),
                };
                from = i + 1;
                break;
            }
        }
        for p in &chain[from..] {
            let Some(next) = open_component(&current, p, &walker.owners, me)? else {
                return Ok(None);
            };
            if walker.held.len() > 4096 {
                walker.held.retain(|_, w| w.strong_count() > 0);
            }
            walker.held.insert(p.clone(), Arc::downgrade(&next.fd));
            current = next;
        }
        Ok(Some(current))
    }

    /// The directory `path`, resolved strictly; an error when it is missing.
    pub fn dir(&self, path: &NodePath) -> Result<Dir, RootError> {
        match self.find_dir(path) {
            Ok(Some(dir)) => Ok(dir),
            Ok(None) => Err(RootError {
                path: path.to_string(),
                reason: "cannot open directory: it does not exist".into(),
            }),
            Err(refusal) => Err(refusal.error(path)),
        }
    }

    /// The parent directory of `entry` (not `/`) and the entry's name in it;
    /// `None` when the parent does not exist.
    pub(super) fn parent_of<'p>(
        &self,
        entry: &'p NodePath,
    ) -> Result<Option<(Dir, &'p str)>, RootError> {
        let parent = entry.parent().ok_or_else(|| RootError {
            path: entry.to_string(),
            reason: "invalid: the root itself".into(),
        })?;
        match self.find_dir(&parent) {
            Ok(found) => Ok(found.map(|dir| (dir, entry.file_name()))),
            Err(refusal) => Err(refusal.error(entry)),
        }
    }

    /// [`Root::parent_of`], with a missing parent an error.
    pub(super) fn parent_dir<'p>(&self, entry: &'p NodePath) -> Result<(Dir, &'p str), RootError> {
        self.parent_of(entry)?.ok_or_else(|| RootError {
            path: entry.to_string(),
            reason: "its parent directory does not exist".into(),
        })
    }
}

/// Opens the directory `path` (the next component below `parent`) and
/// checks who could change it.
fn open_component(
    parent: &Dir,
    path: &NodePath,
    owners: &BTreeMap<NodePath, u32>,
    me: u32,
) -> Result<Option<Dir>, Refusal> {
    let name = path.file_name();
    let fd = match parent.open(name, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            let is_link = parent
                .stat(name)
                .ok()
                .flatten()
                .is_some_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits());
            if is_link {
                let target = nix::fcntl::readlinkat(parent.fd(), name)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".into());
                return Err(Refusal::Link {
                    at: path.clone(),
                    target,
                });
            }
            return Err(if errno == Errno::ENOTDIR {
                Refusal::NotDir { at: path.clone() }
            } else {
                Refusal::Io {
                    at: path.clone(),
                    errno,
                }
            });
        }
        Err(errno) => {
            return Err(Refusal::Io {
                at: path.clone(),
                errno,
            });
        }
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|errno| Refusal::Io {
        at: path.clone(),
        errno,
    })?;
    let declared = owners.get(path).copied();
    if st.st_uid != 0 && st.st_uid != me && declared != Some(st.st_uid) {
        return Err(Refusal::Owner {
            at: path.clone(),
            uid: st.st_uid,
            declared,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 && declared.is_none() {
        return Err(Refusal::OpenToAll {
            at: path.clone(),
            mode,
        });
    }
    Ok(Some(Dir::new(fd, path.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NodePath {
        NodePath::new(s).expect("valid path")
    }

    #[test]
    fn a_link_is_named_with_the_path_it_leads_to() {
        let cases = [
            ("/bin", "usr/bin", "/bin/sh", Some("/usr/bin/sh")),
            ("/bin", "/usr/bin", "/bin/sh", Some("/usr/bin/sh")),
            (
                "/home/app/.config",
                "../../etc",
                "/home/app/.config/systemd",
                Some("/etc/systemd"),
            ),
            ("/a/b", "../../../..", "/a/b/c", Some("/c")),
            ("/lib", "usr/lib", "/lib", Some("/usr/lib")),
        ];
        for (at, target, entry, want) in cases {
            assert_eq!(
                unlinked(&p(at), target, &p(entry)).map(|n| n.to_string()),
                want.map(str::to_owned),
                "{at} -> {target}"
            );
        }
    }
}
