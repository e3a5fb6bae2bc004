//! A supervisor killed with SIGKILL at any moment of starting its collector, including between
//! the spawn and the pid-file record, leaves no collector its successor cannot find and stop
//! (issue 23, item 1).
//!
//! The supervisor is this test binary re-executed with `SPAWN_KILL_*` set, running only
//! `supervisor_loop`: it starts and stops its collector without pause, so a kill lands on
//! every step of a start (fork, exec, pid-file write, output wiring) over the runs. The
//! collector is a copy of `sleep` in the test's directory, so every process running it is
//! known by `/proc/<pid>/exe`, independently of the marker the fix relies on.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use opamp_supervisor::process::{AgentCommand, PidFile, ProcessManager, RestartPolicy};

const STORAGE_ENV: &str = "SPAWN_KILL_STORAGE";
const EXE_ENV: &str = "SPAWN_KILL_EXE";
const STOP_TIMEOUT: Duration = Duration::from_millis(500);
/// Supervisors killed per run: bounded, about 2 s in all.
const KILLS: usize = 40;

fn manager(storage: &Path) -> ProcessManager {
    ProcessManager::new(
        AgentCommand::new("spawn-kill-test").arg("1000"),
        STOP_TIMEOUT,
        RestartPolicy::disabled(),
    )
    .with_pid_file(PidFile::new(storage.join("collector.pid")))
}

#[tokio::test]
async fn supervisor_loop() {
    let (Some(storage), Some(exe)) = (std::env::var_os(STORAGE_ENV), std::env::var_os(EXE_ENV))
    else {
        return; // Only meaningful when re-executed by the test below.
    };
    let mut manager = manager(Path::new(&storage));
    println!("LOOPING");
    loop {
        manager.stop().await.expect("stop");
        manager.start(Path::new(&exe)).expect("start");
    }
}

/// Pids of running (not zombie) processes whose executable is `exe`.
fn running(exe: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// What a failure needs to be understood: whether each stray carries the marker, and its stat
/// line (state, parent, start time).
fn describe(pids: &[u32]) -> String {
    let marker = opamp_supervisor::process::COLLECTOR_MARKER_ENV.as_bytes();
    pids.iter()
        .map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let marked = environ
                .split(|&b| b == 0)
                .any(|entry| entry.starts_with(marker));
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            format!("[{pid}: marker {marked}; stat {}]", stat.trim())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Deterministic delays (xorshift), so a failing run can be replayed.
fn delays(seed: u64) -> impl Iterator<Item = Duration> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Duration::from_micros(x % 20_000)
    })
}

#[tokio::test]
async fn a_supervisor_killed_at_any_step_of_a_start_leaves_nothing_untracked() {
    let dir = tempfile::tempdir().unwrap();
    let storage: PathBuf = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let exe = dir.path().join("collector");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let exe = exe.canonicalize().unwrap();

    let mut strays_seen = 0;
    for (run, delay) in delays(0x23).take(KILLS).enumerate() {
        let mut supervisor = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "supervisor_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STORAGE_ENV, &storage)
            .env(EXE_ENV, &exe)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(supervisor.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("LOOPING") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "supervisor ended");
        }
        // The fault's timing, not a synchronisation: where in the loop the kill lands.
        std::thread::sleep(delay);
        supervisor.kill().unwrap(); // SIGKILL: nothing in the supervisor runs after this.
        supervisor.wait().unwrap();
        let _ = out.read_to_end(&mut Vec::new());

        strays_seen += running(&exe).len();
        // The successor's first act, as in `ManagedCollector::start`.
        let successor = manager(&storage);
        successor
            .stop_leftover()
            .await
            .unwrap_or_else(|err| panic!("run {run}: {err}"));
        let left = running(&exe);
        assert!(
            left.is_empty(),
            "run {run} (kill after {delay:?}): collectors {left:?} outlived their supervisor \
             and its successor did not find them: {}",
            describe(&left)
        );
    }
    // The runs did leave collectors behind for the successor to stop (the test can fail).
    assert!(strays_seen > 0, "no kill left a collector behind");
}
