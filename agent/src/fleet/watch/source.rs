//! Where the watcher asks for the channel's tip: one protocol v2
//! `ls-refs` of a git source ([`RefPoller`]), or a conditional GET of a
//! static source's bundle ([`ChannelPoll`]), whose ETag, with the tip it
//! named, the watcher keeps in its record so that an unchanged channel
//! costs a 304 across restarts too.

use std::path::Path;
use std::time::Duration;

use crate::config::{AgentConfig, SourceKind};
use crate::record::watch_state::ChannelEtag;
use crate::source::artifact::ChannelPoll;
use crate::source::poll::RefPoller;

/// The watcher's client of the source.
#[derive(Debug)]
pub(super) enum ChannelSource {
    Git(RefPoller),
    Static(ChannelPoll),
}

impl ChannelSource {
    /// The client of `config`'s source; each poll ends within `deadline`.
    pub(super) fn new(
        root: &Path,
        config: &AgentConfig,
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        Ok(match config.source.kind {
            SourceKind::Git => Self::Git(crate::source::poll::poller_for(root, config, deadline)?),
            SourceKind::Static => Self::Static(ChannelPoll::new(root, config, deadline)?),
        })
    }

    /// The tip `channel_ref` names now. `etag`: the ETag and tip of the
    /// static source's last answer, updated here.
    pub(super) async fn tip(
        &self,
        channel_ref: &str,
        etag: &mut Option<ChannelEtag>,
    ) -> Result<String, String> {
        match self {
            Self::Git(poller) => match poller.ls_ref(channel_ref).await {
                Ok(answer) => answer
                    .oid
                    .ok_or_else(|| format!("the source has no {channel_ref}")),
                Err(e) => Err(e.to_string()),
            },
            Self::Static(poll) => {
                let known = etag.as_ref().map(|e| (e.etag.as_str(), e.tip.as_str()));
                let Some(polled) = poll.poll(known).await? else {
                    return Err(format!("the source has no {}", poll.shown()));
                };
                tracing::debug!(
                    tip = polled.tip,
                    unchanged = polled.unchanged,
                    "polled the static channel"
                );
                *etag = polled.etag.map(|etag| ChannelEtag {
                    etag,
                    tip: polled.tip.clone(),
                });
                Ok(polled.tip)
            }
        }
    }
}
