//! First boot over HTTP(S) or `git://`: the pinned tag fetched with one
//! protocol v2 `ls-refs` and one `fetch` (shallow, `deepen 1`), its pack parsed while it
//! streams in ([`crate::source::pack`]), and each blob written once, to a private
//! staging directory on the root's filesystem, from where apply renames it
//! beside its target. libgit2's fetch would store and index the pack first,
//! and apply would then inflate and hash every blob a second time.
//!
//! Trust leads: the tag and the commit it names are verified the moment
//! both have arrived (git sends them first); until then nothing is written
//! and what arrives is held in memory within a small bound; after that a
//! blob gets a file only when a verified tree names it, and only objects
//! reachable from the verified commit by their computed ids are ever read.
//! Every attempt is bounded (`bounds`), and a bound crossed refuses the
//! pack for good. A server that does not speak protocol v2 is fetched from
//! with libgit2, into the cache, as before.
//!
//! This file is the fetch: its attempts, their threads, and what they
//! conclude. Beside it: `wire` (the `fetch` request and the reading of its
//! response), `incoming` (the received objects: [`Incoming`]), `store`
//! (where each object goes), `trust` (the gate), `bounds` (what an attempt
//! may cost) and `writer` (the thread that writes the blobs).

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{AgentConfig, TagName};
use crate::source::fetch::{FetchError, Retries};
use crate::source::pack::{self, ObjectId};
use crate::source::poll::{PollError, Protocol, RefPoller};
use crate::verify::{Trust, Verified, VerifyError};

pub mod bounds;
mod channel;
mod incoming;
mod store;
mod trust;
mod wire;
mod writer;

pub use channel::{fetch_channel, fetch_release};
pub use incoming::{INCOMING_PATH, Incoming, Refusal, StagedBlob};
pub use wire::fetch_request;

use wire::{Message, Response};

/// Why one attempt did not bring the release.
enum AttemptError {
    /// The server does not speak v2: refused, or libgit2 fetches
    /// (`fetch.require_v2`).
    NotV2(String),
    /// The ref names a SHA-256 object where only SHA-1 is read: libgit2
    /// refuses the repository in one line, before any pack.
    Sha256Tip,
    /// The server has no such tag.
    NoSuchRef,
    /// Retrying cannot help; the setting to check, if one is to blame.
    Permanent(String, Option<&'static str>),
    /// The tag or its commit does not verify.
    Refused(anyhow::Error),
    /// Worth another attempt.
    Transient(String),
}

/// A release fetched and verified by streaming.
pub struct Streamed {
    /// Its objects.
    pub incoming: Incoming,
    /// The verification that admitted it.
    pub verified: Verified,
    /// Every entry of its tree, by path: object id and git mode.
    pub index: crate::source::pack::TreeIndex,
}

/// Whether a source at `url` may be streamed from: HTTP(S) and `git://`,
/// which speak protocol v2 (`ssh://` and `file://` go through libgit2).
pub fn can_stream(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || url.starts_with("git://")
}

/// The server did not speak protocol v2 (`why`): with `fetch.require_v2`
/// (the default) that refuses the fetch of `name`; without it, libgit2
/// fetches (and the caller goes on to it).
pub(crate) fn not_v2(config: &AgentConfig, name: &str, why: &str) -> Result<(), FetchError> {
    let url = config.source.url.redacted();
    if config.fetch.require_v2 {
        return Err(FetchError::Refused {
            name: name.to_owned(),
            url,
            reason: format!(
                "the server does not speak git protocol v2 ({why}), and a fetch without it \
                 has none of the streamed fetch's bounds; upgrade it (git 2.18 or later), or \
                 set fetch.require_v2: false to let libgit2 fetch from it"
            ),
            hint: None,
        });
    }
    tracing::info!("{url} does not stream a v2 fetch ({why}); fetching with libgit2");
    Ok(())
}

/// Fetches and verifies `tag` from an HTTP(S) or `git://` source by streaming, retrying
/// within the fetch deadline. `Ok(None)`: the source is neither HTTP(S) nor `git://`, or does
/// not speak protocol v2, and libgit2 should fetch it.
pub fn fetch_tag(
    root: &Path,
    config: &AgentConfig,
    tag: &TagName,
    trust: &Trust,
) -> anyhow::Result<Option<Streamed>> {
    let url = &config.source.url;
    if !can_stream(url.as_str()) {
        return Ok(None);
    }
    let ref_name = format!("refs/tags/{}", tag.as_str());
    let mut retries = Retries::new(&ref_name, &config.source, &config.fetch);
    loop {
        retries.attempts += 1;
        let message = match attempt(root, config, &ref_name, tag, trust, retries.remaining()) {
            Ok(incoming) => match conclude(incoming, tag)? {
                Ok(streamed) => return Ok(Some(streamed)),
                // An incomplete pack is the server's fault: try again.
                Err(missing) => missing,
            },
            Err(AttemptError::NotV2(why)) => {
                not_v2(config, &ref_name, &why)?;
                return Ok(None);
            }
            Err(AttemptError::Sha256Tip) => return Ok(None),
            Err(AttemptError::NoSuchRef) => {
                return Err(FetchError::NoSuchRef {
                    name: ref_name,
                    url: url.redacted(),
                }
                .into());
            }
            Err(AttemptError::Permanent(reason, hint)) => {
                return Err(FetchError::Refused {
                    name: ref_name,
                    url: url.redacted(),
                    reason,
                    hint,
                }
                .into());
            }
            Err(AttemptError::Refused(e)) => return Err(e),
            Err(AttemptError::Transient(message)) => message,
        };
        retries.after_failure(message)?;
    }
}

/// One attempt: `ls-refs` for the tag, then the `fetch`, parsed as it
/// arrives into a fresh staging directory.
fn attempt(
    root: &Path,
    config: &AgentConfig,
    ref_name: &str,
    tag: &TagName,
    trust: &Trust,
    remaining: Duration,
) -> Result<Incoming, AttemptError> {
    let poller = crate::source::poll::poller_for(root, config, remaining)
        .map_err(|e| AttemptError::Permanent(crate::error::one_line(&e), None))?;
    let io_timeout = config.fetch.io_timeout.0;
    let (send, messages) = mpsc::sync_channel(4);
    let wanted = ref_name.to_owned();
    let network = std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || network(&poller, &wanted, &fetch_request, &send))
        .map_err(|e| AttemptError::Transient(format!("cannot start the fetch thread: {e}")))?;
    let expect = Expect {
        tag,
        trust,
        max_bytes: config.fetch.max_bytes.0,
    };
    let received = receive(root, &messages, io_timeout, remaining, &expect);
    drop(messages);
    let _ = network.join();
    received
}

