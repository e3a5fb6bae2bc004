//! Static settings of an agent session.

use std::time::Duration;

use opamp_proto::{AgentCapabilities, InstanceUid, v1};

use crate::{SessionLimits, TransportMode};

/// Heartbeat and HTTP polling interval the spec recommends when nothing else is set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Settings an [`crate::AgentSession`] starts from.
///
/// Build it with [`AgentConfig::new`] and adjust the public fields:
///
/// ```
/// use opamp_proto::{v1, AgentCapabilities, InstanceUid};
/// use opamp_session::{AgentConfig, TransportMode};
///
/// let mut config = AgentConfig::new(InstanceUid::new_v7(), v1::AgentDescription::default());
/// config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
/// config.mode = TransportMode::HttpPolling;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The agent's instance uid until the server assigns another one.
    pub instance_uid: InstanceUid,
    /// What the agent declares it can do. `REPORTS_STATUS` is always added, and bits the
    /// protocol does not define are never sent. Offers for capabilities not declared here
    /// are refused.
    pub capabilities: AgentCapabilities,
    /// The agent description sent in every full report.
    pub description: v1::AgentDescription,
    /// Heartbeat interval (WebSocket, with `REPORTS_HEARTBEAT`) and polling interval
    /// (HTTP). `None` disables WebSocket heartbeats; an HTTP agent then still polls every
    /// [`DEFAULT_HEARTBEAT_INTERVAL`], because HTTP gives the server no other way to reach
    /// it. The server may replace it through `OpAMPConnectionSettings`.
    pub heartbeat_interval: Option<Duration>,
    /// Which transport carries the messages.
    pub mode: TransportMode,
    /// Ask the server to assign an instance uid (`AgentToServerFlags::REQUEST_INSTANCE_UID`)
    /// until it does.
    pub request_instance_uid: bool,
    /// Back-off after a failed HTTP request or an `UNAVAILABLE` answer without `RetryInfo`.
    pub retry: RetryPolicy,
    /// Bounds on what the server may send.
    pub limits: SessionLimits,
}

impl AgentConfig {
    /// A WebSocket agent that reports status and heartbeats every 30 seconds.
    pub fn new(instance_uid: InstanceUid, description: v1::AgentDescription) -> Self {
        Self {
            instance_uid,
            capabilities: AgentCapabilities::REPORTS_STATUS | AgentCapabilities::REPORTS_HEARTBEAT,
            description,
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
            mode: TransportMode::WebSocket,
            request_instance_uid: false,
            retry: RetryPolicy::default(),
            limits: SessionLimits::default(),
        }
    }
}

/// Deterministic exponential back-off: `initial`, doubled after each further failure, at
/// most `max`. Reset by the next successful exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Wait after the first failure. Default 1 second.
    pub initial: Duration,
    /// Longest wait. Default 60 seconds.
    pub max: Duration,
}

impl RetryPolicy {
    /// A policy with the given first and longest wait.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// Wait before attempt number `failures + 1`, counting from one failure.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}
