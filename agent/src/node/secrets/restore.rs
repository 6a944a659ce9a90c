//! Putting back, at boot, the secrets a tmpfs lost: on an applied node,
//! each secret the manifest places on a tmpfs and that is not there is
//! decrypted again from its sealed copy (which must still have the digest
//! the manifest recorded, and yield the plaintext whose keyed digest it
//! recorded), written like any file (staged, then renamed into place) with
//! its directories, and locked again. `driftless restore` runs it from
//! `driftless-secrets.service` before the release's services start, and
//! `driftless apply` on an applied node runs it before it checks for drift.
//! Interrupted at any step, the next run finishes it.

use crate::config::{LockMode, SecretSettings};
use crate::node::lock::lock_path;
use crate::node::stage::ApplyError;
use crate::record::secret::{DigestKey, protect_process};
use crate::record::state::{LockStatus, ManifestEntry, State, Status};
use crate::record::volatile::volatile;
use crate::release::sealed::MAX_SEALED_LEN;
use crate::root::{Kind, Root, hex, sha256_of};
use crate::types::NodePath;

use super::{Failure, IdentityError, decrypt, identity};

/// Puts back the missing secrets of an applied node's tmpfs and locks them
/// again (unless `lock` is off). Returns how many were
/// written. A node not applied (yet) is left to `driftless apply`.
pub fn restore(
    root: &Root,
    settings: &SecretSettings,
    state: &State,
    lock: LockMode,
) -> anyhow::Result<usize> {
    if state.status != Status::Applied {
        return Ok(0);
    }
    // The directories on the way belong to whom the manifest says.
    crate::record::drift::declare(root, state);
    let secrets: Vec<(&ManifestEntry, &NodePath)> = volatile(&state.manifest).collect();
    let mut missing = Vec::new();
    for (entry, sealed) in &secrets {
        if root.observe(&entry.path)?.is_none() {
            missing.push((*entry, *sealed));
        }
    }
    if !missing.is_empty() {
        protect_process().map_err(|e| ApplyError(format!("cannot protect the process: {e}")))?;
        let identity = identity::load(root, settings).map_err(|e| {
            IdentityError(format!(
                "cannot put back secret {} ({}): {e}",
                missing[0].0.path, missing[0].0.origin
            ))
        })?;
        let key = DigestKey::load(root)?.ok_or_else(|| {
            ApplyError("the node's secret digest key is missing; replace the node".into())
        })?;
        for (entry, sealed) in &missing {
            put_back(root, state, entry, sealed, &identity, &key)?;
            tracing::info!(
                message_id = crate::events::SECRET_RESTORED,
                "secret {} put back from its sealed copy",
                entry.path
            );
        }
    }
    if lock != LockMode::Off {
        relock(root, state, &secrets, lock)?;
    }
    Ok(missing.len())
}

/// Decrypts one secret's sealed copy and writes it, with its directories.
fn put_back(
    root: &Root,
    state: &State,
    entry: &ManifestEntry,
    sealed: &NodePath,
    identity: &super::Identity,
    key: &DigestKey,
) -> anyhow::Result<()> {
    let fail =
        |reason: String| ApplyError(format!("cannot put back secret {}: {reason}", entry.path));
    let bytes = root.read(sealed, MAX_SEALED_LEN)?;
    let recorded = state
        .manifest
        .iter()
        .find(|e| &e.path == sealed)
        .and_then(|e| e.sha256.as_deref());
    if recorded != Some(hex(&sha256_of(&bytes)).as_str()) {
        return Err(fail(format!(
            "its sealed copy {sealed} is not the one apply wrote"
        ))
        .into());
    }
    let plain = decrypt(&bytes, identity).map_err(|failure| -> anyhow::Error {
        match failure {
            Failure::NotForThisNode => IdentityError(format!(
                "cannot put back secret {}: it is not encrypted to this node's identity ({})",
                entry.path,
                identity.public()
            ))
            .into(),
            Failure::Broken(reason) => {
                fail(format!("its sealed copy cannot be decrypted: {reason}")).into()
            }
        }
    })?;
    let expected = entry.secret.as_ref().map(|s| s.hmac_sha256.as_str());
    if expected != Some(hex(&key.digest(plain.bytes())).as_str()) {
        return Err(
            fail("its sealed copy opens to another content than apply wrote".into()).into(),
        );
    }
    // Its directories, as the manifest has them (a tmpfs lost them too).
    let mut absent = Vec::new();
    let mut dir = entry.path.parent();
    while let Some(p) = dir {
        if root.observe(&p)?.is_some() {
            break;
        }
        dir = p.parent();
        absent.push(p);
    }
    for p in absent.iter().rev() {
        let (mode, uid, gid) = match state.manifest.iter().find(|e| &e.path == p) {
            Some(e) if e.kind == Kind::Directory => owner_mode(e)
                .ok_or_else(|| fail(format!("the manifest has no owner and mode for {p}")))?,
            _ => (0o755, 0, 0),
        };
        root.ensure_dir(p, mode, uid, gid)?;
    }
    let (mode, uid, gid) = owner_mode(entry)
        .ok_or_else(|| fail("the manifest has no owner and mode for it".into()))?;
    let staged = root.stage_file(&entry.path, plain.bytes(), mode, uid, gid)?;
    root.put_in_place(&staged)?;
    // A tmpfs needs no sync; a secret elsewhere is never put back.
    Ok(())
}

/// Locks the secrets (files first, then their managed directories, deepest
/// first) that the manifest records as locked and that are not.
fn relock(
    root: &Root,
    state: &State,
    secrets: &[(&ManifestEntry, &NodePath)],
    mode: LockMode,
) -> anyhow::Result<()> {
    let mut paths: Vec<&ManifestEntry> = secrets.iter().map(|(e, _)| *e).collect();
    let mut dirs: Vec<&ManifestEntry> = state
        .manifest
        .iter()
        .filter(|d| {
            d.kind == Kind::Directory
                && secrets
                    .iter()
                    .any(|(e, _)| e.path.as_str().starts_with(&format!("{}/", d.path)))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.as_str().matches('/').count()));
    paths.extend(dirs);
    for entry in paths {
        if entry.lock != LockStatus::Locked || root.observe(&entry.path)?.is_none() {
            continue;
        }
        if crate::root::attr::is_immutable(root, &entry.path, entry.kind).unwrap_or(true) {
            continue;
        }
        lock_path(root, &entry.path, entry.kind, mode)?;
    }
    Ok(())
}

/// Mode, owner and group of a manifest entry.
fn owner_mode(e: &ManifestEntry) -> Option<(u32, u32, u32)> {
    let mode = u32::from_str_radix(e.mode.as_deref()?, 8).ok()?;
    Some((mode, e.uid?, e.gid?))
}
