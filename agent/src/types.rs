//! Small validated value types shared by the agent config and the node spec:
//! node paths, durations, file modes. Each one refuses bad input while it is
//! deserialised, so errors carry the YAML line and column.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Longest path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// An absolute, normalised path on the node, e.g. `/etc/app/app.conf`: no
/// `.`/`..` components, no empty components, no trailing slash, no NUL. It
/// is always resolved beneath a root, never against the host's `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodePath(String);

impl NodePath {
    /// Validates `text` as a node path.
    pub fn new(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("path {text:?} must be absolute"))?;
        if text.len() > MAX_PATH_LEN || text.contains('\0') {
            return Err(format!("path {text:?} is too long or contains NUL"));
        }
        if rest.is_empty() {
            return Ok(Self(text.to_owned()));
        }
        for component in rest.split('/') {
            match component {
                "" => {
                    return Err(format!(
                        "path {text:?} is not normalised (empty component or trailing slash)"
                    ));
                }
                "." | ".." => {
                    return Err(format!("path {text:?} must not contain . or .. components"));
                }
                c if c.len() > 255 => {
                    return Err(format!(
                        "path {text:?} has a component longer than 255 bytes"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The path as written, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to the root (no leading `/`); empty for the root.
    pub fn relative(&self) -> &Path {
        Path::new(&self.0[1..])
    }

    /// The path under a host directory `root` (for messages and host tools).
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(self.relative())
    }

    /// The parent directory, or `None` for `/`.
    pub fn parent(&self) -> Option<NodePath> {
        if self.0 == "/" {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(NodePath(if cut == 0 {
            "/".to_owned()
        } else {
            self.0[..cut].to_owned()
        }))
    }

    /// The directories above this path, from the top, without `/` itself
    /// (`/etc/app/app.conf`: `/etc`, `/etc/app`).
    pub fn ancestors(&self) -> Vec<NodePath> {
        let mut out = Vec::new();
        let mut at = self.parent();
        while let Some(p) = at.filter(|p| p.0 != "/") {
            at = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// The last component (`app.conf`); empty for `/`.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// Appends one component.
    pub fn join(&self, component: &str) -> Result<NodePath, String> {
        if self.0 == "/" {
            NodePath::new(&format!("/{component}"))
        } else {
            NodePath::new(&format!("{}/{component}", self.0))
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &NodePath) -> bool {
        other.0 == "/" || self.0 == other.0 || self.0.starts_with(&format!("{}/", other.0))
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NodePath::new(&text).map_err(de::Error::custom)
    }
}

impl Serialize for NodePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A relative, normalised path inside the release tree, e.g. `files/app.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TreePath(String);

impl TreePath {
    /// Validates `text` as a path inside the release tree.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.starts_with('/') {
            return Err(format!(
                "release path {text:?} must be relative to the release tree"
            ));
        }
        let as_node =
            NodePath::new(&format!("/{text}")).map_err(|e| e.replace("path", "release path"))?;
        if as_node.as_str() == "/" {
            return Err("release path must not be empty".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TreePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TreePath::new(&text).map_err(de::Error::custom)
    }
}

impl Serialize for TreePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A duration written as text: `30s`, `5m`, `1h 30m`, `500ms` (or ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

impl Interval {
    /// Seconds.
    pub const fn secs(s: u64) -> Self {
        Interval(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed: jiff::SignedDuration = text.parse().map_err(|_| {
            de::Error::custom(format!(
                "invalid duration {text:?} (write e.g. 30s, 5m, 1h)"
            ))
        })?;
        Duration::try_from(parsed)
            .map(Interval)
            .map_err(|_| de::Error::custom(format!("duration {text:?} must not be negative")))
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = jiff::SignedDuration::try_from(self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&format!("{d:#}"))
    }
}

/// A number of bytes written as text: `512MiB`, `2GiB`, `64KiB`, or a
/// bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `N`, `NKiB`, `NMiB` or `NGiB` (N a whole number).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("size {text:?} must be a whole number of bytes, KiB, MiB or GiB");
        let text = text.trim();
        let (digits, shift) = [("GiB", 30), ("MiB", 20), ("KiB", 10)]
            .iter()
            .find_map(|(unit, shift)| Some((text.strip_suffix(unit)?.trim_end(), *shift)))
            .unwrap_or((text, 0));
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .iter()
            .find(|(shift, _)| n != 0 && n % (1u64 << shift) == 0)
        {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 512MiB or 2GiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Permission bits written as octal text (`"0640"`, or `0640` which YAML
/// reads as text): a bare YAML number such as `640` is refused, since readers
/// disagree on whether it is octal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl Mode {
    /// Parses `0640` / `640` / `4755`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("mode {text:?} must be a quoted octal string like \"0640\"");
        if !(3..=4).contains(&text.len()) {
            return Err(bad());
        }
        let bits = u32::from_str_radix(text, 8).map_err(|_| bad())?;
        if bits > 0o7777 {
            return Err(bad());
        }
        Ok(Mode(bits))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal mode like \"0640\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                Mode::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                Err(E::custom(format!("mode {v} must be quoted, like \"0{v}\"")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode {v} must be a quoted octal string like \"0640\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Whether `name` is a valid full ref name by git's rules
/// (git-check-ref-format(1)): slash-separated components, none empty or
/// starting with `.` or ending with `.lock`; no `..`, `@{`, control
/// characters, space or any of `~ ^ : ? * [ \`; not ending in `.`; not `@`.
/// Written here rather than asked of libgit2, whose first use starts its
/// OpenSSL context: reading a config must not cost that.
pub fn is_valid_ref_name(name: &str) -> bool {
    const FORBIDDEN: &[u8] = b" ~^:?*[\\";
    !name.is_empty()
        && name != "@"
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || FORBIDDEN.contains(&b))
        && name.split('/').all(|component| {
            !component.is_empty() && !component.starts_with('.') && !component.ends_with(".lock")
        })
}

/// How a repository names its objects (git's `extensions.objectFormat`):
/// SHA-1 (20-byte ids, 40 hex digits) or SHA-256 (32 bytes, 64 digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ObjectFormat {
    /// SHA-1, git's default.
    #[default]
    Sha1,
    /// SHA-256 (`git init --object-format=sha256`).
    Sha256,
}

impl ObjectFormat {
    /// Bytes in an object id.
    pub fn id_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Hex digits in an object id.
    pub fn hex_len(self) -> usize {
        self.id_len() * 2
    }

    /// git's name for it, as in `object-format=sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    /// The format git calls `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The format whose ids have `digits` hex digits.
    pub fn of_hex_len(digits: usize) -> Option<Self> {
        match digits {
            40 => Some(Self::Sha1),
            64 => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The format of a lowercase hex object id; `None` when `id` is none.
    pub fn of_hex(id: &str) -> Option<Self> {
        let format = Self::of_hex_len(id.len())?;
        id.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(format)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_read_and_print_in_binary_units() {
        for (text, bytes) in [
            ("2GiB", 2u64 << 30),
            ("512 MiB", 512 << 20),
            ("64KiB", 65536),
            ("100", 100),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(100).to_string(), "100");
        for bad in [
            "",
            "2GB",
            "-1MiB",
            "1.5GiB",
            "99999999999999999999GiB",
            "MiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ref_names_follow_git_check_ref_format() {
        // Each verdict agrees with `git check-ref-format`.
        for good in [
            "refs/tags/v1.4.2",
            "refs/heads/channel",
            "refs/heads/prod/eu-west",
            "refs/tags/v1.0.0-rc.1+build.5",
            "refs/tags/a.lockx",
            "refs/tags/\u{e9}t\u{e9}",
        ] {
            assert!(super::is_valid_ref_name(good), "{good}");
        }
        for bad in [
            "",
            "@",
            "refs/tags/",
            "refs//tags/x",
            "/refs/tags/x",
            "refs/tags/.hidden",
            "refs/tags/x.lock",
            "refs/tags/x.",
            "refs/tags/a..b",
            "refs/tags/a@{1}",
            "refs/tags/a b",
            "refs/tags/a~1",
            "refs/tags/a^",
            "refs/tags/a:b",
            "refs/tags/a?",
            "refs/tags/a*",
            "refs/tags/a[1]",
            "refs/tags/a\\b",
            "refs/tags/a\tb",
            "refs/tags/a\u{7f}",
        ] {
            assert!(!super::is_valid_ref_name(bad), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn node_paths_are_absolute_and_normalised() {
        for good in ["/", "/etc", "/etc/app/app.conf", "/a b/c"] {
            assert!(NodePath::new(good).is_ok(), "{good}");
        }
        for bad in [
            "etc",
            "/etc/",
            "//etc",
            "/etc/../x",
            "/./etc",
            "/etc//x",
            "",
            "/a\0b",
        ] {
            assert!(NodePath::new(bad).is_err(), "{bad:?}");
        }
        let p = NodePath::new("/etc/app/app.conf").expect("valid");
        assert_eq!(p.parent().map(|p| p.to_string()), Some("/etc/app".into()));
        assert_eq!(
            NodePath::new("/etc")
                .expect("valid")
                .parent()
                .map(|p| p.to_string()),
            Some("/".into())
        );
        assert_eq!(p.file_name(), "app.conf");
        let above: Vec<String> = p.ancestors().iter().map(|a| a.to_string()).collect();
        assert_eq!(above, ["/etc", "/etc/app"]);
        assert!(NodePath::new("/etc").expect("valid").ancestors().is_empty());
        assert!(p.starts_with(&NodePath::new("/etc").expect("valid")));
        assert!(
            !NodePath::new("/etcx")
                .expect("valid")
                .starts_with(&NodePath::new("/etc").expect("valid"))
        );
    }

    #[test]
    fn tree_paths_are_relative() {
        assert!(TreePath::new("files/app.conf").is_ok());
        for bad in ["/files", "files/../x", "", "files/", "./files"] {
            assert!(TreePath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_are_quoted_octal() {
        assert_eq!(Mode::parse("0640"), Ok(Mode(0o640)));
        assert_eq!(Mode::parse("755"), Ok(Mode(0o755)));
        for bad in ["0980", "12", "77777", "rw-r--r--"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        // YAML hands `0640` over as text, which is unambiguous; `640` is a number.
        let leading_zero: Mode =
            serde_yaml::from_str("0640").expect("leading zero reads as octal text");
        assert_eq!(leading_zero, Mode(0o640));
        assert!(serde_yaml::from_str::<Mode>("640").is_err());
        let quoted: Mode = serde_yaml::from_str("\"0640\"").expect("quoted");
        assert_eq!(quoted, Mode(0o640));
    }

    #[test]
    fn intervals_read_like_people_write_them() {
        let i: Interval = serde_yaml::from_str("90s").expect("parses");
        assert_eq!(i.0, Duration::from_secs(90));
        let i: Interval = serde_yaml::from_str("1h 30m").expect("parses");
        assert_eq!(i.0, Duration::from_secs(5400));
        assert!(serde_yaml::from_str::<Interval>("soon").is_err());
        assert!(serde_yaml::from_str::<Interval>("-5s").is_err());
    }
}
