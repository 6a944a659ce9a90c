//! Arguments every node command shares: the root and the config.

use std::path::PathBuf;

use clap::Args;

use crate::config::{self, AgentConfig};

/// Where the node is and how it is configured.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node's root: `/` on a live node, a mounted image, or a test
    /// directory. Every read and write of the node happens beneath it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The agent config (a path on this host). Default:
    /// ROOT/etc/driftless/agent.yaml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl NodeArgs {
    /// Reads the agent config.
    pub fn load_config(&self) -> anyhow::Result<AgentConfig> {
        Ok(AgentConfig::load(&config::config_path(
            &self.root,
            self.config.as_deref(),
        ))?)
    }
}
