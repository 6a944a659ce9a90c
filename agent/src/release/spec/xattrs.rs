//! The spec's `xattrs` section: the security-relevant extended attributes
//! (POSIX ACLs, file capabilities, `security.*` labels) a managed file or
//! directory is to carry. Apply sets them; any ACL or capability a managed
//! path carries that is not declared here is refused, and every attribute
//! is compared for drift. Apart because the values are raw bytes, written
//! as `getfattr -e hex` prints them.

use serde::{Deserialize, Serialize};

use crate::types::NodePath;

/// One declared attribute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XattrSpec {
    /// The managed file or directory (declared under `files` or `directories`).
    pub path: NodePath,
    /// The attribute: `security.capability`, `system.posix_acl_access`,
    /// `system.posix_acl_default` or another `security.*` name.
    pub name: String,
    /// Its value in hex, `0x` first, as `getfattr -e hex -n NAME FILE` prints it.
    pub value: String,
}

impl XattrSpec {
    /// The value's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let hex = self
            .value
            .strip_prefix("0x")
            .filter(|h| !h.is_empty() && h.len() % 2 == 0 && h.len() <= 2 * 64 * 1024)
            .ok_or_else(|| {
                format!(
                    "xattrs: {} {}: the value must be hex starting with 0x, as getfattr -e hex \
                     prints it",
                    self.path, self.name
                )
            })?;
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16)
                    .map_err(|_| format!("xattrs: {} {}: not hex", self.path, self.name))
            })
            .collect()
    }
}

/// Checks the section against the spec's own paths.
pub(super) fn validate(
    xattrs: &[XattrSpec],
    declared: &dyn Fn(&NodePath) -> bool,
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for x in xattrs {
        if !crate::root::xattr::is_security_relevant(&x.name) {
            return Err(format!(
                "xattrs: {} {}: only security.* and system.posix_acl_* attributes are managed",
                x.path, x.name
            ));
        }
        if !declared(&x.path) {
            return Err(format!(
                "xattrs: {} is not a file or directory the spec declares",
                x.path
            ));
        }
        x.bytes()?;
        if !seen.insert((&x.path, &x.name)) {
            return Err(format!("xattrs: {} {} is declared twice", x.path, x.name));
        }
    }
    Ok(())
}
