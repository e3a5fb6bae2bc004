//! The append-only audit log in PostgreSQL, and why its positions can be paged.
//!
//! # Positions in commit order
//! `audit_log.position` is a `BIGSERIAL`. A sequence hands out values when rows are inserted,
//! not when their transactions commit: with two writers (two server replicas, or the server
//! and an admin tool), transaction A may draw 41, B draw 42, and B commit first. A reader
//! paging with [`AuditQuery::after`] sees 42, remembers it, asks for "after 42" next, and never
//! sees 41 once A commits. So every transaction that inserts audit rows first takes the
//! transaction-level advisory lock [`AUDIT_LOCK`]: it draws its positions and commits while
//! holding it, the next writer draws only after that commit, and positions become visible
//! in increasing order. The lock is taken as late as possible, as the last lock of the
//! transaction (right before the insert, which is followed by the commit), so a writer never
//! waits for a row lock while holding it and no lock-order deadlock is possible.

use ::postgres::Transaction;

use super::codec::{column, json, millis, pg};
use crate::audit::AuditRecord;
use crate::rollout::RolloutId;
use crate::store::{AuditQuery, StoreError, StoredAudit};

/// The transaction-level advisory lock every audit writer holds from drawing positions to
/// commit: the ASCII bytes of `opampaud` read as a big-endian `i64` (8030025258266359140).
pub(super) const AUDIT_LOCK: i64 = i64::from_be_bytes(*b"opampaud");

/// Audit records as their columns, encoded on the calling thread.
#[derive(Debug, Default)]
pub(super) struct AuditRows {
    at: Vec<i64>,
    rollout_id: Vec<String>,
    kind: Vec<String>,
    agent_uid: Vec<Option<String>>,
    record: Vec<String>,
}

impl AuditRows {
    /// Encodes `records`, in order.
    pub(super) fn encode<'a>(
        records: impl IntoIterator<Item = &'a AuditRecord>,
    ) -> Result<AuditRows, StoreError> {
        let mut rows = AuditRows::default();
        for record in records {
            rows.record
                .push(serde_json::to_string(record).map_err(json("encoding an audit record"))?);
            rows.at.push(millis(record.at));
            rows.rollout_id.push(record.rollout_id.as_str().to_owned());
            rows.kind.push(record.action.kind().to_owned());
            rows.agent_uid
                .push(record.action.agent().map(|uid| uid.to_string()));
        }
        Ok(rows)
    }

    /// Whether there is nothing to insert.
    pub(super) fn is_empty(&self) -> bool {
        self.record.is_empty()
    }

    /// Appends the rows, in order, inside `tx`; it must be the transaction's last write but
    /// its commit (see the module doc).
    pub(super) fn insert(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .map_err(pg("taking the audit lock"))?;
        // One statement for the batch; positions follow the input order (`ORDER BY n`: the
        // default `nextval` is evaluated as the sorted rows are inserted).
        tx.execute(
            "INSERT INTO audit_log (at, rollout_id, kind, agent_uid, record)
             SELECT at, rollout_id, kind, agent_uid, record
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])
                 WITH ORDINALITY AS r (at, rollout_id, kind, agent_uid, record, n)
             ORDER BY n",
            &[
                &self.at,
                &self.rollout_id,
                &self.kind,
                &self.agent_uid,
                &self.record,
            ],
        )
        .map_err(pg("appending to the audit log"))?;
        Ok(())
    }
}

/// The records `query` selects, oldest first.
pub(super) fn read(
    client: &mut ::postgres::Client,
    query: &AuditQuery,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rollout = query.rollout.as_ref().map(RolloutId::as_str);
    let after = query.after.unwrap_or(0);
    let limit = query.limit.map(i64::from);
    let rows = client
        .query(
            "SELECT position, record FROM audit_log
             WHERE ($1::TEXT IS NULL OR rollout_id = $1) AND position > $2
             ORDER BY position LIMIT $3",
            &[&rollout, &after, &limit],
        )
        .map_err(pg("reading the audit log"))?;
    rows.iter()
        .map(|row| {
            Ok((
                column(row, 0, "reading the audit log")?,
                column(row, 1, "reading the audit log")?,
            ))
        })
        .collect()
}

/// Decodes what [`read`] returned (on the calling thread).
pub(super) fn decode(rows: Vec<(i64, String)>) -> Result<Vec<StoredAudit>, StoreError> {
    rows.into_iter()
        .map(|(position, text)| {
            let record = serde_json::from_str(&text).map_err(json("decoding an audit record"))?;
            Ok(StoredAudit { position, record })
        })
        .collect()
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::audit::{Actor, AuditAction};
    use crate::store::{FleetStore, RolloutStore};
    use crate::time::Timestamp;

    fn record(writer: usize, n: u64) -> AuditRecord {
        AuditRecord::new(
            Timestamp::from_millis(n),
            RolloutId::new(format!("writer-{writer}")),
            Actor::Operator(format!("op-{writer}")),
            AuditAction::Paused,
        )
    }

    #[test]
    fn a_batch_keeps_its_order() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let records: Vec<AuditRecord> = (0..300).map(|n| record(0, n)).collect();
        store.append_audit(&records).unwrap();
        store.append_audit(&[]).unwrap();
        let log = store.audit_log(&AuditQuery::all()).unwrap();
        let read: Vec<AuditRecord> = log.iter().map(|r| r.record.clone()).collect();
        assert_eq!(read, records);
        assert!(log.windows(2).all(|w| w[0].position < w[1].position));
        let page = store
            .audit_log(&AuditQuery::all().after(log[9].position).limit(5))
            .unwrap();
        assert_eq!(page, log[10..15].to_vec());
        let other = store
            .audit_log(&AuditQuery::all().rollout(RolloutId::new("nobody")))
            .unwrap();
        assert!(other.is_empty());
    }

    /// Four writers on four connections append while a reader pages with `after`: the pages
    /// put together are the whole log, nothing skipped (which a sequence alone would allow).
    #[test]
    fn a_pager_never_skips_a_record_committed_late() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let reader = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let writers: Vec<PostgresStore> = (0..4)
            .map(|_| PostgresStore::connect(&url, PostgresOptions::default()).unwrap())
            .collect();
        let done = AtomicBool::new(false);
        let paged: Vec<i64> = std::thread::scope(|scope| {
            let handles: Vec<_> = writers
                .into_iter()
                .enumerate()
                .map(|(writer, mut store)| {
                    scope.spawn(move || {
                        for n in 0..60 {
                            let batch: Vec<AuditRecord> =
                                (0..1 + n % 3).map(|i| record(writer, n * 10 + i)).collect();
                            store.append_audit(&batch).unwrap();
                        }
                    })
                })
                .collect();
            let pager = scope.spawn(|| {
                let mut seen = Vec::new();
                let mut last = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let page = reader
                        .audit_log(&AuditQuery::all().after(last).limit(7))
                        .unwrap();
                    if page.is_empty() && finished {
                        return seen;
                    }
                    for stored in page {
                        seen.push(stored.position);
                        last = stored.position;
                    }
                }
            });
            for handle in handles {
                handle.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
            pager.join().unwrap()
        });
        let all: Vec<i64> = reader
            .audit_log(&AuditQuery::all())
            .unwrap()
            .into_iter()
            .map(|r| r.position)
            .collect();
        assert_eq!(all.len(), 4 * (20 * (1 + 2 + 3)));
        assert_eq!(paged, all);
    }
}
