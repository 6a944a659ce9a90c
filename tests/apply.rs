//! End-to-end tests of `driftless apply` (first boot): the built binary
//! fetches a release made at run time with the real `git` and `ssh-keygen`
//! (an SSH-signed tag in a bare repository) over git://, http://, https:// or
//! file://, verifies it, and makes a node root exactly what its spec says.
//!
//! Every test has its own temporary directory, keys, repositories, roots and
//! servers (on ephemeral 127.0.0.1 ports), so tests run in parallel. Every
//! driftless run has a time limit, and the fault tests assert their wall
//! time. Tests run as root (as CI does), so owners are asserted too.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use release::{
    AGENT_DIR, BASE_GROUP, BASE_PASSWD, Config, EntryKind, Key, MACHINE_ID, NodeRoot, PRINCIPAL,
    Published, REPO, Release, Run, Snapshot, TAG, Tagging, World, diff, snapshot, temp_leftovers,
};
use servers::{Fault, FaultProxy, GitDaemon, SmartHttp, closed_port_url, noise, unlock};

/// Exit code: a configuration or trust file is missing or invalid.
const EXIT_CONFIG: i32 = 3;
/// Exit code: the release could not be fetched.
const EXIT_FETCH: i32 = 4;
/// Exit code: a signature or pin was refused.
const EXIT_VERIFY: i32 = 5;
/// Exit code: the node spec is invalid.
const EXIT_SPEC: i32 = 6;
/// Exit code: writing the node failed, or it belongs to another release.
const EXIT_APPLY: i32 = 7;
/// Exit code: a health check failed.
const EXIT_HEALTH: i32 = 8;
/// Exit code: the node drifted from its manifest.
const EXIT_DRIFT: i32 = 9;
/// `driftless gate`: the release's services may not start (systemd skips a
/// unit whose ExecCondition exits 1..=254).
const GATE_CLOSED: i32 = 1;

/// `fetch.deadline` of [`release::FAST_FETCH`].
const DEADLINE: Duration = Duration::from_secs(8);
/// `fetch.io_timeout` of [`release::FAST_FETCH`].
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of a deadline for process start, the last attempt and a
/// loaded CI machine.
const MARGIN: Duration = Duration::from_secs(6);
/// Upper bound of any fault test's driftless run.
const FAULT_LIMIT: Duration = Duration::from_secs(30);
/// Where the fault tests cut or stall the server's stream: well inside the
/// pack of [`payload_release`].
const FAULT_AT: u64 = 100_000;

// ---------------------------------------------------------------------------
// The rich release: accounts, directories, files, links, units
// ---------------------------------------------------------------------------

/// The node spec of [`rich_release`].
const RICH_SPEC: &str = r#"# The release most tests apply.
groups:
  - { name: app, system: true }
  - { name: ops }
users:
  - { name: app, system: true, groups: [adm] }
  - name: deploy
    home: /home/deploy
    shell: /bin/bash
    groups: [ops, app]
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb8zXl0ZlR0bW9ja2tleWZvcnRlc3RzMDEyMzQ1Njc4 deploy@example.com"]
directories:
  # Deliberately deeper first: parents must still be made first.
  - { path: /etc/app/conf.d, mode: "0750", group: app }
  - { path: /etc/app, mode: "0755" }
  - { path: /var/lib/app, mode: "0750", owner: app, group: app }
  - { path: /srv/www, mode: "2775", owner: deploy, group: ops }
files:
  - { path: /etc/app/app.conf, source: files/app.conf, mode: "0640", owner: app, group: app }
  - { path: /etc/app/conf.d/10-db.conf, source: files/conf.d/10-db.conf, mode: "0640", group: app }
  - { path: /etc/app/conf.d/20-cache.conf, source: files/conf.d/20-cache.conf, mode: "0640", group: app }
  - { path: /usr/local/bin/app-healthcheck, source: files/bin/app-healthcheck, mode: "0755" }
  - { path: /etc/app/binary.dat, source: files/binary.dat, mode: "0600", owner: app }
  - { path: /var/lib/app/seed.json, source: files/seed.json, owner: app, group: app }
  - { path: /srv/www/index.html, source: files/www/index.html, mode: "0664", owner: deploy, group: ops }
  - { path: "/etc/app/name with spaces.txt", content: "spaces are fine\n" }
  - { path: /etc/app/empty, content: "" }
  - { path: /etc/motd, content: "This node is managed by driftless. Do not edit; replace it.\n" }
  - { path: /etc/sudoers.d/deploy, content: "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart app.service\n", mode: "0440" }
links:
  - { path: /etc/app/current, target: /etc/app/app.conf }
  - { path: /etc/app/db.conf, target: conf.d/10-db.conf }
  - { path: /usr/local/bin/app-check, target: app-healthcheck }
units:
  - { name: app.service, source: units/app.service }
  - { name: telnet.socket, masked: true }
health:
  - exec: [/bin/true]
    timeout: 10s
"#;

/// The unit file of [`rich_release`].
const APP_SERVICE: &str = "[Unit]\nDescription=Example app\n\n[Service]\n\
    ExecStart=/usr/local/bin/app\nUser=app\n\n[Install]\nWantedBy=multi-user.target\n";

/// The drop-in every service of a release gets: systemd starts the service
/// only when `driftless gate` says the node's release was applied. Written
/// out here, not taken from the agent, so a change to it is a visible one.
const GATE_DROPIN: &str = "\
# Written by driftless: start this service only on a node whose release was
# applied. `driftless gate` exits 0 when /var/lib/driftless/state.json records
# the pinned release as applied (or while driftless apply starts the units),
# and 1 otherwise, which makes systemd skip the service without failing it.
[Service]
ExecCondition=+/usr/bin/driftless gate
";

/// `/etc/passwd` after [`RICH_SPEC`] on a root without shadow files: the
/// system user gets 999 (its group's id), the normal user the first free
/// id above the `ops` group's 1000.
fn rich_passwd() -> String {
    format!(
        "{BASE_PASSWD}app:!:999:999::/nonexistent:/usr/sbin/nologin\n\
         deploy:*:1001:1001::/home/deploy:/bin/bash\n"
    )
}

/// `/etc/group` after [`RICH_SPEC`] on a root without shadow files.
fn rich_group() -> String {
    let base = BASE_GROUP.replace("adm:x:4:\n", "adm:x:4:app\n");
    format!("{base}app:!:999:deploy\nops:!:1000:deploy\ndeploy:!:1001:\n")
}

/// The release tree applied by most tests.
fn rich_release() -> Release {
    let mut binary = noise(4096, 7);
    binary[100..116].fill(0);
    Release::new(RICH_SPEC)
        .file(
            "files/app.conf",
            "[server]\nlisten = 127.0.0.1:8080\nworkers = 4\n",
        )
        .file(
            "files/conf.d/10-db.conf",
            "[db]\nurl = postgres://db.internal/app\n",
        )
        .file("files/conf.d/20-cache.conf", "[cache]\nsize = 64M\n")
        .file(
            "files/bin/app-healthcheck",
            "#!/bin/sh\nexec curl -fsS http://127.0.0.1:8080/healthz\n",
        )
        .file("files/binary.dat", binary)
        .file("files/seed.json", "{\"seed\": [1, 2, 3]}\n")
        .file("files/www/index.html", "<!doctype html>\n<p>hello</p>\n")
        .file("files/unused.txt", "in the release but not in the spec\n")
        .file("units/app.service", APP_SERVICE)
}

