//! Agent (this crate's client) and server (this crate's server) over real sockets on
//! 127.0.0.1: ws, wss with mutual TLS, http, https; certificate refusals; reconnects.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use opamp_proto::{InstanceUid, v1};
use opamp_session::{AgentEvent, ServerEvent, TransportMode};
use opamp_transport::client::{ClientEvent, ClientHandle};
use opamp_transport::server::{
    AgentVerdict, ConnectionInfo, OpampServerConfig, ServerNotification,
};

fn server_config_at(addr: std::net::SocketAddr) -> OpampServerConfig {
    let mut config = server_config();
    config.bind = addr;
    config
}
use opamp_transport::tls::ClientTls;
use rustls_pki_types::pem::PemObject as _;
use support::*;
use tokio::sync::mpsc;

fn offer(version: &str) -> v1::PackagesAvailable {
    let package = v1::PackageAvailable {
        r#type: v1::PackageType::TopLevel as i32,
        version: version.to_owned(),
        file: Some(v1::DownloadableFile {
            download_url: format!("https://127.0.0.1/packages/collector-{version}.tar.gz"),
            content_hash: vec![7; 32],
            signature: Vec::new(),
            headers: None,
        }),
        hash: version.as_bytes().to_vec(),
    };
    v1::PackagesAvailable {
        packages: HashMap::from([("collector".to_owned(), package)]),
        all_packages_hash: version.as_bytes().to_vec(),
    }
}

async fn wait_for_offer(events: &mut mpsc::Receiver<ClientEvent>, version: &str) {
    wait_for_client(events, |event| match event {
        ClientEvent::Agent(agent_event) => match agent_event.as_ref() {
            AgentEvent::PackagesAvailable { offer, .. }
                if offer
                    .packages
                    .get("collector")
                    .is_some_and(|p| p.version == version) =>
            {
                Some(())
            }
            _ => None,
        },
        _ => None,
    })
    .await;
}

async fn wait_connected(
    notifications: &mut mpsc::Receiver<ServerNotification>,
    uid: InstanceUid,
) -> (TransportMode, ConnectionInfo) {
    wait_for(notifications, |n| match n {
        ServerNotification::Connected {
            uid: from,
            transport,
            connection,
        } if *from == uid => Some((*transport, connection.clone())),
        _ => None,
    })
    .await
}

async fn wait_goodbye(notifications: &mut mpsc::Receiver<ServerNotification>, uid: InstanceUid) {
    wait_for(notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::Disconnected { by_agent: true, .. },
        } if *from == uid => Some(()),
        _ => None,
    })
    .await;
}

/// One full conversation: connect, report health, receive an offer pushed through the
/// agent sessions, say goodbye. Returns what the server knew about the connection.
async fn converse(
    server: OpampServerConfig,
    scheme: &str,
    tls: Option<ClientTls>,
    gzip: bool,
) -> (TransportMode, ConnectionInfo) {
    init_tracing();
    let (server, mut notifications) = start_server(server).await;
    let url = format!(
        "{scheme}://127.0.0.1:{}/v1/opamp",
        server.local_addr().port()
    );
    let mut client = client_config(&url, tls);
    client.gzip = gzip;
    let mut agent = agent_config();
    agent.heartbeat_interval = Some(Duration::from_millis(200)); // HTTP poll interval
    let uid = agent.instance_uid;
    let (handle, mut events) = start_agent(client, agent);

    wait_for_client(&mut events, |e| {
        matches!(e, ClientEvent::Connected).then_some(())
    })
    .await;
    let (transport, connection) = wait_connected(&mut notifications, uid).await;

    handle
        .update(|session| session.set_health(healthy("up")))
        .await
        .unwrap();
    wait_for_health(&mut notifications, uid, "up").await;

    assert!(
        server
            .sessions()
            .with_session(uid, |session| session.offer_packages(offer("1.2.3")))
            .is_some()
    );
    wait_for_offer(&mut events, "1.2.3").await;

    let session = handle.shutdown().await.unwrap();
    assert!(
        session.is_closed(),
        "agent_disconnect was handed to the transport"
    );
    wait_goodbye(&mut notifications, uid).await;
    server.shutdown().await;
    (transport, connection)
}

