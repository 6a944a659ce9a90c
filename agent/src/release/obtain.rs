//! Obtaining the verified release a node is to run: the config's fixed tag
//! or the one its channel names, from the cache when it already holds it
//! (an image pre-seeded by `driftless fetch`), else from the source, by a
//! streamed fetch or with libgit2 into the cache. Nothing is returned that
//! has not verified.

use std::path::Path;

use anyhow::Context as _;
use git2::Repository;

use crate::config::{AgentConfig, SourceKind, TagName};
use crate::release::candidate;
use crate::release::channel::{self, ChannelRefusal, ChannelState};
use crate::release::clock::{self, Judged, SignedTime};
use crate::source::fetch;
use crate::verify::{self, Roles, Verified};

/// The tag names a different commit than the config pins.
#[derive(Debug, thiserror::Error)]
#[error("tag {tag} names commit {found}, but release.commit pins {pinned}")]
pub struct PinMismatch {
    /// The tag.
    pub tag: String,
    /// The commit the tag names.
    pub found: String,
    /// The commit the config pins.
    pub pinned: String,
}

/// What a node knows before it resolves its release: its channel floor
/// and last accepted tip, and the signed times it has seen (an image's
/// bake record; see `record::floor`).
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// The channel floor and the last accepted tip.
    pub known: channel::Known,
    /// The signed times seen, below which time is never judged.
    pub signed: Vec<SignedTime>,
}

/// The release a node is to run: the config's fixed tag, or the tag its
/// channel names, resolved from the cache when it already holds a channel
/// tip (a pre-seeded image needs no network), else from the source. A
/// channel is judged by the node's rules: never below `before`'s floor,
/// and fresh at a clock that waited for synchronization as `clock.sync`
/// says and is never earlier than the newest signed time seen.
pub fn resolve_tag(
    root: &Path,
    config: &AgentConfig,
    repo: &Repository,
    roles: &Roles,
    before: &Before,
) -> anyhow::Result<(TagName, Option<ChannelState>, Judged)> {
    if let Some(tag) = &config.release.tag {
        let judged = clock::judge(&before.signed, clock::synchronized(false));
        return Ok((tag.clone(), None, judged));
    }
    let synchronized = clock::wait_for_sync(&config.clock)?;
    let expect = channel::Expect {
        channel: config.channel_name(),
        fleet: config.channel.fleet.clone(),
    };
    // The channel's current tip, so new nodes boot with the current release;
    // an image's pre-seeded tip only when the source cannot be reached (with
    // a short deadline, so such a boot is not held up for long). The tip is
    // fetched into quarantine and reaches the cache only once it verified.
    tracing::info!(
        "resolving the channel {} from {}",
        config.channel_ref(),
        config.source.url.redacted()
    );
    let mut quick = config.clone();
    quick.fetch.deadline = quick.fetch.deadline.min(crate::types::Interval::secs(30));
    let fetched = candidate::fetch(repo, root, &quick);
    let judged = clock::judge(&before.signed, synchronized);
    tracing::info!("judging the channel at {} {}", judged.at, judged.by());
    let evaluate = |repo: &Repository, tip| {
        channel::evaluate(
            repo,
            roles,
            tip,
            &expect,
            &before.known,
            &config.channel,
            &judged,
        )
    };
    let state = match fetched {
        Ok(candidate) => {
            let state = evaluate(candidate.repo(), candidate.tip)?;
            let named = state.file.release.clone();
            candidate.admit(repo, &[&named])?;
            state
        }
        Err(e) => match repo.refname_to_id(channel::CACHE_REF) {
            Ok(cached) => {
                tracing::warn!(
                    "cannot reach the channel ({e}); using the tip this image was baked with"
                );
                evaluate(repo, cached)?
            }
            Err(_) => return Err(e.into()),
        },
    };
    tracing::info!(
        "channel {} at {} (sequence {}, signed by {}, expires {}) names release {}",
        config.channel_ref(),
        state.tip,
        state.file.sequence,
        state.signer,
        state.file.expires,
        state.file.release.as_str()
    );
    Ok((state.file.release.clone(), Some(state), judged))
}

