//! Interoperability with an OpAMP implementation we did not write: the OpenTelemetry Python
//! OpAMP client (`pip install opentelemetry-opamp-client`), an HTTP-only agent, against
//! this crate's server over http and over https with mutual TLS.
//!
//! Skipped, with a message, when that package cannot be imported. Set
//! `OPAMP_INTEROP_PYTHON` to the interpreter that has it (default `python3`); set
//! `OPAMP_INTEROP_REQUIRED=1` to turn a skip into a failure. See `docs/interop.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use opamp_proto::{InstanceUid, ServerCapabilities};
use opamp_session::ServerEvent;
use opamp_transport::server::{ServerConfig, ServerNotification, TransportKind};
use support::*;
use tokio::process::Command;

fn python() -> String {
    std::env::var("OPAMP_INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python_client.py")
}

async fn python_client_available() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import opentelemetry._opamp.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    let available = probe.is_ok_and(|status| status.success());
    if !available {
        let message = format!(
            "SKIPPED: `{} -c 'import opentelemetry._opamp.client'` failed; install with `pip install opentelemetry-opamp-client` (see docs/interop.md)",
            python()
        );
        assert!(
            std::env::var_os("OPAMP_INTEROP_REQUIRED").is_none(),
            "{message}"
        );
        eprintln!("{message}");
    }
    available
}

/// Runs the Python agent against `endpoint` and checks what both sides saw.
async fn run_python_agent(config: ServerConfig, scheme: &str, tls_args: Vec<String>) {
    init_tracing();
    let (server, mut notifications) = start_server(config).await;
    let endpoint = format!(
        "{scheme}://127.0.0.1:{}/v1/opamp",
        server.local_addr().port()
    );
    let output = tokio::time::timeout(
        WAIT,
        Command::new(python())
            .arg(script())
            .arg(&endpoint)
            .args(&tls_args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python agent hung")
    .unwrap();
    assert!(
        output.status.success(),
        "Python agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let uid: InstanceUid = {
        let hex = report["instance_uid"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        InstanceUid::from_slice(&bytes).unwrap()
    };
    assert_eq!(
        report["first_instance_uid"], report["instance_uid"],
        "the server answered the right agent"
    );
    let capabilities = report["first_capabilities"].as_u64().unwrap();
    assert!(
        ServerCapabilities::from_wire(capabilities)
            .contains(ServerCapabilities::ACCEPTS_STATUS | ServerCapabilities::OFFERS_PACKAGES)
    );

    let transport = wait_for(&mut notifications, |n| match n {
        ServerNotification::Connected {
            uid: from,
            transport,
            ..
        } if *from == uid => Some(*transport),
        _ => None,
    })
    .await;
    assert_eq!(transport, TransportKind::Http);
    let service_name = wait_for(&mut notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::DescriptionChanged(description),
        } if *from == uid => Some(format!("{:?}", description.identifying_attributes)),
        _ => None,
    })
    .await;
    assert!(service_name.contains("interop-python"), "{service_name}");
    wait_for(&mut notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::Disconnected { by_agent: true, .. },
        } if *from == uid => Some(()),
        _ => None,
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn python_opamp_client_talks_to_our_server_over_http() {
    if !python_client_available().await {
        return;
    }
    run_python_agent(server_config(), "http", Vec::new()).await;
}

#[tokio::test]
async fn python_opamp_client_talks_to_our_server_over_https_with_mutual_tls() {
    if !python_client_available().await {
        return;
    }
    let ca = TestCa::new("interop CA");
    let agent = ca.client_cert("python-agent");
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("ca.pem", &ca.cert_pem),
        ("agent.pem", &agent.cert_pem),
        ("agent.key", &agent.key_pem),
    ];
    let mut args = Vec::new();
    for (name, pem) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        args.push(path.display().to_string());
    }
    run_python_agent(mtls_server_config(&ca), "https", args).await;
}
