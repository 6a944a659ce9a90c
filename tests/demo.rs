//! The README's main command, `driftless demo`, run as a user would: it
//! must show the whole life of a node and end with the node asking to be
//! replaced for the promoted release.

use std::process::Command;

#[test]
fn the_demo_shows_a_node_from_first_boot_to_its_replacement() {
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .arg("demo")
        .output()
        .expect("run driftless demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\n--- stdout\n{stdout}--- stderr\n{stderr}"
    );
    for expected in [
        "applied release v1",
        "greeting=hello from v1",
        "status     applied",
        "demo-node-0001 asks to be replaced: release-changed: v1 -> v2",
        "replace    requested (v1 -> v2)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n--- stdout\n{stdout}--- stderr\n{stderr}"
        );
    }
    if nix::unistd::geteuid().is_root() {
        assert!(
            stdout.contains("(locked)"),
            "as root the demo's node is locked\n{stdout}"
        );
    }
}