/// Where an expected file's bytes come from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A file of the release tree.
    Tree(&'static str),
    /// Literal bytes.
    Inline(&'static str),
}

/// One entry [`RICH_SPEC`] must produce.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// A directory: path, mode, owner, group.
    Dir(&'static str, u32, &'static str, &'static str),
    /// A file: path, content, mode, owner, group.
    File(&'static str, Source, u32, &'static str, &'static str),
    /// A symlink: path, target.
    Link(&'static str, &'static str),
}

impl Want {
    /// The node path.
    fn path(&self) -> &'static str {
        match self {
            Want::Dir(p, ..) | Want::File(p, ..) | Want::Link(p, ..) => p,
        }
    }
}

/// Every managed entry of [`RICH_SPEC`] (the manifest), in no particular order.
fn rich_wants() -> Vec<Want> {
    use Source::{Inline, Tree};
    use Want::{Dir, File, Link};
    vec![
        Dir("/etc/app", 0o755, "root", "root"),
        Dir("/etc/app/conf.d", 0o750, "root", "app"),
        Dir("/var/lib/app", 0o750, "app", "app"),
        Dir("/srv/www", 0o2775, "deploy", "ops"),
        Dir("/home/deploy", 0o750, "deploy", "deploy"),
        Dir("/home/deploy/.ssh", 0o700, "deploy", "deploy"),
        File(
            "/home/deploy/.ssh/authorized_keys",
            Inline(concat!(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb8zXl0ZlR0bW9ja2tleWZvcnRlc3RzMDEyMzQ1Njc4 deploy@example.com",
                "\n"
            )),
            0o600,
            "deploy",
            "deploy",
        ),
        File(
            "/etc/app/app.conf",
            Tree("files/app.conf"),
            0o640,
            "app",
            "app",
        ),
        File(
            "/etc/app/conf.d/10-db.conf",
            Tree("files/conf.d/10-db.conf"),
            0o640,
            "root",
            "app",
        ),
        File(
            "/etc/app/conf.d/20-cache.conf",
            Tree("files/conf.d/20-cache.conf"),
            0o640,
            "root",
            "app",
        ),
        File(
            "/usr/local/bin/app-healthcheck",
            Tree("files/bin/app-healthcheck"),
            0o755,
            "root",
            "root",
        ),
        File(
            "/etc/app/binary.dat",
            Tree("files/binary.dat"),
            0o600,
            "app",
            "root",
        ),
        File(
            "/var/lib/app/seed.json",
            Tree("files/seed.json"),
            0o644,
            "app",
            "app",
        ),
        File(
            "/srv/www/index.html",
            Tree("files/www/index.html"),
            0o664,
            "deploy",
            "ops",
        ),
        File(
            "/etc/app/name with spaces.txt",
            Inline("spaces are fine\n"),
            0o644,
            "root",
            "root",
        ),
        File("/etc/app/empty", Inline(""), 0o644, "root", "root"),
        File(
            "/etc/motd",
            Inline("This node is managed by driftless. Do not edit; replace it.\n"),
            0o644,
            "root",
            "root",
        ),
        File(
            "/etc/sudoers.d/deploy",
            Inline("deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart app.service\n"),
            0o440,
            "root",
            "root",
        ),
        File(
            "/etc/systemd/system/app.service",
            Tree("units/app.service"),
            0o644,
            "root",
            "root",
        ),
        File(
            "/etc/systemd/system/app.service.d/50-driftless-gate.conf",
            Inline(GATE_DROPIN),
            0o644,
            "root",
            "root",
        ),
        Link("/etc/app/current", "/etc/app/app.conf"),
        Link("/etc/app/db.conf", "conf.d/10-db.conf"),
        Link("/usr/local/bin/app-check", "app-healthcheck"),
        Link(
            "/etc/systemd/system/multi-user.target.wants/app.service",
            "/etc/systemd/system/app.service",
        ),
        Link("/etc/systemd/system/telnet.socket", "/dev/null"),
        // Holds the gate: managed, locked and exclusive, so no drop-in can join it.
        Dir("/etc/systemd/system/app.service.d", 0o755, "root", "root"),
    ]
}

/// Parents the agent must create as root 0755 (nobody declared them).
const IMPLICIT_DIRS: &[&str] = &[
    "/home",
    "/srv",
    "/usr",
    "/usr/local",
    "/usr/local/bin",
    "/etc/sudoers.d",
    "/etc/systemd",
    "/etc/systemd/system",
    "/etc/systemd/system/multi-user.target.wants",
];

/// Steps applying [`RICH_SPEC`] to a fresh root takes: every managed entry,
/// every missing parent, plus `/etc/group` and `/etc/passwd`.
fn rich_changes() -> usize {
    rich_wants().len() + IMPLICIT_DIRS.len() + 2
}

/// A world with the trusted key and [`rich_release`] published as [`TAG`].
struct Rich {
    /// The world.
    world: World,
    /// The trusted release key.
    key: Key,
    /// The release tree.
    release: Release,
    /// What was published.
    published: Published,
}

impl Rich {
    /// Makes the world and publishes the release.
    fn new() -> Self {
        let world = World::new();
        let key = world.keygen("release");
        let release = rich_release();
        let published = world.publish(REPO, &release, TAG, Tagging::Signed(&key));
        Self {
            world,
            key,
            release,
            published,
        }
    }

    /// A fresh root trusting the key, configured with `config`.
    fn root(&self, name: &str, config: &Config) -> NodeRoot {
        self.world.configured_root(name, &self.key, config)
    }

    /// A fresh root fetching over file://.
    fn file_root(&self, name: &str) -> NodeRoot {
        self.root(name, &Config::new(&self.published.file_url()))
    }
}

/// Looks up `name`'s id (field 2) in passwd or group text.
fn id_of(table: &str, name: &str) -> u32 {
    table
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .unwrap_or_else(|| panic!("{name} is not in\n{table}"))[2]
        .parse()
        .expect("numeric id")
}

/// The stdout line `applied release TAG (commit C), N changes`: N.
fn changes_of(run: &Run) -> usize {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("applied release "))
        .unwrap_or_else(|| panic!("no `applied release` line\n{}", run.describe()));
    line.rsplit_once(", ")
        .and_then(|(_, n)| n.strip_suffix(" changes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the change count of {line:?}"))
}

/// Asserts a successful first apply of the rich release and its output.
fn assert_first_apply(rich: &Rich, run: &Run) {
    let p = &rich.published;
    assert!(
        run.stdout.contains(&format!(
            "applied release {TAG} (commit {}), {} changes",
            p.commit,
            rich_changes()
        )),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .contains(&format!("signed by {PRINCIPAL} ({})", rich.key.fingerprint)),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .contains("units were enabled offline, not started"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.non_log_lines(),
        Vec::<&str>::new(),
        "a good apply writes only log lines on stderr\n{}",
        run.describe()
    );
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("WARN") || l.trim_start().starts_with("ERROR")),
        "a good apply has nothing to warn about\n{}",
        run.describe()
    );
}

/// Asserts that `root` is exactly the base root plus [`RICH_SPEC`]: every
/// entry byte for byte with mode and owners, the account files line for
/// line, missing parents root 0755, and nothing else (no temporary files).
fn assert_rich_tree(root: &NodeRoot, release: &Release, base: &Snapshot) {
    let passwd = root.read_text("/etc/passwd");
    let group = root.read_text("/etc/group");
    assert_eq!(passwd, rich_passwd(), "/etc/passwd");
    assert_eq!(group, rich_group(), "/etc/group");
    let snap = root.snapshot();
    let get = |path: &str| {
        snap.get(Path::new(path.trim_start_matches('/')))
            .unwrap_or_else(|| panic!("{path} is missing from the root"))
    };
    for want in rich_wants() {
        let entry = get(want.path());
        match want {
            Want::Dir(path, mode, owner, grp) => {
                assert_eq!(entry.kind, EntryKind::Dir, "{path}");
                assert_eq!(entry.mode, mode, "{path}: mode {:04o}", entry.mode);
                assert_eq!(entry.uid, id_of(&passwd, owner), "{path}: owner");
                assert_eq!(entry.gid, id_of(&group, grp), "{path}: group");
            }
            Want::File(path, source, mode, owner, grp) => {
                assert_eq!(entry.kind, EntryKind::File, "{path}");
                let expected = match source {
                    Source::Tree(tree_path) => release.bytes(tree_path),
                    Source::Inline(text) => text.as_bytes(),
                };
                assert!(entry.data == expected, "{path}: content differs");
                assert_eq!(entry.mode, mode, "{path}: mode {:04o}", entry.mode);
                assert_eq!(entry.uid, id_of(&passwd, owner), "{path}: owner");
                assert_eq!(entry.gid, id_of(&group, grp), "{path}: group");
            }
            Want::Link(path, target) => {
                assert_eq!(entry.kind, EntryKind::Link, "{path}");
                assert_eq!(
                    String::from_utf8_lossy(&entry.data),
                    target,
                    "{path}: target"
                );
                assert_eq!((entry.uid, entry.gid), (0, 0), "{path}: link owner");
            }
        }
    }
    for dir in IMPLICIT_DIRS {
        let entry = get(dir);
        assert_eq!(
            (entry.kind, entry.mode, entry.uid, entry.gid),
            (EntryKind::Dir, 0o755, 0, 0),
            "{dir}: a missing parent is made root 0755"
        );
    }
    // Nothing else: the root as it was, the spec's entries and their parents.
    let mut expected: BTreeSet<PathBuf> = base.keys().cloned().collect();
    for path in rich_wants()
        .iter()
        .map(Want::path)
        .chain(IMPLICIT_DIRS.iter().copied())
    {
        expected.insert(PathBuf::from(path.trim_start_matches('/')));
    }
    let found: BTreeSet<PathBuf> = snap.keys().cloned().collect();
    assert_eq!(
        found.symmetric_difference(&expected).collect::<Vec<_>>(),
        Vec::<&PathBuf>::new(),
        "the root holds exactly the base files and the spec's entries"
    );
}

