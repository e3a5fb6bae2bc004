//! Versioned schema migrations, applied in order inside transactions and recorded in
//! `schema_migrations`.

/// `(version, SQL)`; append only, never edit a released step.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r"
CREATE TABLE rollouts (
    id              TEXT PRIMARY KEY,
    package         TEXT NOT NULL,
    target_version  TEXT NOT NULL,
    selector        TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    snapshot_seq    INTEGER NOT NULL
);
CREATE INDEX rollouts_package_status ON rollouts (package, status);

-- Kept apart from `rollouts` because SQLite rewrites a whole row on update: the per-step
-- status update must not copy a multi-megabyte snapshot each time.
CREATE TABLE rollout_snapshots (
    rollout_id  TEXT PRIMARY KEY REFERENCES rollouts (id),
    seq         INTEGER NOT NULL,
    snapshot    TEXT NOT NULL
);

CREATE TABLE rollout_events (
    rollout_id  TEXT NOT NULL REFERENCES rollouts (id),
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
) WITHOUT ROWID;

CREATE TABLE agents (
    uid               TEXT PRIMARY KEY,
    labels            TEXT NOT NULL,
    capabilities      INTEGER NOT NULL,
    package_versions  TEXT NOT NULL,
    healthy           INTEGER NOT NULL,
    connected         INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL
);

CREATE TABLE packages (
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    content_hash  BLOB NOT NULL,
    size          INTEGER NOT NULL,
    signature     BLOB NOT NULL,
    file_path     TEXT NOT NULL,
    added_at      INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE audit_log (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    rollout_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    agent_uid   TEXT,
    record      TEXT NOT NULL
);
CREATE INDEX audit_log_rollout ON audit_log (rollout_id, position);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
",
    ),
    (
        2,
        r"
-- The operator who added each package (NULL for packages added before this step, or
-- through the library without an operator).
ALTER TABLE packages ADD COLUMN added_by TEXT;
",
    ),
    (
        3,
        // What agents report beyond the registry row (`AgentDetails` as JSON), kept out of
        // `agents` so that listing the fleet does not read every agent's config files.
        r"
CREATE TABLE agent_details (
    uid      TEXT PRIMARY KEY,
    details  TEXT NOT NULL
);
",
    ),
    (
        4,
        // Agent identity (enrollment mode): one-time tokens and per-agent credentials, both
        // stored only as SHA-256 digests.
        r"
CREATE TABLE enrollment_tokens (
    token_sha256  BLOB PRIMARY KEY,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    used_by       TEXT
) WITHOUT ROWID;

CREATE TABLE agent_credentials (
    uid                TEXT PRIMARY KEY,
    credential_sha256  BLOB NOT NULL,
    enrolled_at        INTEGER NOT NULL
) WITHOUT ROWID;
",
    ),
    (
        5,
        r"
-- Config rollouts share the rollouts table; the list tells them apart.
ALTER TABLE rollouts ADD COLUMN target_kind TEXT NOT NULL DEFAULT 'package';

-- The config catalog: named configs with versions; a version's files are in `config_files`.
CREATE TABLE configs (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    hash        BLOB NOT NULL,
    signature   BLOB NOT NULL,
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX configs_hash ON configs (hash);

CREATE TABLE config_files (
    config_name     TEXT NOT NULL,
    config_version  TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    body            BLOB NOT NULL,
    PRIMARY KEY (config_name, config_version, file_name),
    FOREIGN KEY (config_name, config_version) REFERENCES configs (name, version)
) WITHOUT ROWID;
",
    ),
];
