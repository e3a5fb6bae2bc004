//! Issue 22, finding 3, as an attacker would try it against a real server on loopback: polls
//! with huge descriptions and made-up package statuses under fresh uids, then agents that
//! leave. The server keeps none of the refused ones, never makes a metric series per made-up
//! package, and forgets agents gone too long, but never a member of an active rollout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod fleet_support;

use std::net::SocketAddr;
use std::time::Duration;

use fleet_support::{admin, config, poll, request, spawn_agent, upload};
use opamp_fleet::{FleetServer, RunningFleetServer};
use opamp_proto::{AgentCapabilities, InstanceUid, codec, v1};

async fn start(
    limits: impl FnOnce(&mut opamp_fleet::limits::FleetLimits),
) -> (RunningFleetServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    limits(&mut config.limits);
    (FleetServer::start(config).await.unwrap(), dir)
}

/// One HTTP poll as a hand-made agent; returns the server's answer.
async fn poll_once(server: SocketAddr, message: &v1::AgentToServer) -> v1::ServerToAgent {
    let answer = reqwest::Client::new()
        .post(format!("http://{server}/v1/opamp"))
        .header("content-type", "application/x-protobuf")
        .body(codec::encode(message))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    codec::decode(&answer.bytes().await.unwrap(), &codec::Limits::default()).unwrap()
}

fn attribute(key: String, bytes: usize) -> v1::KeyValue {
    v1::KeyValue::string(key, "x".repeat(bytes))
}

