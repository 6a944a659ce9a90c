//! A hostile git server and the packs it serves, for the tests that hold
//! a first boot's streamed fetch to its bounds.
//!
//! * [`HostileV2`]: a hand-written fake that speaks just enough protocol
//!   v2 (`ls-refs` and `fetch`, gitprotocol-v2(5)), over smart HTTP and as
//!   git daemon (`git://`) on the same port, to serve one tag and a
//!   crafted pack. It is a fake because no real git server can
//!   be made to send the packs these tests need (deltas against a zero
//!   blob, 200,000 tiny blobs, objects out of git's order); everything the
//!   node does with what it receives is real.
//! * [`PackWriter`]: writes a pack (gitformat-pack(5)) object by object,
//!   whole objects and offset deltas, with its trailing checksum.
//! * [`release_objects`]: a published release's objects, read with the
//!   real `git`, in the order git's pack writer sends them.
//! * [`Measured`]: runs `driftless apply` under `/usr/bin/time` and
//!   samples the node's `/var/lib/driftless` while it runs: peak bytes,
//!   peak file count, peak resident memory.
//!
//! Rules as in `servers.rs`: 127.0.0.1, an ephemeral port, every loop
//! bounded in count and time, dropping the server stops it.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use sha1::Digest as _;

use crate::release::{DRIFTLESS_TIMEOUT, NodeRoot};
use crate::servers::{git_command, run_bounded};