/// Asserts `status --json` reports the rich release as applied.
fn assert_status_applied(rich: &Rich, root: &NodeRoot) {
    let status = root.status_json();
    assert_eq!(status["status"]["state"], "applied", "{status}");
    // The lifecycle, read from the records: locked unless baked unlocked.
    let locked = status["manifest"]
        .as_array()
        .is_some_and(|m| m.iter().all(|e| e["lock"]["status"] != "pending"));
    let phase = if locked { "locked" } else { "healthy" };
    assert_eq!(status["phase"], phase, "{status}");
    let r = &status["release"];
    assert_eq!(r["tag"], TAG, "{status}");
    assert_eq!(r["commit"], rich.published.commit.as_str(), "{status}");
    assert_eq!(
        r["tag_object"],
        rich.published.tag_object.as_str(),
        "{status}"
    );
    assert_eq!(r["signer"], PRINCIPAL, "{status}");
    assert_eq!(r["fingerprint"], rich.key.fingerprint.as_str(), "{status}");
    assert_eq!(status["node_id"], MACHINE_ID, "{status}");
    let manifest = status["manifest"].as_array().expect("manifest is a list");
    let paths: BTreeSet<&str> = manifest
        .iter()
        .map(|e| e["path"].as_str().expect("manifest path"))
        .collect();
    for want in rich_wants() {
        assert!(
            paths.contains(want.path()),
            "the manifest lacks {}: {status}",
            want.path()
        );
    }
    let wanted: BTreeSet<&str> = rich_wants().iter().map(Want::path).collect();
    for extra in paths.difference(&wanted) {
        // Besides the release's entries, only the agent's own files (its
        // config and trust, the release objects kept to re-verify the
        // record), the account files, recorded to be locked, and the
        // parents apply made, recorded as such (not locked: other software
        // may add to them).
        let entry = manifest
            .iter()
            .find(|e| e["path"] == *extra)
            .expect("listed");
        let implicit = IMPLICIT_DIRS.contains(extra)
            && entry["origin"]
                .as_str()
                .is_some_and(|o| o.starts_with("implicit parent of /"))
            && entry["kind"] == "directory"
            && (&entry["mode"], &entry["uid"], &entry["gid"])
                == (&"0755".into(), &0.into(), &0.into())
            && entry["lock"]["status"] == "exempt";
        assert!(
            extra.starts_with("/etc/driftless/")
                || *extra == "/var/lib/driftless/release.objects"
                || ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"].contains(extra)
                || implicit,
            "unexpected manifest entry {extra}: {status}"
        );
    }
}

/// Asserts the manifest records every parent the first apply made.
fn assert_parents_recorded(root: &NodeRoot) {
    let status = root.status_json();
    let manifest = status["manifest"].as_array().expect("manifest is a list");
    for dir in IMPLICIT_DIRS {
        assert!(
            manifest.iter().any(|e| e["path"] == *dir),
            "the manifest lacks the parent {dir} apply made: {status}"
        );
    }
}

/// Applies the rich release fetched from `url` (trusting the CA at `ca`
/// for HTTPS) and checks everything.
fn apply_over(rich: &Rich, url: &str, ca: Option<&Path>) -> NodeRoot {
    apply_with(rich, Config::new(url), ca)
}

/// [`apply_over`] with `config` (its URL the source).
fn apply_with(rich: &Rich, mut config: Config, ca: Option<&Path>) -> NodeRoot {
    if ca.is_some() {
        config.ca_file = Some("/etc/driftless/ca.pem".to_owned());
    }
    let root = rich.root("node", &config);
    if let Some(ca) = ca {
        root.write("/etc/driftless/ca.pem", std::fs::read(ca).expect("read CA"));
    }
    let base = root.snapshot();
    let run = root.apply().ok();
    assert_first_apply(rich, &run);
    assert_rich_tree(&root, &rich.release, &base);
    assert_status_applied(rich, &root);
    assert_parents_recorded(&root);
    root
}

