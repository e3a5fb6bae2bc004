//! Shared pieces of the end-to-end agent tests: an in-test OpAMP server with a package
//! download route, a host directory with a real test collector and a release key, signed
//! offers, and a supervisor run in-process or as the real binary.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use opamp_packages::{OfferedPackage, PackageName, PackageOffer};
use opamp_proto::{InstanceUid, ServerCapabilities, v1};
use opamp_session::{AgentStatus, ServerEvent};
use opamp_supervisor::config::SupervisorConfig;
use opamp_transport::server::{
    DownloadConfig, OpampServer, OpampServerConfig, RunningServer, ServerNotification,
};
use opamp_verify::{DowngradeAuthorisation, ReleaseSigner, Statement};
use tokio::sync::{mpsc, oneshot};

use crate::collector_support::{Behaviour, Variant, free_port, health_url, variant_in};

/// The package name the server offers and the supervisor is configured with.
pub const PACKAGE: &str = "otelcol";
/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// An OpAMP server on 127.0.0.1 that offers packages and serves their files.
pub struct Fleet {
    pub server: RunningServer,
    notifications: mpsc::Receiver<ServerNotification>,
    pub packages: tempfile::TempDir,
    tls: bool,
}

impl Fleet {
    pub async fn start() -> Self {
        Self::start_with(|config| config).await
    }

    /// A fleet whose transport settings `customize` changes (TLS, agent authoriser, download
    /// authoriser); the download route is added first.
    pub async fn start_with(
        customize: impl FnOnce(OpampServerConfig) -> OpampServerConfig,
    ) -> Self {
        let packages = tempfile::tempdir().unwrap();
        let config = OpampServerConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .session(opamp_session::ServerSessionConfig::new(
                ServerCapabilities::ACCEPTS_STATUS
                    | ServerCapabilities::OFFERS_PACKAGES
                    | ServerCapabilities::ACCEPTS_PACKAGES_STATUS
                    | ServerCapabilities::OFFERS_REMOTE_CONFIG
                    | ServerCapabilities::ACCEPTS_EFFECTIVE_CONFIG,
            ))
            .downloads(DownloadConfig::new(packages.path()));
        let config = customize(config);
        let tls = config.tls.is_some();
        let (server, notifications) = OpampServer::start(config).await.unwrap();
        Fleet {
            server,
            notifications,
            packages,
            tls,
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/opamp", self.authority())
    }

    /// `localhost:<port>` under TLS (the name test certificates carry), else the address.
    fn authority(&self) -> String {
        if self.tls {
            format!("localhost:{}", self.server.local_addr().port())
        } else {
            self.server.local_addr().to_string()
        }
    }

    /// Serves `bytes` as `file_name` and returns its URL.
    pub fn publish(&self, file_name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.packages.path().join(file_name), bytes).unwrap();
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/packages/{file_name}", self.authority())
    }

