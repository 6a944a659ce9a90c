//! `driftless channel`: the operator's side of the channel. Each command
//! works on a local clone of the release repository, writes the channel
//! branch without touching the work tree (or fast-forwards it, when the
//! branch is checked out), signs with the user's git SSH signing key, and
//! checks the result with exactly the node's rules (`release::channel::
//! evaluate`, the tag's verification and its object id) before the branch
//! moves. Nothing is pushed unless `--push` says so. Operators never write
//! a sequence, an expiry, an object id or a signing flag by hand.
//!
//! `init`, `promote`, `rollback`, `hold`, `release`, `failed` and
//! `refresh` write (`write.rs`); `show` reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use git2::{Oid, Repository};
use jiff::Timestamp;

use crate::config::ChannelSettings;
use crate::exit::ExitCode;
use crate::release::channel::{self, ChannelFile, Expect, Failures, Known};
use crate::release::clock::Judged;
use crate::types::TreePath;
use crate::verify::{AllowedSigners, Roles, Trust};

mod write;

/// Arguments of `driftless channel`.
#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// The local clone of the release repository (a work tree or bare).
    #[arg(long, value_name = "DIR", default_value = ".", global = true)]
    repo: PathBuf,
    /// The channel branch (its name is the channel's name).
    #[arg(long, value_name = "NAME", default_value = "channel", global = true)]
    branch: String,
    /// The channel file in the branch's tree.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "channel.yaml",
        global = true
    )]
    file: String,
    #[command(flatten)]
    signers: SignerFiles,
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// The nodes' trust files, which the operator's commands judge with.
#[derive(Debug, Clone, Args)]
pub(super) struct SignerFiles {
    /// Who may sign releases: the nodes' `trust.allowed_signers`.
    #[arg(long, value_name = "FILE", global = true)]
    allowed_signers: Option<PathBuf>,
    /// Who may move the channel: the nodes' `trust.channel_signers`.
    #[arg(long, value_name = "FILE", global = true)]
    channel_signers: Option<PathBuf>,
    /// Who may only refresh it: the nodes' `trust.refresh_signers`.
    #[arg(long, value_name = "FILE", global = true)]
    refresh_signers: Option<PathBuf>,
    /// Keys refused whatever the signer files say: `trust.revoked_keys`.
    #[arg(long, value_name = "FILE", global = true)]
    revoked_keys: Option<PathBuf>,
}

impl SignerFiles {
    /// The roles these files give, as a node loads them.
    pub(super) fn roles(&self) -> anyhow::Result<Roles> {
        let Some(allowed) = &self.allowed_signers else {
            bail!(
                "--allowed-signers FILE is required: the nodes' trust.allowed_signers (and --channel-signers, --refresh-signers when they have them)"
            );
        };
        let release = Trust::load(allowed, self.revoked_keys.as_deref())?;
        let load = |path: &Option<PathBuf>| path.as_deref().map(AllowedSigners::load).transpose();
        Ok(Roles::from_lists(
            release,
            load(&self.channel_signers)?,
            load(&self.refresh_signers)?,
        ))
    }
}

