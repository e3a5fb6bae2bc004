//! Rollouts in PostgreSQL: a snapshot plus the log of events applied since, as in SQLite.
//! [`RolloutStore`] for [`PostgresStore`], and the rollout list and event log of
//! [`FleetStore`](crate::store::FleetStore).
//!
//! A rollout's row is locked (`SELECT ... FOR UPDATE`) before its position is read, so two
//! writers (two replicas) cannot both append the same step: the second waits for the first to
//! commit, then finds its step out of sequence. The snapshot a step may need is serialised
//! only when the stored position says one is due, by the calling thread, which is asked for
//! it while the transaction waits (see [`Worker::call_asking`](super::worker::Worker)).

use ::postgres::{Client, IsolationLevel};

use super::PostgresStore;
use super::audit::AuditRows;
use super::codec::{
    column, from_sql_u64, json, millis, parse_status, parse_target_kind, pg, sql_u64,
    target_kind_text, timestamp,
};
use super::lease::{LeaseToken, begin_write};
use super::worker::Ask;
use crate::audit::AuditRecord;
use crate::events::{Command, Event};
use crate::rollout::{Rollout, RolloutId};
use crate::store::replay;
use crate::store::{RolloutStore, RolloutSummary, StoreError, StoredEvent};
use crate::time::Timestamp;

/// A rollout's row and snapshot as read: `(sequence, snapshot_seq, snapshot)` and the events
/// logged after the snapshot as `(seq, at, event)`.
type RawRollout = ((i64, i64, String), Vec<(i64, i64, String)>);

/// The rollout list's columns, in [`list`]'s order.
type RawSummary = (String, String, String, String, String, i64, i64, String);

/// One engine step, encoded on the calling thread (all but the snapshot).
struct Step {
    id: String,
    sequence: u64,
    status: &'static str,
    now: i64,
    event_kind: &'static str,
    event: String,
    status_changed: bool,
    snapshot_interval: u64,
    audit: AuditRows,
}

impl RolloutStore for PostgresStore {
    type Error = StoreError;

    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), StoreError> {
        let id = rollout.id().as_str().to_owned();
        let spec = rollout.spec();
        let (package, target_version) = (spec.package_name.clone(), spec.target_version.clone());
        let selector = spec.selector.to_string();
        let kind = target_kind_text(spec.target_kind);
        let status = rollout.status().as_str();
        let created = millis(rollout.created_at());
        let sequence = sql_u64(rollout.sequence());
        let snapshot =
            serde_json::to_string(rollout).map_err(json("encoding a rollout snapshot"))?;
        let audit = AuditRows::encode([&rollout.planned_record()])?;
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            let inserted = tx
                .execute(
                    "INSERT INTO rollouts (id, package, target_version, selector, status,
                        created_at, updated_at, sequence, snapshot_seq, target_kind)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7, $8)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &id,
                        &package,
                        &target_version,
                        &selector,
                        &status,
                        &created,
                        &sequence,
                        &kind,
                    ],
                )
                .map_err(pg("inserting a rollout"))?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("rollout {id}"),
                });
            }
            tx.execute(
                "INSERT INTO rollout_snapshots (rollout_id, seq, snapshot) VALUES ($1, $2, $3)",
                &[&id, &sequence, &snapshot],
            )
            .map_err(pg("writing a rollout snapshot"))?;
            audit.insert(&mut tx)?;
            tx.commit().map_err(pg("committing a new rollout"))
        })
    }

    fn record_step(
        &mut self,
        rollout: &Rollout,
        event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), StoreError> {
        let step = Step {
            id: rollout.id().as_str().to_owned(),
            sequence: rollout.sequence(),
            status: rollout.status().as_str(),
            now: millis(now),
            event_kind: event.kind(),
            event: serde_json::to_string(event).map_err(json("encoding an event"))?,
            status_changed: commands
                .iter()
                .any(|c| matches!(c, Command::StateChanged { .. })),
            snapshot_interval: self.options.snapshot_interval,
            audit: AuditRows::encode(commands.iter().filter_map(|command| match command {
                Command::Audit(record) => Some(record),
                _ => None,
            }))?,
        };
        let fence = self.fence;
        self.worker.call_asking(
            move |client, snapshot: Ask<'_, (), Result<String, StoreError>>| {
                record_step(client, fence, &step, snapshot)
            },
            |()| serde_json::to_string(rollout).map_err(json("encoding a rollout snapshot")),
        )
    }

    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, StoreError> {
        let key = id.as_str().to_owned();
        let Some(((sequence, snapshot_sequence, snapshot), events)) =
            self.worker.call(move |client| read_rollout(client, &key))?
        else {
            return Ok(None);
        };
        let (sequence, snapshot_sequence) =
            (from_sql_u64(sequence), from_sql_u64(snapshot_sequence));
        let events = decode_events(events)?;
        replay::rebuild(id, &snapshot, snapshot_sequence, events, sequence).map(Some)
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        replay::active(self.list()?, |id| self.load_rollout(id))
    }

    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
        replay::standing(self.list()?, |id| self.load_rollout(id))
    }

    fn ended_since(&self, since: Timestamp) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
        replay::ended_since(self.list()?, since, |id| self.load_rollout(id))
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let audit = AuditRows::encode(records)?;
        if audit.is_empty() {
            return Ok(());
        }
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            audit.insert(&mut tx)?;
            tx.commit().map_err(pg("committing audit records"))
        })
    }
}