fn first_message(uid: InstanceUid) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: uid.to_vec(),
        capabilities: (AgentCapabilities::REPORTS_STATUS
            | AgentCapabilities::REPORTS_PACKAGE_STATUSES)
            .bits(),
        agent_description: Some(v1::AgentDescription {
            identifying_attributes: vec![attribute("service.name".into(), 8)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn installed(names: impl Iterator<Item = String>) -> v1::PackageStatuses {
    v1::PackageStatuses {
        packages: names
            .map(|name| {
                let status = v1::PackageStatus {
                    name: name.clone(),
                    agent_has_version: "1.0.0".into(),
                    agent_has_hash: vec![1],
                    status: v1::PackageStatusEnum::Installed as i32,
                    ..Default::default()
                };
                (name, status)
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_flood_of_huge_descriptions_and_made_up_packages_leaves_nothing_behind() {
    let (server, _dir) = start(|_| {}).await;
    let client = admin(server.admin_addr());
    let mut refused = Vec::new();
    // Before the fix: 9,900 attributes of 6 KB each, kept in memory and SQLite for ever.
    for round in 0..5 {
        let uid = InstanceUid::new_v7();
        let mut message = first_message(uid);
        let description = message.agent_description.as_mut().unwrap();
        if round % 2 == 0 {
            description.non_identifying_attributes =
                (0..300).map(|i| attribute(format!("k{i}"), 100)).collect();
        } else {
            description.non_identifying_attributes = vec![attribute("big".into(), 6000)];
        }
        let answer = poll_once(server.opamp_addr(), &message).await;
        assert!(
            answer.error_response.is_some(),
            "round {round} was accepted"
        );
        refused.push(uid);
    }
    let uid = InstanceUid::new_v7();
    let mut message = first_message(uid);
    message.package_statuses = Some(installed((0..300).map(|i| format!("../../etc/passwd{i}"))));
    assert!(
        poll_once(server.opamp_addr(), &message)
            .await
            .error_response
            .is_some()
    );
    refused.push(uid);

    // Within the caps, made-up package names are kept per agent but never become series.
    let accepted = InstanceUid::new_v7();
    let mut message = first_message(accepted);
    message.package_statuses = Some(installed((0..200).map(|i| format!("made-up-{i}"))));
    assert!(
        poll_once(server.opamp_addr(), &message)
            .await
            .error_response
            .is_none()
    );
    let agents = poll("the accepted agent's 200 packages", || async {
        let agents = client.agents().await.ok()?;
        let found = agents.iter().find(|a| a.uid == accepted)?;
        (found.package_versions.len() == 200).then_some(agents)
    })
    .await;
    assert!(
        agents.iter().all(|a| !refused.contains(&a.uid)),
        "{agents:?}"
    );
    assert_eq!(agents.len(), 1);
    // Refused agents have no details either; the accepted one has its connection, though
    // it connected before its first report was accepted.
    for uid in &refused {
        assert!(client.agent(&uid.to_string()).await.is_err(), "{uid}");
    }
    let view = client.agent(&accepted.to_string()).await.unwrap();
    let connection = view
        .details
        .connection
        .expect("the accepted agent's connection");
    assert_eq!(connection.transport, "http");
    let metrics = client.metrics().await.unwrap();
    assert!(!metrics.contains("made-up-"), "{metrics}");
    assert!(
        metrics.contains("opamp_agents_by_version{package=\"other\",version=\"other\"} 200"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn disconnected_agents_are_forgotten_but_never_an_active_rollout_member() {
    let (server, dir) = start(|limits| limits.forget_agents_after = Duration::from_secs(1)).await;
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "1.1.0").await;
    let endpoint = format!("ws://{}/v1/opamp", server.opamp_addr());
    let member = spawn_agent(&endpoint, 0, "test", "1.0.0", Duration::ZERO);
    let stranger = spawn_agent(&endpoint, 1, "other", "1.0.0", Duration::ZERO);
    let (member_uid, stranger_uid) = (member.uid, stranger.uid);
    fleet_support::wait_connected_at(&client, 2, "1.0.0").await;
    // A paused rollout is active: its member must stay known however long it is away.
    let rollout = client
        .create_rollout(&request("1.1.0", Duration::from_secs(60)))
        .await
        .unwrap();
    client.pause(rollout.id.as_str()).await.unwrap();

    member.stop().await;
    stranger.stop().await;
    let left = poll("the stranger to be forgotten", || async {
        let agents = client.agents().await.ok()?;
        (!agents.iter().any(|a| a.uid == stranger_uid)).then_some(agents)
    })
    .await;
    // The member left first, so it has been away at least as long.
    let kept = left
        .iter()
        .find(|a| a.uid == member_uid)
        .expect("the member was forgotten");
    assert!(!kept.connected);
    server.shutdown().await;

    // Forgotten in the store too, not only in memory: a restart does not bring it back.
    let mut config = config(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    config.limits.forget_agents_after = Duration::from_secs(3600);
    let server = FleetServer::start(config).await.unwrap();
    let uids: Vec<_> = admin(server.admin_addr())
        .agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.uid)
        .collect();
    assert_eq!(uids, [member_uid]);
    let client = admin(server.admin_addr());
    assert!(client.agent(&stranger_uid.to_string()).await.is_err());
    let member = client.agent(&member_uid.to_string()).await.unwrap();
    assert!(member.details.connection.is_some(), "{member:?}");
    server.shutdown().await;
}

/// Reads until the peer closes; returns what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    tokio::time::timeout(fleet_support::WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the admin listener never closed the connection")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn half_sent_admin_requests_are_cut_off_and_cannot_fill_the_admin_listener() {
    use tokio::io::AsyncWriteExt;
    let (server, _dir) = start(|limits| {
        limits.admin_max_connections = 2;
        limits.admin_header_timeout = Duration::from_millis(500);
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut half_sent = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(server.admin_addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET /api/v1/agents HTTP/1.1\r\nHost: x\r\nAuthori")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    let mut over = tokio::net::TcpStream::connect(server.admin_addr())
        .await
        .unwrap();
    let refusal = read_to_close(&mut over).await;
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal:?}");
    for stream in &mut half_sent {
        let answer = read_to_close(stream).await;
        assert!(!answer.starts_with("HTTP/1.1 2"), "{answer:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "cut off too early: {elapsed:?}"
    );
    // Their slots are free again: the operator gets in.
    let client = admin(server.admin_addr());
    poll("the admin API to answer", || async {
        client.agents().await.ok()
    })
    .await;
    server.shutdown().await;
}

/// `GET /api/v1/agents?limit=&after=`: pages walk the registry once in uid order, a short page
/// is the last, and a cursor that is not a uid is a clear 400.
#[tokio::test]
async fn the_agents_list_pages_by_uid() {
    let (server, _dir) = start(|_| {}).await;
    let client = admin(server.admin_addr());
    for _ in 0..7 {
        poll_once(server.opamp_addr(), &first_message(InstanceUid::new_v7())).await;
    }
    let all = poll("7 agents registered", || async {
        let agents = client.agents().await.ok()?;
        (agents.len() == 7).then_some(agents)
    })
    .await;
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.agents_page(after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let full = page.len() == 3;
        after = page.last().map(|agent| agent.uid.to_string());
        walked.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(
        walked.iter().map(|a| a.uid).collect::<Vec<_>>(),
        all.iter().map(|a| a.uid).collect::<Vec<_>>()
    );
    let mut sorted = walked.iter().map(|a| a.uid.to_string()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(
        sorted,
        walked.iter().map(|a| a.uid.to_string()).collect::<Vec<_>>()
    );

    let refused = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/agents?after=not-a-uid&limit=2",
            server.admin_addr()
        ))
        .bearer_auth(fleet_support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("not an instance uid")
    );
    server.shutdown().await;
}
