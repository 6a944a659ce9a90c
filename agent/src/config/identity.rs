//! How the node finds its own id (for the fleet, logs and webhooks): the
//! configured file, cloud-init's instance id, or `/etc/machine-id`. Apart
//! from the config's schema because it reads the node, not the config file.

use std::path::Path;

use super::{ConfigError, NodeSettings};
use crate::types::NodePath;

/// Reads the node's identity under `root` (see [`NodeSettings::id_file`]).
pub fn node_id(root: &Path, settings: &NodeSettings) -> Result<String, ConfigError> {
    let read = |p: &NodePath| {
        std::fs::read_to_string(p.under(root)).map_err(|e| ConfigError {
            path: p.to_string(),
            reason: format!("cannot read the node id: {e}"),
        })
    };
    if let Some(file) = &settings.id_file {
        return first_line(&read(file)?, file);
    }
    let instance_data = root.join("run/cloud-init/instance-data.json");
    if let Ok(text) = std::fs::read_to_string(&instance_data) {
        if let Some(id) = instance_id(&text) {
            return Ok(id);
        }
    }
    let machine_id = NodePath::new("/etc/machine-id").map_err(|e| ConfigError {
        path: "/etc/machine-id".into(),
        reason: e,
    })?;
    first_line(&read(&machine_id)?, &machine_id)
}

/// Extracts `v1.instance_id` from cloud-init's instance data.
pub fn instance_id(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = value.get("v1")?.get("instance_id")?.as_str()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

fn first_line(text: &str, path: &NodePath) -> Result<String, ConfigError> {
    let id = text.lines().next().unwrap_or("").trim();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ConfigError {
            path: path.to_string(),
            reason: "node id is empty or not one printable line".into(),
        });
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_init_instance_id() {
        assert_eq!(
            instance_id(r#"{"v1": {"instance_id": "i-0abc"}}"#),
            Some("i-0abc".into())
        );
        assert_eq!(instance_id(r#"{"v1": {}}"#), None);
    }
}
