//! End-to-end tests of what drift is, on a real applied and locked root, as
//! root on this machine's ext4 (as CI runs): each change below alters what
//! the node effectively runs, and `driftless check` and the detector (the
//! watcher's, `driftless::record::detect::Detector`, on the same root) must
//! name it, within a second for the detector; undone, the node is clean
//! again. And the reverse: ordinary writes beside and under managed paths
//! are not drift, over a seeded soak of many thousands of them
//! (`DRIFTLESS_SOAK_WRITES=N` for a longer one).
//!
//! The changes are made with the tools an admin or an attacker would use
//! (`chattr`, `setfacl`, `setcap`, `mount`), and files written as
//! `systemctl edit`, `systemctl set-property`, `systemctl mask --runtime`
//! and `useradd` would write them (no systemd runs the test roots).

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::fs;
use std::os::unix::fs::{MetadataExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use driftless::record::detect::Detector;
use driftless::record::drift::Difference;
use driftless::root::Root;
use release::{Config, NodeRoot, PRINCIPAL, REPO, Release, TAG, Tagging, World};
use servers::unlock;

const EXIT_APPLY: i32 = 7;
const EXIT_DRIFT: i32 = 9;
/// The detector's promise is a second; a loaded CI machine gets twice that.
const PROMPT: Duration = Duration::from_secs(2);

const UNIT: &str = "[Unit]\nDescription=app\n[Service]\nExecStart=/usr/local/bin/app\n\
                    [Install]\nWantedBy=multi-user.target\n";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb8zXl0ZlR0bW9ja2tleWZvcnRlc3RzMDEyMzQ1Njc4 app@example.com";

fn spec(extra: &str) -> String {
    format!(
        "users:\n  - {{ name: app, system: true, home: /home/app, ssh_authorized_keys: [\"{KEY}\"] }}\n\
directories:\n  - {{ path: /etc/app, mode: \"0755\", exclusive: true }}\n  - {{ path: /etc/app/conf.d, mode: \"0755\" }}\n  - {{ path: /var/lib/app, mode: \"0750\", owner: app, group: app, mutable: true }}\n  - {{ path: /usr/local/bin, mode: \"0755\" }}\n\
files:\n  - {{ path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }}\n  - {{ path: /etc/app/conf.d/10-base.conf, content: \"base=1\\n\" }}\n  - {{ path: /etc/app/secret, content: \"s3cret\\n\", mode: \"0640\" }}\n  - {{ path: /usr/local/bin/app, content: \"#!/bin/sh\\nexit 0\\n\", mode: \"0755\" }}\n\
units:\n  - {{ name: app.service, source: units/app.service }}\n\
exclusive: [/home/app/.ssh]\n\
lock:\n  read_only: [/etc/app/conf.d]\n{extra}"
    )
}

/// Unmounts everything mounted at or below `path` when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..8 {
            let more = Command::new("umount")
                .arg("-R")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !more {
                break;
            }
        }
    }
}

/// An applied, locked node and its world.
struct Node {
    world: World,
    root: NodeRoot,
    _mounts: Unmount,
}

/// A world with the release (spec `spec_text`) published, a root with
/// shadow files and a `sudo` group, configured; not applied yet.
fn configured(spec_text: &str) -> (World, NodeRoot) {
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new(spec_text)
        .file("files/app.conf", "port=8080\n")
        .file("units/app.service", UNIT);
    let published = world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let root = world.root("node");
    root.add_shadow_files();
    root.write("/etc/group", format!("{}sudo:x:27:\n", release::BASE_GROUP));
    root.write("/etc/hostname", "node\n");
    root.trust(&[key.allowed(PRINCIPAL)]);
    root.write(
        "/etc/driftless/agent.yaml",
        Config::new(&published.file_url()).render(),
    );
    (world, root)
}

/// An applied and locked node of [`spec`], clean.
fn node() -> Node {
    node_with(|_, _| {})
}

