//! Shared pieces of the fleet server's integration tests: admin helpers that tolerate a server
//! that is down, and in-test agents (the transport's client with an `AgentSession`) that
//! download each offer over HTTP, check its SHA-256 and report the outcome (or a configured
//! failure), while recording everything they were offered and the version they really run, so
//! tests can compare the server's view with the truth. Config agents ([`spawn_config_agent`])
//! also accept remote config: they apply each offered config map and report `APPLIED`, or
//! `FAILED` with the reason when a file holds `fail_with: <reason>` (the key that makes the
//! test collector exit at start).

// Helpers here are test code too: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

#[cfg(feature = "postgres")]
pub mod cluster;
pub mod proxy;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opamp_fleet::admin::AgentSummary;
use opamp_fleet::admin::{AdminClient, RolloutRequest, RolloutView};
use opamp_fleet::{BatchPlan, FleetServerConfig, RolloutStatus};
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::{AgentEvent, AgentSessionConfig};
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, ClientHandle, OpampClient};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Admin token of every test server.
pub const TOKEN: &str = "fault-admin-token";
/// The package every test rolls out.
pub const PACKAGE: &str = "otelcol";
/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// A server configuration on the given addresses.
pub fn config(data_dir: &Path, listen: SocketAddr, admin: SocketAddr) -> FleetServerConfig {
    let mut config = FleetServerConfig::new(listen, data_dir, TOKEN);
    config.admin.listen = admin;
    config
}

/// An admin client for the server at `admin`.
pub fn admin(admin: SocketAddr) -> AdminClient {
    AdminClient::new(&format!("http://{admin}"), TOKEN).unwrap()
}

/// Adds `version` of the package to the catalog through the admin API.
pub async fn upload(client: &AdminClient, dir: &Path, version: &str) {
    let file = dir.join(format!("otelcol-{version}.bin"));
    std::fs::write(&file, format!("collector build {version}").repeat(2000)).unwrap();
    let entry = client
        .add_package(&file, PACKAGE, version, b"release-signature")
        .await
        .unwrap();
    assert_eq!(entry.version, version);
}

/// Polls `probe` until it returns `Some` (errors, e.g. a server that is down, count as "not
/// yet"); panics after [`WAIT`].
pub async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server lists `count` connected agents, all at `version`.
pub async fn wait_connected_at(client: &AdminClient, count: usize, version: &str) {
    poll(
        &format!("{count} agents connected at {version}"),
        || async {
            let agents = client.agents().await.ok()?;
            let ok = agents.len() == count
                && agents.iter().all(|a| {
                    a.connected
                        && a.runs(PACKAGE, version)
                        && a.capabilities & AgentCapabilities::ACCEPTS_PACKAGES.bits() != 0
                });
            ok.then_some(())
        },
    )
    .await;
}

/// Waits until the rollout view satisfies `check`; returns that view.
pub async fn wait_rollout(
    client: &AdminClient,
    id: &str,
    what: &str,
    check: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let last = Mutex::new(None);
    let found = tokio::time::timeout(
        WAIT,
        poll(what, || async {
            let view = client.rollout(id).await.ok()?;
            if check(&view) {
                return Some(view);
            }
            *last.lock().unwrap() = Some(view);
            None
        }),
    )
    .await;
    match found {
        Ok(view) => view,
        Err(_) => {
            let last = last.lock().unwrap().take();
            let agents = client.agents().await;
            panic!("timed out waiting for {what}; last view: {last:#?}; agents: {agents:#?}")
        }
    }
}

/// Waits for a terminal status and returns it.
pub async fn wait_terminal(client: &AdminClient, id: &str) -> RolloutStatus {
    wait_rollout(client, id, "a terminal status", |v| v.status.is_terminal())
        .await
        .status
}

/// A rollout of `version` to `env=test`: one canary, batches of a third, the given bake time.
pub fn request(version: &str, bake: Duration) -> RolloutRequest {
    let mut request = RolloutRequest::new(PACKAGE, version);
    request.selector = "env=test".into();
    request.canary_share = Some(0.1);
    request.batches = Some(BatchPlan::Share(0.34));
    request.bake_time = Some(bake);
    request.install_timeout = Some(Duration::from_secs(30));
    request.health_timeout = Some(Duration::from_secs(30));
    request
}

/// Counts agents per reported package version.
pub fn versions(agents: &[AgentSummary]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for agent in agents {
        let version = agent
            .package_versions
            .get(PACKAGE)
            .map(str::to_owned)
            .unwrap_or_default();
        *counts.entry(version).or_default() += 1;
    }
    counts
}

