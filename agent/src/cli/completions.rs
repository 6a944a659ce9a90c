//! `driftless completions SHELL`: the shell's completion script for every
//! subcommand and option, generated from the command line's own definition
//! (clap_complete), so it always matches the binary.

use clap::{Args, CommandFactory as _, ValueEnum};

use crate::exit::ExitCode;

/// Arguments of `driftless completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    /// bash: `driftless completions bash > /etc/bash_completion.d/driftless`.
    Bash,
    /// zsh: into a directory of `$fpath` as `_driftless`.
    Zsh,
    /// fish: `~/.config/fish/completions/driftless.fish`.
    Fish,
}

/// Runs `driftless completions`: the script on stdout.
pub fn run(args: CompletionsArgs) -> ExitCode {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = super::Cli::command();
    clap_complete::generate(shell, &mut command, "driftless", &mut std::io::stdout());
    ExitCode::Success
}
