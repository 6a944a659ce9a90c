//! Planning a release against the root: the account files and every
//! desired path are read from the node and compared with what the release
//! asks. Apart from the run because it only reads; `driftless plan` uses it
//! alone.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;

use crate::node::accounts::AccountFiles;
use crate::node::plan::{self, Bytes, Current, Desired, Entry, Step};
use crate::node::secrets::Secrets;
use crate::node::stage::ApplyError;
use crate::record::secret::SecretBytes;
use crate::release::tree::Release;
use crate::root::{Kind, Root, sha256_of};
use crate::source::pack::ObjectId;
use crate::types::NodePath;

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

/// What the release asks of this root, compared with what is there:
/// every entry after its parents, with the missing parents nobody declared
/// (and those an interrupted run of the same release `recorded`, see
/// [`super::recorded_parents`]). Paths are resolved strictly, with the
/// spec's directory owners declared to the root first. Its secrets are
/// opened with `secrets` (the node's identity) first: a node that cannot
/// open them fails here, before anything is written.
pub fn plan(
    root: &Root,
    release: &Release<'_>,
    spec: &crate::release::spec::NodeSpec,
    recorded: &BTreeSet<NodePath>,
    secrets: &mut Secrets<'_>,
) -> anyhow::Result<Vec<Step>> {
    let accounts = account_files(root)?;
    let mut read = |p: &crate::types::TreePath| release.content(p).map_err(|e| e.to_string());
    let mut blob = |p: &crate::types::TreePath| {
        release
            .blob_ref(p, crate::release::spec::MAX_FILE_LEN)
            .map_err(|e| e.to_string())
    };
    let (mut desired, _) = plan::desired(spec, &accounts, &mut read, &mut blob)?;
    let declare = |desired: &mut Vec<Desired>| {
        unprivileged_owners(desired);
        root.declare_owners(desired.iter().filter_map(|d| match d.entry {
            Entry::Directory { uid, .. } => Some((d.path.clone(), uid)),
            _ => None,
        }));
    };
    // Opening the secrets looks at the paths they go to: the spec's owners
    // first, then with the entries the secrets add.
    declare(&mut desired);
    secrets.open(root, release, spec, &mut desired)?;
    declare(&mut desired);
    let mut missing = |p: &NodePath| Ok(root.observe(p)?.is_none());
    let mut desired = super::parents::with_parents(desired, recorded, &mut missing)?;
    unprivileged_owners(&mut desired);
    let mut current = BTreeMap::new();
    for d in &mut desired {
        let found = observe(root, d, secrets)?;
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

pub(super) fn blob_id(id: &str) -> Result<ObjectId, ApplyError> {
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

fn observe(root: &Root, d: &Desired, secrets: &Secrets<'_>) -> anyhow::Result<Option<Current>> {
    let Some(o) = root.observe(&d.path)? else {
        return Ok(None);
    };
    let sha256 = match (o.kind, &d.entry) {
        // A different size is a different content; no need to read it. A
        // secret is compared by its keyed digest.
        (Kind::File, Entry::File { content, .. }) if o.size == content.len() => match content {
            // Not opened (a lint): its content is unknown, so it is written.
            Bytes::Secret(SecretBytes::Sealed { .. }) => None,
            Bytes::Secret(_) => Some(secrets.digest_file(root, &d.path)?),
            _ => Some(root.sha256(&d.path)?),
        },
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
