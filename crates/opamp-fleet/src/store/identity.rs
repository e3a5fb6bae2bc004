//! Agent identity in the SQLite store: one-time enrollment tokens and the per-agent
//! credentials they are exchanged for. Only SHA-256 digests of either are stored, so a copy
//! of the database does not let anyone speak for an agent.

use opamp_proto::InstanceUid;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::columns::{millis, parse_uid};
use super::sqlite::{SqliteStore, db};
use super::{EnrollmentOutcome, StoreError};
use crate::audit::AuditRecord;
use crate::time::Timestamp;

pub(super) fn add_enrollment_token(
    connection: &Connection,
    token_sha256: &[u8; 32],
    created_by: &str,
    created_at: Timestamp,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    connection
        .execute(
            "INSERT INTO enrollment_tokens (token_sha256, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                token_sha256.as_slice(),
                created_by,
                millis(created_at),
                millis(expires_at)
            ],
        )
        .map_err(db("storing an enrollment token"))?;
    Ok(())
}

pub(super) fn enroll(
    connection: &mut Connection,
    token_sha256: &[u8; 32],
    uid: InstanceUid,
    credential_sha256: &[u8; 32],
    now: Timestamp,
    audit: &AuditRecord,
) -> Result<EnrollmentOutcome, StoreError> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("starting an enrollment"))?;
    let known: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM agent_credentials WHERE uid = ?1",
            params![uid.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(db("reading an agent credential"))?;
    if known.is_some() {
        return Ok(EnrollmentOutcome::AlreadyEnrolled);
    }
    let spent = tx
        .execute(
            "UPDATE enrollment_tokens SET used_at = ?2, used_by = ?3
             WHERE token_sha256 = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![token_sha256.as_slice(), millis(now), uid.to_string()],
        )
        .map_err(db("spending an enrollment token"))?;
    if spent != 1 {
        return Ok(EnrollmentOutcome::TokenInvalid);
    }
    tx.execute(
        "INSERT INTO agent_credentials (uid, credential_sha256, enrolled_at) VALUES (?1, ?2, ?3)",
        params![uid.to_string(), credential_sha256.as_slice(), millis(now)],
    )
    .map_err(db("storing an agent credential"))?;
    SqliteStore::insert_audit(&tx, audit)?;
    tx.commit().map_err(db("committing an enrollment"))?;
    Ok(EnrollmentOutcome::Enrolled)
}

pub(super) fn agent_credentials(
    connection: &Connection,
) -> Result<Vec<(InstanceUid, [u8; 32])>, StoreError> {
    let mut statement = connection
        .prepare("SELECT uid, credential_sha256 FROM agent_credentials")
        .map_err(db("reading agent credentials"))?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .map_err(db("reading agent credentials"))?;
    let mut credentials = Vec::new();
    for row in rows {
        let (uid, digest) = row.map_err(db("reading agent credentials"))?;
        let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| StoreError::Corrupt {
            what: format!("credential digest of agent {uid} is not 32 bytes"),
        })?;
        credentials.push((parse_uid(&uid)?, digest));
    }
    Ok(credentials)
}
