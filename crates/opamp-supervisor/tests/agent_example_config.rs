//! `examples/supervisor.yaml` at the repository root stays a valid config.

use std::path::Path;

use opamp_supervisor::agent::{capabilities, client_config};
use opamp_supervisor::config::SupervisorConfig;

#[test]
fn example_supervisor_yaml_is_valid_and_declares_every_capability() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/supervisor.yaml");
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
    assert!(error.to_string().contains("ca.pem"), "{error}");
}

#[test]
fn capabilities_follow_the_config() {
    let yaml = "
server:
  endpoint: ws://127.0.0.1:4320/v1/opamp
agent:
  executable: /bin/true
  storage_dir: /tmp/none
capabilities:
  accepts_packages: false
  reports_health: false
  reports_effective_config: false
  accepts_restart_command: false
";
    let config = SupervisorConfig::from_yaml_str(yaml, "s.yaml".as_ref()).unwrap();
    assert_eq!(
        capabilities(&config),
        opamp_proto::AgentCapabilities::REPORTS_STATUS
            | opamp_proto::AgentCapabilities::REPORTS_HEARTBEAT
    );
}
