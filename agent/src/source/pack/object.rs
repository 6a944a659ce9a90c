//! How git names objects: ids (SHA-1), the four kinds, and how a delta
//! names its base. Apart from the reader because the staging store, the
//! tree index and apply name objects with them too.

/// A SHA-1 object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 20]);

impl ObjectId {
    /// Parses 40 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// The 40 hex digits.
    pub fn to_hex(&self) -> String {
        crate::root::hex(&self.0)
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
    }
}
