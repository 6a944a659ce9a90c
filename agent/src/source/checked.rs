//! A pack fetched into a quarantine (a channel move's, and the release it
//! names) read by driftless's own reader ([`crate::source::pack`]) before
//! libgit2 indexes it.
//!
//! libgit2's indexer resolves a pack's deltas after the whole pack has
//! arrived, with no bound on what they expand to and without calling back
//! into driftless while it does: a pack of a few KB whose deltas each
//! rebuild a 64 MiB blob keeps it hashing for minutes, and no deadline
//! checked in a callback can stop it. So the pack of a channel move (the
//! static bundle's, and a git fetch's over smart HTTP), and the pack of the
//! release a verified channel tip names (from the same sources), is read
//! here first,
//! as it arrives: every object inflated, every delta applied, every id
//! computed, within bounds a channel never comes near (its inflated
//! bytes, its objects, the size of each; for a release, `fetch.max_bytes`
//! inflated) and the fetch's deadline. Its
//! bytes go meanwhile to a file in the quarantine, within `fetch.max_bytes`,
//! and only a pack that passed is handed to libgit2's pack writer from
//! that file. The inflated objects go to a second file, from which a
//! delta's base is read back a range at a time, so memory stays small
//! whatever the pack claims. Both files are removed when this ends.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::Repository;

use crate::config::FetchSettings;
use crate::source::pack::{
    self, Base, BaseBytes, BaseObject, Begin, ObjectFormat, ObjectId, ObjectKind, ObjectStore,
    PackError,
};
use crate::types::ByteSize;

/// The largest object a channel's pack may hold: sixteen times the largest
/// channel document (`release::channel::MAX_CHANNEL_LEN`); its commits and
/// trees are far smaller.
pub const MAX_CHANNEL_OBJECT: u64 = 1 << 20;

/// The most objects a release's pack may hold here: a blob and a tree for
/// each of the 100,000 entries a node spec may list (`MAX_ENTRIES` of the
/// later `release::spec`, whose tests hold the two together), the commit
/// and the tag. The reader keeps about 100 bytes an object, so about
/// 20 MiB at most (the pack reader itself takes up to `pack::MAX_OBJECTS`,
/// a million).
pub const MAX_RELEASE_OBJECTS: u64 = 200_002;

/// The most bytes a release's head (its signed tag and its commit) may
/// take, packed or inflated: far more than a tag's and a commit's messages.
pub const MAX_HEAD_BYTES: u64 = 1 << 20;

/// What one pack may cost before it is refused.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Pack bytes received (what is left of `fetch.max_bytes`).
    pub received: u64,
    /// Inflated bytes: objects, deltas applied, and delta instructions.
    pub inflated: u64,
    /// Objects.
    pub objects: u64,
    /// The largest object, inflated.
    pub object: u64,
    /// When the fetch's deadline passes.
    pub deadline: Instant,
    /// The deadline as configured, for messages.
    pub deadline_shown: std::time::Duration,
    /// What the pack is, for messages: "the channel's pack".
    pub pack: &'static str,
    /// The setting that bounds its inflated bytes, for messages.
    pub setting: &'static str,
}

impl Limits {
    /// A channel move's pack: `fetch.channel_max_bytes` inflated, one
    /// object per KiB of it, each at most [`MAX_CHANNEL_OBJECT`], at most
    /// `received` pack bytes, until `deadline`.
    pub fn channel(fetch: &FetchSettings, received: u64, deadline: Instant) -> Self {
        Self {
            received,
            inflated: fetch.channel_max_bytes.0,
            objects: fetch.channel_max_bytes.0 / 1024,
            object: MAX_CHANNEL_OBJECT,
            deadline,
            deadline_shown: fetch.deadline.0,
            pack: "the channel's pack",
            setting: "fetch.channel_max_bytes",
        }
    }

    /// A release's head (`releases/ID.head.pack`): two objects, within
    /// [`MAX_HEAD_BYTES`] received and inflated, for `time` from now.
    pub fn head(time: std::time::Duration) -> Self {
        Self {
            received: MAX_HEAD_BYTES,
            inflated: MAX_HEAD_BYTES,
            objects: 2,
            object: MAX_HEAD_BYTES,
            deadline: Instant::now() + time,
            deadline_shown: time,
            pack: "the release's head",
            setting: "a head's fixed bound",
        }
    }

