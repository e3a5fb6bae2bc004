//! The first rollout onto hosts that run a version the catalog does not have: refused unless
//! the operator adopts such versions, and then the server never offers them back (the agents'
//! supervisors still roll back by themselves), which the rollout's spec and the audit log show.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::sync::Arc;
use std::time::Duration;

use fleet_support::{
    FailingVersions, admin, config, request, spawn_failing_agent, stop_all, upload,
    wait_connected_at, wait_terminal,
};
use opamp_fleet::{AuditAction, FleetError, FleetServer, RolloutStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_running_versions_are_refused_unless_adopted_and_then_never_offered_back() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    // The hosts run 1.0.0, which nobody added to the catalog.
    upload(&client, dir.path(), "2.0.0").await;
    upload(&client, dir.path(), "3.0.0").await;
    let failing: FailingVersions = Arc::new(["3.0.0".to_owned()].into_iter().collect());
    let endpoint = format!("ws://{}/v1/opamp", server.opamp_addr());
    let agents: Vec<_> = (0..4)
        .map(|i| {
            spawn_failing_agent(
                &endpoint,
                i,
                "test",
                "1.0.0",
                Duration::ZERO,
                failing.clone(),
            )
        })
        .collect();
    wait_connected_at(&client, 4, "1.0.0").await;

    match client
        .create_rollout(&request("3.0.0", Duration::ZERO))
        .await
    {
        Err(FleetError::AdminApi {
            status: Some(404),
            message,
        }) => assert!(
            message.contains("1.0.0") && message.contains("--adopt-unknown-versions"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Adopted: the bad version fails the canary, and the server offers nothing back.
    let mut bad = request("3.0.0", Duration::ZERO);
    bad.adopt_unknown_versions = true;
    let view = client.create_rollout(&bad).await.unwrap();
    assert_eq!(view.spec.adopted_versions, vec!["1.0.0".to_owned()]);
    let id = view.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);
    for agent in &agents {
        assert!(
            !agent.offered().contains(&"1.0.0".to_owned()),
            "1.0.0 was offered: {:?}",
            agent.offered()
        );
    }
    let actions: Vec<AuditAction> = client
        .audit(Some(&id))
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.record.action)
        .collect();
    assert!(actions.contains(&AuditAction::AdoptedVersions {
        versions: vec!["1.0.0".to_owned()]
    }));
    assert!(
        actions.iter().any(
            |a| matches!(a, AuditAction::AgentNotReverted { version, .. } if version == "1.0.0")
        ),
        "{actions:?}"
    );

    // A good version, adopted the same way, completes.
    let mut good = request("2.0.0", Duration::ZERO);
    good.adopt_unknown_versions = true;
    let id = client.create_rollout(&good).await.unwrap().id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_connected_at(&client, 4, "2.0.0").await;
    stop_all(agents).await;
    server.shutdown().await;
}
