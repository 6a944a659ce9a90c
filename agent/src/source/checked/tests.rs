//! The check against a pack git made of a channel-like history: indexed
//! when within its bounds, refused past each bound and past the deadline,
//! with nothing left beside the quarantine's objects.

use super::*;
use crate::source::test_git::git;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Twenty commits of a small document, as a channel's history is, and
/// the pack of all of it (with deltas) git makes; its tip.
fn channel_pack(dir: &Path) -> (Vec<u8>, String) {
    git(dir, &["init", "-q", "-b", "channel", "."]);
    for sequence in 1..=20 {
        let doc = format!(
            "channel: channel\nfleet: web\nsequence: {sequence}\n{}",
            "x: y\n".repeat(50)
        );
        std::fs::write(dir.join("channel.yaml"), doc).expect("write");
        git(dir, &["add", "."]);
        git(
            dir,
            &["commit", "-q", "-m", &format!("sequence {sequence}")],
        );
    }
    let tip = String::from_utf8(git(dir, &["rev-parse", "HEAD"])).expect("utf-8");
    let mut pack = Command::new("git")
        .args(["pack-objects", "--stdout", "--revs", "--delta-base-offset"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pack-objects");
    pack.stdin
        .take()
        .expect("stdin")
        .write_all(b"channel\n")
        .expect("revs");
    let out = pack.wait_with_output().expect("pack");
    assert!(out.status.success());
    (out.stdout, tip.trim().to_owned())
}

fn limits() -> Limits {
    Limits::channel(
        &FetchSettings::default(),
        1 << 20,
        Instant::now() + Duration::from_secs(60),
    )
}

fn release_limits() -> Limits {
    Limits::release(
        &FetchSettings::default(),
        1 << 20,
        Instant::now() + Duration::from_secs(60),
    )
}

#[test]
fn a_releases_objects_are_bounded_below_what_the_pack_reader_takes() {
    let limits = release_limits();
    assert_eq!(limits.objects, MAX_RELEASE_OBJECTS);
    assert!(MAX_RELEASE_OBJECTS < u64::from(crate::source::pack::MAX_OBJECTS));
}

fn quarantine() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path().join("q.git")).expect("init");
    (dir, repo)
}

fn leftovers(repo: &Repository) -> Vec<String> {
    std::fs::read_dir(repo.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("checked"))
        .collect()
}

#[test]
fn a_channels_pack_passes_and_is_indexed() {
    let src = tempfile::tempdir().expect("tempdir");
    let (pack, tip) = channel_pack(src.path());
    let (_dir, repo) = quarantine();
    index(&repo, pack.as_slice(), &limits(), "the bundle").expect("indexed");
    let tip = git2::Oid::from_str(&tip).expect("oid");
    assert_eq!(repo.find_commit(tip).expect("the tip").parent_count(), 1);
    assert!(leftovers(&repo).is_empty(), "{:?}", leftovers(&repo));
}

#[test]
fn each_bound_refuses_the_pack_and_indexes_nothing() {
    let src = tempfile::tempdir().expect("tempdir");
    let (pack, tip) = channel_pack(src.path());
    let tip = git2::Oid::from_str(&tip).expect("oid");
    let cases: Vec<(Limits, &str)> = vec![
        (
            Limits {
                inflated: 2000,
                ..limits()
            },
            "fetch.channel_max_bytes",
        ),
        (
            Limits {
                objects: 10,
                ..limits()
            },
            "more than 10 objects",
        ),
        (
            Limits {
                object: 100,
                ..limits()
            },
            "holds none over 100;",
        ),
        (
            Limits {
                received: 100,
                ..limits()
            },
            "fetch.max_bytes",
        ),
        (
            Limits {
                deadline: Instant::now(),
                ..limits()
            },
            "not read within fetch.deadline",
        ),
        // A release's pack says what bounds it.
        (
            Limits {
                objects: 10,
                ..release_limits()
            },
            "the release's pack holds more than 10 objects (bounded by fetch.max_bytes)",
        ),
        (
            Limits {
                inflated: 2000,
                ..release_limits()
            },
            "the release's pack inflates to more than fetch.max_bytes",
        ),
    ];
    for (limits, says) in cases {
        let (_dir, repo) = quarantine();
        match index(&repo, pack.as_slice(), &limits, "the bundle") {
            Err(Failure::Refused(why)) => {
                assert!(
                    why.starts_with("the bundle: ") && why.contains(says),
                    "{why} lacks {says:?}"
                );
            }
            other => panic!("{says}: {other:?}"),
        }
        assert!(repo.find_commit(tip).is_err(), "{says}: nothing indexed");
        assert!(
            leftovers(&repo).is_empty(),
            "{says}: {:?}",
            leftovers(&repo)
        );
    }
}

#[test]
fn a_pack_cut_short_is_worth_another_try() {
    let src = tempfile::tempdir().expect("tempdir");
    let (pack, _) = channel_pack(src.path());
    let (_dir, repo) = quarantine();
    let cut = &pack[..pack.len() / 2];
    assert!(matches!(
        index(&repo, cut, &limits(), "the bundle"),
        Err(Failure::Transient(_))
    ));
}
