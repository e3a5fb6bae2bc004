//! The PostgreSQL schema: versioned migrations, recorded in `schema_migrations` and applied in
//! one transaction under an advisory lock, so that server replicas starting together on one
//! database neither race nor apply a step twice.
//!
//! The list is PostgreSQL's own (SQLite's steps are in `store/migrations.rs`); version 1 is
//! the whole schema as SQLite has it after its step 5, in PostgreSQL's dialect. Text keys that
//! lists are ordered by are `COLLATE "C"`, so that they sort bytewise as SQLite's `BINARY`
//! collation does whatever the database's default collation is.

use ::postgres::{Client, GenericClient};

use super::codec::{column, pg};
use crate::store::StoreError;

/// The transaction-level advisory lock (`pg_advisory_xact_lock`) that serialises migrations:
/// the ASCII bytes of `opampmig` read as a big-endian `i64` (8030025258267142503). Advisory
/// lock keys are per database, so other databases on the same server are not affected.
pub(super) const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"opampmig");

/// `(version, SQL)`; append only, never edit a released step.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE rollouts (
    id              TEXT COLLATE "C" PRIMARY KEY,
    package         TEXT COLLATE "C" NOT NULL,
    target_version  TEXT NOT NULL,
    selector        TEXT COLLATE "C" NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    sequence        BIGINT NOT NULL,
    snapshot_seq    BIGINT NOT NULL,
    -- Config rollouts share the table; the list tells them apart.
    target_kind     TEXT NOT NULL DEFAULT 'package'
);
CREATE INDEX rollouts_package_status ON rollouts (package, status);
CREATE INDEX rollouts_list ON rollouts (created_at DESC, id);

-- Kept apart from `rollouts`: the per-step status update must not rewrite a multi-megabyte
-- snapshot each time.
CREATE TABLE rollout_snapshots (
    rollout_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES rollouts (id),
    seq         BIGINT NOT NULL,
    snapshot    TEXT NOT NULL
);

CREATE TABLE rollout_events (
    rollout_id  TEXT COLLATE "C" NOT NULL REFERENCES rollouts (id),
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);

CREATE TABLE agents (
    uid               TEXT COLLATE "C" PRIMARY KEY,
    labels            TEXT NOT NULL,
    capabilities      BIGINT NOT NULL,
    package_versions  TEXT NOT NULL,
    healthy           BOOLEAN NOT NULL,
    connected         BOOLEAN NOT NULL,
    last_seen         BIGINT NOT NULL
);

-- What agents report beyond the registry row (`AgentDetails` as JSON), kept out of `agents`
-- so that listing the fleet does not read every agent's config files.
CREATE TABLE agent_details (
    uid      TEXT COLLATE "C" PRIMARY KEY,
    details  TEXT NOT NULL
);

CREATE TABLE packages (
    name          TEXT COLLATE "C" NOT NULL,
    version       TEXT COLLATE "C" NOT NULL,
    content_hash  BYTEA NOT NULL,
    size          BIGINT NOT NULL,
    signature     BYTEA NOT NULL,
    file_path     TEXT NOT NULL,
    added_at      BIGINT NOT NULL,
    -- The operator who added it (NULL when added through the library without one).
    added_by      TEXT,
    PRIMARY KEY (name, version)
);

-- Positions come from a sequence; writers take the audit advisory lock before inserting, so
-- positions are assigned in commit order (see `audit.rs`).
CREATE TABLE audit_log (
    position    BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    rollout_id  TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL,
    agent_uid   TEXT,
    record      TEXT NOT NULL
);
CREATE INDEX audit_log_rollout ON audit_log (rollout_id, position);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Agent identity (enrollment mode): one-time tokens and per-agent credentials, both stored
-- only as SHA-256 digests.
CREATE TABLE enrollment_tokens (
    token_sha256  BYTEA PRIMARY KEY,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    used_by       TEXT
);

CREATE TABLE agent_credentials (
    uid                TEXT COLLATE "C" PRIMARY KEY,
    credential_sha256  BYTEA NOT NULL,
    enrolled_at        BIGINT NOT NULL
);

-- The config catalog: named configs with versions; a version's files are in `config_files`.
CREATE TABLE configs (
    name        TEXT COLLATE "C" NOT NULL,
    version     TEXT COLLATE "C" NOT NULL,
    hash        BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX configs_hash ON configs (hash);

CREATE TABLE config_files (
    config_name     TEXT COLLATE "C" NOT NULL,
    config_version  TEXT COLLATE "C" NOT NULL,
    file_name       TEXT COLLATE "C" NOT NULL,
    content_type    TEXT NOT NULL,
    body            BYTEA NOT NULL,
    PRIMARY KEY (config_name, config_version, file_name),
    FOREIGN KEY (config_name, config_version) REFERENCES configs (name, version)
);

-- The coordinator lease (`lease.rs`): one row; the replica holding it runs the server. Its
-- expiry is set by the database's clock; `token` grows by one with each take (fencing).
CREATE TABLE coordinator_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
"#,
    ),
    (
        2,
        r#"
-- The agent relay (`relay.rs`): replicas serving agents send what their agents report to the
-- coordinator through `agent_inbox`, and the coordinator sends offers and commands back
-- through `agent_outbox`, addressed by replica name. Rows are deleted as they are read.
CREATE TABLE agent_inbox (
    seq      BIGSERIAL PRIMARY KEY,
    replica  TEXT NOT NULL,
    uid      TEXT NOT NULL,
    kind     SMALLINT NOT NULL,
    payload  BYTEA NOT NULL
);
CREATE TABLE agent_outbox (
    seq         BIGSERIAL PRIMARY KEY,
    replica     TEXT NOT NULL,
    uid         TEXT NOT NULL,
    kind        SMALLINT NOT NULL,
    payload     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX agent_outbox_replica ON agent_outbox (replica, seq);
-- Which replica holds each connected agent's connection, written by that replica.
CREATE TABLE agent_connections (
    uid      TEXT COLLATE "C" PRIMARY KEY,
    replica  TEXT NOT NULL
);
"#,
    ),
    (
        3,
        r#"
-- Rollout changes made on a replica that does not coordinate (`forwarded.rs`): the replica
-- files the request, the coordinator takes it, carries it out and files the answer.
CREATE TABLE coordinator_requests (
    id           BIGSERIAL PRIMARY KEY,
    replica      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    body         TEXT NOT NULL,
    operator     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    taken_by     TEXT,
    status       SMALLINT,
    answer       TEXT
);
CREATE INDEX coordinator_requests_open ON coordinator_requests (id) WHERE taken_by IS NULL;
"#,
    ),
    (
        4,
        r#"
-- Replicas alive, each seen within its lease's length (`relay.rs`): the coordinator marks the
-- agents of a replica that stopped being seen as disconnected.
CREATE TABLE replicas (
    name     TEXT PRIMARY KEY,
    seen_at  TIMESTAMPTZ NOT NULL
);
"#,
    ),
];

