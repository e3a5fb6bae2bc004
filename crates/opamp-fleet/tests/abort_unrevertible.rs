//! Issue 23 item 8: an abort whose previous version is signed without a downgrade
//! authorisation from the target. An agent that already runs the target refuses that version
//! (as a supervisor's trust policy does), so the server says at abort time which agents it
//! cannot expect back and why, and ends the rollout at once instead of sitting in `aborting`
//! for the install timeout and then ending `failed`.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fleet_support::{
    FailingVersions, admin, config, request, spawn_failing_agent, stop_all, wait_connected_at,
    wait_rollout, wait_terminal,
};
use opamp_fleet::{AuditAction, FleetServer, RolloutStatus};
use opamp_verify::{ContentHash, DowngradeAuthorisation, ReleaseSigner, Statement};

const PACKAGE: &str = "otelcol";

async fn add_signed(
    client: &opamp_fleet::admin::AdminClient,
    dir: &std::path::Path,
    signer: &ReleaseSigner,
    version: &str,
) {
    let bytes = format!("collector build {version}")
        .repeat(100)
        .into_bytes();
    let file = dir.join(format!("otelcol-{version}.bin"));
    std::fs::write(&file, &bytes).unwrap();
    let statement = Statement::new(
        PACKAGE,
        version,
        ContentHash::of(&bytes),
        u64::try_from(bytes.len()).unwrap(),
        SystemTime::now() + Duration::from_secs(3600),
    )
    .unwrap()
    .with_downgrade(DowngradeAuthorisation::Forbidden);
    let signature = signer.sign_statement(&statement).unwrap();
    client
        .add_package(&file, PACKAGE, version, &signature)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_names_agents_that_will_refuse_their_revert_and_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let signer = ReleaseSigner::generate_ed25519().unwrap();
    add_signed(&client, dir.path(), &signer, "1.0.0").await;
    add_signed(&client, dir.path(), &signer, "1.1.0").await;

    // Every agent refuses to go back to 1.0.0 once it ran 1.1.0, like a supervisor whose
    // trust policy sees no downgrade authorisation.
    let refuses: FailingVersions = Arc::new(["1.0.0".to_owned()].into_iter().collect());
    let endpoint = format!("ws://{}/v1/opamp", server.opamp_addr());
    let agents: Vec<_> = (0..2)
        .map(|i| {
            spawn_failing_agent(
                &endpoint,
                i,
                "test",
                "1.0.0",
                Duration::ZERO,
                refuses.clone(),
            )
        })
        .collect();
    wait_connected_at(&client, 2, "1.0.0").await;

    let mut long_bake = request("1.1.0", Duration::from_secs(3600));
    long_bake.install_timeout = Some(Duration::from_secs(120));
    let view = client.create_rollout(&long_bake).await.unwrap();
    assert_eq!(
        view.spec
            .unrevertible_versions
            .get("1.0.0")
            .map(String::as_str),
        Some("its signature does not authorise a downgrade"),
        "{:?}",
        view.spec
    );
    let id = view.id.to_string();
    wait_rollout(&client, &id, "the canary baking on 1.1.0", |v| {
        v.status == RolloutStatus::Baking
    })
    .await;

    let aborted_at = Instant::now();
    client
        .abort(&id, "operator changed their mind")
        .await
        .unwrap();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);
    let took = aborted_at.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the abort waited {took:?} (install timeout 120 s)"
    );
    let view = client.rollout(&id).await.unwrap();
    let reason = format!("{:?}", view.state);
    assert!(
        reason.contains("not waiting for 1 agents on 1.1.0"),
        "{reason}"
    );

    let named: Vec<String> = client
        .audit(Some(&id))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|stored| match stored.record.action {
            AuditAction::AgentNotReverted { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        named,
        vec!["its signature does not authorise a downgrade".to_owned()]
    );
    stop_all(agents).await;
    server.shutdown().await;
}
