//! Agent identity, tried as an attacker would (issue 22): under `mtls` a certificate speaks
//! only for the uid its `urn:opamp:instance:<uid>` SAN URI names, under `enrollment` only the
//! holder of an agent's credential speaks for it; forged reports are refused (HTTP 403),
//! logged and audited, and do not steer a rollout.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleet_support::{
    AgentOptions, TOKEN, admin, assert_converged, poll, request, spawn_agent_with, stop_all,
    upload, wait_connected_at, wait_rollout,
};
use opamp_fleet::admin::AdminClient;
use opamp_fleet::audit::{Actor, AuditAction};
use opamp_fleet::rollout::RolloutState;
use opamp_fleet::{FleetServer, FleetServerConfig, RolloutStatus, RunningFleetServer};
use opamp_proto::{InstanceUid, v1};
use opamp_session::{TransportMode, framing};
use opamp_transport::client::ClientConfig;
use opamp_transport::tls::{ClientTls, Identity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test CA and the PEM files of a server certificate it signed.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A client certificate (PEM) that names `uid` the way `mtls` mode expects.
struct AgentCert {
    cert: String,
    key: String,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "identity test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Self { ca, ca_key };
        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "opamp server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&server_key, &pki.ca, &pki.ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), pki.ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        pki
    }

    fn agent(&self, uid: InstanceUid, name: &str) -> AgentCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names.push(SanType::URI(
            format!("urn:opamp:instance:{uid}").try_into().unwrap(),
        ));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        AgentCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn client_tls(&self, cert: &AgentCert) -> ClientTls {
        ClientTls::with_ca_pem(self.ca.pem())
            .identity(Identity::from_pem(cert.cert.clone(), cert.key.clone()))
    }

    /// An HTTP client presenting `cert` (downloads, forged polls).
    fn http(&self, cert: &AgentCert) -> reqwest::Client {
        let tls = self.client_tls(cert).build().unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

async fn start(dir: &Path, tls: bool, mode: &str) -> RunningFleetServer {
    let tls = if tls {
        format!(
            "[tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n\
             client_ca_file = \"{d}/ca.pem\"\n",
            d = dir.display()
        )
    } else {
        String::new()
    };
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n{tls}\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [agent_identity]\nmode = \"{mode}\"\n",
        data = dir.join("data").display(),
    );
    FleetServer::start(FleetServerConfig::from_toml(&toml).unwrap())
        .await
        .unwrap()
}

/// One forged HTTP poll claiming `uid`, reporting it unhealthy; returns the HTTP status.
async fn forged_poll(
    http: &reqwest::Client,
    url: &str,
    uid: InstanceUid,
    bearer: Option<&str>,
) -> reqwest::StatusCode {
    let message = v1::AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: 1,
        health: Some(v1::ComponentHealth {
            healthy: false,
            last_error: "forged: the collector is down".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut request = http
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(framing::encode_agent_message(
            TransportMode::HttpPolling,
            &message,
        ));
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    request.send().await.unwrap().status()
}

/// Everything the server logs at `warn` and above in this test binary, as text.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `impersonation_refused` records claiming `uid`.
async fn refusals(client: &AdminClient, uid: InstanceUid) -> Vec<(Actor, AuditAction)> {
    client
        .audit(Some(opamp_fleet::audit::FLEET_RECORDS))
        .await
        .unwrap()
        .into_iter()
        .filter(|stored| {
            stored.record.action.kind() == "impersonation_refused"
                && stored.record.action.agent() == Some(uid)
        })
        .map(|stored| (stored.record.actor, stored.record.action))
        .collect()
}

/// The acceptance test under `mtls`: agents whose certificates name their uids roll
/// out; during the canary's bake a peer with another agent's valid certificate posts the
/// canary's uid with `healthy=false`, and fake agents (valid certificates, claimed uids they
/// do not name) try to join. Every forgery is refused with 403 and audited; the rollout
/// completes with only the real agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mtls_a_forged_canary_report_during_the_bake_is_refused_and_the_rollout_completes() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = start(dir.path(), true, "mtls").await;
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let port = server.opamp_addr().port();

    let mut agents = Vec::new();
    for index in 0..4 {
        let scheme = if index % 2 == 0 { "wss" } else { "https" };
        let uid = InstanceUid::new_v7();
        let cert = pki.agent(uid, &format!("agent-{index}"));
        let endpoint = format!("{scheme}://localhost:{port}/v1/opamp");
        let options = AgentOptions {
            uid,
            client: ClientConfig::new(&endpoint)
                .unwrap()
                .tls(pki.client_tls(&cert)),
            download: pki.http(&cert),
            accepts_remote_config: false,
        };
        agents.push(spawn_agent_with(
            options,
            index,
            "test",
            "1.0.0",
            Duration::from_millis(100),
            Arc::default(),
        ));
    }
    // Fakes: each holds a valid certificate, but for a uid other than the one it claims.
    let mut fakes = Vec::new();
    for index in 0..2 {
        let cert = pki.agent(InstanceUid::new_v7(), &format!("fake-{index}"));
        let endpoint = format!("wss://localhost:{port}/v1/opamp");
        let options = AgentOptions {
            uid: InstanceUid::new_v7(),
            client: ClientConfig::new(&endpoint)
                .unwrap()
                .tls(pki.client_tls(&cert)),
            download: pki.http(&cert),
            accepts_remote_config: false,
        };
        fakes.push(spawn_agent_with(
            options,
            10 + index,
            "test",
            "2.0.0",
            Duration::ZERO,
            Arc::default(),
        ));
    }
    wait_connected_at(&client, 4, "1.0.0").await;

    let mut spec = request("2.0.0", Duration::from_secs(3));
    spec.canary_share = Some(0.25);
    let rollout = client.create_rollout(&spec).await.unwrap();
    let id = rollout.id.to_string();
    assert_eq!(rollout.progress.total, 4, "no fake agent was selected");
    let baking = wait_rollout(&client, &id, "the canary wave baking", |view| {
        matches!(view.state, RolloutState::Baking { wave: 0, .. })
    })
    .await;
    let canary = baking
        .agents
        .iter()
        .find(|agent| agent.wave == 0)
        .unwrap()
        .uid;
    let thief = pki.agent(InstanceUid::new_v7(), "thief");
    let url = format!("https://localhost:{port}/v1/opamp");
    let status = forged_poll(&pki.http(&thief), &url, canary, None).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged
            .lines()
            .any(|line| line.contains("impersonation refused")
                && line.contains(&canary.to_string())
                && line.contains("thief")),
        "the attempt is logged with the claimed uid and the certificate: {logged}"
    );

    assert_converged(&client, &id, &agents, "2.0.0").await;
    let audit = client.audit(Some(&id)).await.unwrap();
    assert!(
        audit.iter().all(|a| a.record.action.kind() != "aborted"),
        "{audit:?}"
    );
    let refused = refusals(&client, canary).await;
    let [
        (
            actor,
            AuditAction::ImpersonationRefused {
                certificate_subject,
                peer,
                ..
            },
        ),
    ] = refused.as_slice()
    else {
        panic!("one refusal audited for the canary: {refused:?}");
    };
    assert!(matches!(actor, Actor::Peer { .. }), "{actor:?}");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert!(
        certificate_subject
            .as_deref()
            .is_some_and(|subject| subject.contains("thief")),
        "{certificate_subject:?}"
    );
    for fake in &fakes {
        assert!(!refusals(&client, fake.uid).await.is_empty());
        let last = fake.truth.lock().unwrap().last_disconnect.clone();
        assert!(last.is_some_and(|reason| reason.contains("403")));
    }
    let known = client.agents().await.unwrap();
    assert_eq!(known.len(), 4, "fakes never registered: {known:?}");
    stop_all(fakes).await;
    stop_all(agents).await;
    server.shutdown().await;
}

/// A connected agent's uid cannot be taken over by another certificate, over either
/// transport, and the real agent stays connected and healthy in the server's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mtls_a_connected_uid_cannot_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = start(dir.path(), true, "mtls").await;
    let client = admin(server.admin_addr());
    let port = server.opamp_addr().port();
    let uid = InstanceUid::new_v7();
    let cert = pki.agent(uid, "owner");
    let options = AgentOptions {
        uid,
        client: ClientConfig::new(&format!("wss://localhost:{port}/v1/opamp"))
            .unwrap()
            .tls(pki.client_tls(&cert)),
        download: pki.http(&cert),
        accepts_remote_config: false,
    };
    let owner = spawn_agent_with(options, 0, "test", "1.0.0", Duration::ZERO, Arc::default());
    wait_connected_at(&client, 1, "1.0.0").await;

    // Over WebSocket: another valid certificate claiming the owner's uid.
    let intruder = pki.agent(InstanceUid::new_v7(), "intruder");
    let options = AgentOptions {
        uid,
        client: ClientConfig::new(&format!("wss://localhost:{port}/v1/opamp"))
            .unwrap()
            .tls(pki.client_tls(&intruder)),
        download: pki.http(&intruder),
        accepts_remote_config: false,
    };
    let takeover = spawn_agent_with(options, 1, "test", "9.9.9", Duration::ZERO, Arc::default());
    poll("the takeover to be refused", || async {
        let last = takeover.truth.lock().unwrap().last_disconnect.clone();
        last.filter(|reason| reason.contains("403"))
    })
    .await;
    // Over HTTP, with a forged unhealthy report.
    let url = format!("https://localhost:{port}/v1/opamp");
    let status = forged_poll(&pki.http(&intruder), &url, uid, None).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);

    let agents = client.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert!(agents[0].connected && agents[0].healthy, "{agents:?}");
    assert_eq!(agents[0].package_versions.get("otelcol").unwrap(), "1.0.0");
    assert!(!refusals(&client, uid).await.is_empty());
    takeover.stop().await;
    owner.stop().await;
    server.shutdown().await;
}