impl PostgresStore {
    /// All rollouts, newest first (then by id, bytewise).
    pub(super) fn list(&self) -> Result<Vec<RolloutSummary>, StoreError> {
        let rows = self.worker.call(list)?;
        rows.into_iter()
            .map(
                |(id, package, target_version, selector, status, created, updated, kind)| {
                    Ok(RolloutSummary {
                        target_kind: parse_target_kind(&kind)?,
                        id: RolloutId::new(id),
                        package,
                        target_version,
                        selector,
                        status: parse_status(&status)?,
                        created_at: timestamp(created),
                        updated_at: timestamp(updated),
                    })
                },
            )
            .collect()
    }

    /// The events of `rollout` after step `after`, in order.
    pub(super) fn events(
        &self,
        rollout: &RolloutId,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let id = rollout.as_str().to_owned();
        let rows = self
            .worker
            .call(move |client| read_events(client, &id, after))?;
        decode_events(rows)
    }
}

fn record_step(
    client: &mut Client,
    fence: Option<LeaseToken>,
    step: &Step,
    snapshot: Ask<'_, (), Result<String, StoreError>>,
) -> Result<(), StoreError> {
    let mut tx = begin_write(client, fence)?;
    // Lock the row before reading the position, so two writers cannot both append the same
    // step.
    let row = tx
        .query_opt(
            "SELECT sequence, snapshot_seq FROM rollouts WHERE id = $1 FOR UPDATE",
            &[&step.id],
        )
        .map_err(pg("reading a rollout's position"))?
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("rollout {} was never created", step.id),
        })?;
    let stored_sequence = from_sql_u64(column(&row, 0, "reading a rollout's position")?);
    let snapshot_sequence = from_sql_u64(column(&row, 1, "reading a rollout's position")?);
    if stored_sequence.checked_add(1) != Some(step.sequence) {
        return Err(StoreError::Corrupt {
            what: format!(
                "rollout {} step {} does not follow stored step {stored_sequence}",
                step.id, step.sequence
            ),
        });
    }
    let sequence = sql_u64(step.sequence);
    tx.execute(
        "INSERT INTO rollout_events (rollout_id, seq, at, kind, event) VALUES ($1, $2, $3, $4, $5)",
        &[
            &step.id,
            &sequence,
            &step.now,
            &step.event_kind,
            &step.event,
        ],
    )
    .map_err(pg("logging a rollout event"))?;
    let snapshot_due = step.status_changed
        || step.sequence.saturating_sub(snapshot_sequence) >= step.snapshot_interval;
    if snapshot_due {
        let snapshot = snapshot(())??;
        tx.execute(
            "INSERT INTO rollout_snapshots (rollout_id, seq, snapshot) VALUES ($1, $2, $3)
             ON CONFLICT (rollout_id) DO UPDATE SET seq = excluded.seq,
                snapshot = excluded.snapshot",
            &[&step.id, &sequence, &snapshot],
        )
        .map_err(pg("writing a rollout snapshot"))?;
        tx.execute(
            "UPDATE rollouts SET status = $2, updated_at = $3, sequence = $4, snapshot_seq = $4
             WHERE id = $1",
            &[&step.id, &step.status, &step.now, &sequence],
        )
        .map_err(pg("updating a rollout"))?;
    } else {
        tx.execute(
            "UPDATE rollouts SET status = $2, updated_at = $3, sequence = $4 WHERE id = $1",
            &[&step.id, &step.status, &step.now, &sequence],
        )
        .map_err(pg("updating a rollout"))?;
    }
    // Last, under the audit lock (see `audit.rs`).
    step.audit.insert(&mut tx)?;
    tx.commit().map_err(pg("committing a rollout step"))
}

