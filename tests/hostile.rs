//! Hostile packs against a first boot's streamed fetch (HTTP, protocol
//! v2): a server may send any bytes, and a node must neither fill its disk
//! nor spend unbounded work before, or beyond, what a verified release
//! names. The server here is a hand-written fake (`support/hostile.rs`):
//! no real git server sends these packs. The release, its key and its
//! signed tag are real (`git`, `ssh-keygen`), and so is everything the
//! node does.
//!
//! The same packs are also served as static files (`source.kind: static`,
//! the layout `driftless publish` writes, nginx serving a plain directory):
//! what bounds a first boot from git bounds one from a mirror.
//!
//! Each test serves one crafted pack and runs the built `driftless apply`
//! under `/usr/bin/time`, sampling the node's `/var/lib/driftless` every
//! millisecond, and asserts: the one-line refusal and its exit code, a
//! single fetch (a refusal is not retried), nothing applied, and the disk
//! within the bound docs/security.md states. Each prints its figures (run
//! with `--nocapture` to see them).

#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use hostile::{
    HostileV2, Kind, Measured, PackWriter, copying_delta, measure_apply, release_objects,
};
use release::{Config, Key, NodeRoot, Published, REPO, Release, Snapshot, TAG, Tagging, World};
use servers::noise;

/// Exit code: the release could not be fetched.
const EXIT_FETCH: i32 = 4;
/// Exit code: a signature was refused.
const EXIT_VERIFY: i32 = 5;

/// What a node may hold under `/var/lib/driftless` before the tag and its
/// commit verified: none of the pack (the staging directory is empty), so
/// only the agent's own records, well under this.
const BEFORE_TRUST_BYTES: u64 = 64 * 1024;
/// ... and at most this many files (its records).
const HANDFUL: u64 = 4;
/// Peak resident memory allowed under any hostile pack, KiB: the normal
/// apply peaks near 12 MiB (`cargo bench --bench apply`); the bounds
/// (8 MiB held unnamed, one object's compressed bytes, buffers) keep a
/// hostile pack near it.
const MAX_RSS_KIB: u64 = 48 * 1024;
/// The zero blob of the delta bomb, and each delta's result.
const BOMB_OBJECT: u64 = 64 << 20;
/// Deltas in the bomb: 40 × 64 MiB = 2.5 GiB from a pack of ~70 KB.
const BOMB_DELTAS: u64 = 40;

/// A release, its signed tag and its objects in git's order.
struct Fixture {
    world: World,
    key: Key,
    published: Published,
    objects: Vec<(Kind, Vec<u8>)>,
    /// Bytes of the release's blobs (what it declares).
    blob_bytes: u64,
    blob_count: u64,
}

/// A node spec writing `count` files of `len` pseudo-random bytes each.
fn release_of(count: usize, len: usize) -> Release {
    let mut spec = String::from("files:\n");
    for i in 0..count {
        spec.push_str(&format!(
            "  - {{ path: /srv/app/f{i}, source: files/f{i} }}\n"
        ));
    }
    let mut release = Release::new(&spec);
    for i in 0..count {
        release = release.file(&format!("files/f{i}"), noise(len, 7 + i as u64));
    }
    release
}

impl Fixture {
    fn new(release: &Release) -> Self {
        let world = World::new();
        let key = world.keygen("release");
        let published = world.publish(REPO, release, TAG, Tagging::Signed(&key));
        let objects = release_objects(&world.home(), &published.bare, TAG);
        let blobs = objects.iter().filter(|(k, _)| *k == Kind::Blob);
        Self {
            blob_bytes: blobs.clone().map(|(_, b)| b.len() as u64).sum(),
            blob_count: blobs.count() as u64,
            world,
            key,
            published,
            objects,
        }
    }

    /// A fresh node root trusting the release key, fetching from `server`.
    fn root(&self, name: &str, server: &Served) -> NodeRoot {
        let config = match server {
            Served::Git(server) => Config::new(&server.url()),
            Served::Daemon(server) => Config::new(&server.git_url()),
            Served::Static(http, dir) => {
                let mut config = Config::new(&http.static_url(dir));
                config.kind = Some("static".into());
                config
            }
        };
        self.world.configured_root(name, &self.key, &config)
    }

