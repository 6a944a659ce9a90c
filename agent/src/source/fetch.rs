//! Fetching: exactly one tag, shallow, into a private bare cache under the
//! root, with a timeout on every network step, retries with exponential
//! backoff and jitter, and one total deadline. No trust decisions are made
//! here: whatever arrives is verified by [`crate::verify`] before use.
//!
//! A cache that already holds the pinned tag (pre-seeded into an image with
//! `driftless fetch --root IMAGE`) needs no network at all.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use git2::{AutotagOption, FetchOptions, RemoteCallbacks, Repository};

use crate::config::{FetchSettings, Source, TagName};
use crate::source::permanent;
use crate::types::NodePath;

/// The cache's place on the node.
pub const CACHE_PATH: &str = "/var/lib/driftless/cache.git";

/// A fetch that did not bring the tag.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every attempt failed and the deadline passed.
    #[error(
        "could not fetch {name} from {url} within {deadline:?} ({attempts} attempts); last error: {last}"
    )]
    GaveUp {
        /// The ref.
        name: String,
        /// The source, without credentials.
        url: String,
        /// The configured total deadline.
        deadline: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// A failure that retrying cannot mend (no repository at the URL, the
    /// server's certificate or the credentials refused; see
    /// [`crate::source::permanent`]).
    #[error("cannot fetch {name} from {url}: {}", not_retried(reason, *hint))]
    Refused {
        /// The ref.
        name: String,
        /// The source, without credentials.
        url: String,
        /// Why.
        reason: String,
        /// The setting to check (`check source.url`), if one is to blame.
        hint: Option<&'static str>,
    },
    /// The fetch ran but the server does not have the ref.
    #[error("the server at {url} has no {name}")]
    NoSuchRef {
        /// The ref.
        name: String,
        /// The source, without credentials.
        url: String,
    },
    /// The local cache could not be created or read.
    #[error("cache {path}: {reason}")]
    Cache {
        /// The cache directory on the host.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A credential file named in the config could not be read.
    #[error("{0}")]
    Credentials(String),
}

/// `REASON (not retried); HINT`, the hint last even when the reason (a
/// poll's error) already ends with it.
fn not_retried(reason: &str, hint: Option<&'static str>) -> String {
    match hint {
        Some(hint) => {
            let reason = reason.strip_suffix(&format!("; {hint}")).unwrap_or(reason);
            format!("{reason} (not retried); {hint}")
        }
        None => format!("{reason} (not retried)"),
    }
}

/// Opens the bare cache under `root`, creating it (mode 0700) if needed.
pub fn open_cache(root: &Path) -> Result<Repository, FetchError> {
    let path = cache_dir(root);
    let fail = |reason: String| FetchError::Cache {
        path: path.display().to_string(),
        reason,
    };
    if path.join("HEAD").exists() {
        return Repository::open_bare(&path).map_err(|e| fail(e.message().to_owned()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create parent: {e}")))?;
    }
    let mut options = git2::RepositoryInitOptions::new();
    options.bare(true).external_template(false);
    let repo = Repository::init_opts(&path, &options).map_err(|e| fail(e.message().to_owned()))?;
    set_private(&path).map_err(|e| fail(format!("cannot restrict permissions: {e}")))?;
    Ok(repo)
}

/// The cache directory under `root`.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join(&CACHE_PATH[1..])
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// True when the cache already holds `refs/tags/TAG`.
pub fn has_tag(repo: &Repository, tag: &TagName) -> bool {
    repo.find_reference(&tag_ref(tag)).is_ok()
}

fn tag_ref(tag: &TagName) -> String {
    format!("refs/tags/{}", tag.as_str())
}

/// Fetches `refs/tags/TAG` (and the objects it needs, shallow where the
/// transport allows) from `source` into `repo`, retrying within the deadline.
/// Credential files are read under `root`.
pub fn fetch_tag(
    repo: &Repository,
    root: &Path,
    source: &Source,
    tag: &TagName,
    settings: &FetchSettings,
) -> Result<(), FetchError> {
    let name = tag_ref(tag);
    fetch_ref(repo, root, source, &name, &name, true, settings)
}

/// Fetches the remote ref `remote_ref` into the local ref `local_ref`,
/// shallow (depth 1) when asked and the transport allows, with no other refs
/// and no tags, retrying with backoff and jitter within the deadline.
pub fn fetch_ref(
    repo: &Repository,
    root: &Path,
    source: &Source,
    remote_ref: &str,
    local_ref: &str,
    shallow: bool,
    settings: &FetchSettings,
) -> Result<(), FetchError> {
    apply_timeouts(settings);
    let credentials = Credentials::load(root, source)?;
    let deadline = Instant::now() + settings.deadline.0;
    let refspec = format!("+{remote_ref}:{local_ref}");
    let no_such_ref = || FetchError::NoSuchRef {
        name: remote_ref.to_owned(),
        url: source.url.redacted(),
    };
    let mut retries = Retries::new(remote_ref, source, settings);
    let refused = |reason: String, hint: Option<&'static str>| FetchError::Refused {
        name: remote_ref.to_owned(),
        url: source.url.redacted(),
        reason,
        hint,
    };
    loop {
        retries.attempts += 1;
        let limits = Limits {
            deadline,
            max_bytes: settings.max_bytes.0,
        };
        match fetch_once(repo, source, &credentials, &refspec, shallow, &limits) {
            Ok(()) if repo.find_reference(local_ref).is_ok() => return Ok(()),
            Ok(()) => return Err(no_such_ref()),
            Err(Failed::TooLarge) => {
                return Err(refused(
                    format!(
                        "the server sent more than fetch.max_bytes ({}); refusing it (raise \
                         fetch.max_bytes if the release is that large)",
                        settings.max_bytes
                    ),
                    None,
                ));
            }
            Err(Failed::Git(e)) if is_missing_ref(&e) => return Err(no_such_ref()),
            Err(Failed::Git(e)) => {
                let url = source.url.as_str();
                if let Some(reason) = permanent::sha256_through_libgit2(e.message(), url) {
                    return Err(refused(reason, Some(permanent::SERVE_SMART_HTTP)));
                }
                match permanent::libgit2(&e) {
                    Some(hint) => return Err(refused(e.message().to_owned(), Some(hint))),
                    None => retries.after_failure(e.message().to_owned())?,
                }
            }
        }
    }
}

/// What one transfer may take: until `deadline`, at most `max_bytes`.
struct Limits {
    deadline: Instant,
    max_bytes: u64,
}

/// Why one transfer failed.
enum Failed {
    /// libgit2 failed (or the deadline passed).
    Git(git2::Error),
    /// The server sent more than `fetch.max_bytes`.
    TooLarge,
}

/// The attempts of one fetch: exponential backoff with jitter, within one
/// total deadline that starts when this is made.
pub(crate) struct Retries<'a> {
    name: &'a str,
    url: String,
    settings: &'a FetchSettings,
    deadline: Instant,
    delay: Duration,
    /// Attempts made (the caller counts each as it starts).
    pub attempts: u32,
}

impl<'a> Retries<'a> {
    pub(crate) fn new(name: &'a str, source: &Source, settings: &'a FetchSettings) -> Self {
        Self {
            name,
            url: source.url.redacted(),
            settings,
            deadline: Instant::now() + settings.deadline.0,
            delay: settings.retry_initial.0,
            attempts: 0,
        }
    }

    /// Time left before the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// After a failed attempt: waits before the next one, or gives up when
    /// that wait would pass the deadline.
    pub(crate) fn after_failure(&mut self, message: String) -> Result<(), FetchError> {
        let pause = jitter(self.delay);
        if Instant::now() + pause >= self.deadline {
            return Err(FetchError::GaveUp {
                name: self.name.to_owned(),
                url: self.url.clone(),
                deadline: self.settings.deadline.0,
                attempts: self.attempts,
                last: message,
            });
        }
        tracing::warn!(attempt = self.attempts, retry_in = ?pause, "fetch of {} from {} failed: {message}", self.name, self.url);
        std::thread::sleep(pause);
        self.delay = (self.delay * 2).min(self.settings.retry_max.0);
        Ok(())
    }
}

/// One transfer. libgit2 writes the pack into the repository as it
/// arrives, so its size is capped here, from its transfer-progress
/// callback: past `max_bytes` the transfer is aborted (and libgit2 removes
/// the partial pack).
fn fetch_once(
    repo: &Repository,
    source: &Source,
    credentials: &Credentials,
    refspec: &str,
    shallow: bool,
    limits: &Limits,
) -> Result<(), Failed> {
    let deadline = limits.deadline;
    let max_bytes = limits.max_bytes;
    let too_large = std::cell::Cell::new(false);
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = 0u32;
    callbacks.credentials(move |url, username, allowed| {
        asked += 1;
        if asked > 1 {
            return Err(auth_error("the server refused the configured credentials"));
        }
        credentials.for_request(url, username, allowed)
    });
    callbacks.transfer_progress(|progress| {
        if progress.received_bytes() as u64 > max_bytes {
            too_large.set(true);
            return false;
        }
        Instant::now() < deadline
    });
    callbacks.sideband_progress(move |_| Instant::now() < deadline);
    if let Some(known_hosts) = &credentials.known_hosts {
        let known_hosts = known_hosts.clone();
        callbacks.certificate_check(move |cert, host| known_hosts.check(cert, host));
    }
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::None);
    if shallow && !source.url.as_str().starts_with("file://") {
        options.depth(1);
    }
    let mut remote = repo
        .remote_anonymous(source.url.as_str())
        .map_err(Failed::Git)?;
    let fetched = remote.fetch(&[refspec], Some(&mut options), None);
    drop(remote);
    drop(options);
    match (fetched, too_large.get()) {
        (Ok(()), _) => Ok(()),
        (Err(_), true) => Err(Failed::TooLarge),
        (Err(e), false) => Err(Failed::Git(e)),
    }
}

