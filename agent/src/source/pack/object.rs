//! How git names objects: ids (SHA-1 or SHA-256) and how they are
//! computed, the four kinds, and how a delta names its base. Apart from
//! the reader because the staging store, the tree index and apply name
//! objects with them too.

pub use crate::types::ObjectFormat;

/// An object id: 20 bytes (SHA-1) or 32 (SHA-256), as its format says.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// The id's bytes, zero after its length.
    bytes: [u8; 32],
    format: ObjectFormat,
}

impl ObjectId {
    /// A SHA-1 id.
    pub fn sha1(bytes: [u8; 20]) -> Self {
        let mut out = [0u8; 32];
        out[..20].copy_from_slice(&bytes);
        Self {
            bytes: out,
            format: ObjectFormat::Sha1,
        }
    }

    /// A SHA-256 id.
    pub fn sha256(bytes: [u8; 32]) -> Self {
        Self {
            bytes,
            format: ObjectFormat::Sha256,
        }
    }

    /// The id of `format` whose bytes are `bytes`; `None` for another length.
    pub fn from_bytes(format: ObjectFormat, bytes: &[u8]) -> Option<Self> {
        match format {
            ObjectFormat::Sha1 => Some(Self::sha1(bytes.try_into().ok()?)),
            ObjectFormat::Sha256 => Some(Self::sha256(bytes.try_into().ok()?)),
        }
    }

    /// Parses 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let format = ObjectFormat::of_hex_len(text.len())?;
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Self::from_bytes(format, &out[..format.id_len()])
    }

    /// Parses an id that must be of `format`.
    pub fn from_hex_in(format: ObjectFormat, text: &str) -> Option<Self> {
        Self::from_hex(text).filter(|id| id.format() == format)
    }

    /// Its format.
    pub fn format(&self) -> ObjectFormat {
        self.format
    }

    /// Its bytes (20 or 32).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.format().id_len()]
    }

    /// Its hex digits (40 or 64).
    pub fn to_hex(&self) -> String {
        crate::root::hex(self.as_bytes())
    }
}

/// Computes object ids as git does for a format: SHA-1 with collision
/// detection, or SHA-256.
#[derive(Clone)]
pub enum ObjectHasher {
    /// SHA-1, refusing input crafted to collide.
    Sha1(Box<sha1_checked::Sha1>),
    /// SHA-256.
    Sha256(Box<ring::digest::Context>),
}

impl ObjectHasher {
    /// A hasher for `format`, fed nothing yet.
    pub fn new(format: ObjectFormat) -> Self {
        match format {
            ObjectFormat::Sha1 => Self::Sha1(Box::new(sha1_checked::Sha1::new())),
            ObjectFormat::Sha256 => {
                Self::Sha256(Box::new(ring::digest::Context::new(&ring::digest::SHA256)))
            }
        }
    }

    /// A hasher for an object of `kind` (git's type name) and `len`
    /// bytes, fed its header `"<kind> <len>\0"`.
    pub fn object(format: ObjectFormat, kind: &str, len: u64) -> Self {
        let mut hasher = Self::new(format);
        hasher.update(format!("{kind} {len}\0").as_bytes());
        hasher
    }

    /// Feeds it `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha1_checked::Digest as _;
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    /// The id; `None` when SHA-1's collision detection found an attack.
    pub fn finish(self) -> Option<ObjectId> {
        match self {
            Self::Sha1(h) => {
                let result = h.try_finalize();
                (!result.has_collision()).then(|| ObjectId::sha1((*result.hash()).into()))
            }
            Self::Sha256(h) => ObjectId::from_bytes(ObjectFormat::Sha256, h.finish().as_ref()),
        }
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The four kinds of git object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A commit.
    Commit,
    /// A tree.
    Tree,
    /// A blob (a file's content).
    Blob,
    /// An annotated tag.
    Tag,
}

impl ObjectKind {
    /// The name git hashes into the object's header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Tree => "tree",
            Self::Blob => "blob",
            Self::Tag => "tag",
        }
    }
}

/// Where a delta's base is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The object starting at this pack offset.
    Offset(u64),
    /// The object with this id.
    Id(ObjectId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_round_trip() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(ObjectId::from_hex(hex).expect("hex").to_hex(), hex);
        assert!(ObjectId::from_hex(&hex.to_uppercase()).is_none());
        assert!(ObjectId::from_hex(&hex[1..]).is_none());
        let long = "0123456789abcdef".repeat(4);
        let id = ObjectId::from_hex(&long).expect("sha256 hex");
        assert_eq!(
            (id.format(), id.to_hex()),
            (ObjectFormat::Sha256, long.clone())
        );
        assert!(ObjectId::from_hex_in(ObjectFormat::Sha1, &long).is_none());
    }

    #[test]
    fn ids_are_git_s_in_both_formats() {
        // `printf 'hello\n' | git hash-object --stdin` in each format.
        for (format, expected) in [
            (
                ObjectFormat::Sha1,
                "ce013625030ba8dba906f756967f9e9ca394464a",
            ),
            (
                ObjectFormat::Sha256,
                "2cf8d83d9ee29543b34a87727421fdecb7e3f3a183d337639025de576db9ebb4",
            ),
        ] {
            let mut hasher = ObjectHasher::object(format, "blob", 6);
            hasher.update(b"hello\n");
            assert_eq!(
                hasher.finish().map(|id| id.to_hex()).as_deref(),
                Some(expected)
            );
        }
    }
}
