//! `driftless publish`: the static signed files a fleet can boot from
//! (`source.kind: static`), written from a clone of the release repository
//! into a directory that nginx, an object store or a CDN serves. Git stays
//! the source of truth: every file is derived from signed git objects.
//!
//! For each release tag: `releases/TAG_OBJECT.pack`, a git pack of exactly
//! what a depth-1 fetch of the tag carries (made by `git pack-objects`),
//! `releases/TAG_OBJECT.head.pack`, the tag and its commit alone (what a
//! watching node judges a channel move by), and `tags/TAG`, the tag
//! object's id. The pack is read back through the
//! node's own streamed store before it is published (the tag verified by
//! the node's rules before any blob, every bound of a first boot), so a
//! file a node would refuse is never written. For `--channel BRANCH`:
//! `channels/BRANCH.bundle`, the channel branch as a git bundle (its
//! signed history: what a node's channel fetch carries), after its tip
//! passed the node's channel rules; the release it names is published too.
//! Every file is written to a temporary name and renamed into place.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use clap::Args;
use git2::{ObjectType, Oid, Repository};

use super::channel::{Context, SignerFiles, now};
use crate::config::{DEFAULT_FLEET, DEFAULT_MAX_FETCH_BYTES, TagName};
use crate::exit::ExitCode;
use crate::source::artifact;
use crate::source::pack::ObjectId;
use crate::source::stream::{PackFailure, read_release};
use crate::types::ByteSize;
use crate::verify::{self, Trust};

/// Arguments of `driftless publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Release tags to publish (signed tags in this clone).
    #[arg(value_name = "TAG")]
    tags: Vec<String>,
    /// The clone of the release repository.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// The directory to write into (what the web server serves).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
    /// Publish the signed channel of this branch, and the release it names.
    #[arg(long, value_name = "BRANCH")]
    channel: Option<String>,
    /// The fleet the channel is for: the nodes' `channel.fleet`.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_FLEET)]
    fleet: String,
    /// The channel file in the branch's tree.
    #[arg(long, value_name = "PATH", default_value = "channel.yaml")]
    file: String,
    /// The nodes' `fetch.max_bytes`: a release larger than this is refused.
    #[arg(long, value_name = "SIZE", value_parser = ByteSize::parse,
          default_value_t = ByteSize(DEFAULT_MAX_FETCH_BYTES))]
    max_bytes: ByteSize,
    #[command(flatten)]
    signers: SignerFiles,
}

