//! Benchmark: one full verification of an SSH-signed release tag, three ways,
//! on the same tag.
//!
//! * `library`: what the agent does on a node, in process: load the
//!   allowed_signers file, open the repository, verify the tag;
//! * `driftless verify`: the built binary, spawned and waited for;
//! * `git verify-tag`: git with `gpg.ssh.allowedSignersFile`, which itself
//!   runs `ssh-keygen -Y find-principals` and `ssh-keygen -Y verify`.
//!
//! The fixture (keys, repository, tags, allowed_signers) is made at run time
//! in a temporary directory with the real `ssh-keygen` and `git`, with an
//! isolated HOME and git configuration. Every contender is checked once to
//! succeed before anything is timed, so no failing path is measured. The
//! contenders are interleaved round-robin, rotating their order each round,
//! so that machine noise hits them alike.
//!
//! Run it from the workspace root with `cargo bench --bench verify`.
//! Environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_LIB_REPS` | 300 | timed library verifications per key |
//! | `DRIFTLESS_BENCH_PROC_REPS` | 60 | timed runs of each process per key |
//! | `DRIFTLESS_BENCH_WARMUP` | 5 | untimed rounds per key first |
//! | `DRIFTLESS_BENCH_PHASES` | unset | `1` adds a table of where the library path spends its time |

#[path = "common/mod.rs"]
mod common;

use common::{PRINCIPAL, allowed_line, env_count, median, percentile};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use driftless::verify::object::parse_tag;
use driftless::verify::sshsig::SshSig;
use driftless::verify::{GIT_NAMESPACE, Trust, verify_tag};
use git2::Repository;
use jiff::Timestamp;

/// The key types measured: a label, and the `ssh-keygen` arguments that make one.
const KEYS: &[(&str, &[&str])] = &[
    ("ed25519", &["-t", "ed25519"]),
    ("rsa-3072", &["-t", "rsa", "-b", "3072"]),
    ("ecdsa-p256", &["-t", "ecdsa", "-b", "256"]),
];

fn main() -> Result<()> {
    let lib_reps = env_count("DRIFTLESS_BENCH_LIB_REPS", 300)?;
    let proc_reps = env_count("DRIFTLESS_BENCH_PROC_REPS", 60)?;
    let warmup = env_count("DRIFTLESS_BENCH_WARMUP", 5)?;
    let phases = env::var_os("DRIFTLESS_BENCH_PHASES").is_some_and(|v| v == "1");
    ensure!(
        lib_reps > 0 && proc_reps > 0,
        "repetition counts must be positive"
    );

    println!("# driftless benchmark: one full SSH-signed tag verification");
    println!(
        "# reproduce (from the workspace root): DRIFTLESS_BENCH_LIB_REPS={lib_reps} \
         DRIFTLESS_BENCH_PROC_REPS={proc_reps} DRIFTLESS_BENCH_WARMUP={warmup}{} \
         cargo bench --bench verify",
        if phases {
            " DRIFTLESS_BENCH_PHASES=1"
        } else {
            ""
        }
    );

    let fixture = Fixture::create().context("building the fixture")?;
    println!("# {}", fixture.git_version()?);
    println!("# {}", fixture.openssh_version());
    println!(
        "# {} timed library runs and {} timed runs of each process per key, \
         after {} warm-up rounds; contenders interleaved round-robin",
        lib_reps, proc_reps, warmup
    );
    println!("# library = Trust::load + Repository::open + verify_tag, in process");
    println!(
        "# CLI     = spawn `driftless verify --repo R --allowed-signers F --signature-only TAG`, wait"
    );
    println!("# git     = spawn `git -c gpg.ssh.allowedSignersFile=F verify-tag TAG`, wait");
    println!();

    let mut rows = Vec::new();
    for (label, _) in KEYS {
        let tag = Fixture::tag_name(label);
        fixture
            .check_all(&tag)
            .with_context(|| format!("checking the contenders on {tag}"))?;
        let times = fixture.measure(&tag, lib_reps, proc_reps, warmup)?;
        rows.push((label.to_string(), times));
    }
    print_table(&rows);

    if phases {
        println!();
        fixture.print_phases(lib_reps)?;
    }
    Ok(())
}

/// Everything the contenders run against, in one temporary directory.
struct Fixture {
    /// Kept alive for the benchmark's duration; removed on drop.
    dir: tempfile::TempDir,
    /// The repository's work tree.
    repo: PathBuf,
    /// The allowed_signers file, one line per key.
    allowed_signers: PathBuf,
}

