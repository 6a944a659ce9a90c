//! Release repositories and node roots for the `driftless apply` end-to-end
//! tests.
//!
//! * [`World`]: one test's temporary directory with an isolated HOME, SSH
//!   keys made by `ssh-keygen`, release work trees, the served directory
//!   (`srv/`, the base dir of [`crate::servers::GitDaemon`] and
//!   [`crate::servers::SmartHttp`]) and node roots.
//! * [`Release`]: the tree of one release (the node spec, `files/`,
//!   `units/`, symlinks, large sparse files), published with
//!   [`World::publish`] as a commit on `main` of a bare repository under
//!   `srv/`, tagged with `git tag -s` (gpg.format=ssh) or a lightweight tag.
//! * [`NodeRoot`]: a directory standing in for a node's `/`, with
//!   `/etc/passwd`, `/etc/group`, `/etc/machine-id`, `/var/lib` and
//!   `/etc/driftless/{agent.yaml,allowed_signers}`, and the driftless
//!   commands run against it with a time limit.
//! * [`snapshot`]: a walk of a root (kind, mode, owner, group, content or
//!   link target of every entry) to compare roots byte for byte.
//!
//! Include it next to `servers.rs`, whose bounded runner it uses:
//! `#[path = "support/servers.rs"] mod servers;` and
//! `#[path = "support/release.rs"] mod release;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::servers::{Finished, isolate_git_env, run_bounded, unlock, unlock_tree};

/// The principal of the trusted release key in allowed_signers.
pub const PRINCIPAL: &str = "release@example.com";
/// The release tag most tests use.
pub const TAG: &str = "v1.0.0";
/// The bare repository most tests publish to, under `srv/`.
pub const REPO: &str = "release.git";
/// The node id every root's `/etc/machine-id` holds.
pub const MACHINE_ID: &str = "4f1c2a7e9b3d4c5e8f6a7b8c9d0e1f2a";
/// Where the agent keeps its state and cache, relative to a root.
pub const AGENT_DIR: &str = "var/lib/driftless";
/// Fetch settings that keep fault tests short.
pub const FAST_FETCH: &str =
    "{connect_timeout: 2s, io_timeout: 2s, deadline: 8s, retry_initial: 200ms, retry_max: 1s}";
/// Longest any one driftless command may run before the test fails.
pub const DRIFTLESS_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a helper tool (git, ssh-keygen) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// `/etc/passwd` of a fresh root.
pub const BASE_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
    bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// `/etc/group` of a fresh root.
pub const BASE_GROUP: &str = "root:x:0:\n\
    daemon:x:1:\n\
    bin:x:2:\n\
    adm:x:4:\n\
    nogroup:x:65534:\n";
/// `/etc/shadow` of a root made with [`NodeRoot::add_shadow_files`].
pub const BASE_SHADOW: &str = "root:*:19000:0:99999:7:::\n\
    daemon:*:19000:0:99999:7:::\n\
    bin:*:19000:0:99999:7:::\n\
    nobody:*:19000:0:99999:7:::\n";
/// `/etc/gshadow` of a root made with [`NodeRoot::add_shadow_files`].
pub const BASE_GSHADOW: &str = "root:*::\n\
    daemon:*::\n\
    bin:*::\n\
    adm:*::\n\
    nogroup:*::\n";

/// One test's working area; removed on drop.
pub struct World {
    /// Everything lives here.
    dir: tempfile::TempDir,
    /// The object format its repositories are made with (`sha1`, `sha256`).
    object_format: &'static str,
}

impl Drop for World {
    fn drop(&mut self) {
        // The agent locks what it applied (`chattr +i`); clear the attribute
        // so the temporary directory can be removed.
        unlock_tree(self.dir.path());
    }
}

/// An SSH key pair made by `ssh-keygen -t ed25519`.
#[derive(Clone, Debug)]
pub struct Key {
    /// The private key (the public half is beside it, `.pub`).
    pub private: PathBuf,
    /// `ssh-ed25519 BASE64` without a comment.
    pub public: String,
    /// `SHA256:…` as `ssh-keygen -l -f KEY.pub` prints it.
    pub fingerprint: String,
}

