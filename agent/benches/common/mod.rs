//! Helpers every benchmark uses: repetition counts from the environment and
//! order statistics. Included with `#[path = "common/mod.rs"] mod common;`.

use std::env;
use std::time::Duration;

use anyhow::{Context as _, Result};

/// Reads a positive count from the environment, or the default.
pub fn env_count(name: &str, default: usize) -> Result<usize> {
    match env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a count")),
        Err(env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(e).with_context(|| format!("reading {name}")),
    }
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `samples`.
#[allow(dead_code)] // not every benchmark reports percentiles of durations
pub fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The median of `samples`.
#[allow(dead_code)]
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50)
}
