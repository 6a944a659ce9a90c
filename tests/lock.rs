//! End-to-end tests of the lock and of drift detection, as root on this
//! machine's ext4, as CI runs: after `driftless apply` the managed files
//! refuse every change, read-only mounts refuse writes, and `driftless
//! check` names each difference precisely once the lock is removed by hand.
//!
//! Tests that mount clean up in a guard, even when they fail. A filesystem
//! without the immutable attribute is a `ramfs` the test mounts (this
//! kernel's tmpfs supports the attribute, so tmpfs would not do).

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use release::{Config, NodeRoot, PRINCIPAL, REPO, Release, TAG, Tagging, World};
use ring::digest;
use servers::unlock;

const EPERM: i32 = 1;
const EROFS: i32 = 30;
const EXIT_APPLY: i32 = 7;
const EXIT_DRIFT: i32 = 9;

const UNIT: &str = "[Unit]\nDescription=app\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";

fn spec(extra: &str) -> String {
    format!(
        "directories:\n  - {{ path: /etc/app, mode: \"0755\" }}\n  - {{ path: /etc/app/conf.d, mode: \"0755\", exclusive: true }}\n  - {{ path: /var/lib/app, mode: \"0750\", mutable: true }}\n\
files:\n  - {{ path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }}\n  - {{ path: /etc/app/conf.d/10-base.conf, content: \"base=1\\n\" }}\n\
links:\n  - {{ path: /etc/app/current, target: /etc/app/app.conf }}\n\
units:\n  - {{ name: app.service, source: units/app.service }}\n{extra}"
    )
}

/// A world with the release published and a configured root.
fn node(spec_text: &str, agent_extra: &str) -> (World, NodeRoot) {
    let world = World::new();
    let key = world.keygen("release");
    let release = Release::new(spec_text)
        .file("files/app.conf", "port=8080\n")
        .file("units/app.service", UNIT);
    let published = world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    let root = world.root("node");
    root.trust(&[key.allowed(PRINCIPAL)]);
    let config = Config::new(&published.file_url());
    root.write(
        "/etc/driftless/agent.yaml",
        format!("{}{agent_extra}", config.render()),
    );
    (world, root)
}

fn os_error<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lsattr_immutable(path: &Path) -> bool {
    let out = Command::new("lsattr")
        .arg("-d")
        .arg(path)
        .output()
        .expect("run lsattr");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .is_some_and(|flags| flags.contains('i'))
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("run chattr");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

/// Unmounts everything mounted at or below `path` when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..8 {
            let done = Command::new("umount")
                .arg("-R")
                .arg(&self.0)
                .status()
                .map(|s| !s.success())
                .unwrap_or(true);
            if done {
                break;
            }
        }
    }
}

#[test]
fn a_locked_node_refuses_every_change_to_managed_paths() {
    let (_world, root) = node(&spec(""), "");
    root.apply().ok();
    let conf = root.host("/etc/app/app.conf");
    assert!(
        lsattr_immutable(&conf),
        "the file carries the immutable attribute"
    );
    assert!(
        lsattr_immutable(&root.host("/etc/app")),
        "the directory too"
    );
    assert!(
        lsattr_immutable(&root.host("/var/lib/driftless/state.json")),
        "and the agent's state"
    );
    assert!(
        lsattr_immutable(&root.host("/etc/driftless/allowed_signers")),
        "and its trust file"
    );
    assert!(
        !lsattr_immutable(&root.host("/var/lib/app")),
        "a mutable directory is left writable"
    );

    use std::os::unix::fs::OpenOptionsExt as _;
    let write = std::fs::OpenOptions::new().append(true).open(&conf);
    assert_eq!(os_error(write), Some(EPERM), "write");
    let truncate = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(0)
        .open(&conf);
    assert_eq!(os_error(truncate), Some(EPERM), "truncate");
    assert_eq!(
        os_error(std::fs::rename(&conf, root.host("/etc/app/moved"))),
        Some(EPERM),
        "rename"
    );
    assert_eq!(
        os_error(std::fs::set_permissions(
            &conf,
            std::fs::Permissions::from_mode(0o666)
        )),
        Some(EPERM),
        "chmod"
    );
    assert_eq!(
        os_error(std::os::unix::fs::chown(&conf, Some(1234), None)),
        Some(EPERM),
        "chown"
    );
    assert_eq!(os_error(std::fs::remove_file(&conf)), Some(EPERM), "delete");
    assert_eq!(
        os_error(std::fs::write(root.host("/etc/app/new.conf"), "x")),
        Some(EPERM),
        "create inside a locked directory"
    );
    assert_eq!(
        os_error(std::fs::remove_file(root.host("/etc/app/current"))),
        Some(EPERM),
        "a link in a locked directory"
    );
    std::fs::write(root.host("/var/lib/app/data"), "ok")
        .expect("the mutable directory takes writes");
    assert_eq!(
        std::fs::read(&conf).expect("read"),
        b"port=8080\n",
        "content intact"
    );

    let status = root.status_json();
    let manifest = status["manifest"].as_array().expect("manifest");
    let lock_of = |path: &str| {
        manifest
            .iter()
            .find(|e| e["path"] == path)
            .map(|e| e["lock"]["status"].clone())
    };
    assert_eq!(lock_of("/etc/app/app.conf"), Some("locked".into()));
    assert_eq!(lock_of("/etc/app/current"), Some("exempt".into()));
    assert_eq!(lock_of("/var/lib/app"), Some("exempt".into()));
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(0), "{}", check.describe());
}

