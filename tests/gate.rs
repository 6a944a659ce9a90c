//! The gate on every unit type a release installs, judged by systemd's own
//! tools offline: a release with a service, a socket, a timer, a path, a
//! mount, an automount, a swap, a target and a slice is applied to a node
//! root (no systemd runs it, so nothing is started), then
//!
//! - `systemd-analyze verify` loads each unit with its drop-ins from the
//!   root's `/etc/systemd/system` and finds nothing wrong;
//! - `systemd-analyze condition --unit=U` evaluates each unit's conditions
//!   as systemd would before starting it, in a private mount namespace
//!   where the root's `/var/lib` and `/run` are the system's (the
//!   conditions name absolute paths): every unit may start on the node
//!   whose release passed, none on the node whose health check failed, and
//!   while apply starts the units (its window in `/run`) they may, until a
//!   reboot empties `/run`;
//! - the services' gate, `driftless gate`, agrees.
//!
//! The real boot (early mounts, sockets, timers and paths started or
//! skipped by systemd at boot, before `driftless-apply.service` runs) is
//! `tests/vm/run.sh`. Runs as root (as CI does): it mounts.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use release::{Config, Key, NodeRoot, Release, Tagging, World};
use servers::run_bounded;

/// Exit code: a health check failed.
const EXIT_HEALTH: i32 = 8;
/// Exit code: the node spec is invalid.
const EXIT_SPEC: i32 = 6;
/// `driftless gate`: the release's services may not start.
const GATE_CLOSED: i32 = 1;
/// Time limit of one systemd-analyze run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// The path the gate of every unit but the services names.
const OPEN_PATH: &str = "/var/lib/driftless/gate-open";
/// The start window apply opens while it starts the release's units.
const WINDOW: &str = "/run/driftless/starting-units";

/// Every unit of the release, and its file.
const UNITS: &[(&str, &str)] = &[
    (
        "app.service",
        "[Unit]\nDescription=The release's app\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    ),
    (
        "app.socket",
        "[Socket]\nListenStream=127.0.0.1:7070\n\n[Install]\nWantedBy=sockets.target\n",
    ),
    (
        "tick.service",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    ),
    (
        "tick.timer",
        "[Timer]\nOnBootSec=1h\n\n[Install]\nWantedBy=timers.target\n",
    ),
    (
        "spool.service",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    ),
    (
        "spool.path",
        "[Path]\nPathExists=/run/spool-ready\n\n[Install]\nWantedBy=paths.target\n",
    ),
    (
        "srv-data.mount",
        "[Mount]\nWhat=tmpfs\nWhere=/srv/data\nType=tmpfs\n\n[Install]\nWantedBy=local-fs.target\n",
    ),
    (
        "srv-auto.mount",
        "[Mount]\nWhat=tmpfs\nWhere=/srv/auto\nType=tmpfs\n",
    ),
    (
        "srv-auto.automount",
        "[Automount]\nWhere=/srv/auto\n\n[Install]\nWantedBy=local-fs.target\n",
    ),
    (
        "var-swapfile.swap",
        "[Swap]\nWhat=/var/swapfile\n\n[Install]\nWantedBy=swap.target\n",
    ),
    (
        "app.target",
        "[Unit]\nDescription=The release\nWants=app.service\n\n[Install]\nWantedBy=multi-user.target\n",
    ),
    ("app.slice", "[Slice]\nMemoryMax=1G\n"),
];

/// The release: [`UNITS`] (the services a socket, timer or path starts
/// are neither enabled nor started on their own) and one health check.
fn release(health: &str) -> Release {
    let mut spec = String::from("units:\n");
    let mut release = Release::new("");
    for (name, text) in UNITS {
        let triggered = matches!(*name, "tick.service" | "spool.service" | "srv-auto.mount");
        let extra = if triggered {
            ", enabled: false, started: false"
        } else {
            ""
        };
        spec.push_str(&format!(
            "  - {{ name: {name}, source: units/{name}{extra} }}\n"
        ));
        release = release.file(&format!("units/{name}"), text);
    }
    spec.push_str(&format!("health:\n  - exec: [{health}]\n    timeout: 1s\n"));
    release.file("driftless.yaml", spec)
}

/// A root with the release of `repo` applied (offline: not started).
fn applied(world: &World, key: &Key, repo: &str, health: &str) -> NodeRoot {
    let published = world.publish(repo, &release(health), release::TAG, Tagging::Signed(key));
    world.configured_root(repo, key, &Config::new(&published.file_url()))
}

/// The units of the release that are not services.
fn non_services() -> impl Iterator<Item = &'static str> {
    UNITS
        .iter()
        .map(|(name, _)| *name)
        .filter(|n| !n.ends_with(".service"))
}

