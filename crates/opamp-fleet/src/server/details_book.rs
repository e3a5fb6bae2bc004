//! Every agent's [`AgentDetails`] between its reports: the copy partial reports are merged
//! into, and the set of changed ones to write.
//!
//! Details of an agent that changed nothing since the last write are held packed (their JSON
//! text): unpacked, an idle agent's attribute and package maps cost about 3 KiB of tree nodes
//! and small strings, packed a few hundred bytes. A report unpacks them again; a write packs
//! them. The store stays the record; the book only saves a read per report.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use opamp_proto::InstanceUid;
use opamp_session::ServerEvent;

use super::details::{
    attributes, effective_config, health_tree, package_statuses, remote_config_status,
};
use crate::catalog::{SharedStore, lock};
use crate::store::{AgentDetails, ConnectionView, StoreError};

/// Details in memory, loaded from the store the first time an agent speaks (so a partial report
/// never overwrites what an earlier server process stored).
#[derive(Debug, Default)]
pub(crate) struct DetailsBook {
    /// Written to the store and unchanged since: packed.
    packed: HashMap<InstanceUid, Box<[u8]>>,
    /// Changed since the last write: unpacked until it is written.
    dirty: HashMap<InstanceUid, AgentDetails>,
    /// Connections of agents whose first report is not accepted yet: kept aside so that a
    /// refused first message leaves no row (dropped when the agent disconnects).
    arriving: HashMap<InstanceUid, ConnectionView>,
}

impl DetailsBook {
    /// The details of `uid` to change, marked for the next write. The store is locked only the
    /// first time an agent is seen (or if its packed copy cannot be read back).
    fn entry(&mut self, store: &SharedStore, uid: InstanceUid) -> &mut AgentDetails {
        match self.dirty.entry(uid) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let details = self
                    .packed
                    .remove(&uid)
                    .and_then(|packed| unpack(uid, &packed))
                    .unwrap_or_else(|| load(store, uid));
                entry.insert(details)
            }
        }
    }

    /// Records what `event` reports about `uid`; other events change nothing.
    pub(crate) fn observe(&mut self, store: &SharedStore, uid: InstanceUid, event: &ServerEvent) {
        if let Some(view) = self.arriving.remove(&uid) {
            self.entry(store, uid).connection = Some(view);
        }
        match event {
            ServerEvent::DescriptionChanged(description) => {
                let details = self.entry(store, uid);
                details.identifying_attributes = attributes(&description.identifying_attributes);
                details.non_identifying_attributes =
                    attributes(&description.non_identifying_attributes);
            }
            ServerEvent::PackageStatusesChanged(statuses) => {
                self.entry(store, uid).package_statuses = package_statuses(statuses);
            }
            ServerEvent::EffectiveConfigChanged(config) => {
                self.entry(store, uid).effective_config = Some(effective_config(config));
            }
            ServerEvent::RemoteConfigStatusChanged(status) => {
                self.entry(store, uid).remote_config_status = Some(remote_config_status(status));
            }
            ServerEvent::HealthChanged(health) => {
                self.entry(store, uid).health = Some(health_tree(health));
            }
            _ => {}
        }
    }

    /// Keeps the connection of an agent not registered yet until its first report.
    pub(crate) fn arriving(&mut self, uid: InstanceUid, view: ConnectionView) {
        self.arriving.insert(uid, view);
    }

    /// Forgets what is held for agents that are gone (disconnected before reporting, or
    /// forgotten by the registry); their stored rows are the store's to delete.
    pub(crate) fn forget(&mut self, uids: &[InstanceUid]) {
        for uid in uids {
            self.arriving.remove(uid);
            self.packed.remove(uid);
            self.dirty.remove(uid);
        }
    }

    /// Records the connection `uid` arrived on.
    pub(crate) fn connected(
        &mut self,
        store: &SharedStore,
        uid: InstanceUid,
        view: ConnectionView,
    ) {
        self.entry(store, uid).connection = Some(view);
    }

    /// Writes the changed details and packs them; on failure they stay marked for the next
    /// write.
    pub(crate) fn flush(&mut self, store: &SharedStore) -> Result<(), StoreError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let rows: Vec<(InstanceUid, &AgentDetails)> =
            self.dirty.iter().map(|(uid, d)| (*uid, d)).collect();
        lock(store).upsert_agent_details(&rows)?;
        // A fresh map: after a burst (every agent connecting) the old one's capacity would
        // stay allocated for the life of the process.
        for (uid, details) in std::mem::take(&mut self.dirty) {
            if let Some(packed) = pack(uid, &details) {
                self.packed.insert(uid, packed);
            }
        }
        Ok(())
    }

    /// Agents whose details are held (packed or changed).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.packed.len() + self.dirty.len()
    }
}

/// The stored details of `uid`, or empty ones for an agent the store has never seen.
fn load(store: &SharedStore, uid: InstanceUid) -> AgentDetails {
    match lock(store).agent_details(&uid) {
        Ok(stored) => stored.unwrap_or_default(),
        Err(error) => {
            tracing::error!(%uid, %error, "cannot read the agent's stored details");
            AgentDetails::default()
        }
    }
}

