//! The writing thread of the staging directory: it creates the file of
//! each blob the verified release names, writes it (from its bytes, or by
//! inflating its compressed bytes again, applying its delta to a base
//! written before it), hashes it (SHA-256) and starts its writeback, while
//! the reading thread reads on. Apart from
//! [`Incoming`](super::Incoming), which only keeps the books, because this
//! is the one part that touches the disk and runs on a thread of its own.
//!
//! It writes only what the store sends, and the store sends only blobs a
//! verified tree names, each once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use flate2::{Decompress, FlushDecompress, Status};

use crate::source::pack::{BaseBytes, DeltaSink, DeltaStream};

/// Creates, writes and hashes (SHA-256) kept blobs on a thread of its own.
pub(super) struct Writer {
    ops: mpsc::SyncSender<WriteOp>,
    thread: std::thread::JoinHandle<Result<HashMap<String, [u8; 32]>, String>>,
}

/// How a kept blob's bytes come.
pub(super) enum Source {
    /// Its bytes, whole (a blob held in memory until a tree named it, or
    /// one of at most 1 MiB held inflated while its id was computed).
    Bytes(Vec<u8>),
    /// Its zlib stream from the pack, in [`WriteOp::Raw`] pieces.
    Zlib,
    /// The zlib stream of a delta against the kept blob in the file
    /// `base` (of `len` bytes), in [`WriteOp::Raw`] pieces.
    Delta { base: String, len: u64 },
}

pub(super) enum WriteOp {
    /// Creates the file `name` for a blob of `size` bytes from `source`.
    Open {
        name: String,
        size: u64,
        source: Source,
    },
    /// The next compressed bytes of the blob opened last.
    Raw(Vec<u8>),
    /// The blob opened last is complete: check its size, record its SHA-256.
    Close,
    /// Answers once every operation before it is done.
    Flush(mpsc::SyncSender<Result<(), String>>),
}

/// Writer operations in flight (a compressed piece is at most 64 KiB).
const WRITE_QUEUE: usize = 16;

/// The largest compressed piece sent at once.
pub(super) const RAW_PIECE: usize = 64 * 1024;

impl Writer {
    pub(super) fn start(dir: PathBuf) -> io::Result<Self> {
        let (ops, queue) = mpsc::sync_channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("write".into())
            .spawn(move || write_blobs(&dir, &queue))?;
        Ok(Self { ops, thread })
    }

    pub(super) fn send(&self, op: WriteOp) -> Result<(), String> {
        self.ops
            .send(op)
            .map_err(|_| "the writing thread ended".to_owned())
    }

    /// Sends a whole blob: the file `name`, `size` bytes from `source`,
    /// with `raw` its compressed bytes for a zlib or delta source.
    pub(super) fn keep(
        &self,
        name: String,
        size: u64,
        source: Source,
        raw: &[u8],
    ) -> Result<(), String> {
        self.send(WriteOp::Open { name, size, source })?;
        for piece in raw.chunks(RAW_PIECE) {
            self.send(WriteOp::Raw(piece.to_vec()))?;
        }
        self.send(WriteOp::Close)
    }

    /// Waits until everything sent is written; the first error, if any.
    pub(super) fn flush(&self) -> Result<(), String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(WriteOp::Flush(reply))?;
        answer
            .recv()
            .map_err(|_| "the writing thread ended".to_owned())?
    }

    /// Waits for the thread; every blob's SHA-256 by file name.
    pub(super) fn finish(self) -> Result<HashMap<String, [u8; 32]>, String> {
        drop(self.ops);
        self.thread
            .join()
            .map_err(|_| "the writing thread failed".to_owned())?
    }
}

/// The blob being written.
struct Open {
    name: String,
    size: u64,
    file: File,
    sha256: ring::digest::Context,
    written: u64,
    inflate: Option<(Decompress, Option<(DeltaStream, BaseBytes)>)>,
}

/// The file of the blob being written, as a delta's sink.
struct FileSink<'a> {
    file: &'a mut File,
    sha256: &'a mut ring::digest::Context,
    written: &'a mut u64,
}

impl DeltaSink for FileSink<'_> {
    fn begin(&mut self, _len: u64) -> Result<(), String> {
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sha256.update(bytes);
        *self.written += bytes.len() as u64;
        self.file.write_all(bytes).map_err(|e| e.to_string())
    }
}