/// The channel as it stands, verified by the node's rules but for its
/// expiry: the state a floor records (baking an image, or applying a node
/// built from a fixed tag). Fetches the channel branch into quarantine;
/// the tip reaches the cache only once it verified.
pub fn observe_channel(
    root: &Path,
    config: &AgentConfig,
    before: &Before,
) -> anyhow::Result<ChannelState> {
    crate::source::libgit::start();
    let roles = config.load_roles(root)?;
    let repo = fetch::open_cache(root)?;
    let candidate = candidate::fetch(&repo, root, config)?;
    let judged = clock::judge(&before.signed, clock::synchronized(false));
    let expect = channel::Expect {
        channel: config.channel_name(),
        fleet: config.channel.fleet.clone(),
    };
    let state = channel::verify_tip(
        candidate.repo(),
        &roles,
        candidate.tip,
        &expect,
        &before.known,
        &config.channel,
        &judged,
    )?;
    // The node's own release stays in the cache; the tip joins it.
    let keep = config.release.tag.iter().collect::<Vec<_>>();
    candidate.admit(&repo, &keep)?;
    Ok(state)
}

/// Makes sure the cache holds the pinned tag, verified: from the cache alone
/// when it already does (an image pre-seeded by `driftless fetch`), else from
/// the source. Returns the cache, the verification, and the channel state
/// the tag came from, if it came from a channel.
pub fn fetch_verified(
    root: &Path,
    config: &AgentConfig,
    before: &Before,
) -> anyhow::Result<(Repository, Verified, Option<ChannelState>)> {
    let fetched = fetch_release(root, config, false, before)?;
    let cache = fetched
        .cache
        .ok_or_else(|| anyhow::anyhow!("no cache was opened"))?;
    Ok((cache, fetched.verified, fetched.channel))
}

/// A verified release and where its objects are.
pub struct Fetched {
    /// The cache, which holds the release unless `streamed` does (and is
    /// not opened at all when nothing could be in it).
    pub cache: Option<Repository>,
    /// The release, when a streamed fetch received it.
    pub streamed: Option<crate::source::stream::Streamed>,
    /// The verification that admitted it.
    pub verified: Verified,
    /// The channel state the tag came from, if it came from a channel.
    pub channel: Option<ChannelState>,
    /// Whether the release came from the source at this run (not from a
    /// pre-seeded cache, which needs no network).
    pub from_source: bool,
}

