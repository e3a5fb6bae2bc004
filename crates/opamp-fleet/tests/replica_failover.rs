//! Three server replicas on one PostgreSQL database, as real processes: the holder of the
//! coordinator lease serves, the other two wait. The holder is killed with SIGKILL in the
//! middle of a rollout; another replica takes the lease and finishes the rollout from what
//! the database holds.
//!
//! Each replica is this test binary re-executed with `--ignored --exact
//! replica_child_entry`; it prints `READY <opamp> <admin>` once it holds the lease and
//! listens. Agents (WebSocket and HTTP, in the parent) reach the replicas through a TCP proxy
//! standing in for the operator's load balancer, which forwards to the replica that is ready;
//! download URLs name the proxy, and the replicas share one packages directory. Skipped
//! unless `OPAMP_TEST_POSTGRES_URL` says PostgreSQL is installed (CI requires it).

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_support::cluster::{OwnCluster, assert_no_step_repeated, lease_takes};
use fleet_support::proxy::FaultProxy;
use fleet_support::{
    admin, assert_converged, config, request, spawn_fleet, stop_all, upload, wait_connected_at,
    wait_rollout,
};
use opamp_fleet::config::DatabaseUrl;
use opamp_fleet::{FleetServer, RolloutStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const CHILD_ENV: &str = "OPAMP_REPLICA_CHILD";

/// The replica process: runs only when re-executed by the test below, with
/// `<data dir>\n<packages dir>\n<database url>\n<public url>\n<replica name>` in
/// [`CHILD_ENV`]; serves until killed, or exits with status 3 when it loses the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process entry of replica_failover; started by the test"]
async fn replica_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let lines: Vec<&str> = spec.lines().collect();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut settings = config(Path::new(lines[0]), any, any);
    settings.packages_dir = Some(PathBuf::from(lines[1]));
    settings.store.postgres_url = Some(DatabaseUrl(lines[2].to_owned()));
    settings.public_url = Some(lines[3].to_owned());
    settings.store.replica_name = Some(lines[4].to_owned());
    let server = FleetServer::start(settings).await.unwrap();
    println!("READY {} {}", server.opamp_addr(), server.admin_addr());
    let lost = server.lease_lost().await;
    eprintln!("{lost}");
    std::process::exit(3);
}

/// A replica process, and the name it holds the lease under.
struct Replica {
    name: String,
    child: Child,
}

/// Starts replica `name`; its `READY` line, when it comes, is sent on `ready`.
fn start_replica(
    root: &Path,
    packages: &Path,
    url: &str,
    public_url: &str,
    name: &str,
    ready: mpsc::UnboundedSender<(String, SocketAddr, SocketAddr)>,
) -> Replica {
    let data_dir = root.join(name);
    std::fs::create_dir_all(&data_dir).unwrap();
    let stderr = std::fs::File::create(root.join(format!("{name}.stderr"))).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "replica_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}\n{}\n{url}\n{public_url}\n{name}",
                data_dir.display(),
                packages.display()
            ),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let owner = name.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // libtest prints "test <name> ... " before the child's output on the same line.
            if let Some((_, rest)) = line.split_once("READY ") {
                let (opamp, admin) = rest.split_once(' ').unwrap();
                let _ = ready.send((
                    owner.clone(),
                    opamp.parse().unwrap(),
                    admin.parse().unwrap(),
                ));
            }
        }
    });
    Replica {
        name: name.to_owned(),
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_rollout_is_replaced_and_the_rollout_completes() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("shared-packages");
    let balancer = FaultProxy::start().await;
    let public_url = format!("http://{}", balancer.addr());
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|name| {
            start_replica(
                dir.path(),
                &packages,
                &cluster.url,
                &public_url,
                name,
                ready_tx.clone(),
            )
        })
        .collect();

    // One replica takes the lease and serves; the others wait.
    let (leader, opamp, admin_addr) = tokio::time::timeout(Duration::from_secs(60), ready.recv())
        .await
        .expect("a replica serves")
        .unwrap();
    balancer.set_upstream(opamp);
    let client = admin(admin_addr);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(balancer.addr(), 9, 2, Duration::from_millis(100));
    wait_connected_at(&client, 11, "1.0.0").await;
    let extra = tokio::time::timeout(Duration::from_secs(2), ready.recv()).await;
    assert!(
        extra.is_err(),
        "a second replica served beside {leader}: {extra:?}"
    );

    let id = client
        .create_rollout(&request("2.0.0", Duration::from_millis(1_000)))
        .await
        .unwrap()
        .id
        .to_string();
    let view = wait_rollout(&client, &id, "the first batch", |view| {
        view.status == RolloutStatus::Batch
    })
    .await;

    // SIGKILL the leader mid-rollout: no release of the lease, no goodbye to the agents.
    let killed = replicas.iter_mut().find(|r| r.name == leader).unwrap();
    killed.child.kill().await.unwrap();
    let killed_at = Instant::now();
    balancer.drop_all();
    eprintln!(
        "killed {leader} during the first batch: {:?}",
        view.progress
    );

    let (successor, opamp, admin_addr) =
        tokio::time::timeout(Duration::from_secs(30), ready.recv())
            .await
            .expect("another replica takes over")
            .unwrap();
    let takeover = killed_at.elapsed();
    eprintln!("{successor} took over {takeover:?} after the kill");
    assert_ne!(successor, leader);
    // The lease (6 s by default) expires, then the next poll (0.5 s) takes it.
    assert!(takeover < Duration::from_secs(10), "took {takeover:?}");
    balancer.set_upstream(opamp);
    let client = admin(admin_addr);
    assert_converged(&client, &id, &agents, "2.0.0").await;

    // The audit log shows the hand-over, and no wave started twice.
    assert_eq!(
        lease_takes(&client).await,
        [(leader.clone(), 1), (successor.clone(), 2)]
    );
    let waves = assert_no_step_repeated(&client, &id).await;
    assert!(waves >= 2, "{waves} waves");

    stop_all(agents).await;
    for replica in &mut replicas {
        let _ = replica.child.kill().await;
    }
}
