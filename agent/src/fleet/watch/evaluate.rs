//! Evaluating a new channel tip, both ends of it: the watcher starts
//! `driftless evaluate-channel` and reads its one-line [`Verdict`]; that child
//! fetches and verifies the tip and the release it names, at a lower CPU
//! priority than the watcher. Apart from the watcher's loop because the
//! fetching and verifying (libgit2, a pack from the network) runs in a
//! process of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Watcher;
use crate::config::AgentConfig;
use crate::release::candidate;
use crate::release::channel::{self, ChannelState};
use crate::release::clock;

impl Watcher {
    /// Evaluates the channel's new tip in a child process
    /// (`driftless evaluate-channel`): fetching and verifying with libgit2
    /// (and its OpenSSL) happens there and its memory goes with it, so the
    /// watcher stays small for the node's whole life, and the hostile
    /// input (a pack from the network) is parsed outside the long-lived
    /// process.
    pub(super) async fn evaluate_in_child(&self, last_seen: Option<&str>) -> Verdict {
        let failed = |reason: String| Verdict::Failed { reason };
        let mut cmd = tokio::process::Command::new(&self.evaluator);
        cmd.arg("evaluate-channel")
            .arg("--root")
            .arg(&self.root_path)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        if let Some(tip) = last_seen {
            cmd.arg("--last-seen").arg(tip);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return failed(format!(
                    "cannot start the channel evaluation ({}): {e}",
                    self.evaluator.display()
                ));
            }
        };
        // The fetches inside keep their own deadline (the channel's, a
        // static release's head, the release's); this only bounds a child
        // that hangs.
        let fetch = &self.config.fetch;
        let limit = fetch.deadline.0.saturating_mul(2)
            + crate::source::artifact::head_time(fetch)
            + Duration::from_secs(60);
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Err(_) => {
                return failed(format!(
                    "the channel evaluation did not finish within {}s; it was stopped",
                    limit.as_secs()
                ));
            }
            Ok(Err(e)) => return failed(format!("the channel evaluation failed: {e}")),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            return failed(format!(
                "the channel evaluation ended with {} (its log above says why)",
                output.status
            ));
        }
        let line = output
            .stdout
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        serde_json::from_slice(line).unwrap_or_else(|e| {
            failed(format!(
                "the channel evaluation answered something unreadable: {e}"
            ))
        })
    }
}

/// The name the evaluation child gives itself, as `ps`, `top` and `perf`
/// show it: started as `/proc/self/exe`, it would be called `exe`.
pub const EVALUATION_NAME: &std::ffi::CStr = c"driftless-eval";

/// Names this process (the evaluation child) [`EVALUATION_NAME`], before it
/// starts any thread (a new thread takes its creator's name).
pub fn name_evaluation() {
    if let Err(e) = nix::sys::prctl::set_name(EVALUATION_NAME) {
        tracing::debug!("the channel evaluation keeps the name it was started with: {e}");
    }
}

/// The niceness the evaluation child runs at: the lowest CPU priority.
pub const EVALUATION_NICENESS: i32 = 19;

/// Lowers the CPU priority of this process (the evaluation child) to
/// [`EVALUATION_NICENESS`], before it starts any thread (Linux keeps a
/// niceness per thread; new threads inherit it). Evaluating a channel move
/// is background work: it may wait, while what else the machine runs (the
/// node's services; in a fleet simulated on one machine, the replacements
/// booting) should not wait for it. Why the lowest: CFS shares the CPU by
/// weight, 1024 at nice 0, 110 at nice 10, 15 at nice 19; 95 evaluations
/// at nice 10 (a simulated fleet taking in a channel move) would still
/// outweigh five booting replacements two to one. Fetching stays bounded
/// by its own deadline whatever the priority, and a busy machine still
/// gives it a share.
#[allow(unsafe_code)]
pub fn lower_priority() {
    // SAFETY: setpriority(2) takes three integers and touches no memory
    // of this process.
    let status = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, EVALUATION_NICENESS) };
    if status != 0 {
        tracing::debug!(
            "the channel evaluation runs at the watcher's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// This program, for the evaluation child: `/proc/self/exe` names it even
/// if its file was replaced since it started.
pub(super) fn this_program() -> PathBuf {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        own
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("driftless"))
    }
}

