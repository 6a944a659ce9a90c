//! `driftless verify`: the node's verdict on a tag or commit, for release
//! engineers to run in their own CI before they push. For a tag, the
//! verdict includes the lint of its tree (`node::lint::CHECKS`): "good"
//! means a node accepts the release, not only its signature; every
//! encrypted source (secret) the spec names is listed with its recipients,
//! none decrypted.

use std::path::PathBuf;

use clap::Args;
use git2::{Repository, RepositoryOpenFlags};
use jiff::Timestamp;
use serde_json::json;

use super::cat_file::{self, GitObjects};
use crate::config::ConfigError;
use crate::exit::ExitCode;
use crate::release::lint::{Finding, Refused, refused};
use crate::release::sealed::{self, SealedHeader};
use crate::release::tree::ObjectSource as _;
use crate::release::tree::Release;
use crate::source::pack::{ObjectFormat, ObjectId, ObjectKind};
use crate::types::TreePath;
use crate::verify::{self, Kind, Trust, Verified, VerifyError};

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
    /// The node spec in the tag's tree (the nodes' release.spec).
    #[arg(long, value_name = "PATH", default_value = "driftless.yaml")]
    spec: String,
    /// The image's root, whose accounts resolve the spec's owners when its
    /// tree is linted (default: a minimal root with only root's account).
    #[arg(long, value_name = "DIR")]
    base: Option<PathBuf>,
    /// Check the tag's signature only, not whether a node accepts its tree
    /// (for a tag that is not a release of nodes).
    #[arg(long)]
    signature_only: bool,
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
        Ok((verified, findings, secrets)) => {
            if args.json {
                let mut value = serde_json::to_value(&verified).unwrap_or_default();
                value["verified"] = json!(true);
                if kind == Kind::Tag && !args.signature_only {
                    value["lint"] = json!(findings);
                }
                value["secrets"] = secrets
                    .iter()
                    .map(|(source, header)| json!({ "source": source, "recipients": header.describe() }))
                    .collect();
                outln!("{value}");
            } else {
                print_human(&verified);
                if kind == Kind::Tag && !args.signature_only {
                    outln!(
                        "lint       a node accepts its tree ({} checks{})",
                        crate::node::lint::CHECKS.len(),
                        match findings.len() {
                            0 => String::new(),
                            n => format!(", {n} warnings"),
                        }
                    );
                    super::lint::print_findings(&findings);
                }
                for (i, (source, header)) in secrets.iter().enumerate() {
                    let label = if i == 0 { "secrets" } else { "" };
                    outln!("{label:<10} {source}: {}", header.describe());
                }
            }
            ExitCode::Success
        }
        Err(error) => {
            let lint = error
                .downcast_ref::<Refused>()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            let error = error.context(format!("{label} {name}"));
            if args.json {
                let message = crate::error::one_line(&error);
                let message = message
                    .split_once(": ")
                    .map_or(message.as_str(), |(_, m)| m);
                outln!(
                    "{}",
                    json!({ "verified": false, "kind": kind, "name": name, "error": message, "lint": lint })
                );
            } else {
                super::lint::print_findings(&lint);
            }
            super::report(&error)
        }
    }
}

/// A verified tag or commit, the warnings of a tag's lint, and the secrets
/// of its node spec.
type Verdict = (Verified, Vec<Finding>, Vec<(TreePath, SealedHeader)>);

/// Verifies the signature, then (for a tag) lints its tree: a tree a node
/// refuses is an error ([`Refused`]); the warnings are returned, with the
/// encrypted sources and their recipients.
fn verify(args: &VerifyArgs, kind: Kind, name: &str) -> anyhow::Result<Verdict> {
    let trust = Trust::load(&args.allowed_signers, args.revoked_keys.as_deref())?;
    let opened = Repository::open_ext(
        &args.repo,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&str>(),
    );
    let repo = match opened {
        Ok(repo) => repo,
        // libgit2 has no SHA-256: read such a repository through git,
        // every object's id computed again here.
        Err(_) if cat_file::object_format(&args.repo) == Some(ObjectFormat::Sha256) => {
            return verify_sha256(args, kind, name, &trust);
        }
        Err(e) => {
            return Err(ConfigError {
                path: args.repo.display().to_string(),
                reason: format!("cannot open repository: {}", e.message()),
            }
            .into());
        }
    };
    let now = Timestamp::now();
    let verified = match kind {
        Kind::Tag => verify::verify_tag(&repo, name, &trust, now)?,
        Kind::Commit => verify::verify_commit(&repo, name, &trust, now)?,
    };
    if kind == Kind::Commit || args.signature_only {
        return Ok((verified, Vec::new(), Vec::new()));
    }
    let release = Release::open(&repo, verified.clone())?;
    lint(args, &release, verified)
}

/// [`verify`] in a SHA-256 repository, its objects read with
/// `git cat-file` ([`GitObjects`]).
fn verify_sha256(
    args: &VerifyArgs,
    kind: Kind,
    name: &str,
    trust: &Trust,
) -> anyhow::Result<Verdict> {
    const FORMAT: ObjectFormat = ObjectFormat::Sha256;
    let objects = GitObjects::open(&args.repo, FORMAT)?;
    let now = Timestamp::now();
    let rev = match kind {
        Kind::Tag => format!("refs/tags/{name}"),
        Kind::Commit => format!("{name}^{{commit}}"),
    };
    let id = objects.resolve(&rev)?.ok_or(VerifyError::NotFound)?;
    let (found, raw) = objects.object(&id).map_err(anyhow::Error::msg)?;
    let verified = match kind {
        Kind::Tag => {
            let tree_of =
                |commit: &str| match objects.object(&ObjectId::from_hex_in(FORMAT, commit)?) {
                    Ok((ObjectKind::Commit, raw)) => verify::object::commit_tree(&raw, FORMAT).ok(),
                    _ => None,
                };
            verify::verify_tag_raw(
                name,
                &id.to_hex(),
                found.as_str(),
                &raw,
                tree_of,
                trust,
                now,
            )?
        }
        Kind::Commit if found != ObjectKind::Commit => {
            return Err(VerifyError::NotACommit(found.as_str().to_owned()).into());
        }
        Kind::Commit => verify::verify_commit_raw(name, &id.to_hex(), &raw, trust, now)?,
    };
    if kind == Kind::Commit || args.signature_only {
        return Ok((verified, Vec::new(), Vec::new()));
    }
    let release = Release::local(&objects, verified.clone())?;
    lint(args, &release, verified)
}

/// Lints the tree of a verified tag: a tree a node refuses is an error
/// ([`Refused`]); the warnings are returned, with the encrypted sources
/// and their recipients.
fn lint(args: &VerifyArgs, release: &Release<'_>, verified: Verified) -> anyhow::Result<Verdict> {
    let spec = TreePath::new(&args.spec).map_err(|reason| ConfigError {
        path: "--spec".into(),
        reason,
    })?;
    let findings = crate::node::lint::release(release, &spec, args.base.as_deref());
    if refused(&findings) {
        return Err(Refused(findings).into());
    }
    // The lint parsed the spec and checked every encrypted source.
    let secrets = match release.spec(&spec) {
        Ok(parsed) => sealed::check_sources(release, &parsed)?,
        Err(_) => Vec::new(),
    };
    Ok((verified, findings, secrets))
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
