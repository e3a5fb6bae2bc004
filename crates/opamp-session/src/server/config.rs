//! Static settings of a server session.

use std::time::Duration;

use opamp_proto::{ServerCapabilities, v1};

use crate::{SessionLimits, TransportMode};

/// Settings a [`crate::ServerSession`] starts from.
///
/// ```
/// use std::time::Duration;
/// use opamp_proto::ServerCapabilities;
/// use opamp_session::ServerSessionConfig;
///
/// let mut config = ServerSessionConfig::new(
///     ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
/// );
/// config.heartbeat_interval = Some(Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerSessionConfig {
    /// What the server declares in its first message. `ACCEPTS_STATUS` is always added;
    /// offers of a kind the server does not declare are never sent.
    pub capabilities: ServerCapabilities,
    /// Heartbeat interval offered (through `OpAMPConnectionSettings`) to agents that
    /// report heartbeats. `None` offers nothing and leaves the agent's own default;
    /// `Some(Duration::ZERO)` asks the agent to disable heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// The transport this session answers on. With HTTP the session sends exactly one
    /// message per received request and never pushes.
    pub mode: TransportMode,
    /// The URL agents reach this server at (for example `wss://opamp.example/v1/opamp`),
    /// sent as `OpAMPConnectionSettings.destination_endpoint`, which the spec requires in
    /// every OpAMP connection settings offer. Without it the heartbeat interval is not
    /// offered (an offer without a destination would be invalid);
    /// [`crate::ServerEndpoint`] fills it from the connection when it is `None`.
    pub opamp_endpoint: Option<String>,
    /// Custom capabilities announced to the agent in the first message.
    pub custom_capabilities: Option<v1::CustomCapabilities>,
    /// Bounds on what the agent may send.
    pub limits: SessionLimits,
}

impl ServerSessionConfig {
    /// A WebSocket server session with the given capabilities and default limits.
    pub fn new(capabilities: ServerCapabilities) -> Self {
        Self {
            capabilities,
            heartbeat_interval: None,
            opamp_endpoint: None,
            mode: TransportMode::WebSocket,
            custom_capabilities: None,
            limits: SessionLimits::default(),
        }
    }
}

impl Default for ServerSessionConfig {
    fn default() -> Self {
        Self::new(ServerCapabilities::ACCEPTS_STATUS)
    }
}
