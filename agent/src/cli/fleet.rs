//! `driftless fleet`: the fleet as the operator sees it. With
//! `rollout.coordinator: etcd` in the config: every node of the group by
//! release and state (what each node's watcher reports), the slot holders
//! and how long they have held their slot, the nodes waiting in line for a
//! slot, oldest first, the failures per release, and
//! the rollout's state (`fleet::roster`). Without etcd: what the signed
//! channel and its failures file say, from a local clone (`--repo`) or as
//! the node under `--root` last accepted them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use jiff::Timestamp;
use serde_json::json;

use super::node::NodeArgs;
use crate::config::{AgentConfig, Coordinator as Kind};
use crate::exit::ExitCode;
use crate::fleet::coordinate::Coordinator;
use crate::fleet::roster::{self, GroupView};
use crate::release::channel::{self, ChannelFile, Failures};

/// How many of a waiting line's first nodes the table names.
const LINE_SHOWN: usize = 10;

/// Arguments of `driftless fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The agent config the fleet's nodes have (its rollout section names
    /// etcd and the group; its trust verifies the channel).
    #[command(flatten)]
    node: NodeArgs,
    /// Without etcd: read the channel from this local clone of the release
    /// repository (verified with the config's trust files) instead of the
    /// record of the node under --root.
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Print the view as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `driftless fleet`.
pub fn run(args: FleetArgs) -> ExitCode {
    let result = (|| {
        let config = args.node.load_config()?;
        if config.rollout.coordinator == Kind::Etcd {
            etcd_view(&args, &config)
        } else {
            channel_view(&args, &config)
        }
    })();
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => super::report(&e),
    }
}

/// The rollout of the group as a whole: the release most nodes are asked
/// to run, and where it stands.
fn rollout_state(view: &GroupView) -> serde_json::Value {
    let mut desired: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &view.nodes {
        if let Some(d) = &n.desired {
            *desired.entry(d).or_default() += 1;
        }
    }
    let Some((target, _)) = desired.into_iter().max_by_key(|(_, n)| *n) else {
        return json!({ "state": "unknown", "detail": "no node has read the channel yet" });
    };
    let on_target = view.nodes.iter().filter(|n| n.release == target).count();
    let failed = view.failures.get(target).map_or(0, Vec::len);
    let states: Vec<&str> = view
        .nodes
        .iter()
        .filter_map(|n| n.rollout.as_deref())
        .collect();
    let state = if on_target == view.nodes.len() {
        "done"
    } else if states.contains(&"stopped") {
        "stopped"
    } else if states.contains(&"hold") {
        "held"
    } else {
        "rolling"
    };
    json!({
        "release": target,
        "state": state,
        "nodes_on_release": on_target,
        "nodes": view.nodes.len(),
        "in_flight": view.slots.len(),
        "max_in_flight": view.max_in_flight,
        "failures": failed,
    })
}

