//! The capabilities a supervisor declares follow its config. (That the repository's
//! `examples/supervisor.yaml` stays valid is checked in `opamp-test-support`, since a packed
//! crate cannot read it.)

use opamp_supervisor::agent::capabilities;
use opamp_supervisor::config::SupervisorConfig;

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

#[test]
fn remote_configs_are_announced_when_on_and_the_supervisor_owns_the_config_flag() {
    let base = "
server:
  endpoint: ws://127.0.0.1:4320/v1/opamp
agent:
  executable: /bin/true
  storage_dir: /tmp/none
";
    let remote = opamp_proto::AgentCapabilities::ACCEPTS_REMOTE_CONFIG
        | opamp_proto::AgentCapabilities::REPORTS_REMOTE_CONFIG;
    let off = SupervisorConfig::from_yaml_str(base, "s.yaml".as_ref()).unwrap();
    assert!(!capabilities(&off).intersects(remote));
    let on = format!("{base}remote_config:\n  mode: remote_on_top\n");
    let on = SupervisorConfig::from_yaml_str(&on, "s.yaml".as_ref()).unwrap();
    assert!(capabilities(&on).contains(remote));

    let own_flag = base.replace(
        "  storage_dir: /tmp/none\n",
        "  storage_dir: /tmp/none\n  args: [\"--config\", \"c.yaml\"]\n",
    );
    let err = SupervisorConfig::from_yaml_str(
        &format!("{own_flag}remote_config:\n  mode: remote_only\n"),
        "s.yaml".as_ref(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--config"), "{err}");
    let unsigned = format!("{base}remote_config:\n  mode: remote_only\n  require_signed: true\n");
    let err = SupervisorConfig::from_yaml_str(&unsigned, "s.yaml".as_ref()).unwrap_err();
    assert!(err.to_string().contains("trust.keys"), "{err}");
}
