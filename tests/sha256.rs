//! Releases from SHA-256 repositories (`git init --object-format=sha256`),
//! made at run time with the real `git` and `ssh-keygen`: a first boot
//! streamed over smart HTTP (real git-http-backend behind nginx) applied
//! byte for byte, and a stranger's tag refused there before anything is
//! written.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use release::{Config, REPO, Release, TAG, Tagging, World};
use servers::{SmartHttp, noise};

/// Exit code: a signature or pin was refused.
const EXIT_VERIFY: i32 = 5;

fn sha256_release() -> Release {
    Release::new(
        "files:\n  - { path: /srv/payload.bin, source: files/payload.bin }\n  - { path: /etc/app/app.conf, source: files/app.conf }\n",
    )
    .file("files/payload.bin", noise(512 * 1024, 7))
    .file("files/app.conf", "listen = 8080\n")
}

#[test]
fn a_sha256_release_boots_over_smart_http_byte_for_byte() {
    let world = World::sha256();
    let key = world.keygen("release");
    let release = sha256_release();
    let published = world.publish(REPO, &release, TAG, Tagging::Signed(&key));
    assert_eq!(published.tag_object.len(), 64, "git made a SHA-256 tag");
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let root = world.configured_root("node", &key, &Config::new(&http.http_url(REPO)));
    root.apply().ok();
    assert_eq!(
        root.read("/srv/payload.bin"),
        release.bytes("files/payload.bin")
    );
    assert_eq!(
        root.read("/etc/app/app.conf"),
        release.bytes("files/app.conf")
    );
    let state = root.state().expect("state.json");
    assert_eq!(state["release"]["commit"], published.commit.as_str());
    assert_eq!(
        state["release"]["tag_object"],
        published.tag_object.as_str()
    );
}

#[test]
fn a_sha256_release_signed_by_a_stranger_is_refused_and_writes_nothing() {
    let world = World::sha256();
    let trusted = world.keygen("release");
    let stranger = world.keygen("stranger");
    let release = sha256_release();
    world.publish(REPO, &release, TAG, Tagging::Signed(&stranger));
    let http = SmartHttp::start(&world.srv()).expect("start smart HTTP");
    let root = world.configured_root("node", &trusted, &Config::new(&http.http_url(REPO)));
    let before = root.snapshot();
    let run = root.apply();
    run.refused(EXIT_VERIFY, &[TAG, "not in allowed_signers"]);
    assert_eq!(
        release::diff(&before, &root.snapshot()),
        Vec::<String>::new(),
        "the root is untouched"
    );
    assert!(
        !root.host("/var/lib/driftless/incoming").exists(),
        "nothing of the refused pack is left"
    );
    assert!(root.state().is_none(), "no state was recorded");
}
