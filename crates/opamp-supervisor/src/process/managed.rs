//! The real collector behind the installer's [`Collector`] seam: a [`ProcessManager`] plus a
//! [`HealthGate`] built from the supervisor config.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::{AgentCommand, PidFile, ProcessManager, RestartPolicy, RunState};

/// Name of the collector pid file inside `agent.storage_dir`.
pub const PID_FILE_NAME: &str = "collector.pid";
use crate::config::{HealthConfig, SupervisorConfig};
use crate::health::{GateOutcome, HealthError, HealthGate, HttpProbe};
use crate::install::{Collector, CollectorError, HealthOutcome};

/// Runs the configured collector and judges its health; what the installer drives during a
/// swap and a rollback.
///
/// ```no_run
/// # async fn demo(config: &opamp_supervisor::config::SupervisorConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use opamp_supervisor::install::Collector;
/// use opamp_supervisor::process::ManagedCollector;
/// let mut collector = ManagedCollector::from_config(config)?;
/// collector.start(&config.agent.executable).await?;
/// let deadline = tokio::time::Instant::now() + config.health.start_timeout;
/// println!("{}", collector.wait_healthy(deadline).await);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ManagedCollector {
    manager: ProcessManager,
    probe: Option<HttpProbe>,
    liveness_window: Duration,
}

impl ManagedCollector {
    /// A collector run with `agent.args` (and `--config <storage_dir>/collector-config.yaml`
    /// when remote configs are on) and `agent.env`, stopped with `stop_timeout`,
    /// restarted per `restart_backoff`, gated per `health`, and recorded in
    /// `<storage_dir>/collector.pid` so a collector left by a killed supervisor is stopped
    /// before another starts. The storage directory must exist (the lock creates it).
    ///
    /// # Errors
    /// [`HealthError`] when the health check's HTTP client cannot be built.
    pub fn from_config(config: &SupervisorConfig) -> Result<Self, HealthError> {
        let name = config
            .agent
            .package_name
            .clone()
            .or_else(|| config.agent.archive_executable_name())
            .unwrap_or_else(|| "collector".to_owned());
        let mut args = config.agent.args.clone();
        if config.remote_config.mode.is_on() {
            // The supervisor owns this file (see `crate::remote_config`).
            let live = config
                .agent
                .storage_dir
                .join(crate::remote_config::LIVE_CONFIG_FILE);
            args.extend(["--config".to_owned(), live.display().to_string()]);
        }
        let command = AgentCommand {
            name,
            args,
            env: config.agent.env.clone(),
            current_dir: None,
        };
        let manager = ProcessManager::new(
            command,
            config.stop_timeout,
            RestartPolicy::from(&config.restart_backoff),
        )
        .with_pid_file(PidFile::new(config.agent.storage_dir.join(PID_FILE_NAME)));
        Self::new(manager, &config.health)
    }

    /// Wraps an existing manager, gating with `health`.
    ///
    /// # Errors
    /// [`HealthError`] when the health check's HTTP client cannot be built.
    pub fn new(manager: ProcessManager, health: &HealthConfig) -> Result<Self, HealthError> {
        Ok(ManagedCollector {
            manager,
            probe: health.probe()?,
            liveness_window: health.liveness_window,
        })
    }

    /// The process manager (for events, pid and state).
    pub fn manager(&self) -> &ProcessManager {
        &self.manager
    }

    /// The health check used by the gate, if an HTTP URL is configured.
    pub fn probe(&self) -> Option<&HttpProbe> {
        self.probe.as_ref()
    }

    /// Follows the process state (for a [`HealthMonitor`](crate::health::HealthMonitor)).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<RunState> {
        self.manager.watch()
    }

    /// The last non-empty stderr line of the collector that exited last, waiting up to `wait`
    /// for its output to drain (the exit can be seen before the pipe's last line is read).
    pub async fn last_exit_stderr_line(&self, wait: Duration) -> Option<String> {
        let pid = self.manager.watch().borrow().last_exit.map(|e| e.pid)?;
        let mut tail = self.manager.stderr_tail();
        let _ = tokio::time::timeout(
            wait,
            tail.wait_for(|l| l.as_ref().is_some_and(|l| l.pid == pid)),
        )
        .await;
        let line = tail.borrow().clone();
        line.filter(|l| l.pid == pid).map(|l| l.line)
    }

    /// The last non-empty stderr line of the collector running now, if it wrote one.
    pub fn running_stderr_line(&self) -> Option<String> {
        let pid = self.manager.watch().borrow().pid?;
        let line = self.manager.stderr_tail().borrow().clone();
        line.filter(|l| l.pid == pid).map(|l| l.line)
    }

    /// The gate's verdict with full detail (the [`Collector`] impl maps it to
    /// [`HealthOutcome`]).
    pub async fn gate(&self, deadline: Instant) -> GateOutcome {
        HealthGate::new(
            self.probe.clone(),
            self.liveness_window,
            self.manager.watch(),
        )
        .wait_healthy(deadline)
        .await
    }
}

impl Collector for ManagedCollector {
    async fn stop(&mut self) -> Result<(), CollectorError> {
        self.manager
            .stop()
            .await
            .map(drop)
            .map_err(|e| CollectorError::with_source("stopping the collector failed", e))
    }

    async fn start(&mut self, executable: &Path) -> Result<(), CollectorError> {
        // A collector left by a killed supervisor would hold the ports the new one needs.
        self.manager
            .stop_leftover()
            .await
            .map_err(|e| CollectorError::with_source(e.to_string(), e))?;
        self.manager
            .start(executable)
            .map(drop)
            .map_err(|e| CollectorError::with_source(e.to_string(), e))
    }

    async fn wait_healthy(&mut self, deadline: Instant) -> HealthOutcome {
        match self.gate(deadline).await {
            GateOutcome::Healthy { .. } => HealthOutcome::Healthy,
            GateOutcome::Unhealthy { reason } => HealthOutcome::Unhealthy { reason },
            GateOutcome::Crashed { status, after } => HealthOutcome::Exited {
                status: format!("{status}, {after:.1?} after start"),
            },
            GateOutcome::NotStarted => HealthOutcome::Exited {
                status: "collector not running".to_owned(),
            },
            GateOutcome::Timeout { last_error, .. } => match last_error {
                // Carry the probe's last error: "timed out" alone does not say why.
                Some(reason) => HealthOutcome::Unhealthy { reason },
                None => HealthOutcome::TimedOut,
            },
        }
    }
}
