//! `driftless plan`: what `apply` would do to the root, writing nothing but
//! the release cache.

use clap::Args;
use serde_json::json;

use super::node::NodeArgs;
use crate::exit::ExitCode;
use crate::node::apply;
use crate::node::plan::Change;
use crate::release::tree::Release;
use crate::root::Root;

/// Arguments of `driftless plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Also list entries that are already right.
    #[arg(long)]
    all: bool,
    /// Print the plan as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `driftless plan`.
pub fn run(args: PlanArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        let root = Root::open(&args.node.root)?;
        let before = crate::record::floor::before(&root, &config)?;
        let (repo, verified, _) =
            crate::release::obtain::fetch_verified(&args.node.root, &config, &before)?;
        let release = Release::open(&repo, verified)?;
        let spec = release.spec(&config.release.spec)?;
        let earlier = crate::record::state::load(&root)?;
        let recorded = apply::recorded_parents(earlier.as_ref(), &release.verified.commit);
        let mut secrets = crate::node::secrets::Secrets::new(&config.secrets);
        let steps = apply::plan(&root, &release, &spec, &recorded, &mut secrets)?;
        Ok::<_, anyhow::Error>((release.verified.clone(), steps))
    })();
    let (verified, steps) = match result {
        Ok(r) => r,
        Err(e) => return super::report(&e),
    };
    let changes = steps
        .iter()
        .filter(|s| s.change != Change::Unchanged)
        .count();
    if args.json {
        let steps: Vec<_> = steps
            .iter()
            .filter(|s| args.all || s.change != Change::Unchanged)
            .map(|s| json!({ "path": s.desired.path, "kind": s.desired.entry.kind(), "change": s.change, "origin": s.desired.origin }))
            .collect();
        outln!(
            "{}",
            json!({ "release": verified.name, "commit": verified.commit, "changes": changes, "steps": steps })
        );
    } else {
        outln!(
            "release {} (commit {}) signed by {} ({})",
            verified.name,
            verified.commit,
            verified.principal,
            verified.fingerprint
        );
        for step in steps
            .iter()
            .filter(|s| args.all || s.change != Change::Unchanged)
        {
            outln!("{step}");
        }
        outln!("{changes} changes");
    }
    ExitCode::Success
}
