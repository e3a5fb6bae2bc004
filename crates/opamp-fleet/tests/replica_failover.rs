//! Three server replicas on one PostgreSQL database, as real processes, each serving agents:
//! the holder of the coordinator lease runs the rollouts, the other two relay their agents to
//! it through the database. The holder is killed with SIGKILL in the middle of a rollout;
//! another replica takes the lease and finishes the rollout from what the database holds,
//! with the agents of every replica, through a restart of PostgreSQL on the way.
//!
//! Each replica is this test binary re-executed with `--ignored --exact
//! replica_child_entry`; it prints `READY <opamp> <admin>` once it listens and `COORDINATING`
//! once it holds the lease. Each replica's agents (WebSocket and HTTP, in the parent) reach it
//! through a TCP proxy of its own, standing in for a load balancer: when a replica dies, its
//! proxy sends its agents to a live one. Download URLs name one more proxy in front of a
//! replica that is not killed; the replicas share one packages directory. Skipped unless
//! `OPAMP_TEST_POSTGRES_URL` says PostgreSQL is installed (CI requires it).

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_support::cluster::{OwnCluster, assert_no_step_repeated, lease_takes};
use fleet_support::proxy::FaultProxy;
use fleet_support::{
    admin, assert_converged, config, poll, request, spawn_agent, stop_all, upload,
    wait_connected_at, wait_rollout, wait_terminal,
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
    // The replica's log goes to its stderr file, kept with the test's directory on failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut settings = config(Path::new(lines[0]), any, any);
    settings.packages_dir = Some(PathBuf::from(lines[1]));
    settings.store.postgres_url = Some(DatabaseUrl(lines[2].to_owned()));
    settings.public_url = Some(lines[3].to_owned());
    settings.store.replica_name = Some(lines[4].to_owned());
    let server = FleetServer::start(settings).await.unwrap();
    println!("READY {} {}", server.opamp_addr(), server.admin_addr());
    let lost = tokio::select! {
        lost = server.lease_lost() => lost,
        () = server.coordinating() => {
            println!("COORDINATING");
            server.lease_lost().await
        }
    };
    eprintln!("{lost}");
    std::process::exit(3);
}

/// A replica process, and the name it holds the lease under.
struct Replica {
    name: String,
    child: Child,
}

/// What a replica process says on its standard output.
#[derive(Debug)]
enum Said {
    Ready {
        name: String,
        opamp: SocketAddr,
        admin: SocketAddr,
    },
    Coordinating(String),
}

/// Starts replica `name`; what it says is sent on `said`.
fn start_replica(
    root: &Path,
    packages: &Path,
    url: &str,
    public_url: &str,
    name: &str,
    said: mpsc::UnboundedSender<Said>,
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
                let _ = said.send(Said::Ready {
                    name: owner.clone(),
                    opamp: opamp.parse().unwrap(),
                    admin: admin.parse().unwrap(),
                });
            } else if line.contains("COORDINATING") {
                let _ = said.send(Said::Coordinating(owner.clone()));
            }
        }
    });
    Replica {
        name: name.to_owned(),
        child,
    }
}

/// The next replica to say it coordinates, within `within`.
async fn next_coordinator(said: &mut mpsc::UnboundedReceiver<Said>, within: Duration) -> String {
    match tokio::time::timeout(within, said.recv()).await {
        Ok(Some(Said::Coordinating(name))) => name,
        Ok(Some(other)) => panic!("unexpected {other:?}"),
        Ok(None) | Err(_) => panic!("no replica coordinates within {within:?}"),
    }
}

/// The replicas of a test, started together on one database.
struct Cluster {
    replicas: Vec<Replica>,
    /// Agent and admin address per replica name.
    addrs: BTreeMap<String, (SocketAddr, SocketAddr)>,
    /// The replica that coordinates.
    coordinator: String,
    said: mpsc::UnboundedReceiver<Said>,
}

