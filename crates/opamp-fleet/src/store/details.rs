//! What an agent reports beyond the registry row: its description, package statuses,
//! effective configuration, remote config status, component health tree and connection.
//!
//! Kept apart from [`super::AgentRecord`] (in its own table) because it can be large (a
//! collector's config files) and only the agent page reads it: listing 10,000 agents must not
//! read 10,000 configs. Every part is bounded when built from an agent's report (see
//! `server::details`), so one agent cannot make the server keep megabytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Everything the server keeps about one agent besides its registry row. Each part is `None`
/// (or empty) until the agent reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentDetails {
    /// `AgentDescription.identifying_attributes`, values as text.
    #[serde(default)]
    pub identifying_attributes: BTreeMap<String, String>,
    /// `AgentDescription.non_identifying_attributes`, values as text.
    #[serde(default)]
    pub non_identifying_attributes: BTreeMap<String, String>,
    /// The last `PackageStatuses`, by package name.
    #[serde(default)]
    pub package_statuses: BTreeMap<String, PackageStatusView>,
    /// The last `EffectiveConfig`.
    #[serde(default)]
    pub effective_config: Option<EffectiveConfigView>,
    /// The last `RemoteConfigStatus`.
    #[serde(default)]
    pub remote_config_status: Option<RemoteConfigStatusView>,
    /// The last `ComponentHealth` tree.
    #[serde(default)]
    pub health: Option<HealthNode>,
    /// The connection the agent last arrived on.
    #[serde(default)]
    pub connection: Option<ConnectionView>,
}

/// One package's status as the agent reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PackageStatusView {
    /// `installed`, `install_pending`, `installing`, `install_failed`, `downloading` (or
    /// `unknown(N)` for a value this server does not know).
    pub status: String,
    /// `agent_has_version`.
    pub agent_has_version: String,
    /// `server_offered_version`.
    pub server_offered_version: String,
    /// `error_message`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_message: String,
}

/// The agent's effective configuration (`EffectiveConfig.config_map`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EffectiveConfigView {
    /// SHA-256 over the whole config map as reported, before any truncation (the layout is in
    /// `docs/operations.md`, "Agent details"): equal hashes mean equal configs.
    pub hash: Vec<u8>,
    /// The files by name, bodies as UTF-8 text (invalid bytes replaced).
    pub files: BTreeMap<String, ConfigFileView>,
    /// Whether files or bodies were left out to stay within the size bound.
    #[serde(default)]
    pub truncated: bool,
}

/// One config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigFileView {
    /// `content_type` as reported (may be empty).
    #[serde(default)]
    pub content_type: String,
    /// The body as text; shortened when the config exceeded the bound.
    pub body: String,
    /// The body's size as reported, in bytes.
    pub size: u64,
}

/// The agent's `RemoteConfigStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteConfigStatusView {
    /// `unset`, `applied`, `applying`, `failed` (or `unknown(N)`).
    pub status: String,
    /// `last_remote_config_hash`.
    pub hash: Vec<u8>,
    /// `error_message`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_message: String,
}

/// A node of the `ComponentHealth` tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthNode {
    /// `healthy`.
    pub healthy: bool,
    /// `status` text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// `last_error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// `start_time_unix_nano`, in milliseconds (0 when not reported).
    #[serde(default)]
    pub started_at: Timestamp,
    /// The components below it, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, HealthNode>,
    /// How many components below this node were left out (depth or count bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How the agent is (or was last) connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionView {
    /// `websocket` or `http`.
    pub transport: String,
    /// The peer's address (`ip:port`).
    pub peer: String,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// When this connection began.
    pub connected_since: Timestamp,
    /// The server replica holding the connection (several replicas on one PostgreSQL
    /// database); absent for a single server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl ConnectionView {
    /// A connection over `transport` from `peer` that began at `since`.
    #[must_use]
    pub fn new(
        transport: impl Into<String>,
        peer: impl Into<String>,
        tls: bool,
        since: Timestamp,
    ) -> Self {
        ConnectionView {
            transport: transport.into(),
            peer: peer.into(),
            tls,
            connected_since: since,
            replica: None,
        }
    }

    /// The same connection, held by server replica `replica`.
    #[must_use]
    pub fn on_replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = Some(replica.into());
        self
    }
}
