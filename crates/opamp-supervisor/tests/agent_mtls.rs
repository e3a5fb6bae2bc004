//! Issue 22, finding 2: under mutual TLS the supervisor presents its client certificate on
//! the OpAMP connection and on package downloads from the same server, so an install works
//! end to end; the server binds the certificate to the agent's instance uid
//! (`urn:opamp:instance:<uid>`).

// Test code: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used)]

mod agent_support;
mod collector_support;

use std::path::Path;

use agent_support::{Fleet, Host, InProcess, package};
use collector_support::Behaviour;
use opamp_proto::InstanceUid;
use opamp_proto::v1::PackageStatusEnum;
use opamp_transport::server::AgentVerdict;
use opamp_transport::tls::{ClientAuth, Identity, ServerTls};
use opamp_verify::DowngradeAuthorisation;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA, a server certificate for `localhost` and a client certificate naming `uid`, as PEM
/// files in `dir`; returns (CA PEM, server identity).
fn certificates(dir: &Path, uid: InstanceUid) -> (String, Identity) {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "agents CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&server_key, &ca, &ca_key).unwrap();

    let agent_key = KeyPair::generate().unwrap();
    let mut agent = CertificateParams::new(Vec::<String>::new()).unwrap();
    agent.distinguished_name.push(DnType::CommonName, "host-1");
    agent.subject_alt_names.push(SanType::URI(
        format!("urn:opamp:instance:{uid}").try_into().unwrap(),
    ));
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let agent = agent.signed_by(&agent_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("agent.pem"), agent.pem()).unwrap();
    std::fs::write(dir.join("agent.key"), agent_key.serialize_pem()).unwrap();
    (
        ca.pem(),
        Identity::from_pem(server.pem(), server_key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_with_a_client_certificate_installs_from_an_mtls_server() {
    let host = Host::new("1.0.0");
    let uid = InstanceUid::new_v7();
    // The uid the certificate names is the one the supervisor keeps in its storage.
    std::fs::create_dir_all(&host.storage).unwrap();
    std::fs::write(host.storage.join("instance_uid"), format!("{uid}\n")).unwrap();
    let (ca_pem, server_identity) = certificates(host.dir.path(), uid);
    let mut fleet = Fleet::start_with(|config| {
        let tls = ServerTls::new(server_identity).client_auth(ClientAuth::Required {
            ca_certs_pem: ca_pem.into_bytes(),
        });
        config.tls(tls).authorize_agent(|claim| {
            let wanted = format!("urn:opamp:instance:{}", claim.uid);
            let named = claim
                .connection
                .client_identity()
                .is_some_and(|identity| identity.uris.contains(&wanted));
            if named {
                AgentVerdict::Allow
            } else {
                AgentVerdict::refuse("the certificate names another uid")
            }
        })
    })
    .await;
    let dir = host.dir.path().display();
    let tls = format!(
        "  tls:\n    ca_file: {dir}/ca.pem\n    cert_file: {dir}/agent.pem\n    key_file: {dir}/agent.key"
    );
    let (_, config) = host.config_with_server(&fleet.endpoint(), "500ms", "5s", &tls);
    let supervisor = InProcess::spawn(config);
    assert_eq!(fleet.wait_connected().await, uid);
    fleet
        .wait_until(uid, "initial Installed 1.0.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.0.0"
            })
        })
        .await;

    // The download URL is https:// on the same mutual-TLS listener.
    let new = host.build("1.1.0", Behaviour::default());
    let offer = fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let url = &offer.packages["otelcol"]
        .file
        .as_ref()
        .unwrap()
        .download_url;
    assert!(url.starts_with("https://localhost:"), "{url}");
    let status = fleet
        .wait_until(uid, "Installed 1.1.0 (or a failure)", |s| {
            package(s).is_some_and(|p| {
                p.server_offered_version == "1.1.0"
                    && (p.status == PackageStatusEnum::Installed as i32
                        || p.status == PackageStatusEnum::InstallFailed as i32)
            })
        })
        .await;
    let reported = package(&status).unwrap();
    assert_eq!(
        reported.status,
        PackageStatusEnum::Installed as i32,
        "{}",
        reported.error_message
    );
    assert_eq!(reported.agent_has_version, "1.1.0");
    assert_eq!(host.live_version(), "1.1.0");
    supervisor.shutdown().await;
}
