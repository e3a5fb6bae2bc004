//! The SQLite store against real files: migrations, registry, catalog, append-only audit log,
//! and rollouts that survive a clean close, a leaked connection and a killed process.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use opamp_fleet::store::{
    AgentDetails, AgentRecord, AuditQuery, ConfigEntry, ConfigFile, ConnectionView,
    EffectiveConfigView, FleetStore, PackageEntry, RolloutStore, SqliteOptions, SqliteStore,
    StoreError, apply,
};
use opamp_fleet::{
    AgentSnapshot, AuditAction, BatchPlan, Command, Event, FleetError, LabelSelector, Labels,
    Rollout, RolloutId, RolloutSpec, RolloutStatus, Timestamp,
};
use opamp_proto::InstanceUid;

/// The newest store step; a new step updates this and [`UNDO_STEPS_AFTER_1`].
const LATEST_SCHEMA: i64 = 5;
const OLD: &str = "1.0.0";
const NEW: &str = "1.1.0";

fn uid(i: u32) -> InstanceUid {
    let mut bytes = [7u8; 16];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    InstanceUid::from(bytes)
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(1_764_000_000_000 + seconds * 1_000)
}

fn planned(id: &str, agents: u32) -> Rollout {
    let fleet: Vec<AgentSnapshot> = (0..agents)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some(OLD.into())))
        .collect();
    let spec = RolloutSpec::new("otelcol", NEW, LabelSelector::all(), "alice")
        .canary_share(0.1)
        .batches(BatchPlan::Share(0.5))
        .bake_time(Duration::from_secs(60));
    Rollout::plan(RolloutId::new(id), spec, &fleet, at(0)).expect("plan")
}

/// A fixed script of events: start, every offered agent installs and turns healthy, bakes pass.
/// Returns the events so a second copy can be driven identically.
fn script(rollout: &Rollout) -> Vec<(Event, Timestamp)> {
    let mut events = vec![(Event::Start { by: "alice".into() }, at(0))];
    for (wave_index, wave) in rollout.waves().iter().enumerate() {
        // Each wave installs one second after it starts and bakes for 60 s.
        let start = 1 + 62 * wave_index as u64;
        for agent in &rollout.agents()[wave.start as usize..wave.end as usize] {
            events.push((
                Event::AgentInstalled {
                    uid: agent.uid,
                    version: NEW.into(),
                    healthy: None,
                },
                at(start),
            ));
            events.push((
                Event::AgentHealth {
                    uid: agent.uid,
                    healthy: true,
                },
                at(start),
            ));
        }
        events.push((Event::Timeout, at(start + 60)));
    }
    events
}

fn run_script(
    store: &mut SqliteStore,
    rollout: &mut Rollout,
    events: &[(Event, Timestamp)],
) -> Vec<Command> {
    let mut out = Vec::new();
    for (event, now) in events {
        out.extend(apply(store, rollout, event.clone(), *now).expect("apply"));
    }
    out
}

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

#[test]
fn agent_registry_round_trips_and_updates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let labels: Labels = [("env".to_owned(), "prod".to_owned())]
        .into_iter()
        .collect();
    let mut agent = AgentRecord::new(uid(1), labels, 0x8000_0000_0000_2019, at(1));
    agent.package_versions.insert("otelcol".into(), OLD.into());
    store.upsert_agent(&agent).unwrap();
    store
        .upsert_agent(&AgentRecord::new(uid(0), Labels::new(), 1, at(1)))
        .unwrap();
    agent.healthy = false;
    agent.connected = false;
    agent.last_seen = at(9);
    store.upsert_agent(&agent).unwrap();
    drop(store);

    let store = SqliteStore::open(db_path(&dir)).unwrap();
    assert_eq!(store.agent(&uid(1)).unwrap(), Some(agent.clone()));
    assert_eq!(store.agents().unwrap().len(), 2);
    assert_eq!(store.agent(&uid(5)).unwrap(), None);
    let snapshot = agent.snapshot_for("otelcol");
    assert_eq!(snapshot.current_version.as_deref(), Some(OLD));
    assert!(!snapshot.healthy && !snapshot.connected);
}

