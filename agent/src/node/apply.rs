//! The first-boot job: fetch and verify the pinned release, plan it against
//! the root, write it atomically, start its units, run its health checks,
//! and record the result. Idempotent and resumable: every step converges, so
//! a run killed at any point is finished by the next run with the same
//! result. A node that was already applied is only checked, never changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;

use crate::config::AgentConfig;
use crate::config::LockMode;
use crate::node::accounts::AccountFiles;
use crate::node::gate;
use crate::node::health;
use crate::node::lock::{self, LockError};
use crate::node::plan::{self, Bytes, Change, Current, Desired, Entry, Step};
use crate::node::stage::{AlreadyPinned, ApplyError, Stage};
use crate::node::systemd;
use crate::record::drift::{self, Difference};
use crate::record::state::LockStatus;
use crate::record::state::{self, ManifestEntry, MountRecord, PinnedRelease, State, Status};
use crate::release::obtain;
use crate::release::spec::UnitName;
use crate::release::tree::Release;
use crate::root::{Kind, Root, sha256_of};
use crate::source::pack::ObjectId;
use crate::types::NodePath;

/// What `apply` did.
#[derive(Debug)]
pub enum Outcome {
    /// The release was applied; `changed` steps were needed.
    Applied {
        /// The release.
        release: PinnedRelease,
        /// Steps that changed the node.
        changed: usize,
        /// Units were installed but not started: no systemd runs the root.
        units_offline: bool,
    },
    /// The node already has this release: it was checked, not changed.
    Checked {
        /// The release.
        release: PinnedRelease,
        /// How the node differs from its manifest.
        drift: Vec<Difference>,
    },
}

/// Reads the account files under the root (absent ones read as empty).
fn account_files(root: &Root) -> anyhow::Result<AccountFiles> {
    let read = |p: &str| -> anyhow::Result<Option<String>> {
        let path = NodePath::new(p).map_err(anyhow::Error::msg)?;
        match root.read_optional(&path, 16 * 1024 * 1024)? {
            Some(bytes) => Ok(Some(
                String::from_utf8(bytes).with_context(|| format!("{p} is not UTF-8"))?,
            )),
            None => Ok(None),
        }
    };
    Ok(AccountFiles {
        passwd: read("/etc/passwd")?.unwrap_or_default(),
        group: read("/etc/group")?.unwrap_or_default(),
        shadow: read("/etc/shadow")?,
        gshadow: read("/etc/gshadow")?,
    })
}

/// What the release asks of this root, compared with what is there.
pub fn plan(
    root: &Root,
    release: &Release<'_>,
    spec: &crate::release::spec::NodeSpec,
) -> anyhow::Result<Vec<Step>> {
    let accounts = account_files(root)?;
    let mut read = |p: &crate::types::TreePath| release.content(p).map_err(|e| e.to_string());
    let mut blob = |p: &crate::types::TreePath| {
        release
            .blob_ref(p, crate::release::spec::MAX_FILE_LEN)
            .map_err(|e| e.to_string())
    };
    let (mut desired, _) = plan::desired(spec, &accounts, &mut read, &mut blob)?;
    unprivileged_owners(&mut desired);
    let mut current = BTreeMap::new();
    for d in &mut desired {
        let found = observe(root, d)?;
        // Only a file of the same size on the node needs the release file's
        // digest now; every other one is hashed as it is written.
        if let (
            Some(c),
            Entry::File {
                content: Bytes::Blob { id, .. },
                sha256,
                ..
            },
        ) = (&found, &mut d.entry)
        {
            if sha256.is_none() && c.sha256.is_some() {
                let known = blob_id(id).ok().and_then(|oid| release.known_sha256(&oid));
                *sha256 = Some(match known {
                    Some(digest) => digest,
                    None => sha256_of(&read_blob(release, id)?),
                });
            }
        }
        current.insert(d.path.clone(), found);
    }
    Ok(plan::diff(desired, &current)?)
}

fn blob_id(id: &str) -> Result<ObjectId, ApplyError> {
    ObjectId::from_hex(id).ok_or_else(|| ApplyError(format!("{id:?} is not a blob id")))
}