// ----- the in-test agents ----------------------------------------------------------------

/// What an agent actually did, kept outside the server so tests can check the server's view.
#[derive(Debug, Default)]
pub struct AgentTruth {
    /// The version it runs now.
    pub version: String,
    /// Every version it was offered, in order (duplicates included).
    pub offered: Vec<String>,
    /// Failed install attempts, with the reason.
    pub failures: Vec<String>,
    /// The credential the server issued it (enrollment), if any.
    pub credential: Option<String>,
    /// Why its connection last failed, if it did.
    pub last_disconnect: Option<String>,
    /// Hash (hex) of the remote config it runs; `None` before any.
    pub config: Option<String>,
    /// Every remote config hash (hex) it was offered, in order.
    pub configs_offered: Vec<String>,
}

/// One running in-test agent.
pub struct TestAgent {
    /// Its instance UID.
    pub uid: InstanceUid,
    /// The `env` label it reports.
    pub env: String,
    /// What it really did.
    pub truth: Arc<Mutex<AgentTruth>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TestAgent {
    /// Stops the agent and waits for its task.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// The version the agent runs now.
    pub fn version(&self) -> String {
        self.truth.lock().unwrap().version.clone()
    }

    /// Every version it was offered.
    pub fn offered(&self) -> Vec<String> {
        self.truth.lock().unwrap().offered.clone()
    }

    /// Hash (hex) of the remote config it runs.
    pub fn config(&self) -> Option<String> {
        self.truth.lock().unwrap().config.clone()
    }

    /// Every remote config hash (hex) it was offered.
    pub fn configs_offered(&self) -> Vec<String> {
        self.truth.lock().unwrap().configs_offered.clone()
    }
}

fn package_status(
    has: &str,
    has_hash: &[u8],
    offered: Option<&v1::PackageAvailable>,
    status: v1::PackageStatusEnum,
    error: &str,
) -> v1::PackageStatus {
    v1::PackageStatus {
        name: PACKAGE.into(),
        agent_has_version: has.into(),
        agent_has_hash: has_hash.to_vec(),
        server_offered_version: offered.map(|p| p.version.clone()).unwrap_or_default(),
        server_offered_hash: offered.map(|p| p.hash.clone()).unwrap_or_default(),
        status: status as i32,
        error_message: error.into(),
        download_details: None,
    }
}

fn statuses(all_hash: &[u8], status: v1::PackageStatus) -> v1::PackageStatuses {
    v1::PackageStatuses {
        packages: [(PACKAGE.to_owned(), status)].into_iter().collect(),
        server_provided_all_packages_hash: all_hash.to_vec(),
        error_message: String::new(),
    }
}

/// Versions whose install an agent reports as failed (as if the new collector would not start).
pub type FailingVersions = Arc<HashSet<String>>;

/// Starts an agent at `version` with label `env=<env>` connecting to `endpoint`. Each install
/// takes at least `install_time` (a real collector needs time to stage and restart), which
/// keeps the rollout inside each wave long enough for a fault to land there.
pub fn spawn_agent(
    endpoint: &str,
    index: usize,
    env: &str,
    version: &str,
    install_time: Duration,
) -> TestAgent {
    spawn_failing_agent(endpoint, index, env, version, install_time, Arc::default())
}

/// Like [`spawn_agent`], with installs of the `failing` versions reported as failed.
pub fn spawn_failing_agent(
    endpoint: &str,
    index: usize,
    env: &str,
    version: &str,
    install_time: Duration,
    failing: FailingVersions,
) -> TestAgent {
    let options = AgentOptions::new(ClientConfig::new(endpoint).unwrap());
    spawn_agent_with(options, index, env, version, install_time, failing)
}

/// Like [`spawn_agent`], also accepting remote config (each apply takes `install_time`).
pub fn spawn_config_agent(
    endpoint: &str,
    index: usize,
    env: &str,
    install_time: Duration,
) -> TestAgent {
    let mut options = AgentOptions::new(ClientConfig::new(endpoint).unwrap());
    options.accepts_remote_config = true;
    spawn_agent_with(options, index, env, "1.0.0", install_time, Arc::default())
}

/// How an in-test agent connects: its uid, its OpAMP client settings (TLS identity, headers)
/// and the HTTP client it downloads with.
pub struct AgentOptions {
    /// The instance uid it claims.
    pub uid: InstanceUid,
    /// Its OpAMP client settings.
    pub client: ClientConfig,
    /// Its download client.
    pub download: reqwest::Client,
    /// Whether it accepts (and reports) remote config.
    pub accepts_remote_config: bool,
}

impl AgentOptions {
    /// A new uid, `client` as given, a plain download client, no remote config.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            uid: InstanceUid::new_v7(),
            client,
            download: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            accepts_remote_config: false,
        }
    }
}