    /// Serves `pack` from the fake git server and runs `driftless apply`
    /// against it.
    fn run(&self, name: &str, pack: Vec<u8>) -> (Measured, NodeRoot, Served, Snapshot) {
        self.run_on(name, pack, Transport::Git)
    }

    /// Serves `pack` as the tag's pack over `transport` and runs `driftless
    /// apply` against it.
    fn run_on(
        &self,
        name: &str,
        pack: Vec<u8>,
        transport: Transport,
    ) -> (Measured, NodeRoot, Served, Snapshot) {
        eprintln!(
            "{name} ({transport:?}): serving a pack of {} bytes",
            pack.len()
        );
        let name = match transport {
            Transport::Git => name.to_owned(),
            Transport::Daemon => format!("{name}-daemon"),
            Transport::Static => format!("{name}-static"),
            Transport::GitSha256 => format!("{name}-sha256"),
        };
        let server = serve(
            &self.world,
            transport,
            &name,
            &self.published.tag_object,
            pack,
        );
        let root = self.root(&name, &server);
        let before = root.snapshot();
        let measured = measure_apply(&root, &self.world.home());
        (measured, root, server, before)
    }

    /// The release's objects, whole, in git's order.
    fn write_release(&self, pack: &mut PackWriter) {
        for (kind, data) in &self.objects {
            pack.object(*kind, data);
        }
    }
}

/// How a crafted pack reaches the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// The fake protocol v2 server, over smart HTTP.
    Git,
    /// The same server as git daemon: `git://`.
    Daemon,
    /// Static files (`tags/TAG`, `releases/ID.pack`) behind nginx.
    Static,
    /// The fake protocol v2 server as a SHA-256 repository: the pack is
    /// read with SHA-256 ids. Only for packs refused before their tag
    /// (the fixture's release is SHA-1).
    GitSha256,
}

/// Every transport the streamed fetch reads.
const TRANSPORTS: [Transport; 3] = [Transport::Git, Transport::Daemon, Transport::Static];

/// A server of one crafted pack.
enum Served {
    Git(HostileV2),
    /// The same, at its `git://` URL.
    Daemon(HostileV2),
    /// nginx, and the directory under its base that holds the files.
    Static(Box<servers::SmartHttp>, String),
}

impl Served {
    /// How many times the pack was asked for.
    fn fetches(&self) -> u64 {
        match self {
            Served::Git(server) | Served::Daemon(server) => server.fetches(),
            Served::Static(http, _) => {
                // The tag file and the pack: nginx logs a request a moment
                // after the client saw its end.
                let log = http
                    .wait_for_requests(2, std::time::Duration::from_secs(5))
                    .expect("access log");
                log.iter().filter(|e| e.uri.contains("/releases/")).count() as u64
            }
        }
    }
}

/// Serves `pack` as what `tag_object` names, over `transport`.
fn serve(
    world: &World,
    transport: Transport,
    name: &str,
    tag_object: &str,
    pack: Vec<u8>,
) -> Served {
    match transport {
        Transport::Git => Served::Git(HostileV2::start(TAG, tag_object, pack)),
        Transport::Daemon => Served::Daemon(HostileV2::start(TAG, tag_object, pack)),
        // A 64-digit id the pack never delivers: what is refused comes first.
        Transport::GitSha256 => Served::Git(HostileV2::start_sha256(
            TAG,
            &format!("{tag_object:0<64}"),
            pack,
        )),
        Transport::Static => {
            let dir = format!("static-{name}");
            write_static(world, &dir, tag_object, &pack);
            let http = servers::SmartHttp::start(&world.srv()).expect("nginx");
            Served::Static(Box::new(http), dir)
        }
    }
}

/// Writes `srv/DIR/tags/TAG` naming `tag_object` and `pack` as its
/// `releases/TAG_OBJECT.pack`: the layout `driftless publish` writes.
fn write_static(world: &World, dir: &str, tag_object: &str, pack: &[u8]) {
    let base = world.srv().join(dir);
    std::fs::create_dir_all(base.join("tags")).expect("tags dir");
    std::fs::create_dir_all(base.join("releases")).expect("releases dir");
    std::fs::write(base.join("tags").join(TAG), format!("{tag_object}\n")).expect("tag file");
    std::fs::write(base.join(format!("releases/{tag_object}.pack")), pack).expect("pack file");
}

