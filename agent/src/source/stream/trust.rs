//! The gate of a streamed fetch: the tag asked for and the commit it
//! names are verified the moment both have arrived (git sends them first),
//! mid-stream, and until then the store holds everything in memory and
//! writes nothing. Apart from the store, because this is the one place a
//! received object is judged (by [`crate::verify`]), not just kept.

use jiff::Timestamp;

use crate::source::pack::{ObjectId, ObjectKind};
use crate::verify::{self, Trust, Verified, VerifyError};

/// What the gate knows.
pub(super) struct Gate {
    /// The tag object asked for (its id as the server listed it).
    tag: ObjectId,
    /// Its name.
    name: String,
    trust: Trust,
    /// The commit the tag claims to name, once the tag arrived (a claim
    /// until it verifies; used only to know which object to wait for).
    commit: Option<ObjectId>,
    verified: Option<Verified>,
}

impl Gate {
    pub(super) fn new(tag: ObjectId, name: &str, trust: Trust) -> Self {
        Self {
            tag,
            name: name.to_owned(),
            trust,
            commit: None,
            verified: None,
        }
    }

    /// The verification, once the tag and its commit have verified.
    pub(super) fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }

    /// The tag and the commit it names, once verified.
    pub(super) fn signed(&self) -> Option<[ObjectId; 2]> {
        Some([self.tag, self.commit?]).filter(|_| self.verified.is_some())
    }

    /// Whether `id` is one the gate waits for.
    pub(super) fn waits_for(&self, id: &ObjectId) -> bool {
        self.verified.is_none() && (*id == self.tag || Some(*id) == self.commit)
    }

    /// Tries to verify with the objects `lookup` finds. `Ok(None)`: the tag
    /// or its commit has not arrived yet; `Err`: refused, for good.
    pub(super) fn try_verify<'a>(
        &mut self,
        lookup: impl Fn(&ObjectId) -> Option<(ObjectKind, &'a [u8])>,
    ) -> Result<Option<&Verified>, VerifyError> {
        if self.verified.is_some() {
            return Ok(self.verified.as_ref());
        }
        let Some((kind, raw)) = lookup(&self.tag) else {
            return Ok(None);
        };
        if self.commit.is_none() {
            self.commit = verify::object::parse_tag(raw)
                .ok()
                .and_then(|tag| ObjectId::from_hex_in(self.tag.format(), &tag.object));
        }
        let tree_of = |commit: &str| {
            let id = ObjectId::from_hex_in(self.tag.format(), commit)?;
            match lookup(&id)? {
                (ObjectKind::Commit, raw) => {
                    verify::object::commit_tree(raw, self.tag.format()).ok()
                }
                _ => None,
            }
        };
        let result = verify::verify_tag_raw(
            &self.name,
            &self.tag.to_hex(),
            kind.as_str(),
            raw,
            tree_of,
            &self.trust,
            Timestamp::now(),
        );
        match result {
            Ok(verified) => {
                self.verified = Some(verified);
                Ok(self.verified.as_ref())
            }
            Err(VerifyError::MissingCommit(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Why the pack, read to its end, did not verify.
    pub(super) fn never_verified<'a>(
        &mut self,
        lookup: impl Fn(&ObjectId) -> Option<(ObjectKind, &'a [u8])>,
    ) -> VerifyError {
        if lookup(&self.tag).is_none() {
            return VerifyError::NotFound;
        }
        match self.try_verify(&lookup) {
            Err(e) => e,
            Ok(_) => {
                VerifyError::MissingCommit(self.commit.map(|c| c.to_hex()).unwrap_or_default())
            }
        }
    }
}