/// The network thread's first message: the object the wanted ref names,
/// within `wait`.
fn first_ref(messages: &mpsc::Receiver<Message>, wait: Duration) -> Result<String, AttemptError> {
    let first = messages
        .recv_timeout(wait)
        .map_err(|_| AttemptError::Transient("the fetch thread ended without an answer".into()))?;
    match first {
        Message::Ref(Some(oid)) => Ok(oid),
        Message::Ref(None) => Err(AttemptError::NoSuchRef),
        Message::NotV2(why) => Err(AttemptError::NotV2(why)),
        Message::Failed(e) => Err(classify(e)),
        Message::Data(_) => Err(AttemptError::Transient("data before the ref".into())),
    }
}

/// The network side of an attempt, on its own thread with its own runtime:
/// `ls-refs` of `ref_name`, then the `fetch` that `request` makes of the
/// object it names.
fn network(
    poller: &RefPoller,
    ref_name: &str,
    request: &dyn Fn(&str) -> Result<Vec<u8>, crate::source::poll::pkt::PktError>,
    send: &mpsc::SyncSender<Message>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = send.send(Message::NotV2(format!("no async runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async {
        let oid = match poller.ls_ref(ref_name).await {
            Ok(answer) if answer.protocol != Protocol::V2 => {
                let _ = send.send(Message::NotV2("no v2 ls-refs".into()));
                return;
            }
            Ok(answer) => answer.oid,
            Err(e) => {
                let _ = send.send(Message::Failed(e));
                return;
            }
        };
        let Some(oid) = oid else {
            let _ = send.send(Message::Ref(None));
            return;
        };
        let Ok(body) = request(&oid) else {
            let _ = send.send(Message::NotV2(
                "the object id does not fit a request".into(),
            ));
            return;
        };
        if send.send(Message::Ref(Some(oid))).is_err() {
            return;
        }
        let outcome = poller
            .stream_command(body, |chunk| {
                send.send(Message::Data(chunk.to_vec())).is_ok()
            })
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let _ = send.send(Message::NotV2(why));
            }
            Err(e) => {
                let _ = send.send(Message::Failed(e));
            }
        }
    });
}

/// What an attempt must receive: the tag that `trust` verifies, within
/// `max_bytes`.
struct Expect<'a> {
    tag: &'a TagName,
    trust: &'a Trust,
    max_bytes: u64,
}

/// The receiving side of an attempt.
fn receive(
    root: &Path,
    messages: &mpsc::Receiver<Message>,
    io_timeout: Duration,
    remaining: Duration,
    expect: &Expect<'_>,
) -> Result<Incoming, AttemptError> {
    let wait = io_timeout + Duration::from_secs(1);
    let oid = first_ref(messages, remaining.max(wait))?;
    let tag_id = ObjectId::from_hex(&oid)
        .ok_or_else(|| AttemptError::NotV2(format!("{oid} is not an object id")))?;
    read_into(
        root,
        tag_id,
        expect,
        Response::new(messages, io_timeout + Duration::from_secs(1)),
    )
}