/// A zero blob of [`BOMB_OBJECT`] bytes and [`BOMB_DELTAS`] deltas that
/// each copy it whole: 2.5 GiB from about 70 KB.
fn write_bomb(pack: &mut PackWriter) {
    let zero = vec![0u8; BOMB_OBJECT as usize];
    let base = pack.object(Kind::Blob, &zero);
    for _ in 0..BOMB_DELTAS {
        pack.ofs_delta(base, &copying_delta(BOMB_OBJECT, BOMB_OBJECT));
    }
}

/// `count` one-byte blobs.
fn write_tiny_blobs(pack: &mut PackWriter, count: u32) {
    for i in 0..count {
        pack.object(Kind::Blob, &[(i % 251) as u8]);
    }
}

/// Asserts a refusal with exit `code` whose one error line contains every
/// needle, after one fetch, with nothing applied and `/var/lib/driftless`
/// within `max_bytes` and `max_files` all along; prints the figures.
fn assert_refused(
    what: &str,
    run: &(Measured, NodeRoot, Served, Snapshot),
    code: i32,
    needles: &[&str],
    max_bytes: u64,
    max_files: u64,
) {
    let (m, root, server, before) = run;
    eprintln!(
        "{what}: exit {:?} after {:?}; peak under /var/lib/driftless {} bytes in {} files; \
         peak RSS {} KiB",
        m.code, m.elapsed, m.peak_bytes, m.peak_files, m.peak_rss_kib
    );
    let describe = || format!("{what}\n--- stderr\n{}", m.stderr);
    assert_eq!(m.code, Some(code), "{}", describe());
    let lines: Vec<&str> = m
        .stderr
        .lines()
        .filter(|l| !release::is_log_line(l) && !l.starts_with("Command exited"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line\n{}", describe());
    assert!(lines[0].starts_with("error: "), "{}", describe());
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "lacks {needle:?}\n{}",
            describe()
        );
    }
    assert_eq!(
        server.fetches(),
        1,
        "a refusal is not retried\n{}",
        describe()
    );
    assert!(
        m.peak_bytes <= max_bytes && m.peak_files <= max_files,
        "{what}: /var/lib/driftless peaked at {} bytes in {} files; the bound is {max_bytes} \
         bytes in {max_files} files",
        m.peak_bytes,
        m.peak_files
    );
    assert!(
        m.peak_rss_kib > 0 && m.peak_rss_kib <= MAX_RSS_KIB,
        "{what}: peak RSS {} KiB; the bound is {MAX_RSS_KIB} KiB",
        m.peak_rss_kib
    );
    assert_eq!(
        release::diff(before, &root.snapshot()),
        Vec::<String>::new(),
        "{what}: nothing is applied"
    );
    assert!(
        !root.host("/var/lib/driftless/incoming").exists(),
        "{what}: the staging directory is removed"
    );
}

// ---------------------------------------------------------------------------
// The delta bomb
// ---------------------------------------------------------------------------

#[test]
fn a_delta_bomb_before_the_signed_tag_writes_nothing() {
    let f = Fixture::new(&release_of(3, 4096));
    let mut pack = PackWriter::new();
    write_bomb(&mut pack);
    f.write_release(&mut pack);
    let pack = pack.finish();
    assert!(
        pack.len() < 100_000,
        "the bomb is small: {} bytes",
        pack.len()
    );
    for transport in TRANSPORTS.into_iter().chain([Transport::GitSha256]) {
        let run = f.run_on("bomb-first", pack.clone(), transport);
        assert_refused(
            &format!("delta bomb before the tag ({transport:?})"),
            &run,
            EXIT_FETCH,
            &["before the signed tag", "not retried"],
            BEFORE_TRUST_BYTES,
            HANDFUL,
        );
    }
}

