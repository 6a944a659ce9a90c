//! Recording the channel floor (see `record::floor`): when an image is
//! baked (`driftless fetch --root IMAGE`) and when a node built from a
//! fixed tag is applied, the channel as it stands then becomes the state
//! below which the node never goes. Best effort at apply: a node built
//! from a fixed tag runs without any channel.

use std::path::Path;

use crate::config::AgentConfig;
use crate::record::floor::{ChannelFloor, RecordedBy};
use crate::release::channel::ChannelState;
use crate::release::obtain::{self, Before};
use crate::root::Root;

/// Records the floor the channel sets now. `state` is the channel the
/// release came from, if it did; else the channel is read: verified with
/// libgit2 when `libgit` may be used, else only its tip, by one
/// protocol-v2 request (a first boot that streamed its release keeps
/// libgit2, and its memory, out of the process). `None`: the source has
/// no channel branch, so there is no floor to record.
pub fn record(
    root_path: &Path,
    root: &Root,
    config: &AgentConfig,
    before: &Before,
    state: Option<&ChannelState>,
    by: RecordedBy,
    libgit: bool,
) -> anyhow::Result<Option<ChannelFloor>> {
    let floor = match state {
        Some(state) => ChannelFloor::of(state, by),
        None if libgit => match obtain::observe_channel(root_path, config, before) {
            Ok(state) => ChannelFloor::of(&state, by),
            Err(e) if no_channel(&e) => return Ok(None),
            Err(e) => return Err(e),
        },
        None => {
            let Some(tip) = tip_only(root_path, config)? else {
                return Ok(None);
            };
            ChannelFloor {
                channel: config.channel_name(),
                fleet: config.channel.fleet.clone(),
                sequence: None,
                tip,
                signed_at: None,
                recorded_at: jiff::Timestamp::now(),
                recorded_by: by,
            }
        }
    };
    floor.save(root)?;
    Ok(Some(floor))
}

/// Whether `error` says the source has no channel branch.
fn no_channel(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<crate::source::fetch::FetchError>(),
            Some(crate::source::fetch::FetchError::NoSuchRef { .. })
        )
    })
}

/// The channel ref's tip by one `ls-refs`, or from a static source's bundle
/// header (`None`: there is no such ref).
fn tip_only(root_path: &Path, config: &AgentConfig) -> anyhow::Result<Option<String>> {
    let timeout = config.fetch.io_timeout.0 + config.fetch.connect_timeout.0;
    if config.source.kind == crate::config::SourceKind::Static {
        let fetcher = crate::source::artifact::Fetcher::new(root_path, config, timeout)?;
        return crate::source::artifact::channel::read_tip(&fetcher, config)
            .map(Some)
            .map_err(anyhow::Error::msg);
    }
    let poller = crate::source::poll::poller_for(root_path, config, timeout)?;
    let channel_ref = config.channel_ref();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(poller.ls_ref(&channel_ref))?.oid)
}
