//! Tree objects: their entries parsed strictly, and the index of a whole
//! release tree by path, which the staging store and the release's cache
//! build alike. Apart from the reader, which never looks inside an object.

use super::object::ObjectId;

/// Every entry of a release tree by path: object id and git mode.
pub type TreeIndex = std::collections::HashMap<String, (ObjectId, u32)>;

/// The most entries a release tree may have, subtrees included (a tree that
/// names the same subtree many times could otherwise multiply its paths):
/// four times the node spec's own limit on entries.
pub const MAX_TREE_ENTRIES: usize = 400_000;

/// The entries of a tree object, parsed strictly: `<octal mode> <name>\0<20-byte id>`.
pub struct TreeEntries<'a>(pub &'a [u8]);

impl<'a> Iterator for TreeEntries<'a> {
    type Item = Result<(u32, &'a str, ObjectId), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let entry = (|| {
            let space = self.0.iter().position(|&b| b == b' ').ok_or("no mode")?;
            let mode = std::str::from_utf8(&self.0[..space]).map_err(|_| "a bad mode")?;
            if mode.is_empty() || mode.len() > 6 || mode.starts_with('0') {
                return Err("a bad mode");
            }
            let mode = u32::from_str_radix(mode, 8).map_err(|_| "a bad mode")?;
            let rest = &self.0[space + 1..];
            let nul = rest.iter().position(|&b| b == 0).ok_or("no name end")?;
            let name = std::str::from_utf8(&rest[..nul]).map_err(|_| "a name that is not UTF-8")?;
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err("a bad name");
            }
            let id: [u8; 20] = rest
                .get(nul + 1..nul + 21)
                .ok_or("an entry cut short")?
                .try_into()
                .map_err(|_| "an entry cut short")?;
            self.0 = &rest[nul + 21..];
            Ok((mode, name, ObjectId(id)))
        })();
        if entry.is_err() {
            self.0 = &[];
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
        let entries: Vec<_> = TreeEntries(&raw).collect::<Result<_, _>>().expect("parse");
        assert_eq!(
            entries,
            vec![
                (0o100644, "a.txt", ObjectId([1; 20])),
                (0o40000, "dir", ObjectId([2; 20]))
            ]
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
                TreeEntries(bad).any(|e| e.is_err()),
                "{:?} was accepted",
                bad.escape_ascii().to_string()
            );
        }
    }
}
