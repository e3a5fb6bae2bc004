//! The fleet server end to end on 127.0.0.1: real WebSocket and HTTP agents
//! (`tests/fleet_support`: the transport's client with an `AgentSession`) that install offers
//! by downloading the file over HTTP, checking its SHA-256 and reporting `Installed` or
//! `InstallFailed`; real SQLite files; the admin API through `AdminClient`.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleet_support::{
    FailingVersions, PACKAGE, TestAgent, spawn_failing_agent, stop_all, upload, versions,
    wait_connected_at,
};
use opamp_fleet::admin::{AdminClient, RolloutRequest, RolloutView};
use opamp_fleet::audit::Actor;
use opamp_fleet::config::OperatorSettings;
use opamp_fleet::{
    AgentPhase, BatchPlan, FleetError, FleetServer, FleetServerConfig, RolloutStatus,
    RunningFleetServer,
};
use opamp_proto::InstanceUid;

const TOKEN: &str = "test-admin-token";

// ----- the server ---------------------------------------------------------------------

fn config(data_dir: &Path, listen: SocketAddr) -> FleetServerConfig {
    let mut config = FleetServerConfig::new(listen, data_dir, TOKEN);
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
}

async fn start_server(data_dir: &Path, listen: SocketAddr) -> RunningFleetServer {
    FleetServer::start(config(data_dir, listen)).await.unwrap()
}

fn admin(server: &RunningFleetServer) -> AdminClient {
    AdminClient::new(&format!("http://{}", server.admin_addr()), TOKEN).unwrap()
}

/// Follows the rollout's event stream until a terminal status.
async fn wait_terminal(client: &AdminClient, id: &str) -> RolloutStatus {
    let mut events = client.rollout_events(id).await.unwrap();
    let follow = async {
        while let Some(update) = events.next().await {
            let update = update.unwrap();
            if update.status.is_terminal() {
                return update.status;
            }
        }
        panic!("event stream ended before the rollout finished");
    };
    tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("rollout finished in time")
}

/// Follows the rollout's event stream until `status`.
async fn wait_status(client: &AdminClient, id: &str, status: RolloutStatus) {
    let mut events = client.rollout_events(id).await.unwrap();
    let follow = async {
        while let Some(update) = events.next().await {
            if update.unwrap().status == status {
                return;
            }
        }
        panic!("event stream ended before {status}");
    };
    tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("status reached in time");
}

// ----- the simulated agents (tests/fleet_support) ----------------------------------------

/// `count` agents labelled `env=test` at 1.0.0 over WebSocket; installs of `failing` versions
/// fail.
fn spawn_fleet(addr: SocketAddr, count: usize, failing: &[&str]) -> Vec<TestAgent> {
    let failing: FailingVersions = Arc::new(failing.iter().map(|v| (*v).to_owned()).collect());
    let endpoint = format!("ws://{addr}/v1/opamp");
    (0..count)
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
        .collect()
}

fn request(version: &str, bake: Duration) -> RolloutRequest {
    let mut request = RolloutRequest::new(PACKAGE, version);
    request.selector = "env=test".into();
    request.canary_share = Some(0.05);
    request.batches = Some(BatchPlan::Share(0.5));
    request.bake_time = Some(bake);
    request.install_timeout = Some(Duration::from_secs(20));
    request.health_timeout = Some(Duration::from_secs(20));
    request
}

