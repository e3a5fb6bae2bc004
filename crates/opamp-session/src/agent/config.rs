//! Static settings of an agent session.

use std::time::Duration;

use opamp_proto::{AgentCapabilities, InstanceUid, v1};

use crate::{SessionLimits, TransportMode};

/// Heartbeat and HTTP polling interval the spec recommends when nothing else is set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Settings an [`crate::AgentSession`] starts from.
///
/// Build it with [`AgentSessionConfig::new`] and adjust the public fields:
///
/// ```
/// use opamp_proto::{v1, AgentCapabilities, InstanceUid};
/// use opamp_session::{AgentSessionConfig, TransportMode};
///
/// let mut config =
///     AgentSessionConfig::new(InstanceUid::new_v7(), v1::AgentDescription::default());
/// config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
/// config.mode = TransportMode::HttpPolling;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentSessionConfig {
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
    /// Back-off after failed connects and HTTP requests, and `UNAVAILABLE` answers without
    /// `RetryInfo`.
    pub retry: RetryPolicy,
    /// Seed of the back-off jitter. `None` derives it from the instance uid: agents of a
    /// fleet spread differently, and one agent's run is reproducible.
    pub retry_seed: Option<u64>,
    /// Bounds on what the server may send.
    pub limits: SessionLimits,
}

impl AgentSessionConfig {
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
            retry_seed: None,
            limits: SessionLimits::default(),
        }
    }
}

/// Exponential back-off with seeded jitter, the one back-off of an agent: after failed HTTP
/// requests, `UNAVAILABLE` answers without `RetryInfo`, and failed (re)connects
/// ([`crate::AgentSession::handle_connection_failed`]).
///
/// The n-th consecutive failure waits `base = min(initial × 2^(n-1), max)`; with `jitter`
/// a random time in `[base/2, base]`, so a fleet that lost its server at the same moment
/// does not come back in the same second. The randomness comes from the session's own
/// generator, seeded from [`AgentSessionConfig::retry_seed`] (by default the instance uid), so a
/// run replays exactly. Reset by the next message from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Base wait after the first failure. Default 1 second.
    pub initial: Duration,
    /// Longest base wait. Default 60 seconds.
    pub max: Duration,
    /// Whether to spread waits over `[base/2, base]`. Default `true`.
    pub jitter: bool,
}

impl RetryPolicy {
    /// A jittered policy with the given first and longest base wait.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            jitter: true,
        }
    }

    /// The base wait before attempt number `failures + 1`, counting from one failure
    /// (the upper end of the jittered range).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// The wait after `failures` consecutive failures, with jitter when enabled: `unit`
    /// (in `[0, 1]`) picks the point in `[base/2, base]`.
    pub fn jittered_delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self.delay(failures);
        if !self.jitter {
            return base;
        }
        let half = base / 2;
        half + (base - half).mul_f64(unit.clamp(0.0, 1.0))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}