/// `program` with the root's `/etc/systemd/system` first on systemd's unit
/// path (and the system's after it, for the targets the units name).
fn with_root_units(program: &str, root: &NodeRoot) -> Command {
    let mut cmd = Command::new(program);
    let units = root.host("/etc/systemd/system");
    cmd.env(
        "SYSTEMD_UNIT_PATH",
        format!("{}:", units.to_str().expect("UTF-8 root path")),
    )
    .env("SYSTEMD_LOG_COLOR", "0")
    .env("LC_ALL", "C");
    cmd
}

/// Each unit's verdict of `systemd-analyze condition --unit=UNIT`, run in a
/// private mount namespace where the root's `/var/lib` and `/run` are
/// bind-mounted over the system's: (unit, may start, what it printed).
fn conditions(root: &NodeRoot, units: &[&str]) -> Vec<(String, bool, String)> {
    std::fs::create_dir_all(root.host("/run")).expect("mkdir /run");
    let script = r#"set -e
root=$1; shift
mount --bind "$root/var/lib" /var/lib
mount --bind "$root/run" /run
for unit in "$@"; do
  if out=$(systemd-analyze condition --unit="$unit" 2>&1); then rc=0; else rc=$?; fi
  printf '%s\t%s\t%s\n' "$unit" "$rc" "$(printf '%s' "$out" | tr '\n' ' ')"
done
"#;
    let mut cmd = with_root_units("unshare", root);
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(root.path())
        .args(units);
    let done = run_bounded(&mut cmd, TOOL_TIMEOUT).expect("run unshare");
    assert!(done.success(), "unshare failed\n{}", done.describe());
    let verdicts: Vec<(String, bool, String)> = done
        .stdout
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let unit = fields.next().expect("unit").to_owned();
            let rc = fields.next().expect("rc");
            let out = fields.next().unwrap_or_default().to_owned();
            (unit, rc == "0", out)
        })
        .collect();
    assert_eq!(verdicts.len(), units.len(), "{}", done.describe());
    verdicts
}

/// Asserts that systemd would start every unit in `units` (`open`), or
/// skip every one for the gate's condition.
fn assert_gate(root: &NodeRoot, units: &[&str], open: bool, when: &str) {
    for (unit, may_start, out) in conditions(root, units) {
        assert_eq!(may_start, open, "{when}: {unit}: {out}");
        let named = out.contains(&format!("ConditionPathExists={OPEN_PATH}"));
        assert!(named, "{when}: {unit} is gated by {OPEN_PATH}: {out}");
    }
}

