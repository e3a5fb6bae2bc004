//! The repository's example configs (`examples/`) stay valid. They are not part of any packed
//! crate, so the checks live in this unpublished crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use opamp_fleet::FleetServerConfig;
use opamp_supervisor::agent::{capabilities, client_config};
use opamp_supervisor::config::SupervisorConfig;

/// The error and its sources, one per line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push('\n');
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

#[test]
fn example_server_toml_parses() {
    let config = FleetServerConfig::from_file(&repository_file("examples/server.toml"))
        .expect("example server config parses");
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 4321))
    );
    // The production-shaped example names an identity mode rather than trusting every peer.
    assert_eq!(
        config.agent_identity.mode,
        opamp_fleet::config::AgentIdentityMode::Enrollment
    );
}

/// `deploy/server.toml`, the config the container image and systemd unit ship.
#[test]
fn the_shipped_server_config_parses() {
    let config = FleetServerConfig::from_file(&repository_file("deploy/server.toml"))
        .expect("deploy/server.toml parses");
    assert_eq!(config.admin.listen.port(), 4321);
    assert!(
        config.admin.resolve_operators().is_err(),
        "its token file is not here"
    );
}

#[test]
fn example_supervisor_yaml_is_valid_and_declares_every_capability() {
    let path = repository_file("examples/supervisor.yaml");
    let config = SupervisorConfig::load(&path).expect("example config parses");
    assert_eq!(
        config.agent.package_name.as_deref(),
        Some("otelcol-contrib")
    );
    assert_eq!(config.agent.labels["env"], "production");
    assert!(config.capabilities.accepts_restart_command);
    let caps = capabilities(&config);
    for wanted in [
        opamp_proto::AgentCapabilities::REPORTS_STATUS,
        opamp_proto::AgentCapabilities::ACCEPTS_PACKAGES,
        opamp_proto::AgentCapabilities::REPORTS_PACKAGE_STATUSES,
        opamp_proto::AgentCapabilities::REPORTS_HEALTH,
        opamp_proto::AgentCapabilities::REPORTS_EFFECTIVE_CONFIG,
        opamp_proto::AgentCapabilities::ACCEPTS_RESTART_COMMAND,
        opamp_proto::AgentCapabilities::REPORTS_HEARTBEAT,
    ] {
        assert!(caps.contains(wanted), "{wanted:?} missing");
    }
    // The TLS files do not exist on a build machine: the client refuses them by name.
    let error = client_config(&config).expect_err("missing TLS files");
    let chain = error_chain(&error);
    assert!(chain.contains("ca.pem"), "{chain}");
}
