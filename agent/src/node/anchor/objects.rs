//! The release's objects kept on the node for re-verification: the signed
//! tag, its commit, every tree, and the blobs planning reads (the node spec,
//! unit files), in one file, each as git hashes it (`TYPE LEN\0BYTES`), so
//! that every object's id is computed again when the file is read and a
//! changed byte only makes an object go missing.

use std::collections::HashMap;

use crate::source::pack::{ObjectFormat, ObjectHasher, ObjectId, TreeIndex, index_tree};

/// The file's place on the node.
pub const OBJECTS_PATH: &str = "/var/lib/driftless/release.objects";
/// The most bytes the file may have.
pub const MAX_OBJECTS_LEN: u64 = 256 * 1024 * 1024;

/// Objects by id: type name and bytes.
pub type Objects = HashMap<ObjectId, (String, Vec<u8>)>;

/// Appends one object in the file's format.
pub fn encode(out: &mut Vec<u8>, kind: &str, bytes: &[u8]) {
    out.extend_from_slice(format!("{kind} {}\0", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the file's objects back, computing each id in `format` (SHA-1
/// with collision detection, as git does, or SHA-256); refuses a file that
/// does not parse.
pub fn decode(mut data: &[u8], format: ObjectFormat) -> Result<Objects, String> {
    let mut out = HashMap::new();
    while !data.is_empty() {
        let nul = data
            .iter()
            .take(64)
            .position(|&b| b == 0)
            .ok_or("an object header without its end")?;
        let header = std::str::from_utf8(&data[..nul]).map_err(|_| "a header that is not text")?;
        let (kind, len) = header.split_once(' ').ok_or("a header without a length")?;
        if !matches!(kind, "tag" | "commit" | "tree" | "blob") {
            return Err(format!("an object of unknown type {kind:?}"));
        }
        let len: usize = len.parse().map_err(|_| "a bad object length")?;
        let end = nul
            .checked_add(1)
            .and_then(|s| s.checked_add(len))
            .filter(|&e| e <= data.len())
            .ok_or("an object cut short")?;
        let mut hasher = ObjectHasher::new(format);
        hasher.update(&data[..end]);
        let id = hasher
            .finish()
            .ok_or("an object whose id collides (SHA-1 collision attack)")?;
        out.insert(id, (kind.to_owned(), data[nul + 1..end].to_vec()));
        data = &data[end..];
    }
    Ok(out)
}

/// The object `id`, which must be of type `kind`.
pub fn get<'o>(objects: &'o Objects, id: &ObjectId, kind: &str) -> Result<&'o [u8], String> {
    match objects.get(id) {
        Some((k, bytes)) if k == kind => Ok(bytes),
        Some((k, _)) => Err(format!("object {id} is a {k}, not a {kind}")),
        None => Err(format!("{kind} {id} is not among the kept objects")),
    }
}

/// Every entry of the tree `root` by path, from the kept trees.
pub fn index(objects: &Objects, root: &ObjectId) -> Result<TreeIndex, String> {
    index_tree(root, |id| get(objects, id, "tree").map(<[u8]>::to_vec))
}

/// Streams content: called once with a sink that takes each chunk in order.
pub type Feed<'f> = dyn FnMut(&mut dyn FnMut(&[u8])) -> std::io::Result<()> + 'f;

/// The id git gives, in `format`, a blob of `len` bytes whose content
/// `feed` streams.
pub fn blob_id(format: ObjectFormat, len: u64, feed: &mut Feed<'_>) -> std::io::Result<ObjectId> {
    let mut hasher = ObjectHasher::object(format, "blob", len);
    feed(&mut |chunk| hasher.update(chunk))?;
    hasher
        .finish()
        .ok_or_else(|| std::io::Error::other("a SHA-1 collision attack"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_with_git_s_ids() {
        let mut file = Vec::new();
        encode(&mut file, "blob", b"hello\n");
        let objects = decode(&file, ObjectFormat::Sha1).expect("decode");
        // `printf 'hello\n' | git hash-object --stdin`
        let id = ObjectId::from_hex("ce013625030ba8dba906f756967f9e9ca394464a").expect("hex");
        assert_eq!(get(&objects, &id, "blob").expect("kept"), b"hello\n");
        let streamed = blob_id(ObjectFormat::Sha1, 6, &mut |f| {
            f(b"hel");
            f(b"lo\n");
            Ok(())
        })
        .expect("hash");
        assert_eq!(streamed, id);
        file[10] ^= 1;
        let changed = decode(&file, ObjectFormat::Sha1).expect("still parses");
        assert!(
            get(&changed, &id, "blob").is_err(),
            "a changed byte is another object"
        );
        assert!(decode(b"blob 99\0short", ObjectFormat::Sha1).is_err());
        assert!(decode(b"weird 1\0x", ObjectFormat::Sha1).is_err());
    }
}
