//! The process manager against the real test collector: start, stop, SIGKILL escalation,
//! crash restarts with back-off, output capture.

mod collector_support;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use collector_support::{
    Behaviour, Variant, collector_bin, free_port, health_url, process_exists, process_running,
    variant_in,
};
use opamp_supervisor::health::{HealthGate, HttpProbe};
use opamp_supervisor::process::{
    AgentCommand, Phase, ProcessError, ProcessEvent, ProcessManager, RestartPolicy,
};
use opamp_test_collector::{EXIT_CODE_CRASH_LATER, EXIT_CODE_CRASH_ON_START};
use tokio::sync::broadcast;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn collector_command(port: u16) -> AgentCommand {
    AgentCommand::new("test-collector")
        .arg("--health-port")
        .arg(port.to_string())
}

/// Waits until the collector answers its health endpoint, i.e. it has installed its signal
/// handlers and is serving.
async fn wait_serving(manager: &ProcessManager, port: u16) {
    let probe = HttpProbe::new(health_url(port), Duration::from_secs(2)).expect("probe");
    let gate = HealthGate::new(Some(probe), Duration::from_millis(1), manager.watch())
        .with_poll_interval(Duration::from_millis(20));
    let outcome = gate
        .wait_healthy(tokio::time::Instant::now() + Duration::from_secs(15))
        .await;
    assert!(outcome.is_healthy(), "collector did not come up: {outcome}");
}

async fn next_event(events: &mut broadcast::Receiver<ProcessEvent>) -> ProcessEvent {
    tokio::time::timeout(TEST_TIMEOUT, events.recv())
        .await
        .expect("event within the test timeout")
        .expect("event channel open")
}

#[tokio::test]
async fn start_then_stop_gracefully() {
    let port = free_port();
    let mut manager = ProcessManager::new(
        collector_command(port),
        Duration::from_secs(10),
        RestartPolicy::disabled(),
    );
    let mut events = manager.subscribe();
    let pid = manager.start(collector_bin()).unwrap();
    assert_eq!(manager.pid(), Some(pid));
    assert!(
        matches!(next_event(&mut events).await, ProcessEvent::Started { pid: p, generation: 1, .. } if p == pid)
    );
    wait_serving(&manager, port).await;

    let err = manager.start(collector_bin()).unwrap_err();
    assert!(
        matches!(err, ProcessError::AlreadyRunning { pid: Some(p), .. } if p == pid),
        "{err}"
    );

    let started = Instant::now();
    let report = manager.stop().await.unwrap();
    assert_eq!(
        report.status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM should end it cleanly: {report:?}"
    );
    assert!(!report.killed);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(manager.pid(), None);
    assert!(!process_exists(pid), "pid {pid} still exists after stop");
    match next_event(&mut events).await {
        ProcessEvent::Stopped {
            pid: p,
            killed: false,
            status,
        } => {
            assert_eq!((p, status.code()), (pid, Some(0)));
        }
        other => panic!("expected Stopped, got {other:?}"),
    }
    let exit = manager.wait_exit().await.unwrap();
    assert!(exit.requested && exit.pid == pid);
    // Stopping again is harmless.
    assert_eq!(manager.stop().await.unwrap().status, None);
}

#[tokio::test]
async fn collector_ignoring_sigterm_is_killed_after_stop_timeout() {
    let port = free_port();
    let stop_timeout = Duration::from_millis(400);
    let mut manager = ProcessManager::new(
        collector_command(port).arg("--hang-on-sigterm"),
        stop_timeout,
        RestartPolicy::disabled(),
    );
    let pid = manager.start(collector_bin()).unwrap();
    wait_serving(&manager, port).await;
    let started = Instant::now();
    let report = manager.stop().await.unwrap();
    let took = started.elapsed();
    assert!(report.killed, "{report:?}");
    assert_eq!(
        report.status.and_then(|s| s.signal()),
        Some(9),
        "{report:?}"
    );
    assert!(
        took >= stop_timeout,
        "SIGKILL came after {took:?}, before the stop timeout"
    );
    assert!(
        took < stop_timeout + Duration::from_secs(3),
        "stop took {took:?}"
    );
    assert!(!process_exists(pid));
}

#[tokio::test]
async fn crashing_collector_is_restarted_with_growing_backoff_until_the_budget_is_spent() {
    let policy = RestartPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(300),
        max_restarts: 3,
        reset_after: Duration::from_secs(60),
    };
    let mut manager = ProcessManager::new(
        AgentCommand::new("crasher").arg("--crash-on-start"),
        Duration::from_secs(5),
        policy,
    );
    let mut events = manager.subscribe();
    manager.start(collector_bin()).unwrap();

    let mut observed_delays = Vec::new();
    let mut last_exit_at = None;
    for generation in 1..=4u64 {
        match next_event(&mut events).await {
            ProcessEvent::Started { generation: g, .. } => {
                assert_eq!(g, generation);
                if let Some((at, delay)) = last_exit_at.take() {
                    let waited = Instant::now().duration_since(at);
                    assert!(
                        waited >= delay,
                        "restart {generation} came after {waited:?}, before its back-off {delay:?}"
                    );
                }
            }
            other => panic!("expected Started #{generation}, got {other:?}"),
        }
        match next_event(&mut events).await {
            ProcessEvent::Exited {
                status,
                generation: g,
                ..
            } => {
                assert_eq!(
                    (status.code(), g),
                    (Some(EXIT_CODE_CRASH_ON_START), generation)
                );
            }
            other => panic!("expected Exited #{generation}, got {other:?}"),
        }
        match next_event(&mut events).await {
            ProcessEvent::RestartScheduled {
                delay,
                crashes_in_a_row,
            } => {
                assert_eq!(u64::from(crashes_in_a_row), generation);
                observed_delays.push(delay);
                last_exit_at = Some((Instant::now(), delay));
            }
            ProcessEvent::RestartsExhausted { crashes_in_a_row } => {
                assert_eq!((crashes_in_a_row, generation), (4, 4));
            }
            other => panic!("expected a restart decision, got {other:?}"),
        }
    }
    let ms = Duration::from_millis;
    assert_eq!(observed_delays, [ms(100), ms(200), ms(300)]);
    assert_eq!(manager.watch().borrow().phase, Phase::GaveUp);
    assert_eq!(manager.pid(), None);

    // After giving up, an explicit start works again.
    manager.start(collector_bin()).unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        ProcessEvent::Started { generation: 5, .. }
    ));
    assert_eq!(
        manager.wait_exit().await.unwrap().status.code(),
        Some(EXIT_CODE_CRASH_ON_START)
    );
    manager.stop().await.unwrap();
}