/// Details live in their own table: written in batches, replaced whole, read back after a
/// reopen, and absent for an agent that never reported any.
#[test]
fn agent_details_round_trip_apart_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut details = AgentDetails::default();
    details
        .identifying_attributes
        .insert("service.name".into(), "otelcol".into());
    let mut config = EffectiveConfigView::default();
    config.hash = vec![1, 2, 3];
    details.effective_config = Some(config);
    details.connection = Some(ConnectionView::new(
        "websocket",
        "127.0.0.1:5000",
        false,
        at(3),
    ));
    let other = AgentDetails::default();
    store
        .upsert_agent_details(&[(uid(1), &details), (uid(2), &other)])
        .unwrap();
    details.connection = Some(ConnectionView::new("http", "127.0.0.1:6000", true, at(8)));
    store.upsert_agent_details(&[(uid(1), &details)]).unwrap();
    drop(store);

    let store = SqliteStore::open(db_path(&dir)).unwrap();
    assert_eq!(store.agent_details(&uid(1)).unwrap(), Some(details));
    assert_eq!(store.agent_details(&uid(2)).unwrap(), Some(other));
    assert_eq!(store.agent_details(&uid(3)).unwrap(), None);
    // The registry is untouched: details alone make no agent.
    assert!(store.agents().unwrap().is_empty());
}

#[test]
fn agent_batches_are_written_together_and_update_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut agents: Vec<AgentRecord> = (0..500)
        .map(|i| AgentRecord::new(uid(i), Labels::new(), 1, at(1)))
        .collect();
    store
        .upsert_agents(&agents.iter().collect::<Vec<_>>())
        .unwrap();
    for agent in agents.iter_mut().step_by(2) {
        agent.connected = false;
        agent.last_seen = at(7);
    }
    store
        .upsert_agents(&agents.iter().step_by(2).collect::<Vec<_>>())
        .unwrap();
    store.upsert_agents(&[]).unwrap();
    drop(store);

    let store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut stored = store.agents().unwrap();
    stored.sort_by_key(|agent| agent.uid);
    agents.sort_by_key(|agent| agent.uid);
    assert_eq!(stored, agents);
}

#[test]
fn forgotten_agents_are_deleted_and_stay_deleted_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let agents: Vec<AgentRecord> = (0..4)
        .map(|i| AgentRecord::new(uid(i), Labels::new(), 1, at(1)))
        .collect();
    store
        .upsert_agents(&agents.iter().collect::<Vec<_>>())
        .unwrap();
    // One unknown uid among them: counted as not removed.
    assert_eq!(store.delete_agents(&[uid(1), uid(3), uid(9)]).unwrap(), 2);
    drop(store);
    let store = SqliteStore::open(db_path(&dir)).unwrap();
    let left: Vec<_> = store.agents().unwrap().into_iter().map(|a| a.uid).collect();
    assert_eq!(left, [uid(0), uid(2)]);
}

#[test]
fn package_catalog_refuses_changed_bytes_for_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let entry = PackageEntry::new(
        "otelcol",
        NEW,
        vec![0xab; 32],
        1234,
        vec![1, 2, 3],
        "/srv/p/a".into(),
        at(1),
    );
    store.add_package(&entry).unwrap();
    store.add_package(&entry).unwrap(); // identical: no-op
    let mut changed = entry.clone();
    changed.content_hash = vec![0xcd; 32];
    assert!(matches!(
        store.add_package(&changed),
        Err(StoreError::AlreadyExists { .. })
    ));
    store
        .add_package(&PackageEntry::new(
            "otelcol",
            OLD,
            vec![1; 32],
            1,
            vec![],
            "/srv/p/b".into(),
            at(0),
        ))
        .unwrap();
    assert_eq!(store.package("otelcol", NEW).unwrap(), Some(entry));
    let versions: Vec<String> = store
        .packages()
        .unwrap()
        .into_iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, vec![OLD.to_owned(), NEW.to_owned()]);
}

