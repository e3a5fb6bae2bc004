//! `opamp server` as a real process, driven by the operator commands over its admin API.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Workdir;

/// Kills the server if a test fails before stopping it.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `opamp server` on ephemeral loopback ports and returns it with its admin URL,
/// read from the line it prints once both listeners are up.
fn start_server(work: &Workdir, token: &str) -> (ServerProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args([
            "server",
            "--data-dir",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            token,
        ])
        .current_dir(work.root())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = ServerProcess(child);
    let (lines, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = ready.recv_timeout(Duration::from_secs(30)).unwrap();
    let admin = line
        .split("admin API at ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .trim()
        .to_owned();
    (server, admin)
}

#[test]
fn operator_commands_against_a_running_server() {
    let work = Workdir::new();
    let (mut server, admin) = start_server(&work, "secret");
    let connection = ["--server", admin.as_str(), "--token", "secret"];
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&connection);
        all
    };

    work.keygen("keys", &[]);
    work.write("otelcol-1.1.0", b"collector 1.1.0");
    work.opamp(&[
        "package",
        "sign",
        "otelcol-1.1.0",
        "--key",
        "keys/release.key",
        "--name",
        "otelcol",
        "--version",
        "1.1.0",
    ])
    .expect_code(0);
    let added = work
        .opamp(&with(&[
            "package",
            "add",
            "otelcol-1.1.0",
            "--name",
            "otelcol",
            "--version",
            "1.1.0",
            "--signature",
            "otelcol-1.1.0.sig",
        ]))
        .expect_code(0);
    assert!(
        added
            .stdout
            .starts_with("added otelcol 1.1.0 (15 bytes, sha256 "),
        "{}",
        added.stdout
    );

    let listed = work.opamp(&with(&["package", "list"])).expect_code(0);
    assert!(listed.stdout.starts_with("NAME"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("otelcol  1.1.0"),
        "{}",
        listed.stdout
    );
    let json = work
        .opamp(&with(&["package", "list", "--json"]))
        .expect_code(0);
    assert!(
        json.stdout.contains("\"version\": \"1.1.0\""),
        "{}",
        json.stdout
    );

    // A wrong token is refused by the server: exit 1 with its answer.
    let refused = work
        .opamp(&[
            "package",
            "list",
            "--server",
            admin.as_str(),
            "--token",
            "wrong",
        ])
        .expect_code(1);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    let agents = work.opamp(&with(&["agents", "list"])).expect_code(0);
    assert_eq!(agents.stdout.lines().count(), 1, "{}", agents.stdout);
    assert!(agents.stdout.starts_with("UID"), "{}", agents.stdout);

    // No agent is connected, so there is nothing to roll out to.
    let start = work
        .opamp(&with(&[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.1.0",
        ]))
        .expect_code(1);
    assert!(
        start
            .stderr
            .starts_with("error: cannot start a rollout of otelcol 1.1.0"),
        "{}",
        start.stderr
    );
    let status = work
        .opamp(&with(&["rollout", "status", "no-such-rollout"]))
        .expect_code(1);
    assert!(status.stderr.contains("404"), "{}", status.stderr);
    let list = work.opamp(&with(&["rollout", "list"])).expect_code(0);
    assert_eq!(
        list.stdout.trim(),
        "ID  PACKAGE  VERSION  STATUS  SELECTOR  CREATED"
    );

    // SIGTERM stops the server cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