/// The timings of one key type, one sample per run.
struct Times {
    library: Vec<Duration>,
    cli: Vec<Duration>,
    git: Vec<Duration>,
}

impl Fixture {
    /// Makes the keys, the repository with one commit, one signed tag per
    /// key, and the allowed_signers file.
    fn create() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let fixture = Self {
            repo: dir.path().join("repo"),
            allowed_signers: dir.path().join("allowed_signers"),
            dir,
        };
        fs::create_dir(fixture.home()).context("creating HOME")?;

        let mut allowed = String::new();
        for (label, args) in KEYS {
            let key = fixture.dir.path().join(format!("id_{label}"));
            let mut keygen = fixture.command("ssh-keygen");
            keygen
                .args(["-q", "-N", "", "-C", PRINCIPAL, "-f"])
                .arg(&key)
                .args(*args);
            run(&mut keygen)
                .with_context(|| format!("ssh-keygen for {label} (is it installed?)"))?;
            allowed
                .push_str(&allowed_line(&key).with_context(|| format!("the {label} public key"))?);
        }
        fs::write(&fixture.allowed_signers, allowed).context("writing allowed_signers")?;

        fs::create_dir(&fixture.repo).context("creating the repository directory")?;
        fixture.git(["init", "-q", "-b", "main"])?;
        fs::write(fixture.repo.join("node.yaml"), "release: bench\n")
            .context("writing the committed file")?;
        fixture.git(["add", "node.yaml"])?;
        fixture.git(["commit", "-q", "-m", "release content"])?;
        for (label, _) in KEYS {
            let key = fixture.dir.path().join(format!("id_{label}"));
            let signing_key = format!("user.signingKey={}", key.display());
            let tag = Self::tag_name(label);
            fixture.git([
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing_key,
                "tag",
                "-s",
                "-m",
                "benchmark release",
                &tag,
            ])?;
        }
        Ok(fixture)
    }

    /// The tag signed with the key `label`.
    fn tag_name(label: &str) -> String {
        format!("release-{label}")
    }

    /// HOME for every tool the benchmark runs.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A command with an isolated environment: no user or system git
    /// configuration, no SSH agent, a HOME of its own.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.dir.path())
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Release Engineer")
            .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
            .env("GIT_COMMITTER_NAME", "Release Engineer")
            .env("GIT_COMMITTER_EMAIL", PRINCIPAL)
            .env("LC_ALL", "C");
        for name in [
            "SSH_AUTH_SOCK",
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CEILING_DIRECTORIES",
            "GIT_TRACE",
            "RUST_LOG",
        ] {
            command.env_remove(name);
        }
        command
    }

    /// Runs git in the repository and requires success.
    fn git<const N: usize>(&self, args: [&str; N]) -> Result<Output> {
        let mut git = self.command("git");
        git.arg("-C").arg(&self.repo).args(args);
        run(&mut git).with_context(|| format!("git {}", args.join(" ")))
    }

    /// `git --version`.
    fn git_version(&self) -> Result<String> {
        let out = self.git(["--version"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// OpenSSH's version as `ssh -V` prints it (ssh-keygen has no such flag).
    fn openssh_version(&self) -> String {
        match self.command("ssh").arg("-V").output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                let text = text.trim();
                if text.is_empty() {
                    "OpenSSH version unknown (ssh -V printed nothing)".to_owned()
                } else {
                    text.to_owned()
                }
            }
            Err(_) => "OpenSSH version unknown (no ssh client installed)".to_owned(),
        }
    }

    /// `driftless verify` on `tag`, ready to spawn.
    fn cli(&self, tag: &str) -> Command {
        let mut cli = self.command(env!("CARGO_BIN_EXE_driftless"));
        cli.arg("verify")
            .arg("--repo")
            .arg(&self.repo)
            .arg("--allowed-signers")
            .arg(&self.allowed_signers)
            // The signature alone, as git verify-tag checks it.
            .arg("--signature-only")
            .arg(tag);
        cli
    }

    /// `git verify-tag` on `tag`, ready to spawn.
    fn git_verify(&self, tag: &str) -> Command {
        let mut git = self.command("git");
        git.arg("-C")
            .arg(&self.repo)
            .arg("-c")
            .arg(format!(
                "gpg.ssh.allowedSignersFile={}",
                self.allowed_signers.display()
            ))
            .arg("verify-tag")
            .arg(tag);
        git
    }

    /// One full in-process verification, as the agent does it on a node.
    fn library(&self, tag: &str) -> Result<()> {
        let trust = Trust::load(&self.allowed_signers, None)?;
        let repo = Repository::open(&self.repo)?;
        let verified = verify_tag(&repo, tag, &trust, Timestamp::now())?;
        black_box(verified);
        Ok(())
    }

    /// Checks, before anything is timed, that each contender succeeds on
    /// `tag` and says what it is expected to say.
    fn check_all(&self, tag: &str) -> Result<()> {
        let trust = Trust::load(&self.allowed_signers, None)?;
        let repo = Repository::open(&self.repo)?;
        let verified =
            verify_tag(&repo, tag, &trust, Timestamp::now()).context("library verification")?;
        ensure!(
            verified.name == tag && verified.principal == PRINCIPAL,
            "library verified something else: {verified:?}"
        );

        let out = run(&mut self.cli(tag)).context("driftless verify")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Exit 0 is the contract; the wording may change, the tag's name stays.
        ensure!(stdout.contains(tag), "driftless verify printed {stdout:?}");

        let out = run(&mut self.git_verify(tag)).context("git verify-tag")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            stderr.contains("Good \"git\" signature"),
            "git verify-tag printed {stderr:?}"
        );
        Ok(())
    }

    /// Times the three contenders on `tag`, interleaved: each round runs a
    /// share of the library repetitions, the CLI once and git once, in an
    /// order that rotates from round to round.
    fn measure(
        &self,
        tag: &str,
        lib_reps: usize,
        proc_reps: usize,
        warmup: usize,
    ) -> Result<Times> {
        let mut cli = self.cli(tag);
        cli.stdout(Stdio::null()).stderr(Stdio::null());
        let mut git = self.git_verify(tag);
        git.stdout(Stdio::null()).stderr(Stdio::null());

        let mut times = Times {
            library: Vec::with_capacity(lib_reps),
            cli: Vec::with_capacity(proc_reps),
            git: Vec::with_capacity(proc_reps),
        };
        for round in 0..warmup + proc_reps {
            let timed = round >= warmup;
            // Spread lib_reps over the timed rounds as evenly as possible.
            let lib_this_round = if timed {
                let done = round - warmup;
                (done + 1) * lib_reps / proc_reps - done * lib_reps / proc_reps
            } else {
                lib_reps.div_ceil(proc_reps).max(1)
            };
            for slot in 0..3 {
                match (round + slot) % 3 {
                    0 => {
                        for _ in 0..lib_this_round {
                            let start = Instant::now();
                            self.library(tag)?;
                            let took = start.elapsed();
                            if timed {
                                times.library.push(took);
                            }
                        }
                    }
                    1 => {
                        let took = time_process(&mut cli).context("driftless verify")?;
                        if timed {
                            times.cli.push(took);
                        }
                    }
                    _ => {
                        let took = time_process(&mut git).context("git verify-tag")?;
                        if timed {
                            times.git.push(took);
                        }
                    }
                }
            }
        }
        Ok(times)
    }

    /// Times the parts of the library path separately, to show where a
    /// verification spends its time.
    fn print_phases(&self, reps: usize) -> Result<()> {
        println!("# where the library path spends its time (median of {reps} runs each)");
        println!("# Trust::load: read and parse allowed_signers");
        println!("# repo open : Repository::open, and dropping it");
        println!("# verify_tag: on an already open repository and loaded trust");
        println!("# sig only  : dearmor + parse SSHSIG + hash + public-key check");
        println!("# full      : the `library` contender (all of it, fresh repository)");
        println!(
            "{:<11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "key", "Trust::load", "repo open", "verify_tag", "sig only", "full"
        );
        for (label, _) in KEYS {
            let tag = Fixture::tag_name(label);
            let trust = Trust::load(&self.allowed_signers, None)?;
            let repo = Repository::open(&self.repo)?;
            let load = time_each(reps, || {
                black_box(Trust::load(&self.allowed_signers, None)?);
                Ok(())
            })?;
            let open = time_each(reps, || {
                black_box(Repository::open(&self.repo)?);
                Ok(())
            })?;
            let verify = time_each(reps, || {
                black_box(verify_tag(&repo, &tag, &trust, Timestamp::now())?);
                Ok(())
            })?;
            let raw = {
                let id = repo
                    .find_reference(&format!("refs/tags/{tag}"))?
                    .target()
                    .context("tag ref is symbolic")?;
                repo.odb()?.read(id)?.data().to_vec()
            };
            let signed = parse_tag(&raw)?;
            let sig_only = time_each(reps, || {
                let sig = SshSig::from_armored(signed.signature)?;
                sig.verify(GIT_NAMESPACE, signed.payload)?;
                black_box(sig);
                Ok(())
            })?;
            let full = time_each(reps, || self.library(&tag))?;
            println!(
                "{:<11} {:>11} {:>11} {:>11} {:>11} {:>11}",
                label,
                fmt(median(&load)),
                fmt(median(&open)),
                fmt(median(&verify)),
                fmt(median(&sig_only)),
                fmt(median(&full)),
            );
        }
        println!();
        self.print_process_floors(reps.min(100))
    }

    /// Times spawning a few processes, interleaved, to show what a process
    /// costs before it verifies anything, and what the CLI spends outside
    /// the verification proper.
    fn print_process_floors(&self, reps: usize) -> Result<()> {
        let tag = Fixture::tag_name(KEYS[0].0);
        let quiet = |mut command: Command| {
            command.stdout(Stdio::null()).stderr(Stdio::null());
            command
        };
        let mut version = self.command(env!("CARGO_BIN_EXE_driftless"));
        version.arg("--version");
        // An unknown option: ssh-keygen prints its usage and exits 1.
        let mut keygen = self.command("ssh-keygen");
        keygen.arg("-?");
        let mut no_ca = self.cli(&tag);
        no_ca.env("SSL_CERT_FILE", "/dev/null");
        let mut contenders = [
            ("spawn+wait `true`", quiet(self.command("true")), true),
            ("`driftless --version`", quiet(version), true),
            ("`ssh-keygen -?` (usage, exit 1)", quiet(keygen), false),
            ("`driftless verify` (ed25519)", quiet(self.cli(&tag)), true),
            ("  same, SSL_CERT_FILE=/dev/null", quiet(no_ca), true),
            (
                "`git verify-tag` (ed25519)",
                quiet(self.git_verify(&tag)),
                true,
            ),
        ];
        let mut samples = vec![Vec::with_capacity(reps); contenders.len()];
        let n = contenders.len();
        for round in 0..reps + 3 {
            for slot in 0..n {
                let i = (round + slot) % n;
                let (what, command, must_succeed) = &mut contenders[i];
                command.stdin(Stdio::null());
                let start = Instant::now();
                let status = command
                    .status()
                    .with_context(|| format!("spawning {what}"))?;
                let took = start.elapsed();
                ensure!(
                    status.success() || !*must_succeed,
                    "{what} exited with {status}"
                );
                if round >= 3 {
                    samples[i].push(took);
                }
            }
        }
        println!("# process costs, interleaved (median and p90 of {reps} runs each)");
        for ((what, _, _), times) in contenders.iter().zip(&samples) {
            println!(
                "{what:<34} {:>10} {:>10}",
                fmt(median(times)),
                fmt(percentile(times, 90))
            );
        }
        Ok(())
    }
}

