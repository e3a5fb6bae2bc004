//! Three `opamp server` replicas on one PostgreSQL database, three real `opamp supervisor`
//! processes with their collectors spread over them by a TCP load balancer, and the replica
//! that coordinates killed with SIGKILL while the canary runs the target: another replica
//! takes over, the rollout completes, every supervisor ends on the target version, and the
//! audit log shows the hand-over. The rollout is started through a replica that does not
//! coordinate. Skipped unless `OPAMP_TEST_POSTGRES_URL` names a PostgreSQL server (CI sets
//! it, and fails the test without it).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    ServerProcess, SupervisorProcess, Workdir, healthy_on, launcher, operator,
    sign_and_add_package, spawn_server, start_supervisor, wait_until,
};

const TOKEN: &str = "secret";
const AGENTS: usize = 3;
const REPLICAS: [&str; 3] = ["r0", "r1", "r2"];

/// A database of this test's own on the server `OPAMP_TEST_POSTGRES_URL` names, dropped at
/// the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Option<Database> {
        let Ok(admin_url) = std::env::var("OPAMP_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("OPAMP_INTEROP_REQUIRED").as_deref() != Ok("1"),
                "OPAMP_TEST_POSTGRES_URL is unset but OPAMP_INTEROP_REQUIRED=1"
            );
            eprintln!("skipped: set OPAMP_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR)");
            return None;
        };
        let name = format!("opamp_cli_replicas_{}", std::process::id());
        let mut client = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
        // One statement per call: a batch runs in one transaction, which CREATE and DROP
        // DATABASE refuse.
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A TCP load balancer on 127.0.0.1 with a connect check: each connection goes to the next
/// upstream in turn that accepts it, so agents spread over the replicas and move off a dead
/// one.
struct Balancer {
    addr: SocketAddr,
    upstreams: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let upstreams: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let serving = upstreams.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let candidates = serving.lock().unwrap().clone();
                let first = next.fetch_add(1, Ordering::Relaxed);
                let upstream = (0..candidates.len()).find_map(|i| {
                    let target = candidates[(first + i) % candidates.len()];
                    TcpStream::connect_timeout(&target, Duration::from_millis(500)).ok()
                });
                if let Some(upstream) = upstream {
                    pipe(client, upstream);
                }
            }
        });
        Balancer { addr, upstreams }
    }

    fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.lock().unwrap() = upstreams;
    }
}

