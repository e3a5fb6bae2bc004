//! A rollout survives the server being killed mid-rollout: `opamp server` is SIGKILLed once the
//! canary runs the target, restarted on the same ports and data directory, and the rollout
//! still finishes with every real supervisor on the target version. The restarted server sends
//! the canary the offer it already installed; the canary must go on reporting it as installed,
//! which a server with a fresh database then sees.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{
    ServerProcess, SupervisorProcess, Workdir, healthy_on, launcher, operator,
    sign_and_add_package, spawn_server, start_supervisor, wait_until,
};

const TOKEN: &str = "secret";
const AGENTS: usize = 3;

/// `count` distinct free loopback ports, all held at once so none repeats.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts `opamp server` on fixed ports (so a restart keeps them) and waits for the line it
/// prints once both listeners are up.
fn start_server(work: &Workdir, data_dir: &str, agent_port: u16, admin_port: u16) -> ServerProcess {
    let listen = format!("127.0.0.1:{agent_port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let args = [
        "server",
        "--data-dir",
        data_dir,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--admin-token",
        TOKEN,
    ];
    let (server, admin_url, _) = spawn_server(work, &args);
    assert!(
        admin_url.ends_with(&admin),
        "the server listens where it was told: {admin_url}"
    );
    server
}

/// `GET /api/v1/audit` over a raw HTTP/1.1 request; returns the response body.
fn audit_log(admin_port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/audit HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\nAuthorization: Bearer \
         {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn rollout_completes_after_the_server_is_killed_and_restarted() {
    let test_deadline = Instant::now() + Duration::from_secs(150);
    let work = Workdir::new();
    let ports = free_ports(2 + AGENTS);
    let (agent_port, admin_port) = (ports[0], ports[1]);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut server = start_server(&work, "data", agent_port, admin_port);

    work.keygen("keys", &[]);
    let initial = launcher(&work, "1.0.0");
    let target = launcher(&work, "1.1.0");
    for (file, version) in [(&initial, "1.0.0"), (&target, "1.1.0")] {
        sign_and_add_package(&work, &admin, TOKEN, file, version, &[]);
    }

    let endpoint = format!("ws://127.0.0.1:{agent_port}/v1/opamp");
    let _supervisors: Vec<SupervisorProcess> = ports[2..]
        .iter()
        .enumerate()
        .map(|(index, &health)| start_supervisor(&work, index, &endpoint, health, &initial))
        .collect();
    wait_until("all agents run 1.0.0 healthy", test_deadline, || {
        let (count, output) = healthy_on(&work, &admin, TOKEN, "1.0.0");
        (count == AGENTS, output)
    });

    // Canary share 0.33 of 3 agents is one canary; the other two follow in one batch.
    let started = operator(
        &work,
        &admin,
        TOKEN,
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.1.0",
            "--selector",
            "env=test",
            "--canary-share",
            "0.33",
            "--batches",
            "1",
            "--bake-time",
            "4s",
            "--health-timeout",
            "30s",
            "--install-timeout",
            "60s",
        ],
    )
    .expect_code(0);
    assert!(
        started
            .stdout
            .contains(&format!("otelcol 1.1.0 to {AGENTS} agents")),
        "{}",
        started.stdout
    );
    let list = operator(&work, &admin, TOKEN, &["rollout", "list"]).expect_code(0);
    let id = list
        .stdout
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rollout listed:\n{}", list.stdout))
        .to_owned();

    // Kill the server while the canary runs the target and the batch has not moved yet.
    wait_until("the canary runs 1.1.0", test_deadline, || {
        let (count, output) = healthy_on(&work, &admin, TOKEN, "1.1.0");
        (count >= 1, output)
    });
    let (moved, before_kill) = healthy_on(&work, &admin, TOKEN, "1.1.0");
    assert!(
        moved < AGENTS,
        "the rollout finished before the kill:\n{before_kill}"
    );
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);

    let mut server = start_server(&work, "data", agent_port, admin_port);
    wait_until(
        "the rollout completes after the restart",
        test_deadline,
        || {
            let status = operator(&work, &admin, TOKEN, &["rollout", "status", &id]);
            let output = status.stdout + &status.stderr;
            assert!(
                !output.contains("status aborted") && !output.contains("status failed"),
                "{output}\naudit log:\n{}",
                audit_log(admin_port)
            );
            (output.contains("status completed"), output)
        },
    );
    wait_until("all agents run 1.1.0 healthy", test_deadline, || {
        let (count, output) = healthy_on(&work, &admin, TOKEN, "1.1.0");
        (count == AGENTS, output)
    });

    let audit = audit_log(admin_port);
    let installs = audit.matches("\"agent_installed\"").count();
    assert!(installs >= AGENTS, "{installs} install records:\n{audit}");
    assert!(audit.contains("\"completed\""), "{audit}");

    // A server with a fresh database knows only what the agents report. The canary was sent
    // its installed offer again after the restart; it used to report its own package as a
    // refused foreign package with no version from then on, and this listing missed it.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    let _fresh = start_server(&work, "fresh-data", agent_port, admin_port);
    wait_until(
        "a server with a fresh database lists every agent on 1.1.0",
        test_deadline,
        || {
            let (count, output) = healthy_on(&work, &admin, TOKEN, "1.1.0");
            (count == AGENTS, output)
        },
    );
}
