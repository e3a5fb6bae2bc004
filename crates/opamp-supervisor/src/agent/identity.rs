//! Who the agent is: the persistent instance uid, the running collector's version, and the
//! `AgentDescription` built from them and the config.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use opamp_proto::{InstanceUid, v1};

use super::Error;
use crate::config::SupervisorConfig;
use crate::report::ErrorReport;
use crate::storage;

/// Name of the instance uid file inside `agent.storage_dir`.
pub const INSTANCE_UID_FILE: &str = "instance_uid";

/// Longest wait for `<exe> --version`.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the instance uid stored in `storage_dir`, or creates a UUID v7 and stores it
/// (durably, atomically) so the agent keeps its identity across restarts.
///
/// # Errors
/// [`Error::InstanceUid`] when the file exists but does not hold a UUID, or cannot be
/// read or written. A damaged identity is not replaced silently: the server would see a new
/// agent.
pub fn load_or_create_instance_uid(storage_dir: &Path) -> Result<InstanceUid, Error> {
    let path = storage_dir.join(INSTANCE_UID_FILE);
    let failed = |reason: String| Error::InstanceUid {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => InstanceUid::from_str(text.trim())
            .map_err(|e| failed(format!("does not hold a UUID ({e}); fix or remove it"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uid = InstanceUid::new_v7();
            storage::write_atomic(&path, format!("{uid}\n").as_bytes())
                .map_err(|e| failed(format!("cannot write: {e}")))?;
            tracing::info!(%uid, "created the agent's instance uid");
            Ok(uid)
        }
        Err(e) => Err(failed(format!("cannot read: {e}"))),
    }
}

/// Stores `uid` (assigned by the server) as the agent's instance uid for later starts.
///
/// # Errors
/// [`Error::InstanceUid`] when the file cannot be written.
pub fn store_instance_uid(storage_dir: &Path, uid: InstanceUid) -> Result<(), Error> {
    let path = storage_dir.join(INSTANCE_UID_FILE);
    storage::write_atomic(&path, format!("{uid}\n").as_bytes()).map_err(|e| {
        Error::InstanceUid {
            path: path.clone(),
            reason: format!("cannot write: {e}"),
        }
    })?;
    tracing::info!(%uid, "stored the instance uid assigned by the server");
    Ok(())
}

/// Runs `<executable> --version` once and returns the last whitespace-separated word of its
/// first output line ("otelcol-contrib version 0.115.0" gives "0.115.0"); `None` when the
/// executable cannot be run, fails, or prints nothing.
pub async fn detect_version(executable: &Path) -> Option<String> {
    let run = async {
        let mut attempts = 0;
        loop {
            let result = tokio::process::Command::new(executable)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await;
            // ETXTBSY: another thread of this process forked while the file was open for
            // writing (it was just installed); the descriptor closes at that child's exec.
            match result {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => break other,
            }
        }
    };
    let output = match tokio::time::timeout(VERSION_PROBE_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            tracing::warn!(executable = %executable.display(), status = %output.status, "--version failed");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(executable = %executable.display(), error = %ErrorReport(&e), "cannot run --version");
            return None;
        }
        Err(_) => {
            tracing::warn!(executable = %executable.display(), "--version did not answer in time");
            return None;
        }
    };
    version_from_output(&String::from_utf8_lossy(&output.stdout))
}

/// The version word of a `--version` output: the last word of the first non-empty line.
pub fn version_from_output(text: &str) -> Option<String> {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| line.split_whitespace().last())
        .map(str::to_owned)
}

/// The collector's package name: `agent.package_name`, else the executable's file name.
pub fn collector_package_name(config: &SupervisorConfig) -> String {
    config
        .agent
        .package_name
        .clone()
        .or_else(|| {
            config
                .agent
                .executable
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "otelcol".to_owned())
}

/// The inputs of the agent description that do not change while the supervisor runs.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The agent's instance uid.
    pub instance_uid: InstanceUid,
    /// `service.name`: `agent.package_name`, else the executable's file name.
    pub service_name: String,
    /// `agent.labels` plus `host.name`, `host.arch` and `os.type` (semantic-convention values:
    /// a server picks a platform build by them).
    pub labels: Vec<(String, String)>,
    /// The live executable.
    pub executable: PathBuf,
}