fn is_missing_ref(e: &git2::Error) -> bool {
    let m = e.message();
    m.contains("couldn't find remote ref") || m.contains("could not find remote ref")
}

/// A pause of `base` ± 25 %, so that a fleet booted together does not retry in step.
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    let factor = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
    base.mul_f64(factor)
}

static TIMEOUTS: Once = Once::new();

/// libgit2's socket timeouts are process-wide; set them once, before any
/// transfer, from the config.
#[allow(unsafe_code)]
fn apply_timeouts(settings: &FetchSettings) {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let connect = millis(settings.connect_timeout.0);
    let io = millis(settings.io_timeout.0);
    TIMEOUTS.call_once(|| {
        // SAFETY: libgit2 documents these as unsynchronised globals. They are
        // written once, under `Once`, before this process starts any fetch,
        // and driftless runs its fetches on a single thread.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(connect);
            let _ = git2::opts::set_server_timeout_in_milliseconds(io);
        }
    });
}

/// Sets the CA bundle libgit2 trusts for HTTPS (process-wide, once).
#[allow(unsafe_code)]
pub fn use_ca_file(path: &Path) -> Result<(), FetchError> {
    if !path.is_file() {
        return Err(FetchError::Credentials(format!(
            "ca_file {} does not exist",
            path.display()
        )));
    }
    // SAFETY: as above: a process-wide libgit2 setting written before any
    // transfer starts, from the single fetching thread.
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| {
        FetchError::Credentials(format!("ca_file {}: {}", path.display(), e.message()))
    })
}

