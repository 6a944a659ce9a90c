//! Running the host commands of a request (`drain`, `exec`, `systemctl`):
//! a cleared environment, stderr read without blocking, and the whole
//! process group killed at the time limit or when the request is dropped.
//! Apart from the order of a request's steps because it is process
//! plumbing with resources of its own (pipes, process groups).

use std::fmt;
use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, ChildStderr, ExitStatus, Stdio};
use std::time::Duration;

use super::{first_line, human};

/// The `PATH` of every command run here.
pub const COMMAND_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Most stderr bytes kept from a command (only its first line is reported).
const STDERR_KEEP: usize = 8 * 1024;

/// Longest pause between two looks at a running command.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long a killed command is waited for before it is left to init.
const REAP_WAIT: Duration = Duration::from_millis(500);

/// How a command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ended unsuccessfully; `stderr` is the first non-empty line it
    /// wrote there, if any.
    Exit {
        /// Its exit status.
        status: ExitStatus,
        /// First line of its stderr.
        stderr: Option<String>,
    },
    /// It was still running at the time limit and was killed.
    Timeout(Duration),
    /// Waiting for it failed.
    Wait(std::io::Error),
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::Spawn(e) => write!(f, "cannot be started: {e}"),
            CommandFailure::Exit { status, stderr } => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => write!(f, "exited with status {code}")?,
                    (None, Some(signal)) => write!(f, "was killed by signal {signal}")?,
                    (None, None) => write!(f, "ended with {status}")?,
                }
                match stderr {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
            CommandFailure::Timeout(limit) => {
                write!(f, "did not finish within {}; killed", human(*limit))
            }
            CommandFailure::Wait(e) => write!(f, "cannot be waited for: {e}"),
        }
    }
}

/// Runs `argv` (absolute program) with a cleared environment plus `env`,
/// killing its process group at `limit`.
pub(super) async fn run_command(
    argv: &[String],
    env: &[(&'static str, String)],
    limit: Duration,
) -> Result<(), CommandFailure> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        CommandFailure::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ))
    })?;
    let child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(CommandFailure::Spawn)?;
    let mut running = Running {
        child,
        finished: false,
    };
    let mut stderr = Capture::new(running.child.stderr.take());
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        stderr.pump();
        match running.child.try_wait() {
            Ok(Some(status)) => {
                running.finished = true;
                stderr.pump();
                return if status.success() {
                    Ok(())
                } else {
                    Err(CommandFailure::Exit {
                        status,
                        stderr: first_line(&stderr.kept),
                    })
                };
            }
            Ok(None) => {}
            Err(e) => return Err(CommandFailure::Wait(e)),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            running.kill();
            return Err(CommandFailure::Timeout(limit));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// A started command; dropped unfinished (timeout, error, or the request
/// future dropped), its process group is killed.
struct Running {
    child: Child,
    finished: bool,
}

impl Running {
    fn kill(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        // The child leads its own group (`process_group(0)`) and is not yet
        // reaped, so the group id cannot have been reused.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        // Reap it; a process stuck in the kernel is left to init.
        let until = std::time::Instant::now() + REAP_WAIT;
        while std::time::Instant::now() < until {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        tracing::warn!("command {} did not end after SIGKILL", self.child.id());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command's stderr, read without blocking; the first [`STDERR_KEEP`]
/// bytes are kept, the rest discarded (so the command never blocks on a
/// full pipe while it is watched).
struct Capture {
    pipe: Option<std::fs::File>,
    kept: Vec<u8>,
}

impl Capture {
    fn new(stderr: Option<ChildStderr>) -> Self {
        let pipe = stderr.and_then(|s| {
            let fd = std::os::fd::OwnedFd::from(s);
            let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
            Some(std::fs::File::from(fd))
        });
        Self {
            pipe,
            kept: Vec::new(),
        }
    }

    /// Reads what is there now (a bounded number of reads).
    fn pump(&mut self) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_failures_read_well() {
        use std::os::unix::process::ExitStatusExt as _;
        let exit = CommandFailure::Exit {
            status: ExitStatus::from_raw(3 << 8),
            stderr: Some("no route to the API".into()),
        };
        assert_eq!(
            exit.to_string(),
            "exited with status 3: no route to the API"
        );
        let killed = CommandFailure::Exit {
            status: ExitStatus::from_raw(9),
            stderr: None,
        };
        assert_eq!(killed.to_string(), "was killed by signal 9");
        assert_eq!(
            CommandFailure::Timeout(Duration::from_millis(1500)).to_string(),
            "did not finish within 1s 500ms; killed"
        );
    }
}
