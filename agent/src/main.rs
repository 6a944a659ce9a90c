//! The `driftless` binary: set up logging, parse the command line, run it,
//! exit with its code.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    driftless::cli::init_logging();
    let cli = driftless::cli::Cli::parse();
    if cli.command.starts_libgit() {
        driftless::source::libgit::start();
    }
    driftless::cli::run(cli).into()
}
