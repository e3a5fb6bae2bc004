//! The store's contract, run against every backend: a fresh SQLite file, and a fresh
//! PostgreSQL database when `OPAMP_TEST_POSTGRES_URL` names a server (`.ci/postgres.sh`
//! starts one; CI requires it). Registry, catalogs, the append-only audit log, and rollouts
//! that survive a reopen, a leaked connection and a second writer. SQLite's own migrations
//! and a killed process are in `store_sqlite.rs`.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_support;

use std::time::Duration;

use opamp_fleet::audit::FLEET_RECORDS;
use opamp_fleet::store::{
    AgentDetails, AgentRecord, AuditQuery, ConfigEntry, ConfigFile, ConnectionView,
    EffectiveConfigView, PackageEntry, StoreError, apply,
};
use opamp_fleet::store::{EnrollmentOutcome, FleetStore};
use opamp_fleet::{
    Actor, AuditAction, AuditRecord, Command, Event, FleetError, Labels, RolloutId, RolloutStatus,
    Timestamp,
};
use opamp_proto::InstanceUid;

use store_support::{NEW, OLD, TestDb, at, planned, run_script, script, uid};

on_every_backend!(
    agent_registry_round_trips_and_updates_in_place,
    agent_details_round_trip_apart_from_the_registry,
    agent_batches_are_written_together_and_update_in_place,
    touching_agents_moves_last_seen_alone_and_adds_no_rows,
    agent_pages_walk_the_registry_once_in_uid_order,
    forgotten_agents_are_deleted_and_stay_deleted_after_reopening,
    package_catalog_refuses_changed_bytes_for_a_version,
    config_catalog_keeps_files_finds_by_hash_and_refuses_changed_content,
    audit_log_is_append_only_and_pages_by_position,
    every_install_result_is_audited_per_agent,
    rollout_survives_a_clean_reopen_and_continues_identically,
    rollout_survives_a_leaked_connection,
    a_second_connection_reads_every_rollout_state_whole,
    out_of_order_steps_and_duplicate_rollouts_are_refused,
    two_writers_cannot_both_append_the_same_step,
    ended_since_lists_terminal_rollouts_updated_since_the_bound,
    a_token_enrolls_one_uid_once_and_never_after_it_expires,
    racing_agents_spend_a_token_exactly_once,
);

fn agent_registry_round_trips_and_updates_in_place(db: &TestDb) {
    let mut store = db.open();
    let labels: Labels = [("env".to_owned(), "prod".to_owned())]
        .into_iter()
        .collect();
    let mut agent = AgentRecord::new(uid(1), labels, 0x8000_0000_0000_2019, at(1));
    agent.package_versions.insert("otelcol", OLD);
    store.upsert_agent(&agent).unwrap();
    store
        .upsert_agent(&AgentRecord::new(uid(0), Labels::new(), 1, at(1)))
        .unwrap();
    agent.healthy = false;
    agent.connected = false;
    agent.last_seen = at(9);
    store.upsert_agent(&agent).unwrap();
    drop(store);

    let store = db.open();
    assert_eq!(store.agent(&uid(1)).unwrap(), Some(agent.clone()));
    assert_eq!(store.agents().unwrap().len(), 2);
    assert_eq!(store.agent(&uid(5)).unwrap(), None);
    let snapshot = agent.snapshot_for("otelcol");
    assert_eq!(snapshot.current_version.as_deref(), Some(OLD));
    assert!(!snapshot.healthy && !snapshot.connected);
}

/// Details live in their own table: written in batches, replaced whole, read back after a
/// reopen, and absent for an agent that never reported any.
fn agent_details_round_trip_apart_from_the_registry(db: &TestDb) {
    let mut store = db.open();
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

    let store = db.open();
    assert_eq!(store.agent_details(&uid(1)).unwrap(), Some(details));
    assert_eq!(store.agent_details(&uid(2)).unwrap(), Some(other));
    assert_eq!(store.agent_details(&uid(3)).unwrap(), None);
    // The registry is untouched: details alone make no agent.
    assert!(store.agents().unwrap().is_empty());
}

