//! A fleet server configured from a TOML file with mutual TLS: an agent with a certificate
//! from the configured CA is registered; one without a certificate never gets in.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use opamp_fleet::admin::AdminClient;
use opamp_fleet::{FleetServer, FleetServerConfig};
use opamp_proto::{InstanceUid, v1};
use opamp_session::AgentSessionConfig;
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, OpampClient};
use opamp_transport::tls::{ClientTls, Identity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

struct Pem {
    cert: String,
    key: String,
}

fn issue(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Pem {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_a_toml_file_admits_only_agents_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleet test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server = issue(
        &ca,
        &ca_key,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let agent = issue(
        &ca,
        &ca_key,
        &["agent-1.fleet.local"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), &server.cert).unwrap();
    std::fs::write(path("server.key"), &server.key).unwrap();
    std::fs::write(path("admin.token"), "file-token\n").unwrap();
    let toml = format!(
        r#"
        listen = "127.0.0.1:0"
        data_dir = "{data}"
        [tls]
        cert_file = "{dir}/server.pem"
        key_file = "{dir}/server.key"
        client_ca_file = "{dir}/ca.pem"
        [admin]
        listen = "127.0.0.1:0"
        token_file = "{dir}/admin.token"
        "#,
        data = path("data").display(),
        dir = dir.path().display(),
    );
    std::fs::write(path("server.toml"), toml).unwrap();
    let config = FleetServerConfig::from_file(&path("server.toml")).unwrap();
    let running = FleetServer::start(config).await.unwrap();
    let endpoint = format!("wss://localhost:{}/v1/opamp", running.opamp_addr().port());
    let admin =
        AdminClient::new(&format!("http://{}", running.admin_addr()), "file-token").unwrap();

    // Without a client certificate the handshake fails, again and again.
    let mut anonymous = ClientConfig::new(&endpoint).unwrap();
    anonymous.tls = ClientTls::with_ca_pem(ca.pem());
    anonymous.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(50));
    let stranger = InstanceUid::new_v7();
    let (stranger_client, mut stranger_events) = OpampClient::start(
        anonymous,
        AgentSessionConfig::new(stranger, v1::AgentDescription::default()),
    )
    .unwrap();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(10), stranger_events.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(event, ClientEvent::Disconnected { .. }),
            "{event:?}"
        );
    }

    // With one, the agent is registered.
    let mut trusted = ClientConfig::new(&endpoint).unwrap();
    trusted.tls =
        ClientTls::with_ca_pem(ca.pem()).identity(Identity::from_pem(agent.cert, agent.key));
    let uid = InstanceUid::new_v7();
    let (client, mut events) = OpampClient::start(
        trusted,
        AgentSessionConfig::new(uid, v1::AgentDescription::default()),
    )
    .unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(ClientEvent::Connected) = events.recv().await {
                return;
            }
        }
    });
    connected.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agents = admin.agents().await.unwrap();
        if agents.iter().any(|a| a.uid == uid && a.connected) {
            assert!(agents.iter().all(|a| a.uid != stranger));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never registered: {agents:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.shutdown().await.unwrap();
    stranger_client.shutdown().await.unwrap();
    running.shutdown().await;
}