/// Asserts that the release came by a streamed protocol v2 fetch: one
/// `ls-refs` and one `fetch` request (and one more `ls-refs`, of the
/// channel branch, whose tip a node built from a fixed tag records as its
/// channel floor), no cache left behind (the objects were written
/// straight to the files), and no staging directory either.
fn assert_streamed(root: &NodeRoot, log: &[servers::AccessEntry]) {
    let requests: Vec<(&str, &str, Option<&str>)> = log
        .iter()
        .map(|e| (e.method.as_str(), e.uri.as_str(), e.git_protocol.as_deref()))
        .collect();
    assert!(
        log.len() == 3
            && log.iter().all(|e| e.method == "POST"
                && e.uri.ends_with("/git-upload-pack")
                && e.git_protocol.as_deref() == Some("version=2")
                && e.status == 200),
        "three v2 requests, ls-refs and fetch, and the channel's ls-refs: {requests:?}"
    );
    for leftover in [
        "/var/lib/driftless/cache.git",
        "/var/lib/driftless/incoming",
    ] {
        assert!(
            !root.host(leftover).exists(),
            "{leftover} is left after a streamed apply"
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Transports
// ---------------------------------------------------------------------------

#[test]
fn applies_over_git_daemon() {
    let rich = Rich::new();
    let daemon = GitDaemon::start(&rich.world.srv()).expect("start git daemon");
    apply_over(&rich, &daemon.url(REPO), None);
    assert!(daemon.connections() > 0, "the release came from the daemon");
}

#[test]
fn applies_over_smart_http() {
    let rich = Rich::new();
    let http = SmartHttp::start(&rich.world.srv()).expect("start smart HTTP");
    let root = apply_over(&rich, &http.http_url(REPO), None);
    let log = http
        .wait_for_requests(2, Duration::from_secs(5))
        .expect("access log");
    assert_streamed(&root, &log);
}

#[test]
fn a_server_without_protocol_v2_is_refused_unless_the_node_allows_libgit2() {
    let rich = Rich::new();
    let http = SmartHttp::start(&rich.world.srv()).expect("start smart HTTP");
    // By default: whether a server speaks v2 is its own answer, and a
    // hostile one must not choose the fetch without the streamed bounds.
    let refusing = rich.root("refusing", &Config::new(&http.v0_url(REPO)));
    let before = refusing.snapshot();
    let run = refusing.apply();
    run.refused(
        EXIT_FETCH,
        &[
            "does not speak git protocol v2",
            "fetch.require_v2: false",
            "(not retried)",
        ],
    );
    assert_eq!(
        release::diff(&before, &refusing.snapshot()),
        Vec::<String>::new(),
        "nothing written"
    );
    let mut config = Config::new(&http.v0_url(REPO));
    config.fetch = release::FAST_FETCH.replace('}', ", require_v2: false}");
    let root = apply_with(&rich, config, None);
    let log = http.access_log().expect("access log");
    assert!(
        log.iter().any(|e| e.method == "GET"
            && e.uri.contains("/info/refs?service=git-upload-pack")
            && e.git_protocol.is_none()),
        "libgit2 fetched it after the v2 attempt: {log:?}"
    );
    assert!(
        root.host("/var/lib/driftless/cache.git/objects/pack")
            .is_dir()
            && !root.host("/var/lib/driftless/incoming").exists(),
        "libgit2 fetched into the cache"
    );
}

#[test]
fn applies_over_smart_https_with_ca_file() {
    let rich = Rich::new();
    let http = SmartHttp::start(&rich.world.srv()).expect("start smart HTTPS");
    let root = apply_over(&rich, &http.https_url(REPO), Some(http.ca_cert_path()));
    let log = http
        .wait_for_requests(2, Duration::from_secs(5))
        .expect("access log");
    assert!(
        log.iter().all(|e| e.scheme == "https"),
        "the release came over HTTPS: {log:?}"
    );
    assert_streamed(&root, &log);
}

#[test]
fn https_without_the_ca_is_refused() {
    // The control for the test above: the server's CA is what makes HTTPS
    // work, not a verifier that accepts anything. A certificate refusal is
    // final: retrying cannot mend it, so it fails at once.
    let rich = Rich::new();
    let http = SmartHttp::start(&rich.world.srv()).expect("start smart HTTPS");
    let root = rich.root("node", &Config::new(&http.https_url(REPO)));
    let before = root.snapshot();
    let run = root.apply();
    run.refused(
        EXIT_FETCH,
        &[&http.https_url(REPO), "certificate", "not retried"],
    );
    assert!(
        run.elapsed < std::time::Duration::from_secs(5),
        "{:?}",
        run.elapsed
    );
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
}

#[test]
fn applies_over_file_url() {
    let rich = Rich::new();
    apply_over(&rich, &rich.published.file_url(), None);
}

// ---------------------------------------------------------------------------
// 2. Idempotency, drift and pinning
// ---------------------------------------------------------------------------

/// Asserts two snapshots agree on everything, inode and mtime included.
fn assert_untouched(before: &Snapshot, after: &Snapshot, what: &str) {
    assert_eq!(diff(before, after), Vec::<String>::new(), "{what}");
    for (path, a) in before {
        let b = &after[path];
        assert_eq!(
            (a.ino, a.mtime_ns),
            (b.ino, b.mtime_ns),
            "{what}: {} was rewritten",
            path.display()
        );
    }
}

#[test]
fn second_apply_only_checks_and_changes_nothing() {
    let rich = Rich::new();
    let root = rich.file_root("node");
    assert_first_apply(&rich, &root.apply().ok());
    // All but the note of the last verification against the signed
    // release, which every boot's check writes for `driftless status` (and
    // so the time of the directory it is renamed into).
    let whole = || {
        let mut all = snapshot(root.path(), &["var/lib/driftless/verified.json"]);
        all.remove(std::path::Path::new("var/lib/driftless"));
        all
    };
    let before = whole();

    // Take the repository away: a second apply must not fetch at all.
    std::fs::rename(&rich.published.bare, rich.world.path("srv/moved.git"))
        .expect("move the repository away");
    let run = root.apply().ok();
    assert!(
        run.stdout.contains(&format!(
            "release {TAG} (commit {}) was already applied; checked the node against its manifest",
            rich.published.commit
        )),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout.lines().any(|l| l == "no drift"),
        "{}",
        run.describe()
    );
    // Not a byte, inode or timestamp changed anywhere, state and cache included.
    assert_untouched(&before, &whole(), "second apply");

    // The plan, from the cache alone, has nothing to do.
    let plan = root.plan_json();
    assert_eq!(plan["changes"], 0, "{plan}");
    assert_eq!(plan["commit"], rich.published.commit.as_str(), "{plan}");
    let all = root
        .driftless("plan", &["--json", "--all"], &[])
        .ok()
        .json();
    let steps = all["steps"].as_array().expect("steps");
    assert_eq!(
        steps.len(),
        rich_wants().len() + IMPLICIT_DIRS.len(),
        "{all}"
    );
    assert!(
        steps.iter().all(|s| s["change"]["change"] == "unchanged"),
        "{all}"
    );
    let text = root.driftless("plan", &[], &[]).ok();
    assert!(
        text.stdout.lines().any(|l| l == "0 changes"),
        "{}",
        text.describe()
    );
    assert_untouched(&before, &whole(), "plan");

    // Without state the node is applied again: zero changes, nothing rewritten.
    let outside = root.snapshot();
    let state_file = root.host("/var/lib/driftless/state.json");
    unlock(&state_file);
    std::fs::remove_file(&state_file).expect("remove state");
    let run = root.apply().ok();
    assert!(
        run.stdout.contains(&format!(
            "applied release {TAG} (commit {}), 0 changes",
            rich.published.commit
        )),
        "{}",
        run.describe()
    );
    assert_untouched(&outside, &root.snapshot(), "re-apply without state");
    assert_status_applied(&rich, &root);
}

#[test]
fn drift_is_reported_by_the_check_and_left_alone() {
    let rich = Rich::new();
    let root = rich.file_root("node");
    root.apply().ok();
    // A root user set on editing the node clears the lock (if any) first.
    let touched = [
        "/etc/motd",
        "/etc/app/app.conf",
        "/etc/app",
        "/srv/www/index.html",
    ];
    for path in touched {
        unlock(&root.host(path));
    }
    std::fs::write(root.host("/etc/motd"), "edited by hand\n").expect("edit motd");
    std::fs::set_permissions(
        root.host("/etc/app/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod app.conf");
    std::fs::remove_file(root.host("/etc/app/current")).expect("remove link");
    std::os::unix::fs::lchown(root.host("/srv/www/index.html"), Some(0), None)
        .expect("chown index.html");
    let before = root.snapshot();

    let run = root.apply();
    assert_eq!(run.code, Some(EXIT_DRIFT), "{}", run.describe());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].contains("was already applied; checked the node against its manifest"),
        "{}",
        run.describe()
    );
    // Cleared locks may be reported too; everything else must be expected.
    let differences: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .filter(|l| {
            !touched
                .iter()
                .any(|p| l.starts_with(&format!("{p}: lock removed")))
        })
        .collect();
    let expected = [
        "/etc/motd: content changed",
        "/etc/app/app.conf: mode changed (0644, expected 0640)",
        "/etc/app/current: missing",
        "/srv/www/index.html: owner changed (0, expected 1001)",
    ];
    assert_eq!(
        differences.len(),
        expected.len(),
        "one line per difference\n{}",
        run.describe()
    );
    for want in expected {
        assert!(
            differences.iter().any(|l| l.starts_with(want)),
            "no line starting {want:?}\n{}",
            run.describe()
        );
    }
    // A check repairs nothing: a drifted node is replaced, not patched.
    assert_untouched(&before, &root.snapshot(), "drift check");
}

#[test]
fn a_node_is_never_upgraded_in_place() {
    let rich = Rich::new();
    let root = rich.file_root("node");
    root.apply().ok();
    let next = Release::new("files:\n  - { path: /etc/motd, content: \"v2\\n\" }\n");
    rich.world
        .publish(REPO, &next, "v2.0.0", Tagging::Signed(&rich.key));
    let mut config = Config::new(&rich.published.file_url());
    config.tag = "v2.0.0".to_owned();
    root.configure(&config);
    let before = root.snapshot();
    let run = root.apply();
    run.refused(EXIT_APPLY, &[TAG, "v2.0.0", "replace it"]);
    assert_untouched(&before, &root.snapshot(), "refused upgrade");
    assert_status_applied(&rich, &root);
}

// ---------------------------------------------------------------------------
// 3. Pre-seeded cache
// ---------------------------------------------------------------------------

#[test]
fn preseeded_cache_needs_no_network() {
    let rich = Rich::new();
    let daemon = GitDaemon::start(&rich.world.srv()).expect("start git daemon");
    let port = daemon.port();
    let root = rich.root("image", &Config::new(&daemon.url(REPO)));
    let before = root.snapshot();
    let run = root.driftless("fetch", &[], &[]).ok();
    assert!(
        run.stdout.contains(&format!(
            "release {TAG} (commit {}) is in the cache, verified: signed by {PRINCIPAL} ({})",
            rich.published.commit, rich.key.fingerprint
        )),
        "{}",
        run.describe()
    );
    assert!(daemon.connections() > 0, "fetch used the daemon");
    assert_eq!(
        diff(&before, &root.snapshot()),
        Vec::<String>::new(),
        "fetch touches nothing but the cache"
    );
    assert!(root.host("/var/lib/driftless/cache.git").is_dir());
    assert_eq!(root.status_json()["status"], serde_json::Value::Null);
    assert_eq!(root.status_json()["phase"], "fresh");

    drop(daemon);
    assert!(
        TcpStream::connect_timeout(&servers::localhost(port), Duration::from_secs(2)).is_err(),
        "the server is gone"
    );
    let run = root.apply().ok();
    assert_first_apply(&rich, &run);
    assert_rich_tree(&root, &rich.release, &before);
    assert_status_applied(&rich, &root);
}

// ---------------------------------------------------------------------------
// 4. Resumability
// ---------------------------------------------------------------------------

/// The most changes to the tree one apply of a test release makes.
const MAX_CHANGES: u64 = 1000;

/// The manifest `status --json` shows.
fn manifest_of(root: &NodeRoot) -> serde_json::Value {
    root.status_json()["manifest"].clone()
}

/// Kills apply right after one change to the tree for n = 1, 2, … until a
/// run ends on its own: the n-th change of every kind (`kind` empty: every
/// mkdir, create, write, chown, chmod, rename, unlink, lock …), or of one
/// kind. Finishes each killed run with a second one and asserts that the
/// root then equals `expected` (every entry byte for byte, mode for mode,
/// owner for owner), holds no temporary entry, and records `manifest`.
/// Returns how many runs were killed.
fn kill_at_every_change(
    make_root: &dyn Fn(&str) -> NodeRoot,
    kind: &str,
    expected: &Snapshot,
    manifest: &serde_json::Value,
    total: usize,
) -> u64 {
    for n in 1..=MAX_CHANGES {
        let hook = if kind.is_empty() {
            n.to_string()
        } else {
            format!("{kind}:{n}")
        };
        let root = make_root(&format!("killed-{}", hook.replace(':', "-")));
        let killed = root.driftless("apply", &[], &[("DRIFTLESS_TEST_KILL_AFTER", &hook)]);
        if killed.signal.is_none() {
            // Fewer changes than n: the run ended on its own, and is whole.
            killed.ok();
            assert_eq!(diff(expected, &root.snapshot()), Vec::<String>::new());
            assert!(n > 1, "no change at all was made");
            return n - 1;
        }
        assert_eq!(
            killed.signal,
            Some(9),
            "apply must be killed after change {hook}\n{}",
            killed.describe()
        );
        let finished = root.apply().ok();
        let redone = finished
            .stdout
            .lines()
            .any(|l| l.starts_with("applied release "));
        if redone {
            assert!(
                changes_of(&finished) <= total,
                "the second run does at most what an uninterrupted one does\n{}",
                finished.describe()
            );
        } else {
            // Killed once the node was recorded as applied: the next run checks it.
            assert!(
                finished.stdout.lines().any(|l| l == "no drift"),
                "killed after change {hook}, then checked\n{}",
                finished.describe()
            );
        }
        let got = root.snapshot();
        assert_eq!(
            diff(expected, &got),
            Vec::<String>::new(),
            "killed after change {hook}, then finished: the root differs from an uninterrupted apply"
        );
        assert_eq!(
            temp_leftovers(&got),
            Vec::<PathBuf>::new(),
            "after change {hook}"
        );
        assert_eq!(
            root.state().expect("state")["status"]["state"],
            "applied",
            "after change {hook}"
        );
        assert_eq!(
            &manifest_of(&root),
            manifest,
            "killed after change {hook}, then finished: the manifest differs"
        );
    }
    panic!("apply made more than {MAX_CHANGES} changes");
}

/// Kills apply after each change it makes (see [`kill_at_every_change`]),
/// finishes it, and compares the result with an uninterrupted apply.
fn resumable_at_every_change(shadow_files: bool, over_http: bool, kind: &str) {
    let rich = Rich::new();
    let http = over_http.then(|| SmartHttp::start(&rich.world.srv()).expect("start smart HTTP"));
    let make_root = |name: &str| {
        let root = match &http {
            // Streamed: the kill may leave received objects staged.
            Some(http) => rich.root(name, &Config::new(&http.http_url(REPO))),
            None => rich.file_root(name),
        };
        if shadow_files {
            root.add_shadow_files();
        }
        root
    };
    let reference = make_root("reference");
    let total = changes_of(&reference.apply().ok());
    // With shadow files, /etc/gshadow and /etc/shadow change too.
    let accounts = if shadow_files { 2 } else { 0 };
    assert_eq!(total, rich_changes() + accounts);
    let expected = reference.snapshot();
    assert_eq!(temp_leftovers(&expected), Vec::<PathBuf>::new());
    reference.driftless("check", &[], &[]).ok();
    let manifest = manifest_of(&reference);
    let killed = kill_at_every_change(&make_root, kind, &expected, &manifest, total);
    eprintln!("{killed} runs killed (hook {kind:?}) for {total} changes");
    assert!(
        killed >= total as u64,
        "{killed} kills for {total} changes: every change was interrupted"
    );
}

/// Every system call that changes the tree, the release fetched with
/// libgit2 (file://).
#[test]
fn resumable_after_a_kill_at_every_change() {
    resumable_at_every_change(false, false, "");
}

/// The same with Debian's `/etc/shadow` and `/etc/gshadow` present, killed
/// after each entry put in place.
#[test]
fn resumable_after_a_kill_at_every_change_with_shadow_files() {
    resumable_at_every_change(true, false, "rename");
}

/// Every system call that changes the tree, the release streamed over
/// smart HTTP.
#[test]
fn resumable_after_a_kill_at_every_change_of_a_streamed_apply() {
    resumable_at_every_change(false, true, "");
}

/// A spec whose directory's parent `/opt` nobody declares.
const OPT_SPEC: &str = "directories:\n  - { path: /opt/app, mode: \"0750\", owner: nobody }\n\
    files:\n  - { path: /opt/app/run, content: \"#!/bin/sh\\n\", mode: \"0755\" }\n";

/// A world with [`OPT_SPEC`] published.
struct Opt {
    world: World,
    key: Key,
    published: Published,
}

impl Opt {
    fn new() -> Self {
        let world = World::new();
        let key = world.keygen("release");
        let published = world.publish(REPO, &Release::new(OPT_SPEC), TAG, Tagging::Signed(&key));
        Self {
            world,
            key,
            published,
        }
    }

    /// A fresh root for it.
    fn root(&self, name: &str) -> NodeRoot {
        let config = Config::new(&self.published.file_url());
        self.world.configured_root(name, &self.key, &config)
    }
}

/// The mode of a node path.
fn mode_of(root: &NodeRoot, node_path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(root.host(node_path))
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Sets the mode of a node path.
fn set_mode(root: &NodeRoot, node_path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(root.host(node_path), std::fs::Permissions::from_mode(mode))
        .expect("chmod");
}

#[test]
fn a_parent_an_interrupted_run_made_is_re_asserted_by_the_next() {
    let opt = Opt::new();
    let root = opt.root("node");
    // Killed once /opt is in place: it appeared whole, and is recorded.
    let killed = root.driftless("apply", &[], &[("DRIFTLESS_TEST_KILL_AFTER", "rename:1")]);
    assert_eq!(killed.signal, Some(9), "{}", killed.describe());
    assert_eq!(mode_of(&root, "/opt"), 0o755);
    assert!(!root.host("/opt/app").exists());
    let state = root.state().expect("state");
    let opt = state["manifest"]
        .as_array()
        .expect("manifest")
        .iter()
        .find(|e| e["path"] == "/opt")
        .cloned()
        .unwrap_or_else(|| panic!("/opt is not recorded: {state}"));
    assert_eq!(opt["origin"], "implicit parent of /opt/app", "{opt}");
    // Whatever happened to it meanwhile, the next run makes it right.
    set_mode(&root, "/opt", 0o700);
    let finished = root.apply().ok();
    assert!(
        finished
            .stderr
            .contains("change mode /opt (directory, 0755 0:0; implicit parent of /opt/app)"),
        "{}",
        finished.describe()
    );
    assert_eq!(mode_of(&root, "/opt"), 0o755);
    root.driftless("check", &[], &[]).ok();
}

#[test]
fn a_directory_appears_whole_or_not_at_all() {
    let opt = Opt::new();
    // Each step of making /opt (implicit) and /opt/app (declared, nobody's).
    for hook in [
        "mkdir:1", "chmod:1", "rename:1", "mkdir:2", "chown:1", "chmod:2",
    ] {
        let root = opt.root(&format!("killed-{}", hook.replace(':', "-")));
        let killed = root.driftless("apply", &[], &[("DRIFTLESS_TEST_KILL_AFTER", hook)]);
        assert_eq!(killed.signal, Some(9), "{hook}\n{}", killed.describe());
        let snap = root.snapshot();
        for (dir, mode, uid) in [("opt", 0o755, 0), ("opt/app", 0o750, 65534)] {
            if let Some(entry) = snap.get(Path::new(dir)) {
                assert_eq!(
                    (entry.kind, entry.mode, entry.uid),
                    (EntryKind::Dir, mode, uid),
                    "killed after {hook}: /{dir} is there, but not as it should be"
                );
            }
        }
        root.apply().ok();
        let snap = root.snapshot();
        assert_eq!(temp_leftovers(&snap), Vec::<PathBuf>::new(), "{hook}");
        assert_eq!(mode_of(&root, "/opt"), 0o755, "{hook}");
        assert_eq!(mode_of(&root, "/opt/app"), 0o750, "{hook}");
    }
}

#[test]
fn check_sees_the_parents_apply_made() {
    let opt = Opt::new();
    let root = opt.root("node");
    root.apply().ok();
    root.driftless("check", &[], &[]).ok();
    // The service's user can no longer reach /opt/app: that is drift.
    set_mode(&root, "/opt", 0o700);
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    assert_eq!(
        check.stdout.lines().collect::<Vec<_>>(),
        ["/opt: mode changed (0700, expected 0755)"],
        "{}",
        check.describe()
    );
}

// ---------------------------------------------------------------------------
// 5. Hostile releases
// ---------------------------------------------------------------------------

/// Who tags a hostile release.
#[derive(Clone, Copy, Debug)]
enum Signer {
    /// The trusted key.
    Trusted,
    /// A key that is not in allowed_signers.
    Stranger,
    /// Nobody: a lightweight tag.
    Lightweight,
}

/// A refused apply and its world.
struct Refusal {
    /// The world (kept alive for the test's own checks).
    world: World,
    /// The root.
    root: NodeRoot,
    /// The refused run.
    run: Run,
    /// The error line.
    line: String,
    /// What was published.
    published: Published,
    /// The key that signed (for [`Signer::Stranger`], the stranger's).
    signer: Key,
}

/// Publishes `release` tagged by `signer`, lets `setup` adjust the root and
/// config, applies, and asserts a refusal with `code` and `needles` that
/// left the root unchanged outside `/var/lib/driftless`.
fn refuse(
    release: &Release,
    signer: Signer,
    setup: impl FnOnce(&World, &Published, &NodeRoot, &mut Config),
    code: i32,
    needles: &[&str],
) -> Refusal {
    let world = World::new();
    let trusted = world.keygen("release");
    let stranger = world.keygen("stranger");
    let tagging = match signer {
        Signer::Trusted => Tagging::Signed(&trusted),
        Signer::Stranger => Tagging::Signed(&stranger),
        Signer::Lightweight => Tagging::Lightweight,
    };
    let published = world.publish(REPO, release, TAG, tagging);
    let root = world.root("node");
    root.trust(&[trusted.allowed(PRINCIPAL)]);
    let mut config = Config::new(&published.file_url());
    setup(&world, &published, &root, &mut config);
    root.configure(&config);
    let before = root.snapshot();
    let run = root.apply();
    let line = run.refused(code, needles);
    let after = root.snapshot();
    assert_eq!(
        diff(&before, &after),
        Vec::<String>::new(),
        "a refused release leaves the root as it was\n{}",
        run.describe()
    );
    assert!(
        run.elapsed < FAULT_LIMIT,
        "refused within {FAULT_LIMIT:?}\n{}",
        run.describe()
    );
    Refusal {
        world,
        root,
        run,
        line,
        published,
        signer: match signer {
            Signer::Stranger => stranger,
            _ => trusted,
        },
    }
}

/// A file entry written before the hostile one, proving that the whole
/// release is refused before anything is written.
const HARMLESS_FIRST: &str =
    "  - { path: /etc/aaa-first, content: \"written only if the release is good\\n\" }\n";

/// Asserts `state.json` records a failure at `stage`.
fn assert_failed_at(root: &NodeRoot, stage: &str) {
    let status = root.status_json();
    assert_eq!(status["status"]["state"], "failed", "{status}");
    assert_eq!(status["status"]["stage"], stage, "{status}");
    assert_eq!(status["phase"], "failed", "{status}");
}

#[test]
fn refuses_spec_path_traversal() {
    let spec = format!("files:\n{HARMLESS_FIRST}  - path: /etc/../../x\n    content: pwned\n");
    let r = refuse(
        &Release::new(&spec),
        Signer::Trusted,
        |_, _, _, _| {},
        EXIT_SPEC,
        &["driftless.yaml", "/etc/../../x", ".. components", "line 3"],
    );
    assert!(!r.world.path("x").exists() && !r.world.path("roots/x").exists());
    assert_failed_at(&r.root, "spec");
}

#[test]
fn refuses_writes_through_a_symlink_leading_outside() {
    let spec =
        format!("files:\n{HARMLESS_FIRST}  - {{ path: /etc/app/x, content: \"escaped\\n\" }}\n");
    let r = refuse(
        &Release::new(&spec),
        Signer::Trusted,
        |world, _, root, _| {
            let outside = world.path("outside");
            std::fs::create_dir(&outside).expect("create outside dir");
            std::os::unix::fs::symlink(&outside, root.host("/etc/app")).expect("symlink");
        },
        EXIT_APPLY,
        &["/etc/app is a symlink", "follows no symlink"],
    );
    let outside: Vec<_> = std::fs::read_dir(r.world.path("outside"))
        .expect("list outside")
        .collect();
    assert!(outside.is_empty(), "nothing was written outside the root");
}

#[test]
fn refuses_unknown_spec_keys_with_line_and_column() {
    let spec =
        format!("files:\n{HARMLESS_FIRST}  - path: /etc/x\n    content: hi\n    colour: blue\n");
    let r = refuse(
        &Release::new(&spec),
        Signer::Trusted,
        |_, _, _, _| {},
        EXIT_SPEC,
        &["driftless.yaml", "colour", "line 5 column 5"],
    );
    assert_failed_at(&r.root, "spec");
}

#[test]
fn refuses_a_yaml_alias_bomb() {
    // Nine levels of nine aliases: 9^9 strings if expanded. The bomb sits in
    // `owner`, a field the parser must expand to know whether it is a name
    // or an id, so it is the expansion bound that refuses it (an unknown
    // key would be refused before any alias is expanded).
    let mut bomb = String::from("[&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]");
    let mut previous = "a";
    for name in ["b", "c", "d", "e", "f", "g", "h", "i"] {
        let refs = vec![format!("*{previous}"); 9].join(", ");
        bomb.push_str(&format!(", &{name} [{refs}]"));
        previous = name;
    }
    bomb.push(']');
    let spec = format!(
        "files:\n{HARMLESS_FIRST}  - path: /etc/bomb\n    content: boom\n    owner: {bomb}\n"
    );
    let r = refuse(
        &Release::new(&spec),
        Signer::Trusted,
        |_, _, _, _| {},
        EXIT_SPEC,
        &["driftless.yaml", "repetition limit exceeded"],
    );
    assert!(
        r.run.elapsed < Duration::from_secs(10),
        "refused quickly\n{}",
        r.run.describe()
    );
    assert_failed_at(&r.root, "spec");
}

#[test]
fn refuses_a_source_over_64_mib() {
    let limit: u64 = 64 * 1024 * 1024;
    let spec =
        format!("files:\n{HARMLESS_FIRST}  - {{ path: /srv/big.bin, source: files/big.bin }}\n");
    let release = Release::new(&spec).zeros("files/big.bin", limit + 1);
    refuse(
        &release,
        Signer::Trusted,
        |_, _, _, _| {},
        EXIT_SPEC,
        &[
            "files/big.bin",
            &format!("{} bytes", limit + 1),
            &format!("at most {limit}"),
        ],
    );
}

#[test]
fn refuses_a_source_that_is_a_symlink() {
    let spec =
        format!("files:\n{HARMLESS_FIRST}  - {{ path: /etc/app.conf, source: files/app.conf }}\n");
    let release = Release::new(&spec).symlink("files/app.conf", "/etc/shadow");
    refuse(
        &release,
        Signer::Trusted,
        |_, _, _, _| {},
        EXIT_SPEC,
        &["files/app.conf", "not a regular file"],
    );
}

#[test]
fn refuses_a_release_signed_by_an_unknown_key() {
    let r = refuse(
        &rich_release(),
        Signer::Stranger,
        |_, _, _, _| {},
        EXIT_VERIFY,
        &[TAG, "not in allowed_signers"],
    );
    assert!(
        r.line.contains(&r.signer.fingerprint),
        "the message names the stranger's key\n{}",
        r.run.describe()
    );
    // No release was verified, yet status says why the node is not up.
    let status = r.root.status_json();
    assert_eq!(status["status"]["state"], "failed", "{status}");
    assert_eq!(status["status"]["stage"], "verify", "{status}");
    let reason = status["status"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not in allowed_signers"), "{status}");
    let text = r.root.driftless("status", &[], &[]).reported();
    assert!(
        text.stdout.contains("FAILED at verify: ") && text.stdout.contains(&r.signer.fingerprint),
        "{}",
        text.describe()
    );
    r.root
        .driftless("gate", &[], &[])
        .refused(GATE_CLOSED, &["no release was applied"]);
}

#[test]
fn refuses_a_tag_that_names_another_commit_than_pinned() {
    let mut pinned = String::new();
    let r = refuse(
        &rich_release(),
        Signer::Trusted,
        |_, published, _, config| {
            config.commit = Some(published.parent.clone());
            pinned = published.parent.clone();
        },
        EXIT_VERIFY,
        &[TAG, "release.commit"],
    );
    assert!(
        r.line.contains(&pinned) && r.line.contains(&r.published.commit),
        "the message names both commits\n{}",
        r.run.describe()
    );
}

#[test]
fn refuses_a_lightweight_tag() {
    refuse(
        &rich_release(),
        Signer::Lightweight,
        |_, _, _, _| {},
        EXIT_VERIFY,
        &[TAG, "lightweight"],
    );
}

#[test]
fn a_failing_health_check_marks_the_node_failed() {
    let world = World::new();
    let key = world.keygen("release");
    let spec = "files:\n  - { path: /etc/motd, content: \"hello\\n\" }\n\
                health:\n  - exec: [/bin/false]\n    timeout: 1s\n";
    let published = world.publish(REPO, &Release::new(spec), TAG, Tagging::Signed(&key));
    let root = world.configured_root("node", &key, &Config::new(&published.file_url()));

    let run = root.apply();
    run.refused(EXIT_HEALTH, &["health check", "/bin/false"]);
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.describe());
    let status = root.status_json();
    assert_eq!(status["status"]["state"], "failed", "{status}");
    assert_eq!(status["status"]["stage"], "health", "{status}");
    assert!(
        status["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/bin/false")),
        "{status}"
    );
    let text = root.driftless("status", &[], &[]).reported();
    assert!(
        text.stdout.contains("FAILED at health"),
        "{}",
        text.describe()
    );
    // The release's services stay stopped on a failed node, at any boot.
    root.driftless("gate", &[], &[]).refused(
        GATE_CLOSED,
        &["gate closed", "failed at health", "/bin/false"],
    );
    // A failed node is not "already applied": the next run tries again.
    let again = root.apply();
    again.refused(EXIT_HEALTH, &["/bin/false"]);
}

#[test]
fn the_gate_opens_only_for_the_applied_release() {
    let rich = Rich::new();
    let root = rich.file_root("node");
    // Nothing applied yet: closed.
    root.driftless("gate", &[], &[])
        .refused(GATE_CLOSED, &["no release was applied"]);
    assert_first_apply(&rich, &root.apply());
    let open = root.driftless("gate", &[], &[]).ok();
    assert_eq!(
        (open.stdout.as_str(), open.stderr.as_str()),
        ("", ""),
        "an open gate is silent\n{}",
        open.describe()
    );
    // The config now asks for another release: the node is not what it
    // should be, so its services do not start (apply refuses it too).
    let mut other = Config::new(&rich.published.file_url());
    other.tag = "v2".to_owned();
    root.configure(&other);
    root.driftless("gate", &[], &[]).refused(
        GATE_CLOSED,
        &[&format!("holds release {TAG}, but its config asks for v2")],
    );
    root.apply()
        .refused(EXIT_APPLY, &["never upgraded in place"]);
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat has a command name");
    rest.split_ascii_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("start time")
}

#[test]
fn a_start_window_left_by_a_killed_apply_keeps_the_gate_closed() {
    let rich = Rich::new();
    let root = rich.file_root("node");
    let killed = root.driftless("apply", &[], &[("DRIFTLESS_TEST_KILL_AFTER", "1")]);
    assert_eq!(killed.signal, Some(9), "{}", killed.describe());
    let commit = rich.published.commit.clone();
    // While an apply runs (played here by this test's own process), its
    // window opens the gate for the commit it applies.
    let me = std::process::id();
    std::fs::create_dir_all(root.host("/run/driftless")).expect("mkdir /run/driftless");
    root.write(
        "/run/driftless/starting-units",
        format!("{commit} {me} {}\n", start_time(me)).into_bytes(),
    );
    root.driftless("gate", &[], &[]).ok();
    // The same window once its apply is gone: closed.
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let gone = child.id();
    child.wait().expect("wait");
    for stale in [
        format!("{commit} {gone} 12345\n"),
        format!("{commit} {me} {}\n", start_time(me) + 1),
        format!("{commit}\n"),
    ] {
        root.write("/run/driftless/starting-units", stale.clone().into_bytes());
        root.driftless("gate", &[], &[])
            .refused(GATE_CLOSED, &["not applied yet"]);
    }
}

// ---------------------------------------------------------------------------
// 6. Faults
// ---------------------------------------------------------------------------

/// A release with a 2 MiB incompressible file, so its pack is far larger
/// than [`FAULT_AT`].
fn payload_release() -> Release {
    Release::new("files:\n  - { path: /srv/payload.bin, source: files/payload.bin }\n")
        .file("files/payload.bin", noise(2 * 1024 * 1024, 42))
}

/// The attempt count of a `GaveUp` fetch error line.
fn attempts_of(line: &str) -> u32 {
    line.split_once(" attempts)")
        .and_then(|(head, _)| head.rsplit_once('(').map(|(_, n)| n))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `(N attempts)` in {line:?}"))
}

/// Asserts a fetch failure of a root that was left unchanged.
fn assert_fetch_gave_up(root: &NodeRoot, before: &Snapshot, run: &Run, url: &str) -> u32 {
    let line = run.refused(
        EXIT_FETCH,
        &["could not fetch", TAG, &format!(" from {url} "), "attempts"],
    );
    assert!(
        run.elapsed < FAULT_LIMIT,
        "gave up within {FAULT_LIMIT:?}\n{}",
        run.describe()
    );
    assert_eq!(diff(before, &root.snapshot()), Vec::<String>::new());
    assert!(root.state().is_none(), "nothing to record before a fetch");
    attempts_of(&line)
}

#[test]
fn server_down_retries_then_gives_up_within_the_deadline() {
    let world = World::new();
    let key = world.keygen("release");
    let url = closed_port_url("git").expect("closed port");
    let root = world.configured_root("node", &key, &Config::new(&url));
    let before = root.snapshot();
    let run = root.apply();
    let attempts = assert_fetch_gave_up(&root, &before, &run, &url);
    assert!(attempts >= 3, "retried with backoff\n{}", run.describe());
    assert!(
        run.elapsed >= DEADLINE / 2,
        "kept trying for most of the deadline\n{}",
        run.describe()
    );
    assert!(
        run.elapsed < DEADLINE + MARGIN,
        "gave up by the deadline\n{}",
        run.describe()
    );
}

#[test]
fn a_connection_cut_mid_pack_fails_the_fetch() {
    let world = World::new();
    let key = world.keygen("release");
    let release = payload_release();
    world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let daemon = GitDaemon::start(&world.srv()).expect("start git daemon");
    let proxy =
        FaultProxy::start(daemon.addr(), Fault::CutAfter(FAULT_AT)).expect("start fault proxy");
    let url = proxy.url("git", REPO);
    let root = world.configured_root("node", &key, &Config::new(&url));
    let before = root.snapshot();

    let run = root.apply();
    let attempts = assert_fetch_gave_up(&root, &before, &run, &url);
    assert!(attempts >= 2, "retried\n{}", run.describe());
    assert!(
        proxy.connections() >= 2 && proxy.bytes_to_client() >= FAULT_AT,
        "each attempt got {FAULT_AT} bytes of the pack and was cut ({} connections, {} bytes)",
        proxy.connections(),
        proxy.bytes_to_client()
    );
    assert!(
        run.elapsed < DEADLINE + MARGIN,
        "gave up by the deadline\n{}",
        run.describe()
    );

    // The control: the same release through an honest proxy, into the same
    // root, whose cache may hold the pieces of the cut attempts.
    let honest = FaultProxy::start(daemon.addr(), Fault::None).expect("start proxy");
    root.configure(&Config::new(&honest.url("git", REPO)));
    root.apply().ok();
    assert_eq!(
        root.read("/srv/payload.bin"),
        release.bytes("files/payload.bin")
    );
}

#[test]
fn a_stalled_server_fails_the_fetch_within_the_deadline() {
    let world = World::new();
    let key = world.keygen("release");
    world.publish(REPO, &payload_release(), TAG, Tagging::Signed(&key));
    let daemon = GitDaemon::start(&world.srv()).expect("start git daemon");
    let proxy =
        FaultProxy::start(daemon.addr(), Fault::StallAfter(FAULT_AT)).expect("start fault proxy");
    let url = proxy.url("git", REPO);
    let root = world.configured_root("node", &key, &Config::new(&url));
    let before = root.snapshot();

    let run = root.apply();
    assert_fetch_gave_up(&root, &before, &run, &url);
    assert!(proxy.bytes_to_client() >= FAULT_AT);
    assert!(
        run.elapsed < DEADLINE + IO_TIMEOUT + MARGIN,
        "a stall costs at most the I/O timeout past the deadline\n{}",
        run.describe()
    );
}

/// A root configured for the payload release behind a [`FaultProxy`] in
/// front of smart HTTP; returns the world's pieces the test needs.
fn faulty_http(fault: Fault) -> (World, Release, SmartHttp, FaultProxy, NodeRoot, String) {
    let world = World::new();
    let key = world.keygen("release");
    let release = payload_release();
    world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let proxy = FaultProxy::start(http.http_addr(), fault).expect("start fault proxy");
    let url = proxy.url("http", REPO);
    let root = world.configured_root("node", &key, &Config::new(&url));
    (world, release, http, proxy, root, url)
}

/// Applies a root whose fetch must fail, and asserts it gave up with the
/// root unchanged and nothing left staged; returns the run and its attempts.
fn streamed_apply_gives_up(root: &NodeRoot, url: &str) -> (Run, u32) {
    let before = root.snapshot();
    let run = root.apply();
    let attempts = assert_fetch_gave_up(root, &before, &run, url);
    assert!(
        !root.host("/var/lib/driftless/incoming").exists(),
        "the staged objects of failed attempts are gone"
    );
    (run, attempts)
}

#[test]
fn a_streamed_pack_cut_mid_transfer_fails_the_fetch() {
    let (_world, release, http, proxy, root, url) = faulty_http(Fault::CutAfter(FAULT_AT));
    let (run, attempts) = streamed_apply_gives_up(&root, &url);
    assert!(attempts >= 2, "retried\n{}", run.describe());
    assert!(
        proxy.bytes_to_client() >= FAULT_AT * u64::from(attempts.min(2)),
        "each attempt got part of the pack"
    );
    // The control: the same server without the fault.
    root.configure(&Config::new(&http.http_url(REPO)));
    root.apply().ok();
    assert_eq!(
        root.read("/srv/payload.bin"),
        release.bytes("files/payload.bin")
    );
}

#[test]
fn a_streamed_pack_that_stalls_fails_within_the_deadline() {
    let (_world, _release, _http, proxy, root, url) = faulty_http(Fault::StallAfter(FAULT_AT));
    let (run, _) = streamed_apply_gives_up(&root, &url);
    assert!(proxy.bytes_to_client() >= FAULT_AT);
    assert!(
        run.elapsed < DEADLINE + IO_TIMEOUT + MARGIN,
        "a stall costs at most the I/O timeout past the deadline\n{}",
        run.describe()
    );
}

#[test]
fn a_streamed_pack_corrupted_in_flight_is_refused() {
    // One bit flipped deep inside the pack: inflating, an object id, a
    // delta or the pack's checksum gives it away, whichever it hits.
    let (_world, _release, _http, proxy, root, url) = faulty_http(Fault::Corrupt(FAULT_AT));
    let (run, attempts) = streamed_apply_gives_up(&root, &url);
    assert!(attempts >= 2, "retried\n{}", run.describe());
    assert!(
        run.stderr.contains("pack") || run.stderr.contains("transfer"),
        "the error says what was wrong\n{}",
        run.describe()
    );
    assert!(proxy.connections() >= 2);
}

#[test]
fn a_tag_missing_on_the_server_fails_without_retrying() {
    let rich = Rich::new();
    let daemon = GitDaemon::start(&rich.world.srv()).expect("start git daemon");
    let mut config = Config::new(&daemon.url(REPO));
    config.tag = "v9.9.9".to_owned();
    let root = rich.root("node", &config);
    let before = root.snapshot();
    let run = root.apply();
    run.refused(
        EXIT_FETCH,
        &[
            &format!("the server at {} has no ", daemon.url(REPO)),
            "v9.9.9",
        ],
    );
    assert!(
        run.elapsed < DEADLINE / 2,
        "a missing tag is not worth retrying\n{}",
        run.describe()
    );
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
    assert!(root.state().is_none());
}

/// Fetch settings of the secret tests, which are about output, not timing.
const SHORT_FETCH: &str =
    "{connect_timeout: 2s, io_timeout: 2s, deadline: 3s, retry_initial: 200ms, retry_max: 1s}";

/// A recognisable secret.
const TOKEN: &str = "drtok_9f3b1c7e-SECRET-5a2d8e4f";

/// Asserts that `secret` appears in no output of `runs` and in no file of
/// the root but `except`.
fn assert_secret_kept(secret: &str, root: &NodeRoot, runs: &[&Run], except: &str) {
    for run in runs {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "the secret leaked into output\n{}",
            run.describe()
        );
    }
    let all = snapshot(root.path(), &[]);
    for (path, entry) in &all {
        if path == Path::new(except.trim_start_matches('/')) {
            continue;
        }
        assert!(
            !entry
                .data
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "the secret is stored in {}",
            path.display()
        );
    }
}

/// A root configured for `url` with [`TOKEN`] in a token file.
fn token_root(world: &World, key: &Key, url: &str) -> NodeRoot {
    let mut config = Config::new(url);
    config.token_file = Some("/etc/driftless/git-token".to_owned());
    config.fetch = SHORT_FETCH.to_owned();
    let root = world.configured_root("node", key, &config);
    root.write("/etc/driftless/git-token", format!("{TOKEN}\n"));
    root
}

#[test]
fn a_token_is_never_printed_or_stored() {
    let world = World::new();
    let key = world.keygen("release");
    let url = closed_port_url("http").expect("closed port");
    let root = token_root(&world, &key, &url);
    let before = root.snapshot();
    let apply = root.apply();
    assert_fetch_gave_up(&root, &before, &apply, &url);
    let fetch = root.driftless("fetch", &[], &[]);
    fetch.refused(EXIT_FETCH, &[&url]);
    let plan = root.driftless("plan", &[], &[]);
    plan.refused(EXIT_FETCH, &[&url]);
    assert_secret_kept(
        TOKEN,
        &root,
        &[&apply, &fetch, &plan],
        "/etc/driftless/git-token",
    );
}

/// An HTTP server on 127.0.0.1 that answers every request with 401 and a
/// Basic challenge, recording the Authorization headers it is sent.
struct AuthServer {
    /// Listening port.
    port: u16,
    /// Authorization header values seen.
    seen: Arc<Mutex<Vec<String>>>,
    /// Tells the loop to stop.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    handle: Option<JoinHandle<()>>,
}

impl AuthServer {
    /// Starts the server.
    fn start() -> Self {
        let listener = TcpListener::bind(servers::localhost(0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => Self::answer(stream, &seen),
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            port,
            seen,
            stop,
            handle: Some(handle),
        }
    }

    /// Reads one request's headers and answers 401.
    fn answer(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request);
        for line in text.lines() {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    seen.lock().expect("lock").push(value.trim().to_owned());
                }
            }
        }
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"releases\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }

    /// `http://127.0.0.1:PORT/REPO`.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{REPO}", self.port)
    }

    /// The Authorization headers seen so far.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[test]