/// Runs `driftless publish`.
pub fn run(args: PublishArgs) -> ExitCode {
    match publish(&args) {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let branch = args.channel.as_deref().unwrap_or("channel");
    let ctx = Context::new(&args.repo, branch, &args.file, &args.signers)?;
    let mut tags = args
        .tags
        .iter()
        .map(|t| TagName::new(t).map_err(|e| anyhow::anyhow!("TAG {t:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut bundle = None;
    if let Some(branch) = &args.channel {
        let Some(tip) = ctx.tip() else {
            bail!(
                "there is no branch {branch} in this clone: fetch it, or create it with driftless channel init"
            );
        };
        let state = ctx
            .node_verdict(tip, &args.fleet, None, now())
            .with_context(|| {
                format!("channel {branch} at {tip}: a node would refuse it; not published")
            })?;
        if !tags.contains(&state.file.release) {
            tags.push(state.file.release.clone());
        }
        bundle = Some((branch.as_str(), tip, state));
    }
    if tags.is_empty() {
        bail!("nothing to publish: name release tags, or --channel BRANCH");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for tag in &tags {
        let id = publish_release(&ctx.repo, tag, &ctx.roles().release, args)?;
        outln!(
            "release    {} -> releases/{id}.pack, releases/{id}.head.pack",
            tag.as_str(),
            id = id.to_hex()
        );
    }
    if let Some((branch, tip, state)) = bundle {
        let path = publish_channel(&ctx.repo, branch, tip, &args.out)?;
        outln!(
            "channel    {branch} at {tip} (sequence {}, names {}, expires {}) -> {path}",
            state.file.sequence,
            state.file.release.as_str(),
            state.file.expires
        );
    }
    Ok(())
}

/// Publishes one release: its pack, checked with the node's store, and
/// its tag file. Returns the tag object's id.
fn publish_release(
    repo: &Repository,
    tag: &TagName,
    trust: &Trust,
    args: &PublishArgs,
) -> anyhow::Result<ObjectId> {
    let verified = verify::verify_tag(repo, tag.as_str(), trust, now())
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "tag {}: a node would refuse it; not published",
                tag.as_str()
            )
        })?;
    let id = ObjectId::from_hex(&verified.object)
        .ok_or_else(|| anyhow::anyhow!("tag {}: not a SHA-1 object id", tag.as_str()))?;
    let name = artifact::release_path(&id);
    let target = under(&args.out, &name);
    let pointer = under(&args.out, &artifact::tag_path(tag));
    if let Ok(existing) = std::fs::read(&pointer) {
        if artifact::parse_tag_file(&existing).ok() != Some(id) {
            bail!(
                "{} names another tag object than {}: a tag is never made again under the same \
                 name; pick a new one (or remove the stale file if it is yours)",
                pointer.display(),
                id.to_hex()
            );
        }
    }
    if !(target.exists() && check_pack(&target, id, tag, trust, args.max_bytes).is_ok()) {
        let dir = parent(&target)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        write_pack(repo, &verified.object, &verified.commit, file.as_file_mut())?;
        check_pack(file.path(), id, tag, trust, args.max_bytes).with_context(|| {
            format!(
                "tag {}: the pack made of it does not read as a node reads it; not published",
                tag.as_str()
            )
        })?;
        persist(file, &target)?;
    }
    publish_head(repo, &verified, id, tag, trust, args)?;
    let mut file = tempfile::NamedTempFile::new_in(parent(&pointer)?)?;
    writeln!(file, "{}", id.to_hex())?;
    persist(file, &pointer)?;
    Ok(id)
}

/// Publishes the release's head, `releases/ID.head.pack`: its tag and the
/// commit it names, what a watching node fetches when the channel moves
/// to it; checked as a node reads it before it is written.
fn publish_head(
    repo: &Repository,
    verified: &verify::Verified,
    id: ObjectId,
    tag: &TagName,
    trust: &Trust,
    args: &PublishArgs,
) -> anyhow::Result<()> {
    let target = under(&args.out, &artifact::head_path(&id));
    if target.exists() && check_head(&target, id, tag, trust).is_ok() {
        return Ok(());
    }
    let mut file = tempfile::NamedTempFile::new_in(parent(&target)?)?;
    let list = format!("{}\n{}\n", verified.object, verified.commit);
    pack_objects(repo, &list, file.as_file_mut())?;
    check_head(file.path(), id, tag, trust).with_context(|| {
        format!(
            "tag {}: the head made of it does not read as a node reads it; not published",
            tag.as_str()
        )
    })?;
    persist(file, &target)
}

/// Reads the head at `path` as a watching node does: within a head's
/// bounds into a scratch repository, where tag object `id` must verify
/// and name a commit that is there.
fn check_head(path: &Path, id: ObjectId, tag: &TagName, trust: &Trust) -> anyhow::Result<()> {
    use crate::source::checked;
    let scratch = tempfile::tempdir()?;
    let repo = Repository::init_bare(scratch.path())?;
    let time = artifact::head_time(&crate::config::FetchSettings::default());
    let limits = checked::Limits::head(time);
    let input = std::fs::File::open(path)?;
    checked::index(&repo, input, &limits, &path.display().to_string()).map_err(|e| match e {
        checked::Failure::Refused(why)
        | checked::Failure::Transient(why)
        | checked::Failure::Unsupported(why) => anyhow::anyhow!(why),
    })?;
    let oid = Oid::from_str(&id.to_hex())?;
    verify::verify_tag_object(&repo, tag.as_str(), oid, trust, now())?;
    Ok(())
}

/// Writes the pack of a depth-1 fetch of `tag` (naming `commit`): the tag,
/// the commit, its trees and blobs, with offset deltas.
fn write_pack(
    repo: &Repository,
    tag: &str,
    commit: &str,
    out: &mut std::fs::File,
) -> anyhow::Result<()> {
    let commit_id = Oid::from_str(commit)?;
    let tree = repo.find_commit(commit_id)?.tree()?;
    let mut list = format!("{tag}\n{commit}\n{}\n", tree.id());
    let mut failed = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        match entry.kind() {
            Some(ObjectType::Tree | ObjectType::Blob) => {
                list.push_str(&format!("{}\n", entry.id()));
            }
            // A submodule's commit is not the release's to carry.
            Some(ObjectType::Commit) => {}
            other => failed = Some(format!("{} is a {other:?}", entry.id())),
        }
        git2::TreeWalkResult::Ok
    })?;
    if let Some(why) = failed {
        bail!("tag {tag}: its tree cannot be packed: {why}");
    }
    pack_objects(repo, &list, out)
}

