//! Benchmark: first-boot apply of one SSH-signed release (300 files and
//! 10 MiB, then 3,000 files and 100 MiB), served over smart HTTP on
//! loopback, six ways.
//!
//! * `driftless apply`: `driftless apply --root R`, with `R/etc/driftless/`
//!   holding `agent.yaml` and `allowed_signers` (as cloud-init's
//!   `write_files` would leave them): fetch, verify, plan, write durably,
//!   lock (the immutable attribute; the runs' roots are unlocked with
//!   `chattr -R -i`, untimed, before they are removed).
//! * `driftless apply, SHA-256`: the same node and release, from a
//!   repository made with `git init --object-format=sha256` (ids hashed
//!   with SHA-256 instead of collision-detecting SHA-1).
//! * `driftless apply, static`: the same node with `source.kind: static`,
//!   booting from the files `driftless publish TAG` wrote (the tag file and
//!   the release's pack), served as plain files by the same nginx.
//! * `lean`, the baseline every ratio is against: what a careful operator
//!   would script in cloud-init's `runcmd`, run by `/bin/sh` exactly as
//!   written: `git clone -q --depth 1 --no-tags --no-checkout --branch TAG
//!   URL d && git -C d -c gpg.ssh.allowedSignersFile=F verify-tag TAG &&
//!   git -C d -c tar.umask=0022 archive TAG | tar -x -C ROOT && sync -f
//!   ROOT` (files 0644 as the spec says; no working
//!   tree is written and copied; only the root's filesystem is synced).
//! * `git clone + cp -a`: what most users write: `git clone --depth 1
//!   --branch TAG URL d && git -C d -c gpg.ssh.allowedSignersFile=F
//!   verify-tag TAG && cp -a d/. ROOT/ && sync`. It does more work than the
//!   lean script, so it is a second row, not the yardstick.
//! * `floor`: the bytes and the writes no tool can avoid: the same pack,
//!   fetched as a static file through the same nginx + fcgiwrap +
//!   git-http-backend (git's "dumb" file path: no pack generation on the
//!   server, no indexing on the client) with `curl -o /dev/null`, then the
//!   same files written with `tar -x` from a local archive, then `sync`.
//!
//! The release tree is laid out as an overlay of the root (`srv/app/fNNN`
//! and `driftless.yaml` at the top), and the node spec lists every file at
//! the same path (`/srv/app/fNNN`, mode 0644), so all three contenders leave
//! the same files under their root (the baseline also leaves `.git` and
//! `driftless.yaml` there, since that is what `cp -a d/.` does).
//!
//! Every contender runs in a fresh, empty directory on the benchmark's
//! filesystem, after an untimed `sync` so that no run pays for the previous
//! one's writes. Wall time is measured around the whole process tree. Peak
//! memory is `/usr/bin/time -f %M` around the contender: that is the
//! `ru_maxrss` of `wait4`, which Linux reports as the largest resident set
//! of the process and of every descendant it waited for, so for the shell
//! pipeline it is the largest of `sh`, `git clone` and the helpers it runs
//! (`git-remote-http`, `index-pack`), `verify-tag` and its `ssh-keygen`,
//! `cp` and `sync`. The check phase also measures each baseline stage under
//! its own `/usr/bin/time` and requires the whole-pipeline figure to agree.
//! The same `wait4` gives the tree's user + system CPU time, printed beside
//! (the server's CPU is not in it).
//!
//! The fixture (key, repository, signed tag, bare repositories, server) is
//! made at run time in a temporary directory with the real `ssh-keygen`,
//! `git`, nginx and fcgiwrap, with an isolated HOME and git configuration.
//! Every contender is run once and its files compared with the release
//! (SHA-256 of every file, and its mode) before anything is timed, so no
//! failing path is measured (that run is also the warm-up). Contenders are
//! interleaved round-robin, rotating their order each round.
//!
//! Needs, besides what the tests need (git, ssh-keygen, nginx, fcgiwrap):
//! `/usr/bin/time` (Debian package `time`), `curl`, `tar` and `chattr`.
//!
//! Run it from the workspace root with `cargo bench --bench apply`.
//! Environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DRIFTLESS_BENCH_REPS` | 7 | timed runs of each contender |
//! | `DRIFTLESS_BENCH_SIZES` | `300:10,3000:100` | release sizes measured, `FILES:MIB` each |
//! | `DRIFTLESS_BENCH_FILES` | unset | with `_MIB`: measure this one size instead |
//! | `DRIFTLESS_BENCH_MIB` | unset | total size of those files, MiB |
//! | `DRIFTLESS_BENCH_DIR` | the system temp dir | where fixture and roots live (use a disk, not tmpfs: durability is measured; a fresh journaled ext4 is most like a node's disk). Every run's files stay until the end: at the default sizes and 7 runs, about 15 GB |
//! | `DRIFTLESS_BENCH_PHASES` | unset | `1` adds a table of the contenders' parts, timed alone |
//! | `DRIFTLESS_BENCH_KEEP` | unset | `1` keeps the fixture and every run's directory and output (`runs/*/out`) for a look afterwards |

#[path = "common/mod.rs"]
mod common;

#[path = "common/release.rs"]
mod release;
#[path = "../../tests/support/servers.rs"]
mod servers;

use common::{PRINCIPAL, allowed_line, env_count};
use release::{APP_DIR, ReleaseFile, sha256, write_release};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use servers::{SmartHttp, isolate_git_env, run_bounded, unlock_tree};

