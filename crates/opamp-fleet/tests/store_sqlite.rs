//! What only the SQLite store has: its schema migrations on a real file, WAL mode, and a
//! rollout that survives a process killed mid-write.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_support;

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use opamp_fleet::store::{
    FleetStore as _, PackageEntry, RolloutStore as _, SqliteStore, StoreError,
};
use opamp_fleet::{Command, RolloutId, RolloutStatus, Timestamp};

use store_support::{planned, run_script, script};

/// The newest store step; a new step updates this and [`UNDO_STEPS_AFTER_1`].
const LATEST_SCHEMA: i64 = 5;

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("fleet.db")
}

/// Takes a current database back to schema step 1; each new step adds its undo here.
const UNDO_STEPS_AFTER_1: &str = "
    ALTER TABLE packages DROP COLUMN added_by;
    DROP TABLE agent_details;
    DROP TABLE enrollment_tokens;
    DROP TABLE agent_credentials;
    ALTER TABLE rollouts DROP COLUMN target_kind;
    DROP TABLE config_files;
    DROP TABLE configs;
    DELETE FROM schema_migrations WHERE version >= 2;
";

#[test]
fn a_database_from_before_added_by_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let entry = PackageEntry::new(
        "otelcol",
        "1.0.0",
        vec![7; 32],
        10,
        Vec::new(),
        PathBuf::from("/p"),
        Timestamp::from_millis(5),
    );
    store
        .add_package(&entry.clone().with_added_by("alice"))
        .unwrap();
    drop(store);
    // Back to the schema before step 2, as an older server left it (without the tables of
    // later steps too).
    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    raw.execute_batch(UNDO_STEPS_AFTER_1).unwrap();
    drop(raw);
    let store = SqliteStore::open(db_path(&dir)).unwrap();
    assert!(store.schema_version().unwrap() >= 2);
    assert_eq!(store.packages().unwrap(), [entry]);
}

#[test]
fn migrations_apply_once_and_refuse_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(db_path(&dir)).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA);
    drop(store);
    let store = SqliteStore::open(db_path(&dir)).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA);
    drop(store);

    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
        [],
    )
    .unwrap();
    drop(raw);
    match SqliteStore::open(db_path(&dir)) {
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported: LATEST_SCHEMA,
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

const CHILD_ENV: &str = "OPAMP_FLEET_CRASH_CHILD_DB";
const CHILD_STEPS: usize = 37;

/// Body of the child process in `rollout_survives_a_killed_process`: writes steps, then aborts
/// without any cleanup.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    let mut rollout = planned("crash", 50);
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    run_script(&mut store, &mut rollout, &events[..CHILD_STEPS]);
    std::process::abort();
}

#[test]
fn rollout_survives_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let status = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db_path(&dir))
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort");

    let mut twin = planned("crash", 50);
    let events = script(&twin);
    for (event, now) in &events[..CHILD_STEPS] {
        twin.handle(event.clone(), *now).unwrap();
    }
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut reloaded = store
        .load_rollout(&RolloutId::new("crash"))
        .unwrap()
        .unwrap();
    assert_eq!(reloaded, twin);
    let continued = run_script(&mut store, &mut reloaded, &events[CHILD_STEPS..]);
    let expected: Vec<Command> = events[CHILD_STEPS..]
        .iter()
        .flat_map(|(e, now)| twin.handle(e.clone(), *now).unwrap())
        .collect();
    assert_eq!(continued, expected);
    assert_eq!(reloaded.status(), RolloutStatus::Completed);
}
