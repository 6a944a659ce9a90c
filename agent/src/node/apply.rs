//! The first-boot job: fetch and verify the pinned release, plan it against
//! the root, write it atomically, start its units, run its health checks,
//! and record the result. Idempotent and resumable: every step converges, so
//! a run killed at any point is finished by the next run with the same
//! result. A node that was already applied is only checked, never changed.

mod execute;
mod locking;
mod parents;
mod planning;

pub use parents::recorded_parents;
pub use planning::plan;

use std::path::Path;

use jiff::Timestamp;

use crate::config::AgentConfig;
use crate::config::LockMode;
use crate::node::anchor;
use crate::node::effective;
use crate::node::gate;
use crate::node::health;
use crate::node::secrets::{self, Secrets};
use crate::node::stage::{AlreadyPinned, ApplyError, Stage};
use crate::node::systemd;
use crate::record::drift::{self, Difference};
use crate::record::lifecycle::{Event, FailedAt, Phase};
use crate::record::state::LockStatus;
use crate::record::state::{self, ManifestEntry, MountRecord, PinnedRelease, State, Status};
use crate::release::obtain;
use crate::release::spec::UnitName;
use crate::release::tree::Release;
use crate::root::{Kind, Root};
use crate::types::NodePath;
use execute::execute;
use locking::lock_all;

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
            settle_gate(&root, &existing, config);
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
            // A boot empties the tmpfs: its secrets first, then the check.
            crate::root::failpoint::arm();
            secrets::restore(&root, &config.secrets, &existing, lock_mode)?;
            let mut drift = drift::compare(&root, &existing);
            let verified = anchor::verify(&root, &existing, config);
            anchor::note(&root, &existing, "apply", &verified);
            drift.extend(verified);
            if lock_mode != LockMode::Off {
                let before = existing.clone();
                lock_all(&root, &mut existing, lock_mode)?;
                if existing.effective.mounts.is_none() {
                    effective::record_mounts(&root, &mut existing);
                }
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
    // Nothing of the release starts before this run records it applied.
    gate::close(&root)?;
    // Every run walks the lifecycle from the start; a run after an
    // interrupted or failed one may find paths it locked.
    let mut phase = Phase::Fresh;
    let earlier = state::load(&root)?;
    let resumed = earlier.is_some();
    let before = crate::record::floor::before(&root, config)?;
    let fetched = match obtain::fetch_release(root_path, config, true, &before) {
        Ok(found) => found,
        Err(e) => {
            if !resumed {
                record_early_failure(&root, &mut phase, &e);
            }
            return Err(e);
        }
    };
    // Obtained means fetched and verified: nothing unverified is returned.
    phase.advance(Event::Fetched)?;
    phase.advance(Event::Verified)?;
    let channel_state = fetched.channel;
    let libgit = fetched.cache.is_some();
    let fetched_from_source = fetched.from_source;
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
        effective: Default::default(),
    };
    let planned = release
        .spec(&config.release.spec)
        .map_err(anyhow::Error::from)
        .and_then(|spec| {
            let recorded = recorded_parents(earlier.as_ref(), &pinned.commit);
            let mut secrets = Secrets::new(&config.secrets);
            Ok((plan(&root, &release, &spec, &recorded, &mut secrets)?, spec))
        });
    let (steps, spec) = match planned {
        Ok(p) => p,
        // A root that cannot be read (a symlink leading out), or a node
        // without the identity its secrets need, is the node's fault, not
        // the spec's.
        Err(e) if matches!(Stage::of(&e), Some(Stage::Apply | Stage::Config)) => {
            return Err(fail(&root, &mut record, &mut phase, FailedAt::Apply, e));
        }
        Err(e) => return Err(fail(&root, &mut record, &mut phase, FailedAt::Spec, e)),
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
    // A path listed by both the spec and the config is one mount.
    let mut listed = std::collections::BTreeSet::new();
    record.read_only.retain(|m| listed.insert(m.path.clone()));
    state::save(&root, &record)?;
    state::clear_early_failure(&root)?;
    crate::root::failpoint::arm();
    let changed = match execute(&root, &release, &steps, resumed) {
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
                &mut phase,
                FailedAt::Apply,
                e.context(ApplyError("apply failed".into())),
            ));
        }
    };
    // The secrets' plaintext is zeroed as soon as it is written.
    drop(steps);
    record.manifest.extend(agent_files(&root, config)?);
    if let Err(e) = settle_effective(&root, &release, &spec, config, &mut record) {
        let failed = e.into();
        return Err(fail(
            &root,
            &mut record,
            &mut phase,
            FailedAt::Apply,
            failed,
        ));
    }
    let live_systemd = systemd::systemd_is_live(root_path);
    // The units apply starts: stopped again if the node turns out bad.
    let mut started = Vec::new();
    if live_systemd {
        started = units_to_start(&spec);
        let outcome = gate::open_for_start(&root, &pinned.commit)
            .map_err(anyhow::Error::from)
            .and_then(|()| start_units(&started));
        if let Err(e) = outcome {
            let failed = (&mut phase, FailedAt::Apply);
            return Err(fail_started(&root, &mut record, &started, failed, e));
        }
    } else if !spec.units.is_empty() {
        tracing::info!(
            "systemd is not running under {}: units were installed and enabled offline, not started",
            root_path.display()
        );
    }
    phase.advance(Event::Written)?;
    if let Err(e) = health::run_all(&spec.health) {
        let failed = (&mut phase, FailedAt::Health);
        return Err(fail_started(&root, &mut record, &started, failed, e.into()));
    }
    phase.advance(Event::HealthPassed)?;
    if let Err(e) = lock_all(&root, &mut record, lock_mode) {
        let failed = (&mut phase, FailedAt::Lock);
        return Err(fail_started(&root, &mut record, &started, failed, e.into()));
    }
    phase.advance(Event::Locked)?;
    if lock_mode != LockMode::Off {
        effective::record_mounts(&root, &mut record);
    }
    record.status = Status::Applied;
    record.finished_at = Some(Timestamp::now());
    state::save(&root, &record)?;
    if let Err(e) = gate::mark_applied(&root, &pinned.commit) {
        tracing::warn!("the release's units other than services will not start at boot: {e}");
    }
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
    } else if fetched_from_source {
        // A fixed tag: the channel as it stands now is this node's floor
        // (a pre-seeded image needs no network: its bake record stands).
        let by = crate::record::floor::RecordedBy::Apply;
        match crate::node::floor::record(root_path, &root, config, &before, None, by, libgit) {
            Ok(None) => tracing::info!("the source has no channel branch: no channel floor"),
            Ok(Some(floor)) => tracing::info!(
                "channel floor recorded: tip {}{}",
                floor.tip,
                floor
                    .sequence
                    .map(|s| format!(", sequence {s}"))
                    .unwrap_or_default()
            ),
            Err(e) => tracing::warn!(
                "no channel floor recorded ({}); the watcher starts from the first tip it accepts",
                crate::error::one_line(&e)
            ),
        }
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
    paths.extend(config.trust.channel_signers.iter().cloned());
    paths.extend(config.trust.refresh_signers.iter().cloned());
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
            secret: None,
        });
    }
    Ok(out)
}