/// Secrets and host keys from the files the config names. The token is kept
/// in memory only for the request and is never logged or put in an error.
struct Credentials {
    /// `source.url`: the token is given only to its origin.
    url: String,
    token: Option<(String, String)>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<KnownHosts>,
}

impl Credentials {
    fn load(root: &Path, source: &Source) -> Result<Self, FetchError> {
        let read = |p: &NodePath| {
            std::fs::read_to_string(p.under(root))
                .map_err(|e| FetchError::Credentials(format!("cannot read {p}: {}", e.kind())))
        };
        // libgit2 started without CAs (see crate::source::libgit): give it exactly the
        // configured bundle, or the system's, before an HTTPS fetch.
        if let Some(ca) = &source.ca_file {
            use_ca_file(&ca.under(root))?;
        } else if source.url.as_str().starts_with("https://") {
            if let Some(bundle) = crate::source::libgit::system_bundle() {
                use_ca_file(&bundle)?;
            }
        }
        let token = match &source.token_file {
            Some(p) => {
                let text = read(p)?;
                let token = text.trim().to_owned();
                if token.is_empty() || token.contains(['\n', '\r']) {
                    return Err(FetchError::Credentials(format!(
                        "{p} must hold one token on one line"
                    )));
                }
                Some((source.token_user.clone(), token))
            }
            None => None,
        };
        let known_hosts = match &source.ssh_known_hosts {
            Some(p) => Some(KnownHosts::parse(&read(p)?)),
            None => None,
        };
        let ssh_key = source.ssh_key_file.as_ref().map(|p| p.under(root));
        Ok(Self {
            url: source.url.as_str().to_owned(),
            token,
            ssh_key,
            known_hosts,
        })
    }

    fn for_request(
        &self,
        url: &str,
        username: Option<&str>,
        allowed: git2::CredentialType,
    ) -> Result<git2::Cred, git2::Error> {
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some((user, token)) = &self.token {
                // `url` is where libgit2 is now: after a redirect, maybe elsewhere.
                crate::source::origin::check(&self.url, url)?;
                return git2::Cred::userpass_plaintext(user, token);
            }
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(key) = &self.ssh_key {
                return git2::Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        Err(auth_error(
            "the server asked for credentials and none are configured (source.token_file or source.ssh_key_file)",
        ))
    }
}

/// An authentication error of the credential callback: not retried.
pub(crate) fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Http, message)
}

/// Host keys from an OpenSSH `known_hosts` file (plain host patterns only).
#[derive(Debug, Clone, Default)]
struct KnownHosts {
    entries: Vec<(Vec<String>, Vec<u8>)>,
}

impl KnownHosts {
    fn parse(text: &str) -> Self {
        use base64::Engine as _;
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
                    return None;
                }
                let mut fields = line.split_whitespace();
                let hosts = fields.next()?.split(',').map(str::to_owned).collect();
                let _type = fields.next()?;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(fields.next()?)
                    .ok()?;
                Some((hosts, key))
            })
            .collect();
        Self { entries }
    }

    fn check(
        &self,
        cert: &git2::cert::Cert<'_>,
        host: &str,
    ) -> Result<git2::CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        let known = self.entries.iter().any(|(hosts, key)| {
            key.as_slice() == hostkey
                && hosts
                    .iter()
                    .any(|h| h == host || h.starts_with(&format!("[{host}]:")))
        });
        if known {
            Ok(git2::CertificateCheckStatus::CertificateOk)
        } else {
            Err(git2::Error::from_str(&format!(
                "host key of {host} is not in source.ssh_known_hosts"
            )))
        }
    }
}
