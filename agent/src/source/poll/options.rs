//! How a poller reaches the server: timeouts, the trusted CAs,
//! credentials and the bound on an answer ([`PollOptions`]), and
//! [`poller_for`], which takes them from the agent's configuration. Apart
//! from the client so that the settings, and where each comes from, read
//! in one place.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::RefPoller;

/// The default bound on one `ls-refs` answer: a single ref needs about a
/// hundred bytes, so this leaves room for hundreds of refs sharing the prefix.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// HTTP basic-auth credentials: a user name and an access token. The
/// token never appears in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct BasicAuth {
    /// The user name (`git` for most forges' tokens).
    pub user: String,
    /// The token, sent as the password.
    pub token: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How a [`RefPoller`] reaches the server.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence from the server while waiting for or reading the
    /// answer.
    pub io_timeout: Duration,
    /// Longest time for one poll (one request, or one libgit2 listing).
    pub deadline: Duration,
    /// PEM bundle of the CAs trusted for HTTPS instead of the system's: when
    /// given, only these are trusted.
    pub ca_file: Option<PathBuf>,
    /// Credentials for HTTP(S). Without them, user information in the URL
    /// (`https://user:token@host/...`) is used.
    pub basic_auth: Option<BasicAuth>,
    /// Private key for `ssh://` URLs (libgit2 listing).
    pub ssh_key_file: Option<PathBuf>,
    /// Largest `ls-refs` answer accepted, in bytes.
    pub max_answer_bytes: usize,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(20),
            deadline: Duration::from_secs(30),
            ca_file: None,
            basic_auth: None,
            ssh_key_file: None,
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }
}

/// A poller of the source, with its transport settings; `deadline` bounds
/// each request.
pub fn poller_for(
    root_path: &std::path::Path,
    config: &crate::config::AgentConfig,
    deadline: std::time::Duration,
) -> anyhow::Result<RefPoller> {
    if config.source.kind == crate::config::SourceKind::Static {
        anyhow::bail!(
            "source.kind static: this version reads releases from static files but polls \
             the channel from git only; point the watcher's config at the git source"
        );
    }
    let options = options_for(root_path, config, deadline)?;
    Ok(RefPoller::new(config.source.url.as_str(), options)?)
}

/// The source's transport settings from the configuration (credential
/// and CA files read under `root_path`); `deadline` bounds each request.
pub fn options_for(
    root_path: &std::path::Path,
    config: &crate::config::AgentConfig,
    deadline: std::time::Duration,
) -> anyhow::Result<PollOptions> {
    let source = &config.source;
    let basic_auth = match &source.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file.under(root_path))
                .map_err(|e| anyhow::anyhow!("cannot read {file}: {}", e.kind()))?;
            Some(BasicAuth {
                user: source.token_user.clone(),
                token: text.trim().to_owned(),
            })
        }
        None => None,
    };
    Ok(PollOptions {
        connect_timeout: config.fetch.connect_timeout.0,
        io_timeout: config.fetch.io_timeout.0,
        deadline,
        ca_file: source.ca_file.as_ref().map(|p| p.under(root_path)),
        basic_auth,
        ssh_key_file: source.ssh_key_file.as_ref().map(|p| p.under(root_path)),
        ..Default::default()
    })
}
