//! Rollout steps the store cannot save are kept and saved later, not lost (issue 23, item 6).
//!
//! The fault is real: while the canary installs, the test holds SQLite's write lock on the
//! server's own `fleet.db` (`BEGIN EXCLUSIVE` from a second connection), so the server's
//! write of the canary's "installed" report fails (busy) exactly as a full disk makes it
//! fail. The agent never repeats that report. When the lock goes, the rollout must go on
//! and complete; before the fix the report was dropped and the canary timed out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::time::Duration;

use fleet_support::{
    admin, assert_converged, config, poll, request, spawn_fleet, stop_all, upload,
    wait_connected_at,
};
use opamp_fleet::FleetServer;

/// How long the store refuses writes: longer than the server's busy timeout (5 s), so that
/// its write of the report really fails.
const OUTAGE: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_store_could_not_save_is_saved_later_and_the_rollout_completes() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(server.opamp_addr(), 3, 0, Duration::from_millis(1500));
    wait_connected_at(&client, 3, "1.0.0").await;

    let mut rollout = request("2.0.0", Duration::ZERO);
    rollout.install_timeout = Some(Duration::from_secs(20));
    let view = client.create_rollout(&rollout).await.unwrap();

    // The store stops taking writes while the canary (offered at creation) installs.
    let blocker = rusqlite::Connection::open(dir.path().join("fleet.db")).unwrap();
    blocker.busy_timeout(Duration::from_secs(10)).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let canary = poll("the canary to run 2.0.0", || async {
        agents
            .iter()
            .find(|a| a.version() == "2.0.0")
            .map(|a| a.uid)
    })
    .await;
    // The fault's duration, not a synchronisation: the report arrives and its save fails.
    tokio::time::sleep(OUTAGE).await;
    let stored = client.rollout(view.id.as_str()).await.unwrap();
    assert!(
        !stored.status.is_terminal(),
        "rollout ended during the outage: {stored:?}"
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    tracing::info!(%canary, "store writable again");

    assert_converged(&client, view.id.as_str(), &agents, "2.0.0").await;
    stop_all(agents).await;
    server.shutdown().await;
}
