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