fn a_token_sent_to_a_refusing_server_is_never_printed() {
    let world = World::new();
    let key = world.keygen("release");
    let server = AuthServer::start();
    let url = server.url();
    let root = token_root(&world, &key, &url);
    let before = root.snapshot();
    let run = root.apply();
    // Refused credentials do not heal by retrying.
    run.refused(
        EXIT_FETCH,
        &[
            "cannot fetch",
            TAG,
            &url,
            "HTTP status 401",
            "(not retried)",
        ],
    );
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
    assert!(root.state().is_none(), "nothing to record before a fetch");
    // The token really was used, so its absence from the output means something.
    let sent: Vec<String> = server
        .seen()
        .iter()
        .filter_map(|h| h.strip_prefix("Basic "))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(
        sent.iter().any(|s| s == &format!("git:{TOKEN}")),
        "the token was sent as git:TOKEN (sent: {} headers)",
        sent.len()
    );
    assert_secret_kept(TOKEN, &root, &[&run], "/etc/driftless/git-token");
}

#[test]
fn a_password_in_the_url_is_never_printed() {
    let world = World::new();
    let key = world.keygen("release");
    let closed = closed_port_url("http").expect("closed port");
    let secret = "pw-SECRET-61c0d9";
    let url = closed.replacen("http://", &format!("http://deploy:{secret}@"), 1);
    let mut config = Config::new(&url);
    config.fetch = SHORT_FETCH.to_owned();
    let root = world.configured_root("node", &key, &config);
    let before = root.snapshot();
    let run = root.apply();
    assert_fetch_gave_up(&root, &before, &run, &closed);
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------
// 7. Config errors
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_config_key_is_refused_with_line_and_column() {
    let world = World::new();
    let key = world.keygen("release");
    let published = world.publish(REPO, &rich_release(), TAG, Tagging::Signed(&key));
    let root = world.root("node");
    root.trust(&[key.allowed(PRINCIPAL)]);
    let text = Config::new(&published.file_url()).render().replacen(
        "trust:\n",
        "  branch: main\ntrust:\n",
        1,
    );
    assert_eq!(text.lines().nth(2), Some("  branch: main"), "{text}");
    root.write("/etc/driftless/agent.yaml", text);
    let before = root.snapshot();
    let run = root.apply();
    run.refused(EXIT_CONFIG, &["agent.yaml", "branch", "line 3 column 3"]);
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
    assert!(!root.host(AGENT_DIR).exists(), "nothing was created");
}

#[test]
fn a_missing_allowed_signers_file_is_refused() {
    let world = World::new();
    let key = world.keygen("release");
    let published = world.publish(REPO, &rich_release(), TAG, Tagging::Signed(&key));
    let root = world.root("node");
    root.configure(&Config::new(&published.file_url()));
    let before = root.snapshot();
    let run = root.apply();
    run.refused(EXIT_CONFIG, &["allowed_signers"]);
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
    assert!(!root.host(AGENT_DIR).exists(), "nothing was created");
}
