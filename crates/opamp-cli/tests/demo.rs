//! `opamp demo --agents 5 --fast` end to end: real server, real supervisors, real collectors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_with_five_agents_ends_as_expected() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["demo", "--agents", "5", "--fast"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: read the output on threads and kill the demo if it overruns.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let limit = Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            // SIGTERM lets the demo stop its supervisors before it exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("the demo took longer than {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert!(
        status.success(),
        "{status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("every step ended as expected"), "{stdout}");
    for step in [
        "release",
        "server",
        "agents",
        "rollout 1.1.0",
        "rollout bad 1.2.0",
        "downgrade, no authorisation",
        "downgrade, tampered file",
        "signed downgrade to 1.0.0",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.contains(&format!("  {step}  ")))
            .unwrap_or_else(|| panic!("no summary row for {step}:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains("all 5 agents on 1.0.0, healthy"),
        "{stdout}"
    );
    assert!(stdout.contains("rollback refused"), "{stdout}");
    assert!(stdout.contains("content hash mismatch"), "{stdout}");
    assert!(stdout.contains("failed its health gate"), "{stdout}");
}
