//! What agents report beyond versions, over real sockets: a WebSocket agent and an HTTP agent
//! report their effective config, remote config status and health tree; the server keeps them
//! (across its own restart), serves them at `GET /api/v1/agents/{uid}` and on the dashboard,
//! and sends the Restart command (from the API or the agent page's button) only to the
//! connected agents that accept it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::time::Duration;

use fleet_support::{TOKEN, admin, poll};
use opamp_fleet::admin::{AgentView, RestartRequest};
use opamp_fleet::{FleetError, FleetServer, FleetServerConfig, RunningFleetServer};
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::{AgentEvent, AgentSessionConfig};
use opamp_transport::client::{ClientEvent, ClientHandle, OpampClient};
use tokio::sync::mpsc;

const CONFIG: &[u8] = b"receivers:\n  otlp: {}\n";

async fn start(dir: &std::path::Path) -> RunningFleetServer {
    let mut config = FleetServerConfig::new("127.0.0.1:0".parse().unwrap(), dir, TOKEN);
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    FleetServer::start(config).await.unwrap()
}

fn effective_config() -> v1::EffectiveConfig {
    let mut map = v1::AgentConfigMap::default();
    map.config_map.insert(
        "collector.yaml".into(),
        v1::AgentConfigFile {
            body: CONFIG.to_vec(),
            content_type: "text/yaml".into(),
        },
    );
    v1::EffectiveConfig {
        config_map: Some(map),
    }
}

/// The documented hash layout (docs/operations.md), rebuilt here from the text: each part
/// preceded by its length as 8 bytes big-endian.
fn documented_hash() -> String {
    let mut encoded = Vec::new();
    for part in [&b"collector.yaml"[..], b"text/yaml", CONFIG] {
        encoded.extend_from_slice(&(part.len() as u64).to_be_bytes());
        encoded.extend_from_slice(part);
    }
    opamp_packages::ContentHash::of(&encoded).to_string()
}

fn health() -> v1::ComponentHealth {
    let exporter = v1::ComponentHealth {
        healthy: false,
        status: "StatusRecoverableError".into(),
        last_error: "connection refused".into(),
        ..Default::default()
    };
    let pipeline = v1::ComponentHealth {
        healthy: false,
        component_health_map: [("exporter:otlp".to_owned(), exporter)].into(),
        ..Default::default()
    };
    v1::ComponentHealth {
        healthy: false,
        component_health_map: [("pipeline:logs".to_owned(), pipeline)].into(),
        ..Default::default()
    }
}

/// An agent over `endpoint` labelled `env=<env>`, accepting restarts when `restartable`.
fn agent(
    endpoint: &str,
    env: &str,
    restartable: bool,
) -> (InstanceUid, ClientHandle, mpsc::Receiver<ClientEvent>) {
    let uid = InstanceUid::new_v7();
    let mut description = v1::AgentDescription::default();
    description
        .identifying_attributes
        .push(v1::KeyValue::string("service.name", "otelcol"));
    description
        .non_identifying_attributes
        .push(v1::KeyValue::string("env", env));
    let mut config = AgentSessionConfig::new(uid, description);
    config.capabilities |= AgentCapabilities::REPORTS_HEALTH
        | AgentCapabilities::REPORTS_EFFECTIVE_CONFIG
        | AgentCapabilities::REPORTS_REMOTE_CONFIG;
    if restartable {
        config.capabilities |= AgentCapabilities::ACCEPTS_RESTART_COMMAND;
    }
    config.heartbeat_interval = Some(Duration::from_millis(300));
    let client_config = opamp_transport::client::ClientConfig::new(endpoint).unwrap();
    let (client, events) = OpampClient::start(client_config, config).unwrap();
    (uid, client, events)
}

async fn report(client: &ClientHandle) {
    client
        .update(|session| {
            session.set_effective_config(effective_config());
            session.set_remote_config_status(v1::RemoteConfigStatus {
                last_remote_config_hash: vec![0xab; 4],
                status: v1::RemoteConfigStatuses::Failed as i32,
                error_message: "unknown exporter \"file\"".into(),
            });
            session.set_health(health());
        })
        .await
        .unwrap();
}

async fn details(admin: &opamp_fleet::admin::AdminClient, uid: InstanceUid) -> AgentView {
    poll("the agent's details", || async move {
        let view = admin.agent(&uid.to_string()).await.ok()?;
        let complete = view.details.effective_config.is_some()
            && view.details.health.is_some()
            && view.details.remote_config_status.is_some()
            && view.details.connection.is_some();
        complete.then_some(view)
    })
    .await
}

/// A dashboard session: signed in with the admin token.
struct Browser {
    http: reqwest::Client,
    cookie: String,
    base: String,
}

