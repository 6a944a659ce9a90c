//! Every filesystem access of the agent goes through a [`Root`]: a directory
//! handle beneath which node paths are resolved. The same code provisions
//! `/`, a mounted image, or a test directory.
//!
//! Every path the agent writes, and every managed path it reads or compares,
//! is resolved component by component (`walk`): no symlink is followed
//! (a managed symlink is only ever the last component, handled as itself),
//! and a directory on the way must be owned by root or by the owner the spec
//! declares for it. [`Root::read`], for files the operator names (secrets,
//! CA bundles), uses `openat2(RESOLVE_BENEATH)`: links may lead anywhere
//! beneath the root, never out of it.
//!
//! Writes are durable and atomic: a temporary entry beside the target, with
//! its final owner and mode, fsync, rename, fsync of the directory, all
//! relative to one directory handle. Temporary names are derived from the
//! target's name, so a run killed half-way leaves nothing a later run cannot
//! find and replace.

pub mod attr;
pub mod failpoint;
mod walk;
mod write;
pub mod xattr;

pub use walk::Dir;
pub use write::{Staged, temp_name};

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode as NixMode, SFlag};
use ring::digest;

use crate::types::NodePath;

/// What kind of filesystem entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Link,
    /// Anything else (device, socket, fifo).
    Other,
}

/// An entry as found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

/// A filesystem error with the node path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RootError {
    /// The node path.
    pub path: String,
    /// What failed.
    pub reason: String,
}