fn agent_batches_are_written_together_and_update_in_place(db: &TestDb) {
    let mut store = db.open();
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

    let store = db.open();
    let mut stored = store.agents().unwrap();
    stored.sort_by_key(|agent| agent.uid);
    agents.sort_by_key(|agent| agent.uid);
    assert_eq!(stored, agents);
}

/// Heartbeat-only changes write `last_seen` and nothing else, and never make a row.
fn touching_agents_moves_last_seen_alone_and_adds_no_rows(db: &TestDb) {
    let mut store = db.open();
    let mut agents: Vec<AgentRecord> = (0..3)
        .map(|i| AgentRecord::new(uid(i), Labels::new(), 1, at(1)))
        .collect();
    store
        .upsert_agents(&agents.iter().collect::<Vec<_>>())
        .unwrap();
    // In memory the rows changed more than last_seen; a touch must not write the rest.
    let written = agents.clone();
    for agent in &mut agents {
        agent.healthy = false;
        agent.last_seen = at(6);
    }
    let unknown = AgentRecord::new(uid(9), Labels::new(), 1, at(6));
    store
        .touch_agents(&[&agents[0], &agents[2], &unknown])
        .unwrap();
    store.touch_agents(&[]).unwrap();
    drop(store);

    let store = db.open();
    let mut stored = store.agents().unwrap();
    stored.sort_by_key(|agent| agent.uid);
    let mut expected = written;
    expected.sort_by_key(|agent| agent.uid);
    for agent in &mut expected {
        if agent.uid == uid(0) || agent.uid == uid(2) {
            agent.last_seen = at(6);
        }
    }
    assert_eq!(stored, expected);
}

fn agent_pages_walk_the_registry_once_in_uid_order(db: &TestDb) {
    let mut store = db.open();
    // Uids made to sort differently from their creation order.
    let agents: Vec<AgentRecord> = (0..257u32)
        .map(|i| AgentRecord::new(uid(i.wrapping_mul(2_654_435_761)), Labels::new(), 1, at(1)))
        .collect();
    store
        .upsert_agents(&agents.iter().collect::<Vec<_>>())
        .unwrap();
    let all = store.agents().unwrap();
    assert_eq!(all.len(), 257);

    for limit in [1, 50, 256, 257, 1_000] {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store.agents_page(after.as_ref(), limit).unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = Some(last.uid);
            let full = page.len() == limit;
            walked.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(walked, all, "pages of {limit}");
    }
    assert!(store.agents_page(None, 0).unwrap().is_empty());
    let last = all.last().unwrap().uid;
    assert!(store.agents_page(Some(&last), 10).unwrap().is_empty());
    // A page continues after any uid it is given.
    let second = store.agents_page(Some(&all[0].uid), 1).unwrap();
    assert_eq!(second[0].uid, all[1].uid);
}

fn forgotten_agents_are_deleted_and_stay_deleted_after_reopening(db: &TestDb) {
    let mut store = db.open();
    let agents: Vec<AgentRecord> = (0..4)
        .map(|i| AgentRecord::new(uid(i), Labels::new(), 1, at(1)))
        .collect();
    store
        .upsert_agents(&agents.iter().collect::<Vec<_>>())
        .unwrap();
    // One unknown uid among them: counted as not removed.
    assert_eq!(store.delete_agents(&[uid(1), uid(3), uid(9)]).unwrap(), 2);
    drop(store);
    let store = db.open();
    let left: Vec<_> = store.agents().unwrap().into_iter().map(|a| a.uid).collect();
    assert_eq!(left, [uid(0), uid(2)]);
}

fn package_catalog_refuses_changed_bytes_for_a_version(db: &TestDb) {
    let mut store = db.open();
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

fn config_catalog_keeps_files_finds_by_hash_and_refuses_changed_content(db: &TestDb) {
    let mut store = db.open();
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

    let store = db.open();
    let stored = store.config("collector", "1").unwrap().unwrap();
    assert_eq!(stored, v1);
    let names: Vec<&str> = stored.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["collector.yaml", "z.yaml"]);
    assert_eq!(store.config_by_hash(&[2; 32]).unwrap(), Some(v2));
    assert_eq!(store.config_by_hash(&[3; 32]).unwrap(), None);
    assert_eq!(store.configs().unwrap().len(), 2);
}