    /// A release's pack in a quarantine: at most `max_bytes` (what is left
    /// of `fetch.max_bytes`) received and as much inflated, as the
    /// streamed first boot allows; at most [`MAX_RELEASE_OBJECTS`] objects
    /// (each costs this reader about 100 bytes of memory); until
    /// `deadline`.
    pub fn release(fetch: &FetchSettings, max_bytes: u64, deadline: Instant) -> Self {
        Self {
            received: max_bytes,
            inflated: max_bytes,
            objects: MAX_RELEASE_OBJECTS,
            object: max_bytes,
            deadline,
            deadline_shown: fetch.deadline.0,
            pack: "the release's pack",
            setting: "fetch.max_bytes",
        }
    }
}

/// Why a pack was not indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A bound crossed, or a pack libgit2 would not take: refused for good.
    Refused(String),
    /// The input was cut short or failed: worth another attempt.
    Transient(String),
    /// The input says the server does not speak protocol v2.
    Unsupported(String),
}

/// Reads the pack `input` within `limits` and, once it passed, indexes it
/// into `repo`'s object store (a quarantine) with libgit2. `what` names
/// the input in messages.
pub fn index(
    repo: &Repository,
    input: impl Read,
    limits: &Limits,
    what: &str,
) -> Result<(), Failure> {
    let files = Scratch::new(repo.path());
    let refused = |e: io::Error, path: &Path| Failure::Refused(format!("{}: {e}", path.display()));
    let pack_file = create(&files.pack).map_err(|e| refused(e, &files.pack))?;
    let spill = create(&files.spill).map_err(|e| refused(e, &files.spill))?;
    let mut tee = Tee {
        input,
        copy: BufWriter::with_capacity(64 * 1024, pack_file),
        received: 0,
        limit: limits.received,
        stop: None,
    };
    let mut store = Check::new(spill, limits);
    let read = pack::read_pack(&mut tee, ObjectFormat::Sha1, &mut store);
    let refusal = store.refusal.take().or(tee.stop.take());
    match (read, refusal) {
        // Nothing new (a fetch of a tip the node has): nothing to index.
        (Ok(summary), _) if summary.objects == 0 => return Ok(()),
        (Ok(summary), _) => tracing::debug!(
            objects = summary.objects,
            bytes = summary.bytes,
            inflated = store.inflated,
            "{what}: the pack passed its bounds"
        ),
        (Err(_), Some(why)) => return Err(Failure::Refused(format!("{what}: {why}"))),
        (Err(PackError::Io(e)), None) if e.kind() == io::ErrorKind::Unsupported => {
            return Err(Failure::Unsupported(e.to_string()));
        }
        (Err(e @ PackError::Collision { .. }), None) => {
            return Err(Failure::Refused(format!("{what}: {e}")));
        }
        (Err(e), None) => return Err(Failure::Transient(format!("{what}: {e}"))),
    }
    // The inflated objects are not needed any more: only the pack, twice
    // while libgit2 writes its own copy.
    drop(store);
    let _ = std::fs::remove_file(&files.spill);
    let mut pack_file = tee
        .copy
        .into_inner()
        .map_err(|e| refused(e.into_error(), &files.pack))?;
    pack_file.rewind().map_err(|e| refused(e, &files.pack))?;
    let libgit2 = |e: git2::Error| {
        Failure::Refused(format!(
            "{what}: libgit2 cannot index the pack: {}",
            e.message()
        ))
    };
    let odb = repo.odb().map_err(libgit2)?;
    let mut writer = odb.packwriter().map_err(libgit2)?;
    io::copy(&mut pack_file, &mut writer)
        .map_err(|e| Failure::Refused(format!("{what}: libgit2 cannot index the pack: {e}")))?;
    writer.commit().map_err(libgit2)?;
    Ok(())
}

fn create(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// The two files beside the quarantine's objects; removed on drop.
struct Scratch {
    pack: PathBuf,
    spill: PathBuf,
}

impl Scratch {
    fn new(dir: &Path) -> Self {
        Self {
            pack: dir.join("checked.pack"),
            spill: dir.join("checked.objects"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pack);
        let _ = std::fs::remove_file(&self.spill);
    }
}

/// The input, copied to the pack file as it is read, within `limit` bytes.
struct Tee<R> {
    input: R,
    copy: BufWriter<File>,
    received: u64,
    limit: u64,
    /// Why reading stopped for good (a bound, the local file).
    stop: Option<String>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(out)?;
        self.received += n as u64;
        let stop = |tee: &mut Self, why: String| {
            tee.stop = Some(why.clone());
            io::Error::other(why)
        };
        if self.received > self.limit {
            let why = format!(
                "the server sent more than fetch.max_bytes ({}); refusing it (raise \
                 fetch.max_bytes if the release is that large)",
                ByteSize(self.limit)
            );
            return Err(stop(self, why));
        }
        if let Err(e) = self.copy.write_all(&out[..n]) {
            return Err(stop(self, format!("cannot keep the pack: {e}")));
        }
        Ok(n)
    }
}

/// An object read, where its inflated bytes are in the spill file.
#[derive(Debug, Clone, Copy)]
struct Kept {
    offset: u64,
    kind: ObjectKind,
    start: u64,
    len: u64,
}

/// The store that checks: charges every object to the limits, keeps its
/// inflated bytes in the spill file, and gives them back as delta bases.
struct Check<'a> {
    limits: &'a Limits,
    spill: BufWriter<File>,
    spilled: u64,
    /// Every object ended, in pack order (so by offset).
    kept: Vec<Kept>,
    ids: std::collections::HashMap<ObjectId, usize>,
    current: Option<Kept>,
    inflated: u64,
    /// The bound crossed, if one was.
    refusal: Option<String>,
}

