//! The drift detector: sees a change to a managed path within a second
//! through inotify on the managed paths' directories, and also rescans
//! everything on an interval, because inotify can overflow, and misses
//! changes made under another mount or while it was not running. Idle, it
//! sleeps in `poll(2)`: no CPU is spent between events.
//!
//! Each difference is reported once, until it goes away; the caller logs it
//! (with a stable message id) and records it.
//!
//! Where inotify cannot start (its per-user instance limit, 128 by default,
//! taken by other programs), the detector still runs on the rescans alone:
//! the watcher it serves must go on polling the channel, or the node would
//! never ask to be replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::record::drift::{self, Difference, Part};
use crate::record::state::State;
use crate::root::{Kind, Root};
use crate::types::NodePath;

/// The detector could not watch the node.
#[derive(Debug, thiserror::Error)]
#[error("drift detector: {0}")]
pub struct DetectError(String);

/// Watches a node for drift from its recorded state.
pub struct Detector {
    root: Root,
    state: State,
    /// `None` when inotify could not start: rescans only.
    inotify: Option<Inotify>,
    watched: HashMap<WatchDescriptor, NodePath>,
    /// Manifest indices by the directory their change events arrive in.
    by_directory: BTreeMap<NodePath, Vec<usize>>,
    /// The parts of the effective configuration a directory's events concern.
    parts: BTreeMap<NodePath, BTreeSet<Part>>,
    /// Every managed path, so that a partial check never takes the rest of
    /// the manifest for unmanaged entries.
    managed: HashSet<String>,
    /// The node's mount table, which `poll(2)` flags when a mount comes,
    /// goes or changes (`POLLPRI`).
    mountinfo: Option<std::fs::File>,
    reported: BTreeSet<(String, &'static str)>,
    rescan_every: Duration,
    next_rescan: Instant,
}

const EVENTS: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Detector {
    /// Starts watching the node under `root` for drift from `state`.
    pub fn new(root: Root, state: State, rescan_every: Duration) -> Result<Self, DetectError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC);
        Ok(Self::with_inotify(root, state, rescan_every, inotify))
    }

    /// [`Detector::new`] with inotify as it started, or why it did not.
    fn with_inotify(
        root: Root,
        state: State,
        rescan_every: Duration,
        inotify: nix::Result<Inotify>,
    ) -> Self {
        let inotify = inotify
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot start inotify ({e}; see fs.inotify.max_user_instances): \
                     drift is found by the full rescan every {}s only",
                    rescan_every.as_secs()
                );
            })
            .ok();
        drift::declare(&root, &state);
        let mut by_directory: BTreeMap<NodePath, Vec<usize>> = BTreeMap::new();
        for (i, entry) in state.manifest.iter().enumerate() {
            if let Some(parent) = entry.path.parent() {
                by_directory.entry(parent).or_default().push(i);
            }
            if entry.kind == Kind::Directory {
                by_directory.entry(entry.path.clone()).or_default().push(i);
            }
        }
        let mountinfo = drift::mounts::MOUNTINFO
            .iter()
            .find_map(|p| std::fs::File::open(p).ok());
        let mut detector = Self {
            managed: drift::managed_paths(&state),
            root,
            state,
            inotify,
            watched: HashMap::new(),
            by_directory,
            parts: BTreeMap::new(),
            mountinfo,
            reported: BTreeSet::new(),
            rescan_every,
            next_rescan: Instant::now() + rescan_every,
        };
        detector.file_parts();
        let directories: BTreeSet<NodePath> = detector
            .by_directory
            .keys()
            .chain(detector.parts.keys())
            .cloned()
            .collect();
        for dir in directories {
            detector.watch(&dir);
        }
        detector
    }

    /// Files the directories whose events concern a part of the effective
    /// configuration: the account files' directory, the unit search and
    /// drop-in directories that exist now.
    fn file_parts(&mut self) {
        if self.state.effective.accounts.is_some() {
            for file in drift::accounts::FILES {
                if let Some(dir) = NodePath::new(file).ok().and_then(|p| p.parent()) {
                    self.parts.entry(dir).or_default().insert(Part::Accounts);
                }
            }
        }
        for dir in drift::units::watch_dirs(&self.root, &self.state.effective.units) {
            self.parts.entry(dir).or_default().insert(Part::Units);
        }
    }

    /// Adds a watch on `dir` (resolved beneath the root). A directory that
    /// does not exist now is caught by the parent's events and the rescan.
    fn watch(&mut self, dir: &NodePath) {
        let Ok(fd) = self
            .root
            .open_raw(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
        else {
            return;
        };
        // The fd's magic link names exactly the directory found beneath the root.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let Some(inotify) = &self.inotify else {
            return;
        };
        if let Ok(wd) = inotify.add_watch(path.as_str(), EVENTS) {
            self.watched.insert(wd, dir.clone());
        }
    }

    /// Compares the whole node with its state now; returns differences not
    /// reported before.
    pub fn rescan(&mut self) -> Vec<Difference> {
        self.next_rescan = Instant::now() + self.rescan_every;
        let all = drift::compare(&self.root, &self.state);
        let new = self.fresh(all.clone());
        // What a full scan no longer finds was repaired: report it again if it recurs.
        self.reported = all.into_iter().map(|d| (d.path, d.aspect)).collect();
        new
    }

    /// Waits up to `timeout` for changes; returns the new differences they
    /// caused (possibly none). Runs the full rescan when it is due.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Difference>, DetectError> {
        let now = Instant::now();
        if now >= self.next_rescan {
            return Ok(self.rescan());
        }
        let wait = timeout.min(self.next_rescan - now);
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let (inotify_ready, mounts_changed) = {
            let mut fds = Vec::new();
            if let Some(inotify) = &self.inotify {
                fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
            }
            if let Some(info) = &self.mountinfo {
                fds.push(PollFd::new(info.as_fd(), PollFlags::POLLPRI));
            }
            if fds.is_empty() {
                std::thread::sleep(wait);
                return Ok(Vec::new());
            }
            match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
                Ok(0) => return Ok(Vec::new()),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
                Err(e) => return Err(DetectError(format!("poll: {e}"))),
            }
            let ready = |fd: Option<&PollFd<'_>>, flags: PollFlags| {
                fd.and_then(PollFd::revents)
                    .is_some_and(|r| r.intersects(flags))
            };
            let has_inotify = self.inotify.is_some();
            let inotify_fd = has_inotify.then(|| &fds[0]);
            let mounts_fd = self.mountinfo.as_ref().map(|_| &fds[fds.len() - 1]);
            (
                ready(inotify_fd, PollFlags::POLLIN),
                ready(mounts_fd, PollFlags::POLLPRI | PollFlags::POLLERR),
            )
        };
        let mut found = Vec::new();
        if mounts_changed {
            found.extend(drift::compare_part(
                &self.root,
                &self.state,
                Part::Mounts,
                &self.managed,
            ));
        }
        if inotify_ready {
            match self.changed_directories()? {
                Some(touched) => found.extend(self.compare_touched(touched)),
                None => {
                    tracing::warn!("inotify queue overflowed; rescanning the whole node");
                    return Ok(self.rescan());
                }
            }
        }
        Ok(self.fresh(found))
    }

    /// The directories inotify reported changes in; `None` when its queue
    /// overflowed (then only a full rescan can tell).
    fn changed_directories(&mut self) -> Result<Option<BTreeSet<NodePath>>, DetectError> {
        let Some(inotify) = &self.inotify else {
            return Ok(Some(BTreeSet::new()));
        };
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Some(BTreeSet::new())),
            Err(e) => return Err(DetectError(format!("reading events: {e}"))),
        };
        let mut touched = BTreeSet::new();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                return Ok(None);
            }
            if let Some(dir) = self.watched.get(&event.wd) {
                touched.insert(dir.clone());
            }
        }
        Ok(Some(touched))
    }

    /// Compares what the changes in `touched` concern: the manifest entries
    /// filed under each directory, and the parts they belong to.
    fn compare_touched(&mut self, touched: BTreeSet<NodePath>) -> Vec<Difference> {
        let parts: BTreeSet<Part> = touched
            .iter()
            .filter_map(|dir| self.parts.get(dir))
            .flatten()
            .copied()
            .collect();
        if parts.contains(&Part::Units) {
            // A drop-in directory made now is watched before it is read, so
            // that a file written into it later is seen too.
            self.parts.retain(|_, p| {
                p.remove(&Part::Units);
                !p.is_empty()
            });
            self.file_parts();
            let dirs: Vec<NodePath> = self.parts.keys().cloned().collect();
            for dir in dirs {
                if !self.watched.values().any(|d| *d == dir) {
                    self.watch(&dir);
                }
            }
        }
        let mut indices: Vec<usize> = touched
            .iter()
            .filter_map(|dir| self.by_directory.get(dir))
            .flatten()
            .copied()
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let entries: Vec<_> = indices.iter().map(|&i| &self.state.manifest[i]).collect();
        let mut found = drift::compare_entries(&self.root, &self.state, &entries, &self.managed);
        for part in parts {
            found.extend(drift::compare_part(
                &self.root,
                &self.state,
                part,
                &self.managed,
            ));
        }
        // A directory that was replaced needs a new watch.
        for dir in touched {
            if !self.watched.values().any(|d| *d == dir) {
                self.watch(&dir);
            }
        }
        found
    }

    /// Keeps the differences not reported yet, and remembers them.
    fn fresh(&mut self, found: Vec<Difference>) -> Vec<Difference> {
        found
            .into_iter()
            .filter(|d| self.reported.insert((d.path.clone(), d.aspect)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::state::LockStatus;
    use crate::record::state::{ManifestEntry, PinnedRelease, Status};

    fn state_with(root: &std::path::Path, files: &[(&str, &[u8])]) -> State {
        let manifest = files
            .iter()
            .map(|(name, content)| {
                std::fs::write(root.join(name), content).expect("write fixture");
                let digest = ring::digest::digest(&ring::digest::SHA256, content);
                ManifestEntry {
                    path: NodePath::new(&format!("/{name}")).expect("valid"),
                    kind: Kind::File,
                    mode: None,
                    uid: None,
                    gid: None,
                    sha256: Some(crate::root::hex(digest.as_ref())),
                    target: None,
                    origin: "test".into(),
                    lock: LockStatus::Pending,
                    exclusive: false,
                    secret: None,
                }
            })
            .collect();
        State {
            version: 1,
            node_id: "test".into(),
            release: PinnedRelease {
                tag: "v1".into(),
                tag_object: String::new(),
                commit: String::new(),
                tree: String::new(),
                signer: String::new(),
                fingerprint: String::new(),
                signed_at: jiff::Timestamp::UNIX_EPOCH,
            },
            status: Status::Applied,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: None,
            manifest,
            read_only: Vec::new(),
            effective: Default::default(),
        }
    }

    #[test]
    fn sees_a_change_within_a_second_and_reports_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_with(dir.path(), &[("a.conf", b"one\n"), ("b.conf", b"two\n")]);
        let mut detector = Detector::new(
            Root::open(dir.path()).expect("root"),
            state,
            Duration::from_secs(3600),
        )
        .expect("detector");
        assert!(detector.rescan().is_empty(), "clean at start");
        std::fs::write(dir.path().join("b.conf"), b"changed\n").expect("drift");
        let started = Instant::now();
        let mut seen = Vec::new();
        while seen.is_empty() && started.elapsed() < Duration::from_secs(1) {
            seen = detector.poll(Duration::from_millis(100)).expect("poll");
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            (seen[0].path.as_str(), seen[0].aspect),
            ("/b.conf", "content")
        );
        std::fs::write(dir.path().join("b.conf"), b"changed again\n").expect("drift again");
        let again = detector.poll(Duration::from_millis(300)).expect("poll");
        assert!(again.is_empty(), "reported once: {again:?}");
    }

    #[test]
    fn a_rescan_finds_what_happened_while_nobody_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_with(dir.path(), &[("a.conf", b"one\n")]);
        std::fs::remove_file(dir.path().join("a.conf")).expect("drift while not watching");
        let mut detector = Detector::new(
            Root::open(dir.path()).expect("root"),
            state,
            Duration::from_millis(200),
        )
        .expect("detector");
        // No event will come; the interval rescan must find it.
        let started = Instant::now();
        let mut seen = Vec::new();
        while seen.is_empty() && started.elapsed() < Duration::from_secs(2) {
            seen = detector.poll(Duration::from_millis(100)).expect("poll");
        }
        assert_eq!(seen.first().map(|d| d.aspect), Some("missing"), "{seen:?}");
    }

    #[test]
    fn without_inotify_the_rescans_still_find_drift() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_with(dir.path(), &[("a.conf", b"one\n")]);
        let mut detector = Detector::with_inotify(
            Root::open(dir.path()).expect("root"),
            state,
            Duration::from_millis(300),
            Err(nix::errno::Errno::EMFILE),
        );
        // Nothing due: it waits instead of spinning. A change of the mount
        // table anywhere on the machine ends a wait early (the mountinfo
        // watch), so count the wakes over a window rather than time one.
        let started = Instant::now();
        let mut wakes = 0;
        while started.elapsed() < Duration::from_millis(100) {
            let found = detector.poll(Duration::from_millis(100)).expect("poll");
            assert!(found.is_empty(), "{found:?}");
            wakes += 1;
        }
        assert!(wakes <= 10, "{wakes} wakes in 100 ms: it spins");
        std::fs::write(dir.path().join("a.conf"), b"changed\n").expect("drift");
        let mut seen = Vec::new();
        while seen.is_empty() && started.elapsed() < Duration::from_secs(3) {
            seen = detector.poll(Duration::from_millis(100)).expect("poll");
        }
        assert_eq!(seen.first().map(|d| d.aspect), Some("content"), "{seen:?}");
    }
}
