//! Collector health: the gate after a start, and periodic `ComponentHealth` reports.
//!
//! Health is judged from two signals: process liveness (the child has been running for a
//! window without exiting) and, when `health.http_url` is configured, an HTTP GET to the
//! collector's health endpoint (the `health_check` extension) answering 2xx.
//! - [`HealthGate::wait_healthy`] decides once, after a start or a swap, with a deadline.
//! - [`HealthMonitor`] keeps checking a running collector and publishes `ComponentHealth`.

mod gate;
mod monitor;
mod probe;

pub use gate::{DEFAULT_GATE_POLL_INTERVAL, GateOutcome, HealthGate};
pub use monitor::{
    HealthMonitor, STATUS_CRASHED, STATUS_HEALTHY, STATUS_STOPPED, STATUS_UNHEALTHY, assess,
};
pub use probe::{HttpProbe, ProbeResult};

use crate::config::HealthConfig;
use crate::process::RunState;

/// Errors setting up health checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The HTTP client for the health URL could not be built.
    #[error("cannot build HTTP client for health URL {url}")]
    Client {
        /// The health URL.
        url: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
}

impl HealthConfig {
    /// The HTTP probe for `http_url`, if configured, with `health_timeout` per request.
    ///
    /// # Errors
    /// [`HealthError::Client`] when the HTTP client cannot be built.
    pub fn probe(&self) -> Result<Option<HttpProbe>, HealthError> {
        self.http_url
            .as_ref()
            .map(|url| HttpProbe::new(url.clone(), self.health_timeout))
            .transpose()
    }

    /// A health gate for the process followed by `process`, using this config's probe and
    /// liveness window.
    ///
    /// # Errors
    /// [`HealthError::Client`] when the HTTP client cannot be built.
    pub fn gate(
        &self,
        process: tokio::sync::watch::Receiver<RunState>,
    ) -> Result<HealthGate, HealthError> {
        Ok(HealthGate::new(
            self.probe()?,
            self.liveness_window,
            process,
        ))
    }
}
