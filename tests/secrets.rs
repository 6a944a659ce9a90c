//! End-to-end tests of a release's secrets, as root on this machine, as CI
//! runs: the ciphertext is made by the real `age` tool (X25519 and
//! ssh-ed25519 recipients, binary and ASCII-armored), the release is signed
//! with the real `ssh-keygen` and applied by the built binary to a root
//! whose `/run` is a real tmpfs the test mounts. Every secret is a unique
//! random string, so a scan of the whole root, the logs and every output
//! finds it anywhere it leaked.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use release::{
    AGENT_DIR, Config, Key, NodeRoot, PRINCIPAL, REPO, Release, Run, TAG, Tagging, World, diff,
    snapshot, temp_leftovers,
};
use servers::{SmartHttp, unlock};

const EXIT_CONFIG: i32 = 3;
const EXIT_SPEC: i32 = 6;
const EXIT_DRIFT: i32 = 9;

const UNIT: &str = "[Unit]\nDescription=app\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";

/// The release: a plain file, two secrets on disk (one binary, one
/// armored), one on a tmpfs, and a service.
const SPEC: &str = "\
groups:
  - { name: app, system: true }
users:
  - { name: app, system: true, group: app }
directories:
  - { path: /etc/app, mode: \"0755\" }
  - { path: /run/app, mode: \"0750\", owner: app, group: app }
files:
  - { path: /etc/app/app.conf, content: \"port=8080\\n\" }
  - { path: /etc/app/db-password, secret: secrets/db-password.age, owner: app, group: app }
  - { path: /etc/app/tls.key, secret: secrets/tls.key.age, mode: \"0440\", group: app }
  - { path: /run/app/token, secret: secrets/token.age, owner: app, tmpfs: true }
units:
  - { name: app.service, source: units/app.service }
";

/// Where each secret of [`SPEC`] goes.
const TARGETS: [&str; 3] = ["/etc/app/db-password", "/etc/app/tls.key", "/run/app/token"];

/// A unique random string.
fn unique(label: &str) -> String {
    let mut bytes = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{label}-{hex}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An age identity made by `age-keygen`.
struct AgeKey {
    /// The identity file (in the world, outside any root).
    file: PathBuf,
    /// Its recipient, `age1…`.
    recipient: String,
}

fn age_keygen(world: &World, name: &str) -> AgeKey {
    let file = world.path("keys").join(format!("{name}.age"));
    world.tool(Command::new("age-keygen").arg("-o").arg(&file));
    let recipient = world.tool(Command::new("age-keygen").arg("-y").arg(&file));
    assert!(recipient.starts_with("age1"), "{recipient}");
    AgeKey { file, recipient }
}

/// Encrypts `plaintext` with the `age` tool to `recipients` (`-r`) and
/// recipient files (`-R`, an SSH public key), armored or not.
fn encrypt(
    world: &World,
    plaintext: &str,
    recipients: &[&str],
    files: &[&Path],
    armor: bool,
) -> Vec<u8> {
    let input = world.path(&unique("plain"));
    let output = world.path(&unique("sealed"));
    fs::write(&input, plaintext).expect("write the plaintext");
    let mut cmd = Command::new("age");
    if armor {
        cmd.arg("-a");
    }
    for r in recipients {
        cmd.arg("-r").arg(r);
    }
    for f in files {
        cmd.arg("-R").arg(f);
    }
    cmd.arg("-o").arg(&output).arg(&input);
    world.tool(&mut cmd);
    fs::remove_file(&input).expect("remove the plaintext");
    fs::read(&output).expect("read the ciphertext")
}

/// Unmounts `path` when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = Command::new("umount")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Mounts a fresh tmpfs on `path`: a node's `/run` at boot.
fn mount_tmpfs(path: &Path) -> Unmount {
    fs::create_dir_all(path).expect("mkdir the mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs"])
        .arg(path)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount a tmpfs on {} (needs root)",
        path.display()
    );
    Unmount(path.to_path_buf())
}

/// A reboot, as far as a tmpfs goes: its content is gone.
fn reboot(node: &mut Node) {
    let path = node.root.host("/run");
    let old = std::mem::replace(&mut node.run, Unmount(PathBuf::new()));
    drop(old);
    node.run = mount_tmpfs(&path);
}

/// One test's release: its keys, its secrets and where it is published.
struct Fixture {
    world: World,
    signer: Key,
    /// The node's age identity.
    node_key: AgeKey,
    /// The node's SSH identity (every secret is also encrypted to it).
    node_ssh: Key,
    /// The three secrets, in [`TARGETS`] order.
    secrets: [String; 3],
    /// Their ciphertexts.
    sealed: [Vec<u8>; 3],
    /// `file://` URL of the release repository.
    url: String,
}

impl Fixture {
    fn new() -> Self {
        let world = World::new();
        let signer = world.keygen("release");
        let node_key = age_keygen(&world, "node");
        let node_ssh = world.keygen("node_ssh");
        let ssh_pub = node_ssh.private.with_extension("pub");
        let secrets = [unique("db-pass"), unique("tls-key"), unique("token")];
        let sealed = [
            encrypt(
                &world,
                &secrets[0],
                &[&node_key.recipient],
                &[&ssh_pub],
                false,
            ),
            encrypt(
                &world,
                &secrets[1],
                &[&node_key.recipient],
                &[&ssh_pub],
                true,
            ),
            encrypt(
                &world,
                &secrets[2],
                &[&node_key.recipient],
                &[&ssh_pub],
                false,
            ),
        ];
        let release = Release::new(SPEC)
            .file("secrets/db-password.age", &sealed[0])
            .file("secrets/tls.key.age", &sealed[1])
            .file("secrets/token.age", &sealed[2])
            .file("units/app.service", UNIT);
        let published = world.publish(REPO, &release, TAG, Tagging::Signed(&signer));
        Self {
            url: published.file_url(),
            world,
            signer,
            node_key,
            node_ssh,
            secrets,
            sealed,
        }
    }

    /// A root configured for `url` with `secrets` (YAML text of the
    /// `secrets` section, or empty), its `/run` a tmpfs.
    fn node(&self, name: &str, url: &str, secrets: &str) -> Node {
        let root = self.world.root(name);
        root.trust(&[self.signer.allowed(PRINCIPAL)]);
        let config = Config::new(url);
        root.write(
            "/etc/driftless/agent.yaml",
            format!("{}{secrets}", config.render()),
        );
        let run = mount_tmpfs(&root.host("/run"));
        Node { root, run }
    }

    /// [`Fixture::node`] with the node's age identity in a root-only file.
    fn node_with_file(&self, name: &str) -> Node {
        let node = self.node(name, &self.url, IDENTITY_FILE_CONFIG);
        node.install_identity(&fs::read(&self.node_key.file).expect("read the identity"));
        node
    }
}

const IDENTITY_FILE: &str = "/etc/driftless/age-identity";
const IDENTITY_FILE_CONFIG: &str = "secrets:\n  identity_file: /etc/driftless/age-identity\n";

/// A root and its tmpfs.
struct Node {
    root: NodeRoot,
    run: Unmount,
}

impl Node {
    fn install_identity(&self, bytes: &[u8]) {
        self.root.write(IDENTITY_FILE, bytes);
        fs::set_permissions(
            self.root.host(IDENTITY_FILE),
            fs::Permissions::from_mode(0o600),
        )
        .expect("chmod the identity");
    }

    fn uid_of(&self, name: &str) -> u32 {
        self.root
            .read_text("/etc/passwd")
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == name).then(|| f[2].parse().expect("uid"))
            })
            .unwrap_or_else(|| panic!("no user {name}"))
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

fn immutable(path: &Path) -> bool {
    let out = Command::new("lsattr")
        .arg("-d")
        .arg(path)
        .output()
        .expect("lsattr");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .is_some_and(|flags| flags.contains('i'))
}

fn fs_type(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .expect("stat -f");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Asserts that no secret (nor its plain SHA-256) is in any output of
/// `runs` or in any file or link of the whole root but its own target.
fn assert_nothing_leaked(f: &Fixture, root: &NodeRoot, runs: &[&Run]) {
    let needles: Vec<(String, String, &str)> = f
        .secrets
        .iter()
        .zip(TARGETS)
        .flat_map(|(s, target)| [(s.clone(), target), (sha256_hex(s.as_bytes()), target)])
        .map(|(needle, target)| (needle, target.trim_start_matches('/').to_owned(), target))
        .collect();
    for run in runs {
        for (needle, _, _) in &needles {
            assert!(
                !run.stdout.contains(needle.as_str()) && !run.stderr.contains(needle.as_str()),
                "a secret or its digest leaked into output\n{}",
                run.describe()
            );
        }
    }
    for (path, entry) in snapshot(root.path(), &[]) {
        for (needle, target, _) in &needles {
            if path == Path::new(target) {
                continue;
            }
            assert!(
                !entry
                    .data
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
                "a secret or its plain digest is stored in {}",
                path.display()
            );
        }
    }
}

#[test]
fn secrets_are_applied_with_their_owner_mode_and_place_and_never_leak() {
    let f = Fixture::new();
    // Streamed over smart HTTP: the ciphertext passes through incoming/.
    let http = SmartHttp::start(&f.world.srv()).expect("start smart HTTP");
    let node = f.node("node", &http.http_url(REPO), IDENTITY_FILE_CONFIG);
    node.install_identity(&fs::read(&f.node_key.file).expect("identity"));
    let root = &node.root;
    let plan = root
        .driftless("plan", &["--all"], &[("DRIFTLESS_LOG", "debug")])
        .ok();
    assert!(
        plan.stdout.contains("secret on tmpfs"),
        "{}",
        plan.describe()
    );
    let apply = root
        .driftless("apply", &[], &[("DRIFTLESS_LOG", "debug")])
        .ok();

    let app = node.uid_of("app");
    for (target, secret) in TARGETS.iter().zip(&f.secrets) {
        assert_eq!(
            root.read_text(target),
            *secret,
            "{target} holds its plaintext"
        );
    }
    let meta = |p: &str| fs::metadata(root.host(p)).expect("stat");
    assert_eq!(
        (
            mode_of(&root.host(TARGETS[0])),
            meta(TARGETS[0]).uid(),
            meta(TARGETS[0]).gid()
        ),
        (0o400, app, app)
    );
    assert_eq!(
        (
            mode_of(&root.host(TARGETS[1])),
            meta(TARGETS[1]).uid(),
            meta(TARGETS[1]).gid()
        ),
        (0o440, 0, app)
    );
    assert_eq!(
        (mode_of(&root.host(TARGETS[2])), meta(TARGETS[2]).uid()),
        (0o400, app)
    );
    assert_eq!(
        fs_type(&root.host(TARGETS[2])),
        "tmpfs",
        "the token is in memory"
    );
    for target in TARGETS {
        assert!(immutable(&root.host(target)), "{target} is locked");
    }
    // Only the tmpfs secret has a sealed copy: its ciphertext, as released.
    let sealed_dir = root.host("/var/lib/driftless/sealed");
    let copies: Vec<PathBuf> = fs::read_dir(&sealed_dir)
        .expect("list the sealed copies")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read(&copies[0]).expect("read"), f.sealed[2]);
    assert_eq!(mode_of(&copies[0]), 0o600);
    assert_eq!(mode_of(&sealed_dir), 0o700);
    assert_eq!(
        mode_of(&root.host("/var/lib/driftless/secret-digest.key")),
        0o600
    );
    let dropin = root.read_text("/etc/systemd/system/app.service.d/50-driftless-secrets.conf");
    assert!(
        dropin.contains("Requires=driftless-secrets.service\nAfter=driftless-secrets.service"),
        "{dropin}"
    );
    // The manifest keeps keyed digests only.
    let state = root.state().expect("state");
    for (target, secret) in TARGETS.iter().zip(&f.secrets) {
        let entry = state["manifest"]
            .as_array()
            .expect("manifest")
            .iter()
            .find(|e| e["path"] == *target)
            .unwrap_or_else(|| panic!("{target} in the manifest"));
        assert!(entry.get("sha256").is_none(), "{entry}");
        let keyed = entry["secret"]["hmac_sha256"]
            .as_str()
            .expect("a keyed digest");
        assert_eq!(keyed.len(), 64);
        assert_ne!(keyed, sha256_hex(secret.as_bytes()));
        assert_eq!(
            entry["secret"]["sealed"].is_string(),
            *target == TARGETS[2],
            "{entry}"
        );
    }
    let status = root.driftless("status", &[], &[]).ok();
    let status_json = root.driftless("status", &["--json"], &[]).ok();
    let check = root.driftless("check", &[], &[]).ok();
    let check_json = root.driftless("check", &["--json"], &[]).ok();
    let again = root
        .driftless("apply", &[], &[("DRIFTLESS_LOG", "debug")])
        .ok();
    assert!(again.stdout.contains("no drift"), "{}", again.describe());
    assert_nothing_leaked(
        &f,
        root,
        &[
            &plan,
            &apply,
            &status,
            &status_json,
            &check,
            &check_json,
            &again,
        ],
    );
}

/// Applies to `node`, expects a refusal with `code` naming `needles`, and
/// that nothing of the release was written.
fn assert_refused(f: &Fixture, node: &Node, code: i32, needles: &[&str]) -> String {
    let before = snapshot(node.root.path(), &[AGENT_DIR]);
    let run = node.root.apply();
    let line = run.refused(code, needles);
    assert_eq!(
        diff(&before, &snapshot(node.root.path(), &[AGENT_DIR])),
        Vec::<String>::new(),
        "nothing of the release is written\n{}",
        run.describe()
    );
    for written in [
        "/var/lib/driftless/secret-digest.key",
        "/var/lib/driftless/sealed",
    ] {
        assert!(!node.root.host(written).exists(), "{written} was written");
    }
    assert!(
        !line.contains("AGE-SECRET-KEY") && !line.contains("PRIVATE KEY"),
        "{line}"
    );
    assert_nothing_leaked(f, &node.root, &[&run]);
    line
}

#[test]
fn a_node_without_the_identity_fails_closed_with_nothing_written() {
    let f = Fixture::new();
    let ssh_prefix = &f.node_ssh.fingerprint[..12];
    // No identity configured.
    let node = f.node("none", &f.url, "");
    let line = assert_refused(
        &f,
        &node,
        EXIT_CONFIG,
        &[
            "/etc/app/db-password",
            "secrets/db-password.age",
            "this node has no age identity",
            "X25519",
            ssh_prefix,
        ],
    );
    assert!(line.contains(&format!("{ssh_prefix}…")), "{line}");
    let status = node.root.status_json();
    assert_eq!(status["status"]["state"], "failed", "{status}");
    assert_eq!(status["status"]["stage"], "apply", "{status}");
    // Configured, but missing.
    let node = f.node("missing", &f.url, IDENTITY_FILE_CONFIG);
    assert_refused(
        &f,
        &node,
        EXIT_CONFIG,
        &["secrets.identity_file /etc/driftless/age-identity: missing"],
    );
    // Readable by other users.
    let node = f.node("exposed", &f.url, IDENTITY_FILE_CONFIG);
    node.install_identity(&fs::read(&f.node_key.file).expect("identity"));
    fs::set_permissions(
        node.root.host(IDENTITY_FILE),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    assert_refused(
        &f,
        &node,
        EXIT_CONFIG,
        &["mode 0644 lets other users at it"],
    );
}

#[test]
fn a_wrong_identity_fails_closed_naming_the_recipients() {
    let f = Fixture::new();
    let stranger = age_keygen(&f.world, "stranger");
    let node = f.node("node", &f.url, IDENTITY_FILE_CONFIG);
    node.install_identity(&fs::read(&stranger.file).expect("identity"));
    let line = assert_refused(
        &f,
        &node,
        EXIT_CONFIG,
        &[
            "/etc/app/db-password",
            "is not encrypted to this node's identity",
            &stranger.recipient,
            "X25519 (age names no key)",
            &format!("ssh-ed25519 {}…", &f.node_ssh.fingerprint[..12]),
        ],
    );
    let identity = fs::read_to_string(&stranger.file).expect("identity");
    let secret_line = identity
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY"))
        .expect("key line");
    assert!(!line.contains(secret_line), "{line}");
}

#[test]
fn the_identity_may_come_from_a_command() {
    let f = Fixture::new();
    // An SSH identity, printed by a command (as `systemd-creds decrypt` or
    // a KMS client would print it).
    let command = format!(
        "secrets:\n  identity_command: [/bin/sh, -c, 'exec cat {}']\n",
        f.node_ssh.private.display()
    );
    let node = f.node("ssh", &f.url, &command);
    let run = node.root.apply().ok();
    for (target, secret) in TARGETS.iter().zip(&f.secrets) {
        assert_eq!(node.root.read_text(target), *secret, "{target}");
    }
    assert_nothing_leaked(&f, &node.root, &[&run]);
    // A command that fails says why, in its own words.
    let failing = "secrets:\n  identity_command: [/bin/sh, -c, 'echo AccessDenied: not this role >&2; exit 3']\n";
    let node = f.node("failing", &f.url, failing);
    assert_refused(
        &f,
        &node,
        EXIT_CONFIG,
        &[
            "identity_command /bin/sh",
            "exit status: 3",
            "AccessDenied: not this role",
        ],
    );
    // A command that hangs is killed at its timeout.
    let hanging = "secrets:\n  identity_command: [/bin/sleep, '60']\n  identity_timeout: 1s\n";
    let node = f.node("hanging", &f.url, hanging);
    let started = std::time::Instant::now();
    assert_refused(&f, &node, EXIT_CONFIG, &["did not finish within 1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn drift_on_a_secret_is_reported_without_its_content() {
    let f = Fixture::new();
    let node = f.node_with_file("node");
    node.root.apply().ok();
    let target = node.root.host(TARGETS[0]);
    let forged = "X".repeat(f.secrets[0].len());
    unlock(&target);
    fs::write(&target, &forged).expect("forge the secret");
    let check = node.root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    assert!(
        check
            .stdout
            .contains("/etc/app/db-password: secret changed (hmac-sha256 "),
        "{}",
        check.describe()
    );
    assert!(!check.stdout.contains(&forged), "{}", check.describe());
    assert!(
        !check.stdout.contains(&sha256_hex(forged.as_bytes())),
        "{}",
        check.describe()
    );
    fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).expect("chmod");
    let check = node.root.driftless("check", &["--json"], &[]);
    let differences = check.json()["differences"].clone();
    let aspects: Vec<&str> = differences
        .as_array()
        .expect("differences")
        .iter()
        .filter(|d| d["path"] == TARGETS[0])
        .map(|d| d["aspect"].as_str().expect("aspect"))
        .collect();
    assert!(
        aspects.contains(&"secret") && aspects.contains(&"mode") && aspects.contains(&"lock"),
        "{differences}"
    );
    assert_nothing_leaked(&f, &node.root, &[&check]);
}

#[test]
fn a_boot_empties_the_tmpfs_and_the_secret_is_put_back_before_the_gate_opens() {
    let f = Fixture::new();
    let mut node = f.node_with_file("node");
    node.root.apply().ok();
    let token = node.root.host(TARGETS[2]);
    reboot(&mut node);
    assert!(!token.exists());
    let gate = node.root.driftless("gate", &[], &[]);
    assert_eq!(gate.code, Some(1), "{}", gate.describe());
    assert!(
        gate.stderr
            .contains("secret /run/app/token is not in place"),
        "{}",
        gate.describe()
    );
    let restore = node
        .root
        .driftless("restore", &[], &[("DRIFTLESS_LOG", "debug")])
        .ok();
    assert!(
        restore.stdout.contains("1 secrets put back"),
        "{}",
        restore.describe()
    );
    assert_eq!(node.root.read_text(TARGETS[2]), f.secrets[2]);
    let app = node.uid_of("app");
    assert_eq!(
        (mode_of(&token), fs::metadata(&token).expect("stat").uid()),
        (0o400, app)
    );
    let dir = node.root.host("/run/app");
    assert_eq!(
        (mode_of(&dir), fs::metadata(&dir).expect("stat").uid()),
        (0o750, app)
    );
    assert!(immutable(&token) && immutable(&dir), "locked again");
    node.root.driftless("gate", &[], &[]).ok();
    node.root.driftless("check", &[], &[]).ok();
    let idle = node.root.driftless("restore", &[], &[]).ok();
    assert!(
        idle.stdout.contains("0 secrets put back"),
        "{}",
        idle.describe()
    );
    // `driftless apply` at boot puts them back too, before its drift check.
    reboot(&mut node);
    let apply = node.root.apply().ok();
    assert!(apply.stdout.contains("no drift"), "{}", apply.describe());
    assert_eq!(node.root.read_text(TARGETS[2]), f.secrets[2]);
    assert_nothing_leaked(&f, &node.root, &[&gate, &restore, &apply]);
    // Without its identity, the node cannot: the gate stays closed.
    reboot(&mut node);
    fs::remove_file(node.root.host(IDENTITY_FILE)).expect("remove the identity");
    let refused = node.root.driftless("restore", &[], &[]);
    refused.refused(
        EXIT_CONFIG,
        &["cannot put back secret /run/app/token", "missing"],
    );
    assert!(!token.exists());
    assert_eq!(node.root.driftless("gate", &[], &[]).code, Some(1));
    // A sealed copy that is not the one apply wrote is refused.
    node.install_identity(&fs::read(&f.node_key.file).expect("identity"));
    let copy = fs::read_dir(node.root.host("/var/lib/driftless/sealed"))
        .expect("ls")
        .next()
        .expect("a copy")
        .expect("entry")
        .path();
    unlock(&copy);
    let other = encrypt(
        &f.world,
        &unique("other"),
        &[&f.node_key.recipient],
        &[],
        false,
    );
    fs::write(&copy, other).expect("replace the sealed copy");
    let refused = node.root.driftless("restore", &[], &[]);
    refused.refused(7, &["/run/app/token", "is not the one apply wrote"]);
    assert!(!token.exists());
}

/// Runs `subcommand` killed after each of its durable changes in turn
/// (`DRIFTLESS_TEST_KILL_AFTER`), each time finishing with a plain run,
/// until a run is no longer killed. `fresh` makes the node for one round.
fn kill_at_every_step(
    subcommand: &str,
    mut fresh: impl FnMut(u32) -> Node,
    check: impl Fn(&Node, u32),
) -> u32 {
    for n in 1..200 {
        let node = fresh(n);
        let killed = node.root.driftless(
            subcommand,
            &[],
            &[("DRIFTLESS_TEST_KILL_AFTER", &n.to_string())],
        );
        if killed.signal.is_none() {
            killed.ok();
            return n - 1;
        }
        assert_eq!(killed.signal, Some(9), "{}", killed.describe());
        node.root.driftless(subcommand, &[], &[]).ok();
        check(&node, n);
    }
    panic!("{subcommand} was still killed after 200 steps");
}

#[test]
fn killed_at_every_step_apply_and_restore_converge() {
    let f = Fixture::new();
    let reference = f.node_with_file("reference");
    reference.root.apply().ok();
    let expected = snapshot(reference.root.path(), &[AGENT_DIR]);
    let converged = |node: &Node, n: u32| {
        let got = snapshot(node.root.path(), &[AGENT_DIR]);
        assert_eq!(
            diff(&expected, &got),
            Vec::<String>::new(),
            "killed after step {n}"
        );
        let all = snapshot(node.root.path(), &[]);
        assert_eq!(
            temp_leftovers(&all),
            Vec::<PathBuf>::new(),
            "after step {n}"
        );
        node.root.driftless("check", &[], &[]).ok();
        for target in TARGETS {
            assert!(
                immutable(&node.root.host(target)),
                "{target} locked after step {n}"
            );
        }
    };
    let steps = kill_at_every_step(
        "apply",
        |n| f.node_with_file(&format!("apply-{n}")),
        |node, n| converged(node, n),
    );
    assert!(steps > 20, "apply has {steps} durable steps");
    // At boot: the token (created, written, chowned, chmodded, renamed into
    // place; see root::failpoint), then its lock, then its directory's lock.
    let restored = kill_at_every_step(
        "restore",
        |n| {
            let mut node = f.node_with_file(&format!("restore-{n}"));
            node.root.apply().ok();
            reboot(&mut node);
            node
        },
        |node, n| converged(node, n),
    );
    assert!(
        restored >= 3,
        "put back, lock the token, lock /run/app: {restored} steps"
    );
}

#[test]
fn verify_and_apply_check_every_encrypted_source() {
    let f = Fixture::new();
    let repo = f.world.srv().join(REPO);
    let allowed = f.world.path("allowed_signers");
    fs::write(&allowed, format!("{}\n", f.signer.allowed(PRINCIPAL)))
        .expect("write allowed_signers");
    let verify = |tag: &str, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
        cmd.arg("verify")
            .arg("--repo")
            .arg(&repo)
            .arg("--allowed-signers")
            .arg(&allowed);
        if json {
            cmd.arg("--json");
        }
        cmd.arg(tag);
        servers::run_bounded(&mut cmd, Duration::from_secs(60)).expect("run verify")
    };
    let good = verify(TAG, false);
    assert!(good.success(), "{}", good.describe());
    assert!(
        good.stdout.contains(
            "secrets    secrets/db-password.age: X25519 (age names no key), ssh-ed25519 "
        ),
        "{}",
        good.describe()
    );
    let json = verify(TAG, true);
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert_eq!(
        value["secrets"].as_array().map(Vec::len),
        Some(3),
        "{value}"
    );

    // A plaintext committed by mistake as a secret, and a secret only an
    // RSA key could open: both refused, by verify and by apply.
    let rsa = f.world.path("keys").join("rsa");
    f.world.tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", ""])
            .arg("-f")
            .arg(&rsa),
    );
    let rsa_only = encrypt(
        &f.world,
        &unique("rsa"),
        &[],
        &[&rsa.with_extension("pub")],
        false,
    );
    let mistake = unique("committed-by-mistake");
    for (tag, bytes, needle) in [
        (
            "v-plain",
            mistake.as_bytes().to_vec(),
            "not an age-encrypted file",
        ),
        (
            "v-rsa",
            rsa_only,
            "names no X25519 or ssh-ed25519 recipient a node could hold (it names: ssh-rsa SHA256:",
        ),
    ] {
        let release = Release::new(SPEC)
            .file("secrets/db-password.age", &bytes)
            .file("secrets/tls.key.age", &f.sealed[1])
            .file("secrets/token.age", &f.sealed[2])
            .file("units/app.service", UNIT);
        f.world
            .publish(REPO, &release, tag, Tagging::Signed(&f.signer));
        let refused = verify(tag, false);
        assert_eq!(
            refused.status.and_then(|s| s.code()),
            Some(EXIT_SPEC),
            "{}",
            refused.describe()
        );
        assert!(
            refused
                .stderr
                .contains("/etc/app/db-password (files[1]): secret secrets/db-password.age: "),
            "{}",
            refused.describe()
        );
        assert!(refused.stderr.contains(needle), "{}", refused.describe());
        assert!(!refused.stderr.contains(&mistake), "{}", refused.describe());
        let node = f.node_with_file(&format!("node-{tag}"));
        let mut config = Config::new(&f.url);
        config.tag = tag.to_owned();
        node.root.write(
            "/etc/driftless/agent.yaml",
            format!("{}{IDENTITY_FILE_CONFIG}", config.render()),
        );
        let line = assert_refused(&f, &node, EXIT_SPEC, &["secrets/db-password.age", needle]);
        assert!(!line.contains(&mistake), "{line}");
    }
}