/// The row, snapshot and newer events of rollout `id`, read from one database snapshot so that
/// a step committed meanwhile by another replica cannot make them disagree.
fn read_rollout(client: &mut Client, id: &str) -> Result<Option<RawRollout>, StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg("starting a read transaction"))?;
    let Some(row) = tx
        .query_opt(
            "SELECT r.sequence, s.seq, s.snapshot FROM rollouts r
             JOIN rollout_snapshots s ON s.rollout_id = r.id WHERE r.id = $1",
            &[&id],
        )
        .map_err(pg("reading a rollout"))?
    else {
        return Ok(None);
    };
    let head = (
        column(&row, 0, "reading a rollout")?,
        column(&row, 1, "reading a rollout")?,
        column(&row, 2, "reading a rollout")?,
    );
    let events = read_events(&mut tx, id, from_sql_u64(head.1))?;
    tx.commit().map_err(pg("ending a read transaction"))?;
    Ok(Some((head, events)))
}

fn read_events(
    client: &mut impl ::postgres::GenericClient,
    id: &str,
    after: u64,
) -> Result<Vec<(i64, i64, String)>, StoreError> {
    let rows = client
        .query(
            "SELECT seq, at, event FROM rollout_events WHERE rollout_id = $1 AND seq > $2
             ORDER BY seq",
            &[&id, &sql_u64(after)],
        )
        .map_err(pg("reading rollout events"))?;
    rows.iter()
        .map(|row| {
            Ok((
                column(row, 0, "reading rollout events")?,
                column(row, 1, "reading rollout events")?,
                column(row, 2, "reading rollout events")?,
            ))
        })
        .collect()
}

fn decode_events(rows: Vec<(i64, i64, String)>) -> Result<Vec<StoredEvent>, StoreError> {
    rows.into_iter()
        .map(|(sequence, at, text)| {
            Ok(StoredEvent {
                sequence: from_sql_u64(sequence),
                at: timestamp(at),
                event: serde_json::from_str(&text).map_err(json("decoding a rollout event"))?,
            })
        })
        .collect()
}

fn list(client: &mut Client) -> Result<Vec<RawSummary>, StoreError> {
    const CONTEXT: &str = "listing rollouts";
    let rows = client
        .query(
            "SELECT id, package, target_version, selector, status, created_at, updated_at,
                target_kind
             FROM rollouts ORDER BY created_at DESC, id",
            &[],
        )
        .map_err(pg(CONTEXT))?;
    rows.iter()
        .map(|row| {
            Ok((
                column(row, 0, CONTEXT)?,
                column(row, 1, CONTEXT)?,
                column(row, 2, CONTEXT)?,
                column(row, 3, CONTEXT)?,
                column(row, 4, CONTEXT)?,
                column(row, 5, CONTEXT)?,
                column(row, 6, CONTEXT)?,
                column(row, 7, CONTEXT)?,
            ))
        })
        .collect()
}

#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)] // helpers of tests: a panic is a failed test
mod tests {
    use std::time::Duration;