#[tokio::test]
async fn agent_and_server_talk_over_websocket() {
    let (transport, connection) = converse(server_config(), "ws", None, false).await;
    assert_eq!(transport, TransportMode::WebSocket);
    assert!(!connection.tls);
}

#[tokio::test]
async fn agent_and_server_talk_over_http_with_gzip() {
    let (transport, connection) = converse(server_config(), "http", None, true).await;
    assert_eq!(transport, TransportMode::HttpPolling);
    assert!(connection.peer_certificates.is_none());
}

#[tokio::test]
async fn agent_and_server_talk_over_wss_with_mutual_tls() {
    let ca = TestCa::new("test CA");
    let agent_cert = ca.client_cert("agent-7");
    let tls = ClientTls::with_ca_pem(ca.cert_pem.clone()).identity(agent_cert.identity());
    let (transport, connection) = converse(mtls_server_config(&ca), "wss", Some(tls), false).await;
    assert_eq!(transport, TransportMode::WebSocket);
    assert!(connection.tls);
    let presented = connection
        .peer_certificates
        .clone()
        .expect("client certificate is visible to the server");
    let expected = rustls_pki_types::CertificateDer::pem_slice_iter(agent_cert.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(presented[0], expected);
    let identity = connection
        .client_identity()
        .expect("the certificate parses");
    assert_eq!(identity.common_name.as_deref(), Some("agent-7"));
    assert_eq!(identity.subject, "CN=agent-7");
    assert_eq!(identity.dns_names, ["agent-7.fleet.local"]);
}

#[tokio::test]
async fn agent_and_server_talk_over_https_with_mutual_tls() {
    let ca = TestCa::new("test CA");
    let tls =
        ClientTls::with_ca_pem(ca.cert_pem.clone()).identity(ca.client_cert("agent-8").identity());
    let (transport, connection) = converse(mtls_server_config(&ca), "https", Some(tls), true).await;
    assert_eq!(transport, TransportMode::HttpPolling);
    assert!(connection.peer_certificates.is_some());
}

/// Under mutual TLS an agent without a certificate, or with one from another CA, never
/// reaches the OpAMP layer: its handshakes fail and it keeps backing off.
async fn refused_under_mtls(scheme: &str, identity: Option<opamp_transport::tls::Identity>) {
    init_tracing();
    let ca = TestCa::new("test CA");
    let (server, _notifications) = start_server(mtls_server_config(&ca)).await;
    let url = format!(
        "{scheme}://127.0.0.1:{}/v1/opamp",
        server.local_addr().port()
    );
    let mut tls = ClientTls::with_ca_pem(ca.cert_pem.clone());
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let (handle, mut events) = start_agent(client_config(&url, Some(tls)), agent_config());
    for _ in 0..2 {
        let reason = wait_for_client(&mut events, |e| match e {
            ClientEvent::Connected => panic!("an agent without a trusted certificate got in"),
            ClientEvent::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert!(!reason.is_empty());
    }
    assert!(server.sessions().is_empty());
    handle.shutdown().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn mtls_refuses_websocket_agent_without_certificate() {
    refused_under_mtls("wss", None).await;
}

#[tokio::test]
async fn mtls_refuses_http_agent_with_certificate_from_another_ca() {
    let stranger = TestCa::new("someone else");
    refused_under_mtls("https", Some(stranger.client_cert("intruder").identity())).await;
}

#[tokio::test]
async fn mtls_refuses_websocket_agent_with_certificate_from_another_ca() {
    let stranger = TestCa::new("someone else");
    refused_under_mtls("wss", Some(stranger.client_cert("intruder").identity())).await;
}

#[tokio::test]
async fn websocket_agent_reconnects_after_server_restart_and_state_converges() {
    init_tracing();
    let (server, mut notifications) = start_server(server_config()).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/v1/opamp");
    let agent = agent_config();
    let uid = agent.instance_uid;
    let (handle, mut events) = start_agent(client_config(&url, None), agent);
    wait_connected(&mut notifications, uid).await;
    handle
        .update(|s| s.set_health(healthy("before restart")))
        .await
        .unwrap();
    wait_for_health(&mut notifications, uid, "before restart").await;

    server.shutdown().await;
    wait_for_client(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    // Changed while the server is away: must arrive after the reconnect.
    handle
        .update(|s| s.set_health(healthy("changed while away")))
        .await
        .unwrap();

    let (server, mut notifications) = start_server(server_config_at(addr)).await;
    wait_connected(&mut notifications, uid).await;
    wait_for_health(&mut notifications, uid, "changed while away").await;
    let (server_view, agent_view) = (
        server
            .sessions()
            .with_session(uid, |s| s.agent_state().status.clone())
            .unwrap(),
        handle.update(|s| s.status().clone()).await.unwrap(),
    );
    assert_eq!(
        server_view, agent_view,
        "the new server rebuilt the agent's full state"
    );
    handle.shutdown().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn http_agent_after_server_restart_is_asked_for_full_state_and_converges() {
    init_tracing();
    let (server, mut notifications) = start_server(server_config()).await;
    let addr = server.local_addr();
    let mut agent = agent_config();
    agent.heartbeat_interval = Some(Duration::from_millis(700));
    let uid = agent.instance_uid;
    let (handle, _events) = start_agent(
        client_config(&format!("http://{addr}/v1/opamp"), None),
        agent,
    );
    handle
        .update(|s| s.set_health(healthy("steady")))
        .await
        .unwrap();
    wait_for_health(&mut notifications, uid, "steady").await;

    // Restart between two polls: the agent does not notice, and its next poll is a bare
    // heartbeat that the new server cannot place.
    server.shutdown().await;
    let (server, mut notifications) = start_server(server_config_at(addr)).await;
    wait_for(&mut notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::FullStateRequested { .. },
        } if *from == uid => Some(()),
        _ => None,
    })
    .await;
    wait_for_health(&mut notifications, uid, "steady").await;
    let server_view = server
        .sessions()
        .with_session(uid, |s| s.agent_state().status.clone())
        .unwrap();
    assert_eq!(
        server_view,
        handle.update(|s| s.status().clone()).await.unwrap()
    );
    handle.shutdown().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_send_to_all_agents() {
    init_tracing();
    let (server, mut notifications) = start_server(server_config()).await;
    let url = format!("ws://{}/v1/opamp", server.local_addr());
    let mut agents: Vec<(ClientHandle, mpsc::Receiver<ClientEvent>)> = Vec::new();
    for _ in 0..3 {
        let agent = agent_config();
        let uid = agent.instance_uid;
        agents.push(start_agent(client_config(&url, None), agent));
        wait_connected(&mut notifications, uid).await;
    }
    assert_eq!(server.sessions().connected().len(), 3);
    assert_eq!(
        server
            .sessions()
            .with_all(|_, session| session.offer_packages(offer("2.0.0"))),
        3
    );
    for (_, events) in &mut agents {
        wait_for_offer(events, "2.0.0").await;
    }
    for (handle, _) in agents {
        handle.shutdown().await.unwrap();
    }
    server.shutdown().await;
}

/// A server at its connection limit answers 503 with Retry-After; the agent waits at least
/// that long.
async fn retry_after_is_honoured(scheme: &str) {
    init_tracing();
    let mut config = server_config();
    config.max_connections = 0;
    config.retry_after = Duration::from_secs(3);
    let (server, _notifications) = start_server(config).await;
    let url = format!("{scheme}://{}/v1/opamp", server.local_addr());
    let (handle, mut events) = start_agent(client_config(&url, None), agent_config());
    let retry_in = wait_for_client(&mut events, |e| match e {
        ClientEvent::Disconnected { retry_in, .. } => Some(*retry_in),
        _ => None,
    })
    .await;
    assert!(
        retry_in >= Duration::from_secs(3),
        "retry_in = {retry_in:?}"
    );
    handle.shutdown().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_agent_honours_retry_after() {
    retry_after_is_honoured("ws").await;
}

#[tokio::test]
async fn http_agent_honours_retry_after() {
    retry_after_is_honoured("http").await;
}

/// A bare WebSocket server (not ours) that answers the first message with `UNAVAILABLE`
/// and `RetryInfo`: the agent must close and stay away at least that long.
#[tokio::test]
async fn websocket_agent_honours_retry_info() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/opamp", listener.local_addr().unwrap());
    let (handle, mut events) = start_agent(client_config(&url, None), agent_config());

    let (stream, _) = listener.accept().await.unwrap();
    let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
    let Some(Ok(Message::Binary(first))) = socket.next().await else {
        panic!("no first message")
    };
    let first: v1::AgentToServer =
        opamp_proto::codec::decode_ws_frame(&first, &Default::default()).unwrap();
    let refusal = v1::ServerToAgent {
        instance_uid: first.instance_uid,
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::Unavailable as i32,
            error_message: "overloaded".to_owned(),
            details: Some(v1::server_error_response::Details::RetryInfo(
                v1::RetryInfo {
                    retry_after_nanoseconds: 2_000_000_000,
                },
            )),
        }),
        ..Default::default()
    };
    socket
        .send(Message::Binary(
            opamp_proto::codec::encode_ws_frame(&refusal).into(),
        ))
        .await
        .unwrap();
    let refused_at = std::time::Instant::now();

    let retry_in = wait_for_client(&mut events, |e| match e {
        ClientEvent::Disconnected { retry_in, .. } => Some(*retry_in),
        _ => None,
    })
    .await;
    assert!(
        retry_in >= Duration::from_millis(1900),
        "retry_in = {retry_in:?}"
    );
    let (_again, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        refused_at.elapsed() >= Duration::from_millis(1900),
        "came back after {:?}",
        refused_at.elapsed()
    );
    // The second upgrade is never answered: shutting down must not wait for the connect
    // timeout (5 s here).
    let stopping = std::time::Instant::now();
    handle.shutdown().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

/// The embedder's authoriser sees the agent's extra headers: a bearer token lets the agent
/// in over both transports, its absence gets 401 before any OpAMP message is read.
#[tokio::test]
async fn authoriser_checks_the_agents_authorization_header() {
    use http::header::AUTHORIZATION;

    init_tracing();
    let config = server_config().authorize(|_connection, headers| {
        headers
            .get(AUTHORIZATION)
            .is_some_and(|v| v == "Bearer fleet-token")
    });
    let (server, mut notifications) = start_server(config).await;
    for scheme in ["ws", "http"] {
        let url = format!("{scheme}://{}/v1/opamp", server.local_addr());
        let agent = agent_config();
        let uid = agent.instance_uid;
        let with_token =
            client_config(&url, None).header(AUTHORIZATION, "Bearer fleet-token".parse().unwrap());
        let (handle, _events) = start_agent(with_token, agent);
        wait_connected(&mut notifications, uid).await;
        handle.shutdown().await.unwrap();

        let (handle, mut events) = start_agent(client_config(&url, None), agent_config());
        let reason = wait_for_client(&mut events, |e| match e {
            ClientEvent::Connected => panic!("an agent without the token got in over {scheme}"),
            ClientEvent::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert!(reason.contains("401"), "{scheme}: {reason}");
        handle.shutdown().await.unwrap();
    }
    server.shutdown().await;
}

/// Under mutual TLS the embedder can bind instance uids to certificates: an agent whose
/// certificate names another uid is refused before its message reaches a session.
#[tokio::test]
async fn agent_authoriser_binds_instance_uids_to_client_certificates() {
    init_tracing();
    let ca = TestCa::new("test CA");
    let config = mtls_server_config(&ca).authorize_agent(|claim| {
        let named = claim
            .connection
            .client_identity()
            .and_then(|identity| identity.common_name);
        if named == Some(claim.uid.to_string()) {
            AgentVerdict::Allow
        } else {
            AgentVerdict::refuse("the certificate names another uid")
        }
    });
    let (server, mut notifications) = start_server(config).await;
    for scheme in ["wss", "https"] {
        let url = format!(
            "{scheme}://127.0.0.1:{}/v1/opamp",
            server.local_addr().port()
        );
        let agent = agent_config();
        let uid = agent.instance_uid;
        let own = ClientTls::with_ca_pem(ca.cert_pem.clone())
            .identity(ca.client_cert(&uid.to_string()).identity());
        let (handle, _events) = start_agent(client_config(&url, Some(own)), agent);
        wait_connected(&mut notifications, uid).await;
        handle.shutdown().await.unwrap();

        let borrowed = ClientTls::with_ca_pem(ca.cert_pem.clone())
            .identity(ca.client_cert(&uid.to_string()).identity());
        let impostor = agent_config();
        let impostor_uid = impostor.instance_uid;
        let (handle, mut events) = start_agent(client_config(&url, Some(borrowed)), impostor);
        let reason = wait_for_client(&mut events, |e| match e {
            ClientEvent::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        // Our client names its uid at the upgrade, so a WebSocket is refused there too.
        assert!(reason.contains("403"), "{scheme}: {reason}");
        assert!(
            server.sessions().connection_info(impostor_uid).is_none(),
            "the impostor never got a session"
        );
        handle.shutdown().await.unwrap();
    }
    server.shutdown().await;
}

/// A credential the authoriser issues reaches the agent in the response (HTTP answer or
/// WebSocket upgrade), is reported to the embedder, and replaces the one-time token on every
/// later request: the token is refused on its second use, yet the agent stays in.
#[tokio::test]
async fn an_issued_credential_replaces_a_one_time_token() {
    use http::header::AUTHORIZATION;
    use std::sync::{Arc, Mutex};

    init_tracing();
    let spent: Arc<Mutex<std::collections::HashSet<InstanceUid>>> = Arc::default();
    let config = server_config().authorize_agent(move |claim| {
        let presented = claim
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let own = format!("Bearer credential-{}", claim.uid);
        if presented == own {
            AgentVerdict::Allow
        } else if presented == "Bearer one-time" && spent.lock().unwrap().insert(claim.uid) {
            AgentVerdict::AllowWithCredential {
                credential: format!("credential-{}", claim.uid),
            }
        } else {
            AgentVerdict::refuse("no valid credential")
        }
    });
    let (server, mut notifications) = start_server(config).await;
    for scheme in ["ws", "http"] {
        let url = format!("{scheme}://{}/v1/opamp", server.local_addr());
        let agent = agent_config();
        let uid = agent.instance_uid;
        let config =
            client_config(&url, None).header(AUTHORIZATION, "Bearer one-time".parse().unwrap());
        let (handle, mut events) = start_agent(config, agent);
        let issued = wait_for_client(&mut events, |e| match e {
            ClientEvent::CredentialIssued { credential } => Some(credential.clone()),
            ClientEvent::Disconnected { reason, .. } => panic!("{scheme}: {reason}"),
            _ => None,
        })
        .await;
        assert_eq!(issued, format!("credential-{uid}"), "{scheme}");
        wait_connected(&mut notifications, uid).await;
        // A later HTTP poll would be refused if it still carried the spent token.
        handle
            .update(|s| s.set_health(healthy("after enrolling")))
            .await
            .unwrap();
        wait_for_health(&mut notifications, uid, "after enrolling").await;
        handle.shutdown().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_of_long_gone_agents_are_forgotten() {
    init_tracing();
    let mut config = server_config();
    config.forget_after = Some(Duration::from_millis(200));
    config.idle_timeout = Duration::from_millis(400);
    let (server, mut notifications) = start_server(config).await;
    let agent = agent_config();
    let uid = agent.instance_uid;
    let (handle, _events) = start_agent(
        client_config(&format!("ws://{}/v1/opamp", server.local_addr()), None),
        agent,
    );
    wait_connected(&mut notifications, uid).await;
    assert_eq!(server.sessions().len(), 1);
    handle.shutdown().await.unwrap();
    wait_for(&mut notifications, |n| {
        matches!(n, ServerNotification::Disconnected { uid: from } if *from == uid).then_some(())
    })
    .await;
    // No event marks the forgetting; poll for it, bounded.
    let deadline = std::time::Instant::now() + WAIT;
    while !server.sessions().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "session never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn forgetting_a_connected_agent_closes_its_websocket() {
    init_tracing();
    let (server, mut notifications) = start_server(server_config()).await;
    let agent = agent_config();
    let uid = agent.instance_uid;
    let (handle, mut events) = start_agent(
        client_config(&format!("ws://{}/v1/opamp", server.local_addr()), None),
        agent,
    );
    wait_connected(&mut notifications, uid).await;
    assert!(server.sessions().forget(uid));
    let reason = wait_for_client(&mut events, |e| match e {
        ClientEvent::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("1008"), "{reason}");
    // The agent comes back with a full report and gets a fresh session.
    wait_connected(&mut notifications, uid).await;
    handle.shutdown().await.unwrap();
    server.shutdown().await;
}

fn big_offer(version: &str) -> v1::PackagesAvailable {
    let mut offer = offer(version);
    let template = offer.packages["collector"].clone();
    for i in 0..40 {
        offer
            .packages
            .insert(format!("extension-{i}"), template.clone());
    }
    offer
}

/// HTTP agents send `OpAMP-Instance-UID`; answers over 1 KiB are gzipped for agents that
/// accept it, and our client reads them transparently.
#[tokio::test]
async fn http_carries_the_instance_uid_header_and_gzips_large_answers() {
    use std::sync::{Arc, Mutex};

    init_tracing();
    let seen_uids = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorder = seen_uids.clone();
    let config = server_config().authorize(move |_, headers| {
        if let Some(uid) = headers
            .get("opamp-instance-uid")
            .and_then(|v| v.to_str().ok())
        {
            recorder.lock().unwrap().push(uid.to_owned());
        }
        true
    });
    let (server, mut notifications) = start_server(config).await;
    let url = format!("http://{}/v1/opamp", server.local_addr());
    let mut agent = agent_config();
    agent.heartbeat_interval = Some(Duration::from_millis(200));
    let uid = agent.instance_uid;
    let (handle, mut events) = start_agent(client_config(&url, None), agent);
    wait_connected(&mut notifications, uid).await;
    assert!(seen_uids.lock().unwrap().contains(&uid.to_string()));
    server
        .sessions()
        .with_session(uid, |s| s.offer_packages(big_offer("3.0.0")))
        .unwrap();
    wait_for_offer(&mut events, "3.0.0").await;
    handle.shutdown().await.unwrap();

    // A plain client that shows the wire: same offer, gzip accepted, not decoded for us.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut poll = agent_config();
    poll.instance_uid = InstanceUid::new_v7();
    let first = v1::AgentToServer {
        instance_uid: poll.instance_uid.to_vec(),
        agent_description: Some(poll.description.clone()),
        capabilities: poll.capabilities.bits(),
        ..Default::default()
    };
    let send = |message: &v1::AgentToServer| {
        raw.post(&url)
            .header("content-type", "application/x-protobuf")
            .header("accept-encoding", "gzip")
            .body(opamp_proto::codec::encode(message))
            .send()
    };
    let answer = send(&first).await.unwrap();
    assert_eq!(answer.status(), 200);
    server
        .sessions()
        .with_session(poll.instance_uid, |s| s.offer_packages(big_offer("3.0.0")))
        .unwrap();
    let second = v1::AgentToServer {
        sequence_num: 1,
        ..first.clone()
    };
    let answer = send(&second).await.unwrap();
    assert_eq!(answer.headers()["content-encoding"], "gzip");
    let compressed = answer.bytes().await.unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut plain,
    )
    .unwrap();
    assert!(compressed.len() < plain.len());
    let reply: v1::ServerToAgent = opamp_proto::codec::decode(&plain, &Default::default()).unwrap();
    assert_eq!(reply.packages_available.unwrap().packages.len(), 41);
    server.shutdown().await;
}
