//! A PostgreSQL cluster of a test's own (`.ci/postgres.sh` on Debian's packages), in a temp
//! dir on a free loopback port, so a test may stop and restart it without disturbing others.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster of this test's own, in a temp dir on a free loopback port.
pub struct OwnCluster {
    dir: PathBuf,
    port: u16,
    pub url: String,
    _temp: tempfile::TempDir,
}

impl OwnCluster {
    /// Starts one; `None` (skipped, with a note) unless `OPAMP_TEST_POSTGRES_URL` says
    /// PostgreSQL is installed. `OPAMP_INTEROP_REQUIRED=1` turns the skip into a failure.
    pub fn start() -> Option<OwnCluster> {
        if std::env::var("OPAMP_TEST_POSTGRES_URL").is_err() {
            assert!(
                std::env::var("OPAMP_INTEROP_REQUIRED").as_deref() != Ok("1"),
                "OPAMP_TEST_POSTGRES_URL is unset but OPAMP_INTEROP_REQUIRED=1"
            );
            eprintln!("skipped: set OPAMP_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR)");
            return None;
        }
        let temp = tempfile::tempdir().unwrap();
        // The cluster runs as the `postgres` user, which must reach its directory.
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = OwnCluster {
            dir: temp.path().join("pg"),
            port,
            url: String::new(),
            _temp: temp,
        };
        cluster.url = cluster.script("start");
        Some(cluster)
    }

    /// Runs `.ci/postgres.sh <action>` on this cluster (`stop`, `start`); returns its output.
    pub fn script(&self, action: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg(action)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "postgres.sh {action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// Every `coordinator_lease_taken` record in the audit log: (replica, fencing token), oldest
/// first.
pub async fn lease_takes(client: &opamp_fleet::admin::AdminClient) -> Vec<(String, i64)> {
    let audit = client
        .audit(Some(opamp_fleet::audit::FLEET_RECORDS))
        .await
        .unwrap();
    audit
        .iter()
        .filter_map(|entry| match &entry.record.action {
            opamp_fleet::AuditAction::CoordinatorLeaseTaken { replica, token } => {
                Some((replica.clone(), *token))
            }
            _ => None,
        })
        .collect()
}

/// Checks that rollout `id` was planned once and started each wave once, whatever restarted
/// or took over meanwhile; returns how many waves started.
pub async fn assert_no_step_repeated(client: &opamp_fleet::admin::AdminClient, id: &str) -> usize {
    let audit = client.audit(Some(id)).await.unwrap();
    let mut waves: Vec<String> = audit
        .iter()
        .filter(|entry| entry.record.action.kind() == "wave_started")
        .map(|entry| format!("{:?}", entry.record.action))
        .collect();
    let started = waves.len();
    waves.sort();
    waves.dedup();
    assert_eq!(waves.len(), started, "a wave started twice: {waves:?}");
    let planned = audit
        .iter()
        .filter(|entry| entry.record.action.kind() == "planned")
        .count();
    assert_eq!(planned, 1);
    started
}
