//! End-to-end tests of the operator's commands, run as a release engineer
//! runs them, on repositories made with the real `git` and `ssh-keygen`:
//! `driftless lint` (a work tree, a tag, an agent config, user-data),
//! `driftless verify` refusing a well-signed tag a node would refuse,
//! `driftless config check`, `driftless release` (the user's own git
//! signing settings, no `-c` flags), `driftless diff` (two tags, a node's
//! release and a tag), and `driftless completions`. Each refusal is
//! checked against what a node does with the same input (`driftless
//! apply` on a scratch root).

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use release::{Config, Key, PRINCIPAL, Release, Tagging, World};
use servers::{Finished, isolate_git_env, run_bounded};

const EXIT_CONFIG: i32 = 3;
const EXIT_VERIFY: i32 = 5;
const EXIT_SPEC: i32 = 6;

/// A release engineer's clone: `work/NAME`, with the user's own git
/// signing settings in its config (as `git config` would set them).
struct Clone<'w> {
    world: &'w World,
    dir: PathBuf,
}

impl<'w> Clone<'w> {
    fn new(world: &'w World, name: &str, key: &Key, trusted: &[&Key]) -> Self {
        let dir = world.path("work").join(name);
        world.tool(world.git().args(["init", "-q", "-b", "main"]).arg(&dir));
        let clone = Self { world, dir };
        let allowed = world.path(&format!("{name}-allowed_signers"));
        let lines: Vec<String> = trusted.iter().map(|k| k.allowed(PRINCIPAL)).collect();
        fs::write(&allowed, lines.join("\n") + "\n").expect("write allowed_signers");
        clone.git(&[
            "config",
            "user.signingKey",
            &key.private.display().to_string(),
        ]);
        clone.git(&[
            "config",
            "gpg.ssh.allowedSignersFile",
            &allowed.display().to_string(),
        ]);
        clone
    }

    fn git(&self, args: &[&str]) -> String {
        let mut cmd = self.world.git();
        cmd.arg("-C").arg(&self.dir).args(args);
        self.world.tool(&mut cmd)
    }