fn err(path: &NodePath, what: &str, e: impl std::fmt::Display) -> RootError {
    RootError {
        path: path.to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// A directory handle that node paths are resolved beneath.
#[derive(Debug)]
pub struct Root {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    walker: Mutex<walk::Walker>,
}

impl Root {
    /// Opens `path` (trusted: it comes from the operator) as the root.
    pub fn open(path: &Path) -> Result<Self, RootError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            NixMode::empty(),
        )
        .map_err(|e| RootError {
            path: path.display().to_string(),
            reason: format!("cannot open root: {e}"),
        })?;
        Ok(Self {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
            walker: Mutex::default(),
        })
    }

    /// The root's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root, following symlinks only while they
    /// stay beneath it: for files the operator names, never managed paths.
    fn open_beneath(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return nix::fcntl::openat(
                self.fd.as_fd(),
                ".",
                flags | OFlag::O_CLOEXEC,
                NixMode::empty(),
            );
        }
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        nix::fcntl::openat2(self.fd.as_fd(), rel, how)
    }

    /// Opens `path` beneath the root with raw `open` flags (for callers that
    /// need an fd of their own: ioctls, mounts, inotify), resolved strictly
    /// and not following a final symlink either.
    pub fn open_raw(&self, path: &NodePath, flags: OFlag) -> nix::Result<OwnedFd> {
        let Some(parent) = path.parent() else {
            return self.top().open("", flags);
        };
        match self.find_dir(&parent) {
            Ok(Some(dir)) => dir.open(path.file_name(), flags),
            Ok(None) => Err(Errno::ENOENT),
            Err(refusal) => Err(refusal.errno()),
        }
    }

    /// `lstat` of `path`; `None` when it does not exist (or its parent does
    /// not). A directory on the way that the strict walk refuses (a symlink,
    /// a foreign owner) is an error.
    pub fn observe(&self, path: &NodePath) -> Result<Option<Observed>, RootError> {
        if path.as_str() == "/" {
            let st =
                nix::sys::stat::fstat(self.fd.as_fd()).map_err(|e| err(path, "cannot stat", e))?;
            return Ok(Some(observed(&st)));
        }
        let Some((dir, name)) = self.parent_of(path)? else {
            return Ok(None);
        };
        dir.stat(name)
            .map(|st| st.as_ref().map(observed))
            .map_err(|e| err(path, "cannot stat", e))
    }

    /// Opens the entry `path` (not following it, nor any symlink on the way).
    fn open_entry(&self, path: &NodePath, flags: OFlag) -> Result<OwnedFd, RootError> {
        let (dir, name) = self.parent_dir(path)?;
        dir.open(name, flags)
            .map_err(|e| err(path, "cannot open", describe(e)))
    }

    /// Reads a whole regular file the operator names (not following a final
    /// symlink).
    pub fn read(&self, path: &NodePath, limit: u64) -> Result<Vec<u8>, RootError> {
        use std::io::Read as _;
        let fd = self
            .open_beneath(path.relative(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            .map_err(|e| err(path, "cannot open", describe(e)))?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(path, "cannot read", e))?;
        if bytes.len() as u64 > limit {
            return Err(err(path, "too large", format!("more than {limit} bytes")));
        }
        Ok(bytes)
    }

    /// Reads a file if it exists.
    pub fn read_optional(&self, path: &NodePath, limit: u64) -> Result<Option<Vec<u8>>, RootError> {
        match self.observe(path)? {
            None => Ok(None),
            Some(_) => self.read(path, limit).map(Some),
        }
    }

    /// SHA-256 of a managed regular file's content, streamed.
    pub fn sha256(&self, path: &NodePath) -> Result<[u8; 32], RootError> {
        use std::io::Read as _;
        let fd = self.open_entry(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)?;
        let mut file = std::fs::File::from(fd);
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| err(path, "cannot read", e))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(out)
    }

    /// The names in the managed directory `path`.
    pub fn list_dir(&self, path: &NodePath) -> Result<Vec<String>, RootError> {
        let fd = match path.parent() {
            Some(_) => self.open_entry(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?,
            None => self
                .top()
                .open("", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| err(path, "cannot open directory", describe(e)))?,
        };
        let dir = nix::dir::Dir::from_fd(fd).map_err(|e| err(path, "cannot list", e))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| err(path, "cannot list", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The target of the managed symlink `path`.
    pub fn read_link(&self, path: &NodePath) -> Result<String, RootError> {
        let (dir, name) = self.parent_dir(path)?;
        let target =
            nix::fcntl::readlinkat(dir.fd(), name).map_err(|e| err(path, "cannot read link", e))?;
        target
            .into_string()
            .map_err(|_| err(path, "link target", "not UTF-8"))
    }
}

fn observed(st: &FileStat) -> Observed {
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    };
    Observed {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
    }
}

fn describe(e: Errno) -> String {
    match e {
        Errno::EXDEV => "path leads outside the root (symlink or ..)".to_owned(),
        Errno::ELOOP => "a symlink is in the way".to_owned(),
        Errno::EPERM => "operation not permitted (needs root, or the path is immutable)".to_owned(),
        e => e.desc().to_owned(),
    }
}

/// SHA-256 of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Lowercase hex of bytes (digests in state and messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NodePath {
        NodePath::new(s).expect("valid path")
    }

    fn me() -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    #[test]
    fn a_received_file_is_moved_beside_its_target_or_left_for_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        let (uid, gid) = me();
        root.ensure_dir(&p("/srv"), 0o755, uid, gid).expect("mkdir");
        let target = p("/srv/app.bin");
        // Same filesystem: moved, with its mode, and put in place.
        let incoming = tempfile::tempdir_in(dir.path()).expect("staging dir");
        std::fs::write(incoming.path().join("12"), b"payload").expect("write");
        let from = std::fs::File::open(incoming.path()).expect("open staging dir");
        let staged = root
            .stage_moved(&target, from.as_fd(), "12", 0o640, uid, gid)
            .expect("move")
            .expect("same filesystem");
        assert!(!incoming.path().join("12").exists(), "moved, not copied");
        root.put_in_place(&staged).expect("rename");
        assert_eq!(root.read(&target, 100).expect("read"), b"payload");
        let o = root.observe(&target).expect("stat").expect("exists");
        assert_eq!((o.kind, o.mode), (Kind::File, 0o640));
        // Another filesystem (tmpfs): nothing moves; the caller copies.
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let device = |path: &Path| {
            std::fs::metadata(path).map(|m| {
                use std::os::unix::fs::MetadataExt as _;
                m.dev()
            })
        };
        if device(other.path()).ok() == device(dir.path()).ok() {
            return;
        }
        std::fs::write(other.path().join("13"), b"elsewhere").expect("write");
        let from = std::fs::File::open(other.path()).expect("open tmpfs dir");
        let moved = root
            .stage_moved(&p("/srv/other.bin"), from.as_fd(), "13", 0o644, uid, gid)
            .expect("no error across filesystems");
        assert!(moved.is_none(), "EXDEV asks for a copy");
        assert!(other.path().join("13").exists(), "the received file stays");
    }

    #[test]
    fn writes_files_links_and_directories_beneath_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        let (uid, gid) = me();
        root.ensure_dir(&p("/etc/app"), 0o750, uid, gid)
            .expect("mkdir -p");
        root.write_file(&p("/etc/app/app.conf"), b"hello\n", 0o640, uid, gid)
            .expect("write");
        root.write_link(&p("/etc/app/current"), "app.conf")
            .expect("link");
        assert_eq!(
            std::fs::read(dir.path().join("etc/app/app.conf")).expect("read"),
            b"hello\n"
        );
        let o = root
            .observe(&p("/etc/app/app.conf"))
            .expect("stat")
            .expect("exists");
        assert_eq!((o.kind, o.mode, o.size), (Kind::File, 0o640, 6));
        assert_eq!(
            root.observe(&p("/etc/app"))
                .expect("stat")
                .map(|o| (o.kind, o.mode)),
            Some((Kind::Directory, 0o750))
        );
        assert_eq!(
            root.read_link(&p("/etc/app/current")).expect("readlink"),
            "app.conf"
        );
        assert_eq!(
            root.observe(&p("/nope/x"))
                .expect("missing parent is absence"),
            None
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etc/app"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }

    #[test]
    fn no_symlink_is_followed_on_the_way_to_a_written_path() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape"))
            .expect("absolute link");
        std::os::unix::fs::symlink("../../..", dir.path().join("up")).expect("relative link");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        // A link that stays beneath the root is refused too.
        std::os::unix::fs::symlink("etc", dir.path().join("inside")).expect("inside link");
        let root = Root::open(dir.path()).expect("root");
        let (uid, gid) = me();
        for (target, link) in [
            ("/escape/pwned", "/escape"),
            ("/up/pwned", "/up"),
            ("/inside/pwned", "/inside"),
        ] {
            let e = root
                .write_file(&p(target), b"x", 0o644, uid, gid)
                .expect_err(target);
            assert!(
                e.to_string().contains(&format!("{link} is a symlink")),
                "{e}"
            );
            let e = root.observe(&p(target)).expect_err(target);
            assert!(e.reason.contains("is a symlink"), "{e}");
            assert!(
                root.ensure_dir(&p(&format!("{target}/d")), 0o755, uid, gid)
                    .is_err()
            );
        }
        let e = root.observe(&p("/inside/pwned")).expect_err("refused");
        assert!(e.reason.contains("name /etc/pwned in the spec"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("etc"))
                .expect("ls")
                .count(),
            0
        );
        // The managed symlink itself, as the last component, is fine.
        assert_eq!(
            root.observe(&p("/inside")).expect("lstat").map(|o| o.kind),
            Some(Kind::Link)
        );
    }

    #[test]
    fn a_directory_another_user_could_change_is_refused_unless_declared() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let root = Root::open(dir.path()).expect("root");
        let e = root
            .write_file(&p("/theirs/x"), b"x", 0o644, 0, 0)
            .expect_err("foreign owner");
        assert!(
            e.reason.contains("/theirs is owned by uid 65534, not root"),
            "{e}"
        );
        let e = root
            .write_file(&p("/open/x"), b"x", 0o644, 0, 0)
            .expect_err("open to all");
        assert!(e.reason.contains("/open is writable by every user"), "{e}");
        assert_eq!(std::fs::read_dir(&theirs).expect("ls").count(), 0);
        // Declared with that owner (and that mode), both are used.
        root.declare_owners([(p("/theirs"), 65534), (p("/open"), 0)]);
        root.write_file(&p("/theirs/x"), b"x", 0o644, 0, 0)
            .expect("declared owner");
        root.write_file(&p("/open/x"), b"x", 0o644, 0, 0)
            .expect("declared mode");
        assert_eq!(std::fs::read(theirs.join("x")).expect("read"), b"x");
    }

    #[test]
    fn a_directory_appears_whole_and_a_stale_temporary_one_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        let (uid, gid) = me();
        std::fs::create_dir(dir.path().join(temp_name("app"))).expect("stale temp dir");
        root.ensure_dir(&p("/app"), 0o751, uid, gid).expect("mkdir");
        let o = root.observe(&p("/app")).expect("stat").expect("exists");
        assert_eq!((o.kind, o.mode, o.uid), (Kind::Directory, 0o751, uid));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["app"], "no temporary directory left");
        // An existing one is re-asserted.
        std::fs::set_permissions(
            dir.path().join("app"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        root.ensure_dir(&p("/app"), 0o751, uid, gid).expect("again");
        let o = root.observe(&p("/app")).expect("stat").expect("exists");
        assert_eq!(o.mode, 0o751);
    }

    #[test]
    fn an_interrupted_write_is_cleaned_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(dir.path()).expect("root");
        let (uid, gid) = me();
        std::fs::write(dir.path().join(temp_name("f")), b"half").expect("stale temp");
        root.write_file(&p("/f"), b"whole", 0o644, uid, gid)
            .expect("write over stale temp");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
