//! A channel move over smart HTTP(S) or `git://` with protocol v2: one `ls-refs` of
//! the channel ref and one `fetch` of its tip with its history (telling
//! the server the tip this node holds), the pack read by driftless's own
//! bounded reader as it arrives ([`crate::source::checked`]) and only then
//! indexed by libgit2 into the quarantine. The release a verified tip
//! names comes the same way (`ls-refs` of its tag, a `fetch` of depth 1),
//! within what is left of `fetch.max_bytes`. libgit2's own fetch would index
//! it unread, and its indexer resolves deltas without bound: a pack of a
//! few KB can keep it hashing for minutes. A server that does not speak v2,
//! and every other transport, is fetched from with libgit2 as before.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use git2::{Oid, Repository};

use super::wire::{Message, Response, channel_request, fetch_request};
use super::{AttemptError, can_stream, first_ref, network};
use crate::config::AgentConfig;
use crate::source::checked::{self, Failure, Limits};
use crate::source::fetch::{FetchError, Retries};

/// Fetches the channel ref `remote_ref` into `repo` (a quarantine) and
/// points `local_ref` at its tip, which it returns. `Ok(None)`: the source
/// is neither HTTP(S) nor `git://`, or does not speak protocol v2; fetch with libgit2.
pub fn fetch_channel(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    remote_ref: &str,
    local_ref: &str,
) -> Result<Option<Oid>, FetchError> {
    if !can_stream(config.source.url.as_str()) {
        return Ok(None);
    }
    let have = repo.refname_to_id(local_ref).ok().map(|id| id.to_string());
    let limits = Limits::channel(
        &config.fetch,
        config.fetch.max_bytes.0,
        Instant::now() + config.fetch.deadline.0,
    );
    let wanted = Wanted {
        remote_ref,
        have: have.as_deref(),
        history: true,
    };
    fetch_checked(root, config, repo, &wanted, local_ref, &limits)
}

/// Fetches release tag `remote_ref` (`refs/tags/TAG`), depth 1, into
/// `repo` (a quarantine) within `max_bytes` (what is left of
/// `fetch.max_bytes`), and points the same ref there at it. `Ok(None)`:
/// the source is neither HTTP(S) nor `git://`, or does not speak protocol v2.
pub fn fetch_release(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    remote_ref: &str,
    max_bytes: u64,
) -> Result<Option<Oid>, FetchError> {
    if !can_stream(config.source.url.as_str()) {
        return Ok(None);
    }
    let limits = Limits::release(
        &config.fetch,
        max_bytes,
        Instant::now() + config.fetch.deadline.0,
    );
    let wanted = Wanted {
        remote_ref,
        have: None,
        history: false,
    };
    fetch_checked(root, config, repo, &wanted, remote_ref, &limits)
}

/// What one fetch asks for.
struct Wanted<'a> {
    /// The ref listed.
    remote_ref: &'a str,
    /// The tip this node holds of it, when it asks for history.
    have: Option<&'a str>,
    /// The tip's history (but what `have` reaches), or depth 1.
    history: bool,
}

/// `ls-refs` of the wanted ref, then a `fetch` of what it names, read
/// within `limits` and indexed into `repo`; `local_ref` then names it.
fn fetch_checked(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    wanted: &Wanted<'_>,
    local_ref: &str,
    limits: &Limits,
) -> Result<Option<Oid>, FetchError> {
    let url = &config.source.url;
    let remote_ref = wanted.remote_ref;
    let mut retries = Retries::new(remote_ref, &config.source, &config.fetch);
    let refused = |reason: String, hint| FetchError::Refused {
        name: remote_ref.to_owned(),
        url: url.redacted(),
        reason,
        hint,
    };
    loop {
        retries.attempts += 1;
        let attempt = Attempt {
            root,
            config,
            wanted,
            limits,
        };
        let message = match attempt.run(repo, retries.remaining()) {
            Ok(tip) => {
                repo.reference(local_ref, tip, true, "fetched, checked")
                    .map_err(|e| FetchError::Cache {
                        path: repo.path().display().to_string(),
                        reason: e.message().to_owned(),
                    })?;
                return Ok(Some(tip));
            }
            Err(AttemptError::NotV2(why)) => {
                super::not_v2(config, remote_ref, &why)?;
                return Ok(None);
            }
            Err(AttemptError::Sha256Tip) => return Ok(None),
            Err(AttemptError::NoSuchRef) => {
                return Err(FetchError::NoSuchRef {
                    name: remote_ref.to_owned(),
                    url: url.redacted(),
                });
            }
            Err(AttemptError::Permanent(reason, hint)) => return Err(refused(reason, hint)),
            Err(AttemptError::Refused(e)) => {
                return Err(refused(crate::error::one_line(&e), None));
            }
            Err(AttemptError::Transient(message)) => message,
        };
        retries.after_failure(message)?;
    }
}

/// One attempt's inputs.
struct Attempt<'a> {
    root: &'a Path,
    config: &'a AgentConfig,
    wanted: &'a Wanted<'a>,
    limits: &'a Limits,
}

impl Attempt<'_> {
    /// `ls-refs`, then the `fetch`, checked and indexed into `repo`.
    fn run(&self, repo: &Repository, remaining: Duration) -> Result<Oid, AttemptError> {
        let poller = crate::source::poll::poller_for(self.root, self.config, remaining)
            .map_err(|e| AttemptError::Permanent(crate::error::one_line(&e), None))?;
        let io_timeout = self.config.fetch.io_timeout.0;
        let (send, messages) = mpsc::sync_channel(4);
        let wanted = self.wanted.remote_ref.to_owned();
        let have = self.wanted.have.map(str::to_owned);
        let history = self.wanted.history;
        let thread = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                let request = |oid: &str| {
                    if history {
                        channel_request(oid, have.as_deref())
                    } else {
                        fetch_request(oid)
                    }
                };
                network(&poller, &wanted, &request, &send);
            })
            .map_err(|e| AttemptError::Transient(format!("cannot start the fetch thread: {e}")))?;
        let received = self.receive(repo, &messages, io_timeout, remaining);
        drop(messages);
        let _ = thread.join();
        received
    }

    fn receive(
        &self,
        repo: &Repository,
        messages: &mpsc::Receiver<Message>,
        io_timeout: Duration,
        remaining: Duration,
    ) -> Result<Oid, AttemptError> {
        let wait = io_timeout + Duration::from_secs(1);
        let tip = first_ref(messages, remaining.max(wait))?;
        let tip = Oid::from_str(&tip)
            .ok()
            .filter(|_| tip.len() == 40)
            .ok_or(AttemptError::Sha256Tip)?;
        let shown = format!("the fetch of {}", self.wanted.remote_ref);
        checked::index(repo, Response::new(messages, wait), self.limits, &shown).map_err(|e| {
            match e {
                Failure::Refused(why) => AttemptError::Permanent(why, None),
                Failure::Transient(why) => AttemptError::Transient(why),
                Failure::Unsupported(why) => AttemptError::NotV2(why),
            }
        })?;
        if !repo.odb().is_ok_and(|odb| odb.exists(tip)) {
            return Err(AttemptError::Transient(format!(
                "the server did not send {} ({tip})",
                self.wanted.remote_ref
            )));
        }
        Ok(tip)
    }
}
