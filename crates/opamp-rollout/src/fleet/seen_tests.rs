//! Which registry rows a heartbeat dirties, and how: `last_seen` alone or the whole row.

use std::time::Duration;

use opamp_proto::InstanceUid;

use super::{AgentReport, Fleet, FleetSettings};
use crate::store::MemoryStore;
use crate::time::Timestamp;

fn at(secs: u64) -> Timestamp {
    Timestamp::EPOCH.saturating_add(Duration::from_secs(secs))
}

/// A fleet with one registered agent whose row has been written.
fn registered() -> (Fleet, MemoryStore, InstanceUid) {
    let mut fleet = Fleet::new(FleetSettings::default());
    let mut store = MemoryStore::default();
    let uid = InstanceUid::from([7; 16]);
    fleet.report(uid, AgentReport::Health(true), at(0), &mut store);
    assert_eq!(fleet.take_changed_agents(), vec![uid]);
    (fleet, store, uid)
}

#[test]
fn a_heartbeat_dirties_last_seen_alone_once_per_period() {
    let (mut fleet, _store, uid) = registered();
    // Within the period: nothing to write.
    fleet.heartbeat(uid, at(0));
    assert!(fleet.take_seen_agents().is_empty());
    // Due: only `last_seen`, never the whole row.
    fleet.heartbeat(uid, at(2));
    assert!(fleet.take_changed_agents().is_empty());
    assert_eq!(fleet.take_seen_agents(), vec![uid]);
    assert_eq!(fleet.agent(&uid).map(|a| a.last_seen), Some(at(2)));
    // Taken once.
    assert!(fleet.take_seen_agents().is_empty());
}

#[test]
fn a_row_changed_otherwise_is_written_whole_not_touched() {
    let (mut fleet, mut store, uid) = registered();
    fleet.heartbeat(uid, at(2));
    fleet.report(uid, AgentReport::Health(false), at(3), &mut store);
    assert!(fleet.take_seen_agents().is_empty());
    assert_eq!(fleet.take_changed_agents(), vec![uid]);
}

#[test]
fn heartbeats_of_unknown_agents_dirty_nothing() {
    let mut fleet = Fleet::new(FleetSettings::default());
    fleet.heartbeat(InstanceUid::from([1; 16]), at(5));
    assert!(fleet.take_seen_agents().is_empty());
    assert!(fleet.take_changed_agents().is_empty());
}