impl Key {
    /// An allowed_signers line trusting this key for `principal`.
    pub fn allowed(&self, principal: &str) -> String {
        format!("{principal} {}", self.public)
    }
}

/// One item of a release tree.
#[derive(Clone, Debug)]
enum Item {
    /// A regular file with these bytes.
    Bytes(Vec<u8>),
    /// A sparse regular file of `n` zero bytes.
    Zeros(u64),
    /// A symbolic link with this target.
    Symlink(String),
}

/// The tree of one release; paths are relative to the tree's top.
#[derive(Clone, Debug, Default)]
pub struct Release {
    /// Path → item.
    items: BTreeMap<String, Item>,
}

impl Release {
    /// A release whose node spec (`driftless.yaml`) is `spec`.
    pub fn new(spec: &str) -> Self {
        Self::default().file("driftless.yaml", spec)
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, bytes: impl AsRef<[u8]>) -> Self {
        self.items
            .insert(path.to_owned(), Item::Bytes(bytes.as_ref().to_vec()));
        self
    }

    /// Adds a sparse file of `len` zero bytes (made with `set_len`, so it
    /// costs no memory and almost no disk).
    pub fn zeros(mut self, path: &str, len: u64) -> Self {
        self.items.insert(path.to_owned(), Item::Zeros(len));
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.items
            .insert(path.to_owned(), Item::Symlink(target.to_owned()));
        self
    }

    /// The bytes of a regular file added with [`Release::file`].
    pub fn bytes(&self, path: &str) -> &[u8] {
        match self.items.get(path) {
            Some(Item::Bytes(bytes)) => bytes,
            other => panic!("the release has no regular file {path} ({other:?})"),
        }
    }

    /// Writes the tree into `dir`.
    fn write_into(&self, dir: &Path) {
        for (path, item) in &self.items {
            let host = dir.join(path);
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent).expect("create release tree directory");
            }
            match item {
                Item::Bytes(bytes) => fs::write(&host, bytes).expect("write release file"),
                Item::Zeros(len) => fs::File::create(&host)
                    .and_then(|f| f.set_len(*len))
                    .expect("make sparse release file"),
                Item::Symlink(target) => symlink(target, &host).expect("make release symlink"),
            }
        }
    }
}

/// How a release is tagged.
#[derive(Clone, Copy, Debug)]
pub enum Tagging<'a> {
    /// `git tag -s -m …` with this key (gpg.format=ssh).
    Signed(&'a Key),
    /// `git tag NAME`: a lightweight tag, no tag object, no signature.
    Lightweight,
}

/// What [`World::publish`] made.
#[derive(Clone, Debug)]
pub struct Published {
    /// The bare repository (under `srv/`).
    pub bare: PathBuf,
    /// The repository's path under `srv/`, for server URLs.
    pub repo: String,
    /// The release commit.
    pub commit: String,
    /// The commit before it (a commit the tag does not name).
    pub parent: String,
    /// What `refs/tags/TAG` names: the tag object (or the commit, when
    /// lightweight).
    pub tag_object: String,
}

