//! The health gate: after a start, wait until the collector is healthy, has crashed, or the
//! deadline passes.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::probe::{HttpProbe, ProbeResult};
use crate::process::RunState;

/// Default time between checks while the gate waits.
pub const DEFAULT_GATE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Outcome of [`HealthGate::wait_healthy`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateOutcome {
    /// Alive for the liveness window and (if configured) the health endpoint answered 2xx.
    Healthy {
        /// Time from the process start to the verdict.
        after: Duration,
    },
    /// The health endpoint answered, but never 2xx, until the deadline.
    Unhealthy {
        /// The last answer, e.g. `health endpoint http://... answered 503: {...}`.
        reason: String,
    },
    /// The process exited before it was judged healthy.
    Crashed {
        /// How it exited.
        status: ExitStatus,
        /// How long after its start.
        after: Duration,
    },
    /// The deadline passed without a verdict (e.g. the endpoint never answered).
    Timeout {
        /// Time waited since the process started.
        waited: Duration,
        /// The last probe error, if any.
        last_error: Option<String>,
    },
    /// No process was started.
    NotStarted,
}

impl GateOutcome {
    /// Whether the gate passed.
    pub fn is_healthy(&self) -> bool {
        matches!(self, GateOutcome::Healthy { .. })
    }
}

impl std::fmt::Display for GateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateOutcome::Healthy { after } => write!(f, "healthy after {after:?}"),
            GateOutcome::Unhealthy { reason } => write!(f, "unhealthy: {reason}"),
            GateOutcome::Crashed { status, after } => {
                write!(f, "collector exited ({status}) {after:?} after start")
            }
            GateOutcome::Timeout { waited, last_error } => {
                write!(f, "not healthy within {waited:?}")?;
                match last_error {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            GateOutcome::NotStarted => f.write_str("collector was not started"),
        }
    }
}

/// Decides whether a freshly started collector is healthy. See [`GateOutcome`].
///
/// ```no_run
/// # async fn demo(manager: &opamp_supervisor::process::ProcessManager) -> Result<(), opamp_supervisor::health::HealthError> {
/// use std::time::Duration;
/// use opamp_supervisor::health::{HealthGate, HttpProbe};
/// let probe = HttpProbe::new("http://127.0.0.1:13133/", Duration::from_secs(2))?;
/// let gate = HealthGate::new(Some(probe), Duration::from_secs(2), manager.watch());
/// let outcome = gate.wait_healthy(tokio::time::Instant::now() + Duration::from_secs(30)).await;
/// println!("{outcome}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HealthGate {
    probe: Option<HttpProbe>,
    liveness_window: Duration,
    poll_interval: Duration,
    process: watch::Receiver<RunState>,
}

impl HealthGate {
    /// A gate for the process followed by `process` (from
    /// [`ProcessManager::watch`](crate::process::ProcessManager::watch)). Without a probe, only
    /// liveness over `liveness_window` counts.
    pub fn new(
        probe: Option<HttpProbe>,
        liveness_window: Duration,
        process: watch::Receiver<RunState>,
    ) -> Self {
        HealthGate {
            probe,
            liveness_window,
            poll_interval: DEFAULT_GATE_POLL_INTERVAL,
            process,
        }
    }

    /// Changes the time between checks (default [`DEFAULT_GATE_POLL_INTERVAL`]).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Waits for a verdict on the process that is current now: healthy as soon as it has been
    /// alive for the liveness window and the latest probe is 2xx; crashed as soon as it exits;
    /// otherwise unhealthy or timeout at `deadline`.
    pub async fn wait_healthy(&self, deadline: Instant) -> GateOutcome {
        let mut process = self.process.clone();
        let (generation, started_at) = {
            let state = process.borrow_and_update();
            match state.started_at {
                Some(started) if state.generation > 0 => (state.generation, started),
                _ => return GateOutcome::NotStarted,
            }
        };
        let started_at = Instant::from_std(started_at);
        let mut last_probe: Option<ProbeResult> = None;
        let exited = async {
            process
                .wait_for(|s| s.last_exit.is_some_and(|e| e.generation >= generation))
                .await
                .ok()
                .and_then(|s| s.last_exit)
        };
        tokio::pin!(exited);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return self.verdict_at_deadline(last_probe, now - started_at);
            }
            let checked = async {
                match &self.probe {
                    Some(probe) => Some(probe.check().await),
                    None => None,
                }
            };
            tokio::select! {
                biased;
                exit = &mut exited => return crashed(exit, started_at),
                result = checked => {
                    if let Some(result) = result {
                        tracing::debug!(result = ?result, "health gate probe");
                        last_probe = Some(result);
                    }
                }
            }
            let alive_for = Instant::now().saturating_duration_since(started_at);
            let probe_ok =
                self.probe.is_none() || last_probe.as_ref().is_some_and(ProbeResult::is_healthy);
            if probe_ok && alive_for >= self.liveness_window {
                return GateOutcome::Healthy { after: alive_for };
            }
            // Sleep until the next check, or only until the liveness window closes when the
            // probe already passed, so a healthy start is not delayed by a whole poll interval.
            let mut wake = Instant::now() + self.poll_interval;
            if probe_ok {
                wake = wake.min(started_at + self.liveness_window);
            }
            tokio::select! {
                biased;
                exit = &mut exited => return crashed(exit, started_at),
                () = tokio::time::sleep_until(wake.min(deadline)) => {}
            }
        }
    }

    fn verdict_at_deadline(
        &self,
        last_probe: Option<ProbeResult>,
        waited: Duration,
    ) -> GateOutcome {
        let url = self.probe.as_ref().map_or("", HttpProbe::url);
        match last_probe {
            Some(result @ ProbeResult::Unhealthy { .. }) => GateOutcome::Unhealthy {
                reason: result.describe(url),
            },
            Some(result @ ProbeResult::Unreachable { .. }) => GateOutcome::Timeout {
                waited,
                last_error: Some(result.describe(url)),
            },
            _ => GateOutcome::Timeout {
                waited,
                last_error: None,
            },
        }
    }
}

fn crashed(exit: Option<crate::process::ExitRecord>, started_at: Instant) -> GateOutcome {
    match exit {
        Some(record) => GateOutcome::Crashed {
            status: record.status,
            after: Instant::now().saturating_duration_since(started_at),
        },
        // The manager went away: nothing is running any more.
        None => GateOutcome::NotStarted,
    }
}