/// How long the fake server lives at most.
const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Most connections it takes.
const MAX_CONNECTIONS: u64 = 1000;
/// Largest request it reads.
const MAX_REQUEST: usize = 1 << 20;
/// Pack bytes per side-band packet (a pkt-line holds 65516 payload bytes).
const BAND_DATA: usize = 65515;

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A fake smart HTTP server speaking protocol v2: it lists one ref and
/// answers every `fetch` with the same pack.
pub struct HostileV2 {
    port: u16,
    stop: Arc<AtomicBool>,
    fetches: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HostileV2 {
    /// Serves `refs/tags/TAG` → `oid`, and `pack` for every fetch.
    pub fn start(tag: &str, oid: &str, pack: Vec<u8>) -> Self {
        Self::start_as(&format!("refs/tags/{tag}"), oid, pack, false)
    }

    /// Serves the ref `full_name` (`refs/heads/channel`) → `oid`, and
    /// `pack` for every fetch.
    pub fn start_ref(full_name: &str, oid: &str, pack: Vec<u8>) -> Self {
        Self::start_as(full_name, oid, pack, false)
    }

    /// The same, as a SHA-256 repository (`oid` of 64 hex digits) answers:
    /// an `ls-refs` that does not ask for `object-format=sha256` gets an
    /// empty body (git's upload-pack dies on such a client before it says
    /// anything), and the protocol-v0 advertisement (what libgit2 asks
    /// for) names `object-format=sha256`.
    #[allow(dead_code)] // not every test serves a SHA-256 repository
    pub fn start_sha256(tag: &str, oid: &str, pack: Vec<u8>) -> Self {
        Self::start_as(&format!("refs/tags/{tag}"), oid, pack, true)
    }

    /// Serves every ref of `refs` (full name, id, pack), each fetch
    /// answered with the pack of the id it wants (`want ID`).
    #[allow(dead_code)] // not every test serves two refs
    pub fn start_refs(refs: Vec<(&str, &str, Vec<u8>)>) -> Self {
        Self::start_many(refs, false)
    }

    fn start_as(name: &str, oid: &str, pack: Vec<u8>, sha256: bool) -> Self {
        Self::start_many(vec![(name, oid, pack)], sha256)
    }

    fn start_many(refs: Vec<(&str, &str, Vec<u8>)>, sha256: bool) -> Self {
        let (name, oid) = (refs[0].0.to_owned(), refs[0].1.to_owned());
        let listing: Vec<String> = refs
            .iter()
            .map(|(name, oid, _)| format!("{oid} {name}\n"))
            .collect();
        let packs: Vec<(String, Vec<u8>)> = refs
            .into_iter()
            .map(|(_, oid, pack)| (oid.to_owned(), pack))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicU64::new(0));
        let advertised = format!(
            "{oid} {name}\0multi_ack side-band-64k ofs-delta shallow include-tag \
             object-format=sha256 agent=hostile\n"
        );
        let (listing, packs) = (Arc::new(listing), Arc::new(packs));
        let thread = {
            let (stop, fetches) = (Arc::clone(&stop), Arc::clone(&fetches));
            thread::spawn(move || {
                let deadline = Instant::now() + MAX_LIFETIME;
                let mut served = 0;
                while !stop.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                    && served < MAX_CONNECTIONS
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            let (listing, packs, fetches) = (
                                Arc::clone(&listing),
                                Arc::clone(&packs),
                                Arc::clone(&fetches),
                            );
                            let advertised = sha256.then(|| advertised.clone());
                            thread::spawn(move || {
                                let served = Served {
                                    listing: &listing,
                                    advertised: advertised.as_deref(),
                                    packs: &packs,
                                    fetches: &fetches,
                                };
                                let _ = answer(stream, &served);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            port,
            stop,
            fetches,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/release.git`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/release.git", self.port)
    }

    /// `git://127.0.0.1:PORT/release.git`: the same server, spoken to as
    /// git daemon.
    pub fn git_url(&self) -> String {
        format!("git://127.0.0.1:{}/release.git", self.port)
    }

    /// `fetch` requests answered so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for HostileV2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One pkt-line.
fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What the server serves: the ref listing, for a SHA-256 repository its
/// v0 advertisement's ref line, the pack of each object id, and the count
/// of fetches answered.
#[derive(Clone, Copy)]
struct Served<'a> {
    listing: &'a [String],
    advertised: Option<&'a str>,
    packs: &'a [(String, Vec<u8>)],
    fetches: &'a AtomicU64,
}

/// Answers one connection: an HTTP request, or a `git://` request line
/// (git daemon's transport, protocol v2 asked for as an extra parameter)
/// followed by one command.
fn answer(mut stream: TcpStream, served: &Served<'_>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    while request.len() < 4 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    if request.starts_with(b"GET ") || request.starts_with(b"POST") {
        answer_http(stream, request, served)
    } else {
        answer_daemon(stream, request, served)
    }
}

/// One `git://` exchange: the request line, the v2 capability
/// advertisement, then the client's command up to the flush that ends its
/// session, answered as [`reply`] does, and the connection closed.
fn answer_daemon(
    mut stream: TcpStream,
    mut request: Vec<u8>,
    served: &Served<'_>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let line_len = std::str::from_utf8(&request[..4])
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .filter(|&n| n > 4)
        .unwrap_or(0);
    while request.len() < line_len {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    if line_len == 0 || !request[4..line_len].starts_with(b"git-upload-pack ") {
        return stream.write_all(&pkt(b"ERR not a git-upload-pack request\n"));
    }
    let mut capabilities = Vec::new();
    for line in [
        "version 2\n",
        "agent=hostile\n",
        "ls-refs\n",
        "fetch=shallow\n",
    ] {
        capabilities.extend(pkt(line.as_bytes()));
    }
    if served.advertised.is_some() {
        capabilities.extend(pkt(b"object-format=sha256\n"));
    }
    capabilities.extend_from_slice(b"0000");
    stream.write_all(&capabilities)?;
    // The command, its closing flush, and the flush that ends the session.
    let mut body = request.split_off(line_len);
    while !body.ends_with(b"00000000") && body.len() <= MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if let Some((_, out)) = reply(&body, false, served) {
        stream.write_all(&out)?;
    }
    stream.flush()?;
    // The connection stays open until the client hangs up (at most the
    // read timeout), as it may behind a forward: the client must know the
    // answer's end from the answer itself.
    while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
    Ok(())
}

/// One HTTP request: `ls-refs` with the listing, `fetch` with the pack on
/// side band 1; for a SHA-256 repository (`advertised`, its v0
/// advertisement's ref line), an `ls-refs` in SHA-1 with an empty body and
/// the v0 advertisement with that line.
fn answer_http(
    mut stream: TcpStream,
    mut request: Vec<u8>,
    served: &Served<'_>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let (head_end, length) = loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 || request.len() > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    };
    while request.len() < head_end + length.min(MAX_REQUEST) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let is_get = request.starts_with(b"GET ");
    let body = &request[head_end..];
    match reply(body, is_get, served) {
        Some((content_type, out)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                out.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&out)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

/// The answer to one request body (`is_get`: HTTP's v0 advertisement),
/// with its HTTP content type; `None`: a request this server does not know.
fn reply(body: &[u8], is_get: bool, served: &Served<'_>) -> Option<(&'static str, Vec<u8>)> {
    let Served {
        listing,
        advertised,
        packs,
        fetches,
    } = *served;
    let mut out = Vec::new();
    let mut content_type = "application/x-git-upload-pack-result";
    let asks_sha256 = body.windows(20).any(|w| w == b"object-format=sha256");
    if let (Some(line), true) = (advertised, is_get) {
        content_type = "application/x-git-upload-pack-advertisement";
        out.extend(pkt(b"# service=git-upload-pack\n"));
        out.extend_from_slice(b"0000");
        out.extend(pkt(line.as_bytes()));
        out.extend_from_slice(b"0000");
    } else if body.windows(15).any(|w| w == b"command=ls-refs") {
        // git's upload-pack dies on a client of the other format before it
        // says anything: an empty answer.
        if advertised.is_none() || asks_sha256 {
            for line in listing {
                out.extend(pkt(line.as_bytes()));
            }
            out.extend_from_slice(b"0000");
        }
    } else if body.windows(13).any(|w| w == b"command=fetch") {
        fetches.fetch_add(1, Ordering::SeqCst);
        if advertised.is_some() && !asks_sha256 {
            // A SHA-1 fetch from a SHA-256 repository: git dies, and the
            // test that meant to prove the SHA-256 path fails.
            return Some((content_type, out));
        }
        let pack = packs
            .iter()
            .find(|(oid, _)| {
                let want = format!("want {oid}");
                body.windows(want.len()).any(|w| w == want.as_bytes())
            })
            .unwrap_or(&packs[0]);
        out.extend(pkt(b"packfile\n"));
        for chunk in pack.1.chunks(BAND_DATA) {
            let mut band = vec![1u8];
            band.extend_from_slice(chunk);
            out.extend(pkt(&band));
        }
        out.extend_from_slice(b"0000");
    } else {
        return None;
    }
    Some((content_type, out))
}

// ---------------------------------------------------------------------------
// Packs
// ---------------------------------------------------------------------------

/// The four kinds of object, by their pack type code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 1
    Commit,
    /// 2
    Tree,
    /// 3
    Blob,
    /// 4
    Tag,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Commit => 1,
            Kind::Tree => 2,
            Kind::Blob => 3,
            Kind::Tag => 4,
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "commit" => Kind::Commit,
            "tree" => Kind::Tree,
            "blob" => Kind::Blob,
            "tag" => Kind::Tag,
            other => panic!("not an object kind: {other}"),
        }
    }
}

/// Writes a pack one object at a time.
#[derive(Default)]
pub struct PackWriter {
    body: Vec<u8>,
    count: u32,
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(data).expect("deflate");
    z.finish().expect("deflate")
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object header: type and size.
    fn header(&mut self, code: u8, size: u64) {
        let mut size = size;
        let mut byte = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            self.body.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.body.push(byte);
    }

    /// The offset the next object gets.
    pub fn offset(&self) -> u64 {
        12 + self.body.len() as u64
    }

    /// A whole object; returns its offset.
    pub fn object(&mut self, kind: Kind, data: &[u8]) -> u64 {
        let at = self.offset();
        self.header(kind.code(), data.len() as u64);
        self.body.extend(deflate(data));
        self.count += 1;
        at
    }

    /// A delta against the object at `base` (an offset delta); returns its
    /// offset.
    pub fn ofs_delta(&mut self, base: u64, delta: &[u8]) -> u64 {
        let at = self.offset();
        self.header(6, delta.len() as u64);
        let mut distance = at - base;
        let mut bytes = vec![(distance & 0x7f) as u8];
        distance >>= 7;
        while distance > 0 {
            distance -= 1;
            bytes.push(0x80 | (distance & 0x7f) as u8);
            distance >>= 7;
        }
        bytes.reverse();
        self.body.extend(bytes);
        self.body.extend(deflate(delta));
        self.count += 1;
        at
    }

    /// Objects written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The pack: header, objects, trailing SHA-1.
    pub fn finish(self) -> Vec<u8> {
        let mut pack = b"PACK".to_vec();
        pack.extend(2u32.to_be_bytes());
        pack.extend(self.count.to_be_bytes());
        pack.extend(self.body);
        let sum = sha1::Sha1::digest(&pack);
        pack.extend_from_slice(&sum);
        pack
    }
}

/// A base-128 delta size.
pub fn delta_size(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A delta that builds `result_len` bytes from a base of `base_len` bytes
/// by copying its start again and again, in copies of up to 16 MiB: a few
/// bytes that expand to `result_len`.
pub fn copying_delta(base_len: u64, result_len: u64) -> Vec<u8> {
    let mut d = Vec::new();
    delta_size(base_len, &mut d);
    delta_size(result_len, &mut d);
    let mut left = result_len;
    while left > 0 {
        let n = left.min(base_len).min(0xff_ffff);
        // Copy from offset 0 (no offset bytes), size in three bytes.
        d.push(0x80 | 0x70);
        d.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        left -= n;
    }
    d
}

/// A published release's objects as git's pack writer orders a depth-1
/// fetch of its tag: the commit and the tag, then every tree, then every
/// blob (each with its kind and raw bytes, read with `git cat-file`).
pub fn release_objects(home: &Path, bare: &Path, tag: &str) -> Vec<(Kind, Vec<u8>)> {
    let git = |args: &[&str]| -> Vec<u8> {
        let mut cmd = git_command(home);
        cmd.arg("-C").arg(bare).args(args);
        let done = run_bounded(&mut cmd, Duration::from_secs(60)).expect("run git");
        assert!(done.success(), "git {args:?}: {}", done.describe());
        done.stdout.into_bytes()
    };
    // `run_bounded` gives text; objects are read one by one as bytes.
    let raw = |kind: &str, id: &str| -> Vec<u8> {
        let out = Command::new("git")
            .arg("-C")
            .arg(bare)
            .args(["cat-file", kind, id])
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git cat-file");
        assert!(out.status.success(), "git cat-file {kind} {id}");
        out.stdout
    };
    let tag_id = String::from_utf8(git(&["rev-parse", &format!("refs/tags/{tag}")]))
        .expect("utf-8")
        .trim()
        .to_owned();
    let listed = String::from_utf8(git(&[
        "rev-list",
        "--objects",
        "--no-object-names",
        "--no-walk",
        &format!("refs/tags/{tag}^{{commit}}"),
    ]))
    .expect("utf-8");
    let mut commits = Vec::new();
    let mut trees = Vec::new();
    let mut blobs = Vec::new();
    for id in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let kind = String::from_utf8(git(&["cat-file", "-t", id]))
            .expect("utf-8")
            .trim()
            .to_owned();
        let object = (Kind::parse(&kind), raw(&kind, id));
        match object.0 {
            Kind::Commit => commits.push(object),
            Kind::Tree => trees.push(object),
            _ => blobs.push(object),
        }
    }
    let mut objects = commits;
    objects.push((Kind::Tag, raw("tag", &tag_id)));
    objects.extend(trees);
    objects.extend(blobs);
    objects
}

// ---------------------------------------------------------------------------
// Measuring a run
// ---------------------------------------------------------------------------

/// What one `driftless apply` cost, and how it ended.
#[derive(Debug)]
pub struct Measured {
    /// Exit code (`None`: killed, after running longer than the time limit).
    pub code: Option<i32>,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
    /// Largest total size of the regular files under `/var/lib/driftless`.
    pub peak_bytes: u64,
    /// Most regular files under `/var/lib/driftless` at once.
    pub peak_files: u64,
    /// Peak resident set, KiB (`/usr/bin/time -f %M`).
    pub peak_rss_kib: u64,
}

/// Sizes and counts the regular files under `dir` (not following links).
pub fn usage(dir: &Path, bytes: &mut u64, files: &mut u64, budget: &mut u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            usage(&entry.path(), bytes, files, budget);
        } else if meta.is_file() {
            *bytes += meta.size();
            *files += 1;
        }
    }
}

/// Runs `driftless apply --root ROOT` under `/usr/bin/time`, sampling
/// `ROOT/var/lib/driftless` every millisecond or so while it runs.
pub fn measure_apply(root: &NodeRoot, home: &Path) -> Measured {
    measure(root, home, "apply", &[])
}

/// Runs `driftless SUBCOMMAND --root ROOT EXTRA…` under `/usr/bin/time`,
/// sampling `ROOT/var/lib/driftless` every millisecond or so while it runs.
pub fn measure(root: &NodeRoot, home: &Path, subcommand: &str, extra: &[&str]) -> Measured {
    let agent_dir: PathBuf = root.host("/var/lib/driftless");
    let rss_file = home.join(format!("rss-{}", std::process::id()));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_driftless"))
        .args([OsString::from(subcommand), OsString::from("--root")])
        .arg(root.path())
        .args(extra)
        .current_dir(home);
    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = {
        let (done, peaks, dir) = (Arc::clone(&done), Arc::clone(&peaks), agent_dir.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + DRIFTLESS_TIMEOUT + Duration::from_secs(10);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                let (mut bytes, mut files, mut budget) = (0, 0, 1_000_000);
                usage(&dir, &mut bytes, &mut files, &mut budget);
                let mut p = peaks.lock().expect("peaks");
                p.0 = p.0.max(bytes);
                p.1 = p.1.max(files);
                drop(p);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let finished = run_bounded(&mut cmd, DRIFTLESS_TIMEOUT).expect("run driftless");
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let (peak_bytes, peak_files) = *peaks.lock().expect("peaks");
    let peak_rss_kib = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    let _ = std::fs::remove_file(&rss_file);
    Measured {
        code: finished.status.and_then(|s| s.code()),
        stderr: finished.stderr,
        elapsed: finished.elapsed,
        peak_bytes,
        peak_files,
        peak_rss_kib,
    }
}