/// Under `enrollment`: a token works once and yields a credential; a forged poll for the
/// enrolled uid without it or with a wrong one is refused and audited, and does not abort a
/// rollout; the token's creation is audited with the operator's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_enrollment_only_the_credential_holder_speaks_for_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), false, "enrollment").await;
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let addr = server.opamp_addr();

    let mut agents = Vec::new();
    for index in 0..2 {
        let token = client
            .create_enrollment_token(Some(Duration::from_secs(600)))
            .await
            .unwrap();
        let scheme = if index == 0 { "ws" } else { "http" };
        let config = ClientConfig::new(&format!("{scheme}://{addr}/v1/opamp"))
            .unwrap()
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.token).parse().unwrap(),
            );
        agents.push((
            token.token,
            spawn_agent_with(
                AgentOptions::new(config),
                index,
                "test",
                "1.0.0",
                Duration::from_millis(100),
                Arc::default(),
            ),
        ));
    }
    wait_connected_at(&client, 2, "1.0.0").await;
    let (spent_token, first) = &agents[0];
    let credential = first.truth.lock().unwrap().credential.clone().unwrap();

    // The spent token does not enroll another uid.
    let config = ClientConfig::new(&format!("http://{addr}/v1/opamp"))
        .unwrap()
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {spent_token}").parse().unwrap(),
        );
    let second_use = spawn_agent_with(
        AgentOptions::new(config),
        5,
        "test",
        "1.0.0",
        Duration::ZERO,
        Arc::default(),
    );
    poll("the spent token to be refused", || async {
        let last = second_use.truth.lock().unwrap().last_disconnect.clone();
        last.filter(|reason| reason.contains("403"))
    })
    .await;

    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_secs(2)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    wait_rollout(&client, &id, "the canary wave baking", |view| {
        matches!(view.state, RolloutState::Baking { wave: 0, .. })
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/opamp");
    let target = first.uid;
    for bearer in [None, Some("0000"), Some(spent_token.as_str())] {
        let status = forged_poll(&http, &url, target, bearer).await;
        assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{bearer:?}");
    }
    // The credential itself is what lets the agent in (a poll that changes nothing here).
    let mut holder = http::HeaderMap::new();
    holder.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    let message = v1::AgentToServer {
        instance_uid: target.to_vec(),
        sequence_num: 1,
        ..Default::default()
    };
    let status = http
        .post(&url)
        .headers(holder)
        .header("content-type", "application/x-protobuf")
        .body(framing::encode_agent_message(
            TransportMode::HttpPolling,
            &message,
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);

    let agents_only: Vec<_> = agents.into_iter().map(|(_, agent)| agent).collect();
    assert_eq!(
        fleet_support::wait_terminal(&client, &id).await,
        RolloutStatus::Completed
    );
    assert!(!refusals(&client, target).await.is_empty());
    let fleet = client
        .audit(Some(opamp_fleet::audit::FLEET_RECORDS))
        .await
        .unwrap();
    let created = fleet
        .iter()
        .filter(|a| {
            a.record.action.kind() == "enrollment_token_created"
                && a.record.actor == Actor::Operator("admin".into())
        })
        .count();
    assert_eq!(created, 2);
    let enrolled = fleet
        .iter()
        .filter(|a| a.record.action.kind() == "agent_enrolled")
        .count();
    assert_eq!(enrolled, 2, "the spent token enrolled nobody else");
    assert_eq!(client.agents().await.unwrap().len(), 2);
    second_use.stop().await;
    stop_all(agents_only).await;
    server.shutdown().await;
}

/// Tokens are refused when the server does not enroll agents, and `mtls` without a client
/// CA is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_need_enrollment_mode_and_mtls_needs_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), false, "dangerous_open").await;
    let client = admin(server.admin_addr());
    let error = client.create_enrollment_token(None).await.unwrap_err();
    assert!(error.to_string().contains("409"), "{error}");
    server.shutdown().await;

    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[admin]\ntoken = \"t\"\n\
         [agent_identity]\nmode = \"mtls\"\n",
        dir.path().join("data").display()
    );
    let error = FleetServerConfig::from_toml(&toml).unwrap_err();
    assert!(error.to_string().contains("client_ca_file"), "{error}");
}
