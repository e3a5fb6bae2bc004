//! What the coordinator knows about one agent: the agent registry row.

use crate::StringMap;

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

use crate::rollout::AgentSnapshot;
use crate::selector::Labels;
use crate::time::Timestamp;

/// What the server knows about one agent (the agent registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentRecord {
    /// Instance uid.
    pub uid: InstanceUid,
    /// Labels from the agent description.
    pub labels: Labels,
    /// `AgentCapabilities` bits as reported (unknown bits kept).
    pub capabilities: u64,
    /// Installed version per package name, from `PackageStatuses`.
    pub package_versions: StringMap,
    /// Last reported health.
    pub healthy: bool,
    /// Whether a connection is open (or the agent polls) now.
    pub connected: bool,
    /// Last message received.
    pub last_seen: Timestamp,
}

impl AgentRecord {
    /// A record with no packages, healthy and connected, seen at `now`.
    #[must_use]
    pub fn new(uid: InstanceUid, labels: Labels, capabilities: u64, now: Timestamp) -> Self {
        AgentRecord {
            uid,
            labels,
            capabilities,
            package_versions: StringMap::new(),
            healthy: true,
            connected: true,
            last_seen: now,
        }
    }

    /// The engine's view of this agent for a rollout of `package`.
    #[must_use]
    pub fn snapshot_for(&self, package: &str) -> AgentSnapshot {
        AgentSnapshot::new(
            self.uid,
            self.labels.clone(),
            self.package_versions.get(package).map(str::to_owned),
        )
        .healthy(self.healthy)
        .connected(self.connected)
    }
}