#[test]
fn read_only_mounts_refuse_writes_and_come_back_at_boot() {
    let extra = "lock:\n  read_only: [/etc/app/conf.d]\n";
    let (_world, root) = node(&spec(extra), "");
    let _guard = Unmount(root.host("/etc/app/conf.d"));
    root.apply().ok();
    let dir = root.host("/etc/app/conf.d");
    // The mount is checked before the inode: a write gets EROFS.
    assert_eq!(
        os_error(std::fs::write(dir.join("20-extra.conf"), "x")),
        Some(EROFS)
    );
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(0), "{}", check.describe());

    let umount = Command::new("umount").arg(&dir).status().expect("umount");
    assert!(umount.success());
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    assert!(
        check
            .stdout
            .contains("/etc/app/conf.d: no longer a read-only mount"),
        "{}",
        check.describe()
    );

    // What a later boot runs: the check, then the mount again.
    let again = root.apply();
    assert_eq!(
        again.code,
        Some(EXIT_DRIFT),
        "the re-check reports what it found\n{}",
        again.describe()
    );
    let check = root.driftless("check", &[], &[]);
    assert_eq!(
        check.code,
        Some(0),
        "the mount is back\n{}",
        check.describe()
    );
}

/// How many mounts sit on the host path `dir` in this namespace.
fn mounts_at(dir: &Path) -> usize {
    let dir = std::fs::canonicalize(dir).expect("canonical path");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(dir.to_str().expect("UTF-8 path")))
        .count()
}