#[tokio::test]
async fn stop_during_backoff_cancels_the_restart() {
    let policy = RestartPolicy {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(30),
        max_restarts: 5,
        reset_after: Duration::from_secs(60),
    };
    let port = free_port();
    let mut manager = ProcessManager::new(
        collector_command(port).arg("--crash-after-ms").arg("200"),
        Duration::from_secs(5),
        policy,
    );
    let mut events = manager.subscribe();
    manager.start(collector_bin()).unwrap();
    let exit = manager.wait_exit().await.unwrap();
    assert_eq!(exit.status.code(), Some(EXIT_CODE_CRASH_LATER));
    assert!(!exit.requested);
    loop {
        if let ProcessEvent::RestartScheduled { .. } = next_event(&mut events).await {
            break;
        }
    }
    let started = Instant::now();
    let report = manager.stop().await.unwrap();
    assert_eq!(report.status, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waited for the back-off"
    );
    assert_eq!(manager.watch().borrow().phase, Phase::Stopped);
}

#[tokio::test]
async fn missing_executable_is_a_spawn_error_naming_it() {
    let mut manager = ProcessManager::new(
        AgentCommand::new("ghost"),
        Duration::from_secs(1),
        RestartPolicy::disabled(),
    );
    let err = manager.start("/nonexistent/otelcol".as_ref()).unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }));
    assert!(err.to_string().contains("/nonexistent/otelcol"), "{err}");
    assert!(matches!(
        manager.wait_exit().await,
        Err(ProcessError::NotStarted { .. })
    ));
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn output_goes_to_tracing_with_agent_name_and_args_and_env_reach_the_child() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // current_thread runtime: the forwarding tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let exe = variant_in(
        dir.path(),
        "otelcol",
        &Variant::healthy("1.0.0").with_behaviour(Behaviour::default()),
    );
    let port = free_port();
    let mut manager = ProcessManager::new(
        collector_command(port).env("OPAMP_TEST_COLLECTOR_VERSION", "7.7.7"),
        Duration::from_secs(5),
        RestartPolicy::disabled(),
    );
    let pid = manager.start(&exe).unwrap();
    wait_serving(&manager, port).await;
    manager.stop().await.unwrap();
    // Stop returns once the process is reaped; its pipes may still hold the last lines.
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        let stdout_line = text.lines().any(|l| {
            l.contains("agent=test-collector")
                && l.contains(&format!("pid={pid}"))
                && l.contains("stream=\"stdout\"")
                && l.contains("opamp-test-collector 7.7.7 started")
                && l.contains(&format!("127.0.0.1:{port}"))
        });
        let stderr_line = text
            .lines()
            .any(|l| l.contains("stream=\"stderr\"") && l.contains("behaviour"));
        let shutdown_line = text.lines().any(|l| l.contains("shutting down"));
        if stdout_line && stderr_line && shutdown_line {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector output not captured; logs:\n{text}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stop_also_ends_helper_processes_the_collector_started() {
    let dir = tempfile::tempdir().unwrap();
    let helper_pid_file = dir.path().join("helper.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", helper_pid_file.display());
    let mut manager = ProcessManager::new(
        AgentCommand::new("shell-collector").arg("-c").arg(script),
        Duration::from_secs(5),
        RestartPolicy::disabled(),
    );
    manager.start("/bin/sh".as_ref()).unwrap();
    let deadline = Instant::now() + TEST_TIMEOUT;
    let helper_pid: u32 = loop {
        // The shell writes the file right after forking the helper; no event to await.
        if let Some(pid) = std::fs::read_to_string(&helper_pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "helper never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(process_running(helper_pid));
    let report = manager.stop().await.unwrap();
    assert!(!report.killed, "{report:?}");
    let deadline = Instant::now() + TEST_TIMEOUT;
    while process_running(helper_pid) {
        assert!(
            Instant::now() < deadline,
            "helper {helper_pid} outlived the stopped collector"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn dropping_the_manager_stops_the_collector() {
    let port = free_port();
    let mut manager = ProcessManager::new(
        collector_command(port),
        Duration::from_secs(5),
        RestartPolicy::disabled(),
    );
    let mut events = manager.subscribe();
    let pid = manager.start(collector_bin()).unwrap();
    wait_serving(&manager, port).await;
    drop(manager);
    // The background task still publishes how the collector ended.
    loop {
        match next_event(&mut events).await {
            ProcessEvent::Stopped {
                pid: p,
                status,
                killed,
            } => {
                assert_eq!((p, status.code(), killed), (pid, Some(0), false));
                break;
            }
            ProcessEvent::Started { .. } => {}
            other => panic!("expected Stopped, got {other:?}"),
        }
    }
    assert!(!process_running(pid));
}
