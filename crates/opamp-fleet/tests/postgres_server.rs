//! The fleet server on PostgreSQL (`[store] postgres_url`), end to end on 127.0.0.1: real
//! agents, a rollout, a restart of the server mid-rollout and a restart of PostgreSQL itself
//! mid-rollout. Each test runs its own throwaway cluster from Debian's packages
//! (`.ci/postgres.sh`), so stopping it disturbs no other test. Skipped unless
//! `OPAMP_TEST_POSTGRES_URL` is set (PostgreSQL is installed); CI sets it and
//! `OPAMP_INTEROP_REQUIRED=1`.

#![cfg(feature = "postgres")]
// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleet_support::cluster::{OwnCluster, assert_no_step_repeated, lease_takes};

use fleet_support::{
    admin, assert_converged, config, poll, request, spawn_fleet, stop_all, upload,
    wait_connected_at, wait_rollout,
};
use opamp_fleet::config::DatabaseUrl;
use opamp_fleet::{FleetServer, FleetServerConfig, RolloutStatus, RunningFleetServer};

fn postgres_config(data_dir: &Path, listen: SocketAddr, url: &str) -> FleetServerConfig {
    let mut config = config(data_dir, listen, "127.0.0.1:0".parse().unwrap());
    config.store.postgres_url = Some(DatabaseUrl(url.to_owned()));
    config
}

async fn start(data_dir: &Path, listen: SocketAddr, url: &str) -> RunningFleetServer {
    FleetServer::start(postgres_config(data_dir, listen, url))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_on_postgres_survives_a_server_restart_and_a_database_restart() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "127.0.0.1:0".parse().unwrap(), &cluster.url).await;
    let opamp_addr = server.opamp_addr();
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(opamp_addr, 9, 2, Duration::from_millis(100));
    wait_connected_at(&client, 11, "1.0.0").await;

    let id = client
        .create_rollout(&request("2.0.0", Duration::from_millis(1_500)))
        .await
        .unwrap()
        .id
        .to_string();
    wait_rollout(&client, &id, "the canary wave baking", |view| {
        view.status == RolloutStatus::Baking && view.progress.total > view.progress.healthy
    })
    .await;

    // PostgreSQL goes away while the canary bakes: the bake ends, agents keep reporting, and
    // every step the coordinator takes meanwhile waits for the database, unsaved.
    cluster.script("stop");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    cluster.script("start");

    // The rollout moves on once the database is back, on the same server.
    wait_rollout(&client, &id, "a batch wave after the outage", |view| {
        view.status == RolloutStatus::Batch || view.status.is_terminal()
    })
    .await;

    // Then the server itself restarts, and resumes from what PostgreSQL holds.
    server.shutdown().await;
    let server = start(dir.path(), opamp_addr, &cluster.url).await;
    let client = admin(server.admin_addr());
    assert_converged(&client, &id, &agents, "2.0.0").await;

    // Every wave started once, whatever restarted.
    assert_no_step_repeated(&client, &id).await;

    // The store kept the agents too: a server started on the database lists them all.
    let listed = poll("every agent listed", || async {
        let listed = client.agents().await.ok()?;
        (listed.len() == agents.len()).then_some(listed)
    })
    .await;
    assert!(listed.iter().all(|agent| agent.connected));
    stop_all(agents).await;
    server.shutdown().await;
}

