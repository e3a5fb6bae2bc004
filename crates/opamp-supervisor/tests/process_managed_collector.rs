//! `ManagedCollector`: the installer's `Collector` seam over real processes, built from a
//! supervisor config; also measures the stop-old-to-healthy-new downtime of a swap.

mod collector_support;

use std::path::Path;
use std::time::Duration;

use collector_support::{Behaviour, Variant, free_port, health_url, variant_in};
use opamp_supervisor::config::SupervisorConfig;
use opamp_supervisor::health::HealthGate;
use opamp_supervisor::install::{Collector, HealthOutcome};
use opamp_supervisor::process::ManagedCollector;
use tokio::time::Instant;

fn config(dir: &Path, port: u16, exe: &Path) -> SupervisorConfig {
    let yaml = format!(
        "server:\n  endpoint: ws://127.0.0.1:1/v1/opamp\n\
         agent:\n  executable: {exe}\n  storage_dir: {storage}\n  args: [--health-port, \"{port}\"]\n  package_name: otelcol\n\
         health:\n  http_url: {url}\n  liveness_window: 300ms\n  start_timeout: 3s\n  health_timeout: 1s\n\
         stop_timeout: 2s\n\
         restart_backoff:\n  max_restarts: 0\n",
        exe = exe.display(),
        storage = dir.join("storage").display(),
        url = health_url(port),
    );
    std::fs::create_dir_all(dir.join("storage")).expect("storage dir");
    SupervisorConfig::from_yaml_str(&yaml, &dir.join("supervisor.yaml")).expect("valid config")
}

async fn gate(collector: &mut ManagedCollector, config: &SupervisorConfig) -> HealthOutcome {
    collector
        .wait_healthy(Instant::now() + config.health.start_timeout)
        .await
}

#[tokio::test]
async fn installer_seam_starts_gates_and_stops_real_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let good = variant_in(dir.path(), "otelcol-1", &Variant::healthy("1.0.0"));
    let crashing = variant_in(
        dir.path(),
        "otelcol-2-crash",
        &Variant::healthy("2.0.0").with_behaviour(Behaviour {
            crash_on_start: true,
            ..Behaviour::default()
        }),
    );
    let unhealthy = variant_in(
        dir.path(),
        "otelcol-3-unhealthy",
        &Variant::healthy("3.0.0").with_behaviour(Behaviour {
            unhealthy_after_ms: Some(0),
            ..Behaviour::default()
        }),
    );
    let config = config(dir.path(), port, &good);
    let mut collector = ManagedCollector::from_config(&config).unwrap();
    assert_eq!(collector.manager().agent_name(), "otelcol");

    // Stopping with nothing running succeeds (recovery calls it blindly).
    collector.stop().await.unwrap();

    collector.start(&good).await.unwrap();
    assert_eq!(gate(&mut collector, &config).await, HealthOutcome::Healthy);
    collector.stop().await.unwrap();
    assert_eq!(collector.manager().pid(), None);

    collector.start(&crashing).await.unwrap();
    match gate(&mut collector, &config).await {
        HealthOutcome::Exited { status } => assert!(status.contains("exit status: 3"), "{status}"),
        other => panic!("expected Exited, got {other:?}"),
    }
    collector.stop().await.unwrap();

    collector.start(&unhealthy).await.unwrap();
    match gate(&mut collector, &config).await {
        HealthOutcome::Unhealthy { reason } => assert!(reason.contains("503"), "{reason}"),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    collector.stop().await.unwrap();

    let err = collector
        .start(&dir.path().join("missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Downtime of a swap as the installer performs it: stop the old collector (SIGTERM), start
/// the new one, pass the health gate. Prints the numbers; asserts only a generous bound.
#[tokio::test]
async fn swap_downtime_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let old = variant_in(dir.path(), "otelcol-old", &Variant::healthy("1.0.0"));
    let new = variant_in(dir.path(), "otelcol-new", &Variant::healthy("2.0.0"));
    let config = config(dir.path(), port, &old);
    let mut collector = ManagedCollector::from_config(&config).unwrap();
    collector.start(&old).await.unwrap();
    assert_eq!(gate(&mut collector, &config).await, HealthOutcome::Healthy);

    let mut samples = Vec::new();
    for round in 0..5 {
        let next = if round % 2 == 0 { &new } else { &old };
        let began = Instant::now();
        collector.stop().await.unwrap();
        let stopped = began.elapsed();
        collector.start(next).await.unwrap();
        // First 2xx from the new collector: when it serves again.
        let first_answer = HealthGate::new(
            collector.probe().cloned(),
            Duration::from_millis(1),
            collector.watch(),
        )
        .with_poll_interval(Duration::from_millis(2))
        .wait_healthy(Instant::now() + Duration::from_secs(3))
        .await;
        assert!(first_answer.is_healthy(), "{first_answer}");
        let serving = began.elapsed();
        assert_eq!(gate(&mut collector, &config).await, HealthOutcome::Healthy);
        let total = began.elapsed();
        samples.push((stopped, serving, total));
    }
    collector.stop().await.unwrap();
    let totals: Vec<_> = samples.iter().map(|s| s.2).collect();
    for (stopped, serving, total) in &samples {
        eprintln!(
            "swap: old stopped after {stopped:?}, new serving after {serving:?}, gate passed after {total:?} (liveness window {:?})",
            config.health.liveness_window
        );
    }
    for total in totals {
        assert!(total >= config.health.liveness_window);
        assert!(total < Duration::from_secs(3), "swap took {total:?}");
    }
}