fn etcd_view(args: &FleetArgs, config: &AgentConfig) -> anyhow::Result<()> {
    let Some(coordinator) = Coordinator::from_config(&args.node.root, &config.rollout)? else {
        anyhow::bail!("the config names no coordinator");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let view = runtime.block_on(roster::read_group(coordinator.etcd(), &config.rollout))?;
    let rollout = rollout_state(&view);
    if args.json {
        let mut value = serde_json::to_value(&view)?;
        value["rollout"] = rollout;
        outln!("{value}");
        return Ok(());
    }
    // Everything below comes from etcd, which others may write: a control
    // character in a key or a value must not reach the operator's terminal.
    let mut text = String::new();
    macro_rules! put {
        ($($arg:tt)*) => {
            text.push_str(&format!("{}\n", format_args!($($arg)*)))
        };
    }
    let now = Timestamp::now();
    put!(
        "group {}: {} nodes report to etcd; {} of {} slots taken",
        view.group,
        view.nodes.len(),
        view.slots.len(),
        view.max_in_flight
    );
    let mut by_release: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for n in &view.nodes {
        *by_release.entry((&n.release, &n.phase)).or_default() += 1;
    }
    put!("\n{:<16} {:<22} {:>5}", "RELEASE", "STATE", "NODES");
    for ((release, phase), n) in &by_release {
        put!("{release:<16} {phase:<22} {n:>5}");
    }
    put!(
        "\n{:<24} {:<12} {:<20} {:<12} {:<18} {:>5} {:<8} SEEN",
        "NODE",
        "RELEASE",
        "PHASE",
        "DESIRED",
        "ROLLOUT",
        "DRIFT",
        "REPLACE"
    );
    for n in &view.nodes {
        put!(
            "{:<24} {:<12} {:<20} {:<12} {:<18} {:>5} {:<8} {}s ago",
            n.node,
            n.release,
            n.phase,
            n.desired.as_deref().unwrap_or("-"),
            n.rollout.as_deref().unwrap_or("-"),
            n.drift,
            n.replacement.as_deref().unwrap_or("-"),
            (now - n.at).as_secs()
        );
    }
    put!("\nslots");
    if view.slots.is_empty() {
        put!("  none taken");
    }
    for s in &view.slots {
        match (&s.value, s.held_secs) {
            (Some(v), Some(held)) => put!(
                "  {}  held by {} ({} -> {}) for {held}s",
                s.key,
                v.node,
                v.from,
                v.to
            ),
            _ => put!("  {}  (unreadable value: counted as taken)", s.key),
        }
    }
    for (release, waiting) in &view.line {
        let next: Vec<&str> = waiting
            .iter()
            .take(LINE_SHOWN)
            .map(String::as_str)
            .collect();
        let more = if waiting.len() > LINE_SHOWN {
            ", ..."
        } else {
            ""
        };
        put!(
            "  line for {release}: {} waiting; next: {}{more}",
            waiting.len(),
            next.join(", ")
        );
    }
    put!("\nfailures");
    if view.failures.is_empty() {
        put!("  none recorded");
    }
    for (release, failures) in &view.failures {
        put!("  {release}: {} failed", failures.len());
        for f in failures {
            put!("    {} at {} ({}): {}", f.node, f.stage, f.at, f.reason);
        }
    }
    for key in &view.unreadable {
        put!("unreadable key {key} (not counted)");
    }
    put!(
        "\nrollout  {} {} ({} of {} nodes on it, {} away, {} failed)",
        rollout["release"].as_str().unwrap_or("-"),
        rollout["state"].as_str().unwrap_or("unknown"),
        rollout["nodes_on_release"],
        rollout["nodes"],
        rollout["in_flight"],
        rollout["failures"]
    );
    out!("{}", printable(&text));
    Ok(())
}

fn channel_view(args: &FleetArgs, config: &AgentConfig) -> anyhow::Result<()> {
    let (source, tip, signer, file, failures): (String, String, String, ChannelFile, Failures) =
        match &args.repo {
            Some(dir) => {
                let repo = crate::release::local::open(dir, true)?;
                let roles = config.load_roles(&args.node.root)?;
                let reference = config.channel_ref();
                let tip = repo.refname_to_id(&reference).map_err(|e| {
                    anyhow::anyhow!("{}: no {reference}: {}", dir.display(), e.message())
                })?;
                // By the node's rules but for the expiry: a stale channel is
                // still what the fleet was last told.
                let expect = channel::Expect {
                    channel: config.channel_name(),
                    fleet: config.channel.fleet.clone(),
                };
                let judged = crate::release::clock::judge(&[], Some(false));
                let state = channel::verify_tip(
                    &repo,
                    &roles,
                    tip,
                    &expect,
                    &channel::Known::default(),
                    &config.channel,
                    &judged,
                )?;
                (
                    format!("{reference} of {}", dir.display()),
                    state.tip,
                    state.signer,
                    state.file,
                    state.failures,
                )
            }
            None => {
                let root = crate::root::Root::open(&args.node.root)?;
                let watch = crate::record::watch_state::WatchState::load(&root)?;
                let seen = watch.channel.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no coordinator in the config, and the node under {} has not read the channel yet: give --repo with a clone of the release repository",
                        args.node.root.display()
                    )
                })?;
                (
                    format!("the record of the node under {}", args.node.root.display()),
                    seen.tip,
                    seen.signer,
                    seen.file,
                    seen.failures,
                )
            }
        };
    let release = file.release.as_str().to_owned();
    let max_failures = file.max_failures.unwrap_or(1);
    let failed = failures.count(&release);
    let state = if file.hold {
        "held"
    } else if failed >= max_failures {
        "stopped"
    } else {
        "rolling"
    };
    if args.json {
        outln!(
            "{}",
            json!({
                "coordinator": "none",
                "source": source,
                "tip": tip,
                "signer": signer,
                "channel": file,
                "failures": failures,
                "rollout": { "release": release, "state": state, "failures": failed, "max_failures": max_failures },
            })
        );
        return Ok(());
    }
    outln!("no coordinator: the fleet is what its signed channel says ({source})");
    outln!("channel  tip {tip}, signed by {signer}");
    outln!(
        "desired  {release}{}",
        if file.hold { ", on hold" } else { "" }
    );
    if let Some(c) = file.canary {
        outln!("canary   {:.2}% of nodes", f64::from(c.0) / 100.0);
    }
    if let Some(w) = file.waves {
        outln!(
            "waves    {w}{}",
            file.wave_interval
                .map(|i| format!(", every {i:?}"))
                .unwrap_or_default()
        );
    }
    outln!("failures");
    if failures.is_empty() {
        outln!("  none published");
    }
    for (r, ids) in &failures.0 {
        outln!("  {r}: {} ({})", ids.len(), ids.join(", "));
    }
    outln!("rollout  {release} {state} ({failed} of max_failures {max_failures} failed)");
    outln!(
        "(which node runs what is known only with rollout.coordinator: etcd; see docs/operations.md)"
    );
    Ok(())
}

/// `text` with every control character but the line end shown as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}
