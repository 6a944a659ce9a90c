//! The checks of an agent config, alone or inside cloud-init user-data:
//! everything a node checks of its config before it does anything (the
//! strict parse with every section's rules, the `replace` settings the
//! watcher refuses to start without), and the trust files the user-data
//! writes beside it, parsed as the node parses them. Offline: nothing is
//! fetched or run. Apart from `node::lint` because the `replace` settings
//! are this stage's.

use std::path::Path;

use crate::config::user_data::{self, WrittenFile};
use crate::config::{AgentConfig, ConfigError, DEFAULT_CONFIG_PATH};
use crate::release::lint::{Check, Finding};
use crate::verify::{AllowedSigners, RevokedKeys};

/// An agent config being judged: the file it came from, the config as a
/// node parses it, and the other files the user-data writes.
pub struct ConfigFile {
    /// The file, as given.
    pub name: String,
    /// True when the file is user-data and the config was inside it.
    pub user_data: bool,
    /// The config, or why a node refuses it.
    pub config: Result<AgentConfig, ConfigError>,
    /// The files the user-data writes (none for a plain config).
    pub written: Vec<WrittenFile>,
}

/// A check of an agent config.
pub type ConfigCheck = Check<fn(&ConfigFile) -> Vec<Finding>>;

/// Every check an agent config is linted with, in order.
pub const CHECKS: &[ConfigCheck] = &[PARSES, REPLACE, TRUST];

/// The config parses with every section's rules.
pub const PARSES: ConfigCheck = Check {
    name: "config",
    about: "the agent config parses strictly, with every section's rules",
    run: parses,
};

/// The `replace` settings.
pub const REPLACE: ConfigCheck = Check {
    name: "replace",
    about: "the replace settings the watcher checks before it starts",
    run: replace,
};

/// Trust files written beside the config.
pub const TRUST: ConfigCheck = Check {
    name: "trust",
    about: "trust files the user-data writes parse as the node parses them",
    run: trust,
};

/// Runs every check of `checks` on `file`, in order.
pub fn run_config(checks: &[ConfigCheck], file: &ConfigFile) -> Vec<Finding> {
    checks.iter().flat_map(|c| (c.run)(file)).collect()
}

impl ConfigFile {
    /// Reads `path`: an agent config, or `#cloud-config` user-data whose
    /// `write_files` holds one at `/etc/driftless/agent.yaml`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let bytes =
            crate::verify::allowed_signers::read_limited(path, user_data::MAX_USER_DATA_LEN)
                .map_err(|e| ConfigError {
                    path: name.clone(),
                    reason: format!("cannot read: {e}"),
                })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            path: name.clone(),
            reason: "not UTF-8".into(),
        })?;
        Ok(Self::from_text(&text, &name))
    }

    /// [`ConfigFile::read`] of text already read; `name` names it.
    pub fn from_text(text: &str, name: &str) -> Self {
        if !user_data::is_user_data(text) {
            return Self {
                name: name.to_owned(),
                user_data: false,
                config: AgentConfig::parse(text, name),
                written: Vec::new(),
            };
        }
        let written = match user_data::written_files(text, name) {
            Ok(w) => w,
            Err(e) => {
                return Self {
                    name: name.to_owned(),
                    user_data: true,
                    config: Err(e),
                    written: Vec::new(),
                };
            }
        };
        let config = match written.iter().rfind(|f| f.path == DEFAULT_CONFIG_PATH) {
            Some(f) => AgentConfig::parse(&f.content, &format!("{name}: {} ({})", f.place, f.path)),
            None => Err(ConfigError {
                path: name.to_owned(),
                reason: format!(
                    "the user-data writes no {DEFAULT_CONFIG_PATH} (write_files): a node booted with it has no agent config unless its image has one"
                ),
            }),
        };
        Self {
            name: name.to_owned(),
            user_data: true,
            config,
            written,
        }
    }
}

fn parses(file: &ConfigFile) -> Vec<Finding> {
    match &file.config {
        Ok(_) => Vec::new(),
        Err(e) => vec![Finding::error("config", e.to_string())],
    }
}

fn replace(file: &ConfigFile) -> Vec<Finding> {
    let Ok(config) = &file.config else {
        return Vec::new();
    };
    match crate::fleet::terminate::validate(&config.replace) {
        Ok(()) => Vec::new(),
        Err(e) => vec![Finding::error("replace", format!("{}: {e}", file.name))],
    }
}

fn trust(file: &ConfigFile) -> Vec<Finding> {
    let Ok(config) = &file.config else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let written = |path: &str| file.written.iter().rfind(|f| f.path == path);
    let allowed = config.trust.allowed_signers.as_str();
    if let Some(f) = written(allowed) {
        let name = format!("{}: {} ({allowed})", file.name, f.place);
        match AllowedSigners::parse(&f.content, &name, &jiff::tz::TimeZone::system()) {
            Ok(signers) if signers.signers().is_empty() => out.push(Finding::error(
                "trust",
                format!("{name}: trusts nobody: every release would be refused"),
            )),
            Ok(_) => {}
            Err(e) => out.push(Finding::error("trust", e.to_string())),
        }
    }
    if let Some(revoked) = &config.trust.revoked_keys {
        if let Some(f) = written(revoked.as_str()) {
            let name = format!("{}: {} ({revoked})", file.name, f.place);
            if let Err(e) = RevokedKeys::parse(&f.content, &name) {
                out.push(Finding::error("trust", e.to_string()));
            }
        }
    }
    out
}