impl Open {
    fn create(dir: &Path, name: String, size: u64, source: Source) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(dir.join(&name))
            .map_err(|e| e.to_string())?;
        let mut open = Self {
            name,
            size,
            file,
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
            inflate: None,
        };
        match source {
            Source::Bytes(bytes) => open.put(&bytes)?,
            Source::Zlib => open.inflate = Some((Decompress::new(true), None)),
            Source::Delta { base, len } => {
                let base = File::open(dir.join(base)).map_err(|e| e.to_string())?;
                let delta = (DeltaStream::new(len), BaseBytes::File(base, len));
                open.inflate = Some((Decompress::new(true), Some(delta)));
            }
        }
        Ok(open)
    }

    fn sink(&mut self) -> FileSink<'_> {
        FileSink {
            file: &mut self.file,
            sha256: &mut self.sha256,
            written: &mut self.written,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sink().data(bytes)
    }

    /// Inflates the next compressed bytes into the file (through the delta).
    fn raw(&mut self, mut input: &[u8]) -> Result<(), String> {
        let Some((zlib, delta)) = &mut self.inflate else {
            return Err("compressed bytes for a whole blob".into());
        };
        let mut out = vec![0u8; 64 * 1024];
        let mut sink = FileSink {
            file: &mut self.file,
            sha256: &mut self.sha256,
            written: &mut self.written,
        };
        loop {
            let before = (zlib.total_in(), zlib.total_out());
            let status = zlib
                .decompress(input, &mut out, FlushDecompress::None)
                .map_err(|e| e.to_string())?;
            let used = (zlib.total_in() - before.0) as usize;
            let made = (zlib.total_out() - before.1) as usize;
            input = &input[used..];
            match delta {
                Some((stream, base)) => stream
                    .feed(&out[..made], base, &mut sink)
                    .map_err(|e| e.to_string())?,
                None => sink.data(&out[..made])?,
            }
            let drained = input.is_empty() && made < out.len();
            if status == Status::StreamEnd || (used == 0 && made == 0) || drained {
                return Ok(());
            }
        }
    }

    /// Ends the blob: checks it is whole, and returns its SHA-256.
    fn close(mut self) -> Result<(String, [u8; 32]), String> {
        if let Some((_, Some((stream, _)))) = self.inflate.take() {
            stream.finish(&mut self.sink()).map_err(|e| e.to_string())?;
        }
        if self.written != self.size {
            return Err(format!(
                "blob file {} has {} bytes, not {}",
                self.name, self.written, self.size
            ));
        }
        start_writeback(&self.file);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(self.sha256.finish().as_ref());
        Ok((self.name, digest))
    }
}

/// The writing thread: runs until the queue closes; after an error it only
/// drains the queue, and reports the error at the end.
fn write_blobs(
    dir: &Path,
    queue: &mpsc::Receiver<WriteOp>,
) -> Result<HashMap<String, [u8; 32]>, String> {
    let mut digests = HashMap::new();
    let mut open: Option<Open> = None;
    let mut failed: Option<String> = None;
    let fail = |e: String| format!("cannot write {}: {e}", dir.display());
    for op in queue {
        if failed.is_some() {
            if let WriteOp::Flush(reply) = op {
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
            continue;
        }
        let step = match op {
            WriteOp::Open { name, size, source } => {
                Open::create(dir, name, size, source).map(|o| open = Some(o))
            }
            WriteOp::Raw(bytes) => match &mut open {
                Some(o) => o.raw(&bytes),
                None => Err("compressed bytes outside a blob".into()),
            },
            WriteOp::Close => match open.take() {
                Some(o) => o.close().map(|(name, digest)| {
                    digests.insert(name, digest);
                }),
                None => Err("a close outside a blob".into()),
            },
            WriteOp::Flush(reply) => {
                let _ = reply.send(Ok(()));
                Ok(())
            }
        };
        if let Err(e) = step {
            failed = Some(fail(e));
            open = None;
        }
    }
    failed.map_or(Ok(digests), Err)
}

/// Starts writing a received file to disk now, while the pack still
/// streams in, so that apply's sync later has little left to wait for. A
/// hint: durability still comes from that sync.
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for as long as `file` is borrowed.
    let _ = unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}
