//! The supervisor's own metrics, served on an optional loopback endpoint
//! (`metrics_listen: 127.0.0.1:9464` in the configuration; `GET /metrics`, OpenMetrics text).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `opamp_supervisor_collector_up` | gauge (1 while the collector runs) | |
//! | `opamp_supervisor_collector_starts_total` | counter (every spawn: first start, restarts, installs) | |
//! | `opamp_supervisor_collector_crashes_total` | counter (exits nobody asked for) | |
//! | `opamp_supervisor_healthy` | gauge (1 healthy, 0 not) | |
//! | `opamp_supervisor_installs_total` | counter | `result` (`installed`, `failed`) |
//! | `opamp_supervisor_install_duration_seconds` | histogram (offer accepted to result) | `result` |
//!
//! Everything is derived from what the supervisor publishes anyway (the process manager's run
//! state, the health monitor's verdict, the package statuses it reports to the server), so
//! the install path needs no extra hooks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use opamp_proto::v1::{ComponentHealth, PackageStatusEnum, PackageStatuses};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::process::{Phase, RunState};
use crate::report::ErrorReport;

type ResultLabel = Vec<(String, String)>;

/// Install durations' bucket bounds, seconds: downloads of large archives take minutes.
const DURATION_BUCKETS: [f64; 10] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0];

/// The metrics and their registry.
#[derive(Debug)]
pub struct SupervisorMetrics {
    registry: Registry,
    up: Gauge,
    starts: Counter,
    crashes: Counter,
    healthy: Gauge,
    installs: Family<ResultLabel, Counter>,
    durations: Family<ResultLabel, Histogram>,
}

impl Default for SupervisorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SupervisorMetrics {
    /// Every metric registered, at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opamp_supervisor");
        let up = Gauge::default();
        let starts = Counter::default();
        let crashes = Counter::default();
        let healthy = Gauge::default();
        let installs = Family::<ResultLabel, Counter>::default();
        let durations = Family::<ResultLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "collector_up",
            "Whether the collector process runs",
            up.clone(),
        );
        registry.register(
            "collector_starts",
            "Collector processes spawned (first start, restarts, installs)",
            starts.clone(),
        );
        registry.register(
            "collector_crashes",
            "Collector exits the supervisor did not ask for",
            crashes.clone(),
        );
        registry.register(
            "healthy",
            "Whether the collector is healthy",
            healthy.clone(),
        );
        registry.register("installs", "Package installs by result", installs.clone());
        registry.register_with_unit(
            "install_duration",
            "Time from an offer's first progress report to its result",
            Unit::Seconds,
            durations.clone(),
        );
        // Both results exist from the start, so rates and ratios have series to work with.
        for result in ["installed", "failed"] {
            let _ = installs.get_or_create(&label(result));
        }
        SupervisorMetrics {
            registry,
            up,
            starts,
            crashes,
            healthy,
            installs,
            durations,
        }
    }

    /// OpenMetrics text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::warn!("encoding the supervisor metrics failed");
        }
        out
    }

    fn record_install(&self, result: &str, seconds: f64) {
        self.installs.get_or_create(&label(result)).inc();
        self.durations
            .get_or_create(&label(result))
            .observe(seconds);
    }
}

fn label(result: &str) -> ResultLabel {
    vec![("result".to_owned(), result.to_owned())]
}

/// What the metrics are derived from.
#[derive(Debug)]
#[non_exhaustive]
pub struct MetricsSources {
    /// The process manager's state.
    pub run_state: watch::Receiver<RunState>,
    /// The health monitor's verdict.
    pub health: watch::Receiver<ComponentHealth>,
    /// The package statuses reported to the server.
    pub statuses: watch::Receiver<PackageStatuses>,
}

/// Follows the run state: whether the collector is up, how often it started and crashed.
#[derive(Debug, Default)]
struct ProcessTracker {
    counted_generation: u64,
    counted_exit: Option<u64>,
}

impl ProcessTracker {
    fn observe(&mut self, state: &RunState, metrics: &SupervisorMetrics) {
        metrics.up.set(i64::from(state.phase == Phase::Running));
        if state.generation > self.counted_generation {
            metrics
                .starts
                .inc_by(state.generation - self.counted_generation);
            self.counted_generation = state.generation;
        }
        if let Some(exit) = state.last_exit
            && self.counted_exit != Some(exit.generation)
        {
            self.counted_exit = Some(exit.generation);
            if !exit.requested {
                metrics.crashes.inc();
            }
        }
    }
}

/// Follows the package statuses: an install starts when a package reports progress toward
/// an offered version and ends when it reports that version installed, or a failure.
#[derive(Debug, Default)]
struct InstallTracker {
    /// Package name → (offered version, when progress was first seen).
    running: HashMap<String, (String, Instant)>,
}

