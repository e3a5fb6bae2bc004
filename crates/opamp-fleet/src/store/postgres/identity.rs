//! Agent identity in PostgreSQL: one-time enrollment tokens and the per-agent credentials they
//! are exchanged for, both stored only as SHA-256 digests.
//!
//! # Racing enrollments
//! SQLite serialises enrollments with its write lock. Here, at `READ COMMITTED`, the token is
//! spent by one conditional `UPDATE`: when two agents race for one token, the second waits for
//! the first's row lock, re-checks `used_at IS NULL` against the committed row and spends
//! nothing. Two enrollments of one uid (with two tokens) meet at the credential's primary key:
//! `ON CONFLICT DO NOTHING` makes the second wait for the first's commit and then insert
//! nothing, and it rolls back (its token stays unspent) and reports
//! [`EnrollmentOutcome::AlreadyEnrolled`], as SQLite would have.

use opamp_proto::InstanceUid;

use super::PostgresStore;
use super::audit::AuditRows;
use super::codec::{column, millis, parse_uid, pg};
use super::lease::begin_write;
use crate::audit::AuditRecord;
use crate::store::{EnrollmentOutcome, StoreError};
use crate::time::Timestamp;

impl PostgresStore {
    /// [`FleetStore::add_enrollment_token`](crate::store::FleetStore::add_enrollment_token).
    pub(super) fn insert_enrollment_token(
        &self,
        token_sha256: &[u8; 32],
        created_by: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let token = token_sha256.to_vec();
        let created_by = created_by.to_owned();
        let (created_at, expires_at) = (millis(created_at), millis(expires_at));
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            tx.execute(
                "INSERT INTO enrollment_tokens (token_sha256, created_by, created_at,
                        expires_at)
                     VALUES ($1, $2, $3, $4)",
                &[&token, &created_by, &created_at, &expires_at],
            )
            .map_err(pg("storing an enrollment token"))?;
            tx.commit().map_err(pg("committing an enrollment token"))
        })
    }

    /// [`FleetStore::enroll`](crate::store::FleetStore::enroll).
    pub(super) fn spend_enrollment_token(
        &self,
        token_sha256: &[u8; 32],
        uid: InstanceUid,
        credential_sha256: &[u8; 32],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<EnrollmentOutcome, StoreError> {
        let token = token_sha256.to_vec();
        let uid = uid.to_string();
        let credential = credential_sha256.to_vec();
        let now = millis(now);
        let audit = AuditRows::encode([audit])?;
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            let known = tx
                .query_opt("SELECT 1 FROM agent_credentials WHERE uid = $1", &[&uid])
                .map_err(pg("reading an agent credential"))?;
            if known.is_some() {
                return Ok(EnrollmentOutcome::AlreadyEnrolled);
            }
            let spent = tx
                .execute(
                    "UPDATE enrollment_tokens SET used_at = $2, used_by = $3
                     WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > $2",
                    &[&token, &now, &uid],
                )
                .map_err(pg("spending an enrollment token"))?;
            if spent != 1 {
                return Ok(EnrollmentOutcome::TokenInvalid);
            }
            let stored = tx
                .execute(
                    "INSERT INTO agent_credentials (uid, credential_sha256, enrolled_at)
                     VALUES ($1, $2, $3) ON CONFLICT (uid) DO NOTHING",
                    &[&uid, &credential, &now],
                )
                .map_err(pg("storing an agent credential"))?;
            if stored != 1 {
                // Enrolled meanwhile through another token: dropping `tx` rolls back the
                // spending of this one.
                return Ok(EnrollmentOutcome::AlreadyEnrolled);
            }
            audit.insert(&mut tx)?;
            tx.commit().map_err(pg("committing an enrollment"))?;
            Ok(EnrollmentOutcome::Enrolled)
        })
    }

    /// [`FleetStore::agent_credentials`](crate::store::FleetStore::agent_credentials), by uid.
    pub(super) fn read_credentials(&self) -> Result<Vec<(InstanceUid, [u8; 32])>, StoreError> {
        const CONTEXT: &str = "reading agent credentials";
        let rows: Vec<(String, Vec<u8>)> = self.worker.call(|client| {
            client
                .query(
                    "SELECT uid, credential_sha256 FROM agent_credentials ORDER BY uid",
                    &[],
                )
                .map_err(pg(CONTEXT))?
                .iter()
                .map(|row| Ok((column(row, 0, CONTEXT)?, column(row, 1, CONTEXT)?)))
                .collect()
        })?;
        rows.into_iter()
            .map(|(uid, digest)| {
                let digest =
                    <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| StoreError::Corrupt {
                        what: format!("credential digest of agent {uid} is not 32 bytes"),
                    })?;
                Ok((parse_uid(&uid)?, digest))
            })
            .collect()
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::audit::{Actor, AuditAction, FLEET_RECORDS};
    use crate::rollout::RolloutId;
    use crate::store::{AuditQuery, FleetStore};

    fn enrolled(uid: InstanceUid, at: Timestamp) -> AuditRecord {
        AuditRecord::new(
            at,
            RolloutId::new(FLEET_RECORDS),
            Actor::Agent(uid),
            AuditAction::AgentEnrolled {
                uid,
                peer: "127.0.0.1:1".into(),
            },
        )
    }

    /// One uid enrolling twice at once, with two tokens, on two connections: one enrollment,
    /// and the loser's token is left unspent.
    #[test]
    fn one_uid_racing_with_two_tokens_is_enrolled_once() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let now = Timestamp::from_millis(5_000);
        let expires = Timestamp::from_millis(60_000);
        let uid = InstanceUid::from([8; 16]);
        let setup = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        setup
            .insert_enrollment_token(&[1; 32], "alice", now, expires)
            .unwrap();
        setup
            .insert_enrollment_token(&[2; 32], "alice", now, expires)
            .unwrap();
        let stores: Vec<PostgresStore> = (0..2)
            .map(|_| PostgresStore::connect(&url, PostgresOptions::default()).unwrap())
            .collect();
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<EnrollmentOutcome> = std::thread::scope(|scope| {
            let racers: Vec<_> = stores
                .into_iter()
                .zip([[1u8; 32], [2u8; 32]])
                .map(|(mut store, token)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        store
                            .enroll(&token, uid, &[9; 32], now, &enrolled(uid, now))
                            .unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut sorted = outcomes.clone();
        sorted.sort_by_key(|o| *o == EnrollmentOutcome::Enrolled);
        assert_eq!(
            sorted,
            [
                EnrollmentOutcome::AlreadyEnrolled,
                EnrollmentOutcome::Enrolled
            ],
            "{outcomes:?}"
        );
        assert_eq!(setup.agent_credentials().unwrap(), vec![(uid, [9; 32])]);
        let audited = setup
            .audit_log(&AuditQuery::all().rollout(RolloutId::new(FLEET_RECORDS)))
            .unwrap();
        assert_eq!(audited.len(), 1);
        let mut raw = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let spent: i64 = raw
            .query_one(
                "SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(spent, 1, "the loser's token is left unspent");
    }

    #[test]
    fn a_short_credential_digest_is_corrupt() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let mut raw = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let uid = InstanceUid::from([8; 16]).to_string();
        raw.execute(
            "INSERT INTO agent_credentials VALUES ($1, '\\x0102', 0)",
            &[&uid],
        )
        .unwrap();
        assert!(matches!(
            store.agent_credentials(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
