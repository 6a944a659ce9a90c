//! End-to-end tests of how apply and check reach the paths a spec manages,
//! with an unprivileged local user (uid 65534, played by this test, which
//! runs as root) as the attacker: no symlink on the way is followed, a
//! directory on the way must be owned by root or by the owner the spec
//! declares for it, and every step on one entry happens in the directory
//! that was checked, even when the user swaps a link in while apply runs.
//!
//! The races are made deterministic with the agent's test hook
//! `DRIFTLESS_TEST_STOP_AFTER`: apply stops itself (SIGSTOP) right after a
//! given step, the test changes the node as the user could, and lets it go
//! on (SIGCONT).

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::os::unix::fs::{PermissionsExt as _, lchown, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use release::{Config, NodeRoot, PRINCIPAL, REPO, Release, Run, TAG, Tagging, World, diff};

/// Exit code: writing the node failed.
const EXIT_APPLY: i32 = 7;
/// Exit code: the node drifted from its manifest.
const EXIT_DRIFT: i32 = 9;
/// The unprivileged user.
const USER: u32 = 65534;
/// How long a test waits for apply to stop at its hook.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// A world with `spec` published and a configured root.
fn node(spec: &str) -> (World, NodeRoot) {
    let world = World::new();
    let key = world.keygen("release");
    let published = world.publish(REPO, &Release::new(spec), TAG, Tagging::Signed(&key));
    let root = world.root("node");
    root.trust(&[key.allowed(PRINCIPAL)]);
    root.configure(&Config::new(&published.file_url()));
    (world, root)
}

/// Makes `node_path` a directory of the user's, mode `mode`.
fn user_dir(root: &NodeRoot, node_path: &str, mode: u32) {
    root.mkdir(node_path, mode);
    lchown(root.host(node_path), Some(USER), Some(USER)).expect("chown to the user");
}

/// Plants a symlink of the user's.
fn user_link(root: &NodeRoot, node_path: &str, target: &str) {
    symlink(target, root.host(node_path)).expect("plant a link");
    lchown(root.host(node_path), Some(USER), Some(USER)).expect("chown the link");
}

/// Everything under the root's `/etc` except the agent's own config.
fn etc(root: &NodeRoot) -> release::Snapshot {
    release::snapshot(&root.host("/etc"), &["driftless"])
}

/// Asserts `/etc` is as it was and holds no `systemd` directory.
fn assert_etc_untouched(root: &NodeRoot, before: &release::Snapshot, run: &Run) {
    assert_eq!(
        diff(before, &etc(root)),
        Vec::<String>::new(),
        "/etc changed\n{}",
        run.describe()
    );
}

/// The spec of the report: the user's `.config/systemd`, owned by them, and
/// a file in it; `extra` adds entries.
fn home_spec(extra: &str) -> String {
    format!(
        "directories:\n{extra}  - {{ path: /home/app/.config/systemd, mode: \"0755\", owner: {USER}, group: {USER} }}\n\
         files:\n  - {{ path: /home/app/.config/systemd/user.conf, content: \"[Manager]\\n\", owner: {USER}, group: {USER} }}\n"
    )
}

/// The declared parents, for the cases where the owner rule is satisfied.
fn declared_home() -> String {
    format!(
        "  - {{ path: /home/app, mode: \"0750\", owner: {USER}, group: {USER}, mutable: true }}\n\
         \x20 - {{ path: /home/app/.config, mode: \"0755\", owner: {USER}, group: {USER}, mutable: true }}\n"
    )
}

#[test]
fn a_relative_link_planted_in_a_users_home_steers_no_write() {
    // As reported: `ln -s ../../etc /home/app/.config` by the user who owns
    // /home/app. Undeclared, /home/app itself is refused (its owner could
    // swap anything below it); declared with that owner, the link is.
    for (extra, needles) in [
        (
            String::new(),
            vec![
                "/home/app is owned by uid 65534, not root".to_owned(),
                "declare it in the spec".to_owned(),
            ],
        ),
        (
            format!("  - {{ path: /home/app, mode: \"0750\", owner: {USER}, group: {USER} }}\n"),
            vec![
                "/home/app/.config is a symlink (to ../../etc)".to_owned(),
                "follows no symlink".to_owned(),
            ],
        ),
    ] {
        let (_world, root) = node(&home_spec(&extra));
        root.mkdir("/home", 0o755);
        user_dir(&root, "/home/app", 0o750);
        user_link(&root, "/home/app/.config", "../../etc");
        let before = etc(&root);
        let home_before = release::snapshot(&root.host("/home"), &[]);
        let run = root.apply();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        run.refused(EXIT_APPLY, &needles);
        assert!(
            !root.host("/etc/systemd").exists(),
            "/etc/systemd was made through the link\n{}",
            run.describe()
        );
        assert_etc_untouched(&root, &before, &run);
        assert_eq!(
            diff(&home_before, &release::snapshot(&root.host("/home"), &[])),
            Vec::<String>::new(),
            "the home is as the user left it"
        );
        assert_eq!(root.status_json()["status"]["stage"], "apply");
    }
}

#[test]
fn a_directory_another_user_owns_on_the_way_is_refused_unless_declared() {
    let spec = "files:\n  - { path: /srv/shared/app.conf, content: \"port=1\\n\" }\n";
    let (_world, root) = node(spec);
    root.mkdir("/srv", 0o755);
    user_dir(&root, "/srv/shared", 0o755);
    let run = root.apply();
    run.refused(
        EXIT_APPLY,
        &["/srv/shared/app.conf", "/srv/shared is owned by uid 65534"],
    );
    assert!(!root.host("/srv/shared/app.conf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root.host("/srv/shared"))
        .expect("ls")
        .collect();
    assert!(leftovers.is_empty(), "nothing was staged there");

    // The control: declared as the user's, the directory is used.
    let declared = format!(
        "directories:\n  - {{ path: /srv/shared, mode: \"0755\", owner: {USER}, group: {USER} }}\n{spec}"
    );
    let (_world, root) = node(&declared);
    root.mkdir("/srv", 0o755);
    user_dir(&root, "/srv/shared", 0o755);
    root.apply().ok();
    assert_eq!(root.read("/srv/shared/app.conf"), b"port=1\n");
    root.driftless("check", &[], &[]).ok();
}

#[test]
fn a_path_through_a_system_link_is_refused_with_the_path_to_write() {
    // Merged /usr: /bin -> usr/bin. The link is root's, but the spec must
    // name the real path, so that what is checked later is what was written.
    let spec = "files:\n  - { path: /bin/tool, content: \"#!/bin/sh\\n\", mode: \"0755\" }\n";
    let (_world, root) = node(spec);
    root.mkdir("/usr/bin", 0o755);
    symlink("usr/bin", root.host("/bin")).expect("merged /bin");
    let run = root.apply();
    run.refused(
        EXIT_APPLY,
        &[
            "/bin/tool",
            "/bin is a symlink (to usr/bin)",
            "name /usr/bin/tool in the spec",
        ],
    );
    assert!(!root.host("/usr/bin/tool").exists());
}

/// The pid of the `driftless apply` under `root` once it has stopped
/// itself, or `None` when `done` is set first or [`STOP_WAIT`] passes.
fn stopped_apply(root: &Path, done: &AtomicBool) -> Option<i32> {
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline && !done.load(Ordering::SeqCst) {
        for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args.contains(&b"apply".as_slice())
                && args.contains(&root.as_os_str().as_encoded_bytes());
            let stopped = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                .unwrap_or(false);
            if ours && stopped {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs `driftless apply` stopped after `hook`, lets `meddle` change the
/// node (as the user could), then lets apply go on.
fn apply_with_meddling(root: &NodeRoot, hook: &str, meddle: impl FnOnce() + Send) -> Run {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let pid = stopped_apply(root.path(), &done)?;
            meddle();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            )
            .expect("SIGCONT");
            Some(pid)
        });
        let run = root.driftless("apply", &[], &[("DRIFTLESS_TEST_STOP_AFTER", hook)]);
        done.store(true, Ordering::SeqCst);
        let stopped = watcher.join().expect("watcher thread");
        assert!(
            stopped.is_some(),
            "apply never stopped after {hook}\n{}",
            run.describe()
        );
        run
    })
}

/// The user's home, made by them, with `.config` a real directory of theirs.
fn user_home(root: &NodeRoot) {
    root.mkdir("/home", 0o755);
    user_dir(root, "/home/app", 0o750);
    user_dir(root, "/home/app/.config", 0o755);
}

/// The user replaces their `.config` by a link to `/etc`, keeping the
/// directory as `.config.old`.
fn swap_in_link(root: &NodeRoot) {
    std::fs::rename(
        root.host("/home/app/.config"),
        root.host("/home/app/.config.old"),
    )
    .expect("move .config away");
    user_link(root, "/home/app/.config", "../../etc");
}

/// Applies the home spec to a node whose user swaps their `.config` for a
/// link to `/etc` once apply has done `hook`; asserts `/etc` (which holds a
/// `systemd` directory of root's, as on a real node) was left alone.
fn race(hook: &str) -> (World, NodeRoot, Run) {
    let (world, root) = node(&home_spec(&declared_home()));
    user_home(&root);
    root.mkdir("/etc/systemd", 0o755);
    let before = etc(&root);
    let run = apply_with_meddling(&root, hook, || swap_in_link(&root));
    assert_etc_untouched(&root, &before, &run);
    assert!(!root.host("/etc/systemd/user.conf").exists());
    (world, root, run)
}

#[test]
fn a_link_swapped_in_between_plan_and_apply_is_not_followed() {
    let (_world, _root, run) = race("planned:1");
    run.refused(
        EXIT_APPLY,
        &["/home/app/.config is a symlink (to ../../etc)"],
    );
}

#[test]
fn a_link_swapped_in_between_staging_and_rename_changes_nothing_outside() {
    // Stopped right after the file was created beside its target: its
    // owner, mode and rename must happen in that same directory, not in
    // whatever the path names by then.
    let (_world, root, run) = race("create:1");
    assert_eq!(
        root.read("/home/app/.config.old/systemd/user.conf"),
        b"[Manager]\n",
        "the file was put in the directory that was checked\n{}",
        run.describe()
    );
    // The steps after it (settling attributes, locking) refuse the path
    // through the link, and so does check.
    run.refused(
        EXIT_APPLY,
        &["/home/app/.config: changed while apply ran: a Link where apply made a Directory"],
    );
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    assert!(
        check
            .stdout
            .contains("/home/app/.config is a symlink (to ../../etc)"),
        "{}",
        check.describe()
    );
}

#[test]
fn check_reports_a_managed_path_that_now_passes_a_link() {
    // After apply, the user moves their (mutable) .config aside, unchanged,
    // and links to it: a check that followed the link would see identical
    // files and report nothing.
    let (_world, root) = node(&home_spec(&declared_home()));
    user_home(&root);
    root.apply().ok();
    root.driftless("check", &[], &[]).ok();
    std::fs::rename(
        root.host("/home/app/.config"),
        root.host("/home/app/.config.real"),
    )
    .expect("move .config aside");
    user_link(&root, "/home/app/.config", ".config.real");
    assert_eq!(
        root.read("/home/app/.config/systemd/user.conf"),
        b"[Manager]\n",
        "through the link, the file looks unchanged"
    );
    let check = root.driftless("check", &[], &[]);
    assert_eq!(check.code, Some(EXIT_DRIFT), "{}", check.describe());
    for path in [
        "/home/app/.config/systemd: cannot be checked: /home/app/.config is a symlink",
        "/home/app/.config/systemd/user.conf: cannot be checked: /home/app/.config is a symlink",
    ] {
        assert!(check.stdout.contains(path), "{path}\n{}", check.describe());
    }
    assert!(
        check.stdout.contains("/home/app/.config: kind changed"),
        "{}",
        check.describe()
    );
    let mode = std::fs::metadata(root.host("/home/app/.config.real/systemd"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "nothing was changed by the check");
}

#[test]
fn a_release_in_more_directories_than_open_files_allow_is_applied() {
    // Each staged file holds its directory's handle until it is renamed;
    // apply puts a batch in place before it holds too many, so a release
    // spread over 300 directories applies with 256 open files at most.
    let files: String = (0..300)
        .map(|i| format!("  - {{ path: /srv/d{i:03}/f, content: \"{i}\\n\" }}\n"))
        .collect();
    let (world, root) = node(&format!("files:\n{files}"));
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=256")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_driftless"))
        .args(["apply", "--root"])
        .arg(root.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", world.home())
        .env("LC_ALL", "C")
        .current_dir(world.home());
    let done = servers::run_bounded(&mut cmd, release::DRIFTLESS_TIMEOUT).expect("run apply");
    assert_eq!(
        done.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        done.describe()
    );
    eprintln!("apply of 300 directories: {:?}", done.elapsed);
    assert_eq!(root.read("/srv/d299/f"), b"299\n");
    root.driftless("check", &[], &[]).ok();
}