/// Starts the `names` replicas on `url` and waits until each listens and exactly one
/// coordinates.
async fn start_cluster(root: &Path, url: &str, public_url: &str, names: &[&str]) -> Cluster {
    let packages = root.join("shared-packages");
    let (said_tx, mut said) = mpsc::unbounded_channel();
    let replicas = names
        .iter()
        .map(|name| start_replica(root, &packages, url, public_url, name, said_tx.clone()))
        .collect();
    let mut addrs = BTreeMap::new();
    let mut coordinator = None;
    while addrs.len() < names.len() || coordinator.is_none() {
        match tokio::time::timeout(Duration::from_secs(60), said.recv())
            .await
            .expect("every replica starts and one coordinates")
            .unwrap()
        {
            Said::Ready { name, opamp, admin } => {
                addrs.insert(name, (opamp, admin));
            }
            Said::Coordinating(name) => {
                assert!(
                    coordinator.is_none(),
                    "{name} coordinates beside {coordinator:?}"
                );
                coordinator = Some(name);
            }
        }
    }
    Cluster {
        replicas,
        addrs,
        coordinator: coordinator.unwrap(),
        said,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_rollout_is_replaced_and_the_rollout_completes() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let downloads = FaultProxy::start().await;
    let public_url = format!("http://{}", downloads.addr());
    let names = ["r0", "r1", "r2"];
    // Every replica listens; one of them coordinates.
    let Cluster {
        mut replicas,
        addrs,
        coordinator: leader,
        mut said,
    } = start_cluster(dir.path(), &cluster.url, &public_url, &names).await;
    let follower = names.iter().find(|n| **n != leader).unwrap().to_string();
    downloads.set_upstream(addrs[&follower].0);
    let mut balancers = BTreeMap::new();
    for name in names {
        let proxy = FaultProxy::start().await;
        proxy.set_upstream(addrs[name].0);
        balancers.insert(name.to_owned(), proxy);
    }

    // The admin API answers on any replica.
    let leader_admin = admin(addrs[&leader].1);
    let follower_admin = admin(addrs[&follower].1);
    upload(&follower_admin, dir.path(), "1.0.0").await;
    upload(&follower_admin, dir.path(), "2.0.0").await;
    let mut agents = Vec::new();
    for (offset, name) in names.iter().enumerate() {
        let endpoint_of = |scheme: &str| format!("{scheme}://{}/v1/opamp", balancers[*name].addr());
        for i in 0..4 {
            let index = offset * 4 + i;
            let scheme = if i == 3 { "http" } else { "ws" };
            let env = if i == 2 { "other" } else { "test" };
            agents.push(spawn_agent(
                &endpoint_of(scheme),
                index,
                env,
                "1.0.0",
                Duration::from_millis(100),
            ));
        }
    }
    wait_connected_at(&follower_admin, 12, "1.0.0").await;
    let held: BTreeMap<String, usize> = poll("every agent's replica to be known", || async {
        let listed = follower_admin.agents().await.ok()?;
        let mut held = BTreeMap::new();
        for agent in &listed {
            *held.entry(agent.replica.clone()?).or_insert(0) += 1;
        }
        (held.values().sum::<usize>() == 12).then_some(held)
    })
    .await;
    assert_eq!(
        held,
        names
            .iter()
            .map(|n| (n.to_string(), 4))
            .collect::<BTreeMap<_, _>>()
    );
    // A rollout change made on a replica that does not coordinate is carried out by the
    // coordinator, through the database.
    let id = follower_admin
        .create_rollout(&request("2.0.0", Duration::from_millis(1_000)))
        .await
        .unwrap()
        .id
        .to_string();
    let missing = follower_admin
        .pause("no-such-rollout")
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no-such-rollout"), "{missing}");
    // A watch on a replica that does not coordinate follows the rollout too.
    let mut watch = follower_admin.rollout_events(&id).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    let stepped = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let update = watch.next().await.unwrap().unwrap();
            if update.sequence > first.sequence {
                break update;
            }
        }
    })
    .await
    .expect("the relaying replica's watch sees the rollout step");
    eprintln!(
        "watched on {follower}: {:?} -> {:?}",
        first.status, stepped.status
    );
    drop(watch);

    let view = wait_rollout(&leader_admin, &id, "the first batch", |view| {
        view.status == RolloutStatus::Batch
    })
    .await;

    // SIGKILL the leader mid-rollout: no release of the lease, no goodbye to the agents. Its
    // balancer sends its agents to the follower, as a health check would.
    let killed = replicas.iter_mut().find(|r| r.name == leader).unwrap();
    killed.child.kill().await.unwrap();
    let killed_at = Instant::now();
    let leaders_balancer = &balancers[&leader];
    leaders_balancer.set_upstream(addrs[&follower].0);
    leaders_balancer.drop_all();
    eprintln!(
        "killed {leader} during the first batch: {:?}",
        view.progress
    );

    let successor = next_coordinator(&mut said, Duration::from_secs(30)).await;
    let takeover = killed_at.elapsed();
    eprintln!("{successor} took over {takeover:?} after the kill");
    assert_ne!(successor, leader);
    // The lease (6 s by default) expires, then the next poll (0.5 s) takes it.
    assert!(takeover < Duration::from_secs(10), "took {takeover:?}");
    let client = admin(addrs[&successor].1);

    // Restart PostgreSQL while the rollout goes on: the replicas keep their agents and the
    // lease (a restart is shorter than the lease), reconnect, and the rollout resumes.
    let restart = Instant::now();
    cluster.script("stop");
    cluster.script("start");
    eprintln!("restarted PostgreSQL in {:?}", restart.elapsed());
    if wait_terminal(&client, &id).await != RolloutStatus::Completed {
        // What went wrong, before the assertion below fails.
        for entry in client.audit(Some(&id)).await.unwrap() {
            eprintln!("audit: {:?}", entry.record.action);
        }
    }
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