fn read_blob(release: &Release<'_>, id: &str) -> Result<Vec<u8>, ApplyError> {
    release.blob_bytes(&blob_id(id)?).map_err(ApplyError)
}

/// Without root, files cannot be given to other users: an unprivileged
/// apply (into a test or demo directory) owns everything as the caller.
fn unprivileged_owners(desired: &mut [Desired]) {
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if euid == 0 {
        return;
    }
    for d in desired {
        if let Entry::Directory { uid, gid, .. } | Entry::File { uid, gid, .. } = &mut d.entry {
            (*uid, *gid) = (euid, egid);
        }
    }
}

fn observe(root: &Root, d: &Desired) -> anyhow::Result<Option<Current>> {
    let Some(o) = root.observe(&d.path)? else {
        return Ok(None);
    };
    let sha256 = match (o.kind, &d.entry) {
        // A different size is a different content; no need to read it.
        (Kind::File, Entry::File { content, .. }) if o.size == content.len() => {
            Some(root.sha256(&d.path)?)
        }
        _ => None,
    };
    let target = (o.kind == Kind::Link)
        .then(|| root.read_link(&d.path))
        .transpose()?;
    Ok(Some(Current {
        kind: o.kind,
        mode: o.mode,
        uid: o.uid,
        gid: o.gid,
        sha256,
        target,
    }))
}

/// Performs the steps that change something. Directories are made first,
/// in order; files and links are written beside their targets, made durable
/// with one filesystem sync, renamed into place in order, and synced again:
/// two barriers for the whole release instead of two per file, and still no
/// rename before its data is on disk.
fn execute(
    root: &Root,
    release: &Release<'_>,
    steps: &[Step],
    resumed: bool,
    failpoint: &mut Failpoint,
) -> anyhow::Result<(usize, BTreeMap<NodePath, [u8; 32]>)> {
    let mut digests = BTreeMap::new();
    let changing: Vec<&Step> = steps
        .iter()
        .filter(|s| s.change != Change::Unchanged)
        .collect();
    // How many of the paths still to write need each blob: the last one
    // may take a received blob's file instead of a copy.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for step in &changing {
        if let Entry::File {
            content: Bytes::Blob { id, .. },
            ..
        } = &step.desired.entry
        {
            *uses.entry(id.as_str()).or_default() += 1;
        }
    }
    let mut staged = Vec::new();
    for step in &changing {
        let d = &step.desired;
        if let Some(parent) = d.path.parent() {
            if root.observe(&parent)?.is_none() {
                root.ensure_dir(&parent, 0o755, 0, 0)
                    .or_else(|e| unprivileged_retry(root, &parent, e))?;
            }
        }
        // An earlier, interrupted run of this apply may have locked it.
        if resumed {
            if step.change != Change::Create {
                crate::root::attr::clear_for_rewrite(root, &d.path)?;
            } else if let Some(parent) = d.path.parent() {
                crate::root::attr::clear_for_rewrite(root, &parent)?;
            }
        }
        match &d.entry {
            Entry::Directory { mode, uid, gid } => {
                root.ensure_dir(&d.path, *mode, *uid, *gid)?;
                tracing::info!("{step}");
                failpoint.hit();
            }
            Entry::File {
                content,
                mode,
                uid,
                gid,
                ..
            } => {
                // Blobs are read one at a time, right before they are written.
                let entry = match content {
                    Bytes::Held(bytes) => root.stage_file(&d.path, bytes, *mode, *uid, *gid)?,
                    Bytes::Blob { id, .. } => {
                        let left = uses.get_mut(id.as_str()).map_or(0, |n| {
                            *n -= 1;
                            *n
                        });
                        let (entry, digest) = release.stage_blob(
                            root,
                            &d.path,
                            &blob_id(id)?,
                            (*mode, *uid, *gid),
                            left == 0,
                        )?;
                        digests.insert(d.path.clone(), digest);
                        entry
                    }
                };
                staged.push((entry, step));
            }
            Entry::Link { target } => staged.push((root.stage_link(&d.path, target)?, step)),
        }
    }
    root.sync()?;
    for (entry, step) in &staged {
        root.put_in_place(entry)?;
        tracing::info!("{step}");
        failpoint.hit();
    }
    root.sync()?;
    Ok((changing.len(), digests))
}