/// What the verified objects of a pack read to its end make: the release,
/// or (`Ok(Err)`) why the pack lacks part of its tree.
fn conclude(mut incoming: Incoming, tag: &TagName) -> anyhow::Result<Result<Streamed, String>> {
    let verified = incoming
        .verified()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("tag {}", tag.as_str()))?;
    let tree = ObjectId::from_hex(&verified.tree).ok_or_else(|| {
        anyhow::anyhow!("tag {}: {:?} is not a tree id", tag.as_str(), verified.tree)
    })?;
    Ok(incoming.index(&tree).map(|index| Streamed {
        incoming,
        verified,
        index,
    }))
}

/// How reading a release from a plain pack ([`read_release`]) failed.
#[derive(Debug)]
pub enum PackFailure {
    /// The tag or its commit does not verify by the node's rules.
    Verify(anyhow::Error),
    /// Reading it again cannot help: a bound crossed, or the staging
    /// directory cannot be made.
    Refused(String),
    /// Cut short or incomplete: worth another attempt.
    Transient(String),
    /// Read to its end without the tag object asked for: not the file its
    /// name says (another release's, or junk); refused for good.
    NotThatObject,
}

/// Reads a release from `input`, a plain git pack (a static release file,
/// see [`crate::source::artifact`]), through exactly the store, gate and
/// bounds of the streamed fetch: the tag object `tag_id`, named `tag`,
/// must verify with `trust` before any blob is written, within
/// `max_bytes`. The objects are staged under `root`.
pub fn read_release(
    root: &Path,
    input: impl io::Read,
    tag_id: ObjectId,
    tag: &TagName,
    trust: &Trust,
    max_bytes: u64,
) -> Result<Streamed, PackFailure> {
    let expect = Expect {
        tag,
        trust,
        max_bytes,
    };
    let mut read = read_into(root, tag_id, &expect, input);
    if let Ok(incoming) = &mut read {
        if matches!(incoming.verified(), Err(VerifyError::NotFound)) {
            return Err(PackFailure::NotThatObject);
        }
    }
    match read {
        Ok(incoming) => match conclude(incoming, tag) {
            Ok(Ok(streamed)) => Ok(streamed),
            Ok(Err(missing)) => Err(PackFailure::Transient(missing)),
            Err(e) => Err(PackFailure::Verify(e)),
        },
        Err(AttemptError::Transient(why)) => Err(PackFailure::Transient(why)),
        Err(AttemptError::Refused(e)) => Err(PackFailure::Verify(e)),
        Err(AttemptError::Permanent(why, _) | AttemptError::NotV2(why)) => {
            Err(PackFailure::Refused(why))
        }
        Err(AttemptError::NoSuchRef) => Err(PackFailure::Refused("no such release".into())),
        Err(AttemptError::Sha256Tip) => Err(PackFailure::Refused("a SHA-256 object id".into())),
    }
}

/// Reads the pack `input` into a fresh staging directory, the tag object
/// `tag_id` judged by the gate the moment it and its commit arrive.
fn read_into(
    root: &Path,
    tag_id: ObjectId,
    expect: &Expect<'_>,
    input: impl io::Read,
) -> Result<Incoming, AttemptError> {
    let mut incoming = Incoming::create(
        root,
        tag_id,
        expect.tag.as_str(),
        expect.trust,
        expect.max_bytes,
    )
    .map_err(|e| AttemptError::Permanent(format!("cannot create {INCOMING_PATH}: {e}"), None))?;
    let read = pack::read_pack(input, tag_id.format(), &mut incoming).and_then(|summary| {
        incoming.settle().map_err(pack::PackError::Store)?;
        Ok(summary)
    });
    match read {
        Ok(summary) => {
            tracing::debug!(
                objects = summary.objects,
                bytes = summary.bytes,
                "pack received"
            );
        }
        Err(e) if incoming.refusal.is_some() => {
            return Err(match incoming.take_refusal() {
                Some(Refusal::Verify(v)) => AttemptError::Refused(
                    anyhow::Error::from(v).context(format!("tag {}", expect.tag.as_str())),
                ),
                Some(Refusal::Bound(reason)) => AttemptError::Permanent(reason, None),
                None => AttemptError::Permanent(e.to_string(), None),
            });
        }
        Err(pack::PackError::Io(e)) if e.kind() == io::ErrorKind::Unsupported => {
            return Err(AttemptError::NotV2(e.to_string()));
        }
        Err(e @ pack::PackError::Collision { .. }) => {
            return Err(AttemptError::Permanent(e.to_string(), None));
        }
        Err(e) => return Err(AttemptError::Transient(e.to_string())),
    }
    Ok(incoming)
}

/// Which failures of a request are worth retrying.
fn classify(e: PollError) -> AttemptError {
    match e.permanent() {
        Some(hint) => AttemptError::Permanent(e.to_string(), Some(hint)),
        None => AttemptError::Transient(e.to_string()),
    }
}
