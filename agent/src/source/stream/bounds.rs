//! What one streamed fetch attempt may cost before it is refused: the
//! bounds, their counters, and the one-line refusals. Apart from the store
//! that charges them, so that every bound, and why it is what it is, reads
//! in one place.
//!
//! git's pack writer (`compute_write_order` in builtin/pack-objects.c)
//! sends a depth-1 fetch of a tag as: the commit and the tag (tagged tips
//! first), then every tree, then every blob, a delta's base always before
//! the delta; and it sends nothing the tag does not reach. So a pack from
//! git needs no unnamed object held at all: everything "unnamed" below is
//! slack for another order, and junk.

/// Objects held, or recognised and dropped, that no verified tree names
/// (everything before the tag and its commit verified, objects that
/// arrive before the tree that names them, and junk): at most this many
/// bytes per attempt. Held ones are in memory; none is ever on disk.
pub const UNNAMED_BYTES: u64 = 8 * 1024 * 1024;

/// ... and at most this many objects.
pub const UNNAMED_OBJECTS: u64 = 4096;

/// Trees, the commit and the tag the verified release names, held in
/// memory (the release's own, so bounded by what it is).
pub const NAMED_HELD_BYTES: u64 = 64 * 1024 * 1024;

/// Compressed bytes of blobs waiting for their id before the store waits
/// for the hashing thread to catch up.
pub const PENDING_RAW_BYTES: usize = 8 * 1024 * 1024;

/// A bound crossed: the pack is refused, and not fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossed(pub String);

/// The counters of one attempt.
#[derive(Debug, Default)]
pub(super) struct Bounds {
    /// `fetch.max_bytes`: inflated bytes (objects, delta instructions) and
    /// pack bytes, each.
    max_bytes: u64,
    inflated: u64,
    raw: u64,
    unnamed_bytes: u64,
    unnamed_objects: u64,
    named_held: u64,
}

impl Bounds {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            ..Self::default()
        }
    }

    /// An object of `size` inflated bytes (and `instructions` more, for a
    /// delta) is about to be inflated.
    pub(super) fn inflate(&mut self, size: u64, instructions: u64) -> Result<(), Crossed> {
        let inflated = self.inflated.saturating_add(size + instructions);
        if inflated > self.max_bytes {
            return Err(Crossed(format!(
                "the pack inflates to more than fetch.max_bytes ({}); refusing it (raise \
                 fetch.max_bytes if the release is that large)",
                crate::types::ByteSize(self.max_bytes)
            )));
        }
        self.inflated = inflated;
        Ok(())
    }

    /// `n` more compressed bytes of the pack were read.
    pub(super) fn raw(&mut self, n: usize) -> Result<(), Crossed> {
        let raw = self.raw.saturating_add(n as u64);
        if raw > self.max_bytes {
            return Err(Crossed(format!(
                "the server sent more than fetch.max_bytes ({}); refusing it (raise \
                 fetch.max_bytes if the release is that large)",
                crate::types::ByteSize(self.max_bytes)
            )));
        }
        self.raw = raw;
        Ok(())
    }

    /// An object of `size` bytes that no verified tree names: held, or
    /// recognised and dropped. `trusted` says whether the tag had verified.
    pub(super) fn unnamed(&mut self, size: u64, trusted: bool) -> Result<(), Crossed> {
        let bytes = self.unnamed_bytes.saturating_add(size);
        if bytes <= UNNAMED_BYTES && self.unnamed_objects < UNNAMED_OBJECTS {
            self.unnamed_bytes = bytes;
            self.unnamed_objects += 1;
            return Ok(());
        }
        let (bytes, objects) = (UNNAMED_BYTES >> 20, UNNAMED_OBJECTS);
        Err(Crossed(if trusted {
            format!(
                "the server sent more than {bytes} MiB or {objects} objects that the verified \
                 release does not name (git sends only the release's objects, trees before \
                 blobs); refusing the pack"
            )
        } else {
            format!(
                "the server sent more than {bytes} MiB or {objects} objects before the signed \
                 tag and its commit (git sends those first); refusing the pack before \
                 anything is verified"
            )
        }))
    }

    /// An unnamed object of `size` bytes turned out named after all.
    pub(super) fn named_after_all(&mut self, size: u64) {
        self.unnamed_bytes = self.unnamed_bytes.saturating_sub(size);
        self.unnamed_objects = self.unnamed_objects.saturating_sub(1);
    }

    /// A tree, commit or tag of `size` bytes the release needs is held.
    pub(super) fn hold_named(&mut self, size: u64) -> Result<(), Crossed> {
        let held = self.named_held.saturating_add(size);
        if held > NAMED_HELD_BYTES {
            return Err(Crossed(format!(
                "the release's trees are larger than {} MiB together; refusing the pack",
                NAMED_HELD_BYTES >> 20
            )));
        }
        self.named_held = held;
        Ok(())
    }

    /// A held object of `size` bytes is no longer counted as named.
    pub(super) fn release_named(&mut self, size: u64) {
        self.named_held = self.named_held.saturating_sub(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_crossed_by_one_more() {
        let mut b = Bounds::new(100);
        b.inflate(60, 40).expect("exactly the bound");
        assert!(b.inflate(1, 0).is_err());
        let mut b = Bounds::new(100);
        b.raw(100).expect("exactly the bound");
        assert!(b.raw(1).is_err());
        let mut b = Bounds::new(u64::MAX);
        b.unnamed(UNNAMED_BYTES, false).expect("exactly the bound");
        let before = b.unnamed(1, false).expect_err("one more byte");
        assert!(before.0.contains("before the signed tag"), "{before:?}");
        let mut b = Bounds::new(u64::MAX);
        for _ in 0..UNNAMED_OBJECTS {
            b.unnamed(0, true).expect("within");
        }
        b.named_after_all(0);
        b.unnamed(0, true).expect("one was named after all");
        let after = b.unnamed(0, true).expect_err("one more object");
        assert!(after.0.contains("does not name"), "{after:?}");
        let mut b = Bounds::new(u64::MAX);
        b.hold_named(NAMED_HELD_BYTES).expect("exactly the bound");
        assert!(b.hold_named(1).is_err());
        b.release_named(1);
        b.hold_named(1).expect("released");
    }
}
