//! The agent registry (`agents`) and what agents report beyond it (`agent_details`).
//!
//! Batches are one statement over arrays (`UNNEST`), so that a burst of 10,000 reports is one
//! round trip, not 10,000. PostgreSQL refuses to update one row twice in one
//! `INSERT ... ON CONFLICT DO UPDATE`, so a batch naming a uid twice keeps its last row, which
//! is what SQLite's row-by-row upserts leave. Rows are written in uid order, so two replicas
//! writing overlapping batches lock rows in the same order and cannot deadlock.

use std::collections::BTreeMap;

use ::postgres::Client;
use opamp_proto::InstanceUid;

use super::PostgresStore;
use super::codec::{column, json, millis, pg, sql_u64};
use super::lease::begin_write;
use crate::store::columns::{AgentRow, agent_record};
use crate::store::{AgentDetails, AgentRecord, StoreError};

/// Registry rows as columns, by uid.
#[derive(Debug, Default)]
struct AgentColumns {
    uid: Vec<String>,
    labels: Vec<String>,
    capabilities: Vec<i64>,
    package_versions: Vec<String>,
    healthy: Vec<bool>,
    connected: Vec<bool>,
    last_seen: Vec<i64>,
}

impl PostgresStore {
    /// Inserts or replaces registry rows, in one statement.
    pub(super) fn write_agents(&self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        let mut latest = BTreeMap::new();
        for agent in agents {
            latest.insert(agent.uid.to_string(), *agent);
        }
        let mut columns = AgentColumns::default();
        for (uid, agent) in latest {
            columns.uid.push(uid);
            columns
                .labels
                .push(serde_json::to_string(&agent.labels).map_err(json("encoding agent labels"))?);
            columns.capabilities.push(sql_u64(agent.capabilities));
            columns.package_versions.push(
                serde_json::to_string(&agent.package_versions)
                    .map_err(json("encoding agent versions"))?,
            );
            columns.healthy.push(agent.healthy);
            columns.connected.push(agent.connected);
            columns.last_seen.push(millis(agent.last_seen));
        }
        if columns.uid.is_empty() {
            return Ok(());
        }
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            tx.execute(
                "INSERT INTO agents (uid, labels, capabilities, package_versions, healthy,
                        connected, last_seen)
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[],
                        $5::BOOLEAN[], $6::BOOLEAN[], $7::BIGINT[])
                     ON CONFLICT (uid) DO UPDATE SET labels = excluded.labels,
                        capabilities = excluded.capabilities,
                        package_versions = excluded.package_versions,
                        healthy = excluded.healthy, connected = excluded.connected,
                        last_seen = excluded.last_seen",
                &[
                    &columns.uid,
                    &columns.labels,
                    &columns.capabilities,
                    &columns.package_versions,
                    &columns.healthy,
                    &columns.connected,
                    &columns.last_seen,
                ],
            )
            .map_err(pg("writing agents"))?;
            tx.commit().map_err(pg("committing agents"))
        })
    }

    /// Updates `last_seen` alone of existing registry rows, in one statement (uid order,
    /// like [`PostgresStore::write_agents`]).
    pub(super) fn write_last_seen(&self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        let latest: BTreeMap<String, i64> = agents
            .iter()
            .map(|agent| (agent.uid.to_string(), millis(agent.last_seen)))
            .collect();
        if latest.is_empty() {
            return Ok(());
        }
        let (uids, seen): (Vec<String>, Vec<i64>) = latest.into_iter().unzip();
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            tx.execute(
                "UPDATE agents SET last_seen = seen.last_seen
                     FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS seen (uid, last_seen)
                     WHERE agents.uid = seen.uid",
                &[&uids, &seen],
            )
            .map_err(pg("writing when agents were last seen"))?;
            tx.commit()
                .map_err(pg("committing when agents were last seen"))
        })
    }

    /// Removes the registry rows and details of `uids` in one transaction; the count of
    /// registry rows that existed. Enrollment credentials stay, so that an agent can return.
    pub(super) fn remove_agents(&self, uids: &[InstanceUid]) -> Result<usize, StoreError> {
        let uids: Vec<String> = uids.iter().map(ToString::to_string).collect();
        if uids.is_empty() {
            return Ok(0);
        }
        let fence = self.fence;
        let removed = self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            let removed = tx
                .execute("DELETE FROM agents WHERE uid = ANY($1)", &[&uids])
                .map_err(pg("removing agents"))?;
            tx.execute("DELETE FROM agent_details WHERE uid = ANY($1)", &[&uids])
                .map_err(pg("removing agents' details"))?;
            tx.commit().map_err(pg("committing an agent removal"))?;
            Ok(removed)
        })?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Registry rows: one uid's, or all of them by uid.
    pub(super) fn read_agents(
        &self,
        uid: Option<&InstanceUid>,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let uid = uid.map(ToString::to_string);
        let rows = self.worker.call(move |client| query_agents(client, uid))?;
        rows.into_iter().map(agent_record).collect()
    }

    /// A page of agents after `after`, in uid order.
    pub(super) fn read_agents_page(
        &self,
        after: Option<&InstanceUid>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let after = after.map(ToString::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .worker
            .call(move |client| query_agents_page(client, after, limit))?;
        rows.into_iter().map(agent_record).collect()
    }
    /// Inserts or replaces agents' details, in one statement.
    pub(super) fn write_details(
        &self,
        details: &[(InstanceUid, &AgentDetails)],
    ) -> Result<(), StoreError> {
        let mut latest = BTreeMap::new();
        for (uid, details) in details {
            latest.insert(uid.to_string(), *details);
        }
        let mut uids = Vec::with_capacity(latest.len());
        let mut texts = Vec::with_capacity(latest.len());
        for (uid, details) in latest {
            uids.push(uid);
            texts.push(serde_json::to_string(details).map_err(json("encoding agent details"))?);
        }
        if uids.is_empty() {
            return Ok(());
        }
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            tx.execute(
                "INSERT INTO agent_details (uid, details)
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])
                     ON CONFLICT (uid) DO UPDATE SET details = excluded.details",
                &[&uids, &texts],
            )
            .map_err(pg("writing agent details"))?;
            tx.commit().map_err(pg("committing agent details"))
        })
    }

    /// One agent's details.
    pub(super) fn read_details(
        &self,
        uid: &InstanceUid,
    ) -> Result<Option<AgentDetails>, StoreError> {
        let uid = uid.to_string();
        let text: Option<String> = self.worker.call(move |client| {
            client
                .query_opt("SELECT details FROM agent_details WHERE uid = $1", &[&uid])
                .map_err(pg("reading agent details"))?
                .map(|row| column(&row, 0, "reading agent details"))
                .transpose()
        })?;
        text.map(|text| serde_json::from_str(&text).map_err(json("decoding agent details")))
            .transpose()
    }
}

