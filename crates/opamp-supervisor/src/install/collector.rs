//! The seam between the installer and whatever runs the collector process.

use std::fmt;
use std::future::Future;
use std::path::Path;

use tokio::time::Instant;

/// What the installer needs from the process manager: stop the collector, start a given
/// executable, and tell whether it became healthy in time.
///
/// Implementations must make `stop` succeed when nothing runs (recovery calls it blindly) and
/// `start` replace the executable path used by later restarts.
pub trait Collector: Send {
    /// Stops the running collector (gracefully, then forcefully). Succeeds if none runs.
    fn stop(&mut self) -> impl Future<Output = Result<(), CollectorError>> + Send;

    /// Starts `executable` as the collector.
    fn start(
        &mut self,
        executable: &Path,
    ) -> impl Future<Output = Result<(), CollectorError>> + Send;

    /// Waits until the started collector is healthy, fails, or `deadline` passes.
    fn wait_healthy(&mut self, deadline: Instant) -> impl Future<Output = HealthOutcome> + Send;
}

/// Result of a health gate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthOutcome {
    /// The collector passed its health checks.
    Healthy,
    /// It runs but reports unhealthy.
    Unhealthy {
        /// What the health check saw.
        reason: String,
    },
    /// The process exited.
    Exited {
        /// Exit status or signal, as text.
        status: String,
    },
    /// Neither healthy nor failed before the deadline.
    TimedOut,
}

impl HealthOutcome {
    /// Whether this outcome passes the gate.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

impl fmt::Display for HealthOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Healthy => f.write_str("healthy"),
            Self::Unhealthy { reason } => write!(f, "unhealthy: {reason}"),
            Self::Exited { status } => write!(f, "exited ({status})"),
            Self::TimedOut => f.write_str("not healthy before the deadline"),
        }
    }
}

/// A [`Collector`] operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CollectorError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CollectorError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