impl<'a> Check<'a> {
    fn new(spill: File, limits: &'a Limits) -> Self {
        Self {
            limits,
            spill: BufWriter::with_capacity(64 * 1024, spill),
            spilled: 0,
            kept: Vec::new(),
            ids: std::collections::HashMap::new(),
            current: None,
            inflated: 0,
            refusal: None,
        }
    }

    fn refuse(&mut self, why: String) -> String {
        self.refusal.get_or_insert(why).clone()
    }

    fn in_time(&mut self) -> Result<(), String> {
        if Instant::now() < self.limits.deadline {
            return Ok(());
        }
        Err(self.refuse(format!(
            "the pack was not read within fetch.deadline ({:?}); refusing it",
            self.limits.deadline_shown
        )))
    }

    fn find(&self, offset: u64) -> Option<usize> {
        self.kept.binary_search_by_key(&offset, |k| k.offset).ok()
    }
}

impl ObjectStore for Check<'_> {
    fn begin(&mut self, object: Begin) -> Result<(), String> {
        self.in_time()?;
        let limits = self.limits;
        if object.size > limits.object {
            return Err(self.refuse(format!(
                "an object of {} in {}, which holds none over {}; refusing it",
                ByteSize(object.size),
                limits.pack,
                ByteSize(limits.object)
            )));
        }
        if self.kept.len() as u64 >= limits.objects {
            return Err(self.refuse(format!(
                "{} holds more than {} objects (bounded by {}); refusing it (raise {} if it \
                 is that large)",
                limits.pack, limits.objects, limits.setting, limits.setting
            )));
        }
        let instructions = object.delta.map_or(0, |(_, n)| n);
        let inflated = self
            .inflated
            .saturating_add(object.size)
            .saturating_add(instructions);
        if inflated > limits.inflated {
            return Err(self.refuse(format!(
                "{} inflates to more than {} ({}); refusing it (raise {} if it is that large)",
                limits.pack,
                limits.setting,
                ByteSize(limits.inflated),
                limits.setting
            )));
        }
        self.inflated = inflated;
        self.current = Some(Kept {
            offset: object.offset,
            kind: object.kind,
            start: self.spilled,
            len: object.size,
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.in_time()?;
        self.spill
            .write_all(bytes)
            .map_err(|e| format!("cannot keep the pack's objects: {e}"))?;
        self.spilled += bytes.len() as u64;
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        let kept = self
            .current
            .take()
            .ok_or_else(|| "an object ended that never began".to_owned())?;
        self.kept.push(kept);
        Ok(())
    }

    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        let index = self
            .find(offset)
            .ok_or_else(|| format!("an id for no object (at pack byte {offset})"))?;
        if self.ids.contains_key(&id) {
            // git never sends an object twice; a pack that does only
            // makes the node hash (and keep) the same bytes again.
            return Err(self.refuse(format!(
                "{} holds object {} twice; refusing it",
                self.limits.pack,
                id.to_hex()
            )));
        }
        self.ids.insert(id, index);
        Ok(())
    }

    fn base(&mut self, base: Base) -> Result<Option<BaseObject>, String> {
        let index = match base {
            Base::Offset(offset) => self.find(offset),
            Base::Id(id) => self.ids.get(&id).copied(),
        };
        let Some(kept) = index.map(|i| self.kept[i]) else {
            return Ok(None);
        };
        self.spill
            .flush()
            .map_err(|e| format!("cannot keep the pack's objects: {e}"))?;
        let file = self
            .spill
            .get_ref()
            .try_clone()
            .map_err(|e| format!("cannot read a delta base back: {e}"))?;
        Ok(Some(BaseObject {
            offset: kept.offset,
            kind: kept.kind,
            bytes: BaseBytes::Span(file, kept.start, kept.len),
        }))
    }
}

#[cfg(test)]
mod tests;
