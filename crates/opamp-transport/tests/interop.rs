//! Interoperability with OpAMP implementations we did not write, both HTTP-only agents,
//! against this crate's server over http and over https with mutual TLS:
//! - the OpenTelemetry Python OpAMP client (`pip install opentelemetry-opamp-client`);
//! - Elastic's OpAMP client for Node.js (`npm install @elastic/opamp-client-node`).
//!
//! Each is skipped, with a message, when its package cannot be loaded. Set
//! `OPAMP_INTEROP_PYTHON` to the interpreter that has the Python package (default
//! `python3`) and `OPAMP_INTEROP_NODE_PATH` to the `node_modules` directory holding the
//! Node package; set `OPAMP_INTEROP_REQUIRED=1` to turn a skip into a failure. See
//! `docs/interop.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use opamp_proto::{InstanceUid, ServerCapabilities};
use opamp_session::{ServerEvent, TransportMode};
use opamp_transport::server::{OpampServerConfig, ServerNotification};
use support::*;
use tokio::process::Command;

fn python() -> String {
    std::env::var("OPAMP_INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Which independent agent to run.
#[derive(Clone, Copy, Debug)]
enum Foreign {
    Python,
    Node,
}

impl Foreign {
    fn command(self) -> Command {
        match self {
            Self::Python => {
                let mut command = Command::new(python());
                command.arg(script("python_client.py"));
                command
            }
            Self::Node => {
                let mut command = Command::new("node");
                command.arg(script("node_client.js"));
                if let Some(path) = std::env::var_os("OPAMP_INTEROP_NODE_PATH") {
                    command.env("NODE_PATH", path);
                }
                command
            }
        }
    }

    fn service_name(self) -> &'static str {
        match self {
            Self::Python => "interop-python",
            Self::Node => "interop-node",
        }
    }

    /// Only the Python client sends `agent_disconnect`.
    fn says_goodbye(self) -> bool {
        matches!(self, Self::Python)
    }
}

async fn node_client_available() -> bool {
    let mut probe = Command::new("node");
    probe
        .args(["-e", "require('@elastic/opamp-client-node')"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = std::env::var_os("OPAMP_INTEROP_NODE_PATH") {
        probe.env("NODE_PATH", path);
    }
    let available = probe.status().await.is_ok_and(|status| status.success());
    if !available {
        let message = "SKIPPED: `node -e \"require('@elastic/opamp-client-node')\"` failed; install with `npm install @elastic/opamp-client-node` and set OPAMP_INTEROP_NODE_PATH to its node_modules (see docs/interop.md)";
        assert!(
            std::env::var_os("OPAMP_INTEROP_REQUIRED").is_none(),
            "{message}"
        );
        eprintln!("{message}");
    }
    available
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

/// Runs the foreign agent against our server and checks what both sides saw.
async fn run_foreign_agent(
    foreign: Foreign,
    config: OpampServerConfig,
    scheme: &str,
    tls_args: Vec<String>,
) {
    init_tracing();
    let (server, mut notifications) = start_server(config).await;
    let endpoint = format!(
        "{scheme}://127.0.0.1:{}/v1/opamp",
        server.local_addr().port()
    );
    let output = tokio::time::timeout(
        WAIT,
        foreign
            .command()
            .arg(&endpoint)
            .args(&tls_args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the foreign agent hung")
    .unwrap();
    assert!(
        output.status.success(),
        "{foreign:?} agent failed: {}",
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
    assert_eq!(transport, TransportMode::HttpPolling);
    let service_name = wait_for(&mut notifications, |n| match n {
        ServerNotification::Event {
            uid: from,
            event: ServerEvent::DescriptionChanged(description),
        } if *from == uid => Some(format!("{:?}", description.identifying_attributes)),
        _ => None,
    })
    .await;
    assert!(
        service_name.contains(foreign.service_name()),
        "{service_name}"
    );
    if foreign.says_goodbye() {
        wait_for(&mut notifications, |n| match n {
            ServerNotification::Event {
                uid: from,
                event: ServerEvent::Disconnected { by_agent: true, .. },
            } if *from == uid => Some(()),
            _ => None,
        })
        .await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn python_opamp_client_talks_to_our_server_over_http() {
    if !python_client_available().await {
        return;
    }
    run_foreign_agent(Foreign::Python, server_config(), "http", Vec::new()).await;
}

#[tokio::test]
async fn python_opamp_client_talks_to_our_server_over_https_with_mutual_tls() {
    if !python_client_available().await {
        return;
    }
    let ca = TestCa::new("interop CA");
    let dir = tempfile::tempdir().unwrap();
    let files = mtls_files(&ca, dir.path());
    run_foreign_agent(Foreign::Python, mtls_server_config(&ca), "https", files).await;
}

/// Writes a CA, a client certificate and its key for a foreign agent; returns the files.
fn mtls_files(ca: &TestCa, dir: &Path) -> Vec<String> {
    let agent = ca.client_cert("foreign-agent");
    [
        ("ca.pem", &ca.cert_pem),
        ("agent.pem", &agent.cert_pem),
        ("agent.key", &agent.key_pem),
    ]
    .into_iter()
    .map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
    .collect()
}

#[tokio::test]
async fn node_opamp_client_talks_to_our_server_over_http() {
    if !node_client_available().await {
        return;
    }
    run_foreign_agent(Foreign::Node, server_config(), "http", Vec::new()).await;
}

#[tokio::test]
async fn node_opamp_client_talks_to_our_server_over_https_with_mutual_tls() {
    if !node_client_available().await {
        return;
    }
    let ca = TestCa::new("interop CA");
    let dir = tempfile::tempdir().unwrap();
    let files = mtls_files(&ca, dir.path());
    run_foreign_agent(Foreign::Node, mtls_server_config(&ca), "https", files).await;
}