impl Published {
    /// `file://` URL of the bare repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// The result of one driftless run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub shown: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    pub fn from_finished(shown: String, done: Finished) -> Self {
        assert!(
            !done.timed_out(),
            "{shown} ran longer than {DRIFTLESS_TIMEOUT:?} and was killed\n{}",
            done.describe()
        );
        let status = done.status.expect("not timed out");
        Self {
            shown,
            code: status.code(),
            signal: status.signal(),
            stdout: done.stdout,
            stderr: done.stderr,
            elapsed: done.elapsed,
        }
    }

    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\nexit code {:?}, signal {:?}, after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.shown, self.code, self.signal, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Asserts exit code 0 and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.describe());
        self
    }

    /// Asserts one of the codes `status` and `watch --once` report a
    /// node's state with (README, "Exit codes"), and returns self.
    pub fn reported(self) -> Self {
        assert!(
            self.code
                .is_some_and(|c| [0, 4, 5, 6, 7, 8, 9, 10, 11].contains(&c)),
            "expected a state's exit code\n{}",
            self.describe()
        );
        self
    }

    /// Standard output parsed as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }

    /// The lines of stderr that are not log lines (`INFO …`, `WARN …`).
    pub fn non_log_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !is_log_line(l)).collect()
    }

    /// Asserts a refusal: exit `code`, nothing on stdout, and on stderr
    /// exactly one line that is not a log line, the last one, starting with
    /// `error: ` and containing every needle. Returns that line.
    pub fn refused(&self, code: i32, needles: &[&str]) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        let others = self.non_log_lines();
        assert_eq!(
            others.len(),
            1,
            "expected exactly one error line on stderr (besides log lines)\n{}",
            self.describe()
        );
        let line = others[0];
        assert_eq!(
            self.stderr.lines().last(),
            Some(line),
            "the error line comes last\n{}",
            self.describe()
        );
        assert!(
            line.starts_with("error: "),
            "the error line must start with `error: `\n{}",
            self.describe()
        );
        for needle in needles {
            assert!(
                line.contains(needle),
                "the error line lacks {needle:?}\n{}",
                self.describe()
            );
        }
        assert!(
            self.stdout.trim().is_empty(),
            "a refusal prints nothing on stdout\n{}",
            self.describe()
        );
        line.to_owned()
    }
}

/// True for a line of the agent's log (`tracing`'s format without time:
/// the level, padded, then the message).
pub fn is_log_line(line: &str) -> bool {
    ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
        .iter()
        .any(|level| line.trim_start().starts_with(level))
}

