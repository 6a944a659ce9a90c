//! The gate on the release's own services: each one the release installs
//! gets a drop-in (see [`crate::node::systemd::gate_dropin`]) whose
//! `ExecCondition=` runs `driftless gate`, so systemd starts it only on a
//! node whose apply succeeded, at every boot, without ordering it after
//! `driftless-apply.service` (apply starts those units from inside its own
//! start job: an ordering would wait for itself).
//!
//! The gate is open when the node's record says its pinned release was
//! applied, and during the one window in which apply itself starts the
//! units: after the release was written and before its health checks and
//! lock ran. Apply marks that window with a file in `/run` (gone at
//! reboot), holding the commit being applied and apply's own process id and
//! start time; it removes the file when it records the result. A window
//! whose apply is gone (killed before it could remove the file) is closed.
//! [`decide`] is pure; [`check`] reads the node.
//! `driftless gate` exits 1 when the gate is closed: systemd skips a unit
//! whose `ExecCondition=` exits 1 to 254 (255 or a signal would fail it).

use crate::config::AgentConfig;
use crate::record::state::{self, State, Status};
use crate::root::{Root, RootError};
use crate::types::NodePath;

/// Where apply marks the window in which it starts the release's units.
/// On tmpfs: a reboot closes it.
pub const STARTING_PATH: &str = "/run/driftless/starting-units";

/// Decides whether the release's units may start. `starting` is the commit
/// named by [`STARTING_PATH`], if present; `config` is the agent config when
/// it could be read. Returns why not, in one line.
pub fn decide(
    state: Option<&State>,
    starting: Option<&str>,
    config: Option<&AgentConfig>,
) -> Result<(), String> {
    let Some(state) = state else {
        return Err(format!(
            "no release was applied on this node ({} is missing)",
            state::STATE_PATH
        ));
    };
    let release = &state.release;
    if let Some(config) = config {
        if let Some(tag) = config
            .release
            .tag
            .as_ref()
            .filter(|t| t.as_str() != release.tag)
        {
            return Err(format!(
                "the node holds release {}, but its config asks for {}",
                release.tag,
                tag.as_str()
            ));
        }
        if let Some(commit) = config
            .release
            .commit
            .as_ref()
            .filter(|c| c.as_str() != release.commit)
        {
            return Err(format!(
                "the node holds commit {}, but its config pins {}",
                release.commit,
                commit.as_str()
            ));
        }
    }
    match &state.status {
        Status::Applied => Ok(()),
        Status::Applying if starting == Some(release.commit.as_str()) => Ok(()),
        Status::Applying => Err(format!(
            "release {} is not applied yet (an apply is under way or was interrupted)",
            release.tag
        )),
        Status::Failed { stage, reason } => Err(format!(
            "release {} failed at {stage}: {reason}",
            release.tag
        )),
    }
}

/// Reads the node under `root` and decides (see [`decide`]). An unreadable
/// record keeps the gate closed, and so does a start window whose apply
/// process is gone.
pub fn check(root: &Root, config: Option<&AgentConfig>) -> Result<(), String> {
    let state = state::load(root).map_err(|e| format!("cannot read the node's record: {e}"))?;
    let window = root
        .read_optional(&starting_path(), 4096)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let starting = window
        .as_deref()
        .and_then(parse_window)
        .filter(|w| start_time(w.pid) == Some(w.started))
        .map(|w| w.commit);
    decide(state.as_ref(), starting, config)?;
    // A boot empties a tmpfs: its secrets must be back first.
    state.map_or(Ok(()), |s| crate::record::volatile::in_place(root, &s))
}

/// Opens the gate for `commit` while this process (apply) starts the
/// release's units.
pub fn open_for_start(root: &Root, commit: &str) -> Result<(), RootError> {
    let path = starting_path();
    if let Some(parent) = path.parent() {
        if root.observe(&parent)?.is_none() {
            root.ensure_dir(&parent, 0o755, 0, 0)?;
        }
    }
    let pid = std::process::id();
    let started = start_time(pid).unwrap_or(0);
    root.write_file(
        &path,
        format!("{commit} {pid} {started}\n").as_bytes(),
        0o644,
        0,
        0,
    )
}

