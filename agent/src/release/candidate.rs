//! A channel tip as a candidate: fetched into a quarantine
//! ([`crate::source::quarantine`]), evaluated there, and only once it and
//! the release it names verified, admitted into the cache (the objects the
//! tip reaches, the cache's ref), which is then pruned to what the node
//! keeps. A refused candidate goes with its quarantine: the cache never
//! holds, or names, a tip that was refused, and what a server can make a
//! node store for one channel move is bounded by `fetch.max_bytes`. From a
//! static source the channel's bundle and the release's head (or, from a
//! site without heads, its pack) are what is fetched into the quarantine
//! (`source::artifact`); the rest is the same.

use std::path::Path;

use git2::{Oid, Repository};

use crate::config::{AgentConfig, FetchSettings, SourceKind, TagName};
use crate::release::channel::CACHE_REF;
use crate::source::fetch::{self, FetchError};
use crate::source::prune::prune;
use crate::source::quarantine::{Quarantine, Root};

/// A channel tip fetched into quarantine, not yet judged.
pub struct Candidate {
    quarantine: Quarantine,
    /// The tip the server named.
    pub tip: Oid,
}

/// Fetches the channel's tip (and the commits since the cache's last
/// accepted one) into a fresh quarantine beside `cache`.
pub fn fetch(
    cache: &Repository,
    root: &Path,
    config: &AgentConfig,
) -> Result<Candidate, FetchError> {
    let quarantine = Quarantine::create(root, cache)?;
    if config.source.kind == SourceKind::Static {
        let tip = crate::source::artifact::fetch_channel_into(
            root,
            config,
            quarantine.repo(),
            CACHE_REF,
        )?;
        return Ok(Candidate { quarantine, tip });
    }
    // Over smart HTTP(S) with protocol v2 the pack is checked by
    // driftless's own reader before libgit2 indexes it; elsewhere libgit2
    // fetches it (see docs/security.md, "Every other transport").
    let checked = crate::source::stream::fetch_channel(
        root,
        config,
        quarantine.repo(),
        &config.channel_ref(),
        CACHE_REF,
    )?;
    if let Some(tip) = checked {
        return Ok(Candidate { quarantine, tip });
    }
    fetch::fetch_ref(
        quarantine.repo(),
        root,
        &config.source,
        &config.channel_ref(),
        CACHE_REF,
        false,
        &config.fetch,
    )?;
    let tip = quarantine
        .repo()
        .refname_to_id(CACHE_REF)
        .map_err(|e| FetchError::Cache {
            path: CACHE_REF.into(),
            reason: e.message().to_owned(),
        })?;
    Ok(Candidate { quarantine, tip })
}

impl Candidate {
    /// The quarantine's repository: the cache's objects and the fetched ones,
    /// where the tip is judged (`channel::evaluate`).
    pub fn repo(&self) -> &Repository {
        self.quarantine.repo()
    }

    /// Fetches the release `tag` into the quarantine, within what is left
    /// of `fetch.max_bytes` after the channel's commits. From a static
    /// source, the file of `tag_object`, the object the channel names.
    pub fn fetch_release(
        &self,
        root: &Path,
        config: &AgentConfig,
        tag: &TagName,
        tag_object: &str,
    ) -> Result<(), FetchError> {
        let used = self.quarantine.size();
        let settings = FetchSettings {
            max_bytes: crate::types::ByteSize(config.fetch.max_bytes.0.saturating_sub(used)),
            ..config.fetch.clone()
        };
        if config.source.kind == SourceKind::Static {
            return crate::source::artifact::fetch_release_into(
                root,
                config,
                self.repo(),
                tag,
                tag_object,
                settings.max_bytes.0,
            );
        }
        // Over smart HTTP(S) with protocol v2, read within bounds before
        // libgit2 indexes it, as the channel's pack is.
        let checked = crate::source::stream::fetch_release(
            root,
            config,
            self.repo(),
            &format!("refs/tags/{}", tag.as_str()),
            settings.max_bytes.0,
        )?;
        if checked.is_some() {
            return Ok(());
        }
        fetch::fetch_tag(self.repo(), root, &config.source, tag, &settings)
    }

    /// Admits the verified tip into `cache`: the objects it reaches that
    /// the cache lacks, then its ref; then prunes the cache to the channel
    /// and the release tags in `keep`. The quarantine goes, with any
    /// release fetched into it only to be verified: a running node never
    /// applies from its cache, and a release's head has no tree to admit.
    pub fn admit(self, cache: &Repository, keep: &[&TagName]) -> Result<(), FetchError> {
        let fail = |e: git2::Error| FetchError::Cache {
            path: cache.path().display().to_string(),
            reason: e.message().to_owned(),
        };
        let roots = [Root {
            id: self.tip,
            history: true,
        }];
        self.quarantine.admit(cache, &roots)?;
        cache
            .reference(CACHE_REF, self.tip, true, "admitted from quarantine")
            .map_err(fail)?;
        drop(self.quarantine);
        let tags: Vec<String> = keep
            .iter()
            .map(|t| format!("refs/tags/{}", t.as_str()))
            .collect();
        let pruned = prune(cache, &[CACHE_REF], &tags)?;
        if !pruned.refs.is_empty() || pruned.repacked {
            tracing::info!(
                dropped = ?pruned.refs,
                repacked = pruned.repacked,
                "pruned the cache to the channel and the releases it keeps"
            );
        }
        Ok(())
    }
}