impl Identity {
    /// The identity for `config` and `instance_uid`.
    pub fn new(config: &SupervisorConfig, instance_uid: InstanceUid) -> Self {
        let service_name = collector_package_name(config);
        let mut labels = vec![
            ("host.name".to_owned(), host_name()),
            ("host.arch".to_owned(), host_arch(std::env::consts::ARCH)),
            ("os.type".to_owned(), os_type(std::env::consts::OS)),
        ];
        labels.extend(
            config
                .agent
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        Identity {
            instance_uid,
            service_name,
            labels,
            executable: config.agent.executable.clone(),
        }
    }

    /// The attributes a signed config's selector is matched against: `service.name`,
    /// `service.instance.id`, the host attributes and `agent.labels`.
    pub fn attributes(&self) -> std::collections::BTreeMap<String, String> {
        let mut attributes: std::collections::BTreeMap<String, String> =
            self.labels.iter().cloned().collect();
        attributes.insert("service.name".to_owned(), self.service_name.clone());
        attributes.insert(
            "service.instance.id".to_owned(),
            self.instance_uid.to_string(),
        );
        attributes
    }

    /// The description with `service.version` = `version` (empty when unknown).
    pub fn description(&self, version: &str) -> v1::AgentDescription {
        v1::AgentDescription {
            identifying_attributes: vec![
                v1::KeyValue::string("service.name", &self.service_name),
                v1::KeyValue::string("service.instance.id", self.instance_uid.to_string()),
                v1::KeyValue::string("service.version", version),
            ],
            non_identifying_attributes: self
                .labels
                .iter()
                .map(|(k, v)| v1::KeyValue::string(k, v))
                .collect(),
        }
    }
}

/// The semantic conventions' `host.arch` value for a Rust target architecture (Rust's own name
/// when the conventions have none).
fn host_arch(rust_arch: &str) -> String {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "x86" => "x86",
        "powerpc" => "ppc32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
    .to_owned()
}

/// The semantic conventions' `os.type` value for a Rust target OS.
fn os_type(rust_os: &str) -> String {
    match rust_os {
        "macos" => "darwin",
        "dragonfly" => "dragonflybsd",
        other => other,
    }
    .to_owned()
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_attributes_use_semantic_convention_values() {
        assert_eq!(host_arch("x86_64"), "amd64");
        assert_eq!(host_arch("aarch64"), "arm64");
        assert_eq!(host_arch("powerpc64"), "ppc64");
        assert_eq!(os_type("linux"), "linux");
        assert_eq!(os_type("macos"), "darwin");
    }

    #[test]
    fn version_is_the_last_word_of_the_first_line() {
        assert_eq!(
            version_from_output("otelcol-contrib version 0.115.0\n").as_deref(),
            Some("0.115.0")
        );
        assert_eq!(
            version_from_output("\nopamp-test-collector version 1.2.3\nmore\n").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(version_from_output("  \n"), None);
    }

    #[test]
    fn instance_uid_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_instance_uid(dir.path()).unwrap();
        let again = load_or_create_instance_uid(dir.path()).unwrap();
        assert_eq!(first, again);
        let assigned = InstanceUid::new_v7();
        store_instance_uid(dir.path(), assigned).unwrap();
        assert_eq!(load_or_create_instance_uid(dir.path()).unwrap(), assigned);
        std::fs::write(dir.path().join(INSTANCE_UID_FILE), "not a uuid").unwrap();
        assert!(matches!(
            load_or_create_instance_uid(dir.path()),
            Err(Error::InstanceUid { .. })
        ));
    }
}
