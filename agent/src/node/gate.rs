//! The gate on the release's own units: systemd starts any unit the
//! release installs only on a node whose apply succeeded, at every boot,
//! without ordering it after `driftless-apply.service` (apply starts those
//! units from inside its own start job: an ordering would wait for itself,
//! and mounts or sockets start long before apply runs anyway).
//!
//! Each unit gets a drop-in ([`dropin`]):
//!
//! - a service: `ExecCondition=` runs `driftless gate`, which reads the
//!   node's record and config ([`check`]) before every start;
//! - every other type (socket, timer, path, mount, automount, swap,
//!   target, slice), which runs no program of its own before it starts:
//!   `ConditionPathExists=` [`OPEN_PATH`] in `[Unit]`, a condition every
//!   unit type honours, checked by systemd itself at each start, early
//!   boot included. `RequiresMountsFor=` orders it after the filesystem
//!   that holds the path.
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
//!
//! [`OPEN_PATH`] follows the same decision in the filesystem, for systemd:
//! absent unless the release may run; a symlink to the window's file while
//! apply starts the units (so a reboot, which empties `/run`, leaves it
//! dangling: closed); a regular file once the record says applied, written
//! only after the record ([`mark_applied`]). A run that is not a check of
//! an applied node removes it first ([`close`]), and the check at every
//! boot puts it in line with the record and config ([`settle`]).

mod dropin;

pub use dropin::{DROPIN_NAME, SERVICE_DROPIN, UNIT_DROPIN, dropin, outside_unit_dirs};

use crate::config::AgentConfig;
use crate::record::state::{self, State, Status};
use crate::root::{Kind, Root, RootError};
use crate::types::NodePath;

/// Where apply marks the window in which it starts the release's units.
/// On tmpfs: a reboot closes it.
pub const STARTING_PATH: &str = "/run/driftless/starting-units";

/// Exists only while the release's units may start: the path every unit
/// of the release but its services names in `ConditionPathExists=`.
pub const OPEN_PATH: &str = "/var/lib/driftless/gate-open";

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
/// release's units: the window's file for the services' `driftless gate`,
/// and [`OPEN_PATH`] as a link to it for the other units.
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
    )?;
    root.write_link(&open_path(), STARTING_PATH)
}

/// Keeps the gate open at every boot from now on: [`OPEN_PATH`] becomes a
/// regular file naming `commit`. Call only once `state.json` records the
/// release as applied, so that a crash in between leaves it closed.
pub fn mark_applied(root: &Root, commit: &str) -> Result<(), RootError> {
    root.write_file(&open_path(), format!("{commit}\n").as_bytes(), 0o644, 0, 0)
}

/// Shuts the gate of the units that read [`OPEN_PATH`] (a run that is not
/// the check of an applied node starts with this).
pub fn close(root: &Root) -> Result<(), RootError> {
    root.remove_file(&open_path())
}

/// Puts [`OPEN_PATH`] in line with the record of an applied node and its
/// config, as [`decide`] judges them outside a start window: a regular
/// file when the gate is open, absent when not. True when it changed.
pub fn settle(root: &Root, state: &State, config: &AgentConfig) -> Result<bool, RootError> {
    let open = decide(Some(state), None, Some(config)).is_ok();
    let current = root.observe(&open_path())?.map(|o| o.kind);
    match (open, current) {
        (true, Some(Kind::File)) | (false, None) => Ok(false),
        (true, _) => mark_applied(root, &state.release.commit).map(|()| true),
        (false, Some(_)) => close(root).map(|()| true),
    }
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

/// Ends the start window: from now on only the record decides. An
/// [`OPEN_PATH`] that still links to the window goes with it; one that
/// [`mark_applied`] made stays.
pub fn end_start(root: &Root) -> Result<(), RootError> {
    if root
        .observe(&open_path())?
        .is_some_and(|o| o.kind == Kind::Link)
    {
        close(root)?;
    }
    root.remove_file(&starting_path())
}

fn starting_path() -> NodePath {
    NodePath::new(STARTING_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
}

fn open_path() -> NodePath {
    NodePath::new(OPEN_PATH).unwrap_or_else(|_| unreachable!("valid constant"))
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
            effective: Default::default(),
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

    #[test]
    fn the_open_file_follows_the_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("var/lib/driftless")).expect("mkdir");
        let root = Root::open(dir.path()).expect("root");
        let open = dir.path().join(&OPEN_PATH[1..]);
        let window = dir.path().join(&STARTING_PATH[1..]);
        let commit = "c".repeat(40);
        close(&root).expect("closing a closed gate");
        // While apply starts the units: a link to the window.
        open_for_start(&root, &commit).expect("open");
        assert_eq!(
            std::fs::read_link(&open).expect("a link"),
            std::path::Path::new(STARTING_PATH)
        );
        assert!(window.is_file());
        // A failure after that: both go.
        end_start(&root).expect("end");
        assert!(open.symlink_metadata().is_err() && !window.exists());
        // Success: a file that outlives the window.
        open_for_start(&root, &commit).expect("open");
        mark_applied(&root, &commit).expect("mark");
        end_start(&root).expect("end");
        assert!(open.symlink_metadata().expect("kept").is_file());
        assert_eq!(
            std::fs::read_to_string(&open).expect("read"),
            format!("{commit}\n")
        );
        // Every boot after: in line with the record and the config.
        let applied = state(Status::Applied);
        assert!(!settle(&root, &applied, &config("{tag: v1}")).expect("settle"));
        assert!(settle(&root, &applied, &config("{tag: v2}")).expect("settle"));
        assert!(
            open.symlink_metadata().is_err(),
            "closed for another release"
        );
        assert!(!settle(&root, &applied, &config("{tag: v2}")).expect("settle"));
        assert!(settle(&root, &applied, &config("{tag: v1}")).expect("settle"));
        assert!(open.is_file(), "re-made for the applied release");
        // A link left by a killed apply becomes the file on an applied node.
        std::fs::remove_file(&open).expect("rm");
        std::os::unix::fs::symlink(STARTING_PATH, &open).expect("link");
        assert!(settle(&root, &applied, &config("{tag: v1}")).expect("settle"));
        assert!(open.symlink_metadata().expect("there").is_file());
        close(&root).expect("close");
        assert!(open.symlink_metadata().is_err());
    }
}