#[test]
fn a_delta_bomb_after_a_verified_release_writes_only_the_release() {
    let f = Fixture::new(&release_of(3, 64 * 1024));
    let declared = (f.blob_bytes + BEFORE_TRUST_BYTES, f.blob_count + HANDFUL);
    // After every blob the release names: recognised as junk at once.
    let mut pack = PackWriter::new();
    f.write_release(&mut pack);
    write_bomb(&mut pack);
    let run = f.run("bomb-last", pack.finish());
    assert_refused(
        "delta bomb after the release",
        &run,
        EXIT_FETCH,
        &["does not name", "not retried"],
        declared.0,
        declared.1,
    );
    // Before the release's last blob: each object must be recognised
    // (inflated and hashed) before it is known to be junk.
    let mut pack = PackWriter::new();
    let (last, rest) = f.objects.split_last().expect("objects");
    for (kind, data) in rest {
        pack.object(*kind, data);
    }
    write_bomb(&mut pack);
    pack.object(last.0, &last.1);
    let run = f.run("bomb-inside", pack.finish());
    assert_refused(
        "delta bomb among the release's blobs",
        &run,
        EXIT_FETCH,
        &["does not name", "not retried"],
        declared.0,
        declared.1,
    );
}

#[test]
fn a_release_signed_by_a_stranger_is_refused_before_its_bomb() {
    let f = Fixture::new(&release_of(3, 4096));
    let stranger = f.world.keygen("stranger");
    let forged = f.world.publish(
        "forged.git",
        &release_of(2, 100),
        TAG,
        Tagging::Signed(&stranger),
    );
    let mut pack = PackWriter::new();
    for (kind, data) in release_objects(&f.world.home(), &forged.bare, TAG) {
        pack.object(kind, &data);
    }
    write_bomb(&mut pack);
    let pack = pack.finish();
    for transport in TRANSPORTS {
        let name = format!("forged-{transport:?}");
        let server = serve(&f.world, transport, &name, &forged.tag_object, pack.clone());
        let root = f.root(&name, &server);
        let before = root.snapshot();
        let measured = measure_apply(&root, &f.world.home());
        assert_refused(
            &format!("stranger's tag, then a bomb ({transport:?})"),
            &(measured, root, server, before),
            EXIT_VERIFY,
            &[TAG, "not in allowed_signers"],
            BEFORE_TRUST_BYTES,
            HANDFUL,
        );
    }
}

// ---------------------------------------------------------------------------
// Many tiny blobs
// ---------------------------------------------------------------------------

#[test]
fn two_hundred_thousand_tiny_blobs_make_no_files() {
    let f = Fixture::new(&release_of(3, 4096));
    let mut pack = PackWriter::new();
    write_tiny_blobs(&mut pack, 200_000);
    f.write_release(&mut pack);
    let pack = pack.finish();
    assert!(pack.len() < 5 << 20, "about 4 MB: {}", pack.len());
    for transport in TRANSPORTS {
        let run = f.run_on("tiny-first", pack.clone(), transport);
        assert_refused(
            &format!("200,000 one-byte blobs before the tag ({transport:?})"),
            &run,
            EXIT_FETCH,
            &["4096 objects", "before the signed tag"],
            BEFORE_TRUST_BYTES,
            HANDFUL,
        );
    }
    let mut pack = PackWriter::new();
    f.write_release(&mut pack);
    write_tiny_blobs(&mut pack, 200_000);
    let run = f.run("tiny-last", pack.finish());
    assert_refused(
        "200,000 one-byte blobs after the release",
        &run,
        EXIT_FETCH,
        &["4096 objects", "does not name"],
        f.blob_bytes + BEFORE_TRUST_BYTES,
        f.blob_count + HANDFUL,
    );
}

// ---------------------------------------------------------------------------
// Another order than git's
// ---------------------------------------------------------------------------

/// The release's objects, blobs first, then trees, then the commit and tag.
fn write_reversed(f: &Fixture, pack: &mut PackWriter) {
    for kinds in [
        [Kind::Blob, Kind::Blob],
        [Kind::Tree, Kind::Tree],
        [Kind::Commit, Kind::Tag],
    ] {
        for (kind, data) in &f.objects {
            if kinds.contains(kind) {
                pack.object(*kind, data);
            }
        }
    }
}

#[test]
fn a_large_release_sent_blobs_first_is_refused_before_anything_is_written() {
    // 20 MiB of files: more than may be held before the tag verifies.
    let f = Fixture::new(&release_of(20, 1 << 20));
    let mut pack = PackWriter::new();
    write_reversed(&f, &mut pack);
    let pack = pack.finish();
    for transport in TRANSPORTS {
        let run = f.run_on("reversed", pack.clone(), transport);
        assert_refused(
            &format!("a 20 MiB release, blobs first ({transport:?})"),
            &run,
            EXIT_FETCH,
            &["before the signed tag", "git sends those first"],
            BEFORE_TRUST_BYTES,
            HANDFUL,
        );
    }
}