/// The subcommands of `driftless channel`.
#[derive(Debug, Subcommand)]
enum Action {
    /// Create the channel branch and its first signed document.
    Init {
        /// The release the fleet runs first (a signed tag in this clone).
        tag: String,
        /// The fleet this channel is for: the nodes' `channel.fleet`.
        #[arg(long, value_name = "NAME", default_value = crate::config::DEFAULT_FLEET)]
        fleet: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Name a new release: nodes of other releases ask to be replaced.
    Promote {
        /// The release (a signed tag in this clone).
        tag: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Name a release the channel named before, again.
    Rollback {
        /// The release (a signed tag in this clone the channel named before).
        tag: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Stop the rollout: nobody is replaced until `release`.
    Hold {
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Lift a hold; waves count again from now.
    Release {
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Record new nodes that failed on a release in the signed failures
    /// file: at the channel's max_failures the rollout stops.
    Failed {
        /// The release they failed on.
        release: String,
        /// Their node ids.
        #[arg(required = true)]
        nodes: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Renew the expiry and nothing else (for a timer or a CI job; a
    /// refresh signer's key is enough).
    Refresh {
        #[command(flatten)]
        write: WriteArgs,
    },
    /// What the tip says, its age and expiry, and what nodes do with it.
    Show {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// How a new document is signed, how long it lives and where it goes.
#[derive(Debug, Clone, Args)]
struct WriteArgs {
    /// How long the new document stays fresh (e.g. 72h, 3d, 90m).
    #[arg(long, value_name = "DURATION", default_value = "72h", value_parser = parse_duration)]
    expires_in: Duration,
    /// Sign with this key (a file, or `key::ssh-ed25519 …`) instead of
    /// git's `user.signingKey`.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<String>,
    /// Push the branch to REMOTE (default `origin`) once it moved.
    #[arg(long, value_name = "REMOTE", num_args = 0..=1, default_missing_value = "origin")]
    push: Option<String>,
    /// The commit message (a default names what changed).
    #[arg(long, short = 'm', value_name = "TEXT")]
    message: Option<String>,
}

/// Rollout settings a move may set; the others keep their values.
#[derive(Debug, Clone, Default, Args)]
struct RolloutArgs {
    /// Share of the fleet that may go, e.g. 10% (100% for everyone).
    #[arg(long, value_name = "SHARE")]
    canary: Option<String>,
    /// Waves the fleet goes in (1 for one).
    #[arg(long, value_name = "N")]
    waves: Option<u32>,
    /// Time between waves, e.g. 30m.
    #[arg(long, value_name = "DURATION")]
    wave_interval: Option<String>,
    /// New nodes failing on the release that stop the rollout.
    #[arg(long, value_name = "N")]
    max_failures: Option<u32>,
}

impl RolloutArgs {
    /// Whether any setting is given.
    fn given(&self) -> bool {
        self.canary.is_some()
            || self.waves.is_some()
            || self.wave_interval.is_some()
            || self.max_failures.is_some()
    }
}

/// `72h`, `90m`, `3d`: a positive duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 72h, 3d or 90m");
    let duration = match text.trim().strip_suffix('d') {
        Some(days) => {
            let days: u64 = days.trim().parse().map_err(|_| bad())?;
            Duration::from_secs(days.checked_mul(86_400).ok_or_else(bad)?)
        }
        None => {
            let signed: jiff::SignedDuration = text.trim().parse().map_err(|_| bad())?;
            Duration::try_from(signed).map_err(|_| bad())?
        }
    };
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?} must be at least 1s"));
    }
    Ok(duration)
}

/// Runs `driftless channel`.
pub fn run(args: ChannelArgs) -> ExitCode {
    match dispatch(&args) {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

fn dispatch(args: &ChannelArgs) -> anyhow::Result<()> {
    let ctx = Context::open(args)?;
    match &args.action {
        Action::Show { json } => show(&ctx, *json),
        action => write::write(&ctx, action),
    }
}

/// The clone, the branch, the trust and the node's settings.
pub(super) struct Context {
    pub(super) repo: Repository,
    /// `refs/heads/BRANCH`.
    branch_ref: String,
    /// The branch's name: the channel's name.
    branch: String,
    roles: Roles,
    settings: ChannelSettings,
}

impl Context {
    fn open(args: &ChannelArgs) -> anyhow::Result<Self> {
        Self::new(&args.repo, &args.branch, &args.file, &args.signers)
    }

    /// The clone at `dir`, the channel `branch` and its `file`, judged
    /// with the roles `signers` give.
    pub(super) fn new(
        dir: &std::path::Path,
        branch: &str,
        file: &str,
        signers: &SignerFiles,
    ) -> anyhow::Result<Self> {
        let repo = crate::release::local::open(dir, true)?;
        let branch_ref = format!("refs/heads/{branch}");
        if !crate::types::is_valid_ref_name(&branch_ref) {
            bail!("--branch {branch:?} is not a branch name");
        }
        let roles = signers.roles()?;
        let settings = ChannelSettings {
            file: TreePath::new(file).map_err(|e| anyhow::anyhow!("--file: {e}"))?,
            ..ChannelSettings::default()
        };
        Ok(Self {
            repo,
            branch_ref,
            branch: branch.to_owned(),
            roles,
            settings,
        })
    }

    /// The roles the command judges with.
    pub(super) fn roles(&self) -> &Roles {
        &self.roles
    }

    /// The branch's tip, if the branch exists.
    pub(super) fn tip(&self) -> Option<Oid> {
        self.repo.refname_to_id(&self.branch_ref).ok()
    }

    /// The documents at `commit`, unverified.
    fn documents(&self, commit: Oid) -> anyhow::Result<Option<(ChannelFile, Failures)>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let text = |path: &TreePath| -> anyhow::Result<Option<String>> {
            channel::tree_text(&self.repo, &tree, path).map_err(|e| match e {
                channel::TreeText::Unreadable(r) => anyhow::anyhow!(r),
                channel::TreeText::Invalid(e) => e.into(),
            })
        };
        let Some(file) = text(&self.settings.file)? else {
            return Ok(None);
        };
        let file = ChannelFile::parse(&file, self.settings.file.as_str())?;
        let failures = match text(&self.settings.failures_file)? {
            Some(t) => Failures::parse(&t, self.settings.failures_file.as_str())?,
            None => Failures::default(),
        };
        Ok(Some((file, failures)))
    }

    /// The branch's current document, which every command but `init` needs.
    pub(super) fn current(&self) -> anyhow::Result<(Oid, ChannelFile)> {
        let Some(tip) = self.tip() else {
            bail!(
                "there is no branch {} in this clone: create it with driftless channel init (or fetch it)",
                self.branch
            );
        };
        let Some((file, _)) = self.documents(tip)? else {
            bail!(
                "{} at {tip} holds no {}: create the document with driftless channel init",
                self.branch,
                self.settings.file
            );
        };
        if file.channel != self.branch {
            bail!(
                "the document on branch {} says it is channel {:?}: nodes watching {} would refuse it",
                self.branch,
                file.channel,
                self.branch
            );
        }
        Ok((tip, file))
    }

    /// The node's verdict on `commit` as the tip, coming after `after`
    /// (the branch's current tip and sequence), at `now`.
    pub(super) fn node_verdict(
        &self,
        commit: Oid,
        fleet: &str,
        after: Option<(Oid, u64)>,
        now: Timestamp,
    ) -> anyhow::Result<channel::ChannelState> {
        let expect = Expect {
            channel: self.branch.clone(),
            fleet: fleet.to_owned(),
        };
        let mut known = Known::default();
        if let Some((tip, sequence)) = after.filter(|(tip, _)| *tip != commit) {
            let what = "the branch's current tip".to_owned();
            known.floor = Some((sequence, tip.to_string(), what.clone()));
            known.last = Some((tip, what));
        }
        let clock = Judged {
            at: now,
            system: now,
            floor: None,
            synchronized: None,
        };
        let state = channel::evaluate(
            &self.repo,
            &self.roles,
            commit,
            &expect,
            &known,
            &self.settings,
            &clock,
        )?;
        let tag = state.file.release.as_str();
        let verified = crate::verify::verify_tag(&self.repo, tag, &self.roles.release, now)
            .with_context(|| format!("release {tag}"))?;
        crate::release::obtain::check_tag_object(&state, &verified)?;
        Ok(state)
    }
}

/// The clock now, in whole seconds (the precision documents carry).
pub(super) fn now() -> Timestamp {
    let now = crate::release::clock::system_now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// `driftless channel show`.
fn show(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let (tip, file) = ctx.current()?;
    let now = now();
    let verdict = ctx.node_verdict(tip, &file.fleet, None, now);
    let commit = ctx.repo.find_commit(tip)?;
    let signed_at = Timestamp::from_second(commit.committer().when().seconds())?;
    let age = now.as_second() - signed_at.as_second();
    let left = file.expires.as_second() - now.as_second();
    let (accepted, reason, role, signer) = match &verdict {
        Ok(state) => (
            true,
            None,
            Some(state.role.name()),
            Some(state.signer.clone()),
        ),
        Err(e) => (false, Some(crate::error::one_line(e)), None, None),
    };
    let nodes = what_nodes_do(&file, accepted);
    if json {
        let value = serde_json::json!({
            "tip": tip.to_string(),
            "document": file,
            "signed_at": signed_at,
            "age_seconds": age,
            "expires_in_seconds": left,
            "accepted": accepted,
            "reason": reason,
            "role": role,
            "signer": signer,
            "nodes": nodes,
        });
        outln!("{value}");
        return Ok(());
    }
    outln!("channel    {} (fleet {})", file.channel, file.fleet);
    outln!("tip        {tip}, sequence {}", file.sequence);
    outln!(
        "release    {} (tag object {}){}",
        file.release.as_str(),
        file.tag_object,
        if file.hold { ", ON HOLD" } else { "" }
    );
    match (&signer, role) {
        (Some(s), Some(r)) => outln!(
            "signed     by {s} ({r} signer) at {signed_at}, {} ago",
            span(age)
        ),
        _ => outln!("signed     at {signed_at}, {} ago", span(age)),
    }
    if left > 0 {
        outln!("expires    {} (in {})", file.expires, span(left));
    } else {
        outln!("expires    {} (EXPIRED {} ago)", file.expires, span(-left));
    }
    outln!("moved      {} (waves count from it)", file.moved_at);
    match &reason {
        None => outln!("verdict    nodes accept it"),
        Some(r) => outln!("verdict    nodes REFUSE it: {r}"),
    }
    outln!("nodes      {nodes}");
    Ok(())
}

/// What nodes do with a document, in a sentence.
fn what_nodes_do(file: &ChannelFile, accepted: bool) -> String {
    if !accepted {
        return "do nothing on it: it is refused (or stale); they keep what they run".into();
    }
    if file.hold {
        return format!(
            "stay as they are: the channel is on hold (release {} is desired)",
            file.release.as_str()
        );
    }
    let mut pace = Vec::new();
    if let Some(c) = file.canary {
        pace.push(format!("canary {:.2}%", f64::from(c.0) / 100.0));
    }
    if let Some(w) = file.waves.filter(|w| *w > 1) {
        pace.push(format!("{w} waves"));
    }
    if !file.windows.is_empty() {
        pace.push(format!("{} maintenance windows", file.windows.len()));
    }
    let pace = if pace.is_empty() {
        String::new()
    } else {
        format!(", paced by {}", pace.join(", "))
    };
    format!(
        "on another release than {} ask to be replaced{pace}; new nodes boot with it",
        file.release.as_str()
    )
}

/// `3d 4h`, `5m 2s`: a span of seconds for people.
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_spans() {
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(span(65), "1m 5s");
    }
}
