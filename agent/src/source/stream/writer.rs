//! The writing thread of the staging directory: it creates each received
//! blob's file, writes it, hashes it (SHA-256) and starts its writeback,
//! while the reading thread inflates the pack and computes ids. Apart from
//! [`Incoming`](super::Incoming), which only keeps the books, because this
//! is the one part that touches the disk and runs on a thread of its own.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Creates, writes and hashes (SHA-256) received blobs on a thread of its
/// own, while the reading thread inflates the pack and computes ids.
pub(super) struct Writer {
    ops: mpsc::SyncSender<WriteOp>,
    thread: std::thread::JoinHandle<Result<HashMap<String, [u8; 32]>, String>>,
}

pub(super) enum WriteOp {
    /// Creates the file `name` in the staging directory.
    Open(String),
    /// Appends to the file opened last.
    Data(Vec<u8>),
    /// Closes it, recording its SHA-256.
    Close,
    /// Answers once every operation before it is done.
    Flush(mpsc::SyncSender<Result<(), String>>),
}

/// Writer operations in flight (a blob's chunk is at most 64 KiB).
const WRITE_QUEUE: usize = 16;

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

/// The writing thread: runs until the queue closes; after an error it only
/// drains the queue, and reports the error at the end.
fn write_blobs(
    dir: &Path,
    queue: &mpsc::Receiver<WriteOp>,
) -> Result<HashMap<String, [u8; 32]>, String> {
    let mut digests = HashMap::new();
    let mut open: Option<(String, File, ring::digest::Context)> = None;
    let mut failed: Option<String> = None;
    let fail = |e: io::Error| format!("cannot write {}: {e}", dir.display());
    for op in queue {
        match op {
            WriteOp::Open(name) if failed.is_none() => {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(dir.join(&name))
                {
                    Ok(file) => {
                        let sha256 = ring::digest::Context::new(&ring::digest::SHA256);
                        open = Some((name, file, sha256));
                    }
                    Err(e) => failed = Some(fail(e)),
                }
            }
            WriteOp::Data(bytes) => {
                if let Some((_, file, sha256)) = &mut open {
                    sha256.update(&bytes);
                    if let Err(e) = file.write_all(&bytes) {
                        failed = Some(fail(e));
                        open = None;
                    }
                }
            }
            WriteOp::Close => {
                if let Some((name, file, sha256)) = open.take() {
                    start_writeback(&file);
                    let mut digest = [0u8; 32];
                    digest.copy_from_slice(sha256.finish().as_ref());
                    digests.insert(name, digest);
                }
            }
            WriteOp::Flush(reply) => {
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
            WriteOp::Open(_) => {}
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