#[test]
fn config_catalog_keeps_files_finds_by_hash_and_refuses_changed_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let files = vec![
        ConfigFile::new("z.yaml", "text/yaml", b"z: 1".to_vec()),
        ConfigFile::new("collector.yaml", "text/yaml", b"receivers: {}".to_vec()),
    ];
    let v1 = ConfigEntry::new(
        "collector",
        "1",
        vec![1; 32],
        files.clone(),
        b"sig".to_vec(),
        at(1),
    );
    store.add_config(&v1).unwrap();
    // The same content again is a no-op, whenever it is added.
    let again = ConfigEntry::new("collector", "1", vec![1; 32], files, b"sig".to_vec(), at(9));
    store.add_config(&again).unwrap();
    let changed = ConfigEntry::new(
        "collector",
        "1",
        vec![2; 32],
        vec![ConfigFile::new(
            "collector.yaml",
            "text/yaml",
            b"other".to_vec(),
        )],
        Vec::new(),
        at(2),
    );
    assert!(matches!(
        store.add_config(&changed),
        Err(StoreError::AlreadyExists { .. })
    ));
    let v2 = ConfigEntry::new(
        "collector",
        "2",
        vec![2; 32],
        changed.files.clone(),
        Vec::new(),
        at(3),
    );
    store.add_config(&v2).unwrap();
    drop(store);

    let store = SqliteStore::open(db_path(&dir)).unwrap();
    let stored = store.config("collector", "1").unwrap().unwrap();
    assert_eq!(stored, v1);
    let names: Vec<&str> = stored.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["collector.yaml", "z.yaml"]);
    assert_eq!(store.config_by_hash(&[2; 32]).unwrap(), Some(v2));
    assert_eq!(store.config_by_hash(&[3; 32]).unwrap(), None);
    assert_eq!(store.configs().unwrap().len(), 2);
}

#[test]
fn audit_log_is_append_only_and_pages_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut a = planned("a", 10);
    let mut b = planned("b", 10);
    store.create_rollout(&a).unwrap();
    store.create_rollout(&b).unwrap();
    apply(
        &mut store,
        &mut a,
        Event::Start { by: "alice".into() },
        at(1),
    )
    .unwrap();
    apply(&mut store, &mut b, Event::Start { by: "bob".into() }, at(1)).unwrap();
    apply(
        &mut store,
        &mut b,
        Event::Pause { by: "carol".into() },
        at(2),
    )
    .unwrap();

    let b_log = store
        .audit_log(&AuditQuery::all().rollout(RolloutId::new("b")))
        .unwrap();
    let kinds: Vec<&str> = b_log.iter().map(|r| r.record.action.kind()).collect();
    assert_eq!(kinds, vec!["planned", "started", "wave_started", "paused"]);
    let page = store
        .audit_log(&AuditQuery::all().after(b_log[1].position).limit(2))
        .unwrap();
    assert_eq!(page.len(), 2);
    assert!(page.iter().all(|r| r.position > b_log[1].position));
    assert!(b_log.windows(2).all(|w| w[0].position < w[1].position));

    drop(store);
    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    assert!(raw.execute("UPDATE audit_log SET kind = 'x'", []).is_err());
    assert!(raw.execute("DELETE FROM audit_log", []).is_err());
}

