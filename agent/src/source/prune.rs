//! Keeping the cache to what the node needs: the refs it keeps (the
//! channel's last accepted tip, with its history; the release tags it
//! keeps, each one commit, its tree and its tag) and the objects they
//! reach; every other ref is deleted, and when that dropped one, or the
//! cache has gathered more than [`MAX_PACKS`] packs or any loose object,
//! its objects are written again as one pack of exactly what the kept refs
//! reach, and everything else is deleted. Apart from the quarantine, which
//! only adds to the cache; this only takes away.

use std::path::Path;

use git2::Repository;

use crate::source::fetch::FetchError;
use crate::source::quarantine::{Root, closure, write_pack, write_shallow};

/// Packs the cache may gather (one an admitted channel move) before they
/// are written again as one.
pub const MAX_PACKS: usize = 16;

/// What [`prune`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Refs deleted.
    pub refs: Vec<String>,
    /// Whether the objects were written again (and the rest deleted).
    pub repacked: bool,
}

fn failed(path: &Path, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Cache {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Deletes every ref of `cache` but `history` (kept with their history)
/// and `tags` (kept as one commit each), then repacks when needed.
pub fn prune(cache: &Repository, history: &[&str], tags: &[String]) -> Result<Pruned, FetchError> {
    let fail = |e: git2::Error| failed(cache.path(), e.message());
    let mut pruned = Pruned::default();
    let mut roots = Vec::new();
    let names: Vec<String> = cache
        .references()
        .map_err(fail)?
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_owned))
        .collect();
    for name in names {
        let kept_history = history.contains(&name.as_str());
        if !kept_history && !tags.contains(&name) {
            if let Ok(mut reference) = cache.find_reference(&name) {
                reference.delete().map_err(fail)?;
            }
            pruned.refs.push(name);
            continue;
        }
        if let Ok(id) = cache.refname_to_id(&name) {
            roots.push(Root {
                id,
                history: kept_history,
            });
        }
    }
    let pack_dir = cache.path().join("objects/pack");
    let packs = list(&pack_dir, |name| name.ends_with(".pack"));
    let loose = loose_dirs(&cache.path().join("objects"));
    if pruned.refs.is_empty() && packs.len() <= MAX_PACKS && loose.is_empty() {
        return Ok(pruned);
    }
    let kept = closure(cache, &roots, |_| false).map_err(fail)?;
    let written = if kept.objects.is_empty() {
        None
    } else {
        Some(format!(
            "pack-{}.",
            write_pack(cache, cache, &kept.objects)?
        ))
    };
    // The pack just written stays; every other pack and loose object goes.
    for name in list(&pack_dir, |n| n.starts_with("pack-")) {
        if written.as_deref().is_none_or(|w| !name.starts_with(w)) {
            let _ = std::fs::remove_file(pack_dir.join(&name));
        }
    }
    for dir in loose {
        let _ = std::fs::remove_dir_all(dir);
    }
    write_shallow(cache, &kept.shallow)?;
    cache.odb().and_then(|odb| odb.refresh()).map_err(fail)?;
    pruned.repacked = true;
    Ok(pruned)
}

/// The names of the files in `dir` that `keep` accepts.
fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| keep(n))
        .collect()
}

