//! The command line: `main.rs` parses it and calls [`run`]; each subcommand
//! lives in its own file with its own arguments and `run`. Output goes
//! through `output` (a closed stdout ends a command quietly).

#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod output;

mod apply;
mod cat_file;
mod channel;
mod check;
mod completions;
mod config;
mod demo;
mod diff;
mod fetch;
mod fleet;
mod gate;
mod git;
mod lint;
mod node;
mod plan;
mod publish;
mod release;
mod restore;
mod status;
mod verify;
mod watch;

use clap::{Parser, Subcommand};

use crate::error::one_line;
use crate::exit::ExitCode;

/// driftless: apply one signed release to a node, lock it, and ask to be
/// replaced when the fleet moves on.
#[derive(Debug, Parser)]
#[command(name = "driftless", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, verify and apply the pinned release to the node (first boot).
    Apply(apply::ApplyArgs),
    /// Show what apply would change, without changing anything.
    Plan(plan::PlanArgs),
    /// Show the whole life of a node in a temporary directory (needs git and ssh-keygen).
    Demo(demo::DemoArgs),
    /// Compare the node with its manifest: exit 0 when it matches, 9 when it drifted.
    Check(check::CheckArgs),
    /// Show the node's pinned release and status.
    Status(status::StatusArgs),
    /// Fetch and verify the pinned release into the cache only (image baking).
    Fetch(fetch::FetchArgs),
    /// Put back the release's secrets a boot emptied from a tmpfs (before its services start).
    Restore(restore::RestoreArgs),
    /// Exit 0 when the release's services may start (their ExecCondition), 1 when not.
    Gate(gate::GateArgs),
    /// Verify an SSH-signed release tag (or a signed commit) in a local repository.
    Verify(verify::VerifyArgs),
    /// Move the fleet's signed channel in a local clone: init, promote,
    /// rollback, hold, release, refresh, show.
    Channel(Box<channel::ChannelArgs>),
    /// Watch the channel and the node; ask to be replaced when needed (a daemon).
    Watch(watch::WatchArgs),
    /// Judge a release tree (and an agent config or user-data) by the node's rules, offline.
    Lint(lint::LintArgs),
    /// Check an agent config, or cloud-init user-data that writes one.
    Config(config::ConfigArgs),
    /// Lint, make the signed release tag with your git signing key, and verify it as a node will.
    Release(release::ReleaseArgs),
    /// Write releases and the channel as static signed files a fleet can
    /// boot from (source.kind static), each checked by the node's rules.
    Publish(publish::PublishArgs),
    /// Show what a node of one release would become with another.
    Diff(diff::DiffArgs),
    /// Show the fleet: nodes by release and state, rollout slots, failures (etcd), or the channel.
    Fleet(fleet::FleetArgs),
    /// Print the shell completion script (bash, zsh, fish).
    Completions(completions::CompletionsArgs),
    /// Fetch and verify a channel tip and the release it names, and print
    /// the verdict as JSON: the watcher's short-lived child.
    #[command(hide = true)]
    EvaluateChannel(watch::EvaluateArgs),
}

impl Command {
    /// Whether `main` starts libgit2 before running it. The watcher does
    /// not: it stays small by leaving every libgit2 fetch to a child
    /// process (see `watch`), and starts libgit2 itself only for a ref
    /// listing over a transport without protocol v2. Nor does the gate,
    /// which systemd runs before every start of a release's service and
    /// which reads only the node's state, nor restore, which reads only the
    /// node's records and sealed copies. Nor does apply, which starts it
    /// only when it needs the cache: a first boot over HTTP(S) streams its
    /// release without libgit2 (see `release::obtain::fetch_release`).
    pub fn starts_libgit(&self) -> bool {
        !matches!(
            self,
            Command::Watch(_) | Command::Gate(_) | Command::Apply(_) | Command::Restore(_)
        )
    }
}

/// Parses the command line. Help and version text go to stdout through
/// `output`, like every command's output (clap's own printing ignores a
/// closed stdout and exits 0); a usage error goes to stderr. `Err` holds
/// the code to exit with: 0 after help or version, 2 after a usage error.
pub fn parse() -> Result<Cli, ExitCode> {
    use clap::Parser as _;
    use std::io::IsTerminal as _;
    let error = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    let tty = if error.use_stderr() {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let rendered = error.render();
    let text = if tty {
        rendered.ansi().to_string()
    } else {
        rendered.to_string()
    };
    if error.use_stderr() {
        errln!("{}", text.trim_end());
    } else {
        outln!("{}", text.trim_end());
    }
    Err(if error.exit_code() == 0 {
        ExitCode::Success
    } else {
        ExitCode::Usage
    })
}

/// Runs the parsed command line and returns the exit code. Errors are
/// printed here, as one line each, so every subcommand reports alike.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Apply(args) => apply::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Check(args) => check::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Status(args) => status::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Gate(args) => gate::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Channel(args) => channel::run(*args),
        Command::Watch(args) => watch::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Config(args) => config::run(args),
        Command::Release(args) => release::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::EvaluateChannel(args) => watch::run_evaluate(args),
    }
}

/// Logs to stderr, one line per event, without timestamps (journald adds
/// them). The level comes from `DRIFTLESS_LOG` (`info` by default; e.g.
/// `debug`, or `driftless=debug,warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Prints an error chain as one line on stderr and classifies it.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    errln!("error: {}", one_line(error));
    ExitCode::of(error)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