/// [`node`], with `prepare` run on the configured root before the apply.
fn node_with(prepare: impl FnOnce(&World, &NodeRoot)) -> Node {
    let (world, root) = configured(&spec(""));
    prepare(&world, &root);
    let mounts = Unmount(root.host("/etc/app/conf.d"));
    root.apply().ok();
    assert_clean(&root);
    Node {
        world,
        root,
        _mounts: mounts,
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn host(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

fn chattr(flag: &str, path: &Path) {
    run("chattr", &[flag, host(path)]);
}

fn assert_clean(root: &NodeRoot) {
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(0), "expected clean\n{}", check.describe());
}

/// `driftless check` exits 9 and prints a line for `path` that starts with
/// `path: ` and contains `needle`.
fn assert_checked(root: &NodeRoot, path: &str, needle: &str) {
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{path}: ")) && l.contains(needle)),
        "no line for {path} with {needle:?}\n{}",
        check.describe()
    );
}

/// The watcher's detector on `root`, started on its recorded state.
fn detector(root: &NodeRoot) -> Detector {
    let handle = Root::open(root.path()).expect("open root");
    let state = driftless::record::state::load(&handle)
        .expect("read state")
        .expect("applied");
    let mut detector = Detector::new(
        Root::open(root.path()).expect("open root"),
        state,
        Duration::from_secs(3600),
    )
    .expect("detector");
    assert_eq!(detector.rescan(), Vec::new(), "clean at start");
    detector
}

/// Polls until the detector reports `aspect` of `path`; returns how long
/// that took. Everything else it reports is kept in `others`.
fn seen(d: &mut Detector, path: &str, aspect: &str, others: &mut Vec<Difference>) -> Duration {
    let start = Instant::now();
    while start.elapsed() < PROMPT * 3 {
        for diff in d.poll(Duration::from_millis(100)).expect("poll") {
            if diff.path == path && diff.aspect == aspect {
                return start.elapsed();
            }
            others.push(diff);
        }
    }
    panic!("the detector did not report {aspect} of {path}; it reported {others:#?}");
}

/// Asserts the detector reports `aspect` of `path` within [`PROMPT`].
fn assert_detected(d: &mut Detector, path: &str, aspect: &str) {
    let mut others = Vec::new();
    let took = seen(d, path, aspect, &mut others);
    assert!(took <= PROMPT, "{aspect} of {path} took {took:?}");
}

/// Asserts the detector reports nothing for `quiet`.
fn assert_quiet(d: &mut Detector, quiet: Duration) {
    let start = Instant::now();
    while start.elapsed() < quiet {
        let found = d.poll(Duration::from_millis(100)).expect("poll");
        assert_eq!(found, Vec::new(), "false drift");
    }
}

// ---------------------------------------------------------------------------
// No false drift
// ---------------------------------------------------------------------------

#[test]
fn a_write_beside_an_exclusive_directory_is_not_drift() {
    let n = node();
    let mut d = detector(&n.root);
    // Daemons write beside managed directories all the time.
    fs::write(n.root.host("/etc/hostname"), "renamed\n").expect("hostname");
    fs::write(n.root.host("/etc/resolv.conf"), "nameserver 127.0.0.53\n").expect("resolv");
    assert_quiet(&mut d, Duration::from_millis(1500));
    assert_clean(&n.root);
    // A real stranger in the exclusive directory is still drift.
    chattr("-i", &n.root.host("/etc/app"));
    fs::write(n.root.host("/etc/app/stray.conf"), "x\n").expect("stray");
    assert_detected(&mut d, "/etc/app/stray.conf", "unmanaged");
    fs::remove_file(n.root.host("/etc/app/stray.conf")).expect("rm");
    chattr("+i", &n.root.host("/etc/app"));
    assert_clean(&n.root);
}

// ---------------------------------------------------------------------------
// Unit overrides
// ---------------------------------------------------------------------------

#[test]
fn every_override_of_a_managed_unit_is_drift() {
    let n = node();
    let mut d = detector(&n.root);
    let dropin_dir = n.root.host("/etc/systemd/system/app.service.d");
    // `systemctl edit app.service` cannot write into the locked drop-in directory.
    let edit = fs::write(dropin_dir.join("override.conf"), "[Service]\n");
    assert_eq!(edit.err().and_then(|e| e.raw_os_error()), Some(1), "EPERM");
    let gate_off = "[Service]\nExecCondition=\nExecStart=\nExecStart=/bin/sh -c id\n";
    let cases: [(&str, Option<&str>); 5] = [
        (
            "/etc/systemd/system.control/app.service.d/50-MemoryMax.conf",
            None,
        ),
        ("/run/systemd/system/app.service.d/override.conf", None),
        ("/run/systemd/system/app.service", Some("/dev/null")),
        ("/etc/systemd/system/service.d/10-all.conf", None),
        ("/run/systemd/transient/app.service", None),
    ];
    for (path, link) in cases {
        let file = n.root.host(path);
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        match link {
            Some(target) => symlink(target, &file).expect("mask"),
            None => fs::write(&file, gate_off).expect("drop-in"),
        }
        assert_detected(&mut d, path, "override");
        assert_checked(&n.root, path, "overriding app.service");
        fs::remove_file(&file).expect("undo");
        assert_clean(&n.root);
    }
    // With the lock taken off by hand, the release's own drop-in directory
    // still takes no stranger.
    chattr("-i", &dropin_dir);
    let path = "/etc/systemd/system/app.service.d/override.conf";
    fs::write(n.root.host(path), gate_off).expect("systemctl edit");
    assert_detected(&mut d, path, "unmanaged");
    assert_checked(&n.root, path, "overriding app.service");
    fs::remove_file(n.root.host(path)).expect("undo");
    chattr("+i", &dropin_dir);
    assert_clean(&n.root);
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

#[test]
fn account_changes_are_drift() {
    let n = node();
    let mut d = detector(&n.root);
    let passwd = n.root.host("/etc/passwd");
    let appended = fs::OpenOptions::new().append(true).open(&passwd);
    assert_eq!(
        appended.err().and_then(|e| e.raw_os_error()),
        Some(1),
        "the account files are locked"
    );
    let app_line = n
        .root
        .read_text("/etc/passwd")
        .lines()
        .find(|l| l.starts_with("app:"))
        .expect("app in passwd")
        .to_owned();
    let mut fields: Vec<&str> = app_line.split(':').collect();
    fields[2] = "0";
    let app_root = fields.join(":");
    let cases: Vec<(&str, String, String, &str, &str)> = vec![
        (
            "/etc/passwd",
            "toor:x:0:0::/root:/bin/sh".into(),
            String::new(),
            "/etc/passwd:toor",
            "added",
        ),
        (
            "/etc/passwd",
            app_root,
            app_line.clone(),
            "/etc/passwd:app",
            "uid",
        ),
        (
            "/etc/passwd",
            "daemon:x:1:1:daemon:/usr/sbin:/bin/bash".into(),
            "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin".into(),
            "/etc/passwd:daemon",
            "shell",
        ),
        (
            "/etc/shadow",
            "daemon:$y$j9T$salt$hash:19000:0:99999:7:::".into(),
            "daemon:*:19000:0:99999:7:::".into(),
            "/etc/shadow:daemon",
            "password",
        ),
        (
            "/etc/group",
            "sudo:x:27:app".into(),
            "sudo:x:27:".into(),
            "/etc/group:sudo",
            "members",
        ),
        (
            "/etc/group",
            "wheel0:x:0:".into(),
            String::new(),
            "/etc/group:wheel0",
            "added",
        ),
        (
            "/etc/passwd",
            String::new(),
            app_line,
            "/etc/passwd:app",
            "missing",
        ),
    ];
    for (file, new, old, path, aspect) in cases {
        let host = n.root.host(file);
        let before = fs::read_to_string(&host).expect("read");
        let after = match (old.is_empty(), new.is_empty()) {
            (true, _) => format!("{before}{new}\n"),
            (false, true) => before.replace(&format!("{old}\n"), ""),
            (false, false) => before.replace(&old, &new),
        };
        assert_ne!(before, after, "{path}: the edit changes the file");
        unlock(&host);
        fs::write(&host, &after).expect("edit");
        chattr("+i", &host);
        assert_detected(&mut d, path, aspect);
        assert_checked(
            &n.root,
            path,
            if aspect == "added" { "added" } else { aspect },
        );
        unlock(&host);
        fs::write(&host, &before).expect("undo");
        chattr("+i", &host);
        assert_clean(&n.root);
    }
    let check = {
        let host = n.root.host("/etc/passwd");
        let before = fs::read_to_string(&host).expect("read");
        unlock(&host);
        fs::write(&host, format!("{before}toor:x:0:0::/root:/bin/sh\n")).expect("edit");
        chattr("+i", &host);
        let run = n.root.driftless("check", &[], &[]);
        unlock(&host);
        fs::write(&host, before).expect("undo");
        chattr("+i", &host);
        run
    };
    assert!(
        check.stdout.contains("a second root account"),
        "{}",
        check.describe()
    );
}

// ---------------------------------------------------------------------------
// ACLs, capabilities
// ---------------------------------------------------------------------------

#[test]
fn acls_and_capabilities_on_managed_files_are_drift() {
    let n = node();
    let mut d = detector(&n.root);
    let secret = n.root.host("/etc/app/secret");
    let binary = n.root.host("/usr/local/bin/app");
    let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;
    let cases: [(&Path, &str, [&str; 3], [&str; 2]); 2] = [
        (
            &secret,
            "/etc/app/secret",
            ["setfacl", "-m", "u:nobody:r"],
            ["setfacl", "-b"],
        ),
        (
            &binary,
            "/usr/local/bin/app",
            ["setcap", "cap_setuid+ep", ""],
            ["setcap", "-r"],
        ),
    ];
    for (file, path, set, clear) in cases {
        let before = mode(file);
        chattr("-i", file);
        let args: Vec<&str> = set[1..].iter().copied().filter(|a| !a.is_empty()).collect();
        run(set[0], &[args.as_slice(), &[host(file)]].concat());
        chattr("+i", file);
        assert_eq!(mode(file), before, "{path}: the mode does not show it");
        assert_detected(&mut d, path, "xattr");
        assert_checked(&n.root, path, "security attributes changed");
        chattr("-i", file);
        run(clear[0], &[clear[1], host(file)]);
        chattr("+i", file);
        assert_clean(&n.root);
    }
}

#[test]
fn apply_refuses_undeclared_acls_and_sets_declared_ones() {
    // A default ACL on a directory that is already there gives every new
    // file in it an ACL the spec never asked for.
    let text = spec("").replacen(
        "files:\n",
        "files:\n  - { path: /srv/data/x.conf, content: \"x\\n\" }\n",
        1,
    );
    let (_world, root) = configured(&text);
    let _mounts = Unmount(root.host("/etc/app/conf.d"));
    root.mkdir("/srv/data", 0o755);
    run(
        "setfacl",
        &["-d", "-m", "u:nobody:rw", host(&root.host("/srv/data"))],
    );
    let refused = root.apply();
    refused.refused(
        EXIT_APPLY,
        &[
            "/srv/data/x.conf carries system.posix_acl_access",
            "declare it under xattrs",
        ],
    );

    // Declared, a capability is set by apply and is no drift.
    let probe = root.host("/probe");
    fs::write(&probe, "").expect("probe");
    run("setcap", &["cap_net_bind_service+ep", host(&probe)]);
    let out = Command::new("getfattr")
        .args(["-e", "hex", "-n", "security.capability", "--only-values"])
        .arg(&probe)
        .output()
        .expect("getfattr");
    let value: String = format!(
        "0x{}",
        out.stdout
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let declared = spec(&format!(
        "xattrs:\n  - {{ path: /usr/local/bin/app, name: security.capability, value: \"{value}\" }}\n"
    ));
    let (_world2, root2) = configured(&declared);
    let _mounts2 = Unmount(root2.host("/etc/app/conf.d"));
    root2.apply().ok();
    let caps = Command::new("getcap")
        .arg(root2.host("/usr/local/bin/app"))
        .output()
        .expect("getcap");
    assert!(
        String::from_utf8_lossy(&caps.stdout).contains("cap_net_bind_service"),
        "{caps:?}"
    );
    assert_clean(&root2);
}

// ---------------------------------------------------------------------------
// A forged record
// ---------------------------------------------------------------------------

#[test]
fn a_forged_record_is_caught_by_check_boot_and_status() {
    let n = node();
    let conf = n.root.host("/etc/app/app.conf");
    let state_file = n.root.host("/var/lib/driftless/state.json");
    let original = fs::read(&state_file).expect("state");
    // Change a file, and rewrite the record's digest to match it.
    let forged_content = b"port=6666\n";
    let mut state: serde_json::Value = serde_json::from_slice(&original).expect("json");
    for e in state["manifest"].as_array_mut().expect("manifest") {
        if e["path"] == "/etc/app/app.conf" {
            e["sha256"] = release_sha(forged_content).into();
        }
    }
    for path in [&conf, &state_file] {
        chattr("-i", path);
    }
    fs::write(&conf, forged_content).expect("edit");
    fs::write(
        &state_file,
        serde_json::to_vec_pretty(&state).expect("json"),
    )
    .expect("forge");
    for path in [&conf, &state_file] {
        chattr("+i", path);
    }
    assert_checked(
        &n.root,
        "/etc/app/app.conf",
        "differs from the signed release",
    );
    // A later boot's apply checks it too, and says so in status.
    let boot = n.root.apply();
    assert_eq!(boot.code, Some(EXIT_DRIFT), "{}", boot.describe());
    assert!(
        boot.stdout
            .contains("/etc/app/app.conf: differs from the signed release"),
        "{}",
        boot.describe()
    );
    let status = n.root.status_json();
    assert_eq!(status["verified"]["by"], "apply", "{status}");
    assert!(
        status["verified"]["differences"].as_u64() >= Some(1),
        "{status}"
    );
    let text = n.root.driftless("status", &[], &[]).reported();
    assert!(
        text.stdout.contains("DIFFERENCES from signed release"),
        "{}",
        text.describe()
    );

    // The record can also be forged to forget what it watches.
    let mut dropped = state.clone();
    for e in dropped["manifest"].as_array_mut().expect("manifest") {
        if e["path"] == "/etc/app" {
            e.as_object_mut().expect("entry").remove("exclusive");
        }
    }
    chattr("-i", &state_file);
    fs::write(
        &state_file,
        serde_json::to_vec_pretty(&dropped).expect("json"),
    )
    .expect("forge");
    chattr("+i", &state_file);
    assert_checked(
        &n.root,
        "/etc/app",
        "the record differs from the signed release",
    );

    // Undone, clean again.
    for path in [&conf, &state_file] {
        chattr("-i", path);
    }
    fs::write(&conf, "port=8080\n").expect("restore");
    fs::write(&state_file, &original).expect("restore");
    for path in [&conf, &state_file] {
        chattr("+i", path);
    }
    assert_clean(&n.root);
    let _ = &n.world;
}

fn release_sha(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Exclusive ~/.ssh
// ---------------------------------------------------------------------------

#[test]
fn an_extra_key_file_in_an_exclusive_ssh_directory_is_drift() {
    let n = node();
    let mut d = detector(&n.root);
    let ssh = n.root.host("/home/app/.ssh");
    let path = "/home/app/.ssh/authorized_keys2";
    let write = fs::write(n.root.host(path), KEY);
    assert_eq!(
        write.err().and_then(|e| e.raw_os_error()),
        Some(1),
        "locked"
    );
    chattr("-i", &ssh);
    fs::write(n.root.host(path), KEY).expect("authorized_keys2");
    assert_detected(&mut d, path, "unmanaged");
    assert_checked(&n.root, path, "not managed, inside exclusive directory");
    fs::remove_file(n.root.host(path)).expect("undo");
    chattr("+i", &ssh);
    assert_clean(&n.root);
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

#[test]
fn mount_changes_are_seen_within_a_second() {
    let n = node();
    let mut d = detector(&n.root);
    let confd = n.root.host("/etc/app/conf.d");
    let rebind = |dir: &Path| {
        run("mount", &["--bind", host(dir), host(&confd)]);
        run("mount", &["-o", "remount,bind,ro", host(&confd)]);
    };
    // Unmounted.
    run("umount", &[host(&confd)]);
    assert_detected(&mut d, "/etc/app/conf.d", "mount");
    assert_checked(&n.root, "/etc/app/conf.d", "no longer a read-only mount");
    rebind(&confd);
    assert_clean(&n.root);
    // A rescan of the clean node forgets what was reported.
    assert_eq!(d.rescan(), Vec::new());
    // Remounted read-write.
    run("mount", &["-o", "remount,bind,rw", host(&confd)]);
    assert_detected(&mut d, "/etc/app/conf.d", "mount");
    run("mount", &["-o", "remount,bind,ro", host(&confd)]);
    assert_clean(&n.root);
    assert_eq!(d.rescan(), Vec::new());
    // Another directory, read-only too, mounted in its place.
    let other = n.world.path("other");
    fs::create_dir(&other).expect("mkdir");
    fs::write(other.join("10-base.conf"), "base=1\n").expect("copy");
    run("umount", &[host(&confd)]);
    rebind(&other);
    assert_detected(&mut d, "/etc/app/conf.d", "mounted");
    assert_checked(&n.root, "/etc/app/conf.d", "what is mounted there changed");
    run("umount", &[host(&confd)]);
    rebind(&confd);
    assert_clean(&n.root);
    // A filesystem mounted over a managed directory.
    let bin = n.root.host("/usr/local/bin");
    let _over = Unmount(bin.clone());
    run("mount", &["-t", "tmpfs", "tmpfs", host(&bin)]);
    assert_detected(&mut d, "/usr/local/bin", "mounted");
    assert_checked(&n.root, "/usr/local/bin", "what is mounted there changed");
    run("umount", &[host(&bin)]);
    assert_clean(&n.root);
}

// ---------------------------------------------------------------------------
// The soak: ordinary writes are not drift; real changes still are
// ---------------------------------------------------------------------------

/// splitmix64: a fixed seed gives the same writes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One ordinary write beside or under the managed paths.
fn ordinary_write(root: &Path, rng: &mut Rng, i: u64) {
    let name = format!("n{}", rng.below(64));
    let at = |rel: &str| root.join(rel);
    let _ = match rng.below(12) {
        0 => fs::write(at("etc/hostname"), format!("node-{i}\n")),
        1 => fs::write(
            at("etc/resolv.tmp"),
            format!("nameserver 10.0.0.{}\n", i % 250),
        )
        .and_then(|()| fs::rename(at("etc/resolv.tmp"), at("etc/resolv.conf"))),
        2 => fs::create_dir_all(at("etc/app-data"))
            .and_then(|()| fs::write(at(&format!("etc/app-data/{name}")), "x")),
        3 => fs::write(at(&format!("var/lib/app/{name}")), format!("{i}")),
        4 => fs::remove_file(at(&format!("var/lib/app/{name}"))),
        5 => fs::create_dir_all(at("etc/systemd/system/other.service.d")).and_then(|()| {
            fs::write(
                at("etc/systemd/system/other.service.d/10.conf"),
                "[Service]\n",
            )
        }),
        6 => fs::create_dir_all(at("run/systemd/transient")).and_then(|()| {
            fs::write(
                at(&format!("run/systemd/transient/session-{name}.scope")),
                "[Scope]\n",
            )
        }),
        7 => fs::create_dir_all(at("etc/systemd/system/multi-user.target.wants")).and_then(|()| {
            let link = at("etc/systemd/system/multi-user.target.wants/other.service");
            let _ = fs::remove_file(&link);
            symlink("/etc/systemd/system/other.service", link)
        }),
        8 => fs::create_dir_all(at("home/other"))
            .and_then(|()| fs::write(at(&format!("home/other/{name}")), "y")),
        9 => fs::write(at(&format!("etc/{name}.conf")), "z")
            .and_then(|()| fs::remove_file(at(&format!("etc/{name}.conf")))),
        10 => fs::create_dir_all(at("run/systemd/system"))
            .and_then(|()| fs::write(at("run/systemd/system/other.service"), "[Service]\n")),
        _ => fs::write(at("var/lib/app/state.json"), format!("{{\"n\":{i}}}")),
    };
}

#[test]
fn a_soak_of_ordinary_writes_reports_nothing_while_real_drift_is_seen() {
    let writes: u64 = std::env::var("DRIFTLESS_SOAK_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let n = node();
    let mut d = detector(&n.root);
    let root = n.root.path().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = done.clone();
    let noise = std::thread::spawn(move || {
        let mut rng = Rng(0x5eed_d71f_7e55);
        for i in 0..writes {
            ordinary_write(&root, &mut rng, i);
            progress.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    // Real changes, made while the noise goes on, each seen promptly.
    let conf = n.root.host("/etc/app/app.conf");
    let dropin = n
        .root
        .host("/etc/systemd/system.control/app.service.d/50-x.conf");
    let mut unexpected = Vec::new();
    let mut stage = 0;
    while done.load(std::sync::atomic::Ordering::Relaxed) < writes || stage < 2 {
        let at = done.load(std::sync::atomic::Ordering::Relaxed);
        if stage == 0 && at >= writes / 3 {
            chattr("-i", &conf);
            fs::write(&conf, "port=1\n").expect("edit");
            let took = seen(&mut d, "/etc/app/app.conf", "content", &mut unexpected);
            assert!(took <= PROMPT, "content change took {took:?}");
            fs::write(&conf, "port=8080\n").expect("undo");
            chattr("+i", &conf);
            stage = 1;
        } else if stage == 1 && at >= 2 * writes / 3 {
            fs::create_dir_all(dropin.parent().expect("parent")).expect("mkdir");
            fs::write(&dropin, "[Service]\nExecStart=\n").expect("set-property");
            let took = seen(
                &mut d,
                "/etc/systemd/system.control/app.service.d/50-x.conf",
                "override",
                &mut unexpected,
            );
            assert!(took <= PROMPT, "override took {took:?}");
            fs::remove_file(&dropin).expect("undo");
            stage = 2;
        }
        unexpected.extend(d.poll(Duration::from_millis(50)).expect("poll"));
        if started.elapsed() > Duration::from_secs(600) {
            panic!("the soak ran over 10 minutes");
        }
    }
    noise.join().expect("noise thread");
    let lasted = started.elapsed();
    // What the real changes also touched (the lock cleared for the edit).
    unexpected.retain(|u| !(u.path == "/etc/app/app.conf" && u.aspect == "lock"));
    assert_eq!(
        unexpected,
        Vec::new(),
        "false drift over {writes} ordinary writes"
    );
    assert_eq!(
        d.rescan(),
        Vec::new(),
        "a rescan after the soak finds nothing"
    );
    assert_clean(&n.root);
    eprintln!("soak: {writes} ordinary writes in {lasted:?}, no false drift");
}

// ---------------------------------------------------------------------------
// The watcher with `drift.policy: replace`
// ---------------------------------------------------------------------------

/// `driftless watch` of a root in the background, killed when dropped.
struct Watcher(std::process::Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node whose watcher asks for replacement on drift through a script
/// that appends its reason to the world's `calls` file (configured before
/// the apply: the agent's config is itself locked and watched).
fn replacing_node() -> (Node, PathBuf) {
    let n = node_with(|world, root| {
        let script = world.path("replace.sh");
        let calls = world.path("calls");
        fs::write(&script, format!("echo \"$@\" >> {}\n", host(&calls))).expect("script");
        let config = root.read_text("/etc/driftless/agent.yaml");
        root.write(
            "/etc/driftless/agent.yaml",
            format!(
                "{config}drift: {{policy: replace}}\nchannel: {{poll_interval: 1h}}\n\
                 replace: {{action: exec, command: [/bin/sh, {}]}}\n",
                host(&script)
            ),
        );
    });
    let calls = n.world.path("calls");
    (n, calls)
}

/// Starts the watcher of `n`.
fn watcher(n: &Node) -> Watcher {
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["watch", "--root", host(n.root.path())])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(n.world.path("watch.log")).expect("log"))
        .spawn()
        .expect("start driftless watch");
    Watcher(child)
}

fn calls(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn wait_calls(path: &Path, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let found = calls(path);
        if !found.is_empty() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    calls(path)
}

#[test]
fn a_replace_policy_fires_on_drift_and_never_on_ordinary_writes() {
    let (n, calls_file) = replacing_node();
    let watcher = watcher(&n);
    // Given time to start (its first rescan and verification find nothing).
    std::thread::sleep(Duration::from_secs(2));
    let mut rng = Rng(7);
    for i in 0..2_000 {
        ordinary_write(n.root.path(), &mut rng, i);
    }
    std::thread::sleep(Duration::from_secs(2));
    let log = || fs::read_to_string(n.world.path("watch.log")).unwrap_or_default();
    assert_eq!(calls(&calls_file), Vec::<String>::new(), "{}", log());
    // A real change asks once.
    chattr("-i", &n.root.host("/etc/app"));
    fs::write(n.root.host("/etc/app/stray.conf"), "x\n").expect("stray");
    let asked = wait_calls(&calls_file, Duration::from_secs(10));
    assert_eq!(asked.len(), 1, "{asked:?}\n{}", log());
    assert!(asked[0].starts_with("drift: /etc/app"), "{asked:?}");
    drop(watcher);
}

#[test]
fn a_restarted_watcher_catches_a_forged_record() {
    let (n, calls_file) = replacing_node();
    let conf = n.root.host("/etc/app/app.conf");
    let state_file = n.root.host("/var/lib/driftless/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(&state_file).expect("state")).expect("json");
    for e in state["manifest"].as_array_mut().expect("manifest") {
        if e["path"] == "/etc/app/app.conf" {
            e["sha256"] = release_sha(b"port=6666\n").into();
        }
    }
    for path in [&conf, &state_file] {
        chattr("-i", path);
    }
    fs::write(&conf, "port=6666\n").expect("edit");
    fs::write(
        &state_file,
        serde_json::to_vec_pretty(&state).expect("json"),
    )
    .expect("forge");
    for path in [&conf, &state_file] {
        chattr("+i", path);
    }
    let _watcher = watcher(&n);
    let asked = wait_calls(&calls_file, Duration::from_secs(10));
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].contains("/etc/app/app.conf: differs from the signed release"),
        "{asked:?}"
    );
    let status = n.root.status_json();
    assert_eq!(status["verified"]["by"], "watch", "{status}");
}
