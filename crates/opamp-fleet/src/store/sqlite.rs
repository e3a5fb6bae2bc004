//! [`SqliteStore`]: the embedded default store.

use std::path::{Path, PathBuf};

use opamp_proto::InstanceUid;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::columns::{agent_record, from_sql_u64, json, millis, sql_u64, timestamp};
use super::migrations::MIGRATIONS;
use super::{
    AgentDetails, AgentRecord, AuditQuery, ConfigEntry, EnrollmentOutcome, FleetStore,
    PackageEntry, RolloutStore, RolloutSummary, StoreError, StoredAudit, StoredEvent,
};
use super::{identity, replay, sqlite_configs};
use crate::audit::AuditRecord;
use crate::events::{Command, Event, RolloutStatus};
use crate::rollout::{Rollout, RolloutId};
use crate::spec::TargetKind;
use crate::time::Timestamp;

/// SQLite's `synchronous` setting (with the WAL journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is fsync'd: a committed step survives power loss.
    #[default]
    Full,
    /// Commits are fsync'd at WAL checkpoints only: survives a process crash, may lose the
    /// latest commits on power loss; much faster.
    Normal,
}

/// Tuning for [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Durability of commits (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// A full rollout snapshot is written after this many events without one (and on every
    /// status change); default 1000. Bounds the replay work on load.
    pub snapshot_interval: u64,
    /// How long to wait for a lock held by another connection, in milliseconds (default 5000).
    pub busy_timeout_ms: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            snapshot_interval: 1_000,
            busy_timeout_ms: 5_000,
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::synchronous`].
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets [`SqliteOptions::snapshot_interval`] (at least 1).
    #[must_use]
    pub fn snapshot_interval(mut self, events: u64) -> Self {
        self.snapshot_interval = events.max(1);
        self
    }
}

/// The fleet store in one SQLite file (WAL journal, versioned migrations).
#[derive(Debug)]
pub struct SqliteStore {
    pub(super) connection: Connection,
    options: SqliteOptions,
    path: PathBuf,
}

pub(super) fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database { context, source }
}

fn target_kind_text(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Config => "config",
        _ => "package",
    }
}

fn parse_target_kind(text: &str) -> Result<TargetKind, StoreError> {
    match text {
        "package" => Ok(TargetKind::Package),
        "config" => Ok(TargetKind::Config),
        other => Err(StoreError::Corrupt {
            what: format!("unknown rollout target kind {other:?}"),
        }),
    }
}

fn parse_status(text: &str) -> Result<RolloutStatus, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        StoreError::Corrupt {
            what: format!("unknown rollout status {text:?}"),
        }
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    ///
    /// # Errors
    /// Database errors and [`StoreError::SchemaTooNew`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// Database errors and [`StoreError::SchemaTooNew`].
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = Connection::open(&path).map_err(db("opening the database"))?;
        connection
            .busy_timeout(std::time::Duration::from_millis(options.busy_timeout_ms))
            .map_err(db("setting the busy timeout"))?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                what: format!("journal mode is {mode}, not wal"),
            });
        }
        let synchronous = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(db("setting pragmas"))?;
        let mut store = SqliteStore {
            connection,
            options,
            path,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `PRAGMA quick_check`: a damaged page is found here, at start, instead of as a
    /// failed read later.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] with SQLite's findings; [`StoreError::Database`] when the check
    /// cannot run (a page so damaged that reading it fails).
    pub fn quick_check(&self) -> Result<(), StoreError> {
        let mut statement = self
            .connection
            .prepare("PRAGMA quick_check")
            .map_err(db("checking the database"))?;
        let findings: Vec<String> = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db("checking the database"))?
            .collect::<Result<_, _>>()
            .map_err(db("checking the database"))?;
        if findings.len() == 1 && findings[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            what: format!(
                "{} failed PRAGMA quick_check: {}",
                self.path.display(),
                findings.join("; ")
            ),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest schema version applied.
    ///
    /// # Errors
    /// Database errors.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.connection
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(db("reading the schema version"))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        self.connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .map_err(db("creating schema_migrations"))?;
        let current = self.schema_version()?;
        let supported = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
            let tx = self
                .connection
                .transaction()
                .map_err(db("starting a migration"))?;
            tx.execute_batch(sql).map_err(db("applying a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                params![version],
            )
            .map_err(db("recording a migration"))?;
            tx.commit().map_err(db("committing a migration"))?;
            tracing::info!(version, "applied store migration");
        }
        Ok(())
    }

    pub(super) fn insert_audit(
        tx: &Transaction<'_>,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(record).map_err(json("encoding an audit record"))?;
        tx.prepare_cached(
            "INSERT INTO audit_log (at, rollout_id, kind, agent_uid, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                millis(record.at),
                record.rollout_id.as_str(),
                record.action.kind(),
                record.action.agent().map(|uid| uid.to_string()),
                text
            ])
        })
        .map_err(db("appending to the audit log"))?;
        Ok(())
    }

    fn write_snapshot(
        tx: &Transaction<'_>,
        rollout: &Rollout,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let snapshot =
            serde_json::to_string(rollout).map_err(json("encoding a rollout snapshot"))?;
        let sequence = sql_u64(rollout.sequence());
        tx.execute(
            "INSERT OR REPLACE INTO rollout_snapshots (rollout_id, seq, snapshot) VALUES (?1, ?2, ?3)",
            params![rollout.id().as_str(), sequence, snapshot],
        )
        .map_err(db("writing a rollout snapshot"))?;
        tx.execute(
            "UPDATE rollouts SET status = ?2, updated_at = ?3, sequence = ?4, snapshot_seq = ?4
             WHERE id = ?1",
            params![
                rollout.id().as_str(),
                rollout.status().as_str(),
                millis(now),
                sequence
            ],
        )
        .map_err(db("updating a rollout"))?;
        Ok(())
    }

    fn rollout_row(&self, id: &RolloutId) -> Result<Option<(u64, u64, String)>, StoreError> {
        self.connection
            .query_row(
                "SELECT r.sequence, s.seq, s.snapshot FROM rollouts r
                 JOIN rollout_snapshots s ON s.rollout_id = r.id WHERE r.id = ?1",
                params![id.as_str()],
                |row| {
                    Ok((
                        from_sql_u64(row.get(0)?),
                        from_sql_u64(row.get(1)?),
                        row.get(2)?,
                    ))
                },
            )
            .optional()
            .map_err(db("reading a rollout"))
    }
}

impl RolloutStore for SqliteStore {
    type Error = StoreError;

    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), StoreError> {
        let tx = self
            .connection
            .transaction()
            .map_err(db("starting a transaction"))?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO rollouts (id, package, target_version, selector, status,
                    created_at, updated_at, sequence, snapshot_seq, target_kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?7, ?8)",
                params![
                    rollout.id().as_str(),
                    rollout.spec().package_name,
                    rollout.spec().target_version,
                    rollout.spec().selector.to_string(),
                    rollout.status().as_str(),
                    millis(rollout.created_at()),
                    sql_u64(rollout.sequence()),
                    target_kind_text(rollout.spec().target_kind),
                ],
            )
            .map_err(db("inserting a rollout"))?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("rollout {}", rollout.id()),
            });
        }
        SqliteStore::write_snapshot(&tx, rollout, rollout.created_at())?;
        SqliteStore::insert_audit(&tx, &rollout.planned_record())?;
        tx.commit().map_err(db("committing a new rollout"))
    }

    fn record_step(
        &mut self,
        rollout: &Rollout,
        event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), StoreError> {
        // Take the write lock before reading the position, so two writers cannot both append
        // the same step.
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting a transaction"))?;
        let (stored_sequence, snapshot_sequence) = tx
            .prepare_cached("SELECT sequence, snapshot_seq FROM rollouts WHERE id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row(params![rollout.id().as_str()], |row| {
                        Ok((from_sql_u64(row.get(0)?), from_sql_u64(row.get(1)?)))
                    })
                    .optional()
            })
            .map_err(db("reading a rollout's position"))?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("rollout {} was never created", rollout.id()),
            })?;
        if rollout.sequence() != stored_sequence + 1 {
            return Err(StoreError::Corrupt {
                what: format!(
                    "rollout {} step {} does not follow stored step {stored_sequence}",
                    rollout.id(),
                    rollout.sequence()
                ),
            });
        }
        let event_text = serde_json::to_string(event).map_err(json("encoding an event"))?;
        let status_changed = commands
            .iter()
            .any(|c| matches!(c, Command::StateChanged { .. }));
        let snapshot_due = status_changed
            || rollout.sequence().saturating_sub(snapshot_sequence)
                >= self.options.snapshot_interval;
        tx.execute(
            "INSERT INTO rollout_events (rollout_id, seq, at, kind, event) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![rollout.id().as_str(), sql_u64(rollout.sequence()), millis(now), event.kind(), event_text],
        )
        .map_err(db("logging a rollout event"))?;
        for command in commands {
            if let Command::Audit(record) = command {
                SqliteStore::insert_audit(&tx, record)?;
            }
        }
        if snapshot_due {
            SqliteStore::write_snapshot(&tx, rollout, now)?;
        } else {
            tx.execute(
                "UPDATE rollouts SET status = ?2, updated_at = ?3, sequence = ?4 WHERE id = ?1",
                params![
                    rollout.id().as_str(),
                    rollout.status().as_str(),
                    millis(now),
                    sql_u64(rollout.sequence())
                ],
            )
            .map_err(db("updating a rollout"))?;
        }
        tx.commit().map_err(db("committing a rollout step"))
    }

    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, StoreError> {
        // The row and its events in one read transaction: on another connection than the
        // writer's (the admin API's reader) a step committed in between would otherwise pair
        // one commit's row with the next one's events. Dropped, it ends (it wrote nothing).
        let _read = self
            .connection
            .unchecked_transaction()
            .map_err(db("starting a rollout read"))?;
        let Some((sequence, snapshot_sequence, snapshot)) = self.rollout_row(id)? else {
            return Ok(None);
        };
        let events = self.rollout_events(id, snapshot_sequence)?;
        replay::rebuild(id, &snapshot, snapshot_sequence, events, sequence).map(Some)
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        replay::active(self.list_rollouts()?, |id| self.load_rollout(id))
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let tx = self
            .connection
            .transaction()
            .map_err(db("starting a transaction"))?;
        for record in records {
            SqliteStore::insert_audit(&tx, record)?;
        }
        tx.commit().map_err(db("committing audit records"))
    }

    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
        replay::standing(self.list_rollouts()?, |id| self.load_rollout(id))
    }

    fn ended_since(&self, since: Timestamp) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
        replay::ended_since(self.list_rollouts()?, since, |id| self.load_rollout(id))
    }
}

impl FleetStore for SqliteStore {
    fn list_rollouts(&self) -> Result<Vec<RolloutSummary>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, package, target_version, selector, status, created_at, updated_at,
                    target_kind
                 FROM rollouts ORDER BY created_at DESC, id",
            )
            .map_err(db("listing rollouts"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, String>(7)?,
                ))
            })
            .map_err(db("listing rollouts"))?;
        let mut summaries = Vec::new();
        for row in rows {
            let (id, package, target_version, selector, status, created, updated, kind) =
                row.map_err(db("listing rollouts"))?;
            summaries.push(RolloutSummary {
                target_kind: parse_target_kind(&kind)?,
                id: RolloutId::new(id),
                package,
                target_version,
                selector,
                status: parse_status(&status)?,
                created_at: timestamp(created),
                updated_at: timestamp(updated),
            });
        }
        Ok(summaries)
    }

    fn rollout_events(
        &self,
        rollout: &RolloutId,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT seq, at, event FROM rollout_events WHERE rollout_id = ?1 AND seq > ?2 ORDER BY seq")
            .map_err(db("reading rollout events"))?;
        let rows = statement
            .query_map(params![rollout.as_str(), sql_u64(after)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(db("reading rollout events"))?;
        let mut events = Vec::new();
        for row in rows {
            let (sequence, at, text) = row.map_err(db("reading rollout events"))?;
            events.push(StoredEvent {
                sequence: from_sql_u64(sequence),
                at: timestamp(at),
                event: serde_json::from_str(&text).map_err(json("decoding a rollout event"))?,
            });
        }
        Ok(events)
    }

    fn upsert_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        write_agent(&self.connection, agent)
    }

    fn upsert_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting an agent batch"))?;
        for agent in agents {
            write_agent(&transaction, agent)?;
        }
        transaction
            .commit()
            .map_err(db("committing an agent batch"))
    }

    fn touch_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting a last-seen batch"))?;
        {
            let mut statement = transaction
                .prepare_cached("UPDATE agents SET last_seen = ?2 WHERE uid = ?1")
                .map_err(db("writing when agents were last seen"))?;
            for agent in agents {
                statement
                    .execute(params![agent.uid.to_string(), millis(agent.last_seen)])
                    .map_err(db("writing when agents were last seen"))?;
            }
        }
        transaction
            .commit()
            .map_err(db("committing a last-seen batch"))
    }

    fn delete_agents(&mut self, uids: &[InstanceUid]) -> Result<usize, StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting an agent removal"))?;
        let mut removed = 0;
        for uid in uids {
            removed += transaction
                .execute(
                    "DELETE FROM agents WHERE uid = ?1",
                    params![uid.to_string()],
                )
                .map_err(db("removing an agent"))?;
            // Its details go with it; its enrollment credential stays, so that it can
            // come back.
            transaction
                .execute(
                    "DELETE FROM agent_details WHERE uid = ?1",
                    params![uid.to_string()],
                )
                .map_err(db("removing an agent's details"))?;
        }
        transaction
            .commit()
            .map_err(db("committing an agent removal"))?;
        Ok(removed)
    }

    fn agent(&self, uid: &InstanceUid) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self
            .query_agents("WHERE uid = ?1", None, params![uid.to_string()])?
            .pop())
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.query_agents("", None, params![])
    }

    fn agents_page(
        &self,
        after: Option<&InstanceUid>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let limit = Some(i64::try_from(limit).unwrap_or(i64::MAX));
        match after {
            Some(after) => self.query_agents("WHERE uid > ?1", limit, params![after.to_string()]),
            None => self.query_agents("", limit, params![]),
        }
    }

    fn upsert_agent_details(
        &mut self,
        details: &[(InstanceUid, &AgentDetails)],
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("starting an agent details batch"))?;
        for (uid, details) in details {
            let text = serde_json::to_string(details).map_err(json("encoding agent details"))?;
            transaction
                .prepare_cached(
                    "INSERT INTO agent_details (uid, details) VALUES (?1, ?2)
                     ON CONFLICT (uid) DO UPDATE SET details = excluded.details",
                )
                .and_then(|mut statement| statement.execute(params![uid.to_string(), text]))
                .map_err(db("writing agent details"))?;
        }
        transaction.commit().map_err(db("committing agent details"))
    }

    fn agent_details(&self, uid: &InstanceUid) -> Result<Option<AgentDetails>, StoreError> {
        let text: Option<String> = self
            .connection
            .query_row(
                "SELECT details FROM agent_details WHERE uid = ?1",
                params![uid.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(db("reading agent details"))?;
        text.map(|text| serde_json::from_str(&text).map_err(json("decoding agent details")))
            .transpose()
    }

    fn add_package(&mut self, entry: &PackageEntry) -> Result<(), StoreError> {
        if let Some(existing) = self.package(&entry.name, &entry.version)? {
            let same = existing.content_hash == entry.content_hash
                && existing.size == entry.size
                && existing.signature == entry.signature;
            return if same {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists {
                    what: format!(
                        "package {} {} with different content",
                        entry.name, entry.version
                    ),
                })
            };
        }
        self.connection
            .execute(
                "INSERT INTO packages (name, version, content_hash, size, signature, file_path, added_at, added_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    entry.name,
                    entry.version,
                    entry.content_hash,
                    sql_u64(entry.size),
                    entry.signature,
                    entry.file_path.to_string_lossy(),
                    millis(entry.added_at),
                    entry.added_by
                ],
            )
            .map_err(db("adding a package"))?;
        Ok(())
    }

    fn package(&self, name: &str, version: &str) -> Result<Option<PackageEntry>, StoreError> {
        Ok(self
            .query_packages("WHERE name = ?1 AND version = ?2", params![name, version])?
            .pop())
    }

    fn packages(&self) -> Result<Vec<PackageEntry>, StoreError> {
        self.query_packages("", params![])
    }

    fn add_config(&mut self, entry: &ConfigEntry) -> Result<(), StoreError> {
        sqlite_configs::add_config(&mut self.connection, entry)
    }

    fn config(&self, name: &str, version: &str) -> Result<Option<ConfigEntry>, StoreError> {
        sqlite_configs::config(&self.connection, name, version)
    }

    fn config_by_hash(&self, hash: &[u8]) -> Result<Option<ConfigEntry>, StoreError> {
        sqlite_configs::config_by_hash(&self.connection, hash)
    }

    fn configs(&self) -> Result<Vec<ConfigEntry>, StoreError> {
        sqlite_configs::configs(&self.connection)
    }

    fn audit_log(&self, query: &AuditQuery) -> Result<Vec<StoredAudit>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT position, record FROM audit_log
                 WHERE (?1 IS NULL OR rollout_id = ?1) AND position > ?2
                 ORDER BY position LIMIT ?3",
            )
            .map_err(db("reading the audit log"))?;
        let limit = query.limit.map_or(-1, i64::from);
        let rows = statement
            .query_map(
                params![
                    query.rollout.as_ref().map(RolloutId::as_str),
                    query.after.unwrap_or(0),
                    limit
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(db("reading the audit log"))?;
        let mut records = Vec::new();
        for row in rows {
            let (position, text) = row.map_err(db("reading the audit log"))?;
            let record = serde_json::from_str(&text).map_err(json("decoding an audit record"))?;
            records.push(StoredAudit { position, record });
        }
        Ok(records)
    }

    fn check_integrity(&self) -> Result<(), StoreError> {
        self.quick_check()
    }

    fn add_enrollment_token(
        &mut self,
        token_sha256: &[u8; 32],
        created_by: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        identity::add_enrollment_token(
            &self.connection,
            token_sha256,
            created_by,
            created_at,
            expires_at,
        )
    }

    fn enroll(
        &mut self,
        token_sha256: &[u8; 32],
        uid: InstanceUid,
        credential_sha256: &[u8; 32],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<EnrollmentOutcome, StoreError> {
        identity::enroll(
            &mut self.connection,
            token_sha256,
            uid,
            credential_sha256,
            now,
            audit,
        )
    }

    fn agent_credentials(&self) -> Result<Vec<(InstanceUid, [u8; 32])>, StoreError> {
        identity::agent_credentials(&self.connection)
    }
}

impl SqliteStore {
    /// Agents matching `filter` (a `WHERE` clause or nothing), by uid, at most `limit`.
    fn query_agents(
        &self,
        filter: &str,
        limit: Option<i64>,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let mut bound = params.to_vec();
        let limit_clause = match &limit {
            Some(limit) => {
                bound.push(limit);
                format!("LIMIT ?{}", bound.len())
            }
            None => String::new(),
        };
        let sql = format!(
            "SELECT uid, labels, capabilities, package_versions, healthy, connected, last_seen
             FROM agents {filter} ORDER BY uid {limit_clause}"
        );
        let mut statement = self
            .connection
            .prepare_cached(&sql)
            .map_err(db("reading agents"))?;
        let rows = statement
            .query_map(&*bound, |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })
            .map_err(db("reading agents"))?;
        rows.map(|row| agent_record(row.map_err(db("reading agents"))?))
            .collect()
    }

    fn query_packages(
        &self,
        filter: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<PackageEntry>, StoreError> {
        let sql = format!(
            "SELECT name, version, content_hash, size, signature, file_path, added_at, added_by
             FROM packages {filter} ORDER BY name, added_at, version"
        );
        let mut statement = self
            .connection
            .prepare_cached(&sql)
            .map_err(db("reading packages"))?;
        let rows = statement
            .query_map(params, |row| {
                Ok(PackageEntry {
                    name: row.get(0)?,
                    version: row.get(1)?,
                    content_hash: row.get(2)?,
                    size: from_sql_u64(row.get(3)?),
                    signature: row.get(4)?,
                    file_path: PathBuf::from(row.get::<_, String>(5)?),
                    added_at: timestamp(row.get(6)?),
                    added_by: row.get(7)?,
                })
            })
            .map_err(db("reading packages"))?;
        rows.collect::<Result<_, _>>()
            .map_err(db("reading packages"))
    }
}

/// One registry row (insert or update), on a connection or inside a transaction.
fn write_agent(connection: &Connection, agent: &AgentRecord) -> Result<(), StoreError> {
    let labels = serde_json::to_string(&agent.labels).map_err(json("encoding agent labels"))?;
    let versions =
        serde_json::to_string(&agent.package_versions).map_err(json("encoding agent versions"))?;
    connection
        .prepare_cached(
            "INSERT INTO agents (uid, labels, capabilities, package_versions, healthy, connected, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (uid) DO UPDATE SET labels = excluded.labels,
                capabilities = excluded.capabilities, package_versions = excluded.package_versions,
                healthy = excluded.healthy, connected = excluded.connected, last_seen = excluded.last_seen",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                agent.uid.to_string(),
                labels,
                sql_u64(agent.capabilities),
                versions,
                agent.healthy,
                agent.connected,
                millis(agent.last_seen)
            ])
        })
        .map_err(db("writing an agent"))?;
    Ok(())
}
