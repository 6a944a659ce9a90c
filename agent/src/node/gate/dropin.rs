//! The gate's drop-ins: what each unit type of the release gets (see the
//! parent module for why), and the places in the spec that could install a
//! unit beside them, refused.

use crate::node::systemd::UNIT_DIR;
use crate::release::spec::UnitName;
use crate::types::NodePath;

/// The name of the drop-in that gates each of the release's units.
pub const DROPIN_NAME: &str = "50-driftless-gate.conf";

/// A service's drop-in. `+`: the condition runs as root outside the unit's
/// sandbox and `User=`, since the node's record is root's alone (0700).
pub const SERVICE_DROPIN: &str = "\
# Written by driftless: start this service only on a node whose release was
# applied. `driftless gate` exits 0 when /var/lib/driftless/state.json records
# the pinned release as applied (or while driftless apply starts the units),
# and 1 otherwise, which makes systemd skip the service without failing it.
[Service]
ExecCondition=+/usr/bin/driftless gate
";

/// The drop-in of every other unit type: a `[Unit]` condition, which
/// systemd checks before each start of any unit, and the mount of the
/// filesystem that holds its path.
pub const UNIT_DROPIN: &str = "\
# Written by driftless: start this unit only on a node whose release was
# applied. /var/lib/driftless/gate-open exists only then (or, as a link into
# /run, while driftless apply starts the units); otherwise systemd skips the
# unit without failing it, at every boot.
[Unit]
ConditionPathExists=/var/lib/driftless/gate-open
RequiresMountsFor=/var/lib/driftless
";

/// Directories the gate reads: a release may not mount anything over them,
/// their parents or their contents (as escaped in a mount unit's name).
const GATE_DIRS: [&str; 2] = ["var-lib-driftless", "run-driftless"];

/// Where the gate drop-in of `unit` goes, and its text. Refuses a mount
/// (or automount) of the root, or of a directory the gate reads, one of
/// their parents or anything inside them: the gate could not be read, or
/// would read what the mount put there.
pub fn dropin(unit: &UnitName) -> Result<(NodePath, &'static str), String> {
    let name = unit.as_str();
    let (stem, kind) = name.rsplit_once('.').unwrap_or((name, ""));
    if matches!(kind, "mount" | "automount") && covers_gate(stem) {
        return Err(format!(
            "{name} would mount over /var/lib/driftless or /run/driftless (or a \
             parent), which the gate on the release's units reads"
        ));
    }
    let text = if kind == "service" {
        SERVICE_DROPIN
    } else {
        UNIT_DROPIN
    };
    let path = NodePath::new(&format!("{UNIT_DIR}/{name}.d/{DROPIN_NAME}"))?;
    Ok((path, text))
}

/// The directories systemd loads system units from. A unit put there by
/// the spec's `files:` or `links:` would start without its gate.
const UNIT_DIRS: [&str; 13] = [
    "/etc/systemd/system",
    "/etc/systemd/system.control",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.control",
    "/run/systemd/system.attached",
    "/run/systemd/transient",
    "/run/systemd/generator",
    "/run/systemd/generator.early",
    "/run/systemd/generator.late",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Refuses a `files:` (`is_file`) or `links:` entry at `path` that would
/// install or enable a unit beside the gate: in systemd's unit directories
/// a release writes only drop-ins (`UNIT.d/NAME.conf` files); its units go
/// under `units:`, which gates them.
pub fn outside_unit_dirs(path: &NodePath, is_file: bool) -> Result<(), String> {
    for dir in UNIT_DIRS {
        let Some(rest) = path
            .as_str()
            .strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            continue;
        };
        let dropin = rest.split_once('/').is_some_and(|(unit, file)| {
            unit.ends_with(".d") && file.ends_with(".conf") && !file.contains('/')
        });
        if is_file && dropin {
            return Ok(());
        }
        return Err(format!(
            "{path} is in systemd's unit directory {dir}: install units under `units:`, \
             where they are gated, and only drop-ins (UNIT.d/NAME.conf) as files"
        ));
    }
    Ok(())
}

/// Whether a mount point, escaped as in a mount unit's name, is `/`, a
/// directory the gate reads, one of their parents, or inside one of them.
fn covers_gate(stem: &str) -> bool {
    stem == "-"
        || GATE_DIRS.iter().any(|dir| {
            dir.strip_prefix(stem)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
                || stem
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::gate::OPEN_PATH;

    fn unit(name: &str) -> UnitName {
        UnitName::new(name).expect("valid test unit name")
    }

    #[test]
    fn every_unit_type_gets_a_drop_in() {
        let condition = "\n[Unit]\nConditionPathExists=/var/lib/driftless/gate-open\n";
        for name in [
            "app.service",
            "app.socket",
            "backup.timer",
            "spool.path",
            "srv-data.mount",
            "srv-data.automount",
            "swapfile.swap",
            "app.target",
            "app.slice",
            "getty@tty9.service",
        ] {
            let (path, text) = dropin(&unit(name)).expect(name);
            assert_eq!(
                path.as_str(),
                format!("/etc/systemd/system/{name}.d/50-driftless-gate.conf")
            );
            if name.ends_with(".service") {
                assert!(
                    text.contains("\n[Service]\nExecCondition=+/usr/bin/driftless gate\n"),
                    "{name}"
                );
            } else {
                assert!(text.contains(condition), "{name}: {text}");
                assert!(text.ends_with("RequiresMountsFor=/var/lib/driftless\n"));
            }
            assert!(text.contains(OPEN_PATH) || text.contains("driftless gate"));
        }
    }

    #[test]
    fn a_mount_over_what_the_gate_reads_is_refused() {
        for name in [
            "-.mount",
            "var.mount",
            "var-lib.mount",
            "var-lib-driftless.mount",
            "var-lib-driftless-cache.git.mount",
            "run.automount",
            "run-driftless.mount",
        ] {
            let err = dropin(&unit(name)).expect_err(name);
            assert!(
                err.starts_with(&format!("{name} would mount over")),
                "{err}"
            );
        }
        for name in [
            "var-lib-app.mount",
            "var-lib-driftlessx.mount",
            "run-user.mount",
            "srv.mount",
            "var.service",
            "var-lib-driftless.swap",
        ] {
            assert!(dropin(&unit(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn units_go_under_units_only_drop_ins_under_files() {
        let path = |p: &str| NodePath::new(p).expect("valid");
        for ok in [
            "/etc/systemd/system/nginx.service.d/10-limits.conf",
            "/usr/lib/systemd/system/app.socket.d/x.conf",
            "/etc/systemd/system.conf",
            "/etc/systemd/journald.conf",
            "/etc/app/app.service",
        ] {
            assert_eq!(outside_unit_dirs(&path(ok), true), Ok(()), "{ok}");
        }
        for (bad, is_file) in [
            ("/etc/systemd/system/data.mount", true),
            (
                "/etc/systemd/system/multi-user.target.wants/ssh.service",
                false,
            ),
            ("/etc/systemd/system/nginx.service.d/10-limits.conf", false),
            ("/etc/systemd/system/nginx.service.d/notes.txt", true),
            ("/etc/systemd/system/a.service.d/b/c.conf", true),
            ("/run/systemd/generator.early/x.swap", true),
            ("/lib/systemd/system/x.timer", true),
        ] {
            let err = outside_unit_dirs(&path(bad), is_file).expect_err(bad);
            assert!(err.contains("install units under `units:`"), "{err}");
        }
    }
}