    /// Waits for the next agent connection and returns its uid.
    pub async fn wait_connected(&mut self) -> InstanceUid {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.notifications.recv().await {
                    Some(ServerNotification::Connected { uid, .. }) => return uid,
                    Some(_) => {}
                    None => panic!("server stopped"),
                }
            }
        })
        .await
        .expect("no agent connected in time")
    }

    /// The agent's status as the server sees it.
    pub fn status(&self, uid: InstanceUid) -> AgentStatus {
        self.server
            .sessions()
            .with_session(uid, |s| s.agent_state().status.clone())
            .expect("agent known")
    }

    /// Waits (on server notifications, not on a timer) until `done` holds for the agent's
    /// status; panics with `what` and the last status after [`WAIT`].
    pub async fn wait_until(
        &mut self,
        uid: InstanceUid,
        what: &str,
        done: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        let result = tokio::time::timeout(WAIT, async {
            loop {
                let status = self.status(uid);
                if done(&status) {
                    return status;
                }
                if self.notifications.recv().await.is_none() {
                    panic!("server stopped");
                }
            }
        })
        .await;
        match result {
            Ok(status) => status,
            Err(_) => panic!(
                "timed out waiting for {what}; last status: {:#?}",
                self.status(uid)
            ),
        }
    }

    /// Offers `offer` to the agent.
    pub fn offer(&self, uid: InstanceUid, offer: v1::PackagesAvailable) {
        self.server
            .sessions()
            .with_session(uid, |s| s.offer_packages(offer))
            .expect("agent known");
    }

    /// Offers the remote config `config` under `hash`.
    pub fn offer_config(&self, uid: InstanceUid, hash: &[u8], config: v1::AgentConfigMap) {
        let offer = v1::AgentRemoteConfig {
            config: Some(config),
            config_hash: hash.to_vec(),
        };
        self.server
            .sessions()
            .with_session(uid, |s| s.offer_remote_config(offer))
            .expect("agent known");
    }

    /// Waits until the agent reports `wanted` for the remote config `hash`. Every reported
    /// change is looked at, not only the latest state, so a status that is soon replaced (the
    /// server re-offers a config the moment an agent says none runs) is still seen. Returns the
    /// agent's status now, with the remote config status that matched.
    pub async fn wait_config(
        &mut self,
        uid: InstanceUid,
        hash: &[u8],
        wanted: v1::RemoteConfigStatuses,
    ) -> AgentStatus {
        let matches = |r: &v1::RemoteConfigStatus| {
            r.last_remote_config_hash == hash && r.status == wanted as i32
        };
        let reported = |notification: ServerNotification| match notification {
            ServerNotification::Event {
                uid: from,
                event: ServerEvent::RemoteConfigStatusChanged(status),
            } if from == uid && matches(&status) => Some(status),
            _ => None,
        };
        // Reports already queued come first, in order; only then may the current state answer
        // (for a report an earlier wait consumed).
        while let Ok(notification) = self.notifications.try_recv() {
            if let Some(status) = reported(notification) {
                return self.status_with(uid, status);
            }
        }
        let current = self.status(uid);
        if current.remote_config_status.as_ref().is_some_and(matches) {
            return current;
        }
        let result = tokio::time::timeout(WAIT, async {
            loop {
                match self.notifications.recv().await {
                    Some(notification) => {
                        if let Some(status) = reported(notification) {
                            return status;
                        }
                    }
                    None => panic!("server stopped"),
                }
            }
        })
        .await;
        match result {
            Ok(status) => self.status_with(uid, status),
            Err(_) => panic!(
                "timed out waiting for remote config {wanted:?}; last status: {:#?}",
                self.status(uid).remote_config_status
            ),
        }
    }

    fn status_with(&self, uid: InstanceUid, config: v1::RemoteConfigStatus) -> AgentStatus {
        let mut status = self.status(uid);
        status.remote_config_status = Some(config);
        status
    }

    /// Publishes `bytes` and offers them as `version`, signed by `signer`.
    pub fn offer_signed(
        &self,
        uid: InstanceUid,
        signer: &ReleaseSigner,
        version: &str,
        bytes: &[u8],
        downgrade: DowngradeAuthorisation,
    ) -> v1::PackagesAvailable {
        let offer = self.signed_offer(signer, version, bytes, bytes, downgrade);
        self.offer(uid, offer.clone());
        offer
    }

    /// An offer of `served` bytes as `version` whose content hash and signature are for
    /// `signed` (equal to `served` for an honest offer).
    pub fn signed_offer(
        &self,
        signer: &ReleaseSigner,
        version: &str,
        served: &[u8],
        signed: &[u8],
        downgrade: DowngradeAuthorisation,
    ) -> v1::PackagesAvailable {
        let package = self.signed_package(signer, version, served, signed, downgrade);
        PackageOffer::new().with_package(package).unwrap().build()
    }

    /// The collector package of [`Fleet::signed_offer`], to combine with others.
    pub fn signed_package(
        &self,
        signer: &ReleaseSigner,
        version: &str,
        served: &[u8],
        signed: &[u8],
        downgrade: DowngradeAuthorisation,
    ) -> OfferedPackage {
        let hash = opamp_verify::ContentHash::of(signed);
        let statement = Statement::new(
            PACKAGE,
            version,
            hash,
            signed.len() as u64,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap()
        .with_downgrade(downgrade);
        let signature = signer.sign_statement(&statement).unwrap();
        let file_name = format!("otelcol-{version}-{}", hex(&hash.as_bytes()[..6]));
        let url = self.publish(&file_name, served);
        OfferedPackage::top_level(
            PackageName::new(PACKAGE).unwrap(),
            version,
            url,
            opamp_packages::ContentHash::from(*hash.as_bytes()),
        )
        .with_signature(signature)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `otelcol` package status in `status`, if reported.
pub fn package(status: &AgentStatus) -> Option<v1::PackageStatus> {
    status
        .package_statuses
        .as_ref()
        .and_then(|s| s.packages.get(PACKAGE).cloned())
}

/// Whether the package status is `wanted` for the offered `version`.
pub fn package_is(status: &AgentStatus, wanted: v1::PackageStatusEnum, version: &str) -> bool {
    package(status).is_some_and(|p| {
        p.status == wanted as i32
            && (p.server_offered_version == version || p.agent_has_version == version)
    })
}

/// The `service.version` the agent describes.
pub fn described_version(status: &AgentStatus) -> Option<String> {
    let description = status.description.as_ref()?;
    description
        .identifying_attributes
        .iter()
        .find(|kv| kv.key == "service.version")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(v1::any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// A host: a collector executable, a storage directory, a release key trusted by the
/// supervisor config, and a health port.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub exe: PathBuf,
    pub storage: PathBuf,
    pub health_port: u16,
    pub signer: ReleaseSigner,
    pub key_file: PathBuf,
}

impl Host {
    /// A host running a healthy test collector reporting `version`.
    pub fn new(version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let exe = variant_in(&dir.path().join("bin"), PACKAGE, &Variant::healthy(version));
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let key_file = dir.path().join("release.pub.pem");
        std::fs::write(&key_file, signer.public_key().to_spki_pem().unwrap()).unwrap();
        Host {
            storage: dir.path().join("storage"),
            health_port: free_port(),
            exe,
            signer,
            key_file,
            dir,
        }
    }

    /// The bytes of a test collector build reporting `version` and behaving as `behaviour`.
    pub fn build(&self, version: &str, behaviour: Behaviour) -> Vec<u8> {
        let builds = self.dir.path().join("builds");
        std::fs::create_dir_all(&builds).unwrap();
        let variant = Variant::healthy(version).with_behaviour(behaviour);
        let path = variant_in(&builds, &format!("{version}-{}", rand_name()), &variant);
        std::fs::read(path).unwrap()
    }

    /// Writes `supervisor.yaml` for `endpoint` with `liveness_window`, and loads it.
    pub fn config(&self, endpoint: &str, liveness_window: &str) -> (PathBuf, SupervisorConfig) {
        self.config_with(endpoint, liveness_window, "5s")
    }

    /// As [`Host::config`], with the heartbeat (and HTTP polling) interval.
    pub fn config_with(
        &self,
        endpoint: &str,
        liveness_window: &str,
        heartbeat: &str,
    ) -> (PathBuf, SupervisorConfig) {
        self.write_config(endpoint, liveness_window, heartbeat, "", "")
    }

    /// As [`Host::config_with`], with more `server:` keys (YAML lines indented by two).
    pub fn config_with_server(
        &self,
        endpoint: &str,
        liveness_window: &str,
        heartbeat: &str,
        server_extra: &str,
    ) -> (PathBuf, SupervisorConfig) {
        self.write_config(endpoint, liveness_window, heartbeat, server_extra, "")
    }

    /// As [`Host::config_with`], with `extra` YAML appended (top-level sections).
    pub fn config_extra(
        &self,
        endpoint: &str,
        liveness_window: &str,
        heartbeat: &str,
        extra: &str,
    ) -> (PathBuf, SupervisorConfig) {
        self.write_config(endpoint, liveness_window, heartbeat, "", extra)
    }

    fn write_config(
        &self,
        endpoint: &str,
        liveness_window: &str,
        heartbeat: &str,
        server_extra: &str,
        extra: &str,
    ) -> (PathBuf, SupervisorConfig) {
        let path = self.dir.path().join("supervisor.yaml");
        let yaml = format!(
            r#"server:
  endpoint: {endpoint}
{server_extra}
agent:
  executable: {exe}
  storage_dir: {storage}
  package_name: {PACKAGE}
  args: ["--health-port", "{port}"]
  config_files: [{collector_config}]
  labels:
    env: test
capabilities:
  accepts_packages: true
  reports_health: true
  reports_effective_config: true
  reports_available_components: true
health:
  http_url: {health}
  liveness_window: {liveness_window}
  start_timeout: 8s
  health_timeout: 1s
  check_interval: 200ms
stop_timeout: 3s
restart_backoff:
  initial: 200ms
  max: 1s
trust:
  keys:
    - file: {key}
heartbeat_interval: {heartbeat}
{extra}"#,
            exe = self.exe.display(),
            storage = self.storage.display(),
            port = self.health_port,
            health = health_url(self.health_port),
            key = self.key_file.display(),
            collector_config = self.collector_config().display(),
        );
        std::fs::write(&path, yaml).unwrap();
        let config = SupervisorConfig::load(&path).unwrap();
        (path, config)
    }

    /// The collector config file reported as effective config.
    pub fn collector_config(&self) -> PathBuf {
        let path = self.dir.path().join("collector.yaml");
        if !path.exists() {
            std::fs::write(&path, "receivers: {}\n").unwrap();
        }
        path
    }

    /// The version the live executable reports.
    pub fn live_version(&self) -> String {
        let out = crate::collector_support::output_retrying(
            std::process::Command::new(&self.exe).arg("--version"),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned()
    }

    /// The config text the running collector was started with (`GET /config`), if it answers.
    pub async fn running_config(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/config", self.health_port);
        let response = reqwest::get(url).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// The version the health endpoint's collector reports (`GET /version`), if it answers.
    pub async fn running_version(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/version", self.health_port);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        body["version"].as_str().map(str::to_owned)
    }
}

fn rand_name() -> String {
    use rand_core::RngCore;
    format!("{:08x}", rand_core::OsRng.next_u32())
}

/// A supervisor running in this process.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), opamp_supervisor::Error>>,
}

impl InProcess {
    pub fn spawn(config: SupervisorConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(opamp_supervisor::run(config, async move {
            let _ = stopped.await;
        }));
        InProcess {
            stop: Some(stop),
            task,
        }
    }

    /// Asks for a graceful shutdown and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("supervisor shut down in time")
            .expect("supervisor task")
            .expect("supervisor ran without error");
    }
}

/// A fleet, a host at `version` whose supervisor runs in this process, and the agent's uid,
/// once the server has seen the agent report `Installed` and healthy.
pub async fn running(
    version: &str,
    liveness_window: &str,
) -> (Fleet, Host, InProcess, InstanceUid) {
    let mut fleet = Fleet::start().await;
    let host = Host::new(version);
    let (_, config) = host.config(&fleet.endpoint(), liveness_window);
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "initial Installed and healthy", |s| {
            package_is(s, v1::PackageStatusEnum::Installed, version)
                && s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    (fleet, host, supervisor, uid)
}

/// Waits for `InstallFailed` of `version` and returns its error message.
pub async fn wait_failed(fleet: &mut Fleet, uid: InstanceUid, version: &str) -> String {
    let status = fleet
        .wait_until(uid, &format!("InstallFailed {version}"), |s| {
            package(s).is_some_and(|p| {
                p.status == v1::PackageStatusEnum::InstallFailed as i32
                    && p.server_offered_version == version
            })
        })
        .await;
    package(&status).unwrap().error_message
}

/// Asserts the host still runs `version`, healthy, and the server sees it healthy.
pub async fn assert_still_runs(fleet: &mut Fleet, uid: InstanceUid, host: &Host, version: &str) {
    assert_eq!(host.live_version(), version, "live executable");
    let status = fleet
        .wait_until(uid, &format!("healthy on {version}"), |s| {
            s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    assert_eq!(package(&status).unwrap().agent_has_version, version);
    assert_eq!(described_version(&status).as_deref(), Some(version));
    let deadline = tokio::time::Instant::now() + WAIT;
    // The restored collector may still be binding its port right after the rollback.
    loop {
        if host.running_version().await.as_deref() == Some(version) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{version} not serving"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Names the config of a supervisor process started by [`spawn_supervisor`].
const SUPERVISOR_CONFIG_ENV: &str = "OPAMP_TEST_SUPERVISOR_CONFIG";

/// The body of a `#[test] fn supervisor_process()` that test files killing a real supervisor
/// process declare (the crate ships no binary, so the process is the test executable started
/// again): does nothing in a normal run; with [`SUPERVISOR_CONFIG_ENV`] set, runs the
/// supervisor until SIGTERM (exit 0) or until killed.
pub fn run_supervisor_process_if_asked() {
    let Some(config) = std::env::var_os(SUPERVISOR_CONFIG_ENV) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let config =
        SupervisorConfig::load(std::path::Path::new(&config)).expect("supervisor config loads");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("listen for SIGTERM");
        opamp_supervisor::run(config, async move {
            terminate.recv().await;
        })
        .await
        .expect("supervisor runs until SIGTERM");
    });
}

/// Starts this test executable's `supervisor_process` test as a supervisor for `config`,
/// logging to `log_name` in the host directory.
pub fn spawn_supervisor(
    host: &Host,
    config: &std::path::Path,
    log_name: &str,
) -> std::process::Child {
    use std::process::{Command, Stdio};
    let log = std::fs::File::create(host.dir.path().join(log_name)).expect("create log file");
    let this_test = std::env::current_exe().expect("test executable path");
    Command::new(this_test)
        .args([
            "supervisor_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SUPERVISOR_CONFIG_ENV, config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the supervisor process")
}
