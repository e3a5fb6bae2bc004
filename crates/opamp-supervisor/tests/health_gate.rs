//! Health gate outcomes and the periodic `ComponentHealth` monitor against real collectors.

mod collector_support;

use std::time::Duration;

use collector_support::{Behaviour, Variant, collector_bin, free_port, health_url, variant_in};
use opamp_proto::v1::ComponentHealth;
use opamp_supervisor::config::SupervisorConfig;
use opamp_supervisor::health::{
    GateOutcome, HealthGate, HealthMonitor, HttpProbe, STATUS_CRASHED, STATUS_HEALTHY,
    STATUS_STOPPED, STATUS_UNHEALTHY,
};
use opamp_supervisor::process::{AgentCommand, ProcessManager, RestartPolicy};
use opamp_test_collector::{EXIT_CODE_CRASH_LATER, EXIT_CODE_CRASH_ON_START};
use tokio::sync::watch;
use tokio::time::Instant;

const LIVENESS: Duration = Duration::from_millis(500);
const START_TIMEOUT: Duration = Duration::from_secs(4);

struct Fixture {
    manager: ProcessManager,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Starts a collector variant with `behaviour` serving on a fresh port.
fn start(behaviour: Behaviour) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = variant_in(
        dir.path(),
        "otelcol",
        &Variant::healthy("1.0.0").with_behaviour(behaviour),
    );
    let port = free_port();
    let mut manager = ProcessManager::new(
        AgentCommand::new("gate-test")
            .arg("--health-port")
            .arg(port.to_string()),
        Duration::from_secs(5),
        RestartPolicy::disabled(),
    );
    manager.start(&exe).expect("start collector");
    Fixture {
        manager,
        port,
        _dir: dir,
    }
}

fn gate_for(fixture: &Fixture, probe_port: u16) -> HealthGate {
    let probe = HttpProbe::new(health_url(probe_port), Duration::from_secs(1)).expect("probe");
    HealthGate::new(Some(probe), LIVENESS, fixture.manager.watch())
        .with_poll_interval(Duration::from_millis(50))
}

async fn gate_outcome(behaviour: Behaviour) -> (GateOutcome, Duration) {
    let mut fixture = start(behaviour);
    let gate = gate_for(&fixture, fixture.port);
    let began = Instant::now();
    let outcome = gate.wait_healthy(began + START_TIMEOUT).await;
    let took = began.elapsed();
    fixture.manager.stop().await.expect("stop collector");
    (outcome, took)
}