/// Copies bytes both ways until either side closes, then closes both.
fn pipe(client: TcpStream, upstream: TcpStream) {
    let pairs = [
        (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
        (upstream, client),
    ];
    for (mut from, mut to) in pairs {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// Starts replica `name` on ephemeral ports; returns it with its admin URL and agent address.
fn start_replica(
    work: &Workdir,
    db: &Database,
    public_url: &str,
    name: &str,
) -> (ServerProcess, String, SocketAddr) {
    let config = format!(
        "listen = '127.0.0.1:0'\ndata_dir = 'data-{name}'\npackages_dir = 'packages'\n\
         public_url = '{public_url}'\n[admin]\nlisten = '127.0.0.1:0'\n\
         [store]\npostgres_url = '{}'\nreplica_name = '{name}'\n",
        db.url
    );
    let file = format!("server-{name}.toml");
    work.write(&file, config.as_bytes());
    let args = [
        "server",
        "--config",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
    ];
    let (server, admin, agents) = spawn_server(work, &args);
    let addr = agents
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/opamp")
        .parse()
        .unwrap();
    (server, admin, addr)
}

/// The replicas that took the coordinator lease, in order, from the audit log.
fn lease_takes(work: &Workdir, admin: &str) -> Vec<String> {
    let audit = operator(work, admin, TOKEN, &["rollout", "audit", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&audit.stdout).unwrap_or_default();
    let mut takes = Vec::new();
    collect_actions(&entries, "coordinator_lease_taken", &mut |action| {
        if let Some(replica) = action["replica"].as_str() {
            takes.push(replica.to_owned());
        }
    });
    takes
}

#[test]
fn replicas_finish_a_rollout_of_real_supervisors_after_the_coordinator_is_killed() {
    let Some(db) = Database::create() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let work = Workdir::new();
    let balancer = Balancer::start();
    let public_url = format!("http://{}", balancer.addr);
    let mut replicas: Vec<(String, ServerProcess, String, SocketAddr)> = REPLICAS
        .iter()
        .map(|name| {
            let (server, admin, addr) = start_replica(&work, &db, &public_url, name);
            ((*name).to_owned(), server, admin, addr)
        })
        .collect();
    balancer.set_upstreams(replicas.iter().map(|r| r.3).collect());
    let any_admin = replicas[0].2.clone();
    let mut coordinator = String::new();
    wait_until("a replica coordinates", deadline, || {
        let takes = lease_takes(&work, &any_admin);
        coordinator = takes.first().cloned().unwrap_or_default();
        (!coordinator.is_empty(), format!("{takes:?}"))
    });
    let relaying_admin = replicas
        .iter()
        .find(|r| r.0 != coordinator)
        .unwrap()
        .2
        .clone();

    work.keygen("keys", &[]);
    let initial = launcher(&work, "1.0.0");
    let target = launcher(&work, "1.1.0");
    for (file, version) in [(&initial, "1.0.0"), (&target, "1.1.0")] {
        sign_and_add_package(&work, &relaying_admin, TOKEN, file, version, &[]);
    }
    let health_ports: Vec<u16> = (0..AGENTS)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let endpoint = format!("ws://{}/v1/opamp", balancer.addr);
    let _supervisors: Vec<SupervisorProcess> = health_ports
        .iter()
        .enumerate()
        .map(|(index, &health)| start_supervisor(&work, index, &endpoint, health, &initial))
        .collect();
    wait_until("all agents run 1.0.0 healthy", deadline, || {
        let (count, output) = healthy_on(&work, &relaying_admin, TOKEN, "1.0.0");
        (count == AGENTS, output)
    });
    // The balancer spread them: more than one replica holds agents.
    let listed = operator(&work, &relaying_admin, TOKEN, &["agents", "list"]).expect_code(0);
    let held: std::collections::BTreeSet<&str> = REPLICAS
        .iter()
        .copied()
        .filter(|name| listed.stdout.lines().any(|l| l.trim_end().ends_with(name)))
        .collect();
    assert!(held.len() >= 2, "agents on {held:?}:\n{}", listed.stdout);

    // Started through a replica that does not coordinate: forwarded to the coordinator.
    operator(
        &work,
        &relaying_admin,
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
    let list = operator(&work, &relaying_admin, TOKEN, &["rollout", "list"]).expect_code(0);
    let id = list
        .stdout
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rollout listed:\n{}", list.stdout))
        .to_owned();

    wait_until("the canary runs 1.1.0", deadline, || {
        let (count, output) = healthy_on(&work, &relaying_admin, TOKEN, "1.1.0");
        (count >= 1, output)
    });
    let (moved, before_kill) = healthy_on(&work, &relaying_admin, TOKEN, "1.1.0");
    assert!(
        moved < AGENTS,
        "the rollout finished before the kill:\n{before_kill}"
    );
    let killed = replicas.iter().position(|r| r.0 == coordinator).unwrap();
    let (_, mut server, _, _) = replicas.remove(killed);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    balancer.set_upstreams(replicas.iter().map(|r| r.3).collect());
    let killed_at = Instant::now();

    let survivor_admin = replicas[0].2.clone();
    wait_until("another replica coordinates", deadline, || {
        let takes = lease_takes(&work, &survivor_admin);
        (takes.len() == 2, format!("{takes:?}"))
    });
    eprintln!(
        "{coordinator} killed; taken over after {:?}",
        killed_at.elapsed()
    );
    wait_until("the rollout completes", deadline, || {
        let status = operator(&work, &survivor_admin, TOKEN, &["rollout", "status", &id]);
        let output = status.stdout + &status.stderr;
        assert!(
            !output.contains("status aborted") && !output.contains("status failed"),
            "{output}"
        );
        (output.contains("status completed"), output)
    });
    wait_until("all agents run 1.1.0 healthy", deadline, || {
        let (count, output) = healthy_on(&work, &survivor_admin, TOKEN, "1.1.0");
        (count == AGENTS, output)
    });
    let takes = lease_takes(&work, &survivor_admin);
    assert_eq!(takes[0], coordinator);
    assert_ne!(takes[1], coordinator);
    // No wave was started twice across the hand-over.
    let audit = operator(
        &work,
        &survivor_admin,
        TOKEN,
        &["rollout", "audit", &id, "--json"],
    );
    let entries: serde_json::Value = serde_json::from_str(&audit.stdout).unwrap();
    let mut waves = Vec::new();
    collect_actions(&entries, "wave_started", &mut |action| {
        waves.push(action["wave"].as_u64().unwrap());
    });
    let mut unique = waves.clone();
    unique.dedup();
    assert_eq!(waves, unique, "waves started: {waves:?}");
    assert_eq!(waves, [0, 1], "a canary wave and one batch");
}

/// Calls `found` with every action object named `kind` in `value`, in document order.
fn collect_actions(
    value: &serde_json::Value,
    kind: &str,
    found: &mut impl FnMut(&serde_json::Value),
) {
    match value {
        serde_json::Value::Object(object) => {
            if object.get("action").and_then(|a| a.as_str()) == Some(kind) {
                found(value);
                return;
            }
            for child in object.values() {
                collect_actions(child, kind, found);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_actions(item, kind, found);
            }
        }
        _ => {}
    }
}