    fn write(&self, path: &str, bytes: impl AsRef<[u8]>) {
        let host = self.dir.join(path);
        fs::create_dir_all(host.parent().expect("a parent")).expect("mkdir");
        fs::write(host, bytes).expect("write");
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// `driftless ARGS` run in the clone, as its user.
    fn driftless(&self, args: &[&str]) -> Finished {
        driftless_in(self.world, &self.dir, args)
    }
}

fn driftless_in(world: &World, dir: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
    isolate_git_env(&mut cmd, &world.home());
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Release Bot")
        .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
        .env("GIT_COMMITTER_NAME", "Release Bot")
        .env("GIT_COMMITTER_EMAIL", PRINCIPAL)
        .env("DRIFTLESS_LOG", "warn");
    let done = run_bounded(&mut cmd, Duration::from_secs(90)).expect("run driftless");
    assert!(!done.timed_out(), "{args:?} hung\n{}", done.describe());
    done
}

fn code(done: &Finished) -> Option<i32> {
    done.status.and_then(|s| s.code())
}

fn json(done: &Finished) -> serde_json::Value {
    serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", done.describe()))
}

const GOOD_SPEC: &str = "directories:\n  - { path: /etc/app, mode: \"0755\" }\nfiles:\n  - { path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }\nlinks:\n  - { path: /etc/app/current, target: /etc/app/app.conf }\n";

#[test]
fn lint_judges_the_work_tree_as_a_node_would_and_changes_nothing() {
    let world = World::new();
    let key = world.keygen("release");
    let clone = Clone::new(&world, "app", &key, &[&key]);
    clone.write("files/app.conf", "port=8080\n");
    clone.write("driftless.yaml", GOOD_SPEC);
    clone.commit("first");
    let good = clone.driftless(&["lint"]);
    assert_eq!(code(&good), Some(0), "{}", good.describe());
    assert!(
        good.stdout.contains("good: a node accepts this release"),
        "{}",
        good.describe()
    );

    // Three mistakes a node refuses, none committed yet: lint sees the work
    // tree as `git add -A` would commit it.
    let spec = "directories:\n  - { path: /etc/app, mode: \"0755\" }\nfiles:\n  - { path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }\n  - { path: /etc/app/extra.conf, source: files/extra.conf }\n  - { path: /etc/app/owned, content: x, owner: www-data }\nhealth:\n  - { exec: [/etc/app/app.conf] }\n";
    clone.write("driftless.yaml", spec);
    let index_before = fs::read(clone.dir.join(".git/index")).expect("index");
    let objects_before = count_files(&clone.dir.join(".git/objects"));
    let bad = clone.driftless(&["lint", "--json"]);
    assert_eq!(code(&bad), Some(EXIT_SPEC), "{}", bad.describe());
    let findings = json(&bad)["release"]["findings"].clone();
    let errors: BTreeSet<String> = findings
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["level"] == "error")
        .map(|f| f["check"].as_str().expect("check").to_owned())
        .collect();
    assert_eq!(
        errors,
        ["health", "sources"].map(String::from).into(),
        "the missing source and the health check that cannot run: {findings}"
    );
    // Once the source is there, the unknown owner is what is left (the
    // plan stops at its first refusal, as apply does).
    clone.write("files/extra.conf", "x\n");
    let owner = clone.driftless(&["lint"]);
    assert_eq!(code(&owner), Some(EXIT_SPEC), "{}", owner.describe());
    assert!(
        owner
            .stdout
            .contains("error: plan: user www-data is not in /etc/passwd")
            && owner.stdout.contains("--base"),
        "{}",
        owner.describe()
    );
    // With the image's accounts (--base), the owner resolves.
    let base = world.root("image");
    fs::write(
        base.host("/etc/passwd"),
        format!(
            "{}www-data:x:33:33::/var/www:/usr/sbin/nologin\n",
            release::BASE_PASSWD
        ),
    )
    .expect("passwd");
    let with_base = clone.driftless(&["lint", "--base", &base.path().display().to_string()]);
    assert!(
        !with_base.stdout.contains("error: plan"),
        "{}",
        with_base.describe()
    );
    // Lint wrote nothing into the repository: not its index, not an object.
    assert_eq!(
        fs::read(clone.dir.join(".git/index")).expect("index"),
        index_before
    );
    assert_eq!(count_files(&clone.dir.join(".git/objects")), objects_before);
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            n += count_files(&entry.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn verify_refuses_a_well_signed_tag_whose_spec_a_node_refuses() {
    let world = World::new();
    let key = world.keygen("release");
    // Mode 644 unquoted: YAML reads a number, the spec wants a quoted mode.
    let bad = Release::new("files:\n  - { path: /etc/app.conf, content: x, mode: 644 }\n");
    let published = world.publish("bad.git", &bad, "v1", Tagging::Signed(&key));
    let allowed = world.path("allowed_signers");
    fs::write(&allowed, key.allowed(PRINCIPAL) + "\n").expect("write");
    let repo = published.bare.display().to_string();
    let allowed_arg = allowed.display().to_string();
    // The oracle: git itself finds the signature good.
    let mut oracle = world.git();
    oracle
        .arg("-C")
        .arg(&published.bare)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={allowed_arg}"))
        .args(["verify-tag", "v1"]);
    world.tool(&mut oracle);
    let verdict = driftless_in(
        &world,
        &world.home(),
        &[
            "verify",
            "--repo",
            &repo,
            "--allowed-signers",
            &allowed_arg,
            "v1",
        ],
    );
    assert_eq!(code(&verdict), Some(EXIT_SPEC), "{}", verdict.describe());
    let last = verdict.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: tag v1: a node refuses this release: spec: driftless.yaml: ")
            && last.contains("quoted"),
        "{}",
        verdict.describe()
    );
    assert!(
        !verdict.stdout.contains("good signature"),
        "{}",
        verdict.describe()
    );
    // The signature alone is good, as git says.
    let signature = driftless_in(
        &world,
        &world.home(),
        &[
            "verify",
            "--repo",
            &repo,
            "--allowed-signers",
            &allowed_arg,
            "--signature-only",
            "v1",
        ],
    );
    assert_eq!(code(&signature), Some(0), "{}", signature.describe());
    // And a node refuses the tag with the same exit code.
    let node = world.configured_root("node", &key, &{
        let mut c = Config::new(&published.file_url());
        c.tag = "v1".into();
        c
    });
    let applied = node.apply();
    assert_eq!(applied.code, Some(EXIT_SPEC), "{}", applied.describe());
}

#[test]
fn config_check_reads_a_config_and_the_one_inside_user_data() {
    let world = World::new();
    let dir = world.path("configs");
    fs::create_dir(&dir).expect("mkdir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let check = |path: &str| driftless_in(&world, &dir, &["config", "check", path]);
    let good = write(
        "agent.yaml",
        "source:\n  url: https://git.example.com/r.git\ntrust:\n  allowed_signers: /etc/driftless/allowed_signers\nrelease:\n  tag: v1\n",
    );
    let done = check(&good);
    assert_eq!(code(&done), Some(0), "{}", done.describe());
    assert!(done.stdout.contains("runs tag v1"), "{}", done.describe());
    // A typo inside user-data: cloud-init's schema accepts it, a node not.
    let typo = write(
        "user-data.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/driftless/agent.yaml\n    content: |\n      source:\n        url: https://git.example.com/r.git\n      trust:\n        allowed_signer: /etc/driftless/allowed_signers\n      release:\n        tag: v1\n",
    );
    let done = check(&typo);
    assert_eq!(code(&done), Some(EXIT_CONFIG), "{}", done.describe());
    assert!(
        done.stdout.contains("write_files[0]") && done.stdout.contains("allowed_signer"),
        "{}",
        done.describe()
    );
    // The same, base64-encoded, is read as cloud-init reads it.
    let encoded = write(
        "user-data-b64.yaml",
        &format!(
            "#cloud-config\nwrite_files:\n  - path: /etc/driftless/agent.yaml\n    encoding: b64\n    content: {}\n",
            base64_of(&fs::read_to_string(&good).expect("read"))
        ),
    );
    let done = check(&encoded);
    assert_eq!(code(&done), Some(0), "{}", done.describe());
    // A trust file the user-data writes is parsed as a node parses it.
    let trust = write(
        "user-data-trust.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/driftless/agent.yaml\n    content: |\n      source: {url: 'https://g/r.git'}\n      trust: {allowed_signers: /etc/driftless/allowed_signers}\n      release: {tag: v1}\n  - path: /etc/driftless/allowed_signers\n    content: |\n      alice@example.com, bob@example.com ssh-ed25519 AAAA\n",
    );
    let done = check(&trust);
    assert_eq!(code(&done), Some(EXIT_CONFIG), "{}", done.describe());
    assert!(
        done.stdout.contains("ends with a comma"),
        "{}",
        done.describe()
    );
    // User-data that writes no config at all.
    let none = write("user-data-none.yaml", "#cloud-config\nruncmd: [[true]]\n");
    let done = check(&none);
    assert_eq!(code(&done), Some(EXIT_CONFIG), "{}", done.describe());
    assert!(
        done.stdout.contains("writes no /etc/driftless/agent.yaml"),
        "{}",
        done.describe()
    );
    // The shipped examples are good.
    for example in [
        "user-data.yaml",
        "user-data-channel.yaml",
        "user-data-runcmd.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cloud-init")
            .join(example);
        let done = check(&path.display().to_string());
        assert_eq!(code(&done), Some(0), "{example}\n{}", done.describe());
    }
}

fn base64_of(text: &str) -> String {
    let mut cmd = Command::new("base64");
    cmd.arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("base64");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("base64");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn release_tags_with_the_users_own_signing_settings_and_keeps_no_refused_tag() {
    let world = World::new();
    let key = world.keygen("release");
    let stranger = world.keygen("stranger");
    let clone = Clone::new(&world, "app", &key, &[&key]);
    clone.write("files/app.conf", "port=8080\n");
    clone.write("driftless.yaml", GOOD_SPEC);
    clone.commit("first");
    let remote = world.srv().join("app.git");
    world.tool(world.git().args(["init", "-q", "--bare"]).arg(&remote));
    clone.git(&["remote", "add", "origin", &remote.display().to_string()]);

    let done = clone.driftless(&["release", "v1", "--push"]);
    assert_eq!(code(&done), Some(0), "{}", done.describe());
    assert!(
        done.stdout.contains("good signature on tag v1"),
        "{}",
        done.describe()
    );
    // git itself verifies the tag driftless made, and the remote has it.
    clone.git(&["verify-tag", "v1"]);
    let remote_tag = world.tool(
        world
            .git()
            .arg("-C")
            .arg(&remote)
            .args(["rev-parse", "refs/tags/v1"]),
    );
    assert_eq!(remote_tag, clone.git(&["rev-parse", "refs/tags/v1"]));
    // Never tagged twice.
    let again = clone.driftless(&["release", "v1"]);
    assert_ne!(code(&again), Some(0), "{}", again.describe());
    assert!(
        again.stderr.contains("already exists"),
        "{}",
        again.describe()
    );

    // A spec a node refuses: no tag is made.
    clone.write(
        "driftless.yaml",
        "files:\n  - { path: /etc/x, source: files/none }\n",
    );
    clone.commit("broken");
    let refused = clone.driftless(&["release", "v2"]);
    assert_eq!(code(&refused), Some(EXIT_SPEC), "{}", refused.describe());
    assert!(clone.git(&["tag", "-l", "v2"]).is_empty(), "no tag v2");

    // Signed by a key the nodes do not trust: made, refused, deleted.
    clone.write("driftless.yaml", GOOD_SPEC);
    clone.commit("fixed");
    clone.git(&[
        "config",
        "user.signingKey",
        &stranger.private.display().to_string(),
    ]);
    let untrusted = clone.driftless(&["release", "v2"]);
    assert_eq!(
        code(&untrusted),
        Some(EXIT_VERIFY),
        "{}",
        untrusted.describe()
    );
    assert!(
        untrusted.stderr.contains("the tag was deleted again"),
        "{}",
        untrusted.describe()
    );
    assert!(
        clone.git(&["tag", "-l", "v2"]).is_empty(),
        "the refused tag is gone"
    );
    // Without a signing key, it says how to set one, and makes nothing.
    clone.git(&["config", "--unset", "user.signingKey"]);
    let keyless = clone.driftless(&["release", "v2"]);
    assert_eq!(code(&keyless), Some(EXIT_CONFIG), "{}", keyless.describe());
    assert!(
        keyless.stderr.contains("git config user.signingKey"),
        "{}",
        keyless.describe()
    );
    // --signing-key names the key for one run.
    let named = clone.driftless(&[
        "release",
        "v2",
        "--signing-key",
        &key.private.display().to_string(),
    ]);
    assert_eq!(code(&named), Some(0), "{}", named.describe());
}

/// The changes `driftless diff --json` lists, one line each.
fn diff_lines(value: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in value["paths"].as_array().expect("paths") {
        let what: Vec<&str> = p["what"]
            .as_array()
            .expect("what")
            .iter()
            .map(|w| w.as_str().expect("text"))
            .collect();
        out.insert(format!(
            "{} {} {}",
            p["change"].as_str().expect("change"),
            p["path"].as_str().expect("path"),
            what.join("; ")
        ));
    }
    for s in value["spec"].as_array().expect("spec") {
        out.insert(format!(
            "{} {} {}",
            s["change"].as_str().expect("change"),
            s["section"].as_str().expect("section"),
            s["name"].as_str().expect("name")
        ));
    }
    out
}

#[test]
fn diff_of_two_real_tags_lists_exactly_the_changes_made() {
    let world = World::new();
    let key = world.keygen("release");
    let clone = Clone::new(&world, "app", &key, &[&key]);
    let v1_spec = "directories:\n  - { path: /etc/app, mode: \"0755\" }\nfiles:\n  - { path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }\n  - { path: /etc/app/same.conf, content: \"same\\n\" }\n  - { path: /etc/app/old.conf, content: \"old\\n\" }\n  - { path: /opt/blob, source: files/blob }\nlinks:\n  - { path: /etc/app/current, target: /etc/app/app.conf }\nunits:\n  - { name: app.service, content: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\" }\nhealth:\n  - { exec: [/bin/true] }\n";
    clone.write("driftless.yaml", v1_spec);
    clone.write("files/app.conf", "port=8080\nworkers=4\n");
    clone.write("files/blob", [0u8, 1, 2, 3]);
    clone.commit("v1");
    let v1 = clone.driftless(&["release", "v1"]);
    assert_eq!(code(&v1), Some(0), "{}", v1.describe());
    // The changes: one file's text, one binary file, one mode, one file
    // added, one removed, one link target, a unit disabled, a user and a
    // health check added, a read-only mount.
    let v2_spec = "directories:\n  - { path: /etc/app, mode: \"0750\" }\nfiles:\n  - { path: /etc/app/app.conf, source: files/app.conf, mode: \"0640\" }\n  - { path: /etc/app/same.conf, content: \"same\\n\" }\n  - { path: /etc/app/new.conf, content: \"new\\n\" }\n  - { path: /opt/blob, source: files/blob }\nlinks:\n  - { path: /etc/app/current, target: /etc/app/new.conf }\nunits:\n  - { name: app.service, enabled: false, content: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\" }\nusers:\n  - { name: app, system: true }\nhealth:\n  - { exec: [/bin/true] }\n  - { http: \"http://127.0.0.1:8080/ready\" }\nlock:\n  read_only: [/etc/app]\n";
    clone.write("driftless.yaml", v2_spec);
    clone.write("files/app.conf", "port=9090\nworkers=4\n");
    clone.write("files/blob", [0u8, 1, 2, 4, 5]);
    clone.commit("v2");
    let v2 = clone.driftless(&["release", "v2"]);
    assert_eq!(code(&v2), Some(0), "{}", v2.describe());

    let done = clone.driftless(&["diff", "v1", "v2", "--json"]);
    assert_eq!(code(&done), Some(0), "{}", done.describe());
    let value = json(&done);
    let expected: BTreeSet<String> = [
        "changed /etc/app mode 0755 -> 0750",
        "changed /etc/app/app.conf content",
        "changed /opt/blob content",
        "added /etc/app/new.conf file, 0644 0:0, 4 bytes",
        "removed /etc/app/old.conf file, 0644 0:0, 4 bytes",
        "changed /etc/app/current target /etc/app/app.conf -> /etc/app/new.conf",
        "removed /etc/systemd/system/multi-user.target.wants/app.service link -> /etc/systemd/system/app.service",
        "changed unit app.service",
        "added user app",
        "added health http http://127.0.0.1:8080/ready (expecting 200)",
        "added read-only /etc/app",
    ]
    .map(String::from)
    .into();
    assert_eq!(diff_lines(&value), expected, "{}", done.describe());
    // Text gets a unified diff; binary, sizes and digests.
    let text = value["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .find(|p| p["path"] == "/etc/app/app.conf")
        .expect("app.conf");
    let unified = text["content"]["unified"].as_str().expect("unified diff");
    assert!(
        unified.contains("-port=8080\n+port=9090\n") && unified.contains(" workers=4"),
        "{unified}"
    );
    let blob = value["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .find(|p| p["path"] == "/opt/blob")
        .expect("blob");
    assert_eq!(blob["content"]["type"], "binary", "{blob}");
    assert_eq!(
        (
            blob["content"]["old_len"].as_u64(),
            blob["content"]["new_len"].as_u64()
        ),
        (Some(4), Some(5))
    );
    // A release against itself: nothing.
    let same = clone.driftless(&["diff", "v2", "v2", "--json"]);
    assert!(diff_lines(&json(&same)).is_empty(), "{}", same.describe());

    // A node built from v1, against v2: the same changes.
    let bare = world.srv().join("app.git");
    world.tool(world.git().args(["init", "-q", "--bare"]).arg(&bare));
    clone.git(&[
        "push",
        "-q",
        &bare.display().to_string(),
        "refs/tags/v1",
        "refs/tags/v2",
    ]);
    let node = world.configured_root("node", &key, &{
        let mut c = Config::new(&format!("file://{}", bare.display()));
        c.tag = "v1".into();
        c
    });
    node.apply().ok();
    let from_node = clone.driftless(&[
        "diff",
        "--node",
        &node.path().display().to_string(),
        "v2",
        "--json",
        "--allowed-signers",
        &world.path("app-allowed_signers").display().to_string(),
    ]);
    assert_eq!(code(&from_node), Some(0), "{}", from_node.describe());
    assert_eq!(
        diff_lines(&json(&from_node)),
        expected,
        "{}",
        from_node.describe()
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let world = World::new();
    for shell in ["bash", "zsh", "fish"] {
        let done = driftless_in(&world, &world.home(), &["completions", shell]);
        assert_eq!(code(&done), Some(0), "{shell}\n{}", done.describe());
        for sub in [
            "lint", "release", "diff", "fleet", "config", "verify", "apply",
        ] {
            assert!(done.stdout.contains(sub), "{shell} completion lacks {sub}");
        }
        if shell == "bash" {
            let script = world.path("driftless.bash");
            fs::write(&script, &done.stdout).expect("write");
            let mut cmd = Command::new("bash");
            cmd.arg("-n").arg(&script);
            world.tool(&mut cmd);
        }
    }
    let wrong = driftless_in(&world, &world.home(), &["completions", "tcsh"]);
    assert_eq!(code(&wrong), Some(2), "{}", wrong.describe());
}