/// A replica cut off from the database stops serving before its lease can expire, so that
/// no other replica ever decides beside it, and a relaying replica cut off stops too, so
/// that its agents move; the next server on the database takes the lease with a newer
/// fencing token, and the audit log names both holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_stops_and_the_next_one_takes_over() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = postgres_config(dir.path(), "127.0.0.1:0".parse().unwrap(), &cluster.url);
    settings.store.lease_ttl = Some(Duration::from_secs(2));
    settings.store.replica_name = Some("first".into());
    let server = FleetServer::start(settings.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.coordinating())
        .await
        .expect("the only replica takes the lease");
    let client = admin(server.admin_addr());
    client.agents().await.unwrap();
    // A second replica, relaying for the first.
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower_settings = postgres_config(
        follower_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &cluster.url,
    );
    follower_settings.store.lease_ttl = Some(Duration::from_secs(2));
    follower_settings.store.replica_name = Some("follower".into());
    let follower = FleetServer::start(follower_settings).await.unwrap();
    let follower_client = admin(follower.admin_addr());
    follower_client.agents().await.unwrap();

    cluster.script("stop");
    let cut_off = std::time::Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(10), server.lease_lost())
        .await
        .expect("the replica notices it lost the lease");
    let noticed = cut_off.elapsed();
    assert!(
        matches!(lost, opamp_fleet::FleetError::LeaseLost { .. }),
        "{lost:?}"
    );
    // Within the lease (2 s) after its last renewal, which was at most a third of it ago.
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    // It stopped deciding and answering: the admin API is gone.
    assert!(client.agents().await.is_err());
    server.shutdown().await;
    // The relaying replica cannot relay either: it stops too, within the lease's length
    // after the database last answered, so that its agents move to a replica that can.
    let lost = tokio::time::timeout(Duration::from_secs(10), follower.lease_lost())
        .await
        .expect("the relaying replica notices it is cut off");
    let noticed = cut_off.elapsed();
    assert!(
        lost.to_string().contains("cut off from the database"),
        "{lost}"
    );
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    assert!(follower_client.agents().await.is_err());
    follower.shutdown().await;

    cluster.script("start");
    settings.store.replica_name = Some("second".into());
    let started = std::time::Instant::now();
    let next = FleetServer::start(settings).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), next.coordinating())
        .await
        .expect("the next replica takes the lease");
    // The lease the first one held must expire in the database before anyone takes it.
    assert!(started.elapsed() < Duration::from_secs(10));
    let client = admin(next.admin_addr());
    assert_eq!(
        lease_takes(&client).await,
        [("first".to_owned(), 1), ("second".to_owned(), 2)]
    );
    next.shutdown().await;
}

/// The coordinating replica alone loses the database (its connections go through a proxy
/// that is cut): it stops deciding and serving before its lease can expire, the other
/// replica takes the lease, and the agents that were on the first one reconnect, through the
/// load balancer, to the second, which then holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_from_the_database_stops_and_its_agents_move_to_the_next_replica() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let database: SocketAddr = cluster
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let cut = fleet_support::proxy::FaultProxy::start().await;
    cut.set_upstream(database);
    let through_cut = cluster
        .url
        .replace(&database.to_string(), &cut.addr().to_string());

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut settings_a = postgres_config(dir_a.path(), any, &through_cut);
    settings_a.store.lease_ttl = Some(Duration::from_secs(2));
    settings_a.store.replica_name = Some("a".into());
    let a = FleetServer::start(settings_a).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.coordinating())
        .await
        .expect("the first replica coordinates");
    let mut settings_b = postgres_config(dir_b.path(), any, &cluster.url);
    settings_b.store.lease_ttl = Some(Duration::from_secs(2));
    settings_b.store.replica_name = Some("b".into());
    let b = FleetServer::start(settings_b).await.unwrap();
    let client_b = admin(b.admin_addr());

    let balancer = fleet_support::proxy::FaultProxy::start().await;
    balancer.set_upstream(a.opamp_addr());
    let agents = spawn_fleet(balancer.addr(), 2, 1, Duration::from_millis(100));
    wait_connected_at(&client_b, 3, "1.0.0").await;
    let on = |replica: &'static str| {
        let client = client_b.clone();
        async move {
            let listed = client.agents().await.ok()?;
            listed
                .iter()
                .all(|agent| agent.connected && agent.replica.as_deref() == Some(replica))
                .then_some(())
        }
    };
    poll("every agent held by the first replica", || on("a")).await;

    // Cut the first replica off the database: nothing reaches PostgreSQL from it any more.
    cut.set_upstream("127.0.0.1:9".parse().unwrap());
    cut.drop_all();
    let lost = tokio::time::timeout(Duration::from_secs(10), a.lease_lost())
        .await
        .expect("the cut-off coordinator stops");
    assert!(
        matches!(lost, opamp_fleet::FleetError::LeaseLost { .. }),
        "{lost}"
    );
    a.shutdown().await;
    // The load balancer's health check finds only the second replica listening.
    balancer.set_upstream(b.opamp_addr());
    balancer.drop_all();

    tokio::time::timeout(Duration::from_secs(10), b.coordinating())
        .await
        .expect("the second replica takes the lease");
    poll("every agent held by the second replica", || on("b")).await;
    assert_eq!(
        lease_takes(&client_b).await,
        [("a".to_owned(), 1), ("b".to_owned(), 2)]
    );
    stop_all(agents).await;
    b.shutdown().await;
}