/// Writes a pack of exactly the objects `list` names (one id a line), with
/// offset deltas, made by `git pack-objects`.
fn pack_objects(repo: &Repository, list: &str, out: &mut std::fs::File) -> anyhow::Result<()> {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["pack-objects", "--stdout", "--delta-base-offset", "-q"])
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run git pack-objects")?;
    let fed = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(list.as_bytes()));
    let output = child.wait_with_output()?;
    if !output.status.success() || !matches!(fed, Some(Ok(()))) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("git pack-objects failed: {}", stderr.trim());
    }
    out.sync_all()?;
    Ok(())
}

/// Reads the pack at `path` exactly as a first boot reads a release, in a
/// temporary root: the tag object `id` verified before any blob, every
/// object of its tree there, within the bounds.
fn check_pack(
    path: &Path,
    id: ObjectId,
    tag: &TagName,
    trust: &Trust,
    max_bytes: ByteSize,
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let file = std::fs::File::open(path)?;
    let input = std::io::BufReader::with_capacity(256 * 1024, file);
    match read_release(root.path(), input, id, tag, trust, max_bytes.0) {
        Ok(_) => Ok(()),
        Err(PackFailure::Verify(e)) => Err(e),
        Err(PackFailure::Refused(why) | PackFailure::Transient(why)) => Err(anyhow::anyhow!(why)),
        Err(PackFailure::NotThatObject) => Err(anyhow::anyhow!(
            "{} does not hold tag object {}",
            path.display(),
            id.to_hex()
        )),
    }
}

/// Publishes the channel branch as a bundle; returns its path under the
/// output directory.
fn publish_channel(
    repo: &Repository,
    branch: &str,
    tip: Oid,
    out: &Path,
) -> anyhow::Result<String> {
    let name = ["channels".to_owned(), format!("{branch}.bundle")];
    let target = under(out, &name);
    let file = tempfile::NamedTempFile::new_in(parent(&target)?)?;
    let made = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["bundle", "create", "-q"])
        .arg(file.path())
        .arg(format!("refs/heads/{branch}"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run git bundle")?;
    if !made.status.success() {
        bail!(
            "git bundle create failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
    }
    // Its header: the signature line, then the one ref it carries.
    let mut header = std::io::BufReader::new(std::fs::File::open(file.path())?).take(4096);
    let mut lines = String::new();
    for _ in 0..2 {
        header.read_line(&mut lines)?;
    }
    let expected = format!("# v2 git bundle\n{tip} refs/heads/{branch}\n");
    if lines != expected {
        bail!("the bundle of {branch} does not name {tip} as its only ref: {lines:?}");
    }
    file.as_file().sync_all()?;
    persist(file, &target)?;
    Ok(name.join("/"))
}

/// `out/a/b`.
fn under(out: &Path, segments: &[String]) -> PathBuf {
    segments.iter().fold(out.to_path_buf(), |p, s| p.join(s))
}

/// The directory `path` goes in, created.
fn parent(path: &Path) -> anyhow::Result<&Path> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Renames the temporary file into place, readable by the web server, and
/// makes the rename durable.
fn persist(file: tempfile::NamedTempFile, target: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.as_file().sync_all()?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))?;
    file.persist(target)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", target.display(), e.error))?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
