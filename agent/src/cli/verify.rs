//! `driftless verify`: the node's verdict on a tag or commit, for release
//! engineers to run in their own CI before they push. For a tag whose tree
//! holds a node spec, it also checks every encrypted source (secret) the
//! spec names, without decrypting any.

use std::path::PathBuf;

use clap::Args;
use git2::{Repository, RepositoryOpenFlags};
use jiff::Timestamp;
use serde_json::json;

use crate::config::ConfigError;
use crate::exit::ExitCode;
use crate::release::sealed::{self, SealedHeader};
use crate::release::tree::Release;
use crate::types::TreePath;
use crate::verify::{self, Kind, Trust, Verified};

/// Arguments of `driftless verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The git repository (a work tree or a bare repository).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// The allowed_signers file (ssh-keygen's ALLOWED SIGNERS format).
    #[arg(long, value_name = "FILE")]
    allowed_signers: PathBuf,
    /// Public keys to refuse, one per line.
    #[arg(long, value_name = "FILE")]
    revoked_keys: Option<PathBuf>,
    /// Verify the signed commit REV instead of a tag.
    #[arg(long, value_name = "REV", conflicts_with = "tag")]
    commit: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// The node spec in the tag's tree, whose secrets are checked (each
    /// must parse as age and name a recipient a node can hold).
    #[arg(long, value_name = "PATH", default_value = "driftless.yaml")]
    spec: String,
    /// The annotated tag to verify (refs/tags/TAG).
    #[arg(required_unless_present = "commit")]
    tag: Option<String>,
}

/// Runs `driftless verify`.
pub fn run(args: VerifyArgs) -> ExitCode {
    let (kind, name) = match (&args.tag, &args.commit) {
        (Some(tag), _) => (Kind::Tag, tag.clone()),
        (None, Some(rev)) => (Kind::Commit, rev.clone()),
        (None, None) => unreachable!("clap requires a tag or --commit"),
    };
    let label = match kind {
        Kind::Tag => "tag",
        Kind::Commit => "commit",
    };
    match verify(&args, kind, &name) {
        Ok((verified, secrets)) => {
            if args.json {
                let mut value = serde_json::to_value(&verified).unwrap_or_default();
                value["verified"] = json!(true);
                value["secrets"] = secrets
                    .iter()
                    .map(|(source, header)| json!({ "source": source, "recipients": header.describe() }))
                    .collect();
                outln!("{value}");
            } else {
                print_human(&verified);
                for (i, (source, header)) in secrets.iter().enumerate() {
                    let label = if i == 0 { "secrets" } else { "" };
                    outln!("{label:<10} {source}: {}", header.describe());
                }
            }
            ExitCode::Success
        }
        Err(error) => {
            let error = error.context(format!("{label} {name}"));
            if args.json {
                let message = crate::error::one_line(&error);
                let message = message
                    .split_once(": ")
                    .map_or(message.as_str(), |(_, m)| m);
                outln!(
                    "{}",
                    json!({ "verified": false, "kind": kind, "name": name, "error": message })
                );
            }
            super::report(&error)
        }
    }
}

/// A verified tag or commit, and the secrets of a tag's node spec.
type Verdict = (Verified, Vec<(TreePath, SealedHeader)>);

fn verify(args: &VerifyArgs, kind: Kind, name: &str) -> anyhow::Result<Verdict> {
    let trust = Trust::load(&args.allowed_signers, args.revoked_keys.as_deref())?;
    let repo = Repository::open_ext(
        &args.repo,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&str>(),
    )
    .map_err(|e| ConfigError {
        path: args.repo.display().to_string(),
        reason: format!("cannot open repository: {}", e.message()),
    })?;
    let now = Timestamp::now();
    let verified = match kind {
        Kind::Tag => verify::verify_tag(&repo, name, &trust, now)?,
        Kind::Commit => verify::verify_commit(&repo, name, &trust, now)?,
    };
    let mut secrets = Vec::new();
    if kind == Kind::Tag {
        let spec_path = TreePath::new(&args.spec).map_err(|reason| ConfigError {
            path: "--spec".into(),
            reason,
        })?;
        let release = Release::open(&repo, verified.clone())?;
        match release.spec(&spec_path) {
            Ok(spec) => secrets = sealed::check_sources(&release, &spec)?,
            // A tree without a node spec is not a release of nodes.
            Err(e) if e.reason == "no such file in the release" => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((verified, secrets))
}

fn print_human(v: &Verified) {
    let kind = match v.kind {
        Kind::Tag => "tag",
        Kind::Commit => "commit",
    };
    outln!("good signature on {kind} {}", v.name);
    if v.kind == Kind::Tag {
        outln!("tag        {} ({})", v.name, v.object);
    }
    outln!("commit     {}", v.commit);
    outln!("principal  {}", v.principal);
    outln!("key        {} ({})", v.fingerprint, label(v.key_type));
    outln!("signed at  {}", v.signed_at);
}

fn label(key_type: &str) -> &'static str {
    match key_type {
        "ssh-ed25519" => "ED25519",
        "ssh-rsa" => "RSA",
        "sk-ssh-ed25519@openssh.com" => "ED25519-SK",
        "sk-ecdsa-sha2-nistp256@openssh.com" => "ECDSA-SK",
        _ => "ECDSA",
    }
}
