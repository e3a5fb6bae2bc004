//! The agent's trusted keys and revocations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::error::{Result, VerifyError};
use crate::key::{KeyId, PublicKey};
use crate::statement::unix_seconds;

/// A key the agent trusts, optionally only until a point in time (for planned rotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    key: PublicKey,
    not_after: Option<SystemTime>,
}

impl TrustedKey {
    /// Trusts `key` with no end date.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            not_after: None,
        }
    }

    /// Trusts the key only until `not_after` (inclusive).
    #[must_use]
    pub fn with_not_after(mut self, not_after: SystemTime) -> Self {
        self.not_after = Some(not_after);
        self
    }

    /// The public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// End of trust, if any.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    fn check_time(&self, now: SystemTime) -> Result<()> {
        match self.not_after {
            Some(not_after) if unix_seconds(now) > unix_seconds(not_after) => {
                Err(VerifyError::KeyExpired {
                    key_id: self.key.id(),
                    not_after: unix_seconds(not_after),
                    now: unix_seconds(now),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Trusted keys by id, and revoked ids (revocation wins over trust).
///
/// ```
/// use opamp_verify::{KeyRing, ReleaseSigner, TrustedKey, VerifyError};
/// let signer = ReleaseSigner::generate_ed25519()?;
/// let mut keys = KeyRing::new();
/// keys.trust(TrustedKey::new(signer.public_key().clone()));
/// let now = std::time::SystemTime::UNIX_EPOCH;
/// assert!(keys.usable(signer.key_id(), now).is_ok());
/// keys.revoke(signer.key_id());
/// assert!(matches!(keys.usable(signer.key_id(), now), Err(VerifyError::RevokedKey { .. })));
/// # Ok::<(), VerifyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    trusted: BTreeMap<KeyId, TrustedKey>,
    revoked: BTreeSet<KeyId>,
}

impl KeyRing {
    /// An empty ring: trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a trusted key.
    pub fn trust(&mut self, key: TrustedKey) -> &mut Self {
        self.trusted.insert(key.key().id(), key);
        self
    }

    /// Revokes a key id, whether or not it is trusted.
    pub fn revoke(&mut self, key_id: KeyId) -> &mut Self {
        self.revoked.insert(key_id);
        self
    }

    /// True when `key_id` is revoked.
    pub fn is_revoked(&self, key_id: &KeyId) -> bool {
        self.revoked.contains(key_id)
    }

    /// All trusted keys, revoked or not.
    pub fn trusted(&self) -> impl Iterator<Item = &TrustedKey> {
        self.trusted.values()
    }

    /// The key with id `key_id` if it may sign at `now`; otherwise why not
    /// ([`VerifyError::RevokedKey`], [`VerifyError::UnknownKey`], [`VerifyError::KeyExpired`]).
    pub fn usable(&self, key_id: KeyId, now: SystemTime) -> Result<&PublicKey> {
        if self.is_revoked(&key_id) {
            return Err(VerifyError::RevokedKey { key_id });
        }
        let trusted = self
            .trusted
            .get(&key_id)
            .ok_or(VerifyError::UnknownKey { key_id })?;
        trusted.check_time(now)?;
        Ok(&trusted.key)
    }

    /// Keys that may sign at `now`: trusted, not revoked, not expired.
    pub fn usable_keys(&self, now: SystemTime) -> impl Iterator<Item = &PublicKey> {
        self.trusted
            .values()
            .filter(move |t| !self.is_revoked(&t.key.id()) && t.check_time(now).is_ok())
            .map(TrustedKey::key)
    }

    /// Keys that are trusted but not usable at `now` (revoked or expired), with the reason.
    pub(crate) fn unusable_keys(
        &self,
        now: SystemTime,
    ) -> impl Iterator<Item = (&PublicKey, VerifyError)> {
        self.trusted.values().filter_map(move |t| {
            self.usable(t.key.id(), now)
                .err()
                .map(|reason| (&t.key, reason))
        })
    }
}
