//! Periodic health of a running collector, as the OpAMP `ComponentHealth` message.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opamp_proto::v1::ComponentHealth;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::probe::{HttpProbe, ProbeResult};
use crate::process::RunState;

/// `status` while the collector runs and passes its checks.
pub const STATUS_HEALTHY: &str = "healthy";
/// `status` while the collector runs but fails its health check.
pub const STATUS_UNHEALTHY: &str = "unhealthy";
/// `status` after the collector exited on its own (crash), including while a restart waits.
pub const STATUS_CRASHED: &str = "crashed";
/// `status` after the supervisor stopped the collector, or before the first start.
pub const STATUS_STOPPED: &str = "stopped";

/// Checks the collector every `interval` and whenever its process state changes, and
/// publishes a [`ComponentHealth`] on a watch channel. A new value is published only when
/// `healthy`, `status` or `last_error` change; `status_time_unix_nano` is the time of that
/// change, so the session can send health only when it means something new.
///
/// ```no_run
/// # async fn demo(manager: &opamp_supervisor::process::ProcessManager) {
/// use std::time::Duration;
/// use opamp_supervisor::health::HealthMonitor;
/// let (mut health, _task) = HealthMonitor::spawn(None, manager.watch(), Duration::from_secs(10));
/// while health.changed().await.is_ok() {
///     println!("health now {:?}", *health.borrow());
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct HealthMonitor;

impl HealthMonitor {
    /// Starts the monitor task. It ends when the process manager is dropped.
    pub fn spawn(
        probe: Option<HttpProbe>,
        process: watch::Receiver<RunState>,
        interval: Duration,
    ) -> (watch::Receiver<ComponentHealth>, JoinHandle<()>) {
        Self::spawn_with_refresh(probe, process, interval, Arc::new(Notify::new()))
    }

    /// Like [`HealthMonitor::spawn`], and `refresh.notify_one()` makes the monitor check
    /// again at once instead of at its next tick. The supervisor uses it right after an
    /// install passed its health gate, so it never reports `Installed` next to the
    /// "stopped" health it saw during the swap.
    pub fn spawn_with_refresh(
        probe: Option<HttpProbe>,
        mut process: watch::Receiver<RunState>,
        interval: Duration,
        refresh: Arc<Notify>,
    ) -> (watch::Receiver<ComponentHealth>, JoinHandle<()>) {
        let initial = assess(&process.borrow_and_update(), None, probe.as_ref());
        let (tx, rx) = watch::channel(initial);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = refresh.notified() => {}
                    changed = process.changed() => if changed.is_err() { break },
                }
                let state = process.borrow_and_update().clone();
                let probed = match (&probe, state.pid) {
                    (Some(p), Some(_)) => Some(p.check().await),
                    _ => None,
                };
                let next = assess(&state, probed.as_ref(), probe.as_ref());
                tx.send_if_modified(|current| {
                    let changed = current.healthy != next.healthy
                        || current.status != next.status
                        || current.last_error != next.last_error
                        || current.start_time_unix_nano != next.start_time_unix_nano;
                    if changed {
                        *current = next;
                    }
                    changed
                });
            }
        });
        (rx, task)
    }
}

/// Health for one observation: the process state and, if it runs and a probe is configured,
/// the probe's result (`None` before the first probe).
pub fn assess(
    state: &RunState,
    probed: Option<&ProbeResult>,
    probe: Option<&HttpProbe>,
) -> ComponentHealth {
    let now = SystemTime::now();
    let mut health = ComponentHealth {
        status_time_unix_nano: unix_nanos(now),
        ..ComponentHealth::default()
    };
    match state.pid {
        Some(_) => {
            health.start_time_unix_nano = state.started_at_wall.map_or(0, unix_nanos);
            match (probe, probed) {
                (None, _) => {
                    health.healthy = true;
                    health.status = STATUS_HEALTHY.into();
                }
                (Some(_), Some(result)) if result.is_healthy() => {
                    health.healthy = true;
                    health.status = STATUS_HEALTHY.into();
                }
                (Some(p), Some(result)) => {
                    health.status = STATUS_UNHEALTHY.into();
                    health.last_error = result.describe(p.url());
                }
                (Some(_), None) => {
                    health.status = STATUS_UNHEALTHY.into();
                    health.last_error = "not checked yet".into();
                }
            }
        }
        None => match state.last_exit {
            Some(exit) if !exit.requested => {
                health.status = STATUS_CRASHED.into();
                health.last_error = format!("collector (pid {}) exited: {}", exit.pid, exit.status);
            }
            _ => health.status = STATUS_STOPPED.into(),
        },
    }
    health
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