/// The release tag.
const TAG: &str = "v1.0.0";
/// The served bare repository, relative to the server's base dir.
const REPO: &str = "release.git";
/// Where `driftless publish` writes, under the served directory.
const SITE: &str = "site";
/// The same release in a SHA-256 repository.
const REPO_SHA256: &str = "release-sha256.git";
/// A bare repository holding only the floor's pack, served as a file.
const FLOOR_REPO: &str = "floor.git";
/// The GNU time binary: `-f '%M %U %S'` prints the peak RSS in KiB and the
/// user and system CPU seconds of the process and its waited-for descendants.
const GNU_TIME: &str = "/usr/bin/time";
/// Longest any single contender run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Longest a fixture-building command may take.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    let reps = env_count("DRIFTLESS_BENCH_REPS", 7)?;
    let sizes = release_sizes()?;
    let phases = env::var_os("DRIFTLESS_BENCH_PHASES").is_some_and(|v| v == "1");
    let bench_dir = match env::var_os("DRIFTLESS_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => env::temp_dir(),
    };
    ensure!(reps > 0, "DRIFTLESS_BENCH_REPS must be positive");
    ensure!(
        Path::new(GNU_TIME).is_file(),
        "{GNU_TIME} not found: install the Debian package `time`"
    );

    println!(
        "# driftless benchmark: first-boot apply of one signed release over smart HTTP on loopback"
    );
    let sizes_arg = sizes
        .iter()
        .map(|(files, mib)| format!("{files}:{mib}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "# reproduce (from the workspace root): DRIFTLESS_BENCH_REPS={reps} \
         DRIFTLESS_BENCH_SIZES={sizes_arg}{}{} cargo bench --bench apply",
        if env::var_os("DRIFTLESS_BENCH_DIR").is_some() {
            format!(" DRIFTLESS_BENCH_DIR={}", bench_dir.display())
        } else {
            String::new()
        },
        if phases {
            " DRIFTLESS_BENCH_PHASES=1"
        } else {
            ""
        }
    );

    // Every fixture lives to the end, so that no removal of one size's
    // files slows the next size's file creation (see `Fixture::measure`).
    let mut fixtures = Vec::new();
    for (files, mib) in sizes {
        println!();
        fixtures
            .push(Fixture::create(&bench_dir, files, mib << 20).context("building the fixture")?);
        let fixture = fixtures.last().context("the fixture just made")?;
        fixture.print_header()?;
        fixture.check_all().context("checking the contenders")?;
        println!();

        let samples = fixture.measure(&MAIN, reps)?;
        print_table(&MAIN, &samples, reps);

        if phases {
            println!();
            let parts = [
                Job::FetchOnly,
                Job::ApplySeeded,
                Job::Clone,
                Job::VerifyTag,
                Job::CopySync,
                Job::Curl,
                Job::TarSync,
            ];
            fixture.check_parts(&parts).context("checking the parts")?;
            let samples = fixture.measure(&parts, reps)?;
            print_phases(&parts, &samples, reps);
        }
    }
    Ok(())
}

/// The release sizes to measure, as (files, MiB): `DRIFTLESS_BENCH_SIZES`
/// (`FILES:MIB,…`), or one size from `DRIFTLESS_BENCH_FILES` and
/// `DRIFTLESS_BENCH_MIB`, or both default sizes.
fn release_sizes() -> Result<Vec<(usize, usize)>> {
    if env::var_os("DRIFTLESS_BENCH_FILES").is_some()
        || env::var_os("DRIFTLESS_BENCH_MIB").is_some()
    {
        let files = env_count("DRIFTLESS_BENCH_FILES", 300)?;
        let mib = env_count("DRIFTLESS_BENCH_MIB", 10)?;
        ensure!(files > 0 && mib > 0, "counts must be positive");
        return Ok(vec![(files, mib)]);
    }
    let text = env::var("DRIFTLESS_BENCH_SIZES").unwrap_or_else(|_| DEFAULT_SIZES.to_owned());
    text.split(',')
        .map(|size| {
            let parsed = size.trim().split_once(':').and_then(|(files, mib)| {
                Some((files.trim().parse().ok()?, mib.trim().parse().ok()?))
            });
            match parsed {
                Some((files, mib)) if files > 0 && mib > 0 => Ok((files, mib)),
                _ => bail!(
                    "DRIFTLESS_BENCH_SIZES: {size:?} is not FILES:MIB with both positive (for example 300:10,3000:100)"
                ),
            }
        })
        .collect()
}

/// Both sizes the issue's goal is stated for: 300 files / 10 MiB and
/// 3,000 files / 100 MiB.
const DEFAULT_SIZES: &str = "300:10,3000:100";

// ---------------------------------------------------------------------------
// What is run
// ---------------------------------------------------------------------------

/// The peak RSS driftless must stay under at every release size: it
/// streams, so its memory does not grow with the release.
const MEMORY_FLAT_MIB: u64 = 32;

/// The contenders of the main table; ratios are against the lean baseline.
const MAIN: [Job; 6] = [
    Job::Driftless,
    Job::DriftlessSha256,
    Job::DriftlessStatic,
    Job::Lean,
    Job::Baseline,
    Job::Floor,
];

/// One thing that is timed: a contender, or a part of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// `driftless apply --root R` on a fresh root.
    Driftless,
    /// The same, from the same release in a SHA-256 repository.
    DriftlessSha256,
    /// The same, from the static files `driftless publish` wrote
    /// (`source.kind: static`), served by the same nginx.
    DriftlessStatic,
    /// The lean shell pipeline a careful operator scripts: shallow clone
    /// without a checkout, verify-tag, `git archive | tar -x`, `sync -f`.
    Lean,
    /// The cloud-init shell pipeline most users write (clone with a
    /// checkout, `cp -a`, `sync`): kept as a second row.
    Baseline,
    /// Pack over HTTP as a file, files written, sync.
    Floor,
    /// `driftless fetch --root R` on a fresh root: fetch and verify only.
    FetchOnly,
    /// `driftless apply` on a root whose cache `driftless fetch` filled.
    ApplySeeded,
    /// `git clone --depth 1 --branch TAG URL d` alone.
    Clone,
    /// `git -C d verify-tag TAG` alone, on a clone made beforehand.
    VerifyTag,
    /// `cp -a d/. ROOT/ && sync` alone, on a clone made beforehand.
    CopySync,
    /// `curl -o /dev/null` of the pack alone.
    Curl,
    /// `tar -x && sync` of the files alone.
    TarSync,
}

