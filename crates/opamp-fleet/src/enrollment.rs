//! Enrollment secrets: one-time tokens an operator hands to new agents, and the per-agent
//! credentials they are exchanged for. Only SHA-256 digests are stored. The admin API creates
//! tokens; the server's identity check (`server::identity`) redeems them.

use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::FleetError;
use crate::audit::{Actor, AuditAction, AuditRecord, FLEET_RECORDS};
use crate::catalog::{SharedStore, lock};
use crate::rollout::RolloutId;
use crate::time::Timestamp;

/// How long an enrollment token stays valid when the operator does not say.
pub(crate) const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// 256 random bits from the OS, hex: enrollment tokens and agent credentials.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Creates a one-time enrollment token valid for `ttl` (default one day), stores its digest
/// and audits it under `operator`. Returns the token (shown once) and its expiry.
pub(crate) fn create_token(
    store: &SharedStore,
    operator: &str,
    ttl: Option<Duration>,
) -> Result<(String, Timestamp), FleetError> {
    let token = random_secret();
    let now = Timestamp::from_system_time(SystemTime::now());
    let expires_at = now.saturating_add(ttl.unwrap_or(DEFAULT_ENROLLMENT_TTL));
    let mut store = lock(store);
    store.add_enrollment_token(&sha256(&token), operator, now, expires_at)?;
    store.append_audit(&[AuditRecord::new(
        now,
        RolloutId::new(FLEET_RECORDS),
        Actor::Operator(operator.to_owned()),
        AuditAction::EnrollmentTokenCreated { expires_at },
    )])?;
    Ok((token, expires_at))
}