impl InstallTracker {
    fn observe(&mut self, statuses: &PackageStatuses, now: Instant, metrics: &SupervisorMetrics) {
        for (name, status) in &statuses.packages {
            let state = PackageStatusEnum::try_from(status.status).ok();
            let offered = &status.server_offered_version;
            match state {
                Some(
                    PackageStatusEnum::InstallPending
                    | PackageStatusEnum::Downloading
                    | PackageStatusEnum::Installing,
                ) => {
                    let known = self
                        .running
                        .get(name)
                        .is_some_and(|(version, _)| version == offered);
                    if !known {
                        self.running.insert(name.clone(), (offered.clone(), now));
                    }
                }
                Some(PackageStatusEnum::Installed) => {
                    if let Some((version, started)) = self.running.remove(name) {
                        let result = if status.agent_has_version == version {
                            "installed"
                        } else {
                            // Back on another version: the install was rolled back.
                            "failed"
                        };
                        metrics.record_install(result, (now - started).as_secs_f64());
                    }
                }
                Some(PackageStatusEnum::InstallFailed) => {
                    if let Some((_, started)) = self.running.remove(name) {
                        metrics.record_install("failed", (now - started).as_secs_f64());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Only loopback addresses are allowed: the endpoint has no authentication.
    #[error("metrics_listen {0} is not a loopback address (the endpoint has no authentication)")]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("binding the metrics endpoint to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `listen` (loopback only) and serves `GET /metrics` until `shutdown`, keeping the
/// metrics current from `sources`. Returns the bound address.
///
/// # Errors
/// [`MetricsError`] when `listen` is not loopback or cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    sources: MetricsSources,
    shutdown: CancellationToken,
) -> Result<SocketAddr, MetricsError> {
    if !listen.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(listen));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MetricsError::Bind {
        addr: listen,
        source,
    })?;
    let metrics = Arc::new(SupervisorMetrics::new());
    tokio::spawn(follow(metrics.clone(), sources, shutdown.clone()));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(error = %ErrorReport(&error), "the metrics endpoint stopped");
        }
    });
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(addr)
}

async fn follow(
    metrics: Arc<SupervisorMetrics>,
    mut sources: MetricsSources,
    shutdown: CancellationToken,
) {
    let process = Mutex::new(ProcessTracker::default());
    let installs = Mutex::new(InstallTracker::default());
    let observe_process = |state: &RunState| {
        process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(state, &metrics);
    };
    let observe_statuses = |statuses: &PackageStatuses| {
        installs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(statuses, Instant::now(), &metrics);
    };
    observe_process(&sources.run_state.borrow_and_update());
    metrics
        .healthy
        .set(i64::from(sources.health.borrow_and_update().healthy));
    observe_statuses(&sources.statuses.borrow_and_update());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = sources.run_state.changed() => {
                if changed.is_err() { return; }
                observe_process(&sources.run_state.borrow_and_update());
            }
            changed = sources.health.changed() => {
                if changed.is_err() { return; }
                metrics.healthy.set(i64::from(sources.health.borrow_and_update().healthy));
            }
            changed = sources.statuses.changed() => {
                if changed.is_err() { return; }
                observe_statuses(&sources.statuses.borrow_and_update());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opamp_proto::v1::PackageStatus;

    use super::*;

    fn statuses(state: PackageStatusEnum, offered: &str, has: &str) -> PackageStatuses {
        let mut statuses = PackageStatuses::default();
        statuses.packages.insert(
            "otelcol".to_owned(),
            PackageStatus {
                name: "otelcol".to_owned(),
                status: state as i32,
                server_offered_version: offered.to_owned(),
                agent_has_version: has.to_owned(),
                ..PackageStatus::default()
            },
        );
        statuses
    }

    #[test]
    fn installs_are_counted_and_timed_by_result() {
        let metrics = SupervisorMetrics::new();
        let mut tracker = InstallTracker::default();
        let t0 = Instant::now();
        tracker.observe(
            &statuses(PackageStatusEnum::Installed, "", "1.0.0"),
            t0,
            &metrics,
        );
        tracker.observe(
            &statuses(PackageStatusEnum::Downloading, "1.1.0", "1.0.0"),
            t0,
            &metrics,
        );
        tracker.observe(
            &statuses(PackageStatusEnum::Installing, "1.1.0", "1.0.0"),
            t0 + Duration::from_secs(1),
            &metrics,
        );
        tracker.observe(
            &statuses(PackageStatusEnum::Installed, "1.1.0", "1.1.0"),
            t0 + Duration::from_secs(3),
            &metrics,
        );
        tracker.observe(
            &statuses(PackageStatusEnum::Downloading, "1.2.0", "1.1.0"),
            t0,
            &metrics,
        );
        tracker.observe(
            &statuses(PackageStatusEnum::InstallFailed, "1.2.0", "1.1.0"),
            t0,
            &metrics,
        );
        let text = metrics.encode();
        assert!(
            text.contains("opamp_supervisor_installs_total{result=\"installed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("opamp_supervisor_installs_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "opamp_supervisor_install_duration_seconds_sum{result=\"installed\"} 3.0"
            ),
            "{text}"
        );
    }

    #[test]
    fn starts_and_unrequested_exits_are_counted_once() {
        let metrics = SupervisorMetrics::new();
        let mut tracker = ProcessTracker::default();
        let mut state = RunState {
            phase: Phase::Running,
            generation: 1,
            ..RunState::default()
        };
        tracker.observe(&state, &metrics);
        tracker.observe(&state, &metrics);
        state.phase = Phase::BackingOff;
        state.last_exit = Some(crate::process::ExitRecord {
            generation: 1,
            pid: 7,
            status: std::os::unix::process::ExitStatusExt::from_raw(256),
            requested: false,
        });
        tracker.observe(&state, &metrics);
        tracker.observe(&state, &metrics);
        state.phase = Phase::Running;
        state.generation = 2;
        tracker.observe(&state, &metrics);
        let text = metrics.encode();
        assert!(
            text.contains("opamp_supervisor_collector_starts_total 2"),
            "{text}"
        );
        assert!(
            text.contains("opamp_supervisor_collector_crashes_total 1"),
            "{text}"
        );
        assert!(text.contains("opamp_supervisor_collector_up 1"), "{text}");
    }
}