/// The newest schema version this build knows.
pub(super) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies the pending migrations, all in one transaction under [`MIGRATION_LOCK`]: a replica
/// that starts while another migrates waits for it, then finds nothing left to do.
///
/// # Errors
/// [`StoreError::SchemaTooNew`] (nothing is changed then), database errors.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client
        .transaction()
        .map_err(pg("starting the migration transaction"))?;
    // Waiting for another replica's migration, or a long migration step, must not be cut
    // short by the session's statement timeout. `IF NOT EXISTS` notices ("relation ...
    // already exists, skipping") on every connection of every replica are noise in its log.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL client_min_messages = warning")
        .map_err(pg("lifting the statement timeout for migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(pg("creating schema_migrations"))?;
    let current = schema_version(&mut tx)?;
    if current > LATEST {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: LATEST,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        tx.batch_execute(sql).map_err(pg("applying a migration"))?;
        // Seconds, as SQLite's `schema_migrations` has it.
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at)
             VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)",
            &[version],
        )
        .map_err(pg("recording a migration"))?;
        tracing::info!(version, "applied PostgreSQL store migration");
    }
    tx.commit().map_err(pg("committing the migrations"))
}

/// The newest schema version applied (0 for an empty database).
pub(super) fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .map_err(pg("reading the schema version"))?;
    column(&row, 0, "reading the schema version")
}

/// What [`FleetStore::check_integrity`](crate::store::FleetStore::check_integrity) checks:
/// the database answers and its schema is exactly the one this build knows.
pub(super) fn check(client: &mut Client) -> Result<(), StoreError> {
    let found = schema_version(client)?;
    if found == LATEST {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: format!("database schema version is {found}, this build expects {LATEST}"),
        })
    }
}

#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)] // helpers of tests: a panic is a failed test
mod tests {
    use ::postgres::NoTls;

    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::store::FleetStore;

    fn applied_versions(url: &str) -> Vec<i64> {
        let mut raw = Client::connect(url, NoTls).unwrap();
        raw.query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
    }

    #[test]
    fn migrations_apply_once_and_a_second_connect_changes_nothing() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let first = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        assert_eq!(first.schema_version().unwrap(), LATEST);
        first.check_integrity().unwrap();
        let second = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        assert_eq!(second.schema_version().unwrap(), LATEST);
        let expected: Vec<i64> = MIGRATIONS.iter().map(|(version, _)| *version).collect();
        assert_eq!(applied_versions(&url), expected);
    }

    #[test]
    fn replicas_starting_together_migrate_once() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let barrier = std::sync::Barrier::new(3);
        let versions: Vec<i64> = std::thread::scope(|scope| {
            let starters: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let store =
                            PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
                        store.schema_version().unwrap()
                    })
                })
                .collect();
            starters.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(versions, vec![LATEST; 3]);
        assert_eq!(applied_versions(&url).len(), MIGRATIONS.len());
    }

    #[test]
    fn a_newer_schema_is_refused_and_fails_the_integrity_check() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let mut raw = Client::connect(&url, NoTls).unwrap();
        raw.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)",
            &[&(LATEST + 1)],
        )
        .unwrap();
        let error = PostgresStore::connect(&url, PostgresOptions::default()).unwrap_err();
        assert!(
            matches!(error, StoreError::SchemaTooNew { found, supported }
                if found == LATEST + 1 && supported == LATEST),
            "{error:?}"
        );
        // A store that was connected before the newer replica migrated finds out at its check.
        assert!(matches!(
            store.check_integrity(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_audit_log_refuses_updates_deletes_and_truncation() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        drop(PostgresStore::connect(&url, PostgresOptions::default()).unwrap());
        let mut raw = Client::connect(&url, NoTls).unwrap();
        raw.batch_execute(
            "INSERT INTO audit_log (at, rollout_id, kind, record) VALUES (1, 'r', 'k', '{}')",
        )
        .unwrap();
        for sql in [
            "UPDATE audit_log SET kind = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let error = raw.batch_execute(sql).unwrap_err();
            let message = error.as_db_error().map(|e| e.message().to_owned());
            assert_eq!(
                message.as_deref(),
                Some("audit_log is append-only"),
                "{sql}"
            );
        }
    }
}
