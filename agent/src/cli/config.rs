//! `driftless config check FILE`: an agent config, or cloud-init user-data
//! that writes one, judged offline with the node's own rules
//! (`fleet::lint::CHECKS`), before any node boots with it.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::exit::ExitCode;
use crate::fleet::lint::{self as config_lint, ConfigFile};
use crate::release::lint::refused;

/// Arguments of `driftless config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// The subcommands of `driftless config`.
#[derive(Debug, Subcommand)]
enum Action {
    /// Check an agent config, or cloud-init user-data that writes one:
    /// exit 0 when a node accepts it, 3 when it refuses it.
    Check {
        /// The agent config or `#cloud-config` user-data.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print the findings as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `driftless config`.
pub fn run(args: ConfigArgs) -> ExitCode {
    let Action::Check { file, json } = args.action;
    let config = match ConfigFile::read(&file) {
        Ok(c) => c,
        Err(e) => return super::report(&e.into()),
    };
    let findings = config_lint::run_config(config_lint::CHECKS, &config);
    let bad = refused(&findings);
    if json {
        outln!(
            "{}",
            json!({ "file": config.name, "user_data": config.user_data, "refused": bad, "findings": findings })
        );
    } else {
        super::lint::print_findings(&findings);
        let what = if config.user_data {
            format!("user-data {}", config.name)
        } else {
            format!("agent config {}", config.name)
        };
        super::lint::verdict(&what, &findings, "config");
        if let Some(c) = config.config.as_ref().ok().filter(|_| !bad) {
            let release = match (&c.release.tag, &c.release.channel) {
                (Some(tag), _) => format!("tag {}", tag.as_str()),
                (None, Some(channel)) => format!("the release channel {channel} names"),
                (None, None) => "nothing".to_owned(),
            };
            outln!(
                "a node with it runs {release} from {}, trusting {}",
                c.source.url.redacted(),
                c.trust.allowed_signers
            );
        }
    }
    if bad {
        ExitCode::Config
    } else {
        ExitCode::Success
    }
}
