//! `opamp supervisor convert-config` on an upstream `opampsupervisor` config.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::Workdir;

const UPSTREAM: &str = "\
server:
  endpoint: ws://127.0.0.1:4320/v1/opamp
  tls:
    insecure_skip_verify: false
capabilities:
  accepts_remote_config: true
  reports_health: true
  accepts_packages: true
storage:
  directory: ./storage
agent:
  executable: ./otelcol-contrib
  config_files: [./collector.yaml]
  description:
    non_identifying_attributes:
      env: prod
";

#[test]
fn an_upstream_config_becomes_ours_with_warnings_for_what_is_left_out() {
    let work = Workdir::new();
    work.write("upstream.yaml", UPSTREAM.as_bytes());
    let run = work
        .opamp(&[
            "supervisor",
            "convert-config",
            "--from",
            "upstream.yaml",
            "--trust-key",
            "release.pub",
            "--out",
            "supervisor.yaml",
        ])
        .expect_code(0);
    assert_eq!(
        run.stderr.trim(),
        "warning: capabilities.accepts_remote_config is not implemented by this supervisor; ignored"
    );
    let converted = std::fs::read_to_string(work.path("supervisor.yaml")).unwrap();
    for expected in [
        "endpoint: \"ws://127.0.0.1:4320/v1/opamp\"",
        "storage_dir: \"./storage\"",
        "args: [\"--config\", \"./collector.yaml\"]",
        "accepts_packages: true",
        "\"env\": \"prod\"",
        "- file: \"release.pub\"",
    ] {
        assert!(converted.contains(expected), "{expected}:\n{converted}");
    }

    let insecure = UPSTREAM.replace("insecure_skip_verify: false", "insecure_skip_verify: true");
    work.write("insecure.yaml", insecure.as_bytes());
    let refused = work
        .opamp(&["supervisor", "convert-config", "--from", "insecure.yaml"])
        .expect_code(1);
    assert!(
        refused.stderr.contains("server.tls.insecure_skip_verify"),
        "{}",
        refused.stderr
    );
    // Without a subcommand, --config is still required.
    assert_eq!(work.opamp(&["supervisor"]).code, 2);
}