#[tokio::test]
async fn healthy_collector_passes_after_the_liveness_window() {
    let (outcome, took) = gate_outcome(Behaviour::default()).await;
    match outcome {
        GateOutcome::Healthy { after } => {
            assert!(
                after >= LIVENESS,
                "healthy after {after:?}, inside the liveness window"
            );
            assert!(
                took < START_TIMEOUT,
                "a healthy verdict comes before the deadline"
            );
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
}

#[tokio::test]
async fn crash_on_start_is_reported_with_its_exit_status() {
    let (outcome, took) = gate_outcome(Behaviour {
        crash_on_start: true,
        ..Behaviour::default()
    })
    .await;
    match outcome {
        GateOutcome::Crashed { status, .. } => {
            assert_eq!(status.code(), Some(EXIT_CODE_CRASH_ON_START))
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
    assert!(
        took < START_TIMEOUT,
        "a crash must end the gate early, took {took:?}"
    );
}

#[tokio::test]
async fn crash_inside_the_liveness_window_fails_the_gate_even_though_http_was_healthy() {
    let (outcome, _) = gate_outcome(Behaviour {
        crash_after_ms: Some(300),
        ..Behaviour::default()
    })
    .await;
    match outcome {
        GateOutcome::Crashed { status, after } => {
            assert_eq!(status.code(), Some(EXIT_CODE_CRASH_LATER));
            assert!(after >= Duration::from_millis(300));
            assert!(
                outcome_text(&GateOutcome::Crashed { status, after }).contains("exit status: 4")
            );
        }
        other => panic!("expected Crashed, got {other:?}"),
    }
}

#[tokio::test]
async fn unhealthy_collector_fails_at_the_deadline_with_the_endpoint_answer() {
    let (outcome, took) = gate_outcome(Behaviour {
        unhealthy_after_ms: Some(0),
        ..Behaviour::default()
    })
    .await;
    match &outcome {
        GateOutcome::Unhealthy { reason } => {
            assert!(
                reason.contains("503") && reason.contains("Server not available"),
                "{reason}"
            );
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert!(
        took >= START_TIMEOUT,
        "unhealthy is only decided at the deadline, took {took:?}"
    );
}

#[tokio::test]
async fn endpoint_that_never_answers_times_out_with_the_connection_error() {
    let mut fixture = start(Behaviour::default());
    let nobody = free_port();
    let gate = gate_for(&fixture, nobody);
    let outcome = gate
        .wait_healthy(Instant::now() + Duration::from_secs(2))
        .await;
    match &outcome {
        GateOutcome::Timeout {
            last_error: Some(e),
            waited,
        } => {
            assert!(
                e.contains("unreachable") && e.contains(&nobody.to_string()),
                "{e}"
            );
            assert!(*waited >= Duration::from_secs(2));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    fixture.manager.stop().await.unwrap();
}

#[tokio::test]
async fn liveness_only_gate_needs_no_endpoint() {
    let mut fixture = start(Behaviour::default());
    let gate = HealthGate::new(None, LIVENESS, fixture.manager.watch());
    let outcome = gate.wait_healthy(Instant::now() + START_TIMEOUT).await;
    assert!(
        matches!(outcome, GateOutcome::Healthy { after } if after >= LIVENESS),
        "{outcome:?}"
    );
    fixture.manager.stop().await.unwrap();
}

#[tokio::test]
async fn gate_without_a_started_process_says_so() {
    let manager = ProcessManager::new(
        AgentCommand::new("idle"),
        Duration::from_secs(1),
        RestartPolicy::disabled(),
    );
    let gate = HealthGate::new(None, LIVENESS, manager.watch());
    assert_eq!(
        gate.wait_healthy(Instant::now() + START_TIMEOUT).await,
        GateOutcome::NotStarted
    );
}

#[tokio::test]
async fn gate_built_from_config_uses_its_url_and_window() {
    let mut fixture = start(Behaviour::default());
    let yaml = format!(
        "server:\n  endpoint: ws://127.0.0.1:1/v1/opamp\nagent:\n  executable: {}\n  storage_dir: /tmp/x\nhealth:\n  http_url: {}\n  liveness_window: 300ms\n  start_timeout: 5s\n",
        collector_bin().display(),
        health_url(fixture.port)
    );
    let config = SupervisorConfig::from_yaml_str(&yaml, "supervisor.yaml".as_ref()).unwrap();
    let gate = config.health.gate(fixture.manager.watch()).unwrap();
    let outcome = gate
        .wait_healthy(Instant::now() + config.health.start_timeout)
        .await;
    assert!(
        matches!(outcome, GateOutcome::Healthy { after } if after >= Duration::from_millis(300)),
        "{outcome:?}"
    );
    fixture.manager.stop().await.unwrap();
}

fn outcome_text(outcome: &GateOutcome) -> String {
    outcome.to_string()
}

async fn wait_for_health(
    health: &mut watch::Receiver<ComponentHealth>,
    what: &str,
    accept: impl Fn(&ComponentHealth) -> bool,
) -> ComponentHealth {
    let waited = tokio::time::timeout(Duration::from_secs(15), health.wait_for(|h| accept(h)))
        .await
        .map(|r| r.map(|h| h.clone()));
    match waited {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => panic!("monitor ended before health became {what}"),
        Err(_) => panic!("health never became {what}; last {:?}", *health.borrow()),
    }
}

#[tokio::test]
async fn monitor_reports_healthy_unhealthy_and_crashed() {
    let mut fixture = start(Behaviour {
        unhealthy_after_ms: Some(1500),
        crash_after_ms: Some(3000),
        ..Behaviour::default()
    });
    let probe = HttpProbe::new(health_url(fixture.port), Duration::from_secs(1)).unwrap();
    let (mut health, _task) = HealthMonitor::spawn(
        Some(probe),
        fixture.manager.watch(),
        Duration::from_millis(50),
    );

    let healthy = wait_for_health(&mut health, "healthy", |h| h.healthy).await;
    assert_eq!(healthy.status, STATUS_HEALTHY);
    assert!(healthy.last_error.is_empty());
    assert!(
        healthy.start_time_unix_nano > 0
            && healthy.status_time_unix_nano >= healthy.start_time_unix_nano
    );

    let unhealthy = wait_for_health(&mut health, "unhealthy", |h| {
        h.status == STATUS_UNHEALTHY && h.last_error.contains("503")
    })
    .await;
    assert!(!unhealthy.healthy);
    assert_eq!(unhealthy.start_time_unix_nano, healthy.start_time_unix_nano);

    let crashed = wait_for_health(&mut health, "crashed", |h| h.status == STATUS_CRASHED).await;
    assert!(!crashed.healthy);
    assert!(
        crashed.last_error.contains("exit status: 4"),
        "{}",
        crashed.last_error
    );

    fixture.manager.stop().await.unwrap();
}

#[tokio::test]
async fn monitor_without_probe_follows_liveness_and_reports_stop() {
    let port = free_port();
    let mut manager = ProcessManager::new(
        AgentCommand::new("monitor-test")
            .arg("--health-port")
            .arg(port.to_string()),
        Duration::from_secs(5),
        RestartPolicy::disabled(),
    );
    let (mut health, _task) =
        HealthMonitor::spawn(None, manager.watch(), Duration::from_secs(3600));
    assert_eq!(health.borrow().status, STATUS_STOPPED);
    manager.start(collector_bin()).unwrap();
    wait_for_health(&mut health, "healthy", |h| {
        h.healthy && h.status == STATUS_HEALTHY
    })
    .await;
    manager.stop().await.unwrap();
    let stopped = wait_for_health(&mut health, "stopped", |h| h.status == STATUS_STOPPED).await;
    assert!(!stopped.healthy && stopped.last_error.is_empty());
}
