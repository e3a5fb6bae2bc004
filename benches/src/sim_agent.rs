//! The load tools' simulated agents: `opamp-transport` clients with an `opamp-session`
//! `AgentSession` that report package [`PACKAGE`] 1.0.0 installed and healthy, and on an
//! offer download the package with the supervisor's `Downloader` (streamed to disk, SHA-256
//! checked, fsynced) and report `Installed`.

// Load-tool code: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opamp_fleet::admin::AdminClient;
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::{AgentEvent, AgentSessionConfig};
use opamp_supervisor::download::{DownloadLimits, DownloadRequest, Downloader};
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, ClientHandle, OpampClient};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The package the simulated agents run and the rollouts move.
pub const PACKAGE: &str = "otelcol";

/// Connections being set up at the same time by one [`AgentPool::start_all`].
const CONNECTING_AT_ONCE: usize = 200;

/// What the simulated agents of one process share: their settings, the HTTP client and the
/// limit on downloads running at the same time.
#[derive(Clone)]
pub struct AgentPool {
    heartbeat: Duration,
    dir: PathBuf,
    http: reqwest::Client,
    downloads: Arc<Semaphore>,
}

impl AgentPool {
    /// Agents with `heartbeat`, downloading into `dir/<index>/`, at most
    /// `download_concurrency` downloads at a time.
    #[must_use]
    pub fn new(dir: PathBuf, heartbeat: Duration, download_concurrency: usize) -> Self {
        let http = reqwest::Client::builder()
            .no_gzip()
            .pool_max_idle_per_host(download_concurrency)
            .build()
            .unwrap();
        AgentPool {
            heartbeat,
            dir,
            http,
            downloads: Arc::new(Semaphore::new(download_concurrency.max(1))),
        }
    }

    /// Starts agents `indices`, agent `i` connecting to `endpoint(i)` (a `ws://.../v1/opamp`
    /// URL), at most 200 (`CONNECTING_AT_ONCE`) connecting at a time; the receiver gets one `()`
    /// per agent when it first connects. Call it inside a tokio runtime.
    pub async fn start_all(
        &self,
        indices: std::ops::Range<usize>,
        endpoint: impl Fn(usize) -> String,
    ) -> mpsc::UnboundedReceiver<()> {
        let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let (connected_tx, connected_rx) = mpsc::unbounded_channel();
        for index in indices {
            let permit = gate.clone().acquire_owned().await.unwrap();
            self.start(&endpoint(index), index, permit, connected_tx.clone());
        }
        connected_rx
    }

    /// Starts agent `index` connecting to `endpoint`; `connected` gets a `()` and `permit` is
    /// released when it first connects.
    fn start(
        &self,
        endpoint: &str,
        index: usize,
        permit: OwnedSemaphorePermit,
        connected: mpsc::UnboundedSender<()>,
    ) {
        let mut config = ClientConfig::new(endpoint).unwrap();
        config.backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut agent = AgentSessionConfig::new(InstanceUid::new_v7(), description(index));
        agent.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
            | AgentCapabilities::REPORTS_PACKAGE_STATUSES
            | AgentCapabilities::REPORTS_HEALTH;
        agent.heartbeat_interval = Some(self.heartbeat);
        let (handle, events) = OpampClient::start(config, agent).unwrap();
        let downloader = Downloader::with_client(
            self.http.clone(),
            self.dir.join(index.to_string()),
            DownloadLimits::default(),
        )
        .unwrap();
        tokio::spawn(run_agent(
            handle,
            events,
            downloader,
            self.downloads.clone(),
            permit,
            connected,
        ));
    }
}

/// Writes versions 1.0.0 and 2.0.0 of [`PACKAGE`] (`package_kib` KiB of filler each) under
/// `dir` and adds them to the catalog through `admin`.
pub async fn add_packages(admin: &AdminClient, dir: &Path, package_kib: usize) {
    for version in ["1.0.0", "2.0.0"] {
        let file = dir.join(format!("otelcol-{version}.bin"));
        let content: Vec<u8> = (0..package_kib * 1024)
            .map(|i| {
                (i as u32 ^ version.len() as u32)
                    .wrapping_mul(2_654_435_761)
                    .to_le_bytes()[3]
            })
            .collect();
        std::fs::write(&file, content).unwrap();
        admin
            .add_package(&file, PACKAGE, version, b"release-signature")
            .await
            .unwrap();
    }
}

