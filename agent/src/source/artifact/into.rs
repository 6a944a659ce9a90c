//! Static files into a quarantine ([`crate::source::quarantine`]): the
//! channel's bundle and a release's pack, each indexed by libgit2 into the
//! quarantine's object store, as a git fetch of the channel would be, and
//! judged there by the same rules. Each pack is read by driftless's own
//! reader first, within a channel's or a release's bounds
//! ([`crate::source::checked`]). Each transfer is bounded by what is left
//! of `fetch.max_bytes`, retried within `fetch.deadline` when it was cut,
//! and refused for good when it is not what it must be.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use git2::{Oid, Repository};

use super::channel::{channel_path, read_header};
use super::{Fetcher, GetError, head_path, release_path};
use crate::config::{AgentConfig, TagName};
use crate::source::checked;
use crate::source::fetch::{FetchError, Retries};
use crate::source::pack::ObjectId;

/// Why one transfer did not land.
enum Step {
    Permanent(String),
    Transient(String),
}

impl From<GetError> for Step {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Permanent(m) => Step::Permanent(m),
            GetError::Transient(m) => Step::Transient(m),
        }
    }
}

/// Fetches the channel's bundle into `repo` (a quarantine) within
/// `fetch.max_bytes`, and points `local_ref` at the tip it names. Returns
/// that tip.
pub fn fetch_channel_into(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    local_ref: &str,
) -> Result<Oid, FetchError> {
    let path = channel_path(config);
    let ref_name = config.channel_ref();
    let deadline = Instant::now() + config.fetch.deadline.0;
    let limits = checked::Limits::channel(&config.fetch, config.fetch.max_bytes.0, deadline);
    let tip = with_retries(root, config, &ref_name, |fetcher| {
        let mut body = fetcher.open(&path)?;
        let tip = read_header(&mut body, &ref_name)
            .map_err(|why| Step::Permanent(format!("{}: {why}", fetcher.describe(&path))))?;
        checked_into(repo, body, &limits, &fetcher.describe(&path))?;
        Ok(tip)
    })?;
    let tip = Oid::from_str(&tip).map_err(|e| cache_error(repo, e))?;
    repo.reference(local_ref, tip, true, "from the static channel")
        .map_err(|e| cache_error(repo, e))?;
    Ok(tip)
}

/// Fetches release `tag`, whose tag object the verified channel names as
/// `tag_object`, into `repo` (a quarantine), and points `refs/tags/TAG` at
/// that object: its head (the tag and its commit, all a channel move's
/// verdict needs) when the site has one, else its pack, within
/// `max_bytes`. The tag is verified there by the caller.
pub fn fetch_release_into(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    tag: &TagName,
    tag_object: &str,
    max_bytes: u64,
) -> Result<(), FetchError> {
    let name = format!("refs/tags/{}", tag.as_str());
    let id = ObjectId::from_hex(tag_object).ok_or_else(|| FetchError::Refused {
        name: name.clone(),
        url: config.source.url.redacted(),
        reason: format!("{tag_object:?} is not a SHA-1 object id"),
        hint: None,
    })?;
    let oid = Oid::from_str(tag_object).map_err(|e| cache_error(repo, e))?;
    if head_into(root, config, repo, &id, oid) {
        repo.reference(&name, oid, true, "from the static release's head")
            .map_err(|e| cache_error(repo, e))?;
        return Ok(());
    }
    let path = release_path(&id);
    let deadline = Instant::now() + config.fetch.deadline.0;
    let limits = checked::Limits::release(&config.fetch, max_bytes, deadline);
    with_retries(root, config, &name, |fetcher| {
        let body = fetcher.open(&path)?;
        checked_into(repo, body, &limits, &fetcher.describe(&path))
    })?;
    if !repo.odb().is_ok_and(|odb| odb.exists(oid)) {
        return Err(FetchError::Refused {
            name,
            url: config.source.url.redacted(),
            reason: format!(
                "{} does not hold tag object {tag_object}: its bytes are not what its name says",
                path.join("/")
            ),
            hint: None,
        });
    }
    repo.reference(&name, oid, true, "from the static release")
        .map_err(|e| cache_error(repo, e))?;
    Ok(())
}

