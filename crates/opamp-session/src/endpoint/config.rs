//! Static settings of a [`crate::ServerEndpoint`].

use std::time::Duration;

use crate::{DEFAULT_HEARTBEAT_INTERVAL, ServerSessionConfig};

/// Settings a [`crate::ServerEndpoint`] starts from.
///
/// An agent is considered gone when nothing arrived from it for
/// `missed_intervals × interval + idle_grace`, where the interval is the heartbeat
/// interval the server offers ([`ServerSessionConfig::heartbeat_interval`]) when the agent
/// reports heartbeats, and [`fallback_interval`](Self::fallback_interval) otherwise. An
/// agent on WebSocket without heartbeats has no idle deadline: it is connected as long
/// as its connection is open (the transport detects dead sockets, for example with pings).
///
/// ```
/// use std::time::Duration;
/// use opamp_session::{EndpointConfig, ServerSessionConfig};
///
/// let mut session = ServerSessionConfig::default();
/// session.heartbeat_interval = Some(Duration::from_secs(120));
/// let config = EndpointConfig::new(session);
/// // An HTTP agent polling every 2 minutes may be silent for 5 minutes and 5 s.
/// assert_eq!(config.idle_bound(Duration::from_secs(120)), Duration::from_secs(305));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Template of every agent's session; the endpoint sets `mode` per connection and
    /// `opamp_endpoint` from the connection when the template leaves it `None`.
    pub session: ServerSessionConfig,
    /// How many intervals an agent may miss before it is considered gone. Default 2.5:
    /// one lost heartbeat never disconnects an agent, two in a row plus a late third do.
    pub missed_intervals: f64,
    /// Added to the bound for network and scheduling delay. Default 5 s.
    pub idle_grace: Duration,
    /// The interval assumed for agents whose interval the server did not set: HTTP agents
    /// poll on it. Default 30 s, the spec's default heartbeat.
    pub fallback_interval: Duration,
    /// Agents disconnected for longer than this are forgotten (their session and state
    /// dropped), so churning agents do not grow the endpoint without bound. `None` keeps
    /// them. Default one hour.
    pub forget_after: Option<Duration>,
}

impl EndpointConfig {
    /// Defaults around the given session template.
    pub fn new(session: ServerSessionConfig) -> Self {
        Self {
            session,
            missed_intervals: 2.5,
            idle_grace: Duration::from_secs(5),
            fallback_interval: DEFAULT_HEARTBEAT_INTERVAL,
            forget_after: Some(Duration::from_secs(3600)),
        }
    }

    /// How long an agent with this heartbeat or poll interval may stay silent.
    pub fn idle_bound(&self, interval: Duration) -> Duration {
        let seconds = interval.as_secs_f64() * self.missed_intervals.max(1.0);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(Duration::MAX)
            .saturating_add(self.idle_grace)
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self::new(ServerSessionConfig::default())
    }
}