#[test]
fn every_install_result_is_audited_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut rollout = planned("r", 20);
    store.create_rollout(&rollout).unwrap();
    let commands = apply(
        &mut store,
        &mut rollout,
        Event::Start { by: "alice".into() },
        at(0),
    )
    .unwrap();
    let canaries: Vec<InstanceUid> = commands
        .iter()
        .filter_map(|c| {
            if let Command::Offer { uid, .. } = c {
                Some(*uid)
            } else {
                None
            }
        })
        .collect();
    apply(
        &mut store,
        &mut rollout,
        Event::AgentInstalled {
            uid: canaries[0],
            version: NEW.into(),
            healthy: None,
        },
        at(1),
    )
    .unwrap();
    apply(
        &mut store,
        &mut rollout,
        Event::AgentInstallFailed {
            uid: canaries[1],
            error: "no space".into(),
        },
        at(2),
    )
    .unwrap();
    let log = store.audit_log(&AuditQuery::all()).unwrap();
    assert!(log.iter().any(|r| matches!(&r.record.action,
        AuditAction::AgentInstalled { uid, version } if *uid == canaries[0] && version == NEW)));
    assert!(log.iter().any(
        |r| matches!(&r.record.action, AuditAction::AgentFailed { uid, .. } if *uid == canaries[1])
    ));
    assert!(log.iter().any(|r| r.record.action.kind() == "aborted"));
}

#[test]
fn rollout_survives_a_clean_reopen_and_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::default().snapshot_interval(3);
    let mut store = SqliteStore::open_with(db_path(&dir), options).unwrap();
    let mut rollout = planned("r", 40);
    let mut twin = rollout.clone();
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    let (first, second) = events.split_at(events.len() / 2);
    run_script(&mut store, &mut rollout, first);
    for (event, now) in first {
        twin.handle(event.clone(), *now).unwrap();
    }
    drop(store);

    let mut store = SqliteStore::open_with(db_path(&dir), options).unwrap();
    let mut reloaded = store.load_rollout(&RolloutId::new("r")).unwrap().unwrap();
    assert_eq!(reloaded, twin);
    assert_eq!(reloaded.poll_timeout(), twin.poll_timeout());
    let continued = run_script(&mut store, &mut reloaded, second);
    let expected: Vec<Command> = second
        .iter()
        .flat_map(|(event, now)| twin.handle(event.clone(), *now).unwrap())
        .collect();
    assert_eq!(continued, expected);
    assert_eq!(reloaded.status(), RolloutStatus::Completed);
    assert!(store.active_rollouts().unwrap().is_empty());
    let logged = store.rollout_events(&RolloutId::new("r"), 0).unwrap();
    assert_eq!(logged.len(), events.len());
    assert!(logged.iter().zip(1..).all(|(e, n)| e.sequence == n));
}

#[test]
fn rollout_survives_a_leaked_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut rollout = planned("r", 30);
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    run_script(&mut store, &mut rollout, &events[..25]);
    // Never closed, never checkpointed: only what was committed to the WAL exists.
    std::mem::forget(store);

    let store = SqliteStore::open(db_path(&dir)).unwrap();
    let reloaded = store.load_rollout(&RolloutId::new("r")).unwrap().unwrap();
    assert_eq!(reloaded, rollout);
    let active: Vec<RolloutId> = store
        .active_rollouts()
        .unwrap()
        .iter()
        .map(|r| r.id().clone())
        .collect();
    assert_eq!(active, vec![RolloutId::new("r")]);
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

#[test]
fn out_of_order_steps_and_duplicate_rollouts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut rollout = planned("r", 10);
    store.create_rollout(&rollout).unwrap();
    assert!(matches!(
        store.create_rollout(&rollout),
        Err(StoreError::AlreadyExists { .. })
    ));

    // A step applied in memory but never recorded leaves the next one out of sequence.
    rollout
        .handle(Event::Start { by: "a".into() }, at(0))
        .unwrap();
    let result = apply(
        &mut store,
        &mut rollout,
        Event::Pause { by: "a".into() },
        at(1),
    )
    .map_err(FleetError::from);
    assert!(matches!(
        result,
        Err(FleetError::Store(StoreError::Corrupt { .. }))
    ));
    // `apply` resynchronised the in-memory rollout with the store.
    assert_eq!(rollout.status(), RolloutStatus::Planned);
    assert!(store.rollout_events(rollout.id(), 0).unwrap().is_empty());

    // A rejected operator event writes nothing.
    let result = apply(
        &mut store,
        &mut rollout,
        Event::Resume { by: "a".into() },
        at(1),
    );
    assert!(matches!(
        result,
        Err(opamp_fleet::RolloutError::InvalidTransition { .. })
    ));
    assert_eq!(
        store.list_rollouts().unwrap()[0].status,
        RolloutStatus::Planned
    );
}

