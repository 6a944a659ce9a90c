//! Which of the node's secrets live on a tmpfs (a boot empties it, and
//! `driftless restore` puts them back from their sealed copies), and
//! whether they are all in place: the gate keeps the release's services
//! stopped until they are. Apart from `secret` because it reads the
//! manifest, which names `secret`'s record.

use crate::record::state::{ManifestEntry, State, Status};
use crate::root::{Kind, Root};
use crate::types::NodePath;

/// The secrets of the manifest that live on a tmpfs.
pub fn volatile(manifest: &[ManifestEntry]) -> impl Iterator<Item = (&ManifestEntry, &NodePath)> {
    manifest.iter().filter_map(|e| {
        let sealed = e.secret.as_ref()?.sealed.as_ref()?;
        Some((e, sealed))
    })
}

/// For the gate: on an applied node, every secret on a tmpfs must be in
/// place (a boot empties the tmpfs; `driftless restore` puts them back
/// before the release's services start). Says which one is not.
pub fn in_place(root: &Root, state: &State) -> Result<(), String> {
    if state.status != Status::Applied {
        return Ok(());
    }
    // The directories on the way belong to whom the manifest says.
    crate::record::drift::declare(root, state);
    for (entry, _) in volatile(&state.manifest) {
        match root.observe(&entry.path) {
            Ok(Some(o)) if o.kind == Kind::File => {}
            _ => {
                return Err(format!(
                    "secret {} is not in place (driftless restore puts it back at boot)",
                    entry.path
                ));
            }
        }
    }
    Ok(())
}