#[test]
fn a_small_release_in_any_order_is_held_then_applied() {
    // Within the bound a node holds before trust, order does not matter.
    let f = Fixture::new(&release_of(4, 100 * 1024));
    // git's own order first: the normal apply, for comparison.
    for (name, order) in [("git's order", 2), ("reversed", 0), ("trees-first", 1)] {
        let mut pack = PackWriter::new();
        if order == 2 {
            f.write_release(&mut pack);
        } else if order == 0 {
            write_reversed(&f, &mut pack);
        } else {
            for (kind, data) in f.objects.iter().filter(|(k, _)| *k == Kind::Tree) {
                pack.object(*kind, data);
            }
            for (kind, data) in f.objects.iter().filter(|(k, _)| *k != Kind::Tree) {
                pack.object(*kind, data);
            }
        }
        let (m, root, server, _) = f.run(name, pack.finish());
        assert_eq!(m.code, Some(0), "{name}\n{}", m.stderr);
        assert_eq!(server.fetches(), 1);
        for i in 0..4 {
            assert_eq!(
                root.read(&format!("/srv/app/f{i}")),
                noise(100 * 1024, 7 + i as u64),
                "{name}: /srv/app/f{i}"
            );
        }
        assert!(m.peak_bytes <= f.blob_bytes + (1 << 20), "{name}: {m:?}");
        eprintln!(
            "{name}: applied; peak under /var/lib/driftless {} bytes in {} files; peak RSS {} KiB",
            m.peak_bytes, m.peak_files, m.peak_rss_kib
        );
    }
}

// ---------------------------------------------------------------------------
// git's own pack, deltas and all
// ---------------------------------------------------------------------------

#[test]
fn a_pack_git_made_with_deltas_applies() {
    // Blobs under 1 MiB are held whole while their id is computed and
    // written from memory; larger ones are held compressed and inflated
    // again by the writer, a delta applied to its base's file: both ways.
    deltified_release_applies(3_000);
    deltified_release_applies(30_000);
}

/// Five near copies of a file of `lines` lines, so that pack-objects
/// makes blob deltas; served as git made it (a depth-1 pack: the parent
/// commit's objects left out), then applied.
fn deltified_release_applies(lines: usize) {
    let mut text = String::new();
    for i in 0..lines {
        text.push_str(&format!("line {i} of a file pack-objects will deltify\n"));
    }
    let mut spec = String::from("files:\n");
    let mut release = Release::default();
    for n in 0..5 {
        spec.push_str(&format!(
            "  - {{ path: /srv/app/v{n}, source: files/v{n} }}\n"
        ));
        release = release.file(&format!("files/v{n}"), format!("{text}variant {n}\n"));
    }
    let release = release.file("driftless.yaml", &spec);
    let f = Fixture::new(&release);
    let mut cmd = servers::git_command(&f.world.home());
    cmd.arg("-C")
        .arg(&f.published.bare)
        .args([
            "pack-objects",
            "--stdout",
            "--revs",
            "--delta-base-offset",
            "-q",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("git pack-objects");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "refs/tags/{TAG}\n--not\n{}", f.published.parent).expect("revs");
    }
    let out = child.wait_with_output().expect("pack-objects");
    assert!(out.status.success());
    let pack = out.stdout;
    // The pack holds deltas: fewer bytes than its five near copies.
    assert!(
        pack.len() < text.len() * 2,
        "git deltified: {} bytes",
        pack.len()
    );
    let (m, root, server, _) = f.run(&format!("git-pack-{lines}"), pack);
    assert_eq!(m.code, Some(0), "{lines} lines: {}", m.stderr);
    assert_eq!(server.fetches(), 1);
    for n in 0..5 {
        assert_eq!(
            root.read_text(&format!("/srv/app/v{n}")),
            format!("{text}variant {n}\n"),
            "{lines} lines: /srv/app/v{n}"
        );
    }
}