/// Runs a command to completion, capturing its output, and requires exit 0.
fn run(command: &mut Command) -> Result<Output> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} exited with {}: {}{}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Spawns a command, waits for it, and returns the wall time; exit 0 required.
fn time_process(command: &mut Command) -> Result<Duration> {
    command.stdin(Stdio::null());
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("spawning {:?}", command.get_program()))?;
    let took = start.elapsed();
    ensure!(
        status.success(),
        "{:?} exited with {status}",
        command.get_program()
    );
    Ok(took)
}

/// Runs `f` a few times untimed, then `reps` times timed.
fn time_each(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    for _ in 0..reps.div_ceil(10).min(20) {
        f()?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// A duration with a unit that keeps three significant digits or so.
fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1.0 {
        format!("{:.0} ns", micros * 1e3)
    } else if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{:.2} ms", micros / 1e3)
    }
}

fn ratio(slow: Duration, fast: Duration) -> String {
    format!("{:.1}x", slow.as_secs_f64() / fast.as_secs_f64())
}

fn print_table(rows: &[(String, Times)]) {
    println!(
        "{:<11} | {:>10} {:>10} | {:>10} {:>10} | {:>10} {:>10} | {:>9} {:>9}",
        "key", "library", "p90", "CLI", "p90", "git", "p90", "git/lib", "git/CLI"
    );
    println!("{}", "-".repeat(105));
    for (label, t) in rows {
        let (lib, cli, git) = (median(&t.library), median(&t.cli), median(&t.git));
        println!(
            "{:<11} | {:>10} {:>10} | {:>10} {:>10} | {:>10} {:>10} | {:>9} {:>9}",
            label,
            fmt(lib),
            fmt(percentile(&t.library, 90)),
            fmt(cli),
            fmt(percentile(&t.cli, 90)),
            fmt(git),
            fmt(percentile(&t.git, 90)),
            ratio(git, lib),
            ratio(git, cli),
        );
    }
    println!();
    println!("# columns: median and p90 wall time; ratios are of medians");
}
