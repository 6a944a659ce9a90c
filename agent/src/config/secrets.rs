//! The config's `secrets` section: where the node's age identity comes
//! from, so that it can open the secrets a release carries encrypted. A
//! root-only file, or the standard output of a command (which lets a fleet
//! fetch it from a cloud KMS, Vault or `systemd-creds` at boot without the
//! agent knowing any of them). Apart from the schema's other sections
//! because it has checks of its own; reading the identity is the node
//! stage's (`node::secrets`).

use serde::{Deserialize, Serialize};

use crate::types::{Interval, NodePath};

/// The node cannot open a secret of its release: the config names no
/// identity, one that cannot be read, or not one the secret was encrypted
/// to. The node's fault, not the release's: the config's stage.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

/// The `secrets` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSettings {
    /// A file holding the identity: `age-keygen` output (one or more
    /// `AGE-SECRET-KEY-1…` lines) or an unencrypted OpenSSH ed25519 private
    /// key. Root's, and readable by no one else, or it is refused.
    pub identity_file: Option<NodePath>,
    /// A command (absolute program, then its arguments) whose standard
    /// output is the identity, in either form. It runs with an empty
    /// environment but `PATH`, in `/`, with no input.
    pub identity_command: Vec<String>,
    /// How long the command may run before it is killed.
    pub identity_timeout: Interval,
}

impl Default for SecretSettings {
    fn default() -> Self {
        Self {
            identity_file: None,
            identity_command: Vec::new(),
            identity_timeout: Interval::secs(30),
        }
    }
}

impl SecretSettings {
    /// Whether the node has an identity configured at all.
    pub fn configured(&self) -> bool {
        self.identity_file.is_some() || !self.identity_command.is_empty()
    }

    /// Checks the section: one source at most, an absolute program.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.identity_file.is_some() && !self.identity_command.is_empty() {
            return Err("secrets: give either identity_file or identity_command, not both".into());
        }
        if let Some(program) = self.identity_command.first() {
            if !program.starts_with('/') {
                return Err(format!(
                    "secrets.identity_command: the program {program:?} must be an absolute path"
                ));
            }
        }
        if self.identity_timeout.0.is_zero() {
            return Err("secrets.identity_timeout must be more than 0s".into());
        }
        Ok(())
    }
}
