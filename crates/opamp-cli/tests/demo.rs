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
        "new host joins",
        "rollout bad 1.2.0",
        "downgrade, no authorisation",
        "downgrade, tampered file",
        "signed downgrade to 1.0.0",
        "config rollout, bad config",
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
    // The host added after the 1.1.0 rollout was moved to 1.1.0 and took part from then on.
    assert!(
        stdout.contains("all 6 agents on 1.1.0, healthy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("all 6 agents on 1.0.0, healthy"),
        "{stdout}"
    );
    assert!(stdout.contains("rollback refused"), "{stdout}");
    assert!(stdout.contains("content hash mismatch"), "{stdout}");
    assert!(stdout.contains("failed its health gate"), "{stdout}");
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
fn interrupting_the_demo_stops_every_supervisor_and_collector() {
    use std::io::BufRead as _;

    let mut child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["demo", "--agents", "2", "--fast"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // Wait until the fleet is up (both supervisors report a healthy collector).
    let mut dir = None;
    loop {
        let line = seen.recv_timeout(Duration::from_secs(120)).unwrap();
        if let Some(path) = line.split("files in ").nth(1) {
            dir = Some(path.trim().to_owned());
        }
        assert!(!line.contains("FAILED"), "{line}");
        if line.contains("[ok] agents") {
            break;
        }
    }
    let dir = std::path::PathBuf::from(dir.unwrap());
    let health_ports: Vec<u16> = (0..2)
        .map(|i| {
            let yaml =
                std::fs::read_to_string(dir.join(format!("agents/agent-{i:03}/supervisor.yaml")))
                    .unwrap();
            let url = yaml
                .lines()
                .find_map(|l| l.trim().strip_prefix("http_url: http://127.0.0.1:"))
                .unwrap();
            url.split('/').next().unwrap().parse().unwrap()
        })
        .collect();
    let dir_text = dir.to_string_lossy().into_owned();
    // Collectors name the directory too (the merged config the supervisor passes them).
    let supervisors = processes_mentioning(&dir_text)
        .into_iter()
        .filter(|cmdline| cmdline.contains(" supervisor --config "))
        .count();
    assert_eq!(supervisors, 2, "two supervisors");
    for port in &health_ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = err.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert!(stderr.contains("files and logs kept in"), "{stderr}");

    // No supervisor and no collector (they name the directory and hold the health ports).
    assert_eq!(processes_mentioning(&dir_text), Vec::<String>::new());
    for port in health_ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a collector still serves port {port}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