/// Finds the pinned tag, verified: in the cache when it already holds it,
/// else from the source, by a streamed fetch when `stream` allows and the
/// source speaks protocol v2 over HTTP(S), else with libgit2 into the cache.
pub fn fetch_release(
    root: &Path,
    config: &AgentConfig,
    stream: bool,
    before: &Before,
) -> anyhow::Result<Fetched> {
    let roles = config.load_roles(root)?;
    let trust = &roles.release;
    let is_static = config.source.kind == SourceKind::Static;
    if is_static && !stream {
        anyhow::bail!(
            "source.kind static: only a first boot (driftless apply) reads a static source; \
             bake an image's cache from the git source"
        );
    }
    if let Some(tag) = config.release.tag.as_ref().filter(|_| is_static) {
        return fetch_static(root, config, tag, trust);
    }
    // A node that never had a cache, with a fixed tag, has nothing to look
    // up locally: a streamed fetch needs neither the cache nor libgit2 (whose
    // start alone costs an agent about 4 MiB: it starts OpenSSL).
    let fresh = config.release.tag.as_ref().filter(|_| {
        stream
            && crate::source::stream::can_stream(config.source.url.as_str())
            && !fetch::cache_dir(root).exists()
    });
    if let Some(tag) = fresh {
        tracing::info!(
            "fetching release {} from {}",
            tag.as_str(),
            config.source.url.redacted()
        );
        if let Some(received) = crate::source::stream::fetch_tag(root, config, tag, trust)? {
            check_pin(config, tag, &received.verified)?;
            return Ok(Fetched {
                cache: None,
                verified: received.verified.clone(),
                streamed: Some(received),
                channel: None,
                from_source: true,
            });
        }
    }
    // Every thread of a streamed attempt has ended: libgit2 may start now.
    crate::source::libgit::start();
    let repo = fetch::open_cache(root)?;
    let (tag, channel_state, judged) = resolve_tag(root, config, &repo, &roles, before)?;
    let tag = &tag;
    let cached = fetch::has_tag(&repo, tag)
        .then(|| verify::verify_tag(&repo, tag.as_str(), trust, judged.at));
    let mut streamed = None;
    let from_source = !matches!(cached, Some(Ok(_)));
    let verified = match cached {
        Some(Ok(v)) => {
            tracing::info!(
                "release {} found in the cache; no network needed",
                tag.as_str()
            );
            v
        }
        other => {
            if let Some(Err(e)) = other {
                tracing::warn!(
                    "cached copy of {} does not verify ({e}); fetching it again",
                    tag.as_str()
                );
            }
            tracing::info!(
                "fetching release {} from {}",
                tag.as_str(),
                config.source.url.redacted()
            );
            let received = match (&channel_state, stream) {
                (Some(state), true) if is_static => {
                    let object = crate::source::pack::ObjectId::from_hex(&state.file.tag_object);
                    Some(crate::source::artifact::fetch_tag(
                        root, config, tag, object, trust,
                    )?)
                }
                (_, true) => crate::source::stream::fetch_tag(root, config, tag, trust)?,
                (_, false) => None,
            };
            match received {
                Some(received) => {
                    let verified = received.verified.clone();
                    streamed = Some(received);
                    verified
                }
                None => {
                    fetch::fetch_tag(&repo, root, &config.source, tag, &config.fetch)?;
                    verify::verify_tag(&repo, tag.as_str(), trust, judged.at)
                        .map_err(anyhow::Error::from)
                        .with_context(|| format!("tag {}", tag.as_str()))?
                }
            }
        }
    };
    check_pin(config, tag, &verified)?;
    if let Some(state) = &channel_state {
        check_tag_object(state, &verified)?;
    }
    Ok(Fetched {
        cache: Some(repo),
        streamed,
        verified,
        channel: channel_state,
        from_source,
    })
}

/// The config's fixed tag from a static source (`driftless publish`'s
/// files), streamed and verified as a streamed git fetch is; no cache. (A
/// channel's release from a static source takes the path of a git
/// source's, its tip judged in quarantine, and is streamed the same way.)
fn fetch_static(
    root: &Path,
    config: &AgentConfig,
    tag: &TagName,
    trust: &verify::Trust,
) -> anyhow::Result<Fetched> {
    tracing::info!(
        "fetching release {} from the static files at {}",
        tag.as_str(),
        config.source.url.redacted()
    );
    let received = crate::source::artifact::fetch_tag(root, config, tag, None, trust)?;
    check_pin(config, tag, &received.verified)?;
    Ok(Fetched {
        cache: None,
        verified: received.verified.clone(),
        streamed: Some(received),
        channel: None,
        from_source: true,
    })
}

/// Refuses a release whose tag is another tag object than the channel
/// document names (a re-signed tag of the same name).
pub fn check_tag_object(state: &ChannelState, verified: &Verified) -> Result<(), ChannelRefusal> {
    if verified.object == state.file.tag_object {
        return Ok(());
    }
    Err(ChannelRefusal::TagObject {
        tip: state.tip.clone(),
        tag: state.file.release.as_str().to_owned(),
        named: state.file.tag_object.clone(),
        found: verified.object.clone(),
    })
}

/// Refuses a tag that names another commit than the config pins.
fn check_pin(config: &AgentConfig, tag: &TagName, verified: &Verified) -> anyhow::Result<()> {
    if let Some(pinned) = &config.release.commit {
        if pinned.as_str() != verified.commit {
            return Err(PinMismatch {
                tag: tag.as_str().to_owned(),
                found: verified.commit.clone(),
                pinned: pinned.as_str().to_owned(),
            }
            .into());
        }
    }
    tracing::info!(
        "release {} (commit {}) verified: signed by {} ({})",
        verified.name,
        verified.commit,
        verified.principal,
        verified.fingerprint
    );
    Ok(())
}