impl World {
    /// A fresh world.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("driftless-apply-")
            .tempdir()
            .expect("create the test directory");
        for sub in ["home", "keys", "work", "srv", "roots"] {
            fs::create_dir(dir.path().join(sub)).expect("create a test subdirectory");
        }
        Self {
            dir,
            object_format: "sha1",
        }
    }

    /// A fresh world whose repositories are made with
    /// `git init --object-format=sha256`.
    pub fn sha256() -> Self {
        let mut world = Self::new();
        world.object_format = "sha256";
        world
    }

    /// The object format its repositories are made with.
    pub fn object_format(&self) -> &'static str {
        self.object_format
    }

    /// A path inside the world.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The served directory (base dir of the git servers).
    pub fn srv(&self) -> PathBuf {
        self.path("srv")
    }

    /// The isolated HOME.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// An isolated `git` with a fixed identity.
    pub fn git(&self) -> Command {
        let mut cmd = Command::new("git");
        isolate_git_env(&mut cmd, &self.home());
        cmd.current_dir(self.dir.path())
            .env("GIT_AUTHOR_NAME", "Release Bot")
            .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
            .env("GIT_COMMITTER_NAME", "Release Bot")
            .env("GIT_COMMITTER_EMAIL", PRINCIPAL)
            .env("TZ", "UTC");
        cmd
    }

    /// Runs a helper tool, requiring success; returns its trimmed stdout.
    pub fn tool(&self, cmd: &mut Command) -> String {
        let shown = format!("{cmd:?}");
        let done = run_bounded(cmd, TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{shown}: {e:#}"));
        assert!(done.success(), "{shown} failed\n{}", done.describe());
        done.stdout.trim().to_owned()
    }

    /// Makes an ed25519 key pair `keys/NAME` and reads its fingerprint
    /// with `ssh-keygen -l -f NAME.pub`.
    pub fn keygen(&self, name: &str) -> Key {
        let private = self.path("keys").join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            &format!("{name}@test"),
        ])
        .arg("-f")
        .arg(&private)
        .env("HOME", self.home());
        self.tool(&mut cmd);
        let public_path = private.with_extension("pub");
        let text = fs::read_to_string(&public_path).expect("read the public key");
        let public = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-l").arg("-f").arg(&public_path);
        let listing = self.tool(&mut cmd);
        // "256 SHA256:… name@test (ED25519)"
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen -l prints a fingerprint")
            .to_owned();
        assert!(fingerprint.starts_with("SHA256:"), "{listing}");
        Key {
            private,
            public,
            fingerprint,
        }
    }

    /// Publishes `release` as the next commit of `srv/REPO_NAME` (made on
    /// first use, with an initial commit), tagged `tag`. The work tree is
    /// replaced by exactly the release's items.
    pub fn publish(
        &self,
        repo_name: &str,
        release: &Release,
        tag: &str,
        tagging: Tagging<'_>,
    ) -> Published {
        let work = self.path("work").join(repo_name);
        let bare = self.srv().join(repo_name);
        if !work.exists() {
            let format = format!("--object-format={}", self.object_format);
            self.tool(
                self.git()
                    .args(["init", "-q", "-b", "main", &format])
                    .arg(&work),
            );
            self.tool(
                self.git()
                    .args(["init", "-q", "--bare", "-b", "main", &format])
                    .arg(&bare),
            );
            self.tool(self.git_in(&work).args([
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "initial commit",
            ]));
        }
        for entry in fs::read_dir(&work).expect("list the work tree") {
            let entry = entry.expect("work tree entry");
            if entry.file_name() == ".git" {
                continue;
            }
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                fs::remove_dir_all(&path).expect("clear the work tree");
            } else {
                fs::remove_file(&path).expect("clear the work tree");
            }
        }
        release.write_into(&work);
        self.tool(self.git_in(&work).args(["add", "-A"]));
        self.tool(self.git_in(&work).args([
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            &format!("release {tag}"),
        ]));
        match tagging {
            Tagging::Signed(key) => {
                let mut cmd = self.git_in(&work);
                cmd.args(["-c", "gpg.format=ssh", "-c"])
                    .arg(format!("user.signingKey={}", key.private.display()))
                    .args(["tag", "-s", "-m", &format!("release {tag}"), tag]);
                self.tool(&mut cmd);
            }
            Tagging::Lightweight => {
                self.tool(self.git_in(&work).args(["tag", tag]));
            }
        }
        self.tool(
            self.git_in(&work)
                .args(["push", "-q"])
                .arg(&bare)
                .arg("refs/heads/main")
                .arg(format!("refs/tags/{tag}")),
        );
        Published {
            bare,
            repo: repo_name.to_owned(),
            commit: self.tool(self.git_in(&work).args(["rev-parse", "HEAD"])),
            parent: self.tool(self.git_in(&work).args(["rev-parse", "HEAD~1"])),
            tag_object: self.tool(
                self.git_in(&work)
                    .args(["rev-parse", &format!("refs/tags/{tag}")]),
            ),
        }
    }

    /// [`World::git`] with `-C dir`.
    fn git_in(&self, dir: &Path) -> Command {
        let mut cmd = self.git();
        cmd.arg("-C").arg(dir);
        cmd
    }

    /// A fresh node root `roots/NAME`: `/etc` with the base account files
    /// and machine id, `/etc/driftless`, and `/var/lib` (so that the agent
    /// creating its cache adds nothing outside `/var/lib/driftless`).
    pub fn root(&self, name: &str) -> NodeRoot {
        let path = self.path("roots").join(name);
        fs::create_dir(&path).expect("create the root");
        let root = NodeRoot {
            path,
            home: self.home(),
        };
        for dir in ["/etc", "/etc/driftless", "/var", "/var/lib"] {
            root.mkdir(dir, 0o755);
        }
        root.write("/etc/passwd", BASE_PASSWD);
        root.write("/etc/group", BASE_GROUP);
        root.write("/etc/machine-id", format!("{MACHINE_ID}\n"));
        root
    }

    /// A fresh node root `roots/NAME` ([`World::root`]) trusting `key` as
    /// [`PRINCIPAL`] and configured with `config`.
    pub fn configured_root(&self, name: &str, key: &Key, config: &Config) -> NodeRoot {
        let root = self.root(name);
        root.trust(&[key.allowed(PRINCIPAL)]);
        root.configure(config);
        root
    }
}

/// The agent config a root gets (`/etc/driftless/agent.yaml`).
#[derive(Clone, Debug)]
pub struct Config {
    /// `source.url`.
    pub url: String,
    /// `release.tag`.
    pub tag: String,
    /// `release.commit`.
    pub commit: Option<String>,
    /// `source.ca_file` (a node path).
    pub ca_file: Option<String>,
    /// `source.token_file` (a node path).
    pub token_file: Option<String>,
    /// The `fetch:` value (YAML flow mapping).
    pub fetch: String,
    /// `source.kind` (`static` for driftless publish's files).
    pub kind: Option<String>,
}