#[test]
fn every_unit_type_is_gated_by_the_release_s_verdict() {
    let world = World::new();
    let key = world.keygen("release");
    let healthy = applied(&world, &key, "healthy.git", "/bin/true");
    healthy.apply().ok();
    let failed = applied(&world, &key, "failed.git", "/bin/false");
    failed
        .apply()
        .refused(EXIT_HEALTH, &["health check", "/bin/false"]);

    // Every unit and its drop-in as systemd reads them. A service's
    // `driftless gate` is checked to be executable, which it is only on a
    // node; the rest must be clean.
    let names: Vec<&str> = UNITS.iter().map(|(n, _)| *n).collect();
    let verify = run_bounded(
        with_root_units("systemd-analyze", &healthy)
            .args(["verify", "--man=no"])
            .args(&names),
        TOOL_TIMEOUT,
    )
    .expect("run systemd-analyze verify");
    let complaints: Vec<&str> = verify
        .stderr
        .lines()
        .filter(|l| {
            !(Path::new("/usr/bin/driftless").exists()
                || l.ends_with(
                    ": Command /usr/bin/driftless is not executable: No such file or directory",
                ))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify\n{}",
        verify.describe()
    );
    let gated: Vec<&str> = non_services().collect();
    assert_gate(&failed, &gated, false, "the release failed");
    failed
        .driftless("gate", &[], &[])
        .refused(GATE_CLOSED, &["failed at health"]);
    assert_gate(&healthy, &gated, true, "the release passed");
    healthy.driftless("gate", &[], &[]).ok();
    for name in &names {
        let dropin = healthy.read_text(&format!(
            "/etc/systemd/system/{name}.d/50-driftless-gate.conf"
        ));
        let expected = if name.ends_with(".service") {
            "\n[Service]\nExecCondition=+/usr/bin/driftless gate\n"
        } else {
            "\n[Unit]\nConditionPathExists=/var/lib/driftless/gate-open\nRequiresMountsFor=/var/lib/driftless\n"
        };
        assert!(dropin.contains(expected), "{name}: {dropin}");
    }

    // The window in which apply starts the units (as it opens it: the
    // window's file in /run, the gate's path a link to it) opens them; a
    // reboot empties /run and shuts them again.
    std::fs::create_dir_all(failed.host("/run/driftless")).expect("mkdir");
    failed.write(WINDOW, "c0ffee 1 1\n");
    std::os::unix::fs::symlink(WINDOW, failed.host(OPEN_PATH)).expect("link");
    assert_gate(&failed, &gated, true, "while apply starts the units");
    std::fs::remove_file(failed.host(WINDOW)).expect("reboot");
    assert_gate(&failed, &gated, false, "after a reboot in the window");

    // The next apply of the failed node shuts the gate before anything
    // else, and keeps it shut when it fails again.
    failed
        .apply()
        .refused(EXIT_HEALTH, &["health check", "/bin/false"]);
    assert!(failed.host(OPEN_PATH).symlink_metadata().is_err());

    // An applied node whose gate file went missing gets it back from the
    // check that apply makes at every boot.
    std::fs::remove_file(healthy.host(OPEN_PATH)).expect("remove");
    assert_gate(&healthy, &gated, false, "the gate's file missing");
    healthy.apply().ok();
    assert_gate(&healthy, &gated, true, "set right by the boot's check");
}

#[test]
fn a_unit_that_would_escape_its_gate_is_refused() {
    let world = World::new();
    let key = world.keygen("release");
    let mount = "[Mount]\\nWhat=tmpfs\\nWhere=/var/lib\\nType=tmpfs\\n";
    for (repo, spec, needles) in [
        // A mount over the gate's own file.
        (
            "over.git",
            format!("units:\n  - {{ name: var-lib.mount, content: \"{mount}\" }}\n"),
            ["unit var-lib.mount", "would mount over /var/lib/driftless"],
        ),
        // A unit written as a plain file, or enabled by a plain link.
        (
            "file.git",
            format!("files:\n  - {{ path: /etc/systemd/system/srv.mount, content: \"{mount}\" }}\n"),
            ["files[0]", "install units under `units:`"],
        ),
        (
            "link.git",
            "links:\n  - { path: /etc/systemd/system/multi-user.target.wants/ssh.service, target: /lib/systemd/system/ssh.service }\n".to_owned(),
            ["links[0]", "install units under `units:`"],
        ),
    ] {
        let published = world.publish(
            repo,
            &Release::new(&spec),
            release::TAG,
            Tagging::Signed(&key),
        );
        let root = world.configured_root(repo, &key, &Config::new(&published.file_url()));
        let before = root.snapshot();
        root.apply().refused(EXIT_SPEC, &needles);
        assert_eq!(
            release::diff(&before, &root.snapshot()),
            Vec::<String>::new(),
            "{repo}"
        );
    }
}
