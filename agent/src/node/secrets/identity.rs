//! The node's age identity: read from a root-only file (refused when any
//! other user could read or change it) or from a command's standard output,
//! held in zeroed memory, and parsed into age identities (`age-keygen`
//! output, or an unencrypted OpenSSH ed25519 key). Nothing here ever puts a
//! byte of the identity into an error or a log line: errors name the file
//! or command and what is wrong with it, and the node's public recipients.

use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::fcntl::OFlag;
use zeroize::Zeroizing;

use super::IdentityError;
use crate::config::SecretSettings;
use crate::root::Root;
use crate::types::NodePath;

/// An identity file or command output larger than this is refused.
pub const MAX_IDENTITY_LEN: usize = 64 * 1024;
/// The `PATH` the identity command runs with.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The node's identities, ready to open age files.
pub struct Identity {
    keys: Vec<Box<dyn age::Identity>>,
    /// Their public halves, for messages: `age1…` or `ssh-ed25519 SHA256:…`.
    public: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public.join(", "))
    }
}

impl Identity {
    /// The identities, as age takes them.
    pub fn keys(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// The public recipients of this node's identities, for an error line.
    pub fn public(&self) -> String {
        self.public.join(", ")
    }
}

/// Loads the identity the config names, or says why there is none.
pub fn load(root: &Root, settings: &SecretSettings) -> Result<Identity, IdentityError> {
    let (bytes, from) = if let Some(path) = &settings.identity_file {
        (
            read_file(root, path)?,
            format!("secrets.identity_file {path}"),
        )
    } else if !settings.identity_command.is_empty() {
        let shown = settings.identity_command[0].clone();
        (
            run_command(&settings.identity_command, settings.identity_timeout.0)?,
            format!("secrets.identity_command {shown}"),
        )
    } else {
        return Err(IdentityError(
            "this node has no age identity (set secrets.identity_file or secrets.identity_command in the agent config)".into(),
        ));
    };
    parse(&bytes).map_err(|reason| IdentityError(format!("{from}: {reason}")))
}

/// Reads the identity file: one open, beneath the root, not through a final
/// symlink; its owner and mode are checked on the open file itself.
fn read_file(root: &Root, path: &NodePath) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    let fail = |reason: String| IdentityError(format!("secrets.identity_file {path}: {reason}"));
    let fd = root
        .open_raw(path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
        .map_err(|e| match e {
            nix::errno::Errno::ENOENT => fail("missing".into()),
            e => fail(format!("cannot open: {}", e.desc())),
        })?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| fail(format!("cannot stat: {e}")))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Err(fail("not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        return Err(fail(format!(
            "owned by uid {}; it must be root's (chown root:root)",
            st.st_uid
        )));
    }
    // Group and other bits, and with an ACL its mask, which sits in the
    // group bits: any of them lets another user read or replace the key.
    if st.st_mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:04o} lets other users at it; it must be 0600 or 0400 (chmod 0600)",
            st.st_mode & 0o7777
        )));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_IDENTITY_LEN + 1));
    std::fs::File::from(fd)
        .take(MAX_IDENTITY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() > MAX_IDENTITY_LEN {
        return Err(fail(format!("larger than {MAX_IDENTITY_LEN} bytes")));
    }
    Ok(bytes)
}

/// Runs the identity command and returns its standard output (at most
/// [`MAX_IDENTITY_LEN`] bytes), killing its process group at `limit`. On
/// failure the error carries the first line of its standard error.
fn run_command(argv: &[String], limit: Duration) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    let fail =
        |reason: String| IdentityError(format!("secrets.identity_command {}: {reason}", argv[0]));
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Both pipes are drained on threads of their own, so the command never
    // blocks on a full pipe; what is kept is bounded.
    let out = std::thread::spawn(move || {
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_IDENTITY_LEN + 1));
        if let Some(pipe) = stdout {
            let mut pipe = pipe.take(MAX_IDENTITY_LEN as u64 + 1);
            let _ = pipe.read_to_end(&mut bytes);
            // Drain the rest so the command is not stopped by a full pipe.
            let _ = std::io::copy(&mut pipe.into_inner(), &mut std::io::sink());
        }
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = stderr {
            let mut pipe = pipe.take(4096);
            let _ = pipe.read_to_end(&mut bytes);
            let _ = std::io::copy(&mut pipe.into_inner(), &mut std::io::sink());
        }
        bytes
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                return Err(fail(format!(
                    "did not finish within {}s; killed",
                    limit.as_secs_f32()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(format!("cannot be waited for: {e}"))),
        }
    };
    if !status.success() {
        let said = err.join().unwrap_or_default();
        return Err(fail(format!("{status}{}", first_line(&said))));
    }
    let bytes = out
        .join()
        .map_err(|_| fail("its output could not be read".into()))?;
    if bytes.len() > MAX_IDENTITY_LEN {
        return Err(fail(format!("printed more than {MAX_IDENTITY_LEN} bytes")));
    }
    Ok(bytes)
}

