//! A supervisor killed with SIGKILL leaves its collector running (nothing in the supervisor
//! gets to stop it). The next supervisor finds it through the pid file in the storage
//! directory, refuses to start a second collector next to it, and stops it.
//!
//! The first supervisor is this test binary re-executed with `LEFTOVER_*` set, running only
//! `supervisor_child`.

mod collector_support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use collector_support::{collector_bin, free_port, health_url, process_exists};
use opamp_supervisor::health::{HealthGate, HttpProbe};
use opamp_supervisor::process::{
    AgentCommand, PidFile, ProcessError, ProcessManager, RestartPolicy,
};
use tokio::time::Instant;

const STORAGE_ENV: &str = "LEFTOVER_STORAGE";
const PORT_ENV: &str = "LEFTOVER_PORT";
const EXE_ENV: &str = "LEFTOVER_EXE";
const STOP_TIMEOUT: Duration = Duration::from_millis(500);

fn manager(storage: &Path, port: u16, hang_on_sigterm: bool) -> ProcessManager {
    let mut command = AgentCommand::new("leftover-test")
        .arg("--health-port")
        .arg(port.to_string());
    if hang_on_sigterm {
        command = command.arg("--hang-on-sigterm");
    }
    ProcessManager::new(command, STOP_TIMEOUT, RestartPolicy::disabled())
        .with_pid_file(PidFile::new(storage.join("collector.pid")))
}

async fn assert_serving(manager: &ProcessManager, port: u16) {
    let probe = HttpProbe::new(health_url(port), Duration::from_secs(1)).expect("probe");
    let outcome = HealthGate::new(Some(probe), Duration::from_millis(1), manager.watch())
        .with_poll_interval(Duration::from_millis(20))
        .wait_healthy(Instant::now() + Duration::from_secs(15))
        .await;
    assert!(outcome.is_healthy(), "{outcome}");
}

#[tokio::test]
async fn supervisor_child() {
    let (Some(storage), Some(port), Some(exe)) = (
        std::env::var_os(STORAGE_ENV),
        std::env::var(PORT_ENV).ok(),
        std::env::var_os(EXE_ENV),
    ) else {
        return; // Only meaningful when re-executed by the test below.
    };
    let port: u16 = port.parse().unwrap();
    let mut manager = manager(Path::new(&storage), port, true);
    let pid = manager.start(Path::new(&exe)).unwrap();
    assert_serving(&manager, port).await;
    println!("SUPERVISING {pid}");
    // Block until killed; stdin never closes while the parent holds it.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
}

#[tokio::test]
async fn successor_stops_the_collector_a_killed_supervisor_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let storage: PathBuf = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let port = free_port();

    let mut first = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervisor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STORAGE_ENV, &storage)
        .env(PORT_ENV, port.to_string())
        .env(EXE_ENV, collector_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let collector_pid: u32 = loop {
        let line = lines
            .next()
            .expect("first supervisor reports its collector")
            .unwrap();
        // libtest may print "test supervisor_child ... " on the same line first.
        if let Some((_, pid)) = line.split_once("SUPERVISING ") {
            break pid.trim().parse().unwrap();
        }
    };

    first.kill().unwrap(); // SIGKILL: no cleanup runs in the first supervisor.
    first.wait().unwrap();
    assert!(
        process_exists(collector_pid),
        "the collector should outlive its killed supervisor"
    );

    let mut successor = manager(&storage, port, false);
    match successor.start(collector_bin()) {
        Err(ProcessError::LeftoverRunning { pid, .. }) => assert_eq!(pid, collector_pid),
        other => panic!("expected LeftoverRunning, got {other:?}"),
    }
    let began = std::time::Instant::now();
    let report = successor.stop().await.unwrap();
    // The leftover ignores SIGTERM (scripted), so only SIGKILL after the stop timeout ends it.
    assert!(report.killed, "{report:?}");
    assert!(began.elapsed() >= STOP_TIMEOUT);
    assert!(
        std::fs::read_to_string(format!("/proc/{collector_pid}/stat")).map_or(true, |stat| stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))),
        "leftover collector {collector_pid} still runs"
    );
    assert!(!storage.join("collector.pid").exists());

    // Its port is free again: a new collector starts and serves on it.
    let pid = successor.start(collector_bin()).unwrap();
    assert_ne!(pid, collector_pid);
    assert_serving(&successor, port).await;
    assert_eq!(
        PidFile::new(storage.join("collector.pid")).live_leftover(),
        Some(pid)
    );
    successor.stop().await.unwrap();
    assert!(!storage.join("collector.pid").exists());
}
