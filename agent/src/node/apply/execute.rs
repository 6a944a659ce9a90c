//! Executing a plan: the steps that change something are written beneath
//! the root, with the test hook that kills the run between durable changes.
//! Apart from the run's flow because it is the only part that writes the
//! release's paths, and its batching of syncs is subtle enough to read alone.

use std::collections::{BTreeMap, HashMap};

use super::planning::blob_id;
use crate::node::plan::{Bytes, Change, Entry, Step};
use crate::node::stage::ApplyError;
use crate::record::secret::SecretBytes;
use crate::release::tree::Release;
use crate::root::Root;
use crate::types::NodePath;

/// Performs the steps that change something. Directories are made first,
/// in order; files and links are written beside their targets, made durable
/// with one filesystem sync, renamed into place in order, and synced again:
/// two barriers for the whole release instead of two per file, and still no
/// rename before its data is on disk.
pub(super) fn execute(
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
                    Bytes::Secret(SecretBytes::Open { plain, .. }) => {
                        root.stage_file(&d.path, plain.bytes(), *mode, *uid, *gid)?
                    }
                    Bytes::Secret(SecretBytes::Sealed { .. }) => {
                        return Err(ApplyError(format!("{}: secret not opened", d.path)).into());
                    }
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
pub(crate) struct Failpoint {
    remaining: Option<u64>,
}

impl Failpoint {
    pub(crate) fn from_env() -> Self {
        Self {
            remaining: std::env::var("DRIFTLESS_TEST_KILL_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    pub(crate) fn hit(&mut self) {
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
