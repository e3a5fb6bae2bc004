//! The demo's agents: N `opamp supervisor` child processes, each with its own storage
//! directory, collector (a 1.0.0 launcher) and health port, and their clean-up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::Timing;
use super::release::PACKAGE;
use crate::failure::{CommandError, Failure, ResultExt as _};

/// How long a supervisor gets to stop its collector after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The label every demo agent carries (the rollouts' selector).
pub(crate) const DEMO_LABEL: (&str, &str) = ("env", "demo");

/// The supervisor processes; every one is stopped by [`Supervisors::stop_all`], and killed
/// when dropped (a panic or an early return still leaves no process behind).
#[derive(Debug, Default)]
pub(crate) struct Supervisors {
    children: Mutex<Vec<Child>>,
}

/// Where one agent's files are.
#[derive(Debug)]
pub(crate) struct AgentFiles {
    /// The supervisor's configuration.
    pub(crate) config: PathBuf,
    /// The supervisor's log (stdout and stderr).
    pub(crate) log: PathBuf,
}

impl Supervisors {
    /// Writes the files of agent `index` under `root/agents/` and starts its supervisor.
    pub(crate) fn start(
        &self,
        opamp: &Path,
        root: &Path,
        index: u32,
        settings: &AgentSettings<'_>,
    ) -> Result<AgentFiles, CommandError> {
        let files = write_agent(root, index, settings)?;
        let log = File::create(&files.log).or_fail(Failure::Unreachable, || {
            format!("cannot create {}", files.log.display())
        })?;
        let log_err = log.try_clone().or_fail(
            Failure::Unreachable,
            || "cannot duplicate a log file handle",
        )?;
        let child = Command::new(opamp)
            .arg("supervisor")
            .arg("--config")
            .arg(&files.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C in the terminal reaches only the demo, which
            // then stops every supervisor in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .or_fail(Failure::Operation, || {
                format!("cannot start supervisor {index} ({})", opamp.display())
            })?;
        self.lock().push(child);
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Supervisors that exited on their own so far (they should run until stopped).
    pub(crate) fn exited(&self) -> usize {
        self.lock()
            .iter_mut()
            .filter_map(|child| child.try_wait().ok().flatten())
            .count()
    }

    /// SIGTERM to every supervisor (each stops its collector), then SIGKILL to any still
    /// running after the grace period.
    pub(crate) async fn stop_all(&self) {
        let mut children = std::mem::take(&mut *self.lock());
        for child in &children {
            if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for child in &mut children {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!("a supervisor ignored SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// What every agent's configuration shares.
#[derive(Debug)]
pub(crate) struct AgentSettings<'a> {
    /// OpAMP endpoint (`ws://127.0.0.1:port/v1/opamp`).
    pub(crate) endpoint: String,
    /// Trusted release key.
    pub(crate) public_key: &'a Path,
    /// The 1.0.0 collector each agent starts with.
    pub(crate) initial_collector: &'a Path,
    /// Health and heartbeat timing.
    pub(crate) timing: &'a Timing,
}

fn write_agent(
    root: &Path,
    index: u32,
    settings: &AgentSettings<'_>,
) -> Result<AgentFiles, CommandError> {
    let dir = root.join("agents").join(format!("agent-{index:03}"));
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).or_fail(Failure::Unreachable, || {
        format!("cannot create {}", storage.display())
    })?;
    let executable = dir.join(PACKAGE);
    std::fs::copy(settings.initial_collector, &executable).or_fail(Failure::Unreachable, || {
        format!("cannot copy the collector to {}", executable.display())
    })?;
    let health_port = free_port()?;
    // The host's own collector config: remote configs go on top of it.
    let base = dir.join("collector.yaml");
    std::fs::write(&base, BASE_CONFIG).or_fail(Failure::Unreachable, || {
        format!("cannot write {}", base.display())
    })?;
    let timing = settings.timing;
    let yaml = format!(
        r#"# opamp demo agent {index}
server:
  endpoint: {endpoint}
agent:
  executable: {executable}
  storage_dir: {storage}
  package_name: {PACKAGE}
  args: ["--health-port", "{health_port}"]
  config_files: [{base}]
  labels:
    {label_key}: {label_value}
    demo.agent: "{index}"
health:
  http_url: http://127.0.0.1:{health_port}/health
  liveness_window: {liveness}
  start_timeout: {start_timeout}
  check_interval: {check_interval}
  health_timeout: 2s
trust:
  keys:
    - file: {public_key}
stop_timeout: 5s
heartbeat_interval: {heartbeat}
remote_config:
  mode: remote_on_top
"#,
        endpoint = settings.endpoint,
        executable = yaml_text(&executable),
        storage = yaml_text(&storage),
        base = yaml_text(&base),
        label_key = DEMO_LABEL.0,
        label_value = DEMO_LABEL.1,
        liveness = humantime::format_duration(timing.liveness_window),
        start_timeout = humantime::format_duration(timing.start_timeout),
        check_interval = humantime::format_duration(timing.health_check_interval),
        heartbeat = humantime::format_duration(timing.heartbeat),
        public_key = yaml_text(settings.public_key),
    );
    let config = dir.join("supervisor.yaml");
    std::fs::write(&config, yaml).or_fail(Failure::Unreachable, || {
        format!("cannot write {}", config.display())
    })?;
    Ok(AgentFiles {
        config,
        log: dir.join("supervisor.log"),
    })
}

/// Every demo host's local collector config (the base remote configs are merged onto).
pub(crate) const BASE_CONFIG: &str = "receivers:\n  otlp: {}\nexporters:\n  debug: {}\n";

/// The collector config a supervisor runs now (it writes the merged config there).
pub(crate) fn running_config(root: &Path, index: u32) -> String {
    let path = root
        .join("agents")
        .join(format!("agent-{index:03}"))
        .join("storage")
        .join("collector-config.yaml");
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A path as a YAML scalar (single-quoted, quotes doubled).
fn yaml_text(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// A loopback port that was free a moment ago (the kernel picks it).
fn free_port() -> Result<u16, CommandError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .or_fail(Failure::Unreachable, || "cannot find a free loopback port")?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .or_fail(Failure::Unreachable, || "cannot read a loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_paths_are_quoted() {
        assert_eq!(yaml_text(Path::new("/tmp/it's")), "'/tmp/it''s'");
    }
}
