//! Tree objects: their entries parsed strictly, and the index of a whole
//! release tree by path, which the staging store and the release's cache
//! build alike. Apart from the reader, which never looks inside an object.

use super::object::{ObjectFormat, ObjectId};

/// Every entry of a release tree by path: object id and git mode.
pub type TreeIndex = std::collections::HashMap<String, (ObjectId, u32)>;

/// The most entries a release tree may have, subtrees included (a tree that
/// names the same subtree many times could otherwise multiply its paths):
/// four times the node spec's own limit on entries.
pub const MAX_TREE_ENTRIES: usize = 400_000;

/// Every entry of the tree `root` by path, each tree's bytes given by
/// `tree` (which checks that they are a tree whose id is the one asked
/// for); at most [`MAX_TREE_ENTRIES`] entries.
pub fn index_tree(
    root: &ObjectId,
    mut tree: impl FnMut(&ObjectId) -> Result<Vec<u8>, String>,
) -> Result<TreeIndex, String> {
    let mut map = TreeIndex::new();
    let mut pending = vec![(String::new(), *root)];
    while let Some((dir, id)) = pending.pop() {
        let bytes = tree(&id)?;
        for entry in TreeEntries::new(&bytes, id.format()) {
            let (mode, name, child) = entry.map_err(|e| format!("tree {id}: {e}"))?;
            if map.len() >= MAX_TREE_ENTRIES {
                return Err(format!("the tree has more than {MAX_TREE_ENTRIES} entries"));
            }
            let path = format!("{dir}{name}");
            if mode == 0o40000 {
                pending.push((format!("{path}/"), child));
            }
            map.insert(path, (child, mode));
        }
    }
    Ok(map)
}

/// The entries of a tree object, parsed strictly: `<octal mode> <name>\0<id>`,
/// the id of 20 (SHA-1) or 32 (SHA-256) bytes as the repository's format says.
pub struct TreeEntries<'a> {
    rest: &'a [u8],
    format: ObjectFormat,
}

impl<'a> TreeEntries<'a> {
    /// The entries of the tree object `raw` of a `format` repository.
    pub fn new(raw: &'a [u8], format: ObjectFormat) -> Self {
        Self { rest: raw, format }
    }
}

impl<'a> Iterator for TreeEntries<'a> {
    type Item = Result<(u32, &'a str, ObjectId), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let space = self.rest.iter().position(|&b| b == b' ').ok_or("no mode")?;
            let mode = std::str::from_utf8(&self.rest[..space]).map_err(|_| "a bad mode")?;
            if mode.is_empty() || mode.len() > 6 || mode.starts_with('0') {
                return Err("a bad mode");
            }
            let mode = u32::from_str_radix(mode, 8).map_err(|_| "a bad mode")?;
            let rest = &self.rest[space + 1..];
            let nul = rest.iter().position(|&b| b == 0).ok_or("no name end")?;
            let name = std::str::from_utf8(&rest[..nul]).map_err(|_| "a name that is not UTF-8")?;
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err("a bad name");
            }
            let end = nul + 1 + self.format.id_len();
            let id = rest
                .get(nul + 1..end)
                .and_then(|id| ObjectId::from_bytes(self.format, id))
                .ok_or("an entry cut short")?;
            self.rest = &rest[end..];
            Ok((mode, name, id))
        })();
        if entry.is_err() {
            self.rest = &[];
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_entries_parse_strictly() {
        let mut raw = b"100644 a.txt\0".to_vec();
        raw.extend_from_slice(&[1; 20]);
        raw.extend_from_slice(b"40000 dir\0");
        raw.extend_from_slice(&[2; 20]);
        let entries: Vec<_> = TreeEntries::new(&raw, ObjectFormat::Sha1)
            .collect::<Result<_, _>>()
            .expect("parse");
        assert_eq!(
            entries,
            vec![
                (0o100644, "a.txt", ObjectId::sha1([1; 20])),
                (0o40000, "dir", ObjectId::sha1([2; 20]))
            ]
        );
        // The same bytes in a SHA-256 repository: the first id swallows
        // the next entry's start, and what is left is cut short.
        assert!(TreeEntries::new(&raw, ObjectFormat::Sha256).any(|e| e.is_err()));
        let mut long = b"100644 a.txt\0".to_vec();
        long.extend_from_slice(&[3; 32]);
        let entries: Vec<_> = TreeEntries::new(&long, ObjectFormat::Sha256)
            .collect::<Result<_, _>>()
            .expect("parse");
        assert_eq!(
            entries,
            vec![(0o100644, "a.txt", ObjectId::sha256([3; 32]))]
        );
        for bad in [
            &b"100644 a\0short"[..],
            b"0100644 a\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 ..\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 a/b\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 \0aaaaaaaaaaaaaaaaaaaa",
            b"10x644 a\0aaaaaaaaaaaaaaaaaaaa",
            b"100644 a",
        ] {
            assert!(
                TreeEntries::new(bad, ObjectFormat::Sha1).any(|e| e.is_err()),
                "{:?} was accepted",
                bad.escape_ascii().to_string()
            );
        }
    }
}
