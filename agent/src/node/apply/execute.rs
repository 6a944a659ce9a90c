//! Executing a plan: the steps that change something are written beneath
//! the root. Apart from the run's flow because it is the only part that
//! writes the release's paths, and its batching of syncs is subtle enough
//! to read alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::planning::blob_id;
use crate::node::plan::{Bytes, Change, Entry, Step};
use crate::node::stage::ApplyError;
use crate::record::secret::SecretBytes;
use crate::release::tree::Release;
use crate::root::{Root, Staged};
use crate::types::NodePath;

/// How many directories staged entries may hold open at once before the
/// batch is put in place: well below the usual limit of 1024 open files.
const HELD_DIRECTORIES: usize = 128;

/// Performs the steps that change something, in order (every entry after
/// its parents). Directories are made whole when they are reached; files
/// and links are written beside their targets, made durable with one
/// filesystem sync, renamed into place in order, and synced again: two
/// barriers for a batch instead of two per file, and still no rename before
/// its data is on disk. Each staged entry is renamed in the directory handle
/// it was written in. A batch ends when its entries hold
/// [`HELD_DIRECTORIES`] directories, or at the end.
pub(super) fn execute(
    root: &Root,
    release: &Release<'_>,
    steps: &[Step],
    resumed: bool,
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
    let mut held = BTreeSet::new();
    for step in &changing {
        let d = &step.desired;
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
        if let Some((entry, _)) = staged.last() {
            held.insert(entry.dir().path().clone());
        }
        if held.len() >= HELD_DIRECTORIES {
            put_batch_in_place(root, &mut staged)?;
            held.clear();
        }
    }
    put_batch_in_place(root, &mut staged)?;
    Ok((changing.len(), digests))
}

/// Makes a batch of staged entries durable, renames them into place in
/// order, and makes the renames durable.
fn put_batch_in_place(root: &Root, staged: &mut Vec<(Staged, &&Step)>) -> anyhow::Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    root.sync()?;
    for (entry, step) in staged.drain(..) {
        root.put_in_place(&entry)?;
        tracing::info!("{step}");
    }
    root.sync()?;
    Ok(())
}
