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
