//! `opamp server` as a real process, driven by the operator commands over its admin API.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{ServerProcess, SupervisorProcess, Workdir, launcher, sign_and_add_package};

/// Starts `opamp server` on ephemeral loopback ports and returns it with its admin URL and
/// agent URL, read from the line it prints once both listeners are up.
fn start_server(work: &Workdir, token: &str) -> (ServerProcess, String, String) {
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
    // "opamp server: agents at ws://ADDR/v1/opamp, admin API at http://ADDR"
    let (agents, admin) = line
        .strip_prefix("opamp server: agents at ")
        .and_then(|rest| rest.split_once(", admin API at "))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (server, admin.trim().to_owned(), agents.trim().to_owned())
}

#[test]
fn operator_commands_against_a_running_server() {
    let work = Workdir::new();
    let (mut server, admin, _) = start_server(&work, "secret");
    let connection = ["--server", admin.as_str(), "--token", "secret"];
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&connection);
        all
    };

    work.keygen("keys", &[]);
    work.write("otelcol-1.1.0", b"collector 1.1.0");
    let added = sign_and_add_package(&work, &admin, "secret", "otelcol-1.1.0", "1.1.0", &[]);
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
    // JSON carries hashes as hex and times as RFC 3339, not byte arrays and epoch numbers.
    let packages: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let hash = packages[0]["content_hash"].as_str().unwrap_or_default();
    assert!(
        hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{packages}"
    );
    let added_at = packages[0]["added_at"].as_str().unwrap_or_default();
    assert!(
        added_at.len() == 24 && added_at.ends_with('Z') && added_at.contains('T'),
        "{packages}"
    );
    // The table shows how long ago, not epoch milliseconds.
    assert!(listed.stdout.contains(" ago"), "{}", listed.stdout);

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

#[test]
fn rollout_start_watch_moves_a_real_supervisor() {
    let work = Workdir::new();
    let (_server, admin, agents_listen) = start_server(&work, "secret");
    let connection = ["--server", admin.as_str(), "--token", "secret"];
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&connection);
        all
    };
    let agents = work
        .opamp(&with(&["agents", "list", "--json"]))
        .expect_code(0);
    assert_eq!(agents.stdout.trim(), "[]");

    // Release side: key, a 1.0.0 collector to start with, a 1.1.0 to roll out.
    work.keygen("keys", &[]);
    let initial = launcher(&work, "1.0.0");
    let target = launcher(&work, "1.1.0");
    // Both versions go into the catalog: the server refuses a rollout whose revert target
    // (the version agents run now) it could not offer.
    for (file, version) in [(&initial, "1.0.0"), (&target, "1.1.0")] {
        sign_and_add_package(&work, &admin, "secret", file, version, &[]);
    }

    // One supervisor running the 1.0.0 collector: the lean `opamp-supervisor` binary (the
    // other tests run the `opamp supervisor` subcommand), so a real install proves it too.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_port = listener.local_addr().unwrap().port();
    drop(listener);
    let yaml = format!(
        "server:\n  endpoint: {agents_listen}\nagent:\n  executable: '{}'\n  storage_dir: '{}'\n  \
         package_name: otelcol\n  args: [\"--health-port\", \"{health_port}\"]\n  labels:\n    \
         env: test\nhealth:\n  http_url: http://127.0.0.1:{health_port}/health\n  \
         liveness_window: 1s\n  start_timeout: 10s\n  check_interval: 300ms\ntrust:\n  keys:\n    \
         - file: '{}'\nheartbeat_interval: 5s\n",
        work.path(&initial).display(),
        work.path("storage").display(),
        work.path("keys/release.pub").display(),
    );
    work.write("supervisor.yaml", yaml.as_bytes());
    let supervisor = Command::new(env!("CARGO_BIN_EXE_opamp-supervisor"))
        .args(["--config", "supervisor.yaml"])
        .current_dir(work.root())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _supervisor = SupervisorProcess(supervisor);

    // Wait (bounded) until the server knows the agent on 1.0.0 and healthy.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = work.opamp(&with(&["agents", "list", "--selector", "env=test"]));
        if list.code == 0 && list.stdout.contains("otelcol=1.0.0  healthy  yes") {
            // LAST SEEN is relative, not epoch milliseconds.
            assert!(list.stdout.contains(" ago"), "{}", list.stdout);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent never appeared:\n{}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let started = work
        .opamp(&with(&[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.1.0",
            "--selector",
            "env=test",
            "--bake-time",
            "1s",
            "--health-timeout",
            "30s",
            "--install-timeout",
            "60s",
            "--watch",
        ]))
        .expect_code(0);
    assert!(
        started
            .stdout
            .contains("started: otelcol 1.1.0 to 1 agents"),
        "{}",
        started.stdout
    );
    assert!(
        started.stdout.contains("status completed"),
        "{}",
        started.stdout
    );
    assert!(
        started.stdout.contains("fleet: 1.1.0: 1 healthy"),
        "{}",
        started.stdout
    );

    let list = work.opamp(&with(&["rollout", "list"])).expect_code(0);
    assert!(list.stdout.contains("completed"), "{}", list.stdout);
    let id = list
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut status = with(&["rollout", "status"]);
    status.push(&id);
    let status = work.opamp(&status).expect_code(0);
    assert!(
        status.stdout.contains("stage completed"),
        "{}",
        status.stdout
    );
    let mut status_json = with(&["rollout", "status", "--json"]);
    status_json.push(&id);
    let status_json = work.opamp(&status_json).expect_code(0);
    let view: serde_json::Value = serde_json::from_str(&status_json.stdout).unwrap();
    assert_eq!(view["id"], id.as_str(), "{view}");
    assert_eq!(view["status"], "completed", "{view}");
    assert!(
        view["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{view}"
    );
    // A finished rollout cannot be paused: the server's refusal exits 1.
    let mut pause = with(&["rollout", "pause"]);
    pause.push(&id);
    let refused = work.opamp(&pause).expect_code(1);
    assert!(refused.stderr.contains("409"), "{}", refused.stderr);

    // The audit log names the operator who started it and shows the agent's result.
    let mut audit = with(&["rollout", "audit"]);
    audit.push(&id);
    let audit = work.opamp(&audit).expect_code(0);
    let started_by = audit
        .stdout
        .lines()
        .find(|line| line.split_whitespace().nth(4) == Some("started"))
        .unwrap_or_else(|| panic!("no started record in\n{}", audit.stdout));
    // AT is relative ("3s ago", two words), then ROLLOUT, WHO, ACTION.
    assert_eq!(
        started_by.split_whitespace().nth(3),
        Some("admin"),
        "{started_by}"
    );
    assert!(audit.stdout.contains("agent_installed"), "{}", audit.stdout);
    assert!(audit.stdout.contains("version=1.1.0"), "{}", audit.stdout);
    let json = work
        .opamp(&with(&["rollout", "audit", "--json"]))
        .expect_code(0);
    let records: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        records.as_array().is_some_and(|r| r.len() >= 3),
        "{records}"
    );
}
