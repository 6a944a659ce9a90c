//! Roles: who may sign what. Release tags are signed by the release
//! signers (`trust.allowed_signers`); channel commits by the channel
//! signers (`trust.channel_signers`), who may move the fleet, or by the
//! refresh signers (`trust.refresh_signers`), who may only renew the
//! channel's expiry. Each list is its own file in git's allowed_signers
//! format; one revoked-keys list covers them all.
//!
//! A config with `allowed_signers` alone keeps its meaning from before
//! roles existed: every key in it holds every role. With `channel_signers`
//! set, a release key alone can no longer move a fleet.

use git2::{Oid, Repository};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{AllowedSigners, NotTrusted, Trust, Verified, VerifyError};

/// What a channel commit's signer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelRole {
    /// A channel signer: may change anything in the channel document.
    Channel,
    /// A refresh signer: may only renew the expiry (and so the sequence).
    Refresh,
}

impl ChannelRole {
    /// `channel` or `refresh`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelRole::Channel => "channel",
            ChannelRole::Refresh => "refresh",
        }
    }
}

/// The node's trust, by role.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// Who may sign releases (and, in a single-file config, everything).
    pub release: Trust,
    /// Who may move the channel.
    pub channel: Trust,
    /// Who may only refresh the channel (empty when no file names them).
    pub refresh: Trust,
    /// Whether the channel signers come from a file of their own.
    pub split: bool,
}

impl Roles {
    /// One trust list holding every role: a config that names only
    /// `allowed_signers`.
    pub fn single(trust: Trust) -> Self {
        Self {
            release: trust.clone(),
            channel: trust,
            refresh: Trust::default(),
            split: false,
        }
    }

    /// The roles from their lists: release signers, and the channel and
    /// refresh signers when files name them (without channel signers, the
    /// release signers hold that role too). `release`'s revoked keys count
    /// for every role.
    pub fn from_lists(
        release: Trust,
        channel: Option<AllowedSigners>,
        refresh: Option<AllowedSigners>,
    ) -> Self {
        let with_revoked = |allowed| Trust {
            allowed,
            revoked: release.revoked.clone(),
        };
        let mut roles = match channel {
            Some(allowed) => Self {
                channel: with_revoked(allowed),
                release: release.clone(),
                refresh: Trust::default(),
                split: true,
            },
            None => Self::single(release.clone()),
        };
        if let Some(allowed) = refresh {
            roles.refresh = with_revoked(allowed);
        }
        roles
    }

    /// Verifies the channel commit `id` at `now` and says which role its
    /// signer holds: a channel signer first, a refresh signer next. A key
    /// that may only sign releases is named as such.
    pub fn verify_channel_commit(
        &self,
        repo: &Repository,
        name: &str,
        id: Oid,
        now: Timestamp,
    ) -> Result<(Verified, ChannelRole), VerifyError> {
        let first = match super::verify_commit_object(repo, name, id, &self.channel, now) {
            Ok(v) => return Ok((v, ChannelRole::Channel)),
            Err(VerifyError::NotTrusted(why)) => why,
            Err(other) => return Err(other),
        };
        let second = match super::verify_commit_object(repo, name, id, &self.refresh, now) {
            Ok(v) => return Ok((v, ChannelRole::Refresh)),
            Err(VerifyError::NotTrusted(why)) => why,
            Err(other) => return Err(other),
        };
        // The most telling reason: a listed key outside its limits beats "unknown".
        match (first, second) {
            (NotTrusted::UnknownKey { fingerprint }, NotTrusted::UnknownKey { .. }) => {
                Err(self.unknown(repo, name, id, now, fingerprint))
            }
            (NotTrusted::UnknownKey { .. }, why) | (why, _) => Err(VerifyError::NotTrusted(why)),
        }
    }

    /// [`Roles::verify_channel_commit`] at the commit's own signing time
    /// (a commit under a newer one, whose key may have been rotated since);
    /// revoked keys are refused all the same.
    pub fn verify_channel_commit_as_signed(
        &self,
        repo: &Repository,
        name: &str,
        id: Oid,
    ) -> Result<(Verified, ChannelRole), VerifyError> {
        let odb = repo.odb()?;
        let raw = odb.read(id)?;
        let when = super::object::parse_commit(raw.data(), crate::types::ObjectFormat::Sha1)?
            .committer
            .when;
        self.verify_channel_commit(repo, name, id, when)
    }

    /// The refusal of a key that holds no channel role.
    fn unknown(
        &self,
        repo: &Repository,
        name: &str,
        id: Oid,
        now: Timestamp,
        fingerprint: String,
    ) -> VerifyError {
        let refresh_listed = !self.refresh.allowed.signers().is_empty();
        let lists = match (self.split, refresh_listed) {
            // A single-file config: the message it always had.
            (false, false) => {
                return VerifyError::NotTrusted(NotTrusted::UnknownKey { fingerprint });
            }
            (false, true) => "allowed_signers or refresh_signers",
            (true, false) => "channel_signers",
            (true, true) => "channel_signers or refresh_signers",
        };
        let release_key =
            self.split && super::verify_commit_object(repo, name, id, &self.release, now).is_ok();
        VerifyError::WrongRole {
            fingerprint,
            release_key,
            lists,
        }
    }
}