#[test]
fn a_read_only_path_listed_by_spec_and_config_is_one_mount() {
    // Listed twice, not next to each other: the spec's two, then the config's.
    let extra = "lock:\n  read_only: [/etc/app/conf.d, /var/lib/app]\n";
    let (_world, root) = node(&spec(extra), "lock:\n  read_only: [/etc/app/conf.d]\n");
    let _guards = [
        Unmount(root.host("/etc/app/conf.d")),
        Unmount(root.host("/var/lib/app")),
    ];
    root.apply().ok();
    let state = root.state().expect("state");
    let paths: Vec<&str> = state["read_only"]
        .as_array()
        .expect("read_only")
        .iter()
        .map(|m| m["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["/etc/app/conf.d", "/var/lib/app"], "{state}");
    assert_eq!(mounts_at(&root.host("/etc/app/conf.d")), 1);
    // A later boot mounts it once again, not twice.
    let umount = Command::new("umount")
        .arg(root.host("/etc/app/conf.d"))
        .status()
        .expect("umount");
    assert!(umount.success());
    let again = root.apply();
    assert_eq!(again.code, Some(EXIT_DRIFT), "{}", again.describe());
    assert_eq!(mounts_at(&root.host("/etc/app/conf.d")), 1);
    root.driftless("check", &[], &[]).ok();
}

#[test]
fn a_read_only_mount_is_judged_in_the_node_s_mount_namespace() {
    let extra = "lock:\n  read_only: [/etc/app/conf.d]\n";
    let (_world, root) = node(&spec(extra), "");
    let _guard = Unmount(root.host("/etc/app/conf.d"));
    root.apply().ok();
    let dir = root.host("/etc/app/conf.d");
    // Someone makes the locked directory writable on the node...
    let remount = Command::new("mount")
        .args(["-o", "remount,bind,rw"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(remount.success(), "remount rw");
    // ...while a sandboxed watcher's namespace (ProtectSystem=strict makes
    // every mount read-only there) still shows it read-only. Checked from
    // such a namespace, the drift must still be seen.
    let check = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -o remount,bind,ro \"$1\" && exec \"$2\" check --root \"$3\"")
        .arg("sh")
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_driftless"))
        .arg(root.path())
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(
        check.status.code(),
        Some(EXIT_DRIFT),
        "{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        stdout.contains("/etc/app/conf.d: no longer a read-only mount"),
        "{stdout}\n--- stderr\n{stderr}"
    );
}

#[test]
fn check_names_each_difference_then_passes_once_restored() {
    let (_world, root) = node(&spec(""), "");
    root.apply().ok();
    let conf = root.host("/etc/app/app.conf");
    let link = root.host("/etc/app/current");
    let wants = root.host("/etc/systemd/system/multi-user.target.wants/app.service");
    let extra = root.host("/etc/app/conf.d/99-stray.conf");
    let expected_sha = sha256_hex(b"port=8080\n");

    for path in [
        &conf,
        &root.host("/etc/app"),
        &root.host("/etc/app/conf.d"),
        &root.host("/etc/systemd/system/multi-user.target.wants"),
    ] {
        unlock(path);
    }
    std::fs::write(&conf, "port=9090\n").expect("edit content");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&conf, Some(1234), Some(4321)).expect("chown");
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink("/etc/elsewhere", &link).expect("relink");
    std::fs::remove_file(&wants).expect("disable the unit");
    std::fs::write(&extra, "stray\n").expect("an unmanaged file in an exclusive directory");

    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    let lines: Vec<&str> = check.stdout.lines().collect();
    let expect = [
        format!(
            "/etc/app/app.conf: content changed (sha256 {}, expected {expected_sha})",
            sha256_hex(b"port=9090\n")
        ),
        "/etc/app/app.conf: mode changed (0600, expected 0640)".to_owned(),
        "/etc/app/app.conf: owner changed (1234, expected 0)".to_owned(),
        "/etc/app/app.conf: group changed (4321, expected 0)".to_owned(),
        "/etc/app/app.conf: lock removed (immutable attribute cleared)".to_owned(),
        "/etc/app/current: target changed (/etc/elsewhere, expected /etc/app/app.conf)".to_owned(),
        "/etc/systemd/system/multi-user.target.wants/app.service: missing (expected a symlink)"
            .to_owned(),
        "/etc/app/conf.d/99-stray.conf: not managed, inside exclusive directory".to_owned(),
    ];
    for line in &expect {
        assert!(
            lines.contains(&line.as_str()),
            "missing line {line:?}\n{}",
            check.describe()
        );
    }
    let json = root.driftless("check", &["--json"], &[]);
    assert_eq!(json.code, Some(EXIT_DRIFT));
    assert_eq!(json.json()["drifted"], true);

    // Restore by hand: the node matches its manifest again.
    std::fs::remove_file(&extra).expect("remove stray");
    std::fs::write(&conf, "port=8080\n").expect("restore content");
    std::os::unix::fs::chown(&conf, Some(0), Some(0)).expect("restore owner");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).expect("restore mode");
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink("/etc/app/app.conf", &link).expect("restore link");
    std::os::unix::fs::symlink("/etc/systemd/system/app.service", &wants).expect("re-enable");
    for path in [
        &conf,
        &root.host("/etc/app"),
        &root.host("/etc/app/conf.d"),
        &root.host("/etc/systemd/system/multi-user.target.wants"),
    ] {
        chattr("+i", path);
    }
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(0), "clean again\n{}", check.describe());
}

/// Mounts a ramfs (no immutable attribute) at `/srv` inside the root.
fn ramfs_at(root: &NodeRoot, node_path: &str) -> Unmount {
    let dir = root.host(node_path);
    std::fs::create_dir_all(&dir).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(status.success(), "mount ramfs");
    Unmount(dir)
}

