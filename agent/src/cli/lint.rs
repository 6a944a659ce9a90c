//! `driftless lint`: a release tree (the work tree as it would be
//! committed, or a tag's tree) and an agent config (or the user-data that
//! carries one) judged by the node's own rules, offline. The checks are
//! `node::lint::CHECKS` and `fleet::lint::CHECKS`; this file only gathers
//! what they judge and prints what they find.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::exit::ExitCode;
use crate::fleet::lint::{self as config_lint, ConfigFile};
use crate::release::lint::{Finding, Level, refused};
use crate::release::local;
use crate::release::tree::Release;
use crate::types::TreePath;

/// Arguments of `driftless lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// The release's work tree (its files as `git add -A` would commit
    /// them), or with --tag the repository holding the tag.
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Lint the tree of this tag instead of the work tree (its signature
    /// is `driftless verify`'s).
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    /// The node spec in the tree (default: the config's release.spec, else
    /// driftless.yaml).
    #[arg(long, value_name = "PATH")]
    spec: Option<String>,
    /// Also check this agent config, or cloud-init user-data that writes
    /// one (its release.spec then names the spec).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The image's root: its accounts resolve owners, and its entries are
    /// checked against the release's paths (default: a minimal root with
    /// only root's account).
    #[arg(long, value_name = "DIR")]
    base: Option<PathBuf>,
    /// Print the findings as one JSON object.
    #[arg(long)]
    json: bool,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
}

/// Runs `driftless lint`: exit 0 when a node accepts everything given, 6
/// when it refuses the release tree, 3 when it refuses the config.
pub fn run(args: LintArgs) -> ExitCode {
    if args.list {
        for c in crate::node::lint::CHECKS {
            outln!("release  {:<10} {}", c.name, c.about);
        }
        for c in config_lint::CHECKS {
            outln!("config   {:<10} {}", c.name, c.about);
        }
        return ExitCode::Success;
    }
    match lint(&args) {
        Ok(code) => code,
        Err(e) => super::report(&e),
    }
}

fn lint(args: &LintArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.as_deref().map(ConfigFile::read).transpose()?;
    let config_findings = config
        .as_ref()
        .map(|c| config_lint::run_config(config_lint::CHECKS, c))
        .unwrap_or_default();
    let spec = match (
        &args.spec,
        config.as_ref().and_then(|c| c.config.as_ref().ok()),
    ) {
        (Some(s), _) => TreePath::new(s).map_err(|reason| crate::config::ConfigError {
            path: "--spec".into(),
            reason,
        })?,
        (None, Some(config)) => config.release.spec.clone(),
        (None, None) => TreePath::new("driftless.yaml").map_err(anyhow::Error::msg)?,
    };
    let repo = local::open(&args.dir, args.tag.is_none())?;
    let (subject, tree) = match &args.tag {
        Some(tag) => {
            let (commit, tree) = local::tag_tree(&repo, tag)?;
            (format!("tag {tag} (commit {commit})"), tree)
        }
        None => {
            let tree = local::worktree_tree(&repo)?;
            let top = repo.workdir().unwrap_or(repo.path());
            (format!("work tree {}", top.display()), tree)
        }
    };
    let release = Release::unsigned(&repo, tree, &subject)?;
    let tree_findings = crate::node::lint::release(&release, &spec, args.base.as_deref());
    let tree_refused = refused(&tree_findings);
    let config_refused = refused(&config_findings);
    if args.json {
        let mut value = json!({
            "release": { "subject": subject, "spec": spec, "refused": tree_refused, "findings": tree_findings },
        });
        if let Some(c) = &config {
            value["config"] = json!({ "file": c.name, "user_data": c.user_data, "refused": config_refused, "findings": config_findings });
        }
        outln!("{value}");
    } else {
        print_findings(&tree_findings);
        verdict(&subject, &tree_findings, "release");
        if let Some(c) = &config {
            print_findings(&config_findings);
            let what = if c.user_data {
                format!("user-data {}", c.name)
            } else {
                format!("agent config {}", c.name)
            };
            verdict(&what, &config_findings, "config");
        }
    }
    Ok(if tree_refused {
        ExitCode::Spec
    } else if config_refused {
        ExitCode::Config
    } else {
        ExitCode::Success
    })
}

/// Prints each finding on a line of its own.
pub(super) fn print_findings(findings: &[Finding]) {
    for f in findings {
        outln!("{f}");
    }
}

/// One line: whether a node accepts `subject`.
pub(super) fn verdict(subject: &str, findings: &[Finding], what: &str) {
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (errors, warnings) = (count(Level::Error), count(Level::Warning));
    let warned = match warnings {
        0 => String::new(),
        1 => ", 1 warning".to_owned(),
        n => format!(", {n} warnings"),
    };
    if errors == 0 {
        outln!("good: a node accepts this {what}: {subject}{warned}");
    } else {
        let s = if errors == 1 { "" } else { "s" };
        outln!("REFUSED: a node refuses this {what}: {subject}: {errors} error{s}{warned}");
    }
}
