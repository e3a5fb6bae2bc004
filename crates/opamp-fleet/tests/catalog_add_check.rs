//! `POST /api/v1/packages` checks a signed statement against the upload at once: a signature
//! for another file, name or version is refused with the reason, and nothing is kept.

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet_support;

use std::time::{Duration, SystemTime};

use fleet_support::{admin, config};
use opamp_fleet::{FleetError, FleetServer};
use opamp_verify::{ContentHash, ReleaseSigner, Statement};

fn sign(signer: &ReleaseSigner, name: &str, version: &str, bytes: &[u8]) -> Vec<u8> {
    let statement = Statement::new(
        name,
        version,
        ContentHash::of(bytes),
        u64::try_from(bytes.len()).unwrap(),
        SystemTime::now() + Duration::from_secs(3600),
    )
    .unwrap();
    signer.sign_statement(&statement).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_for_another_file_name_or_version_is_refused_at_add_time() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(dir.path(), any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());
    let signer = ReleaseSigner::generate_ed25519().unwrap();
    let file = dir.path().join("otelcol-1.1.0");
    std::fs::write(&file, b"collector 1.1.0").unwrap();
    let other = b"collector 1.1.1";

    let refusals = [
        (sign(&signer, "otelcol", "1.1.0", other), "sha256"),
        (
            sign(&signer, "otelcol", "1.2.0", b"collector 1.1.0"),
            "version",
        ),
        (
            sign(&signer, "otelcol-contrib", "1.1.0", b"collector 1.1.0"),
            "package",
        ),
    ];
    for (signature, word) in refusals {
        match client
            .add_package(&file, "otelcol", "1.1.0", &signature)
            .await
        {
            Err(FleetError::AdminApi {
                status: Some(400),
                message,
            }) => assert!(message.contains(word), "{word}: {message}"),
            other => panic!("expected a refusal naming {word}, got {other:?}"),
        }
    }
    assert!(client.packages().await.unwrap().is_empty());

    let good = sign(&signer, "otelcol", "1.1.0", b"collector 1.1.0");
    let entry = client
        .add_package(&file, "otelcol", "1.1.0", &good)
        .await
        .unwrap();
    assert_eq!(entry.version, "1.1.0");
    server.shutdown().await;
}
