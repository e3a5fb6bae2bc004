//! Shared fixtures: certificates made with rcgen, servers and agents on 127.0.0.1, and
//! helpers that wait for a notification or event instead of sleeping.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{AgentSessionConfig, ServerEvent};
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, ClientHandle, OpampClient};
use opamp_transport::server::{OpampServer, OpampServerConfig, RunningServer, ServerNotification};
use opamp_transport::tls::{ClientAuth, ClientTls, Identity, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::mpsc;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(15);

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    pub cert_pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn identity(&self) -> Identity {
        Identity::from_pem(self.cert_pem.clone(), self.key_pem.clone())
    }
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    pub fn server_cert(&self) -> Issued {
        self.issue(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "opamp server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client_cert(&self, name: &str) -> Issued {
        self.issue(
            vec![format!("{name}.fleet.local")],
            name,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(&self, sans: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub fn server_config() -> OpampServerConfig {
    let mut session = opamp_session::ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    session.heartbeat_interval = None;
    OpampServerConfig::new("127.0.0.1:0".parse().unwrap()).session(session)
}

pub fn mtls_server_config(ca: &TestCa) -> OpampServerConfig {
    let tls = ServerTls::new(ca.server_cert().identity()).client_auth(ClientAuth::Required {
        ca_certs_pem: ca.cert_pem.clone().into_bytes(),
    });
    server_config().tls(tls)
}

pub async fn start_server(
    config: OpampServerConfig,
) -> (RunningServer, mpsc::Receiver<ServerNotification>) {
    OpampServer::start(config).await.unwrap()
}

pub fn agent_config() -> AgentSessionConfig {
    let description = v1::AgentDescription {
        identifying_attributes: vec![v1::KeyValue::string("service.name", "test-agent")],
        ..Default::default()
    };
    let mut config = AgentSessionConfig::new(InstanceUid::new_v7(), description);
    config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
        | AgentCapabilities::REPORTS_PACKAGE_STATUSES
        | AgentCapabilities::REPORTS_HEALTH;
    config
}

pub fn client_config(url: &str, tls: Option<ClientTls>) -> ClientConfig {
    let mut config = ClientConfig::new(url).unwrap();
    if let Some(tls) = tls {
        config = config.tls(tls);
    }
    config.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    config.request_timeout = Duration::from_secs(5);
    config
}

pub fn start_agent(
    config: ClientConfig,
    agent: AgentSessionConfig,
) -> (ClientHandle, mpsc::Receiver<ClientEvent>) {
    OpampClient::start(config, agent).unwrap()
}

/// Waits for the first notification for which `pick` returns `Some`.
pub async fn wait_for<T>(
    notifications: &mut mpsc::Receiver<ServerNotification>,
    mut pick: impl FnMut(&ServerNotification) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let notification = notifications
                .recv()
                .await
                .expect("server notifications closed");
            if let Some(found) = pick(&notification) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for a server notification")
}

/// Waits for the first client event for which `pick` returns `Some`.
pub async fn wait_for_client<T>(
    events: &mut mpsc::Receiver<ClientEvent>,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("client events closed");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for a client event")
}

pub fn healthy(status: &str) -> v1::ComponentHealth {
    v1::ComponentHealth {
        healthy: true,
        status: status.to_owned(),
        ..Default::default()
    }
}

/// The server saw this agent's health as `status`.
pub async fn wait_for_health(
    notifications: &mut mpsc::Receiver<ServerNotification>,
    uid: InstanceUid,
    status: &str,
) {
    wait_for(notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::HealthChanged(health),
        } if *from == uid && health.status == status => Some(()),
        _ => None,
    })
    .await;
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}