/// The loose-object directories (`objects/XX`) of an object store.
fn loose_dirs(objects: &Path) -> Vec<std::path::PathBuf> {
    list(objects, |n| {
        n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit())
    })
    .into_iter()
    .map(|n| objects.join(n))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::quarantine::Quarantine;
    use std::process::{Command, Stdio};

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = crate::source::test_git::git(dir, args);
        String::from_utf8_lossy(&out).trim().to_owned()
    }

    /// A work repository with two releases (v1, v2: commits on main, each
    /// with a file of its own) and a channel branch of two commits.
    fn work(dir: &Path) -> (String, String, String) {
        git(dir, &["init", "-q", "-b", "main", "."]);
        std::fs::write(dir.join("a"), "only in v1\n").expect("write");
        git(dir, &["add", "a"]);
        git(dir, &["commit", "-q", "-m", "v1"]);
        git(dir, &["tag", "-a", "-m", "v1", "v1"]);
        let only_v1 = git(dir, &["rev-parse", "HEAD:a"]);
        std::fs::write(dir.join("a"), "only in v2\n").expect("write");
        git(dir, &["commit", "-q", "-am", "v2"]);
        git(dir, &["tag", "-a", "-m", "v2", "v2"]);
        let v2_commit = git(dir, &["rev-parse", "HEAD"]);
        git(dir, &["checkout", "-q", "--orphan", "channel"]);
        git(dir, &["rm", "-q", "-r", "--cached", "."]);
        std::fs::remove_file(dir.join("a")).expect("clear the work tree");
        for n in 0..2 {
            std::fs::write(dir.join("channel.yaml"), format!("release: v{n}\n")).expect("write");
            git(dir, &["add", "channel.yaml"]);
            git(dir, &["commit", "-q", "-m", "channel"]);
        }
        let first_channel = git(dir, &["rev-parse", "HEAD~1"]);
        (only_v1, v2_commit, first_channel)
    }

    #[test]
    fn prune_keeps_exactly_what_the_kept_refs_reach() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (work_dir, cache_dir) = (dir.path().join("work"), dir.path().join("cache.git"));
        std::fs::create_dir(&work_dir).expect("mkdir");
        let (only_v1, v2_commit, first_channel) = work(&work_dir);
        git(dir.path(), &["init", "-q", "--bare", "cache.git"]);
        let cache_path = cache_dir.to_str().expect("utf-8");
        git(
            &work_dir,
            &["push", "-q", cache_path, "refs/tags/v1", "refs/tags/v2"],
        );
        git(
            &work_dir,
            &["push", "-q", cache_path, "channel:refs/driftless/channel"],
        );
        let junk = {
            let mut child = Command::new("git")
                .args(["hash-object", "-w", "--stdin"])
                .current_dir(&cache_dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("hash-object");
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"junk")
                .expect("write");
            let out = child.wait_with_output().expect("hash-object");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let cache = Repository::open_bare(&cache_dir).expect("open");
        let pruned = prune(
            &cache,
            &["refs/driftless/channel"],
            &["refs/tags/v2".into()],
        )
        .expect("prune");
        assert_eq!(pruned.refs, vec!["refs/tags/v1".to_owned()]);
        assert!(pruned.repacked);
        let cache = Repository::open_bare(&cache_dir).expect("reopen");
        let odb = cache.odb().expect("odb");
        let has = |id: &str| odb.exists(git2::Oid::from_str(id).expect("id"));
        assert!(!has(&only_v1), "v1's own blob went with v1");
        assert!(!has(&junk), "a loose object no ref reaches went");
        assert!(
            has(&v2_commit) && has(&first_channel),
            "kept refs keep what they reach"
        );
        assert_eq!(
            list(&cache_dir.join("objects/pack"), |n| n.ends_with(".pack")).len(),
            1
        );
        assert!(loose_dirs(&cache_dir.join("objects")).is_empty());
        let shallow = std::fs::read_to_string(cache_dir.join("shallow")).expect("shallow");
        assert_eq!(
            shallow.trim(),
            v2_commit,
            "a release is kept without its history"
        );
        // git itself finds the cache whole.
        git(&cache_dir, &["fsck", "--no-dangling"]);
        // Nothing left to do: nothing is done.
        let again = prune(
            &cache,
            &["refs/driftless/channel"],
            &["refs/tags/v2".into()],
        )
        .expect("prune again");
        assert_eq!(again, Pruned::default());
    }

    #[test]
    fn a_quarantine_admits_only_what_verified_roots_reach() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work_dir = dir.path().join("work");
        std::fs::create_dir(&work_dir).expect("mkdir");
        let (only_v1, v2_commit, _) = work(&work_dir);
        let root = dir.path().join("root");
        let cache = crate::source::fetch::open_cache(&root).expect("cache");
        let cache_dir = cache.path().to_path_buf();
        git(
            &work_dir,
            &[
                "push",
                "-q",
                cache_dir.to_str().expect("utf-8"),
                "channel:refs/driftless/channel",
            ],
        );
        let quarantine = Quarantine::create(&root, &cache).expect("quarantine");
        let q_path = quarantine.repo().path().to_path_buf();
        assert!(q_path.starts_with(&root), "beside the cache");
        // What a server sent: both releases; only v2 verified.
        git(
            &work_dir,
            &[
                "push",
                "-q",
                q_path.to_str().expect("utf-8"),
                "refs/tags/v1",
                "refs/tags/v2",
            ],
        );
        let v2 = quarantine.repo().refname_to_id("refs/tags/v2").expect("v2");
        let copied = quarantine
            .admit(
                &cache,
                &[Root {
                    id: v2,
                    history: false,
                }],
            )
            .expect("admit");
        assert_eq!(copied, 4, "the tag, its commit, its tree and its blob");
        drop(quarantine);
        assert!(!q_path.exists(), "the quarantine goes when dropped");
        let cache = Repository::open_bare(&cache_dir).expect("reopen");
        let odb = cache.odb().expect("odb");
        assert!(odb.exists(git2::Oid::from_str(&v2_commit).expect("id")));
        assert!(!odb.exists(git2::Oid::from_str(&only_v1).expect("id")));
        let shallow = std::fs::read_to_string(cache_dir.join("shallow")).expect("shallow");
        assert_eq!(shallow.trim(), v2_commit);
        assert!(
            cache.find_reference("refs/tags/v1").is_err(),
            "no ref was moved"
        );
    }
}