/// Like [`spawn_failing_agent`], connecting as `options` say.
pub fn spawn_agent_with(
    options: AgentOptions,
    index: usize,
    env: &str,
    version: &str,
    install_time: Duration,
    failing: FailingVersions,
) -> TestAgent {
    let AgentOptions {
        uid,
        client: mut config,
        download,
        accepts_remote_config,
    } = options;
    let mut description = v1::AgentDescription::default();
    description
        .identifying_attributes
        .push(v1::KeyValue::string(
            "service.instance.id",
            format!("agent-{index}"),
        ));
    description
        .non_identifying_attributes
        .push(v1::KeyValue::string("env", env));
    let mut agent = AgentSessionConfig::new(uid, description);
    agent.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
        | AgentCapabilities::REPORTS_PACKAGE_STATUSES
        | AgentCapabilities::REPORTS_HEALTH;
    if accepts_remote_config {
        agent.capabilities |=
            AgentCapabilities::ACCEPTS_REMOTE_CONFIG | AgentCapabilities::REPORTS_REMOTE_CONFIG;
    }
    agent.heartbeat_interval = Some(Duration::from_millis(300));
    config.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let (client, events) = OpampClient::start(config, agent).unwrap();
    let stop = CancellationToken::new();
    let truth = Arc::new(Mutex::new(AgentTruth {
        version: version.to_owned(),
        ..AgentTruth::default()
    }));
    let task = tokio::spawn(run_agent(
        client,
        events,
        truth.clone(),
        Behaviour {
            install_time,
            failing,
            download,
        },
        stop.clone(),
    ));
    TestAgent {
        uid,
        env: env.to_owned(),
        truth,
        stop,
        task,
    }
}