const RAMFS_SPEC: &str = "directories:\n  - { path: /srv/app, mode: \"0755\" }\nfiles:\n  - { path: /srv/app/site.conf, content: \"site\\n\" }\n  - { path: /etc/motd, content: \"hello\\n\" }\n";

#[test]
fn best_effort_records_what_the_filesystem_would_not_lock() {
    let (_world, root) = node(RAMFS_SPEC, "lock:\n  mode: best-effort\n");
    let _guard = ramfs_at(&root, "/srv");
    root.apply().ok();
    let status = root.status_json();
    let manifest = status["manifest"].as_array().expect("manifest");
    let entry = |path: &str| {
        manifest
            .iter()
            .find(|e| e["path"] == path)
            .cloned()
            .expect(path)
    };
    assert_eq!(entry("/etc/motd")["lock"]["status"], "locked");
    let site = entry("/srv/app/site.conf");
    assert_eq!(site["lock"]["status"], "failed", "{site}");
    assert!(
        site["lock"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not support")),
        "{site}"
    );
    let human = root.driftless("status", &[], &[]).reported();
    assert!(
        human.stdout.contains("not locked: /srv/app/site.conf"),
        "{}",
        human.describe()
    );
    let check = root.driftless("check", &[], &[]);
    assert_eq!(
        check.code,
        Some(0),
        "an unlockable path is not drift\n{}",
        check.describe()
    );
}

#[test]
fn required_lock_fails_clearly_on_such_a_filesystem() {
    let (_world, root) = node(RAMFS_SPEC, "lock:\n  mode: required\n");
    let _guard = ramfs_at(&root, "/srv");
    let run = root.apply();
    let line = run.refused(
        EXIT_APPLY,
        &[
            "cannot lock /srv/app",
            "does not support the immutable attribute",
            "best-effort",
        ],
    );
    assert!(line.starts_with("error: "));
    let status = root.status_json();
    assert_eq!(status["status"]["state"], "failed");
    assert_eq!(status["status"]["stage"], "lock");
}

#[test]
fn no_lock_bakes_an_image_and_the_first_boot_locks_it() {
    let (_world, root) = node(&spec(""), "");
    root.driftless("apply", &["--no-lock"], &[]).ok();
    let conf = root.host("/etc/app/app.conf");
    assert!(!lsattr_immutable(&conf), "not locked while baking");
    assert_eq!(
        root.status_json()["manifest"][0]["lock"]["status"],
        "pending"
    );
    // First boot: the node is checked and locked, not re-applied.
    let boot = root.apply().ok();
    assert!(
        boot.stdout.contains("already applied"),
        "{}",
        boot.describe()
    );
    assert!(lsattr_immutable(&conf), "locked at first boot");
    assert!(lsattr_immutable(
        &root.host("/var/lib/driftless/state.json")
    ));
    let locked = root.status_json()["manifest"]
        .as_array()
        .expect("manifest")
        .iter()
        .filter(|e| e["lock"]["status"] == "locked")
        .count();
    assert!(locked >= 5, "{locked} paths locked");
}

#[test]
fn an_apply_killed_while_locking_is_finished_by_the_next_run() {
    let (_world, root) = node(&spec(""), "");
    // Killed right after the 6th path was locked.
    let killed = root.driftless("apply", &[], &[("DRIFTLESS_TEST_KILL_AFTER", "lock:6")]);
    assert_eq!(killed.signal, Some(9), "{}", killed.describe());
    assert_eq!(root.status_json()["status"]["state"], "applying");
    // Interrupted after verification: the next run finishes it.
    assert_eq!(root.status_json()["phase"], "verified");
    let some_locked = [
        "/etc/app/conf.d/10-base.conf",
        "/etc/app/app.conf",
        "/etc/systemd/system/app.service",
    ]
    .iter()
    .any(|p| lsattr_immutable(&root.host(p)));
    assert!(some_locked, "the kill came after some paths were locked");
    let finished = root.apply().ok();
    assert!(
        finished.stdout.contains("applied release"),
        "{}",
        finished.describe()
    );
    assert_eq!(root.status_json()["status"]["state"], "applied");
    assert!(lsattr_immutable(&root.host("/etc/app/app.conf")));
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(0), "{}", check.describe());
}
