//! The part of an agent's state that it reports and a server mirrors.

use opamp_proto::v1;

/// Everything an agent reports through status messages, one field per compressible
/// sub-message of `AgentToServer`.
///
/// The agent side keeps the current values ([`crate::AgentSession::status`]); the server
/// side rebuilds the same value by merging compressed reports
/// ([`crate::AgentState::status`]). Once the link is healthy the two are equal, which is
/// what the crate's simulation test checks.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct AgentStatus {
    /// `AgentToServer.agent_description`.
    pub description: Option<v1::AgentDescription>,
    /// `AgentToServer.health`.
    pub health: Option<v1::ComponentHealth>,
    /// `AgentToServer.effective_config`.
    pub effective_config: Option<v1::EffectiveConfig>,
    /// `AgentToServer.remote_config_status`.
    pub remote_config_status: Option<v1::RemoteConfigStatus>,
    /// `AgentToServer.package_statuses`.
    pub package_statuses: Option<v1::PackageStatuses>,
    /// `AgentToServer.custom_capabilities`.
    pub custom_capabilities: Option<v1::CustomCapabilities>,
    /// `AgentToServer.available_components`.
    pub available_components: Option<v1::AvailableComponents>,
    /// `AgentToServer.connection_settings_status`.
    pub connection_settings_status: Option<v1::ConnectionSettingsStatus>,
}