/// Waits until `connected` has delivered `count` connections; `false` if `deadline` comes
/// first (or every agent is gone).
pub async fn wait_connected(
    connected: &mut mpsc::UnboundedReceiver<()>,
    count: usize,
    deadline: tokio::time::Instant,
) -> bool {
    for _ in 0..count {
        if !matches!(
            tokio::time::timeout_at(deadline, connected.recv()).await,
            Ok(Some(()))
        ) {
            return false;
        }
    }
    true
}

/// Agent `index`'s description: `service.instance.id=agent-<index>`, `env=bench`.
#[must_use]
pub fn description(index: usize) -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![v1::KeyValue::string(
            "service.instance.id",
            format!("agent-{index}"),
        )],
        non_identifying_attributes: vec![v1::KeyValue::string("env", "bench")],
    }
}

/// Package `name` installed at `version` with `hash`, as offered in `offered` (if any).
#[must_use]
pub fn package_status(
    name: &str,
    version: &str,
    hash: &[u8],
    offered: Option<&v1::PackageAvailable>,
) -> v1::PackageStatus {
    v1::PackageStatus {
        name: name.into(),
        agent_has_version: version.into(),
        agent_has_hash: hash.to_vec(),
        server_offered_version: offered.map(|p| p.version.clone()).unwrap_or_default(),
        server_offered_hash: offered.map(|p| p.hash.clone()).unwrap_or_default(),
        status: v1::PackageStatusEnum::Installed.into(),
        ..Default::default()
    }
}

/// The package-status report of `packages` (keyed by their names) for the offer whose
/// all-packages hash is `all_hash`.
#[must_use]
pub fn statuses(
    all_hash: &[u8],
    packages: impl IntoIterator<Item = v1::PackageStatus>,
) -> v1::PackageStatuses {
    v1::PackageStatuses {
        packages: packages
            .into_iter()
            .map(|status| (status.name.clone(), status))
            .collect(),
        server_provided_all_packages_hash: all_hash.to_vec(),
        error_message: String::new(),
    }
}

/// One simulated agent: reports 1.0.0 installed and healthy, sends on `connected` (and
/// releases `connect_permit`) when it first connects, and installs each offered version by
/// downloading it (at most as many at a time as `downloads` allows).
pub async fn run_agent(
    handle: ClientHandle,
    mut events: mpsc::Receiver<ClientEvent>,
    downloader: Downloader,
    downloads: Arc<Semaphore>,
    connect_permit: OwnedSemaphorePermit,
    connected: mpsc::UnboundedSender<()>,
) {
    let mut version = "1.0.0".to_owned();
    let mut has_hash = b"preinstalled".to_vec();
    let initial = statuses(&[], [package_status(PACKAGE, &version, &has_hash, None)]);
    if handle
        .update(move |s| {
            s.set_health(v1::ComponentHealth {
                healthy: true,
                ..Default::default()
            });
            s.set_package_statuses(initial);
        })
        .await
        .is_err()
    {
        return;
    }
    let mut connect_permit = Some(connect_permit);
    while let Some(event) = events.recv().await {
        let event = match event {
            ClientEvent::Connected if connect_permit.take().is_some() => {
                let _ = connected.send(());
                continue;
            }
            ClientEvent::Agent(event) => event,
            _ => continue,
        };
        let AgentEvent::PackagesAvailable { offer, .. } = *event else {
            continue;
        };
        let Some(package) = offer.packages.get(PACKAGE).cloned() else {
            continue;
        };
        if package.version != version {
            let Some(file) = package.file.as_ref() else {
                continue;
            };
            let request = DownloadRequest::from_downloadable_file(PACKAGE, file);
            let outcome = {
                let _permit = downloads.acquire().await;
                downloader.download(&request, |_| {}).await
            };
            if let Err(error) = outcome {
                eprintln!("download failed: {error}");
                continue;
            }
            let _ = downloader.discard(PACKAGE);
            version = package.version.clone();
            has_hash = package.hash.clone();
        }
        let report = statuses(
            &offer.all_packages_hash,
            [package_status(PACKAGE, &version, &has_hash, Some(&package))],
        );
        if handle
            .update(move |s| {
                s.set_package_statuses(report);
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
