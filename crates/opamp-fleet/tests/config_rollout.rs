//! Config rollouts end to end on 127.0.0.1: the config catalog through the admin API, real
//! WebSocket and HTTP agents (`tests/fleet_support`) that apply each offered remote config and
//! report `APPLIED`, or `FAILED` for a config holding `fail_with:`, and the same staged engine
//! as packages: completion, a bad config stopped at the canary and reverted, and a server
//! restarted mid-rollout that resumes.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::time::Duration;

use fleet_support::{
    TestAgent, admin, config, config_request, poll, spawn_config_agent, stop_all, upload_config,
    wait_connected_at, wait_rollout, wait_terminal,
};
use opamp_fleet::admin::AdminClient;
use opamp_fleet::{AuditAction, FleetError, FleetServer, RolloutStatus, TargetKind};

const GOOD: &str = "receivers: {otlp: {}}\nexporters: {debug: {}}\n";
const BAD: &str = "exporters: {nowhere: {}}\nfail_with: unknown exporter type \"nowhere\"\n";

/// `selected` agents labelled `env=test` and one bystander labelled `env=other`, every
/// third over plain HTTP.
fn spawn_config_fleet(
    opamp: std::net::SocketAddr,
    selected: usize,
    apply_time: Duration,
) -> Vec<TestAgent> {
    (0..=selected)
        .map(|i| {
            let env = if i < selected { "test" } else { "other" };
            let scheme = if i % 3 == 2 { "http" } else { "ws" };
            spawn_config_agent(&format!("{scheme}://{opamp}/v1/opamp"), i, env, apply_time)
        })
        .collect()
}

/// Waits until every agent of `env=test` runs the config `hash`.
async fn wait_all_applied(agents: &[TestAgent], hash: &str) {
    poll(&format!("every selected agent on {hash}"), || async {
        agents
            .iter()
            .filter(|a| a.env == "test")
            .all(|a| a.config().as_deref() == Some(hash))
            .then_some(())
    })
    .await;
}

