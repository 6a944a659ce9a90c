//! Test hooks that interrupt a run at an exact step, to prove that any
//! interruption is recoverable and that nothing a run checked can be
//! swapped under it. Every system call that changes the node's tree
//! (`mkdir`, `create`, `write`, `symlink`, `move`, `chown`, `chmod`,
//! `rename`, `unlink`, `rmdir`, `lock`, `unlock`, `mount`) reports here once
//! it is done; so does the end of planning (`planned`, which changes
//! nothing and is not counted as a change).
//!
//! - `DRIFTLESS_TEST_KILL_AFTER=N` kills the process with SIGKILL after
//!   the N-th change; `STEP:N` after the N-th change of that kind.
//! - `DRIFTLESS_TEST_STOP_AFTER=N` (or `STEP:N`) stops it with SIGSTOP
//!   instead, so that a test can change the node before it sends SIGCONT.
//!
//! Nothing happens until apply arms the hooks ([`arm`]), so the watcher and
//! every other command are never interrupted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::Signal;

use crate::types::NodePath;

/// The step that ends planning: nothing has changed yet.
pub const PLANNED: &str = "planned";

static ARMED: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Hook {
    /// Only changes of this kind count; every change when `None`.
    step: Option<String>,
    remaining: u64,
    signal: Signal,
}

fn hooks() -> &'static Mutex<Vec<Hook>> {
    static HOOKS: OnceLock<Mutex<Vec<Hook>>> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let mut hooks = Vec::new();
        for (var, signal) in [
            ("DRIFTLESS_TEST_KILL_AFTER", Signal::SIGKILL),
            ("DRIFTLESS_TEST_STOP_AFTER", Signal::SIGSTOP),
        ] {
            if let Some(hook) = std::env::var(var).ok().and_then(|v| parse(&v, signal)) {
                hooks.push(hook);
            }
        }
        Mutex::new(hooks)
    })
}

fn parse(text: &str, signal: Signal) -> Option<Hook> {
    let (step, count) = match text.rsplit_once(':') {
        Some((step, count)) => (Some(step.to_owned()), count),
        None => (None, text),
    };
    let remaining = count.parse().ok().filter(|n| *n > 0)?;
    Some(Hook {
        step,
        remaining,
        signal,
    })
}

/// Starts counting: apply calls it once its plan is made (and reports
/// [`PLANNED`]).
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
    hit(PLANNED, None);
}

/// Reports that `step` was done (on `path`, for the log).
pub fn hit(step: &str, path: Option<&NodePath>) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let mut fire = None;
    {
        let mut hooks = hooks()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for hook in hooks.iter_mut().filter(|h| h.remaining > 0) {
            let counts = match &hook.step {
                Some(s) => s == step,
                None => step != PLANNED,
            };
            if counts {
                hook.remaining -= 1;
                if hook.remaining == 0 {
                    fire = Some(hook.signal);
                }
            }
        }
    }
    if let Some(signal) = fire {
        let on = path.map(|p| format!(" of {p}")).unwrap_or_default();
        tracing::warn!("test hook: {signal} after {step}{on}");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_count_every_change_or_one_kind() {
        let all = parse("12", Signal::SIGKILL).expect("a count");
        assert_eq!((all.step, all.remaining), (None, 12));
        let one = parse("lock:3", Signal::SIGSTOP).expect("a step and a count");
        assert_eq!((one.step.as_deref(), one.remaining), (Some("lock"), 3));
        assert!(parse("0", Signal::SIGKILL).is_none());
        assert!(parse("lock:x", Signal::SIGKILL).is_none());
    }
}