fn query_agents(client: &mut Client, uid: Option<String>) -> Result<Vec<AgentRow>, StoreError> {
    let rows = client
        .query(
            "SELECT uid, labels, capabilities, package_versions, healthy, connected, last_seen
             FROM agents WHERE $1::TEXT IS NULL OR uid = $1 ORDER BY uid",
            &[&uid],
        )
        .map_err(pg(READING_AGENTS))?;
    rows.iter().map(raw_agent).collect()
}

fn query_agents_page(
    client: &mut Client,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<AgentRow>, StoreError> {
    let rows = client
        .query(
            "SELECT uid, labels, capabilities, package_versions, healthy, connected, last_seen
             FROM agents WHERE $1::TEXT IS NULL OR uid > $1 ORDER BY uid LIMIT $2",
            &[&after, &limit],
        )
        .map_err(pg(READING_AGENTS))?;
    rows.iter().map(raw_agent).collect()
}

const READING_AGENTS: &str = "reading agents";

fn raw_agent(row: &postgres::Row) -> Result<AgentRow, StoreError> {
    Ok((
        column(row, 0, READING_AGENTS)?,
        column(row, 1, READING_AGENTS)?,
        column(row, 2, READING_AGENTS)?,
        column(row, 3, READING_AGENTS)?,
        column(row, 4, READING_AGENTS)?,
        column(row, 5, READING_AGENTS)?,
        column(row, 6, READING_AGENTS)?,
    ))
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::Labels;
    use crate::store::FleetStore;
    use crate::time::Timestamp;

    fn uid(i: u8) -> InstanceUid {
        InstanceUid::from([i; 16])
    }

    #[test]
    fn a_batch_naming_a_uid_twice_keeps_its_last_row() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let first = AgentRecord::new(uid(2), Labels::new(), 1, Timestamp::from_millis(1));
        let mut second = first.clone();
        second.capabilities = u64::MAX;
        second.connected = false;
        let other = AgentRecord::new(uid(1), Labels::new(), 1, Timestamp::from_millis(1));
        store.upsert_agents(&[&first, &other, &second]).unwrap();
        assert_eq!(store.agents().unwrap(), vec![other.clone(), second.clone()]);

        let details = AgentDetails::default();
        let mut changed = AgentDetails::default();
        changed
            .identifying_attributes
            .insert("service.name".into(), "x".into());
        store
            .upsert_agent_details(&[(uid(2), &details), (uid(2), &changed)])
            .unwrap();
        assert_eq!(store.agent_details(&uid(2)).unwrap(), Some(changed));
        assert_eq!(store.delete_agents(&[uid(2), uid(2), uid(9)]).unwrap(), 1);
        assert_eq!(store.agent_details(&uid(2)).unwrap(), None);
        assert_eq!(store.delete_agents(&[]).unwrap(), 0);
        assert_eq!(store.agents().unwrap(), vec![other]);
    }

    #[test]
    fn a_bad_uid_in_the_registry_is_corrupt() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let mut raw = Client::connect(&url, ::postgres::NoTls).unwrap();
        raw.batch_execute("INSERT INTO agents VALUES ('not-a-uid', '{}', 0, '{}', true, true, 0)")
            .unwrap();
        assert!(matches!(store.agents(), Err(StoreError::Corrupt { .. })));
    }
}
