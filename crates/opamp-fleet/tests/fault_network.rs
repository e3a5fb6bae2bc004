//! A rollout through a faulty network: every agent connection and every package download goes
//! through an in-test TCP proxy that, on a seeded schedule, drops all open connections, delays
//! every forwarded chunk, or black-holes traffic for a while. The fleet must still converge:
//! the rollout completes, every agent installed the target once verified, and the server's
//! view equals what the agents really run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::time::Duration;

use fleet_support::proxy::{FaultProxy, chaos};
use fleet_support::{
    WAIT, admin, assert_converged, config, request, spawn_fleet, stop_all, upload,
    wait_connected_at,
};
use opamp_fleet::FleetServer;

async fn rollout_through_a_faulty_network(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start().await;
    let any = "127.0.0.1:0".parse().unwrap();
    let mut settings = config(dir.path(), any, any);
    // Offers point downloads at the proxy too.
    settings.public_url = Some(format!("http://{}", proxy.addr()));
    let server = FleetServer::start(settings).await.unwrap();
    proxy.set_upstream(server.opamp_addr());
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;

    // WebSocket and plain-HTTP agents, plus one bystander outside the selector.
    let agents = spawn_fleet(proxy.addr(), 8, 1, Duration::from_millis(150));
    wait_connected_at(&client, 9, "1.0.0").await;

    let stop = tokio_util::sync::CancellationToken::new();
    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(500)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    let (log, ()) = tokio::join!(chaos(&proxy, seed, stop.clone()), async {
        let status = tokio::time::timeout(WAIT, fleet_support::wait_terminal(&client, &id))
            .await
            .expect("the rollout ended in time");
        eprintln!("seed {seed}: rollout ended {}", status.as_str());
        stop.cancel();
    });
    eprintln!(
        "seed {seed}: {log:?}; proxy accepted {} connections, dropped {}",
        proxy.accepted(),
        proxy.dropped()
    );
    assert!(
        log.drops + log.black_holes > 0,
        "the schedule injected no fault: {log:?}"
    );
    assert_converged(&client, &id, &agents, "2.0.0").await;
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_converges_through_drops_delays_and_black_holes() {
    // Fixed seeds keep failures reproducible; OPAMP_FAULT_SEED runs one more.
    let mut seeds = vec![1, 2];
    if let Some(seed) = std::env::var("OPAMP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        seeds.push(seed);
    }
    for seed in seeds {
        rollout_through_a_faulty_network(seed).await;
    }
}
