//! What the commands print. `println!` panics when stdout is gone (`driftless
//! status | head -3`: `head` exits, the next write fails with `EPIPE`, since
//! Rust ignores `SIGPIPE`), which ends the command with a panic message and
//! a backtrace. Every command prints through [`outln!`] and [`out!`]
//! instead: a closed pipe ends the process quietly the way it ends any Unix
//! tool, killed by `SIGPIPE` (a shell reports 141), and any other failed
//! write ends it with one error line and exit code 1. Errors go through
//! [`errln!`], which drops what cannot be written: there is nobody left to
//! tell. `clippy::print_stdout` and `print_stderr` keep `println!` and
//! `eprintln!` out of the command line.

use std::fmt;
use std::io::{self, Write as _};

/// Prints a line on stdout; see the module's docs for a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints on stdout without adding a newline; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!($($arg)*))
    };
}

/// Prints a line on stderr, dropping it when stderr cannot take it.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to stdout and flushes it, so that a closed pipe is seen
/// at the write that hit it (not at exit, where nothing could be done).
pub(crate) fn stdout(text: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        drop(out);
        failed(&e);
    }
}

/// Writes `text` to stderr, ignoring failure.
pub(crate) fn stderr(text: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(text);
}

/// Ends the process after a failed write to stdout.
fn failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        broken_pipe();
    }
    stderr(format_args!("error: cannot write to stdout: {e}\n"));
    std::process::exit(1)
}

/// Ends the process as a broken pipe does: killed by `SIGPIPE`, whose
/// default action Rust's runtime had replaced with "ignore". Exit code 141
/// (128 + 13, what a shell reports for it) should the signal not end it.
#[allow(unsafe_code)]
fn broken_pipe() -> ! {
    use nix::sys::signal::{SigHandler, Signal, raise, signal};
    // SAFETY: restores the default disposition of SIGPIPE (no handler
    // function is installed), right before the process ends by it.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = raise(Signal::SIGPIPE);
    std::process::exit(128 + Signal::SIGPIPE as i32)
}
