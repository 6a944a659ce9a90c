//! The release the `apply` and `serve` benchmarks fetch: `count` files
//! under [`APP_DIR`], a quarter of them configuration-like text and the
//! rest pseudo-random bytes, with sizes spread log-uniformly, and a node
//! spec that installs every one at the same path, mode 0644. The same seed
//! gives the same bytes, so runs compare.
//!
//! Included after `common/mod.rs`: `#[path = "common/release.rs"] mod release;`.

#![allow(dead_code)] // not every benchmark uses every helper

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::common::SplitMix64;

/// Where the release's files live, in the tree and on the node.
pub const APP_DIR: &str = "srv/app";
/// Seed of the content generator, so every run benchmarks the same bytes.
const SEED: u64 = 0x5eed_d81f_71e5_0001;

/// One file of the release.
pub struct ReleaseFile {
    /// Path in the tree and (with a leading `/`) on the node.
    pub path: String,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
    /// Its size.
    pub len: usize,
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Writes the release into the work tree `work`: `count` files under
/// `srv/app` totalling `total` bytes, and a spec listing them all. Every
/// fourth file is text, the others pseudo-random bytes; sizes spread over
/// two and a half orders of magnitude. Returns the files and how many are text.
pub fn write_release(work: &Path, count: usize, total: usize) -> Result<(Vec<ReleaseFile>, usize)> {
    let mut rng = SplitMix64(SEED);
    // Log-uniform weights between 1 and 300, scaled to the total.
    let weights: Vec<f64> = (0..count)
        .map(|_| (rng.unit() * 300f64.ln()).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|w| ((w / sum) * total as f64) as usize)
        .collect();
    let assigned: usize = sizes.iter().sum();
    if let Some(last) = sizes.last_mut() {
        *last += total - assigned;
    }

    let dir = work.join(APP_DIR);
    fs::create_dir_all(&dir).context("creating the release's app directory")?;
    let width = count.to_string().len().max(3);
    let mut spec = format!("# driftless.yaml: the benchmark release, {count} files.\nfiles:\n");
    let mut files = Vec::with_capacity(count);
    let mut text_files = 0;
    for (i, &len) in sizes.iter().enumerate() {
        let name = format!("f{i:0width$}");
        let path = format!("{APP_DIR}/{name}");
        let bytes = if i % 4 == 0 {
            text_files += 1;
            text(&mut rng, len)
        } else {
            rng.bytes(len)
        };
        fs::write(work.join(&path), &bytes).with_context(|| format!("writing {path}"))?;
        writeln!(
            spec,
            "  - {{ path: /{path}, source: {path}, mode: \"0644\" }}"
        )
        .context("formatting the spec")?;
        files.push(ReleaseFile {
            path,
            sha256: sha256(&bytes),
            len,
        });
    }
    fs::write(work.join("driftless.yaml"), spec).context("writing driftless.yaml")?;
    Ok((files, text_files))
}

/// `len` bytes of configuration-like text: lines of words from a small
/// vocabulary, with numbers (compresses about 3:1 with zlib).
fn text(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "server", "listen", "timeout", "upstream", "worker", "cache", "enabled", "path", "user",
        "group", "level", "retry", "backoff", "limit", "region", "replica", "shard", "token",
        "secret", "endpoint", "metrics", "trace", "buffer", "pool",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let key = WORDS[rng.below(WORDS.len())];
        let value = WORDS[rng.below(WORDS.len())];
        let number = rng.next() % 100_000;
        let _ = writeln!(TextSink(&mut out), "{key}.{value} = {number}");
    }
    out.truncate(len);
    out
}

/// `fmt::Write` into a byte vector.
struct TextSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for TextSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
