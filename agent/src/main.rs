//! The `driftless` binary: set up logging, parse the command line, run it,
//! exit with its code.

fn main() -> std::process::ExitCode {
    driftless::cli::init_logging();
    let cli = match driftless::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    if cli.command.starts_libgit() {
        driftless::source::libgit::start();
    }
    driftless::cli::run(cli).into()
}