#[test]
fn a_large_file_costs_what_it_took_on_the_wire() {
    // A 64 MiB file of zeros compresses to some 64 KB. It is the release's
    // own, so it is written; but while its id is computed the node holds
    // its compressed bytes, not the 64 MiB it inflates to.
    let spec = "files:\n  - { path: /srv/app/zero, source: files/zero }\n";
    let release = Release::new(spec).file("files/zero", vec![0u8; BOMB_OBJECT as usize]);
    let f = Fixture::new(&release);
    for transport in TRANSPORTS {
        let mut pack = PackWriter::new();
        f.write_release(&mut pack);
        let pack = pack.finish();
        assert!(pack.len() < 1 << 20, "compressed: {} bytes", pack.len());
        let (m, root, _, _) = f.run_on("zero-file", pack, transport);
        assert_eq!(m.code, Some(0), "{transport:?}: {}", m.stderr);
        let written = std::fs::metadata(root.path().join("srv/app/zero")).expect("the file");
        assert_eq!(written.len(), BOMB_OBJECT, "{transport:?}");
        assert!(
            m.peak_rss_kib > 0 && m.peak_rss_kib <= MAX_RSS_KIB,
            "{transport:?}: peak RSS {} KiB for a 64 MiB file; the bound is {MAX_RSS_KIB} KiB",
            m.peak_rss_kib
        );
        eprintln!(
            "{transport:?}: a 64 MiB file applied with a peak RSS of {} KiB",
            m.peak_rss_kib
        );
    }
}

// ---------------------------------------------------------------------------
// fetch.max_bytes on every transport
// ---------------------------------------------------------------------------

#[test]
fn fetch_max_bytes_caps_every_transport() {
    // Real servers here: the release is honest, only larger than the node
    // allows (4 MiB that does not compress, 1 MiB allowed).
    let f = Fixture::new(&release_of(4, 1 << 20));
    let mut pack = PackWriter::new();
    f.write_release(&mut pack);
    write_static(&f.world, "static", &f.published.tag_object, &pack.finish());
    let daemon = servers::GitDaemon::start(&f.world.srv()).expect("git daemon");
    let http = servers::SmartHttp::start(&f.world.srv()).expect("smart HTTP");
    let limit: u64 = 1 << 20;
    for (name, url) in [
        ("git", daemon.url(REPO)),
        ("file", f.published.file_url()),
        ("http-v0", http.v0_url(REPO)),
        ("http-v2", http.http_url(REPO)),
        ("static", http.static_url("static")),
    ] {
        let mut config = Config::new(&url);
        if name == "static" {
            config.kind = Some("static".into());
        }
        config.fetch = release::FAST_FETCH.replace('}', ", max_bytes: 1MiB}");
        if name == "http-v0" {
            // libgit2's HTTP fetch, which the node refuses by default.
            config.fetch = config.fetch.replace('}', ", require_v2: false}");
        }
        let root = f.world.configured_root(name, &f.key, &config);
        let before = root.snapshot();
        let m = measure_apply(&root, &f.world.home());
        eprintln!(
            "{name}: exit {:?} after {:?}; peak under /var/lib/driftless {} bytes in {} files; \
             peak RSS {} KiB",
            m.code, m.elapsed, m.peak_bytes, m.peak_files, m.peak_rss_kib
        );
        assert_eq!(m.code, Some(EXIT_FETCH), "{name}\n{}", m.stderr);
        let last = m.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ")
                && last.contains("more than fetch.max_bytes (1MiB)")
                && last.contains("not retried"),
            "{name}: {last}"
        );
        assert!(
            !m.stderr.contains("retry_in"),
            "{name}: refused at once, not retried\n{}",
            m.stderr
        );
        // The partial pack is bounded by the limit, and removed.
        assert!(
            m.peak_bytes <= limit + (256 << 10),
            "{name}: /var/lib/driftless peaked at {} bytes",
            m.peak_bytes
        );
        let (mut left, mut files, mut budget) = (0, 0, 100_000);
        hostile::usage(
            &root.host("/var/lib/driftless"),
            &mut left,
            &mut files,
            &mut budget,
        );
        assert!(
            left <= 64 << 10,
            "{name}: {left} bytes left in /var/lib/driftless"
        );
        assert_eq!(
            release::diff(&before, &root.snapshot()),
            Vec::<String>::new()
        );
    }
}