/// A relaying replica killed with SIGKILL says goodbye for none of its agents; the
/// coordinator stops seeing it, and counts its agents as disconnected (here they cannot
/// reconnect anywhere) within the lease's length and a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_of_a_replica_that_dies_count_as_disconnected() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Nothing is downloaded here.
    let public_url = "http://127.0.0.1:9";
    let Cluster {
        mut replicas,
        addrs,
        coordinator,
        ..
    } = start_cluster(dir.path(), &cluster.url, public_url, &["s0", "s1"]).await;
    let relaying = if coordinator == "s0" { "s1" } else { "s0" };
    let balancer = FaultProxy::start().await;
    balancer.set_upstream(addrs[relaying].0);
    let agents: Vec<_> = (0..3)
        .map(|i| {
            let scheme = if i == 2 { "http" } else { "ws" };
            let endpoint = format!("{scheme}://{}/v1/opamp", balancer.addr());
            spawn_agent(&endpoint, i, "test", "1.0.0", Duration::from_millis(100))
        })
        .collect();
    let client = admin(addrs[&coordinator].1);
    wait_connected_at(&client, 3, "1.0.0").await;
    // Which replica coordinates shows in each one's metrics.
    let coordinating = client.metrics().await.unwrap();
    assert!(
        coordinating.contains("opamp_coordinating 1\n"),
        "{coordinating}"
    );
    let relaying_metrics = admin(addrs[relaying].1).metrics().await.unwrap();
    assert!(
        relaying_metrics.contains("opamp_coordinating 0\n"),
        "{relaying_metrics}"
    );
    let listed = client.agents().await.unwrap();
    assert!(
        listed
            .iter()
            .all(|a| a.replica.as_deref() == Some(relaying)),
        "{listed:?}"
    );

    let killed = replicas.iter_mut().find(|r| r.name == relaying).unwrap();
    killed.child.kill().await.unwrap();
    let killed_at = Instant::now();
    poll(
        "the dead replica's agents to count as disconnected",
        || async {
            let listed = client.agents().await.ok()?;
            listed
                .iter()
                .all(|a| !a.connected && a.replica.is_none())
                .then_some(())
        },
    )
    .await;
    let noticed = killed_at.elapsed();
    eprintln!(
        "the coordinator counted {relaying}'s agents disconnected {noticed:?} after the kill"
    );
    // Not seen for the lease's length (6 s), then the coordinator's next look (1 s).
    assert!(noticed < Duration::from_secs(12), "after {noticed:?}");

    stop_all(agents).await;
    for replica in &mut replicas {
        let _ = replica.child.kill().await;
    }
}