// ----- tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollout_to_a_good_version_completes_and_metrics_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = admin(&server);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(server.opamp_addr(), 10, &[]);
    wait_connected_at(&client, 10, "1.0.0").await;

    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(rollout.progress.total, 10);
    assert_eq!(
        rollout.waves.len(),
        3,
        "one canary, then two batches of 50 %"
    );
    assert_eq!(
        wait_terminal(&client, &rollout.id.to_string()).await,
        RolloutStatus::Completed
    );

    wait_connected_at(&client, 10, "2.0.0").await;
    let metrics = client.metrics().await.unwrap();
    assert!(metrics.contains("opamp_agents_connected 10\n"), "{metrics}");
    // A single server always runs the rollout driver.
    assert!(metrics.contains("opamp_coordinating 1\n"), "{metrics}");
    assert!(
        metrics.contains(r#"opamp_agents_by_version{package="otelcol",version="2.0.0"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"opamp_agents_by_health{healthy="true"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"opamp_install_results_total{result="installed"} 10"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"state="completed"} 1"#), "{metrics}");

    let audit = client.audit(Some(&rollout.id.to_string())).await.unwrap();
    let installs = audit
        .iter()
        .filter(|a| a.record.action.kind() == "agent_installed")
        .count();
    assert_eq!(installs, 10, "every install result is audited");
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_fails_the_canary_which_is_reverted_and_no_other_agent_is_offered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = admin(&server);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "3.0.0").await;
    let agents = spawn_fleet(server.opamp_addr(), 20, &["3.0.0"]);
    wait_connected_at(&client, 20, "1.0.0").await;

    let rollout = client
        .create_rollout(&request("3.0.0", Duration::from_millis(100)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);

    let view: RolloutView = client.rollout(&id).await.unwrap();
    for agent in &view.agents {
        if agent.wave == 0 {
            assert!(
                matches!(agent.phase, AgentPhase::Failed { .. }),
                "{agent:?}"
            );
            assert!(agent.reverted);
        } else {
            assert!(
                matches!(agent.phase, AgentPhase::Pending),
                "non-canary touched: {agent:?}"
            );
        }
    }
    assert_eq!(view.waves[0].size(), 1, "5 % of 20 is one canary");
    let all = client.agents().await.unwrap();
    assert_eq!(versions(&all), BTreeMap::from([("1.0.0".to_owned(), 20)]));
    let metrics = client.metrics().await.unwrap();
    assert!(
        metrics.contains(r#"opamp_install_results_total{result="failed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"state="rolled_back"} 1"#), "{metrics}");
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_rollout_resumes_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let opamp_addr = server.opamp_addr();
    let client = admin(&server);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(opamp_addr, 6, &[]);
    wait_connected_at(&client, 6, "1.0.0").await;

    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(1500)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    // A second rollout of the same package and selector is refused with the reason.
    match client
        .create_rollout(&request("2.0.0", Duration::ZERO))
        .await
    {
        Err(FleetError::AdminApi {
            status: Some(409),
            message,
        }) => {
            assert!(message.contains(&id), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Stop while the canary wave bakes.
    wait_status(&client, &id, RolloutStatus::Baking).await;
    server.shutdown().await;

    let server = start_server(dir.path(), opamp_addr).await;
    let client = admin(&server);
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_connected_at(&client, 6, "2.0.0").await;
    let audit = client.audit(Some(&id)).await.unwrap();
    let planned = audit
        .iter()
        .filter(|a| a.record.action.kind() == "planned")
        .count();
    assert_eq!(planned, 1);
    stop_all(agents).await;
    server.shutdown().await;
}

/// Agents that register after a rollout completed (new hosts) and match its selector are
/// offered its version, also after a server restart; agents outside the selector are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_matching_a_completed_rollout_get_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let opamp_addr = server.opamp_addr();
    let client = admin(&server);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let mut agents = spawn_fleet(opamp_addr, 3, &[]);
    wait_connected_at(&client, 3, "1.0.0").await;
    let rollout = client
        .create_rollout(&request("2.0.0", Duration::ZERO))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    wait_connected_at(&client, 3, "2.0.0").await;

    // A new host at the old version, and one outside the selector.
    let endpoint = format!("ws://{opamp_addr}/v1/opamp");
    let none = FailingVersions::default();
    agents.push(spawn_failing_agent(
        &endpoint,
        3,
        "test",
        "1.0.0",
        Duration::ZERO,
        none.clone(),
    ));
    let bystander =
        spawn_failing_agent(&endpoint, 4, "other", "1.0.0", Duration::ZERO, none.clone());
    let newcomer = agents[3].uid;
    let caught_up = |agents: &[opamp_fleet::admin::AgentSummary], uid: InstanceUid| {
        agents
            .iter()
            .any(|a| a.uid == uid && a.runs(PACKAGE, "2.0.0"))
    };
    wait_for(&client, "the newcomer on 2.0.0", |all| {
        caught_up(all, newcomer)
    })
    .await;
    let audit = client.audit(Some(&id)).await.unwrap();
    let about_newcomer: Vec<&str> = audit
        .iter()
        .filter(|a| a.record.action.agent() == Some(newcomer))
        .map(|a| a.record.action.kind())
        .collect();
    assert_eq!(about_newcomer, ["agent_caught_up", "agent_installed"]);
    assert_eq!(bystander.version(), "1.0.0");
    assert!(bystander.offered().is_empty(), "{:?}", bystander.offered());
    for member in &agents[..3] {
        assert_eq!(
            member.offered(),
            vec!["2.0.0".to_owned()],
            "members get the rollout's offer once"
        );
    }

    // After a restart the completed rollout still stands for the next newcomer.
    server.shutdown().await;
    let server = start_server(dir.path(), opamp_addr).await;
    let client = admin(&server);
    agents.push(spawn_failing_agent(
        &endpoint,
        5,
        "test",
        "1.0.0",
        Duration::ZERO,
        none,
    ));
    let second = agents[4].uid;
    wait_for(&client, "the second newcomer on 2.0.0", |all| {
        caught_up(all, second)
    })
    .await;
    assert_eq!(bystander.version(), "1.0.0");
    bystander.stop().await;
    stop_all(agents).await;
    server.shutdown().await;
}

/// Polls the agent list until `check` holds (bounded).
async fn wait_for(
    client: &AdminClient,
    what: &str,
    check: impl Fn(&[opamp_fleet::admin::AgentSummary]) -> bool,
) {
    fleet_support::poll(what, || async {
        let agents = client.agents().await.ok()?;
        check(&agents).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_requests_without_the_token_and_unrevertible_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let base = format!("http://{}", server.admin_addr());
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/agents",
        "/api/v1/rollouts",
        "/api/v1/audit",
        "/metrics",
    ] {
        let none = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("test-admin-tokeN")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let right = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path}");
    }
    let create = http
        .post(format!("{base}/api/v1/rollouts"))
        .header("content-type", "application/json")
        .body(r#"{"package": "otelcol", "version": "9"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 401);
    let wrong_client = AdminClient::new(&base, "nope").unwrap();
    assert!(matches!(
        wrong_client.agents().await,
        Err(FleetError::AdminApi {
            status: Some(401),
            ..
        })
    ));
    // Unknown rollouts are 404, unknown packages refuse the rollout with 404 too.
    let client = admin(&server);
    assert!(matches!(
        client.rollout("nope").await,
        Err(FleetError::AdminApi {
            status: Some(404),
            ..
        })
    ));
    assert!(matches!(
        client
            .create_rollout(&RolloutRequest::new(PACKAGE, "9.9.9"))
            .await,
        Err(FleetError::AdminApi {
            status: Some(404),
            ..
        })
    ));
    // A rollout whose agents could not be reverted (their version is not in the catalog)
    // is refused before anything is offered.
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(server.opamp_addr(), 2, &[]);
    wait_connected_at(&client, 2, "1.0.0").await;
    match client
        .create_rollout(&request("2.0.0", Duration::ZERO))
        .await
    {
        Err(FleetError::AdminApi {
            status: Some(404),
            message,
        }) => {
            assert!(message.contains("1.0.0"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(client.rollouts().await.unwrap().is_empty());
    stop_all(agents).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_abort_and_http_agents_fetch_with_the_download_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    settings.download_token = Some("download-secret".into());
    // Two more operators with tokens of their own: the audit log must name who did what.
    let alice_token = dir.path().join("alice.token");
    std::fs::write(&alice_token, "alice-secret\n").unwrap();
    let mut alice = OperatorSettings::new("alice", "unused");
    alice.token = None;
    alice.token_file = Some(alice_token);
    settings.admin.operators.push(alice);
    settings
        .admin
        .operators
        .push(OperatorSettings::new("bob@ops", "bob-secret"));
    settings
        .admin
        .operators
        .push(OperatorSettings::new("prometheus", "scrape-secret").read_only());
    let server = FleetServer::start(settings).await.unwrap();
    let client = admin(&server);
    let base = format!("http://{}", server.admin_addr());
    let alice = AdminClient::new(&base, "alice-secret").unwrap();
    let bob = AdminClient::new(&base, "bob-secret").unwrap();
    let viewer = AdminClient::new(&base, "scrape-secret").unwrap();
    upload(&client, dir.path(), "1.0.0").await;
    upload(&alice, dir.path(), "2.0.0").await;
    let addr = server.opamp_addr();
    let failing: FailingVersions = Arc::default();
    let agents: Vec<TestAgent> = (0..4)
        .map(|i| {
            let scheme = if i % 2 == 0 { "ws" } else { "http" };
            spawn_failing_agent(
                &format!("{scheme}://{addr}/v1/opamp"),
                i,
                "test",
                "1.0.0",
                Duration::ZERO,
                failing.clone(),
            )
        })
        .collect();
    wait_connected_at(&client, 4, "1.0.0").await;

    // The catalog names who added each package.
    let packages = client.packages().await.unwrap();
    let added_by: Vec<_> = packages.iter().map(|p| p.added_by.as_deref()).collect();
    assert_eq!(added_by, [Some("admin"), Some("alice")]);
    // Downloads need the token; offers carry it as a header for the agents.
    let relative = packages[0]
        .file_path
        .strip_prefix(dir.path().join("packages"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let url = format!("http://{addr}/packages/{relative}");
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let with_token = http
        .get(&url)
        .bearer_auth("download-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);

    let mut request = request("2.0.0", Duration::from_secs(3600));
    // Every agent in the canary wave, so both transports install and revert.
    request.canary_share = Some(1.0);
    let rollout = client.create_rollout(&request).await.unwrap();
    let id = rollout.id.to_string();
    wait_status(&client, &id, RolloutStatus::Baking).await;
    let paused = alice.pause(&id).await.unwrap();
    assert_eq!(paused.status, RolloutStatus::Paused);
    match client.pause(&id).await {
        Err(FleetError::AdminApi {
            status: Some(409), ..
        }) => {}
        other => panic!("pausing twice must be refused, got {other:?}"),
    }
    // A read-only operator sees everything and changes nothing.
    let metrics = viewer.metrics().await.unwrap();
    assert!(metrics.contains("opamp_agents_connected"));
    // The listener counts both transports' traffic.
    for transport in ["websocket", "http"] {
        for family in [
            "opamp_transport_messages_received_total",
            "opamp_transport_messages_sent_total",
            "opamp_transport_received_bytes_total",
        ] {
            let prefix = format!("{family}{{transport=\"{transport}\"}} ");
            let value: u64 = metrics
                .lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
                .parse()
                .unwrap();
            assert!(value > 0, "{prefix}{value}");
        }
    }
    assert_eq!(
        viewer.rollout(&id).await.unwrap().status,
        RolloutStatus::Paused
    );
    match viewer.resume(&id).await {
        Err(FleetError::AdminApi {
            status: Some(403),
            message,
        }) => assert!(message.contains("prometheus"), "{message}"),
        other => panic!("a read-only operator must not resume, got {other:?}"),
    }
    let resumed = bob.resume(&id).await.unwrap();
    assert_eq!(resumed.status, RolloutStatus::Baking);
    let moved: Vec<_> = resumed
        .agents
        .iter()
        .filter(|a| a.was_offered())
        .map(|a| a.uid)
        .collect();
    assert_eq!(moved.len(), 4, "every agent moved to 2.0.0");

    // Abort: the agents, which run 2.0.0 now, are offered 1.0.0 again and install it.
    let aborted = alice
        .abort(&id, "operator changed their mind")
        .await
        .unwrap();
    assert_eq!(aborted.status, RolloutStatus::Aborting);
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::RolledBack);
    wait_connected_at(&client, 4, "1.0.0").await;
    let audit = client.audit(Some(&id)).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|a| a.record.action.kind()).collect();
    for kind in ["paused", "resumed", "aborted", "rolled_back"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "agent_reverted").count(), 4);
    let actor_of = |kind: &str| {
        audit
            .iter()
            .find(|a| a.record.action.kind() == kind)
            .map(|a| a.record.actor.clone())
    };
    let operator = |name: &str| Some(Actor::Operator(name.to_owned()));
    assert_eq!(actor_of("started"), operator("admin"));
    assert_eq!(actor_of("paused"), operator("alice"));
    assert_eq!(actor_of("resumed"), operator("bob@ops"));
    assert_eq!(actor_of("aborted"), operator("alice"));
    stop_all(agents).await;
    server.shutdown().await;
}

/// Measures a whole rollout through the server: `cargo test -p opamp-fleet --release --test
/// server_rollout -- --ignored --nocapture` (agent count from `OPAMP_FLEET_SCALE_AGENTS`,
/// default 300). Every agent runs in this process, so the numbers include the agents' work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn scale_rollout_timing() {
    let count: usize = std::env::var("OPAMP_FLEET_SCALE_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    // `OPAMP_FLEET_SCALE_SYNC=normal` measures with SQLite synchronous=NORMAL.
    if std::env::var("OPAMP_FLEET_SCALE_SYNC").as_deref() == Ok("normal") {
        settings.store.synchronous = opamp_fleet::config::Durability::Normal;
    }
    let server = FleetServer::start(settings).await.unwrap();
    let client = admin(&server);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let started = std::time::Instant::now();
    let agents = spawn_fleet(server.opamp_addr(), count, &[]);
    wait_connected_at(&client, count, "1.0.0").await;
    let registered = started.elapsed();

    let started = std::time::Instant::now();
    let mut request = request("2.0.0", Duration::ZERO);
    request.batches = Some(BatchPlan::Share(0.25));
    let rollout = client.create_rollout(&request).await.unwrap();
    let id = rollout.id.to_string();
    assert_eq!(wait_terminal(&client, &id).await, RolloutStatus::Completed);
    let rolled_out = started.elapsed();
    let steps = client.audit(Some(&id)).await.unwrap().len();
    let view = client.rollout(&id).await.unwrap();
    println!(
        "{count} agents: registered in {registered:.2?}; rollout (canary + 4 batches, no bake) \
         completed in {rolled_out:.2?}; {steps} audit records; {} engine events persisted \
         ({:.0} events/s)",
        view.sequence,
        view.sequence as f64 / rolled_out.as_secs_f64()
    );
    stop_all(agents).await;
    server.shutdown().await;
}

/// LAST SEEN follows an agent that only sends heartbeats (it changes nothing else), so an
/// operator can tell a quiet healthy agent from one that went away.
#[tokio::test]
async fn last_seen_moves_on_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    // The server offers a 1 s heartbeat (the protocol counts whole seconds) and LAST SEEN
    // moves every second heartbeat. Without the offer it would assume the agents' default of
    // 30 s and move every minute.
    let mut config = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.heartbeat_interval = Some(Duration::from_secs(1));
    let server = FleetServer::start(config).await.unwrap();
    let client = admin(&server);
    let agents = spawn_fleet(server.opamp_addr(), 1, &[]);
    wait_connected_at(&client, 1, "1.0.0").await;
    let first = client.agents().await.unwrap()[0].last_seen;
    let later = fleet_support::poll("LAST SEEN to move on heartbeats", || async {
        let seen = client.agents().await.ok()?.first()?.last_seen;
        (seen.as_millis() >= first.as_millis() + 1500).then_some(seen)
    })
    .await;
    assert!(later.as_millis() > first.as_millis());
    stop_all(agents).await;
    server.shutdown().await;
}