/// Fetches the release's head (`releases/ID.head.pack`) into `repo`, once
/// and within [`checked::Limits::head`]: true when `repo` then holds the
/// tag object `oid` and the commit it names (read here, not trusted: the
/// caller verifies both). Anything else (a site published before heads
/// existed, a file that is not that head, a failed request) is logged and
/// the caller fetches the whole release instead: the head only saves
/// bytes, and a server that withholds or spoils it costs the node one
/// small request more than a move cost before.
fn head_into(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    id: &ObjectId,
    oid: Oid,
) -> bool {
    let path = head_path(id);
    let time = head_time(&config.fetch);
    let limits = checked::Limits::head(time);
    let fetched = Fetcher::new(root, config, time)
        .map_err(|e| crate::error::one_line(&e))
        .and_then(|fetcher| {
            let body = fetcher.open(&path).map_err(|e| match e {
                GetError::Permanent(why) | GetError::Transient(why) => why,
            })?;
            checked_into(repo, body, &limits, &fetcher.describe(&path)).map_err(|e| match e {
                Step::Permanent(why) | Step::Transient(why) => why,
            })
        });
    // Read with the node's own parser, only to decide whether to fall back.
    let held = fetched.and_then(|()| {
        let odb = repo.odb().map_err(|e| e.message().to_owned())?;
        let raw = odb
            .read(oid)
            .ok()
            .filter(|raw| raw.kind() == git2::ObjectType::Tag)
            .ok_or_else(|| format!("it does not hold tag object {oid}"))?;
        let commit = crate::verify::object::parse_tag(raw.data())
            .map_err(|e| format!("tag object {oid} in it: {e}"))?
            .object;
        Oid::from_str(&commit)
            .ok()
            .filter(|commit| odb.exists(*commit))
            .map(drop)
            .ok_or_else(|| format!("it does not hold commit {commit}, which the tag names"))
    });
    match held {
        Ok(()) => true,
        Err(why) => {
            tracing::info!(
                "{}: {why}; fetching the whole release instead",
                path.join("/")
            );
            false
        }
    }
}

/// The longest the release's head may take: one `fetch.io_timeout` (it is
/// at most a megabyte), never more than `fetch.deadline`, so a server that
/// trickles it delays a move's verdict by that, and then the whole release
/// gets its own deadline.
pub fn head_time(fetch: &crate::config::FetchSettings) -> std::time::Duration {
    fetch.io_timeout.0.min(fetch.deadline.0)
}

/// Runs `step` until it lands, is refused, or the deadline passes.
fn with_retries<T>(
    root: &Path,
    config: &AgentConfig,
    name: &str,
    mut step: impl FnMut(&Fetcher) -> Result<T, Step>,
) -> Result<T, FetchError> {
    let mut retries = Retries::new(name, &config.source, &config.fetch);
    loop {
        retries.attempts += 1;
        let fetcher = Fetcher::new(root, config, retries.remaining())
            .map_err(|e| FetchError::Credentials(crate::error::one_line(&e)))?;
        match step(&fetcher) {
            Ok(value) => return Ok(value),
            Err(Step::Permanent(reason)) => {
                return Err(FetchError::Refused {
                    name: name.to_owned(),
                    url: config.source.url.redacted(),
                    reason,
                    hint: None,
                });
            }
            Err(Step::Transient(message)) => retries.after_failure(message)?,
        }
    }
}

/// Reads a pack within `limits` ([`checked`]) and only then has libgit2
/// index it into `repo`'s object store (which checks every object's id).
fn checked_into(
    repo: &Repository,
    input: impl Read,
    limits: &checked::Limits,
    what: &str,
) -> Result<(), Step> {
    checked::index(repo, input, limits, what).map_err(|e| match e {
        checked::Failure::Transient(why) => Step::Transient(why),
        checked::Failure::Refused(why) | checked::Failure::Unsupported(why) => Step::Permanent(why),
    })
}

fn cache_error(repo: &Repository, e: git2::Error) -> FetchError {
    FetchError::Cache {
        path: repo.path().display().to_string(),
        reason: e.message().to_owned(),
    }
}