/// Sets the attributes the spec declares (refusing undeclared ACLs and
/// capabilities), adds the account files and the kept release objects to
/// the manifest, and records the rest of the effective configuration.
fn settle_effective(
    root: &Root,
    release: &Release<'_>,
    spec: &crate::release::spec::NodeSpec,
    config: &AgentConfig,
    record: &mut State,
) -> Result<(), crate::node::stage::ApplyError> {
    effective::settle_xattrs(root, spec, &record.manifest)?;
    record.manifest.extend(effective::account_entries(root)?);
    record
        .manifest
        .push(anchor::keep(root, release, spec, &config.release.spec)?);
    effective::record(root, spec, record)
}

/// On an applied node, at every boot: the gate's file follows the record
/// and the config (best effort; a gate that cannot be opened stays shut).
fn settle_gate(root: &Root, state: &State, config: &AgentConfig) {
    match gate::settle(root, state, config) {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            "{} did not match the node's record and config; set right for the next boot",
            gate::OPEN_PATH
        ),
        Err(e) => tracing::warn!("{e}"),
    }
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
    (phase, at): (&mut Phase, FailedAt),
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
    fail(root, record, phase, at, error)
}

/// Records a failure that came before any release was verified, so that
/// `status` says why (best effort). A config or trust file that cannot be
/// read leaves the node untouched, as every config error does: apply's
/// error line says why.
fn record_early_failure(root: &Root, phase: &mut Phase, error: &anyhow::Error) {
    let at = match Stage::of(error) {
        Some(Stage::Config) => return,
        Some(Stage::Fetch) => FailedAt::Fetch,
        Some(Stage::Verify) => FailedAt::Verify,
        _ => FailedAt::Apply,
    };
    if let Err(e) = phase.advance(Event::Failed(at)) {
        tracing::error!("{e}");
    }
    let failure = state::EarlyFailure {
        stage: at.as_str().to_owned(),
        reason: crate::error::one_line(error),
        at: Timestamp::now(),
    };
    if let Err(e) = state::save_early_failure(root, &failure) {
        tracing::error!("cannot record the failure: {e}");
    }
}

/// Records a failure in state (best effort) and returns the error.
fn fail(
    root: &Root,
    record: &mut State,
    phase: &mut Phase,
    at: FailedAt,
    error: anyhow::Error,
) -> anyhow::Error {
    // The failure is recorded whatever the lifecycle says: a node fails closed.
    if let Err(e) = phase.advance(Event::Failed(at)) {
        tracing::error!("{e}");
    }
    record.status = Status::Failed {
        stage: at.as_str().to_owned(),
        reason: crate::error::one_line(&error),
    };
    record.finished_at = Some(Timestamp::now());
    if let Err(e) = state::save(root, record) {
        tracing::error!("cannot record the failure in state: {e}");
    }
    error
}