/// What the evaluation of a channel tip concluded: the answer of
/// `driftless evaluate-channel` to the watcher, one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verdict {
    /// The tip verified, and so did the release it names.
    Accepted {
        /// The channel at the tip.
        state: Box<ChannelState>,
        /// The commit the named release's tag points at.
        release_commit: String,
    },
    /// The tip is refused for good: signature, role, binding, sequence,
    /// ancestry, expiry, channel file, or a release that is missing or does
    /// not verify.
    Refused {
        /// The tip.
        tip: String,
        /// The kind of refusal (`ChannelRefusal::kind`, or `release`).
        #[serde(default)]
        kind: String,
        /// Why, one line.
        reason: String,
    },
    /// Something failed on the way (network, cache): the next poll retries.
    Failed {
        /// Why, one line.
        reason: String,
    },
}

/// Fetches and verifies the channel tip, then the release it names.
pub fn evaluate_channel(
    root_path: &Path,
    config: &AgentConfig,
    last_seen: Option<&str>,
) -> Verdict {
    match evaluate(root_path, config, last_seen) {
        Ok((state, release_commit)) => Verdict::Accepted {
            state: Box::new(state),
            release_commit,
        },
        Err(verdict) => verdict,
    }
}

fn evaluate(
    root_path: &Path,
    config: &AgentConfig,
    _last_seen: Option<&str>,
) -> Result<(ChannelState, String), Verdict> {
    let failed = |reason: String| Verdict::Failed { reason };
    let roles = config
        .load_roles(root_path)
        .map_err(anyhow::Error::from)
        .map_err(|e| failed(crate::error::one_line(&e)))?;
    // What this node knows (its floor, the tip it accepted last) comes from
    // its records, which the watcher writes before it starts this child.
    let before = crate::root::Root::open(root_path)
        .map_err(anyhow::Error::from)
        .and_then(|root| Ok(crate::record::floor::before(&root, config)?))
        .map_err(|e| failed(crate::error::one_line(&e)))?;
    let cache = crate::source::fetch::open_cache(root_path).map_err(|e| failed(e.to_string()))?;
    // Into quarantine: a tip that is refused never reaches the cache.
    let candidate =
        candidate::fetch(&cache, root_path, config).map_err(|e| failed(e.to_string()))?;
    let tip = candidate.tip;
    let judged = clock::judge(&before.signed, clock::synchronized(false));
    let refused = |kind: &str, reason: String| Verdict::Refused {
        tip: tip.to_string(),
        kind: kind.to_owned(),
        reason,
    };
    let expect = channel::Expect {
        channel: config.channel_name(),
        fleet: config.channel.fleet.clone(),
    };
    let state = channel::evaluate(
        candidate.repo(),
        &roles,
        tip,
        &expect,
        &before.known,
        &config.channel,
        &judged,
    )
    .map_err(|e| refused(e.kind(), e.to_string()))?;
    let tag = &state.file.release;
    match candidate.fetch_release(root_path, config, tag, &state.file.tag_object) {
        Ok(()) => {}
        Err(crate::source::fetch::FetchError::NoSuchRef { .. }) => {
            return Err(refused(
                "release",
                format!(
                    "channel tip {tip} names release {}, which the source does not have",
                    tag.as_str()
                ),
            ));
        }
        Err(e) => {
            return Err(failed(format!(
                "fetching release {} named by channel tip {tip}: {e}",
                tag.as_str()
            )));
        }
    }
    let verified =
        crate::verify::verify_tag(candidate.repo(), tag.as_str(), &roles.release, judged.at)
            .map_err(|e| {
                refused(
                    "release",
                    format!(
                        "channel tip {tip} names release {}, which does not verify: {e}",
                        tag.as_str()
                    ),
                )
            })?;
    crate::release::obtain::check_tag_object(&state, &verified)
        .map_err(|e| refused(e.kind(), e.to_string()))?;
    // Accepted: the tip goes into the cache, which keeps it and the
    // node's own release; the release was fetched only to be verified.
    let applied = applied_tag(root_path);
    candidate
        .admit(&cache, &applied.iter().collect::<Vec<_>>())
        .map_err(|e| failed(e.to_string()))?;
    Ok((state, verified.commit))
}

/// The release the node runs, as `state.json` records it (kept in the
/// cache when it is there).
fn applied_tag(root_path: &Path) -> Option<crate::config::TagName> {
    let root = crate::root::Root::open(root_path).ok()?;
    let state = crate::record::state::load(&root).ok()??;
    crate::config::TagName::new(&state.release.tag).ok()
}