impl Browser {
    async fn sign_in(admin: std::net::SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://{admin}");
        let signed_in = http
            .post(format!("{base}/ui/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap();
        let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        Browser { http, cookie, base }
    }

    async fn agent_page(&self, uid: InstanceUid) -> String {
        let page = self
            .http
            .get(format!("{}/ui/agents/{uid}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        page.text().await.unwrap()
    }

    /// Presses the page's restart button (its form, with the page's CSRF token).
    async fn restart(&self, uid: InstanceUid, page: &str) -> reqwest::StatusCode {
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).unwrap() + marker.len();
        let csrf = &page[start..start + 64];
        self.http
            .post(format!("{}/ui/agents/{uid}/restart", self.base))
            .header("cookie", &self.cookie)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Waits for the Restart command among the agent's events.
async fn restart_arrives(events: &mut mpsc::Receiver<ClientEvent>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            if let ClientEvent::Agent(event) = event
                && matches!(*event, AgentEvent::Restart)
            {
                return;
            }
        }
        panic!("the agent's events ended without a restart");
    })
    .await
    .expect("the restart command arrives");
}

#[tokio::test]
async fn reported_details_are_kept_served_and_restarts_reach_only_willing_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let opamp_addr = server.opamp_addr();
    let client = admin(server.admin_addr());
    let (ws_uid, ws, mut ws_events) = agent(&format!("ws://{opamp_addr}/v1/opamp"), "a", true);
    let (http_uid, http, _http_events) =
        agent(&format!("http://{opamp_addr}/v1/opamp"), "b", false);
    report(&ws).await;
    report(&http).await;

    let view = details(&client, ws_uid).await;
    let config = view.details.effective_config.as_ref().unwrap();
    assert_eq!(hex::encode(&config.hash), documented_hash());
    assert_eq!(config.files["collector.yaml"].body.as_bytes(), CONFIG);
    assert!(!config.truncated);
    let status = view.details.remote_config_status.as_ref().unwrap();
    assert_eq!(status.status, "failed");
    assert_eq!(status.hash, vec![0xab; 4]);
    assert_eq!(status.error_message, "unknown exporter \"file\"");
    let tree = view.details.health.as_ref().unwrap();
    let exporter = &tree.components["pipeline:logs"].components["exporter:otlp"];
    assert_eq!(exporter.last_error, "connection refused");
    assert_eq!(
        view.details.identifying_attributes["service.name"],
        "otelcol"
    );
    assert_eq!(view.details.non_identifying_attributes["env"], "a");
    let connection = view.details.connection.as_ref().unwrap();
    assert_eq!(connection.transport, "websocket");
    assert!(connection.peer.starts_with("127.0.0.1:"), "{connection:?}");
    let polled = details(&client, http_uid).await;
    assert_eq!(polled.details.connection.unwrap().transport, "http");
    let unknown = client.agent(&InstanceUid::new_v7().to_string()).await;
    assert!(
        matches!(
            unknown,
            Err(FleetError::AdminApi {
                status: Some(404),
                ..
            })
        ),
        "{unknown:?}"
    );

    // The dashboard's agent page shows the config, escaped, and the health tree.
    let browser = Browser::sign_in(server.admin_addr()).await;
    let page = browser.agent_page(ws_uid).await;
    assert!(
        page.contains(
            "<pre class=\"config\" data-testid=\"config-file\">receivers:\n  otlp: {}\n</pre>"
        ),
        "{page}"
    );
    assert!(page.contains(&documented_hash()), "{page}");
    assert!(page.contains("<code>exporter:otlp</code>"), "{page}");
    assert!(page.contains("connection refused"), "{page}");
    assert!(page.contains("unknown exporter &quot;file&quot;"), "{page}");

    // Only the agent that accepts restarts is sent one; the other is named as not accepting.
    let sent = client
        .restart_agents(&RestartRequest::new(""))
        .await
        .unwrap();
    assert_eq!(sent.restarted, vec![ws_uid]);
    assert_eq!(sent.not_accepting, vec![http_uid]);
    restart_arrives(&mut ws_events).await;
    // The page's button does the same for its one agent; the HTTP agent, which does not
    // accept the command, has no button.
    assert_eq!(
        browser.restart(ws_uid, &page).await,
        reqwest::StatusCode::SEE_OTHER
    );
    restart_arrives(&mut ws_events).await;
    assert!(
        !browser
            .agent_page(http_uid)
            .await
            .contains("data-testid=\"restart\"")
    );
    let refused = client.restart_agents(&RestartRequest::new("env=b")).await;
    assert!(
        matches!(
            refused,
            Err(FleetError::AdminApi {
                status: Some(422),
                ..
            })
        ),
        "{refused:?}"
    );
    let audit = client.audit(None).await.unwrap();
    let restarts: Vec<_> = audit
        .iter()
        .filter(|stored| stored.record.action.kind() == "restart_sent")
        .collect();
    assert_eq!(restarts.len(), 2, "{audit:?}");

    // A restarted server still knows what the agents reported (the store, not memory).
    let _ = ws.shutdown().await;
    let _ = http.shutdown().await;
    server.shutdown().await;
    let server = start(dir.path()).await;
    let client = admin(server.admin_addr());
    let kept = client.agent(&ws_uid.to_string()).await.unwrap();
    assert!(!kept.record.connected);
    assert_eq!(kept.details, view.details);
    server.shutdown().await;
}