/// `: FIRST LINE` of a command's standard error, printable, bounded, and
/// empty if it looks like it holds a key.
fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if line.is_empty() || line.contains("SECRET-KEY") || line.contains("PRIVATE KEY") {
        return String::new();
    }
    let clean: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    format!(": {}", clean.trim())
}

/// Parses identity text: an OpenSSH private key, or age identity lines
/// (blank lines and `#` comments allowed). Errors never quote the text.
fn parse(bytes: &[u8]) -> Result<Identity, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return parse_ssh(text);
    }
    let mut keys: Vec<Box<dyn age::Identity>> = Vec::new();
    let mut public = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key: age::x25519::Identity = line.parse().map_err(|_| {
            format!(
                "line {} is not an age identity (AGE-SECRET-KEY-1…) and the file is no OpenSSH private key",
                n + 1
            )
        })?;
        public.push(key.to_public().to_string());
        keys.push(Box::new(key));
    }
    if keys.is_empty() {
        return Err("holds no identity".into());
    }
    Ok(Identity { keys, public })
}

/// An OpenSSH private key: only an unencrypted ed25519 key is taken (age's
/// RSA decryption goes through the `rsa` crate, which has a known timing
/// side channel, and an encrypted key would need a passphrase typed in).
fn parse_ssh(text: &str) -> Result<Identity, String> {
    let (key_type, fingerprint, encrypted) = ssh_public_half(text)?;
    if encrypted {
        return Err("an encrypted OpenSSH key; driftless needs it unencrypted (in a root-only file or from the command)".into());
    }
    if key_type != "ssh-ed25519" {
        return Err(format!(
            "an OpenSSH {key_type} key; only ssh-ed25519 keys (or age X25519 identities) are taken"
        ));
    }
    let identity = age::ssh::Identity::from_buffer(text.as_bytes(), None)
        .map_err(|_| "an OpenSSH private key age cannot read".to_owned())?;
    match identity {
        age::ssh::Identity::Unencrypted(_) => {}
        _ => return Err("an OpenSSH private key age cannot use".into()),
    }
    Ok(Identity {
        keys: vec![Box::new(identity)],
        public: vec![format!("ssh-ed25519 {fingerprint}")],
    })
}

/// The key type, the public key's fingerprint and whether the private half
/// is encrypted, from the clear part of an OpenSSH private key file
/// (`openssh-key-v1`: cipher, kdf, kdf options, key count, public key).
fn ssh_public_half(text: &str) -> Result<(String, String, bool), String> {
    let bad = || "not a readable OpenSSH private key".to_owned();
    // Sized once: a grown buffer would leave copies behind in freed memory.
    let mut body = Zeroizing::new(String::with_capacity(text.len()));
    for line in text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
    {
        body.push_str(line);
    }
    let blob = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| bad())?,
    );
    let rest = blob
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .ok_or_else(bad)?;
    let mut reader = crate::verify::wire::Reader::new(rest);
    let cipher = reader.text().map_err(|_| bad())?;
    let encrypted = cipher != "none";
    reader.string().map_err(|_| bad())?; // kdf name
    reader.string().map_err(|_| bad())?; // kdf options
    if reader.u32().map_err(|_| bad())? != 1 {
        return Err("an OpenSSH file with more than one key".into());
    }
    let public = reader.string().map_err(|_| bad())?;
    let key = crate::verify::sshkey::PublicKey::from_blob(public).map_err(|_| bad())?;
    Ok((key.algorithm().to_owned(), key.fingerprint(), encrypted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_identity_lines_parse_and_never_show_in_errors() {
        let key = age::x25519::Identity::generate();
        let secret = {
            use age::secrecy::ExposeSecret as _;
            key.to_string().expose_secret().to_owned()
        };
        let text = format!("# created: now\n# public key: x\n{secret}\n");
        let identity = parse(text.as_bytes()).expect("an identity file");
        assert_eq!(identity.public(), key.to_public().to_string());
        let err =
            parse(format!("{secret}\n{}\n", &secret[..40]).as_bytes()).expect_err("a cut line");
        assert!(err.starts_with("line 2 is not an age identity"), "{err}");
        assert!(!err.contains(&secret[..20]), "{err}");
        assert!(!format!("{identity:?}").contains("SECRET"), "{identity:?}");
        assert_eq!(
            parse(b"# nothing\n").expect_err("empty"),
            "holds no identity"
        );
    }

    #[test]
    fn a_command_s_error_line_never_carries_a_key() {
        assert_eq!(
            first_line(b"\nAccessDenied: no\nmore"),
            ": AccessDenied: no"
        );
        assert_eq!(first_line(b"AGE-SECRET-KEY-1QQQ\n"), "");
        assert_eq!(first_line(b""), "");
    }
}
