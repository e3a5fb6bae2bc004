//! The admin API's own bodies for lists of agents, packages, rollouts and audit records. They
//! are not the store's row types: the store can change its rows (a column, a backend) without
//! changing what API clients read, and the API can grow without touching the store.

use std::path::PathBuf;

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

use crate::StringMap;
use crate::audit::AuditRecord;
use crate::events::RolloutStatus;
use crate::rollout::RolloutId;
use crate::selector::Labels;
use crate::spec::TargetKind;
use crate::store::{AgentRecord, PackageEntry, RolloutSummary, StoredAudit};
use crate::time::Timestamp;

/// `GET /api/v1/agents`: one agent of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentSummary {
    /// Instance uid.
    pub uid: InstanceUid,
    /// Labels from the agent description.
    pub labels: Labels,
    /// `AgentCapabilities` bits as reported (unknown bits kept).
    pub capabilities: u64,
    /// Installed version per package name.
    pub package_versions: StringMap,
    /// Last reported health.
    pub healthy: bool,
    /// Whether it is connected now.
    pub connected: bool,
    /// Last message received.
    pub last_seen: Timestamp,
    /// The server replica holding its connection (several replicas on one PostgreSQL
    /// database; absent for a single server and for agents not connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl AgentSummary {
    /// Whether the agent reports `version` of `package` installed.
    pub fn runs(&self, package: &str, version: &str) -> bool {
        self.package_versions.get(package) == Some(version)
    }

    /// Whether the agent is connected, healthy and reports `version` of `package` installed:
    /// settled on that version.
    pub fn is_settled_on(&self, package: &str, version: &str) -> bool {
        self.connected && self.healthy && self.runs(package, version)
    }
}

impl From<&AgentRecord> for AgentSummary {
    fn from(record: &AgentRecord) -> Self {
        AgentSummary {
            uid: record.uid,
            labels: record.labels.clone(),
            capabilities: record.capabilities,
            package_versions: record.package_versions.clone(),
            healthy: record.healthy,
            connected: record.connected,
            last_seen: record.last_seen,
            replica: None,
        }
    }
}

/// `GET /api/v1/packages`, `POST /api/v1/packages`: one version in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PackageView {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the file, as offered to agents.
    pub content_hash: Vec<u8>,
    /// File size in bytes.
    pub size: u64,
    /// The signature relayed to agents.
    pub signature: Vec<u8>,
    /// Where the server keeps the file (for operators on the server's host).
    pub file_path: PathBuf,
    /// When it was added.
    pub added_at: Timestamp,
    /// The operator who added it through the admin API.
    #[serde(default)]
    pub added_by: Option<String>,
}

impl From<&PackageEntry> for PackageView {
    fn from(entry: &PackageEntry) -> Self {
        PackageView {
            name: entry.name.clone(),
            version: entry.version.clone(),
            content_hash: entry.content_hash.clone(),
            size: entry.size,
            signature: entry.signature.clone(),
            file_path: entry.file_path.clone(),
            added_at: entry.added_at,
            added_by: entry.added_by.clone(),
        }
    }
}

/// `GET /api/v1/rollouts`: one rollout of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutListItem {
    /// Id.
    pub id: RolloutId,
    /// A package or a config rollout (`package` is then the config's name).
    #[serde(default, skip_serializing_if = "TargetKind::is_package")]
    pub target_kind: TargetKind,
    /// Package.
    pub package: String,
    /// Target version.
    pub target_version: String,
    /// Selector, as text.
    pub selector: String,
    /// Status.
    pub status: RolloutStatus,
    /// When planned.
    pub created_at: Timestamp,
    /// When last changed.
    pub updated_at: Timestamp,
}

impl From<&RolloutSummary> for RolloutListItem {
    fn from(summary: &RolloutSummary) -> Self {
        RolloutListItem {
            id: summary.id.clone(),
            target_kind: summary.target_kind,
            package: summary.package.clone(),
            target_version: summary.target_version.clone(),
            selector: summary.selector.clone(),
            status: summary.status,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
        }
    }
}

/// `GET /api/v1/audit`: one audit record with its position in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the log (increasing: page with `after=`).
    pub position: i64,
    /// The record.
    pub record: AuditRecord,
}

impl From<&StoredAudit> for AuditEntry {
    fn from(stored: &StoredAudit) -> Self {
        AuditEntry {
            position: stored.position,
            record: stored.record.clone(),
        }
    }
}

/// Converts a list of store rows into API bodies.
pub(crate) fn all<'a, T: 'a, V: From<&'a T>>(rows: &'a [T]) -> Vec<V> {
    rows.iter().map(V::from).collect()
}