impl Job {
    /// The row label.
    fn label(self) -> &'static str {
        match self {
            Job::Driftless => "driftless apply",
            Job::DriftlessSha256 => "driftless apply, SHA-256",
            Job::DriftlessStatic => "driftless apply, static",
            Job::Lean => "lean git (archive|tar)",
            Job::Baseline => "git clone + cp -a",
            Job::Floor => "floor (curl+tar+sync)",
            Job::FetchOnly => "driftless fetch",
            Job::ApplySeeded => "driftless apply, seeded",
            Job::Clone => "git clone --depth 1",
            Job::VerifyTag => "git verify-tag",
            Job::CopySync => "cp -a + sync",
            Job::Curl => "curl pack",
            Job::TarSync => "tar -x + sync",
        }
    }

    /// A short name for run directories.
    fn slug(self) -> &'static str {
        match self {
            Job::Driftless => "driftless",
            Job::DriftlessSha256 => "sha256",
            Job::DriftlessStatic => "static",
            Job::Lean => "lean",
            Job::Baseline => "baseline",
            Job::Floor => "floor",
            Job::FetchOnly => "fetch",
            Job::ApplySeeded => "seeded",
            Job::Clone => "clone",
            Job::VerifyTag => "verify",
            Job::CopySync => "copy",
            Job::Curl => "curl",
            Job::TarSync => "tar",
        }
    }
}

/// The lean baseline, what a careful operator scripts: no checkout, no
/// other tags, the tree written straight from the object store, and only
/// the root's filesystem synced. `$1` TAG, `$2` URL, `$3` the
/// allowed_signers file, `$4` ROOT. Run in the directory that gets `d`.
const LEAN_SCRIPT: &str = r#"git clone -q --depth 1 --no-tags --no-checkout --branch "$1" "$2" d && git -C d -c gpg.ssh.allowedSignersFile="$3" verify-tag "$1" && git -C d -c tar.umask=0022 archive "$1" | tar -x -C "$4" && sync -f "$4""#;

/// The baseline exactly as a user writes it in cloud-init's `runcmd`, with
/// its values as positional parameters: `$1` TAG, `$2` URL, `$3` the
/// allowed_signers file, `$4` ROOT. Run in the directory that gets `d`.
const BASELINE_SCRIPT: &str = r#"git clone --depth 1 --branch "$1" "$2" d && git -C d -c gpg.ssh.allowedSignersFile="$3" verify-tag "$1" && cp -a d/. "$4"/ && sync"#;

/// The baseline with every stage under its own `/usr/bin/time`, writing
/// the peaks to `rss-1` … `rss-4`: the check that the whole-pipeline
/// figure is the largest of the stages.
const BASELINE_STAGED: &str = r#"T="/usr/bin/time -f %M -o" && $T rss-1 git clone --depth 1 --branch "$1" "$2" d && $T rss-2 git -C d -c gpg.ssh.allowedSignersFile="$3" verify-tag "$1" && $T rss-3 cp -a d/. "$4"/ && $T rss-4 sync"#;

/// The floor: `$1` the pack's URL, `$2` the files' archive, `$3` ROOT.
const FLOOR_SCRIPT: &str = r#"curl -sSf -o /dev/null "$1" && tar -xf "$2" -C "$3" && sync"#;

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Spawn to exit of the whole process tree.
    wall: Duration,
    /// Largest resident set of any process of the tree, KiB.
    rss_kib: u64,
    /// User + system CPU time of the tree (10 ms resolution).
    cpu: Duration,
}

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

