//! A quarantine for what a fetch brings into the cache, the way git's
//! receive-pack quarantines a push: a temporary bare repository beside the
//! cache (`/var/lib/driftless/quarantine.git`) whose object store borrows
//! the cache's (`objects/info/alternates`), and whose refs are the cache's,
//! so a fetch into it transfers only what the cache lacks. What arrives is
//! judged there; refused, the quarantine goes whole when it is dropped;
//! accepted, only the objects reachable from what was verified are copied
//! into the cache (as one pack), and the cache's refs move.
//!
//! No trust decision is made here: the caller says which objects verified.
//! Beside it, `prune` keeps the cache to what its refs reach.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use crate::source::fetch::{FetchError, cache_dir};

/// The quarantine's place on the node.
pub const QUARANTINE_PATH: &str = "/var/lib/driftless/quarantine.git";

/// A temporary repository borrowing the cache's objects; removed on drop.
pub struct Quarantine {
    path: PathBuf,
    repo: Option<Repository>,
}

fn failed(path: &Path, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Cache {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Quarantine {
    /// A fresh quarantine beside `cache` under `root` (a stale one, left by
    /// a killed run, is removed first): the cache's objects as an
    /// alternate, its refs and its shallow commits copied.
    pub fn create(root: &Path, cache: &Repository) -> Result<Self, FetchError> {
        let path = root.join(&QUARANTINE_PATH[1..]);
        let fail = |reason: String| failed(&path, reason);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(fail(format!("cannot remove a stale quarantine: {e}")));
            }
            _ => {}
        }
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).external_template(false);
        let repo = Repository::init_opts(&path, &options).map_err(|e| fail(e.to_string()))?;
        // From here on, a failure removes what was made.
        let mut quarantine = Self {
            path: path.clone(),
            repo: None,
        };
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| fail(e.to_string()))?;
        }
        let objects = cache_dir(root).join("objects");
        let objects = objects
            .canonicalize()
            .map_err(|e| fail(format!("the cache's objects: {e}")))?;
        std::fs::create_dir_all(path.join("objects/info")).map_err(|e| fail(e.to_string()))?;
        std::fs::write(
            path.join("objects/info/alternates"),
            format!("{}\n", objects.display()),
        )
        .map_err(|e| fail(e.to_string()))?;
        match std::fs::read(cache.path().join("shallow")) {
            Ok(shallow) => {
                std::fs::write(path.join("shallow"), shallow).map_err(|e| fail(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("the cache's shallow file: {e}"))),
        }
        drop(repo);
        let repo = Repository::open_bare(&path).map_err(|e| fail(e.to_string()))?;
        for reference in cache
            .references()
            .map_err(|e| fail(e.to_string()))?
            .flatten()
        {
            if let (Ok(name), Some(target)) = (reference.name(), reference.target()) {
                repo.reference(name, target, true, "from the cache")
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        quarantine.repo = Some(repo);
        Ok(quarantine)
    }

    /// The quarantine's repository: fetch into it, judge what is in it.
    pub fn repo(&self) -> &Repository {
        self.repo
            .as_ref()
            .unwrap_or_else(|| unreachable!("a quarantine always has its repository"))
    }

    /// Copies into `cache` every object reachable from `roots` that the
    /// cache lacks, as one pack, and records the admitted commits whose
    /// parents stay behind as shallow. Returns how many objects were
    /// copied. Nothing else leaves the quarantine.
    pub fn admit(&self, cache: &Repository, roots: &[Root]) -> Result<usize, FetchError> {
        let cache_odb = cache.odb().map_err(|e| failed(cache.path(), e))?;
        let closure = closure(self.repo(), roots, |id| cache_odb.exists(id))
            .map_err(|e| failed(&self.path, e))?;
        if !closure.objects.is_empty() {
            write_pack(self.repo(), cache, &closure.objects)?;
        }
        add_shallow(cache, &closure.shallow)?;
        Ok(closure.objects.len())
    }
}

impl Quarantine {
    /// Bytes of the objects the quarantine received.
    pub fn size(&self) -> u64 {
        fn walk(dir: &Path, total: &mut u64, budget: &mut u32) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                if *budget == 0 {
                    return;
                }
                *budget -= 1;
                match entry.file_type() {
                    Ok(t) if t.is_dir() => walk(&entry.path(), total, budget),
                    Ok(t) if t.is_file() => {
                        *total += entry.metadata().map_or(0, |m| m.len());
                    }
                    _ => {}
                }
            }
        }
        let mut total = 0;
        walk(&self.path.join("objects"), &mut total, &mut 100_000);
        total
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        drop(self.repo.take());
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Where a closure starts.
#[derive(Debug, Clone, Copy)]
pub struct Root {
    /// A tag or commit.
    pub id: Oid,
    /// Whether a commit's parents belong to it (a channel's history does;
    /// a release is one commit, its tree and its tag).
    pub history: bool,
}

/// Objects reachable from some roots.
pub(crate) struct Closure {
    /// Every object, roots first, each once.
    pub(crate) objects: Vec<Oid>,
    /// Commits among them whose parents are not all there.
    pub(crate) shallow: Vec<Oid>,
}

/// Every object reachable in `repo` from `roots` that `skip` does not
/// cover (an object `skip` covers is taken to bring what it reaches, as it
/// does in a cache that only ever receives whole closures).
pub(crate) fn closure(
    repo: &Repository,
    roots: &[Root],
    skip: impl Fn(Oid) -> bool,
) -> Result<Closure, git2::Error> {
    // libgit2 reads a commit listed in `shallow` as having no parents.
    let shallow: HashSet<Oid> = read_shallow(repo)
        .map_err(|e| git2::Error::from_str(&e.to_string()))?
        .into_iter()
        .collect();
    let odb = repo.odb()?;
    let mut seen = HashSet::new();
    let mut out = Closure {
        objects: Vec::new(),
        shallow: Vec::new(),
    };
    let mut pending: Vec<(Oid, bool)> = roots.iter().map(|r| (r.id, r.history)).collect();
    while let Some((id, history)) = pending.pop() {
        if !seen.insert(id) || skip(id) {
            continue;
        }
        let (_, kind) = odb.read_header(id)?;
        out.objects.push(id);
        match kind {
            ObjectType::Tag => pending.push((repo.find_tag(id)?.target_id(), history)),
            ObjectType::Commit => {
                let commit = repo.find_commit(id)?;
                pending.push((commit.tree_id(), false));
                let parents: Vec<Oid> = commit.parent_ids().collect();
                if shallow.contains(&id) {
                    out.shallow.push(id);
                } else if history && parents.iter().all(|p| odb.exists(*p)) {
                    pending.extend(parents.into_iter().map(|p| (p, true)));
                } else if !parents.is_empty() {
                    out.shallow.push(id);
                }
            }
            ObjectType::Tree => {
                let tree = repo.find_tree(id)?;
                for entry in tree.iter() {
                    // Submodules (commits) are only named, never fetched.
                    if entry.kind() != Some(ObjectType::Commit) {
                        pending.push((entry.id(), false));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Writes `objects` of `from` as one pack (and its index) into `into`'s
/// object store; returns the pack's name (`pack-NAME.pack`).
pub(crate) fn write_pack(
    from: &Repository,
    into: &Repository,
    objects: &[Oid],
) -> Result<String, FetchError> {
    let pack_dir = into.path().join("objects/pack");
    let fail = |e: git2::Error| failed(&pack_dir, e.message());
    let mut builder = from.packbuilder().map_err(fail)?;
    builder.set_threads(1);
    for id in objects {
        builder.insert_object(*id, None).map_err(fail)?;
    }
    builder.write(&pack_dir, 0o600).map_err(fail)?;
    let name = builder
        .name()
        .map_err(fail)?
        .map(str::to_owned)
        .ok_or_else(|| failed(&pack_dir, "the pack written has no name"))?;
    into.odb().and_then(|odb| odb.refresh()).map_err(fail)?;
    Ok(name)
}

/// A repository's shallow commits: those in its `shallow` file.
pub(crate) fn read_shallow(cache: &Repository) -> Result<Vec<Oid>, FetchError> {
    let path = cache.path().join("shallow");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| Oid::from_str(l.trim()).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(failed(&path, e)),
    }
}

/// Writes `cache`'s `shallow` file (atomically; removed when empty).
pub(crate) fn write_shallow(cache: &Repository, commits: &[Oid]) -> Result<(), FetchError> {
    let path = cache.path().join("shallow");
    if commits.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(&path, e)),
            _ => Ok(()),
        };
    }
    let mut sorted: Vec<String> = commits.iter().map(Oid::to_string).collect();
    sorted.sort();
    sorted.dedup();
    let text: String = sorted.iter().map(|id| format!("{id}\n")).collect();
    let tmp = cache.path().join("shallow.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| failed(&path, e))
}

fn add_shallow(cache: &Repository, more: &[Oid]) -> Result<(), FetchError> {
    if more.is_empty() {
        return Ok(());
    }
    let mut all = read_shallow(cache)?;
    all.extend_from_slice(more);
    write_shallow(cache, &all)
}
