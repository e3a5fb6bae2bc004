//! Signals and lost terminals (issue 23, items 9 and 10), with the real `opamp` binary:
//! `opamp server` whose stdout and stderr readers are gone stops cleanly on SIGTERM and on
//! SIGINT (never exit 101), a second server on the same data directory refuses to start, and
//! `opamp demo` on SIGHUP (its terminal closed) stops every supervisor and collector first.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
}

/// Waits for `child` to exit, failing the test after `within`.
fn exit_within(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `opamp server` on free loopback ports in `data_dir`, with its stdout read until the
/// banner; returns the child and its stdout reader (dropping it closes the pipe).
fn start_server(data_dir: &std::path::Path) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--admin-token", "secret"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("admin API at") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "server exited before its banner"
        );
    }
    (child, stdout)
}

fn server_with_closed_output_stops_on(stop: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stdout) = start_server(dir.path());
    // `opamp server 2>&1 | head -3`: the reader is gone before the server logs again.
    drop(stdout);
    drop(child.stderr.take());
    signal(&child, stop);
    // The shutdown logs "shutting down" into the closed stderr.
    let status = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "{stop} with closed output: {status}"
    );
}

#[test]
fn a_server_with_closed_output_stops_cleanly_on_sigterm() {
    server_with_closed_output_stops_on(Signal::SIGTERM);
}

#[test]
fn a_server_with_closed_output_stops_cleanly_on_sigint() {
    server_with_closed_output_stops_on(Signal::SIGINT);
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _stdout) = start_server(dir.path());
    let second = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--admin-token", "secret"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("another opamp server already uses the data directory"),
        "{stderr}"
    );
    signal(&first, Signal::SIGTERM);
    assert!(exit_within(&mut first, Duration::from_secs(20)).success());
}

/// Every command line of a running process that mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(text) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn sighup_stops_the_demo_and_every_supervisor_and_collector() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["demo", "--agents", "2", "--fast"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut dir = None;
    let mut line = String::new();
    // Wait until the fleet is up (both supervisors report a healthy collector).
    while !line.contains("[ok] agents") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "demo ended early");
        assert!(!line.contains("FAILED"), "{line}");
        if let Some(path) = line.split("files in ").nth(1) {
            dir = Some(path.trim().to_owned());
        }
    }
    let dir = dir.unwrap();
    // Two supervisors and their two collectors (each reads its config from the directory).
    let running = processes_mentioning(&dir);
    let supervisors = running
        .iter()
        .filter(|cmd| cmd.contains(" supervisor "))
        .count();
    let collectors = running
        .iter()
        .filter(|cmd| cmd.contains("__test-collector"))
        .count();
    assert_eq!((supervisors, collectors), (2, 2), "{running:#?}");
    // The terminal closes: SIGHUP, and nobody reads the output any more.
    drop(stdout);
    signal(&child, Signal::SIGHUP);
    exit_within(&mut child, Duration::from_secs(60));
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<String>::new(),
        "supervisors or collectors outlived the demo"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
