//! What a server session tells its embedding server.

use opamp_proto::{AgentCapabilities, InstanceUid, v1};

/// A typed change in what the server knows about its agent, so a server author never
/// parses raw messages. Drain with [`crate::ServerSession::poll_event`]; the merged state
/// is always available from [`crate::ServerSession::agent_state`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The first message of a connection arrived.
    #[non_exhaustive]
    Connected {
        /// The uid the agent identified with.
        instance_uid: InstanceUid,
    },
    /// The agent declared different capabilities.
    CapabilitiesChanged(AgentCapabilities),
    /// The agent description changed.
    DescriptionChanged(v1::AgentDescription),
    /// The agent's health changed.
    HealthChanged(v1::ComponentHealth),
    /// The agent's effective configuration changed.
    EffectiveConfigChanged(v1::EffectiveConfig),
    /// The agent's remote config status changed.
    RemoteConfigStatusChanged(v1::RemoteConfigStatus),
    /// The agent's package statuses changed.
    PackageStatusesChanged(v1::PackageStatuses),
    /// The agent declared different custom capabilities.
    CustomCapabilitiesChanged(v1::CustomCapabilities),
    /// The agent's available components changed.
    AvailableComponentsChanged(v1::AvailableComponents),
    /// The agent's connection settings status changed.
    ConnectionSettingsStatusChanged(v1::ConnectionSettingsStatus),
    /// The agent asks for connection settings (for example with a CSR).
    ConnectionSettingsRequest(v1::ConnectionSettingsRequest),
    /// A custom message from the agent.
    CustomMessage(v1::CustomMessage),
    /// The agent asks the server to assign it an instance uid; answer with
    /// [`crate::ServerSession::assign_instance_uid`].
    InstanceUidRequested,
    /// The agent now uses the uid the server assigned.
    InstanceUidChanged(InstanceUid),
    /// The server missed messages (or never had this agent's state) and asked the agent
    /// for a full report.
    #[non_exhaustive]
    FullStateRequested {
        /// The last sequence number the server had, if any.
        last: Option<u64>,
        /// The sequence number that revealed the gap.
        received: u64,
    },
    /// The agent said goodbye (`agent_disconnect`) or the transport closed.
    #[non_exhaustive]
    Disconnected {
        /// The uid the agent last used.
        instance_uid: Option<InstanceUid>,
        /// `true` when the agent announced it with `agent_disconnect`.
        by_agent: bool,
    },
}
