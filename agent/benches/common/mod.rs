//! Helpers every benchmark uses: repetition counts from the environment,
//! order statistics, durations and byte counts for tables, and a process's
//! CPU time from `/proc`; for the fixtures, the release principal, the
//! allowed_signers line of a key `ssh-keygen` made, and a seeded generator
//! of reproducible data. Included with
//! `#[path = "common/mod.rs"] mod common;`.

use std::env;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// The principal every benchmark's release key is trusted as.
#[allow(dead_code)] // not every benchmark signs a release
pub const PRINCIPAL: &str = "release@example.invalid";

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

/// A duration with a unit that keeps three significant digits or so.
#[allow(dead_code)]
pub fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1.0 {
        format!("{:.0} ns", micros * 1e3)
    } else if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// A byte count in B, KiB or MiB.
#[allow(dead_code)]
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 {
        format!("{n:.0} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    }
}

/// utime + stime of process `pid` (a number or `self`), in clock ticks
/// (`/proc/PID/stat`).
#[allow(dead_code)]
pub fn cpu_ticks(pid: &str) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the parenthesised command name the first field is field 3;
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("a /proc/PID/stat field is not a number")
    };
    Ok(field(14)? + field(15)?)
}

/// A `KEY: N kB` field of `/proc/PID/FILE` (`VmRSS:` of `status`, `Pss:`
/// of `smaps_rollup`), in bytes.
#[allow(dead_code)]
pub fn proc_kib(pid: &str, file: &str, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/{file}");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in {path}"))?;
    Ok(kib * 1024)
}

/// A running `driftless watch` whose output goes to a log file; killed if
/// still running when dropped.
#[allow(dead_code)] // only the benchmarks that run a watcher use it
pub struct Watcher {
    child: std::process::Child,
    log: std::path::PathBuf,
    stop_timeout: Duration,
}

#[allow(dead_code)]
impl Watcher {
    /// Starts `cmd` (a `driftless watch` command line) with stdin closed
    /// and stdout and stderr to `log`; `terminate` waits `stop_timeout`.
    pub fn spawn(
        mut cmd: std::process::Command,
        log: std::path::PathBuf,
        stop_timeout: Duration,
    ) -> Result<Self> {
        let log_file = fs::File::create(&log).context("creating the watcher's log")?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file);
        let child = cmd.spawn().context("starting driftless watch")?;
        Ok(Self {
            child,
            log,
            stop_timeout,
        })
    }

    /// The watcher's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the log, if the watcher has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for the watcher")? {
            anyhow::bail!("driftless watch exited ({status}):\n{}", self.log_text());
        }
        Ok(())
    }

    /// The watcher's output so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait up to the stop timeout (the drop kills it after).
    pub fn terminate(&mut self) -> Result<(std::process::ExitStatus, Duration)> {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).context("pid")?);
        let sent = std::time::Instant::now();
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to the watcher")?;
        while sent.elapsed() < self.stop_timeout {
            if let Some(status) = self.child.try_wait().context("waiting for the watcher")? {
                return Ok((status, sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        anyhow::bail!(
            "driftless watch ignored SIGTERM for {:?}:\n{}",
            self.stop_timeout,
            self.log_text()
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The allowed_signers line trusting the key whose private half is `key`
/// (the public half beside it, `.pub`) as [`PRINCIPAL`] for git.
#[allow(dead_code)]
pub fn allowed_line(key: &Path) -> Result<String> {
    let public = fs::read_to_string(key.with_extension("pub")).context("reading the public key")?;
    let mut fields = public.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        bail!("unexpected public key file: {public:?}");
    };
    Ok(format!("{PRINCIPAL} namespaces=\"git\" {kind} {blob}\n"))
}

/// A small seeded generator (SplitMix64): the same data on every run.
#[allow(dead_code)]
pub struct SplitMix64(pub u64);

#[allow(dead_code)]
impl SplitMix64 {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n), n small.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` bytes: the next words, little-endian, the last one cut short.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