/// Downloads `file` and checks its hash; `Err` says why it is unusable. Like the real
/// supervisor's downloader, a transient failure (connection refused or cut, 5xx) is retried
/// for a while: a server outage during a download must not fail the install.
async fn fetch_and_verify(
    http: &reqwest::Client,
    file: &v1::DownloadableFile,
    credential: Option<&str>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(50);
    loop {
        match fetch_once(http, file, credential).await {
            Fetch::Done(outcome) => return outcome,
            Fetch::Transient(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error);
            }
            Fetch::Transient(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

enum Fetch {
    Done(Result<(), String>),
    Transient(String),
}

async fn fetch_once(
    http: &reqwest::Client,
    file: &v1::DownloadableFile,
    credential: Option<&str>,
) -> Fetch {
    let mut download = http.get(&file.download_url);
    // Like the supervisor: an enrolled agent's credential, unless the offer says otherwise.
    if let Some(credential) = credential {
        download = download.bearer_auth(credential);
    }
    for header in file.headers.iter().flat_map(|h| &h.headers) {
        download = download.header(&header.key, &header.value);
    }
    let response = match download.send().await {
        Ok(response) => response,
        Err(error) => return Fetch::Transient(format!("download failed: {error}")),
    };
    if response.status().is_server_error() {
        return Fetch::Transient(format!("download answered {}", response.status()));
    }
    if !response.status().is_success() {
        return Fetch::Done(Err(format!("download answered {}", response.status())));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return Fetch::Transient(format!("download cut: {error}")),
    };
    let actual = opamp_verify::ContentHash::of(&body).to_string();
    if actual == hex::encode(&file.content_hash) {
        Fetch::Done(Ok(()))
    } else {
        Fetch::Done(Err(format!("content hash mismatch: {actual}")))
    }
}

/// How an in-test agent's installs behave.
struct Behaviour {
    install_time: Duration,
    failing: FailingVersions,
    download: reqwest::Client,
}

async fn run_agent(
    client: ClientHandle,
    mut events: tokio::sync::mpsc::Receiver<ClientEvent>,
    truth: Arc<Mutex<AgentTruth>>,
    behaviour: Behaviour,
    stop: CancellationToken,
) {
    let Behaviour {
        install_time,
        failing,
        download: http,
    } = behaviour;
    let mut version = truth.lock().unwrap().version.clone();
    let mut has_hash = b"preinstalled".to_vec();
    let initial = statuses(
        &[],
        package_status(
            &version,
            &has_hash,
            None,
            v1::PackageStatusEnum::Installed,
            "",
        ),
    );
    // The client keeps its state across reconnections, so an update never fails for a
    // server that is down; it is only refused once the client shut down.
    let _ = client
        .update(move |s| {
            s.set_health(v1::ComponentHealth {
                healthy: true,
                ..Default::default()
            });
            s.set_package_statuses(initial);
        })
        .await;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        let event = match event {
            ClientEvent::Agent(event) => event,
            ClientEvent::CredentialIssued { credential } => {
                truth.lock().unwrap().credential = Some(credential);
                continue;
            }
            ClientEvent::Disconnected { reason, .. } => {
                truth.lock().unwrap().last_disconnect = Some(reason);
                continue;
            }
            _ => continue,
        };
        let offer = match *event {
            AgentEvent::PackagesAvailable { offer, .. } => offer,
            AgentEvent::RemoteConfig(remote) => {
                apply_remote_config(&client, &truth, remote, install_time).await;
                continue;
            }
            _ => continue,
        };
        let Some(package) = offer.packages.get(PACKAGE).cloned() else {
            continue;
        };
        truth.lock().unwrap().offered.push(package.version.clone());
        let report = if package.version == version {
            // Already there: check it and acknowledge the offer.
            tokio::time::sleep(install_time).await;
            package_status(
                &version,
                &has_hash,
                Some(&package),
                v1::PackageStatusEnum::Installed,
                "",
            )
        } else {
            let file = package.file.clone().unwrap_or_default();
            let credential = truth.lock().unwrap().credential.clone();
            let (outcome, ()) = tokio::join!(
                fetch_and_verify(&http, &file, credential.as_deref()),
                tokio::time::sleep(install_time)
            );
            let outcome = outcome.and_then(|()| {
                if failing.contains(&package.version) {
                    Err(format!("version {} refuses to start", package.version))
                } else {
                    Ok(())
                }
            });
            match outcome {
                Ok(()) => {
                    version = package.version.clone();
                    has_hash = package.hash.clone();
                    truth.lock().unwrap().version = version.clone();
                    package_status(
                        &version,
                        &has_hash,
                        Some(&package),
                        v1::PackageStatusEnum::Installed,
                        "",
                    )
                }
                Err(error) => {
                    truth.lock().unwrap().failures.push(error.clone());
                    package_status(
                        &version,
                        &has_hash,
                        Some(&package),
                        v1::PackageStatusEnum::InstallFailed,
                        &error,
                    )
                }
            }
        };
        let report = statuses(&offer.all_packages_hash, report);
        let _ = client.update(move |s| s.set_package_statuses(report)).await;
    }
    let _ = client.shutdown().await;
}

/// Applies `remote` after `install_time` and reports the outcome: `FAILED` with the reason
/// when a file holds `fail_with: <reason>` (the agent keeps its config), `APPLIED` otherwise.
async fn apply_remote_config(
    client: &ClientHandle,
    truth: &Arc<Mutex<AgentTruth>>,
    remote: v1::AgentRemoteConfig,
    install_time: Duration,
) {
    let hash = hex::encode(&remote.config_hash);
    truth.lock().unwrap().configs_offered.push(hash.clone());
    tokio::time::sleep(install_time).await;
    let failure = remote
        .config
        .iter()
        .flat_map(|map| map.config_map.values())
        .find_map(|file| {
            let text = String::from_utf8_lossy(&file.body);
            text.lines()
                .find_map(|line| line.trim().strip_prefix("fail_with:"))
                .map(|reason| reason.trim().to_owned())
        });
    let status = match failure {
        Some(reason) => {
            truth.lock().unwrap().failures.push(reason.clone());
            v1::RemoteConfigStatus {
                last_remote_config_hash: remote.config_hash.clone(),
                status: v1::RemoteConfigStatuses::Failed.into(),
                error_message: reason,
            }
        }
        None => {
            truth.lock().unwrap().config = Some(hash);
            v1::RemoteConfigStatus {
                last_remote_config_hash: remote.config_hash.clone(),
                status: v1::RemoteConfigStatuses::Applied.into(),
                error_message: String::new(),
            }
        }
    };
    let _ = client
        .update(move |s| s.set_remote_config_status(status))
        .await;
}

/// Adds version `version` of the config `name` with one file, `collector.yaml`, holding
/// `body`; returns its hash (hex).
pub async fn upload_config(client: &AdminClient, name: &str, version: &str, body: &str) -> String {
    use opamp_fleet::admin::{ConfigFileUpload, ConfigUpload};
    let file = ConfigFileUpload::new("collector.yaml", "text/yaml", body.as_bytes());
    let view = client
        .add_config(&ConfigUpload::new(name, version, vec![file]))
        .await
        .unwrap();
    assert_eq!(view.version, version);
    view.hash
}

/// A config rollout of `name` `version` to `env=test`, knobs as in [`request`].
pub fn config_request(name: &str, version: &str, bake: Duration) -> RolloutRequest {
    let package = request("unused", bake);
    let mut request = RolloutRequest::config(name, version);
    request.selector = package.selector;
    request.canary_share = package.canary_share;
    request.batches = package.batches;
    request.bake_time = package.bake_time;
    request.install_timeout = package.install_timeout;
    request.health_timeout = package.health_timeout;
    request
}

/// Starts `selected` agents labelled `env=test` and `bystanders` labelled `env=other`, all at
/// 1.0.0, connecting to `addr`: every third agent over plain HTTP polling, the others over
/// WebSocket.
pub fn spawn_fleet(
    addr: SocketAddr,
    selected: usize,
    bystanders: usize,
    install_time: Duration,
) -> Vec<TestAgent> {
    (0..selected + bystanders)
        .map(|i| {
            let env = if i < selected { "test" } else { "other" };
            let scheme = if i % 3 == 2 { "http" } else { "ws" };
            let endpoint = format!("{scheme}://{addr}/v1/opamp");
            spawn_agent(&endpoint, i, env, "1.0.0", install_time)
        })
        .collect()
}

/// Stops every agent.
pub async fn stop_all(agents: Vec<TestAgent>) {
    for agent in agents {
        agent.stop().await;
    }
}

/// The end-of-test checks shared by every fault: the rollout completed, the server's view of
/// every agent equals what the agent really runs, selected agents run `target` and were
/// offered nothing else, bystanders were offered nothing, and the audit log has an install
/// result for every selected agent and no failure.
pub async fn assert_converged(client: &AdminClient, id: &str, agents: &[TestAgent], target: &str) {
    assert_eq!(wait_terminal(client, id).await, RolloutStatus::Completed);
    let selected = agents.iter().filter(|a| a.env == "test").count();
    let others = agents.len() - selected;
    // The server hears the final reports a heartbeat later than the agents act on them.
    let records = poll("the server's view to match every agent", || async {
        let records = client.agents().await.ok()?;
        let matches = records.len() == agents.len()
            && agents.iter().all(|agent| {
                records.iter().any(|r| {
                    r.uid == agent.uid && r.package_versions.get(PACKAGE) == Some(&agent.version())
                })
            });
        matches.then_some(records)
    })
    .await;
    let mut expected = BTreeMap::from([(target.to_owned(), selected)]);
    if others > 0 {
        expected.insert("1.0.0".to_owned(), others);
    }
    assert_eq!(versions(&records), expected);
    for agent in agents {
        let offered = agent.offered();
        if agent.env == "test" {
            assert_eq!(agent.version(), target);
            assert!(
                offered.iter().all(|v| v == target),
                "agent {} was offered {offered:?}",
                agent.uid
            );
        } else {
            assert!(
                offered.is_empty(),
                "bystander {} offered {offered:?}",
                agent.uid
            );
            assert_eq!(agent.version(), "1.0.0");
        }
    }
    let audit = client.audit(Some(id)).await.unwrap();
    for agent in agents.iter().filter(|a| a.env == "test") {
        let installed = audit.iter().any(|a| {
            a.record.action
                == opamp_fleet::audit::AuditAction::AgentInstalled {
                    uid: agent.uid,
                    version: target.to_owned(),
                }
        });
        assert!(installed, "no install result audited for {}", agent.uid);
    }
    let failures: Vec<_> = audit
        .iter()
        .filter(|a| a.record.action.kind() == "agent_failed")
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let planned = audit
        .iter()
        .filter(|a| a.record.action.kind() == "planned")
        .count();
    assert_eq!(planned, 1, "the rollout was planned exactly once");
    assert!(audit.iter().any(|a| a.record.action.kind() == "completed"));
}