/// `None` (the store's row is read instead next time) if the details cannot be encoded.
fn pack(uid: InstanceUid, details: &AgentDetails) -> Option<Box<[u8]>> {
    match serde_json::to_vec(details) {
        Ok(bytes) => Some(bytes.into_boxed_slice()),
        Err(error) => {
            tracing::warn!(%uid, %error, "cannot pack agent details; reading them from the store next time");
            None
        }
    }
}

fn unpack(uid: InstanceUid, packed: &[u8]) -> Option<AgentDetails> {
    match serde_json::from_slice(packed) {
        Ok(details) => Some(details),
        Err(error) => {
            tracing::warn!(%uid, %error, "cannot unpack agent details; reading them from the store");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opamp_proto::v1;

    use super::*;
    use crate::store::SqliteStore;
    use crate::time::Timestamp;

    /// The store and the directory that holds it (removed when dropped).
    fn temp_store() -> (SharedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("fleet.db")).expect("store");
        (Arc::new(Mutex::new(store)), dir)
    }

    fn description(host: &str) -> ServerEvent {
        ServerEvent::DescriptionChanged(v1::AgentDescription {
            identifying_attributes: vec![v1::KeyValue::string("service.name", "otelcol")],
            non_identifying_attributes: vec![v1::KeyValue::string("host.name", host)],
        })
    }

    fn statuses(version: &str) -> ServerEvent {
        let mut statuses = v1::PackageStatuses::default();
        statuses.packages.insert(
            "otelcol".into(),
            v1::PackageStatus {
                name: "otelcol".into(),
                agent_has_version: version.into(),
                status: v1::PackageStatusEnum::Installed as i32,
                ..Default::default()
            },
        );
        ServerEvent::PackageStatusesChanged(statuses)
    }

    fn stored(store: &SharedStore, uid: InstanceUid) -> AgentDetails {
        lock(store)
            .agent_details(&uid)
            .expect("read")
            .expect("a row")
    }

    #[test]
    fn a_partial_report_keeps_what_an_earlier_process_stored() {
        let (store, _dir) = temp_store();
        let uid = InstanceUid::from([7; 16]);
        let mut earlier = DetailsBook::default();
        earlier.observe(&store, uid, &description("node-1"));
        earlier.flush(&store).expect("flush");

        let mut book = DetailsBook::default();
        book.observe(&store, uid, &statuses("1.2.0"));
        book.flush(&store).expect("flush");
        let details = stored(&store, uid);
        assert_eq!(details.non_identifying_attributes["host.name"], "node-1");
        assert_eq!(
            details.package_statuses["otelcol"].agent_has_version,
            "1.2.0"
        );
    }

    #[test]
    fn written_details_are_packed_and_come_back_whole_for_the_next_report() {
        let (store, _dir) = temp_store();
        let uids: Vec<InstanceUid> = (0..50u8).map(|n| InstanceUid::from([n; 16])).collect();
        let mut book = DetailsBook::default();
        for uid in &uids {
            book.observe(&store, *uid, &description(&format!("node-{uid}")));
            book.connected(
                &store,
                *uid,
                ConnectionView::new("websocket", "127.0.0.1:1", false, Timestamp::EPOCH),
            );
        }
        book.flush(&store).expect("flush");
        assert!(book.dirty.is_empty());
        assert_eq!(book.packed.len(), uids.len());

        // The packed copy, not the store, is what the next report is merged into: a row
        // changed behind the book's back is overwritten with the book's view.
        lock(&store)
            .upsert_agent_details(&[(uids[0], &AgentDetails::default())])
            .expect("overwrite");
        for uid in &uids {
            book.observe(&store, *uid, &statuses("2.0.0"));
        }
        book.flush(&store).expect("flush");
        for uid in &uids {
            let details = stored(&store, *uid);
            assert_eq!(
                details.non_identifying_attributes["host.name"],
                format!("node-{uid}")
            );
            assert_eq!(
                details.package_statuses["otelcol"].agent_has_version,
                "2.0.0"
            );
            assert_eq!(
                details.connection.as_ref().map(|c| c.transport.as_str()),
                Some("websocket")
            );
        }
        book.forget(&uids[..10]);
        assert_eq!(book.len(), 40);
    }

    #[test]
    fn an_unreadable_packed_copy_falls_back_to_the_store() {
        let (store, _dir) = temp_store();
        let uid = InstanceUid::from([9; 16]);
        let mut book = DetailsBook::default();
        book.observe(&store, uid, &description("node-9"));
        book.flush(&store).expect("flush");
        book.packed.insert(uid, Box::from(&b"{not json"[..]));

        book.observe(&store, uid, &statuses("3.0.0"));
        book.flush(&store).expect("flush");
        let details = stored(&store, uid);
        assert_eq!(details.non_identifying_attributes["host.name"], "node-9");
        assert_eq!(
            details.package_statuses["otelcol"].agent_has_version,
            "3.0.0"
        );
    }
}