impl Config {
    /// A config for `url` and [`TAG`] with [`FAST_FETCH`].
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            tag: TAG.to_owned(),
            commit: None,
            ca_file: None,
            token_file: None,
            fetch: FAST_FETCH.to_owned(),
            kind: None,
        }
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        // YAML double-quoted scalars accept JSON strings.
        let quote = |s: &str| serde_json::to_string(s).expect("a string serialises");
        let mut text = format!("source:\n  url: {}\n", quote(&self.url));
        if let Some(ca) = &self.ca_file {
            text.push_str(&format!("  ca_file: {}\n", quote(ca)));
        }
        if let Some(kind) = &self.kind {
            text.push_str(&format!("  kind: {}\n", quote(kind)));
        }
        if let Some(token) = &self.token_file {
            text.push_str(&format!("  token_file: {}\n", quote(token)));
        }
        text.push_str("trust:\n  allowed_signers: /etc/driftless/allowed_signers\n");
        text.push_str(&format!("release:\n  tag: {}\n", quote(&self.tag)));
        if let Some(commit) = &self.commit {
            text.push_str(&format!("  commit: {}\n", quote(commit)));
        }
        text.push_str(&format!("fetch: {}\n", self.fetch));
        text
    }
}

/// A directory standing in for a node's `/`.
#[derive(Clone, Debug)]
pub struct NodeRoot {
    /// The root on the host.
    path: PathBuf,
    /// HOME for driftless runs.
    home: PathBuf,
}

impl NodeRoot {
    /// The root on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of a node path (`/etc/x` → ROOT/etc/x).
    pub fn host(&self, node_path: &str) -> PathBuf {
        self.path.join(node_path.trim_start_matches('/'))
    }

