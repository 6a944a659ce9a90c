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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::record::drift::{self, Difference};
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
        let mut by_directory: BTreeMap<NodePath, Vec<usize>> = BTreeMap::new();
        for (i, entry) in state.manifest.iter().enumerate() {
            if let Some(parent) = entry.path.parent() {
                by_directory.entry(parent).or_default().push(i);
            }
            if entry.kind == Kind::Directory {
                by_directory.entry(entry.path.clone()).or_default().push(i);
            }
        }
        let mut detector = Self {
            root,
            state,
            inotify,
            watched: HashMap::new(),
            by_directory,
            reported: BTreeSet::new(),
            rescan_every,
            next_rescan: Instant::now() + rescan_every,
        };
        let directories: Vec<NodePath> = detector.by_directory.keys().cloned().collect();
        for dir in directories {
            detector.watch(&dir);
        }
        detector
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
        let Some(inotify) = &self.inotify else {
            std::thread::sleep(wait);
            return Ok(Vec::new());
        };
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(DetectError(format!("poll: {e}"))),
        }
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Vec::new()),
            Err(e) => return Err(DetectError(format!("reading events: {e}"))),
        };
        let mut touched = BTreeSet::new();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                tracing::warn!("inotify queue overflowed; rescanning the whole node");
                return Ok(self.rescan());
            }
            if let Some(dir) = self.watched.get(&event.wd) {
                touched.insert(dir.clone());
            }
        }
        let mut found = Vec::new();
        for dir in &touched {
            let indices = self.by_directory.get(dir).cloned().unwrap_or_default();
            let partial = State {
                manifest: indices
                    .iter()
                    .map(|&i| self.state.manifest[i].clone())
                    .collect(),
                read_only: Vec::new(),
                ..self.state.clone()
            };
            found.extend(drift::compare(&self.root, &partial));
        }
        // A directory that was replaced needs a new watch.
        for dir in touched {
            if !self.watched.values().any(|d| *d == dir) {
                self.watch(&dir);
            }
        }
        Ok(self.fresh(found))
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
        // Nothing due: it waits instead of spinning.
        let started = Instant::now();
        assert!(
            detector
                .poll(Duration::from_millis(100))
                .expect("poll")
                .is_empty()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
        std::fs::write(dir.path().join("a.conf"), b"changed\n").expect("drift");
        let mut seen = Vec::new();
        while seen.is_empty() && started.elapsed() < Duration::from_secs(3) {
            seen = detector.poll(Duration::from_millis(100)).expect("poll");
        }
        assert_eq!(seen.first().map(|d| d.aspect), Some("content"), "{seen:?}");
    }
}