async fn audit_actions(client: &AdminClient, id: &str) -> Vec<AuditAction> {
    client
        .audit(Some(id))
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.record.action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_rollout_completes_and_leaves_bystanders_alone() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let hash = upload_config(&client, "collector", "1", GOOD).await;
    let listed = client.configs().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hash, hash);
    let agents = spawn_config_fleet(server.opamp_addr(), 6, Duration::ZERO);
    wait_connected_at(&client, 7, "1.0.0").await;

    let view = client
        .create_rollout(&config_request(
            "collector",
            "1",
            Duration::from_millis(100),
        ))
        .await
        .unwrap();
    assert_eq!(view.spec.target_kind, TargetKind::Config);
    assert_eq!(view.spec.target_ref.as_deref(), Some(hash.as_str()));
    assert_eq!(view.agents.len(), 6);
    let id = view.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_all_applied(&agents, &hash).await;
    let listed = client.rollouts().await.unwrap();
    assert_eq!(
        listed[0].target_kind,
        TargetKind::Config,
        "the list tells it apart"
    );

    let actions = audit_actions(&client, &id).await;
    for agent in &agents {
        if agent.env == "test" {
            assert!(agent.configs_offered().iter().all(|h| *h == hash));
            assert!(actions.contains(&AuditAction::AgentInstalled {
                uid: agent.uid,
                version: hash.clone(),
            }));
        } else {
            assert!(
                agent.configs_offered().is_empty(),
                "bystander offered a config"
            );
            assert_eq!(agent.config(), None);
        }
    }
    // Every selected agent reported the config applied: none is left to roll it out to.
    let again = client
        .create_rollout(&config_request("collector", "1", Duration::ZERO))
        .await;
    assert!(
        matches!(
            again,
            Err(FleetError::AdminApi {
                status: Some(422),
                ..
            })
        ),
        "{again:?}"
    );
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_fails_the_canary_aborts_and_each_canary_gets_its_previous_config_back() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let good = upload_config(&client, "collector", "1", GOOD).await;
    let bad = upload_config(&client, "collector", "2", BAD).await;
    let agents = spawn_config_fleet(server.opamp_addr(), 6, Duration::ZERO);
    wait_connected_at(&client, 7, "1.0.0").await;

    // First onto hosts without any remote config: the canary fails and goes back to the
    // empty config map.
    let view = client
        .create_rollout(&config_request("collector", "2", Duration::ZERO))
        .await
        .unwrap();
    let id = view.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);
    let view = client.rollout(&id).await.unwrap();
    let canary = view.agents.iter().find(|a| a.wave == 0).unwrap().clone();
    let empty = canary.previous_version.clone();
    assert_ne!(empty, good);
    let reason = view
        .agents
        .iter()
        .find_map(|a| match &a.phase {
            opamp_fleet::AgentPhase::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        format!("{reason:?}").contains("unknown exporter"),
        "{reason:?}"
    );
    let canary_agent = agents.iter().find(|a| a.uid == canary.uid).unwrap();
    poll("the canary to apply the empty config", || async {
        (canary_agent.config().as_deref() == Some(empty.as_str())).then_some(())
    })
    .await;
    assert_eq!(
        canary_agent.configs_offered()[..2],
        [bad.clone(), empty.clone()]
    );
    for agent in agents.iter().filter(|a| a.uid != canary.uid) {
        assert!(
            agent.configs_offered().is_empty(),
            "only the canary was offered the bad config"
        );
    }

    // Now the good config everywhere, then the bad one again: the canary is put back on the
    // good config, and the fleet keeps it.
    let id = client
        .create_rollout(&config_request("collector", "1", Duration::ZERO))
        .await
        .unwrap()
        .id
        .to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_all_applied(&agents, &good).await;
    let view = client
        .create_rollout(&config_request("collector", "2", Duration::ZERO))
        .await
        .unwrap();
    assert!(view.agents.iter().all(|a| a.previous_version == good));
    let id = view.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);
    let view = client.rollout(&id).await.unwrap();
    let canary = view.agents.iter().find(|a| a.wave == 0).unwrap();
    assert!(canary.reverted);
    assert_eq!(
        view.progress.pending, 5,
        "no batch agent was offered the bad config"
    );
    let actions = audit_actions(&client, &id).await;
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, AuditAction::AgentFailed { uid, .. } if *uid == canary.uid)),
        "{actions:?}"
    );
    // The fleet keeps the good config: the canary gets it offered back and applies it.
    let canary_agent = agents.iter().find(|a| a.uid == canary.uid).unwrap();
    poll("the canary to be offered the good config back", || async {
        (canary_agent.configs_offered().last() == Some(&good)).then_some(())
    })
    .await;
    wait_all_applied(&agents, &good).await;
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_rollout_resumes_the_config_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let (opamp, admin_addr) = (server.opamp_addr(), server.admin_addr());
    let client = admin(admin_addr);
    let hash = upload_config(&client, "collector", "1", GOOD).await;
    let agents = spawn_config_fleet(opamp, 6, Duration::from_millis(100));
    wait_connected_at(&client, 7, "1.0.0").await;

    let view = client
        .create_rollout(&config_request("collector", "1", Duration::from_secs(2)))
        .await
        .unwrap();
    let id = view.id.to_string();
    wait_rollout(&client, &id, "the canary wave baking", |v| {
        v.status == RolloutStatus::Baking
    })
    .await;
    server.shutdown().await;

    let server = FleetServer::start(config(dir.path(), opamp, admin_addr))
        .await
        .unwrap();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_all_applied(&agents, &hash).await;
    let actions = audit_actions(&client, &id).await;
    let planned = actions.iter().filter(|a| a.kind() == "planned").count();
    assert_eq!(planned, 1, "resumed, not planned again");
    for agent in agents.iter().filter(|a| a.env == "test") {
        assert!(agent.configs_offered().iter().all(|h| *h == hash));
    }
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_config_rollout_plans_agents_from_their_stored_config_status() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let first = upload_config(&client, "collector", "1", GOOD).await;
    let agents = spawn_config_fleet(server.opamp_addr(), 3, Duration::ZERO);
    wait_connected_at(&client, 4, "1.0.0").await;
    let view = client
        .create_rollout(&config_request("collector", "1", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        wait_terminal(&client, &view.id.to_string()).await,
        RolloutStatus::Completed
    );
    wait_all_applied(&agents, &first).await;
    let selected: Vec<_> = agents
        .iter()
        .filter(|a| a.env == "test")
        .map(|a| a.uid)
        .collect();
    // The stored status is written with the agents' details; wait for it to be readable.
    for uid in &selected {
        poll("the applied config stored", || async {
            let view = client.agent(&uid.to_string()).await.ok()?;
            let status = view.details.remote_config_status?;
            (status.status == "applied" && hex::encode(&status.hash) == first).then_some(())
        })
        .await;
    }
    stop_all(agents).await;
    server.shutdown().await;

    // None of them is connected to the new process: what they run comes from the store.
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let second = "receivers: {otlp: {}}\nexporters: {debug: {verbosity: detailed}}\n";
    upload_config(&client, "collector", "2", second).await;
    let view = client
        .create_rollout(&config_request("collector", "2", Duration::ZERO))
        .await
        .unwrap();
    let mut planned: Vec<_> = view.agents.iter().map(|a| a.uid).collect();
    planned.sort();
    let mut expected = selected.clone();
    expected.sort();
    assert_eq!(planned, expected);
    for agent in &view.agents {
        assert_eq!(agent.previous_version, first, "what a revert goes back to");
        assert!(!agent.connected);
    }
    client
        .abort(&view.id.to_string(), "test over")
        .await
        .unwrap();
    server.shutdown().await;
}