/// A start window: the commit, and the apply process that opened it.
#[derive(Debug, PartialEq, Eq)]
struct Window<'a> {
    commit: &'a str,
    pid: u32,
    /// The process's start time, in clock ticks since boot.
    started: u64,
}

/// Parses `COMMIT PID STARTTIME`; anything else is no window.
fn parse_window(text: &str) -> Option<Window<'_>> {
    let mut fields = text.split_ascii_whitespace();
    let window = Window {
        commit: fields.next()?,
        pid: fields.next()?.parse().ok()?,
        started: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(window)
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock
/// ticks since boot), which tells a process from a later one that reuses
/// its id. `None` when no such process runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Ends the start window: from now on only the record decides.
pub fn end_start(root: &Root) -> Result<(), RootError> {
    root.remove_file(&starting_path())
}

fn starting_path() -> NodePath {
    NodePath::new(STARTING_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::state::PinnedRelease;

    fn state(status: Status) -> State {
        State {
            version: 1,
            node_id: "node".into(),
            release: PinnedRelease {
                tag: "v1".into(),
                tag_object: "1".repeat(40),
                commit: "c".repeat(40),
                tree: "2".repeat(40),
                signer: "release@example.com".into(),
                fingerprint: "SHA256:x".into(),
                signed_at: jiff::Timestamp::UNIX_EPOCH,
            },
            status,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: None,
            manifest: Vec::new(),
            read_only: Vec::new(),
        }
    }

    fn config(release: &str) -> AgentConfig {
        let text = format!(
            "source: {{url: https://x}}\ntrust: {{allowed_signers: /a}}\nrelease: {release}\n"
        );
        AgentConfig::parse(&text, "agent.yaml").expect("valid config")
    }

    #[test]
    fn open_only_for_an_applied_release() {
        let commit = "c".repeat(40);
        assert_eq!(decide(Some(&state(Status::Applied)), None, None), Ok(()));
        let failed = state(Status::Failed {
            stage: "health".into(),
            reason: "exec /bin/false: exit status 1".into(),
        });
        assert_eq!(
            decide(Some(&failed), Some(&commit), None),
            Err("release v1 failed at health: exec /bin/false: exit status 1".into())
        );
        let err = decide(None, Some(&commit), None).expect_err("no record");
        assert!(err.starts_with("no release was applied"), "{err}");
    }

    #[test]
    fn applying_is_open_only_in_apply_s_start_window_for_that_commit() {
        let applying = state(Status::Applying);
        assert_eq!(decide(Some(&applying), Some(&"c".repeat(40)), None), Ok(()));
        let err = decide(Some(&applying), None, None).expect_err("interrupted");
        assert!(err.contains("not applied yet"), "{err}");
        let err = decide(Some(&applying), Some(&"d".repeat(40)), None).expect_err("other");
        assert!(err.contains("not applied yet"), "{err}");
    }

    #[test]
    fn a_start_window_is_open_only_while_its_apply_runs() {
        let commit = "c".repeat(40);
        let me = std::process::id();
        let started = start_time(me).expect("this process has a start time");
        let live = format!("{commit} {me} {started}\n");
        assert_eq!(
            parse_window(&live),
            Some(Window {
                commit: &commit,
                pid: me,
                started
            })
        );
        // A process that has ended, and one whose id was reused.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let gone = child.id();
        child.wait().expect("wait");
        assert_eq!(start_time(gone), None, "a reaped process has no start time");
        assert_ne!(start_time(me), Some(started + 1));
        for bad in [
            "",
            &commit,
            &format!("{commit} {me}"),
            &format!("{live} extra"),
        ] {
            assert_eq!(parse_window(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_config_asking_for_another_release_closes_the_gate() {
        let applied = state(Status::Applied);
        assert_eq!(
            decide(Some(&applied), None, Some(&config("{tag: v1}"))),
            Ok(())
        );
        assert_eq!(
            decide(Some(&applied), None, Some(&config("{tag: v2}"))),
            Err("the node holds release v1, but its config asks for v2".into())
        );
        let pinned = config(&format!("{{tag: v1, commit: {}}}", "e".repeat(40)));
        let err = decide(Some(&applied), None, Some(&pinned)).expect_err("pin");
        assert!(err.contains("but its config pins eeee"), "{err}");
    }
}