    use opamp_proto::InstanceUid;

    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::selector::{LabelSelector, Labels};
    use crate::spec::{BatchPlan, RolloutSpec};
    use crate::store::{FleetStore, apply};
    use crate::{AgentSnapshot, Timestamp};

    fn planned(id: &str, created: u64) -> Rollout {
        let fleet: Vec<AgentSnapshot> = (0..10u8)
            .map(|i| {
                AgentSnapshot::new(InstanceUid::from([i; 16]), Labels::new(), Some("1".into()))
            })
            .collect();
        let spec = RolloutSpec::new("otelcol", "2", LabelSelector::all(), "alice")
            .canary_share(0.1)
            .batches(BatchPlan::Share(0.5))
            .bake_time(Duration::from_secs(60));
        Rollout::plan(
            RolloutId::new(id),
            spec,
            &fleet,
            Timestamp::from_millis(created),
        )
        .unwrap()
    }

    /// Ties on `created_at` are broken by id bytewise, as SQLite's BINARY collation does,
    /// whatever the database's collation.
    #[test]
    fn the_list_is_newest_first_then_by_id_bytewise() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        for id in ["b", "B", "_z", "a-1", "a1"] {
            store.create_rollout(&planned(id, 5)).unwrap();
        }
        store.create_rollout(&planned("old", 1)).unwrap();
        let ids: Vec<String> = store
            .list_rollouts()
            .unwrap()
            .into_iter()
            .map(|s| s.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["B", "_z", "a-1", "a1", "b", "old"]);
    }

    /// A snapshot is written on every status change and after `snapshot_interval` events;
    /// loading replays the rest.
    #[test]
    fn snapshots_follow_the_interval_and_status_changes() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let options = PostgresOptions::default().snapshot_interval(2);
        let mut store = PostgresStore::connect(&url, options).unwrap();
        let mut rollout = planned("r", 0);
        store.create_rollout(&rollout).unwrap();
        let snapshot_seq = |store: &PostgresStore| -> i64 {
            store
                .worker
                .call(|client| {
                    let row = client
                        .query_one("SELECT snapshot_seq FROM rollouts WHERE id = 'r'", &[])
                        .map_err(pg("test"))?;
                    column(&row, 0, "test")
                })
                .unwrap()
        };
        let start = Event::Start { by: "a".into() };
        apply(&mut store, &mut rollout, start, Timestamp::from_millis(1)).unwrap();
        assert_eq!(snapshot_seq(&store), 1, "a status change snapshots");
        let canary = rollout.wave_agents(0)[0].uid;
        let installed = Event::AgentInstalled {
            uid: canary,
            version: "2".into(),
            healthy: None,
        };
        apply(
            &mut store,
            &mut rollout,
            installed,
            Timestamp::from_millis(2),
        )
        .unwrap();
        assert_eq!(snapshot_seq(&store), 1, "one event is below the interval");
        let healthy = Event::AgentHealth {
            uid: canary,
            healthy: true,
        };
        apply(&mut store, &mut rollout, healthy, Timestamp::from_millis(3)).unwrap();
        assert_eq!(snapshot_seq(&store), 3, "two events reach it");
        let pause = Event::Pause { by: "a".into() };
        apply(&mut store, &mut rollout, pause, Timestamp::from_millis(4)).unwrap();
        assert_eq!(snapshot_seq(&store), 4);
        let loaded = store.load_rollout(rollout.id()).unwrap().unwrap();
        assert_eq!(loaded, rollout);
        assert_eq!(store.rollout_events(rollout.id(), 2).unwrap().len(), 2);
        assert_eq!(store.load_rollout(&RolloutId::new("none")).unwrap(), None);
    }

    #[test]
    fn a_snapshot_that_contradicts_its_row_is_corrupt() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        store.create_rollout(&planned("r", 0)).unwrap();
        let mut raw = Client::connect(&url, ::postgres::NoTls).unwrap();
        raw.batch_execute("UPDATE rollout_snapshots SET seq = 7; UPDATE rollouts SET status = 'x'")
            .unwrap();
        assert!(matches!(
            store.load_rollout(&RolloutId::new("r")),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.list_rollouts(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