#[test]
fn two_writers_cannot_both_append_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = SqliteStore::open(db_path(&dir)).unwrap();
    let mut second = SqliteStore::open(db_path(&dir)).unwrap();
    let mut rollout = planned("r", 10);
    first.create_rollout(&rollout).unwrap();
    let mut copy = second.load_rollout(rollout.id()).unwrap().unwrap();

    apply(
        &mut first,
        &mut rollout,
        Event::Start { by: "a".into() },
        at(1),
    )
    .unwrap();
    let result = apply(
        &mut second,
        &mut copy,
        Event::Start { by: "b".into() },
        at(1),
    )
    .map_err(FleetError::from);
    assert!(matches!(
        result,
        Err(FleetError::Store(StoreError::Corrupt { .. }))
    ));
    // The loser was resynchronised from the store and sees the winner's step.
    assert_eq!(copy, rollout);
    let starts: Vec<String> = first
        .audit_log(&AuditQuery::all())
        .unwrap()
        .into_iter()
        .filter(|r| r.record.action.kind() == "started")
        .map(|r| format!("{:?}", r.record.actor))
        .collect();
    assert_eq!(starts, vec![r#"Operator("a")"#.to_owned()]);
}

/// What a restarted coordinator reads to offer again the reverts an ended rollout left
/// unconfirmed: terminal rollouts updated at or after the bound, never active ones.
#[test]
fn ended_since_lists_terminal_rollouts_updated_since_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(db_path(&dir)).unwrap();
    let mut ended = planned("ended", 10);
    store.create_rollout(&ended).unwrap();
    apply(
        &mut store,
        &mut ended,
        Event::Start { by: "a".into() },
        at(1),
    )
    .unwrap();
    let canary = ended.wave_agents(0)[0].uid;
    let installed = Event::AgentInstalled {
        uid: canary,
        version: NEW.into(),
        healthy: Some(true),
    };
    apply(&mut store, &mut ended, installed, at(2)).unwrap();
    let abort = Event::Abort {
        by: "a".into(),
        reason: "test".into(),
    };
    apply(&mut store, &mut ended, abort, at(2)).unwrap();
    // The canary never confirms its revert: the abort gives up at its deadline.
    while let Some(deadline) = ended.poll_timeout() {
        apply(&mut store, &mut ended, Event::Timeout, deadline).unwrap();
    }
    assert!(ended.is_terminal(), "{}", ended.status());
    let ended_at = store.list_rollouts().unwrap()[0].updated_at;
    let mut active = planned("active", 10);
    store.create_rollout(&active).unwrap();
    apply(
        &mut store,
        &mut active,
        Event::Start { by: "a".into() },
        at(3),
    )
    .unwrap();

    let ids = |since| -> Vec<String> {
        store
            .ended_since(since)
            .unwrap()
            .into_iter()
            .map(|(rollout, _)| rollout.id().as_str().to_owned())
            .collect()
    };
    assert_eq!(ids(at(0)), ["ended"]);
    assert_eq!(ids(ended_at), ["ended"]);
    assert!(ids(ended_at.saturating_add(Duration::from_millis(1))).is_empty());
    let (reloaded, _) = store.ended_since(at(0)).unwrap().remove(0);
    assert!(
        reloaded.agents().iter().any(|agent| agent.revert_pending()),
        "the canary's revert is still unconfirmed"
    );
}
