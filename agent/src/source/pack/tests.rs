//! The reader against packs git made, and against every truncation and
//! flipped byte of one.

use super::*;
use crate::source::test_git::git;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// Keeps every object in memory, and each one's compressed bytes.
#[derive(Default)]
struct Memory {
    by_offset: HashMap<u64, (ObjectKind, Vec<u8>)>,
    raw: HashMap<u64, (Begin, Vec<u8>)>,
    objects: HashMap<ObjectId, (ObjectKind, Vec<u8>)>,
    ids: HashMap<ObjectId, u64>,
    current: Option<(Begin, Vec<u8>, Vec<u8>)>,
}

impl ObjectStore for Memory {
    fn begin(&mut self, object: Begin) -> Result<(), String> {
        self.current = Some((object, Vec::new(), Vec::new()));
        Ok(())
    }
    fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.current
            .as_mut()
            .ok_or("no object")?
            .2
            .extend_from_slice(bytes);
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.current
            .as_mut()
            .ok_or("no object")?
            .1
            .extend_from_slice(bytes);
        Ok(())
    }
    fn end(&mut self) -> Result<(), String> {
        let (begin, bytes, raw) = self.current.take().ok_or("no object")?;
        self.by_offset.insert(begin.offset, (begin.kind, bytes));
        self.raw.insert(begin.offset, (begin, raw));
        Ok(())
    }
    fn identify(&mut self, offset: u64, id: ObjectId) -> Result<(), String> {
        let object = self.by_offset.get(&offset).ok_or("unknown offset")?.clone();
        self.ids.entry(id).or_insert(offset);
        self.objects.entry(id).or_insert(object);
        Ok(())
    }
    fn base(&mut self, base: Base) -> Result<Option<BaseObject>, String> {
        let offset = match base {
            Base::Id(id) => self.ids.get(&id).copied(),
            Base::Offset(o) => Some(o),
        };
        Ok(offset.and_then(|offset| {
            let (kind, bytes) = self.by_offset.get(&offset)?.clone();
            Some(BaseObject {
                offset,
                kind,
                bytes: BaseBytes::Memory(bytes),
            })
        }))
    }
}

/// A repository whose files are near copies of each other (so that
/// pack-objects makes deltas), and a pack of all of it made by git.
fn fixture(ofs_delta: bool) -> (tempfile::TempDir, Vec<u8>, Vec<(String, String)>) {
    fixture_in(ObjectFormat::Sha1, ofs_delta)
}

/// [`fixture`] in a repository of `format`.
fn fixture_in(
    format: ObjectFormat,
    ofs_delta: bool,
) -> (tempfile::TempDir, Vec<u8>, Vec<(String, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let object_format = format!("--object-format={}", format.name());
    git(path, &["init", "-q", "-b", "main", &object_format, "."]);
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!(
            "line {i} of a file that pack-objects will deltify\n"
        ));
    }
    for n in 0..6 {
        let mut variant = text.clone();
        variant.push_str(&format!("variant {n}\n"));
        std::fs::write(path.join(format!("f{n}.txt")), variant).expect("write");
    }
    git(path, &["add", "."]);
    git(path, &["commit", "-q", "-m", "one"]);
    git(path, &["tag", "-a", "-m", "a tag", "v1"]);
    let listed = String::from_utf8(git(path, &["rev-list", "--objects", "--all"])).expect("utf-8");
    let ids: Vec<(String, String)> = listed
        .lines()
        .map(|l| {
            let id = l.split(' ').next().unwrap_or_default().to_owned();
            let kind = String::from_utf8(git(path, &["cat-file", "-t", &id]))
                .expect("utf-8")
                .trim()
                .to_owned();
            (id, kind)
        })
        .collect();
    let mut args = vec!["pack-objects", "--stdout", "--revs", "-q"];
    if ofs_delta {
        args.push("--delta-base-offset");
    }
    let mut child = Command::new("git")
        .args(&args)
        .current_dir(path)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pack-objects");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"refs/tags/v1\n").expect("write revs");
    }
    let out = child.wait_with_output().expect("pack-objects output");
    assert!(out.status.success());
    (dir, out.stdout, ids)
}