fn unprivileged_retry(
    root: &Root,
    path: &NodePath,
    e: crate::root::RootError,
) -> Result<(), crate::root::RootError> {
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if euid == 0 {
        Err(e)
    } else {
        root.ensure_dir(path, 0o755, euid, egid)
    }
}

/// A test hook: `DRIFTLESS_TEST_KILL_AFTER=N` kills the process with SIGKILL
/// after the N-th durable change (a path written, then a path locked), to
/// prove that any interruption is recoverable.
struct Failpoint {
    remaining: Option<u64>,
}

impl Failpoint {
    fn from_env() -> Self {
        Self {
            remaining: std::env::var("DRIFTLESS_TEST_KILL_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    fn hit(&mut self) {
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::getpid(),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Options of one apply run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Do not lock (an image being baked); the next boot takes the lock.
    pub no_lock: bool,
}

/// Runs the whole first-boot job under `root`. On a node that already has
/// its release, checks it against the manifest, takes any lock still
/// pending (after a `--no-lock` bake) and re-creates the read-only mounts,
/// which do not survive a reboot.
pub fn apply(
    root_path: &Path,
    config: &AgentConfig,
    node_id: &str,
    options: ApplyOptions,
) -> anyhow::Result<Outcome> {
    let root = Root::open(root_path)?;
    let lock_mode = if options.no_lock {
        LockMode::Off
    } else {
        config.lock.mode
    };
    if let Some(mut existing) = state::load(&root)? {
        if existing.status == Status::Applied {
            if let Some(wanted) = config
                .release
                .tag
                .as_ref()
                .filter(|t| t.as_str() != existing.release.tag)
            {
                return Err(AlreadyPinned {
                    applied: existing.release.tag,
                    wanted: wanted.as_str().to_owned(),
                }
                .into());
            }
            let drift = drift::compare(&root, &existing);
            if lock_mode != LockMode::Off {
                let before = existing.clone();
                lock_all(&root, &mut existing, lock_mode, &mut Failpoint::from_env())?;
                if existing != before {
                    state::save(&root, &existing)?;
                }
                state::lock_state_file(&root)?;
            }
            return Ok(Outcome::Checked {
                release: existing.release,
                drift,
            });
        }
    }
    // A run after an interrupted or failed one may find paths it locked.
    let resumed = state::load(&root)?.is_some();
    let fetched = match obtain::fetch_release(root_path, config, true) {
        Ok(found) => found,
        Err(e) => {
            if !resumed {
                record_early_failure(&root, &e);
            }
            return Err(e);
        }
    };
    let channel_state = fetched.channel;
    let release = match (&fetched.streamed, &fetched.cache) {
        (Some(streamed), _) => Release::streamed(streamed)?,
        (None, Some(cache)) => Release::open(cache, fetched.verified)?,
        (None, None) => anyhow::bail!("neither the cache nor a streamed fetch holds the release"),
    };
    let pinned = PinnedRelease::from(&release.verified);
    let mut record = State {
        version: 1,
        node_id: node_id.to_owned(),
        release: pinned.clone(),
        status: Status::Applying,
        started_at: Timestamp::now(),
        finished_at: None,
        manifest: Vec::new(),
        read_only: Vec::new(),
    };
    let planned = release
        .spec(&config.release.spec)
        .map_err(anyhow::Error::from)
        .and_then(|spec| Ok((plan(&root, &release, &spec)?, spec)));
    let (steps, spec) = match planned {
        Ok(p) => p,
        // A root that cannot be read (a symlink leading out) is the node's
        // fault, not the spec's: record the stage the exit code names.
        Err(e) if Stage::of(&e) == Some(Stage::Apply) => {
            return Err(fail(&root, &mut record, "apply", e));
        }
        Err(e) => return Err(fail(&root, &mut record, "spec", e)),
    };
    record.manifest = steps
        .iter()
        .filter(|s| s.desired.managed)
        .map(|s| ManifestEntry::from(&s.desired))
        .collect();
    record.read_only = spec
        .lock
        .read_only
        .iter()
        .chain(&config.lock.read_only)
        .map(|path| MountRecord {
            path: path.clone(),
            lock: LockStatus::Pending,
        })
        .collect();
    record.read_only.dedup_by(|a, b| a.path == b.path);
    state::save(&root, &record)?;
    state::clear_early_failure(&root)?;
    let mut failpoint = Failpoint::from_env();
    let changed = match execute(&root, &release, &steps, resumed, &mut failpoint) {
        Ok((n, digests)) => {
            // The digests of release files hashed as they were written.
            for entry in record
                .manifest
                .iter_mut()
                .filter(|e| e.sha256.is_none() && e.kind == Kind::File)
            {
                entry.sha256 = digests.get(&entry.path).map(|d| crate::root::hex(d));
            }
            n
        }
        Err(e) => {
            return Err(fail(
                &root,
                &mut record,
                "apply",
                e.context(ApplyError("apply failed".into())),
            ));
        }
    };
    record.manifest.extend(agent_files(&root, config)?);
    let live_systemd = systemd::systemd_is_live(root_path);
    // The units apply starts: stopped again if the node turns out bad.
    let mut started = Vec::new();
    if live_systemd {
        started = units_to_start(&spec);
        let outcome = gate::open_for_start(&root, &pinned.commit)
            .map_err(anyhow::Error::from)
            .and_then(|()| start_units(&started));
        if let Err(e) = outcome {
            return Err(fail_started(&root, &mut record, &started, "apply", e));
        }
    } else if !spec.units.is_empty() {
        tracing::info!(
            "systemd is not running under {}: units were installed and enabled offline, not started",
            root_path.display()
        );
    }
    if let Err(e) = health::run_all(&spec.health) {
        return Err(fail_started(
            &root,
            &mut record,
            &started,
            "health",
            e.into(),
        ));
    }
    if let Err(e) = lock_all(&root, &mut record, lock_mode, &mut failpoint) {
        return Err(fail_started(&root, &mut record, &started, "lock", e.into()));
    }
    record.status = Status::Applied;
    record.finished_at = Some(Timestamp::now());
    state::save(&root, &record)?;
    if live_systemd {
        // The record now keeps the gate open; the window is not needed.
        if let Err(e) = gate::end_start(&root) {
            tracing::warn!("{e}");
        }
    }
    if lock_mode != LockMode::Off {
        state::lock_state_file(&root)?;
        tracing::info!(
            message_id = crate::events::LOCKED,
            "release {} locked",
            pinned.tag
        );
    }
    if let Some(channel) = &channel_state {
        // The tip this node was built from: the channel may only move forward from here.
        let mut watch = crate::record::watch_state::WatchState::load(&root)?;
        watch.accept(channel, Some(pinned.commit.clone()));
        watch.save(&root)?;
    }
    tracing::info!(
        message_id = crate::events::RELEASE_APPLIED,
        "release {} applied ({changed} changes)",
        pinned.tag
    );
    Ok(Outcome::Applied {
        release: pinned,
        changed,
        units_offline: !live_systemd && !spec.units.is_empty(),
    })
}

/// The agent's own config and trust files, recorded (and locked) like the
/// release's files when they live under the root.
fn agent_files(root: &Root, config: &AgentConfig) -> anyhow::Result<Vec<ManifestEntry>> {
    let mut paths = vec![
        NodePath::new(crate::config::DEFAULT_CONFIG_PATH).map_err(anyhow::Error::msg)?,
        config.trust.allowed_signers.clone(),
    ];
    paths.extend(config.trust.revoked_keys.iter().cloned());
    let mut out = Vec::new();
    for path in paths {
        let Some(o) = root.observe(&path)? else {
            continue;
        };
        if o.kind != Kind::File {
            continue;
        }
        out.push(ManifestEntry {
            path: path.clone(),
            kind: Kind::File,
            mode: Some(format!("{:04o}", o.mode)),
            uid: Some(o.uid),
            gid: Some(o.gid),
            sha256: Some(crate::root::hex(&root.sha256(&path)?)),
            target: None,
            origin: "agent".into(),
            lock: LockStatus::Pending,
            exclusive: false,
        });
    }
    Ok(out)
}

/// Locks every pending path (files first, then directories deepest first, so
/// no directory is locked before its entries) and puts the read-only mounts
/// in place.
fn lock_all(
    root: &Root,
    record: &mut State,
    mode: LockMode,
    failpoint: &mut Failpoint,
) -> Result<(), LockError> {
    if mode == LockMode::Off {
        return Ok(());
    }
    let mut order: Vec<usize> = (0..record.manifest.len()).collect();
    order.sort_by_key(|&i| {
        let e = &record.manifest[i];
        (
            e.kind == Kind::Directory,
            std::cmp::Reverse(e.path.as_str().matches('/').count()),
        )
    });
    for i in order {
        let entry = &mut record.manifest[i];
        if entry.lock == LockStatus::Pending || matches!(entry.lock, LockStatus::Failed(_)) {
            entry.lock = lock::lock_path(root, &entry.path, entry.kind, mode)?;
            if entry.lock == LockStatus::Locked {
                failpoint.hit();
            }
        }
    }
    for mount in &mut record.read_only {
        if mount.lock == LockStatus::Locked
            && crate::root::attr::is_read_only_mount(root, &mount.path)
        {
            continue;
        }
        mount.lock = match lock::bind_read_only(root, &mount.path) {
            Ok(()) => LockStatus::Locked,
            Err(e) if mode == LockMode::Required => return Err(e),
            Err(e) => LockStatus::Failed(e.reason),
        };
    }
    Ok(())
}

/// The release's units apply starts once the node is written.
fn units_to_start(spec: &crate::release::spec::NodeSpec) -> Vec<UnitName> {
    spec.units
        .iter()
        .filter(|u| u.started && !u.masked)
        .map(|u| u.name.clone())
        .collect()
}

fn start_units(units: &[UnitName]) -> anyhow::Result<()> {
    let systemctl = systemd::Systemctl::new();
    systemctl.daemon_reload().map_err(anyhow::Error::msg)?;
    systemctl.start(units).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// A failure after apply started the release's units: stops them (a
/// failed node runs none of its release), closes the gate's start window,
/// then records the failure. Stopping is best effort; a unit that does not
/// stop is logged and the node is still marked failed.
fn fail_started(
    root: &Root,
    record: &mut State,
    started: &[UnitName],
    stage: &str,
    error: anyhow::Error,
) -> anyhow::Error {
    if !started.is_empty() {
        let names: Vec<&str> = started.iter().map(UnitName::as_str).collect();
        tracing::warn!("stopping the release's units: {}", names.join(" "));
        if let Err(e) = systemd::Systemctl::new().stop(started) {
            tracing::error!("{e}");
        }
    }
    if let Err(e) = gate::end_start(root) {
        tracing::warn!("{e}");
    }
    fail(root, record, stage, error)
}

/// Records a failure that came before any release was verified, so that
/// `status` says why (best effort). A config or trust file that cannot be
/// read leaves the node untouched, as every config error does: apply's
/// error line says why.
fn record_early_failure(root: &Root, error: &anyhow::Error) {
    let stage = match Stage::of(error) {
        Some(Stage::Config) => return,
        Some(Stage::Fetch) => "fetch",
        Some(Stage::Verify) => "verify",
        _ => "apply",
    };
    let failure = state::EarlyFailure {
        stage: stage.to_owned(),
        reason: crate::error::one_line(error),
        at: Timestamp::now(),
    };
    if let Err(e) = state::save_early_failure(root, &failure) {
        tracing::error!("cannot record the failure: {e}");
    }
}

/// Records a failure in state (best effort) and returns the error.
fn fail(root: &Root, record: &mut State, stage: &str, error: anyhow::Error) -> anyhow::Error {
    record.status = Status::Failed {
        stage: stage.to_owned(),
        reason: crate::error::one_line(&error),
    };
    record.finished_at = Some(Timestamp::now());
    if let Err(e) = state::save(root, record) {
        tracing::error!("cannot record the failure in state: {e}");
    }
    error
}