/// Everything the contenders run against, in one temporary directory.
struct Fixture {
    /// The server, stopped on drop before `dir` is removed.
    server: SmartHttp,
    /// The release's files, in tree order.
    files: Vec<ReleaseFile>,
    /// How many of them are text (the rest are pseudo-random bytes).
    text_files: usize,
    /// The trusted allowed_signers file (also copied into each node root).
    allowed_signers: PathBuf,
    /// The release's files as a plain tar (the floor writes from it).
    tar: PathBuf,
    /// The floor's pack, as a URL of the dumb-HTTP file path.
    pack_url: String,
    /// The pack's size on disk.
    pack_len: u64,
    /// Where each run gets a fresh directory.
    runs: PathBuf,
    /// The bench directory, for the header.
    bench_dir: PathBuf,
    /// Kept alive for the benchmark's duration; removed on drop (last field).
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Makes the key, the release (files, spec, commit, signed tag), the
    /// served bare repository, the floor's pack and archive, and starts the
    /// server.
    fn create(bench_dir: &Path, count: usize, total: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-bench-apply-")
            .tempdir_in(bench_dir)
            .with_context(|| {
                format!("creating a temporary directory in {}", bench_dir.display())
            })?;
        let top = dir.path().to_path_buf();
        let home = top.join("home");
        let work = top.join("work");
        let served = top.join("served");
        let runs = top.join("runs");
        for d in [&home, &work, &served, &runs] {
            fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let tool = |program: &str| {
            let mut command = Command::new(program);
            isolate_git_env(&mut command, &home)
                .current_dir(&top)
                .env("GIT_AUTHOR_NAME", "Release Engineer")
                .env("GIT_AUTHOR_EMAIL", PRINCIPAL)
                .env("GIT_COMMITTER_NAME", "Release Engineer")
                .env("GIT_COMMITTER_EMAIL", PRINCIPAL);
            command
        };

        // The key and the trust file.
        let key = top.join("id_ed25519");
        run_tool(
            tool("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f"])
                .arg(&key),
            "ssh-keygen (is openssh-client installed?)",
        )?;
        let allowed_signers = top.join("allowed_signers");
        fs::write(&allowed_signers, allowed_line(&key)?).context("writing allowed_signers")?;

        // The release, in a SHA-1 repository and (the same files) in a
        // SHA-256 one, each with its served bare copy.
        let bare = served.join(REPO);
        let (files, text_files) = make_release(&tool, &work, &bare, &key, "sha1", count, total)?;
        make_release(
            &tool,
            &top.join("work-sha256"),
            &served.join(REPO_SHA256),
            &key,
            "sha256",
            count,
            total,
        )?;
        let tag_ref = format!("refs/tags/{TAG}");

        // The static files a release pipeline publishes, served as plain
        // files by the same nginx.
        run_tool(
            tool(env!("CARGO_BIN_EXE_driftless"))
                .args(["publish", TAG, "--repo"])
                .arg(&bare)
                .arg("--allowed-signers")
                .arg(&allowed_signers)
                .arg("--out")
                .arg(served.join(SITE)),
            "driftless publish",
        )?;

        // The floor: the tag's objects as one pack in a repository of its
        // own, fetched over the dumb-HTTP file path, and the files as a tar.
        let floor = served.join(FLOOR_REPO);
        run_tool(
            tool("git").args(["init", "-q", "--bare"]).arg(&floor),
            "git init --bare (floor)",
        )?;
        let pack_base = floor.join("objects/pack/pack");
        let mut pack_objects = tool("git");
        pack_objects
            .arg("-C")
            .arg(&work)
            .args(["pack-objects", "-q", "--revs"])
            .arg(&pack_base);
        let hash = pipe_to(&mut pack_objects, &format!("{tag_ref}\n"))
            .context("git pack-objects (floor pack)")?;
        let hash = hash.trim();
        ensure!(
            hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "git pack-objects printed {hash:?}"
        );
        let pack_file = format!("objects/pack/pack-{hash}.pack");
        let pack_len = fs::metadata(floor.join(&pack_file))
            .context("reading the floor pack")?
            .len();
        let tar = top.join("files.tar");
        run_tool(
            tool("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&work)
                .arg(APP_DIR),
            "tar -c",
        )?;

        let server = SmartHttp::start(&served).context("starting nginx + fcgiwrap")?;
        let pack_url = server.http_url(&format!("{FLOOR_REPO}/{pack_file}"));
        Ok(Self {
            server,
            files,
            text_files,
            allowed_signers,
            tar,
            pack_url,
            pack_len,
            runs,
            bench_dir: bench_dir.to_path_buf(),
            dir,
        })
    }

    /// HOME of every tool the benchmark runs.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The release's smart-HTTP URL.
    fn url(&self) -> String {
        self.server.http_url(REPO)
    }

    /// The base URL of the published static files.
    fn static_url(&self) -> String {
        self.server.static_url(SITE)
    }

    /// A command with the isolated environment: no user or system git
    /// configuration, a HOME of its own, no log filter.
    fn command(&self, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
        let mut command = Command::new(program);
        isolate_git_env(&mut command, &self.home())
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .env_remove("SSH_AUTH_SOCK");
        command
    }

    /// `program args…` under `/usr/bin/time`, its peak RSS going to
    /// `run/rss`, its output to `run/out`.
    fn timed(&self, run: &Path, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
        let mut command = self.command(GNU_TIME, cwd);
        command
            .arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(run.join("rss"))
            .arg(program);
        command
    }

    /// Prints what the results depend on.
    fn print_header(&self) -> Result<()> {
        let version = |program: &str, arg: &str| -> String {
            let found = Command::new(program).arg(arg).stdin(Stdio::null()).output();
            match found {
                Ok(out) => {
                    let text = if out.stdout.is_empty() {
                        out.stderr
                    } else {
                        out.stdout
                    };
                    String::from_utf8_lossy(&text)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                }
                Err(_) => format!("{program}: not found"),
            }
        };
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .iter()
            .map(|p| version(p, "-v"))
            .find(|v| v.starts_with("nginx version"))
            .unwrap_or_else(|| "nginx version unknown".to_owned());
        let fs_type = self.fs_type();
        println!(
            "# {} | {} | {} | Linux {} | {} CPUs",
            version("git", "--version"),
            nginx,
            version("curl", "--version")
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            version("uname", "-r"),
            thread::available_parallelism().map_or(0, usize::from),
        );
        println!(
            "# fixture and roots in {} ({fs_type}); every run in a fresh empty directory, after an untimed sync",
            self.bench_dir.display()
        );
        let total: usize = self.files.iter().map(|f| f.len).sum();
        println!(
            "# release: {} files, {} ({} text, {} pseudo-random), tag {TAG} signed with ed25519; pack {}",
            self.files.len(),
            mib(total as u64),
            self.text_files,
            self.files.len() - self.text_files,
            mib(self.pack_len),
        );
        println!(
            "# driftless = `/usr/bin/time driftless apply --root R` (agent.yaml, allowed_signers under R/etc/driftless); it also locks what it wrote"
        );
        println!("# lean      = `/usr/bin/time sh -c '{LEAN_SCRIPT}' sh TAG URL F ROOT`");
        println!("# git+cp    = `/usr/bin/time sh -c '{BASELINE_SCRIPT}' sh TAG URL F ROOT`");
        println!(
            "# SHA-256   = the same, from the same files in a repository made with --object-format=sha256 (smart HTTP)"
        );
        println!(
            "# static    = the same, with `source: {{url: STATIC_URL, kind: static}}`: the files `driftless publish {TAG}` wrote, served as plain files by the same nginx"
        );
        println!("# floor     = `/usr/bin/time sh -c '{FLOOR_SCRIPT}' sh PACK_URL FILES.tar ROOT`");
        println!(
            "#             PACK_URL: the tag's pack (git pack-objects), as a file through the same nginx/fcgiwrap/git-http-backend"
        );
        println!(
            "# peak RSS  = /usr/bin/time -f %M: largest resident set of the process and every descendant it waited for"
        );
        Ok(())
    }

    /// The filesystem type of the bench directory (`df --output=fstype`).
    fn fs_type(&self) -> String {
        Command::new("df")
            .arg("--output=fstype")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map_or_else(
                || "filesystem unknown".to_owned(),
                |out| {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.lines().last().unwrap_or("").trim().to_owned()
                },
            )
    }

    /// Makes a node root under `run` as cloud-init leaves it before
    /// `runcmd`: the agent config, the trust file and a machine id.
    fn node_root(&self, run: &Path) -> Result<PathBuf> {
        self.node_root_from(run, &format!("url: {}", self.url()))
    }

    /// A node root whose `source` section holds `source`.
    fn node_root_from(&self, run: &Path, source: &str) -> Result<PathBuf> {
        let root = run.join("root");
        let etc = root.join("etc/driftless");
        fs::create_dir_all(&etc).context("creating ROOT/etc/driftless")?;
        fs::write(
            etc.join("agent.yaml"),
            format!(
                "source:\n  {source}\ntrust:\n  allowed_signers: /etc/driftless/allowed_signers\nrelease:\n  tag: {TAG}\n"
            ),
        )
        .context("writing agent.yaml")?;
        fs::copy(&self.allowed_signers, etc.join("allowed_signers"))
            .context("copying allowed_signers")?;
        fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .context("writing machine-id")?;
        Ok(root)
    }

    /// An empty root under `run`.
    fn empty_root(run: &Path) -> Result<PathBuf> {
        let root = run.join("root");
        fs::create_dir(&root).context("creating ROOT")?;
        Ok(root)
    }

    /// Runs `cmd` untimed (preparation) and requires success.
    fn prepare(&self, cmd: &mut Command, what: &str) -> Result<()> {
        run_tool(cmd, what).map(drop)
    }

    /// `git clone` of the release into `run/d`, untimed.
    fn clone_into(&self, run: &Path) -> Result<()> {
        let mut git = self.command("git", run);
        git.args(["clone", "-q", "--depth", "1", "--branch", TAG])
            .arg(self.url())
            .arg("d");
        self.prepare(&mut git, "git clone (preparation)")
    }

    /// Sets up `run` for `job` (untimed) and returns the command to time.
    fn job(&self, job: Job, run: &Path) -> Result<Command> {
        let driftless = env!("CARGO_BIN_EXE_driftless");
        let sh = |script: &str| {
            let mut cmd = self.timed(run, "/bin/sh", run);
            cmd.arg("-c").arg(script).arg("sh");
            cmd
        };
        let cmd = match job {
            Job::DriftlessSha256 => {
                let source = format!("url: {}", self.server.http_url(REPO_SHA256));
                let root = self.node_root_from(run, &source)?;
                let mut cmd = self.timed(run, driftless, run);
                cmd.arg("apply").arg("--root").arg(root);
                cmd
            }
            Job::DriftlessStatic => {
                let source = format!("url: {}\n  kind: static", self.static_url());
                let root = self.node_root_from(run, &source)?;
                let mut cmd = self.timed(run, driftless, run);
                cmd.arg("apply").arg("--root").arg(root);
                cmd
            }
            Job::Driftless | Job::FetchOnly => {
                let root = self.node_root(run)?;
                let mut cmd = self.timed(run, driftless, run);
                cmd.arg(if job == Job::Driftless {
                    "apply"
                } else {
                    "fetch"
                })
                .arg("--root")
                .arg(root);
                cmd
            }
            Job::ApplySeeded => {
                let root = self.node_root(run)?;
                let mut fetch = self.command(driftless, run);
                fetch.arg("fetch").arg("--root").arg(&root);
                self.prepare(&mut fetch, "driftless fetch (preparation)")?;
                let mut cmd = self.timed(run, driftless, run);
                cmd.arg("apply").arg("--root").arg(root);
                cmd
            }
            Job::Lean | Job::Baseline => {
                let root = Self::empty_root(run)?;
                let mut cmd = sh(if job == Job::Lean {
                    LEAN_SCRIPT
                } else {
                    BASELINE_SCRIPT
                });
                cmd.arg(TAG)
                    .arg(self.url())
                    .arg(&self.allowed_signers)
                    .arg(root);
                cmd
            }
            Job::Clone => {
                let mut cmd = self.timed(run, "git", run);
                cmd.args(["clone", "--depth", "1", "--branch", TAG])
                    .arg(self.url())
                    .arg("d");
                cmd
            }
            Job::VerifyTag => {
                self.clone_into(run)?;
                let mut cmd = self.timed(run, "git", run);
                cmd.args(["-C", "d", "-c"])
                    .arg(format!(
                        "gpg.ssh.allowedSignersFile={}",
                        self.allowed_signers.display()
                    ))
                    .args(["verify-tag", TAG]);
                cmd
            }
            Job::CopySync => {
                self.clone_into(run)?;
                let root = Self::empty_root(run)?;
                let mut cmd = sh(r#"cp -a d/. "$1"/ && sync"#);
                cmd.arg(root);
                cmd
            }
            Job::Floor => {
                let root = Self::empty_root(run)?;
                let mut cmd = sh(FLOOR_SCRIPT);
                cmd.arg(&self.pack_url).arg(&self.tar).arg(root);
                cmd
            }
            Job::Curl => {
                let mut cmd = self.timed(run, "curl", run);
                cmd.args(["-sSf", "-o", "/dev/null"]).arg(&self.pack_url);
                cmd
            }
            Job::TarSync => {
                let root = Self::empty_root(run)?;
                let mut cmd = sh(r#"tar -xf "$1" -C "$2" && sync"#);
                cmd.arg(&self.tar).arg(root);
                cmd
            }
        };
        Ok(cmd)
    }

    /// A fresh run directory for `job`.
    fn run_dir(&self, job: Job, round: usize) -> Result<PathBuf> {
        self.fresh_dir(&format!("{}-{round}", job.slug()))
    }

    /// A fresh directory `name` under the runs directory.
    fn fresh_dir(&self, name: &str) -> Result<PathBuf> {
        let run = self.runs.join(name);
        if run.exists() {
            remove_run(&run)?;
        }
        fs::create_dir(&run).with_context(|| format!("creating {}", run.display()))?;
        Ok(run)
    }

    /// Prepares, syncs, runs and times `job` once in `run`; the directory
    /// is left for the caller to inspect and remove.
    fn run_once(&self, job: Job, run: &Path) -> Result<Sample> {
        let cmd = self.job(job, run)?;
        Self::time_command(cmd, job, run)
    }

    /// Syncs, then runs and times a prepared `cmd` in `run`.
    fn time_command(mut cmd: Command, job: Job, run: &Path) -> Result<Sample> {
        let out = fs::File::create(run.join("out")).context("creating the output file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().context("output handle")?))
            .stderr(Stdio::from(out))
            .process_group(0);
        nix::unistd::sync();
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", job.label()))?;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting")? {
                break status;
            }
            if start.elapsed() > RUN_LIMIT {
                kill_group(child.id());
                let _ = child.wait();
                bail!("{} ran longer than {RUN_LIMIT:?}", job.label());
            }
            thread::sleep(Duration::from_micros(500));
        };
        let wall = start.elapsed();
        let output = fs::read_to_string(run.join("out")).unwrap_or_default();
        ensure!(
            status.success(),
            "{} exited with {status}:\n{output}",
            job.label()
        );
        let (rss_kib, cpu) = read_usage(&run.join("rss"))?;
        Ok(Sample { wall, rss_kib, cpu })
    }

    /// Runs every contender once and checks that it wrote exactly the
    /// release's files, that the baseline's verify-tag saw a good
    /// signature, and that the whole-pipeline peak RSS is the largest of
    /// the stages' peaks. Prints bytes over HTTP per contender.
    fn check_all(&self) -> Result<()> {
        let mut traffic = Vec::new();
        for job in MAIN {
            let before = self.server.access_log()?.len();
            let run = self.run_dir(job, 0)?;
            self.run_once(job, &run)?;
            let output = fs::read_to_string(run.join("out")).unwrap_or_default();
            match job {
                Job::Driftless | Job::DriftlessSha256 | Job::DriftlessStatic => ensure!(
                    output.contains(&format!("applied release {TAG} ")),
                    "driftless apply printed {output:?}"
                ),
                Job::Lean | Job::Baseline => ensure!(
                    output.contains("Good \"git\" signature"),
                    "{}'s git verify-tag printed {output:?}",
                    job.label()
                ),
                _ => {}
            }
            self.check_files(&run.join("root"))
                .with_context(|| format!("{} left a different node", job.label()))?;
            let entries = self
                .server
                .wait_for_requests(before + 1, Duration::from_secs(5))?;
            // nginx logs a request when it ends; let the last lines land.
            thread::sleep(Duration::from_millis(200));
            let entries = self.server.access_log().unwrap_or(entries);
            let t = servers::Traffic::of(&entries[before..]);
            traffic.push(format!(
                "{} {} in {} requests",
                job.slug(),
                mib(t.bytes_sent),
                t.requests
            ));
        }
        println!("# bytes from the server, per run: {}", traffic.join(", "));

        // Peak RSS: the whole pipeline against each stage measured alone.
        let run = self.run_dir(Job::Baseline, 1)?;
        let whole = self.run_once(Job::Baseline, &run)?;
        let run = self.run_dir(Job::Baseline, 2)?;
        let root = Self::empty_root(&run)?;
        let mut staged = self.command("/bin/sh", &run);
        staged
            .arg("-c")
            .arg(BASELINE_STAGED)
            .arg("sh")
            .arg(TAG)
            .arg(self.url())
            .arg(&self.allowed_signers)
            .arg(&root);
        self.prepare(&mut staged, "the baseline, stage by stage")?;
        let stages = (1..=4)
            .map(|i| read_rss(&run.join(format!("rss-{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let largest = stages.iter().copied().max().unwrap_or(0);
        println!(
            "# baseline peak RSS by stage (MiB): clone {}, verify-tag {}, cp {}, sync {}; whole pipeline {}",
            kib_mib(stages[0]),
            kib_mib(stages[1]),
            kib_mib(stages[2]),
            kib_mib(stages[3]),
            kib_mib(whole.rss_kib),
        );
        ensure!(
            whole.rss_kib * 10 >= largest * 8,
            "the whole-pipeline peak RSS ({} KiB) is well below its largest stage's ({largest} KiB): \
             /usr/bin/time does not see the pipeline's children here",
            whole.rss_kib
        );
        Ok(())
    }

    /// Requires `root/srv/app` to hold exactly the release's files, with
    /// their contents and mode 0644.
    fn check_files(&self, root: &Path) -> Result<()> {
        let app = root.join(APP_DIR);
        let found = fs::read_dir(&app)
            .with_context(|| format!("listing {}", app.display()))?
            .count();
        ensure!(
            found == self.files.len(),
            "{} holds {found} entries, the release {}",
            app.display(),
            self.files.len()
        );
        for file in &self.files {
            let path = root.join(&file.path);
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            ensure!(
                sha256(&bytes) == file.sha256,
                "{} differs from the release",
                path.display()
            );
            let mode = fs::metadata(&path)?.permissions().mode() & 0o7777;
            ensure!(mode == 0o644, "{} has mode {mode:o}", path.display());
        }
        Ok(())
    }

    /// Runs each part once (the warm-up), and checks that the parts measure
    /// what they say: `driftless fetch` leaves the tag in the cache and
    /// writes no file of the release, and an apply on a seeded cache makes
    /// no request to the server.
    fn check_parts(&self, parts: &[Job]) -> Result<()> {
        for &job in parts {
            let run = self.run_dir(job, 0)?;
            let cmd = self.job(job, &run)?;
            // nginx logs a request when it ends: let the preparation's land.
            thread::sleep(Duration::from_millis(200));
            let before = self.server.access_log()?.len();
            Self::time_command(cmd, job, &run)?;
            thread::sleep(Duration::from_millis(200));
            let requests = self.server.access_log()?.len() - before;
            let output = fs::read_to_string(run.join("out")).unwrap_or_default();
            match job {
                Job::FetchOnly => {
                    ensure!(
                        output.contains("is in the cache, verified"),
                        "driftless fetch printed {output:?}"
                    );
                    ensure!(
                        !run.join("root").join(APP_DIR).exists(),
                        "driftless fetch wrote the release's files"
                    );
                }
                Job::ApplySeeded => {
                    self.check_files(&run.join("root"))?;
                    ensure!(
                        requests == 0,
                        "driftless apply on a seeded cache made {requests} requests:\n{output}"
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Times `jobs` `reps` times each, interleaved: each round runs every
    /// job once, in an order that rotates from round to round.
    ///
    /// No run's directory is removed before the benchmark ends (they go
    /// with the fixture's temporary directory): on an ext4 without a
    /// journal (as this benchmark's machine has), the
    /// kernel skips inodes deleted in the last minute (five, if their
    /// inode table block is still dirty) when it allocates new ones, and
    /// reads those blocks to find out,
    /// so removing thousands of files between runs made every contender's
    /// file creation several times slower than on a node's fresh disk.
    fn measure(&self, jobs: &[Job], reps: usize) -> Result<Vec<Vec<Sample>>> {
        let mut samples = vec![Vec::with_capacity(reps); jobs.len()];
        for round in 0..reps {
            for slot in 0..jobs.len() {
                let i = (round + slot) % jobs.len();
                let run = self.fresh_dir(&format!("{}-timed-{round}", jobs[i].slug()))?;
                let sample = self
                    .run_once(jobs[i], &run)
                    .with_context(|| format!("round {round}"))?;
                samples[i].push(sample);
            }
        }
        Ok(samples)
    }
}

impl Drop for Fixture {
    /// Clears the immutable attribute `driftless apply` left on a root, if
    /// a run failed before its directory was removed, so the temporary
    /// directory can go.
    fn drop(&mut self) {
        if env::var_os("DRIFTLESS_BENCH_KEEP").is_some_and(|v| v == "1") {
            self.dir.disable_cleanup(true);
            eprintln!(
                "# kept {} (DRIFTLESS_BENCH_KEEP=1)",
                self.dir.path().display()
            );
            return;
        }
        unlock_tree(&self.runs);
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Makes the release in a new repository `work` of `format` (`sha1` or
/// `sha256`): its files and spec, one commit, the tag signed with `key`;
/// then the served bare repository `bare`, packed the way a hosted one
/// is. Returns the files and how many are text.
fn make_release(
    tool: &dyn Fn(&str) -> Command,
    work: &Path,
    bare: &Path,
    key: &Path,
    format: &str,
    count: usize,
    total: usize,
) -> Result<(Vec<ReleaseFile>, usize)> {
    let object_format = format!("--object-format={format}");
    run_tool(
        tool("git")
            .args(["init", "-q", "-b", "main", &object_format])
            .arg(work),
        "git init",
    )?;
    let written = write_release(work, count, total)?;
    let git = |args: &[&str], what: &str| -> Result<()> {
        run_tool(tool("git").arg("-C").arg(work).args(args), what).map(drop)
    };
    git(&["add", "-A"], "git add")?;
    git(&["commit", "-q", "-m", "benchmark release"], "git commit")?;
    let signing_key = format!("user.signingKey={}", key.display());
    git(
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "tag",
            "-s",
            "-m",
            "benchmark release",
            TAG,
        ],
        "git tag -s",
    )?;
    run_tool(
        tool("git")
            .args(["init", "-q", "--bare", &object_format])
            .arg(bare),
        "git init --bare",
    )?;
    git(
        &[
            "push",
            "-q",
            bare.to_str().context("non-UTF-8 path")?,
            "refs/heads/main",
            &format!("refs/tags/{TAG}"),
        ],
        "git push",
    )?;
    run_tool(
        tool("git")
            .arg("-C")
            .arg(bare)
            .args(["repack", "-a", "-d", "-q"]),
        "git repack",
    )?;
    Ok(written)
}

/// Removes a run directory. `driftless apply` locks what it wrote (the
/// immutable attribute), so that is cleared first, as `chattr -R -i`.
fn remove_run(run: &Path) -> Result<()> {
    unlock_tree(run);
    fs::remove_dir_all(run).with_context(|| format!("removing {}", run.display()))
}

/// Runs a fixture-building command with a time limit; requires exit 0.
fn run_tool(cmd: &mut Command, what: &str) -> Result<servers::Finished> {
    let done = run_bounded(cmd, TOOL_LIMIT).with_context(|| what.to_owned())?;
    ensure!(done.success(), "{what} failed: {}", done.describe());
    Ok(done)
}

/// Runs `cmd` with `input` on stdin; returns its stdout; requires exit 0.
fn pipe_to(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())
        .context("writing stdin")?;
    let out = child.wait_with_output().context("waiting")?;
    ensure!(
        out.status.success(),
        "exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// SIGKILLs process group `pgid` (std has no kill(2); unsafe is denied).
fn kill_group(pgid: u32) {
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("kill -s KILL -- -{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The peak RSS (KiB) and CPU time `/usr/bin/time -f '%M %U %S' -o FILE`
/// wrote: its last line.
fn read_usage(path: &Path) -> Result<(u64, Duration)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let last = text.lines().last().unwrap_or("").trim();
    let parsed = (|| {
        let mut fields = last.split_whitespace();
        let rss: u64 = fields.next()?.parse().ok()?;
        let user: f64 = fields.next()?.parse().ok()?;
        let system: f64 = fields.next()?.parse().ok()?;
        Some((rss, Duration::from_secs_f64(user + system)))
    })();
    parsed.with_context(|| format!("{} holds {text:?}, not `KiB user system`", path.display()))
}

/// The peak RSS `/usr/bin/time -f %M -o FILE` wrote (KiB): its last line.
fn read_rss(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let last = text.lines().last().unwrap_or("").trim();
    last.parse()
        .with_context(|| format!("{} holds {text:?}, not a KiB count", path.display()))
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `values`.
fn percentile<T: Copy + Ord>(values: &[T], p: usize) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn kib_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Median and p90 wall time, median and largest peak RSS of one row.
struct Row {
    wall_median: Duration,
    wall_p90: Duration,
    rss_median: u64,
    rss_max: u64,
    cpu_median: Duration,
}

impl Row {
    fn of(samples: &[Sample]) -> Self {
        let walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
        let cpu: Vec<Duration> = samples.iter().map(|s| s.cpu).collect();
        Self {
            cpu_median: percentile(&cpu, 50),
            wall_median: percentile(&walls, 50),
            wall_p90: percentile(&walls, 90),
            rss_median: percentile(&rss, 50),
            rss_max: percentile(&rss, 100),
        }
    }
}

fn print_table(jobs: &[Job], samples: &[Vec<Sample>], reps: usize) {
    let rows: Vec<Row> = samples.iter().map(|s| Row::of(s)).collect();
    let base = jobs.iter().position(|j| *j == Job::Lean).map(|i| &rows[i]);
    println!(
        "{:<24} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
        "contender", "wall ms", "p90", "RSS MiB", "max", "time/lean", "RSS/lean", "CPU ms"
    );
    println!("{}", "-".repeat(100));
    for (job, row) in jobs.iter().zip(&rows) {
        let (t, m) = match base {
            Some(b) => (
                format!(
                    "{:.2}",
                    row.wall_median.as_secs_f64() / b.wall_median.as_secs_f64()
                ),
                format!("{:.2}", row.rss_median as f64 / b.rss_median as f64),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<24} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
            job.label(),
            ms(row.wall_median),
            ms(row.wall_p90),
            kib_mib(row.rss_median),
            kib_mib(row.rss_max),
            t,
            m,
            format!("{:.0}", row.cpu_median.as_secs_f64() * 1e3),
        );
    }
    println!();
    println!(
        "# {reps} timed runs each, interleaved round-robin; wall: median and p90; \
         peak RSS: median and max; ratios are of medians;"
    );
    println!(
        "# CPU: median user+system time of the client's process tree (10 ms resolution; \
         the server's work is not in it)"
    );
    let find = |j: Job| jobs.iter().position(|x| *x == j).map(|i| &rows[i]);
    if let (Some(d), Some(b)) = (find(Job::Driftless), base) {
        let t = d.wall_median.as_secs_f64() / b.wall_median.as_secs_f64();
        let m = d.rss_median as f64 / b.rss_median as f64;
        println!(
            "# goal, time:   driftless/lean = {t:.2} (at most 0.50): {}",
            if t <= 0.5 { "met" } else { "MISSED" }
        );
        let peak = d.rss_median as f64 / 1024.0;
        println!(
            "# memory: driftless/lean = {m:.2}; goal, flat: driftless peak RSS {peak:.1} MiB (at most {MEMORY_FLAT_MIB} MiB at every size, while git's grows with the release): {}",
            if peak <= MEMORY_FLAT_MIB as f64 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    if let (Some(d), Some(f)) = (find(Job::DriftlessStatic), find(Job::Floor)) {
        let t = d.wall_median.as_secs_f64() / f.wall_median.as_secs_f64();
        println!(
            "# goal, static: driftless static/floor = {t:.2} (at most 2.00): {}",
            if t <= 2.0 { "met" } else { "MISSED" }
        );
    }
    if let (Some(d), Some(f)) = (find(Job::Driftless), find(Job::Floor)) {
        println!(
            "# driftless/floor: time {:.2}, peak RSS {:.2}",
            d.wall_median.as_secs_f64() / f.wall_median.as_secs_f64(),
            d.rss_median as f64 / f.rss_median as f64
        );
    }
}

fn print_phases(jobs: &[Job], samples: &[Vec<Sample>], reps: usize) {
    println!(
        "# the contenders' parts, each timed alone on a fresh directory ({reps} runs each, interleaved)"
    );
    println!(
        "# driftless fetch        : `driftless fetch --root R`: fetch + verify into the cache, nothing applied"
    );
    println!(
        "# driftless apply, seeded: `driftless apply` on a root `driftless fetch` filled: verify from cache, plan, write, sync, lock"
    );
    println!(
        "# git verify-tag         : on a clone made beforehand; cp -a + sync: of such a clone into an empty root"
    );
    println!(
        "# curl pack              : the floor's pack to /dev/null; tar -x + sync: the floor's writes"
    );
    println!(
        "{:<24} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
        "part", "wall ms", "p90", "RSS MiB", "max", "CPU ms"
    );
    println!("{}", "-".repeat(78));
    for (job, s) in jobs.iter().zip(samples) {
        let row = Row::of(s);
        println!(
            "{:<24} | {:>9} {:>9} | {:>9} {:>9} | {:>7}",
            job.label(),
            ms(row.wall_median),
            ms(row.wall_p90),
            kib_mib(row.rss_median),
            kib_mib(row.rss_max),
            format!("{:.0}", row.cpu_median.as_secs_f64() * 1e3),
        );
    }
}