#[test]
fn reads_what_git_packs_with_both_kinds_of_delta() {
    let cases = [ObjectFormat::Sha1, ObjectFormat::Sha256]
        .into_iter()
        .flat_map(|format| [(format, true), (format, false)]);
    for (format, ofs) in cases {
        let (dir, pack, ids) = fixture_in(format, ofs);
        let mut store = Memory::default();
        let summary = read_pack(&pack[..], format, &mut store).expect("read pack");
        assert_eq!(summary.objects as usize, ids.len());
        assert_eq!(summary.bytes, pack.len() as u64);
        for (id, kind) in &ids {
            let oid = ObjectId::from_hex_in(format, id).expect("hex");
            let (found_kind, bytes) = store.objects.get(&oid).expect("object present");
            assert_eq!(found_kind.as_str(), kind);
            let expected = git(dir.path(), &["cat-file", kind, id]);
            assert_eq!(bytes, &expected, "{kind} {id}");
        }
        // What the store was handed as compressed bytes is each object's
        // whole zlib stream: inflated again, it gives the object (or, for
        // a delta, the delta that rebuilds it from its base).
        for (offset, (begin, raw)) in &store.raw {
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_end(&mut inflated)
                .expect("inflate");
            let (_, bytes) = &store.by_offset[offset];
            match begin.delta {
                None => assert_eq!(&inflated, bytes, "object at {offset}"),
                Some((base, len)) => {
                    assert_eq!(inflated.len() as u64, len);
                    let (_, base) = &store.by_offset[&base];
                    assert_eq!(&apply_delta(base, &inflated).expect("delta"), bytes);
                }
            }
        }
    }
}

#[test]
fn git_made_deltas_of_the_fixture() {
    // The test above is worth something only if the packs hold deltas.
    struct Loads(Vec<Base>, Memory);
    impl ObjectStore for Loads {
        fn begin(&mut self, object: Begin) -> Result<(), String> {
            self.1.begin(object)
        }
        fn write(&mut self, b: &[u8]) -> Result<(), String> {
            self.1.write(b)
        }
        fn end(&mut self) -> Result<(), String> {
            self.1.end()
        }
        fn identify(&mut self, o: u64, id: ObjectId) -> Result<(), String> {
            self.1.identify(o, id)
        }
        fn base(&mut self, b: Base) -> Result<Option<BaseObject>, String> {
            self.0.push(b);
            self.1.base(b)
        }
    }
    for (format, ofs) in [
        (ObjectFormat::Sha1, true),
        (ObjectFormat::Sha1, false),
        (ObjectFormat::Sha256, false),
    ] {
        let (_dir, pack, _) = fixture_in(format, ofs);
        let mut loads = Loads(Vec::new(), Memory::default());
        read_pack(&pack[..], format, &mut loads).expect("read");
        assert!(
            !loads.0.is_empty(),
            "pack-objects deltified the near copies"
        );
        assert!(
            loads.0.iter().all(|b| matches!(b, Base::Offset(_)) == ofs),
            "offset deltas exactly when asked for"
        );
    }
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let (_dir, pack, _) = fixture(true);
    for cut in (0..pack.len()).step_by(97).chain([pack.len() - 1]) {
        let result = read_pack(&pack[..cut], ObjectFormat::Sha1, &mut Memory::default());
        assert!(result.is_err(), "a pack cut at {cut} was accepted");
    }
    let mut extra = pack.clone();
    extra.push(0);
    assert!(read_pack(&extra[..], ObjectFormat::Sha1, &mut Memory::default()).is_err());
    for at in (0..pack.len()).step_by(53) {
        let mut bad = pack.clone();
        bad[at] ^= 0x40;
        assert!(
            read_pack(&bad[..], ObjectFormat::Sha1, &mut Memory::default()).is_err(),
            "a pack with byte {at} flipped was accepted"
        );
    }
    // A SHA-256 pack read as SHA-1 (or the other way round) is refused:
    // the trailer and every id have another length.
    let (_dir, sha256, _) = fixture_in(ObjectFormat::Sha256, false);
    assert!(read_pack(&sha256[..], ObjectFormat::Sha1, &mut Memory::default()).is_err());
    assert!(read_pack(&pack[..], ObjectFormat::Sha256, &mut Memory::default()).is_err());
    let mut bad = sha256.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(read_pack(&bad[..], ObjectFormat::Sha256, &mut Memory::default()).is_err());
}