fn audit_log_is_append_only_and_pages_by_position(db: &TestDb) {
    let mut store = db.open();
    let mut a = planned("a", 10);
    let mut b = planned("b", 10);
    store.create_rollout(&a).unwrap();
    store.create_rollout(&b).unwrap();
    apply(
        &mut *store,
        &mut a,
        Event::Start { by: "alice".into() },
        at(1),
    )
    .unwrap();
    apply(
        &mut *store,
        &mut b,
        Event::Start { by: "bob".into() },
        at(1),
    )
    .unwrap();
    apply(
        &mut *store,
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
    assert!(db.raw_execute("UPDATE audit_log SET kind = 'x'").is_err());
    assert!(db.raw_execute("DELETE FROM audit_log").is_err());
}

fn every_install_result_is_audited_per_agent(db: &TestDb) {
    let mut store = db.open();
    let mut rollout = planned("r", 20);
    store.create_rollout(&rollout).unwrap();
    let commands = apply(
        &mut *store,
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
        &mut *store,
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
        &mut *store,
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

fn rollout_survives_a_clean_reopen_and_continues_identically(db: &TestDb) {
    let mut store = db.open_with_snapshot_interval(3);
    let mut rollout = planned("r", 40);
    let mut twin = rollout.clone();
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    let (first, second) = events.split_at(events.len() / 2);
    run_script(&mut *store, &mut rollout, first);
    for (event, now) in first {
        twin.handle(event.clone(), *now).unwrap();
    }
    drop(store);

    let mut store = db.open_with_snapshot_interval(3);
    let mut reloaded = store.load_rollout(&RolloutId::new("r")).unwrap().unwrap();
    assert_eq!(reloaded, twin);
    assert_eq!(reloaded.poll_timeout(), twin.poll_timeout());
    let continued = run_script(&mut *store, &mut reloaded, second);
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

/// The admin API reads through its own connection while the coordinator writes: a rollout read
/// between two steps must pair one commit's row with the same commit's events.
fn a_second_connection_reads_every_rollout_state_whole(db: &TestDb) {
    let mut store = db.open_with_snapshot_interval(3);
    let mut rollout = planned("r", 200);
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let reader = db.open();
            let mut reads = 0u32;
            let mut last = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let seen = reader
                    .load_rollout(&RolloutId::new("r"))
                    .expect("a whole rollout between steps")
                    .expect("the rollout");
                let logged = seen.sequence();
                assert!(logged >= last, "went back from {last} to {logged}");
                last = logged;
                reads += 1;
            }
            reads
        });
        for step in events.chunks(1) {
            run_script(&mut *store, &mut rollout, step);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(rollout.status(), RolloutStatus::Completed);
}

fn rollout_survives_a_leaked_connection(db: &TestDb) {
    let mut store = db.open();
    let mut rollout = planned("r", 30);
    store.create_rollout(&rollout).unwrap();
    let events = script(&rollout);
    run_script(&mut *store, &mut rollout, &events[..25]);
    // Never closed, never checkpointed: only what was committed to the WAL exists.
    std::mem::forget(store);

    let store = db.open();
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

fn out_of_order_steps_and_duplicate_rollouts_are_refused(db: &TestDb) {
    let mut store = db.open();
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
        &mut *store,
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
        &mut *store,
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

fn two_writers_cannot_both_append_the_same_step(db: &TestDb) {
    let mut first = db.open();
    let mut second = db.open();
    let mut rollout = planned("r", 10);
    first.create_rollout(&rollout).unwrap();
    let mut copy = second.load_rollout(rollout.id()).unwrap().unwrap();

    apply(
        &mut *first,
        &mut rollout,
        Event::Start { by: "a".into() },
        at(1),
    )
    .unwrap();
    let result = apply(
        &mut *second,
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
fn ended_since_lists_terminal_rollouts_updated_since_the_bound(db: &TestDb) {
    let mut store = db.open();
    let mut ended = planned("ended", 10);
    store.create_rollout(&ended).unwrap();
    apply(
        &mut *store,
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
    apply(&mut *store, &mut ended, installed, at(2)).unwrap();
    let abort = Event::Abort {
        by: "a".into(),
        reason: "test".into(),
    };
    apply(&mut *store, &mut ended, abort, at(2)).unwrap();
    // The canary never confirms its revert: the abort gives up at its deadline.
    while let Some(deadline) = ended.poll_timeout() {
        apply(&mut *store, &mut ended, Event::Timeout, deadline).unwrap();
    }
    assert!(ended.is_terminal(), "{}", ended.status());
    let ended_at = store.list_rollouts().unwrap()[0].updated_at;
    let mut active = planned("active", 10);
    store.create_rollout(&active).unwrap();
    apply(
        &mut *store,
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

fn a_token_enrolls_one_uid_once_and_never_after_it_expires(db: &TestDb) {
    let mut store = db.open();
    let created = Timestamp::from_millis(1_000);
    let expires = Timestamp::from_millis(10_000);
    let now = Timestamp::from_millis(5_000);
    let (token, expiring) = ([1u8; 32], [2u8; 32]);
    store
        .add_enrollment_token(&token, "alice", created, expires)
        .unwrap();
    store
        .add_enrollment_token(&expiring, "alice", created, now)
        .unwrap();
    let (a, b) = (InstanceUid::new_v7(), InstanceUid::new_v7());
    let enroll = |store: &mut dyn FleetStore, token: &[u8; 32], uid| {
        store
            .enroll(token, uid, &[9u8; 32], now, &enrolled(uid, now))
            .unwrap()
    };
    assert_eq!(enroll(&mut *store, &token, a), EnrollmentOutcome::Enrolled);
    assert_eq!(
        enroll(&mut *store, &token, b),
        EnrollmentOutcome::TokenInvalid
    );
    assert_eq!(
        enroll(&mut *store, &expiring, b),
        EnrollmentOutcome::TokenInvalid,
        "a token is invalid from its expiry on"
    );
    assert_eq!(
        enroll(&mut *store, &[3u8; 32], b),
        EnrollmentOutcome::TokenInvalid
    );
    store
        .add_enrollment_token(&[4u8; 32], "alice", created, expires)
        .unwrap();
    assert_eq!(
        enroll(&mut *store, &[4u8; 32], a),
        EnrollmentOutcome::AlreadyEnrolled,
        "an enrolled uid keeps its credential"
    );
    assert_eq!(store.agent_credentials().unwrap(), vec![(a, [9u8; 32])]);
    drop(store);
    let store = db.open();
    assert_eq!(store.agent_credentials().unwrap().len(), 1, "persisted");
    let audited = store
        .audit_log(&AuditQuery::all().rollout(RolloutId::new(FLEET_RECORDS)))
        .unwrap();
    assert_eq!(audited.len(), 1, "one enrollment, one record");
}

/// Eight agents on eight connections (as on several server replicas) race for one token:
/// exactly one is enrolled, and only its credential exists.
fn racing_agents_spend_a_token_exactly_once(db: &TestDb) {
    let now = Timestamp::from_millis(5_000);
    let token = [5u8; 32];
    db.open()
        .add_enrollment_token(&token, "alice", now, Timestamp::from_millis(60_000))
        .unwrap();
    let stores: Vec<_> = (0..8).map(|_| db.open()).collect();
    let barrier = std::sync::Barrier::new(stores.len());
    let outcomes: Vec<(InstanceUid, EnrollmentOutcome)> = std::thread::scope(|scope| {
        let racers: Vec<_> = stores
            .into_iter()
            .map(|mut store| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let uid = InstanceUid::new_v7();
                    barrier.wait();
                    // SQLite may answer "busy" past its timeout under contention: retried,
                    // as the server retries a failed write.
                    for _ in 0..20 {
                        match store.enroll(&token, uid, &[1u8; 32], now, &enrolled(uid, now)) {
                            Ok(outcome) => return (uid, outcome),
                            Err(error) => eprintln!("retrying: {error}"),
                        }
                    }
                    panic!("enrollment kept failing")
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<InstanceUid> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == EnrollmentOutcome::Enrolled)
        .map(|(uid, _)| *uid)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(
        db.open().agent_credentials().unwrap(),
        vec![(winners[0], [1u8; 32])]
    );
}