    /// Creates a directory with `mode`.
    pub fn mkdir(&self, node_path: &str, mode: u32) {
        let host = self.host(node_path);
        fs::create_dir_all(&host).expect("create a root directory");
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// Writes a file (parents must exist), mode 0644. A file the agent
    /// locked is unlocked first.
    pub fn write(&self, node_path: &str, bytes: impl AsRef<[u8]>) {
        let host = self.host(node_path);
        if host.is_file() {
            unlock(&host);
        }
        fs::write(&host, bytes).expect("write a root file");
        fs::set_permissions(&host, fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// Reads a file of the root.
    pub fn read(&self, node_path: &str) -> Vec<u8> {
        fs::read(self.host(node_path))
            .unwrap_or_else(|e| panic!("read {node_path} in the root: {e}"))
    }

    /// Reads a file of the root as text.
    pub fn read_text(&self, node_path: &str) -> String {
        String::from_utf8(self.read(node_path)).expect("root file is UTF-8")
    }

    /// Adds Debian-like `/etc/shadow` and `/etc/gshadow` (0640).
    pub fn add_shadow_files(&self) {
        for (path, text) in [("/etc/shadow", BASE_SHADOW), ("/etc/gshadow", BASE_GSHADOW)] {
            self.write(path, text);
            fs::set_permissions(self.host(path), fs::Permissions::from_mode(0o640)).expect("chmod");
        }
    }

    /// Writes `/etc/driftless/allowed_signers`.
    pub fn trust(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        self.write("/etc/driftless/allowed_signers", text);
    }

    /// Writes `/etc/driftless/agent.yaml`.
    pub fn configure(&self, config: &Config) {
        self.write("/etc/driftless/agent.yaml", config.render());
    }

    /// The state file parsed, if there is one.
    pub fn state(&self) -> Option<serde_json::Value> {
        let path = self.host("/var/lib/driftless/state.json");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        Some(serde_json::from_str(&text).expect("state.json is JSON"))
    }

    /// Runs `driftless SUBCOMMAND --root ROOT EXTRA…` with `env` added to
    /// a cleared environment, within [`DRIFTLESS_TIMEOUT`].
    pub fn driftless(&self, subcommand: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .arg(subcommand)
            .arg("--root")
            .arg(&self.path)
            .args(extra)
            .current_dir(&self.home);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut shown: Vec<OsString> = vec![OsString::from("driftless")];
        shown.extend(cmd.get_args().map(OsString::from));
        let shown = shown
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let done = run_bounded(&mut cmd, DRIFTLESS_TIMEOUT)
            .unwrap_or_else(|e| panic!("run {shown}: {e:#}"));
        Run::from_finished(shown, done)
    }

    /// `driftless apply --root ROOT`.
    pub fn apply(&self) -> Run {
        self.driftless("apply", &[], &[])
    }

    /// `driftless status --root ROOT --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        self.driftless("status", &["--json"], &[]).reported().json()
    }

    /// `driftless plan --root ROOT --json`, parsed.
    pub fn plan_json(&self) -> serde_json::Value {
        self.driftless("plan", &["--json"], &[]).ok().json()
    }

    /// A snapshot of the whole root but the agent's own directory.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.path, &[AGENT_DIR])
    }
}

/// What kind of entry a snapshot saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// Anything else.
    Other,
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777`; 0 for links).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A file's content or a link's target (empty otherwise).
    pub data: Vec<u8>,
    /// Inode number (not compared by [`diff`]).
    pub ino: u64,
    /// Modification time in nanoseconds (not compared by [`diff`]).
    pub mtime_ns: i128,
}

/// Relative path → entry, for a whole root.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Walks `root` without following symlinks, skipping the relative paths in
/// `exclude` and everything below them. The root itself is the empty path.
pub fn snapshot(root: &Path, exclude: &[&str]) -> Snapshot {
    let mut out = Snapshot::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        if exclude.iter().any(|x| rel == Path::new(x)) {
            continue;
        }
        let host = root.join(&rel);
        let meta =
            fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("lstat {}: {e}", host.display()));
        let file_type = meta.file_type();
        let (kind, data) = if file_type.is_symlink() {
            let target = fs::read_link(&host).expect("readlink");
            (
                EntryKind::Link,
                target.into_os_string().into_encoded_bytes(),
            )
        } else if file_type.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&host)
                .expect("read_dir")
                .map(|e| e.expect("dir entry").file_name())
                .collect();
            names.sort();
            pending.extend(names.into_iter().map(|n| rel.join(n)));
            (EntryKind::Dir, Vec::new())
        } else if file_type.is_file() {
            (EntryKind::File, fs::read(&host).expect("read file"))
        } else {
            (EntryKind::Other, Vec::new())
        };
        let mode = if kind == EntryKind::Link {
            0
        } else {
            meta.mode() & 0o7777
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                data,
                ino: meta.ino(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            },
        );
    }
    out
}

/// Differences between two snapshots in path, kind, mode, owner, group and
/// content / link target, one line each (empty when equal).
pub fn diff(left: &Snapshot, right: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (path, a) in left {
        match right.get(path) {
            None => out.push(format!(
                "{}: only on the left ({:?})",
                path.display(),
                a.kind
            )),
            Some(b) => {
                let same = (a.kind, a.mode, a.uid, a.gid) == (b.kind, b.mode, b.uid, b.gid)
                    && a.data == b.data;
                if !same {
                    out.push(format!(
                        "{}: {:?} {:04o} {}:{} ({} bytes) vs {:?} {:04o} {}:{} ({} bytes)",
                        path.display(),
                        a.kind,
                        a.mode,
                        a.uid,
                        a.gid,
                        a.data.len(),
                        b.kind,
                        b.mode,
                        b.uid,
                        b.gid,
                        b.data.len()
                    ));
                }
            }
        }
    }
    for (path, b) in right {
        if !left.contains_key(path) {
            out.push(format!(
                "{}: only on the right ({:?})",
                path.display(),
                b.kind
            ));
        }
    }
    out
}

/// Paths in a snapshot whose name starts with `.driftless-tmp-`.
pub fn temp_leftovers(snapshot: &Snapshot) -> Vec<PathBuf> {
    snapshot
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".driftless-tmp-"))
        })
        .cloned()
        .collect()
}
