//! The supervisor's OpAMP agent: [`run`] ties the collector process, its health, the
//! installer and the OpAMP client together.
//!
//! Start-up: lock `storage_dir`, load (or create once) the instance uid, finish or undo an
//! interrupted install ([`Installer::recover`]), start the collector, learn its version (the
//! installed state, else `<exe> --version`), and connect. While running: health changes and
//! package statuses go to the server; package offers and restart commands go to one
//! worker task that owns the collector, so installs never overlap and a newer offer is
//! handled after the install in progress. Shutdown: stop the collector gracefully, send
//! `agent_disconnect`, release the lock.

mod connection;
mod error;
pub mod identity;
mod statuses;
mod trust;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opamp_session::{AgentConfig as SessionConfig, AgentEvent};
use opamp_transport::client::{ClientEvent, ClientHandle, OpampClient};
use tokio::sync::{mpsc, watch};

pub use connection::{capabilities, client_config};
pub use error::Error;
pub use statuses::DOWNLOAD_REPORT_INTERVAL;
pub use trust::trust_policy;

use crate::config::SupervisorConfig;
use crate::download::Downloader;
use crate::health::HealthMonitor;
use crate::install::{Collector, InstallConfig, InstallEvent, Installer};
use crate::journal::InstalledStateStore;
use crate::lock::StorageLock;
use crate::process::ManagedCollector;
use crate::storage::{self, StorageLayout};
use identity::Identity;
use statuses::StatusBoard;
use worker::{Current, Inputs, Offer, Worker};

/// Runs the supervisor for `config` until `shutdown` completes.
///
/// Failed installs are reported to the server (`InstallFailed`) and do not end the run; a
/// lost connection is retried by the client. The collector keeps running (restarted with
/// back-off if it crashes) the whole time.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use opamp_supervisor::config::SupervisorConfig;
/// let config = SupervisorConfig::load("supervisor.yaml".as_ref())?;
/// opamp_supervisor::run(config, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error`] when start-up fails: the storage directory is owned by another supervisor or
/// unusable, the trust keys or TLS files are unusable, recovery of an interrupted install
/// cannot bring the collector to a known state, or the collector cannot be started.
pub async fn run(config: SupervisorConfig, shutdown: impl Future) -> Result<(), Error> {
    let lock = StorageLock::acquire(&config.agent.storage_dir)?;
    let layout = StorageLayout::create(&config.agent.storage_dir)?;
    let instance_uid = identity::load_or_create_instance_uid(layout.root())?;
    let identity = Identity::new(&config, instance_uid);
    let policy = trust_policy(&config.trust)?;
    let client_config = client_config(&config)?;
    let installer = build_installer(&config, layout.clone())?;
    let state_store = InstalledStateStore::new(layout.installed_state_path());
    let mut collector = ManagedCollector::from_config(&config)?;

    let recovery = installer
        .recover(&mut collector, &mut |event: InstallEvent| {
            tracing::info!(?event, "recovery");
        })
        .await
        .map_err(Error::Recovery)?;
    tracing::info!(?recovery, "start-up recovery done");
    if !recovery.collector_started() {
        collector
            .start(&identity.executable)
            .await
            .map_err(|source| Error::Start {
                executable: identity.executable.clone(),
                source,
            })?;
    }
    let current = current_package(&config, &identity, &installer).await;
    tracing::info!(
        uid = %instance_uid,
        package = %current.name,
        version = %current.version,
        "collector started"
    );

    let mut session = SessionConfig::new(instance_uid, identity.description(&current.version));
    session.capabilities = capabilities(&config);
    session.heartbeat_interval = Some(config.heartbeat_interval);
    let (client, mut events) = OpampClient::start(client_config, session)?;
    let client = Arc::new(client);

    let refresh_health = Arc::new(tokio::sync::Notify::new());
    let (mut health, health_task) = HealthMonitor::spawn_with_refresh(
        collector.probe().cloned(),
        collector.watch(),
        config.health.check_interval,
        refresh_health.clone(),
    );
    let health_sync = worker::HealthSync {
        refresh: refresh_health,
        health: health.clone(),
        reports_health: config.capabilities.reports_health,
        // One probe after the refresh is enough; the rest is slack for a busy host.
        settle_timeout: config.health.check_interval + Duration::from_secs(2),
    };
    let (board, statuses_rx) = StatusBoard::new();
    board.set(current.installed_status());
    let initial_health = config
        .capabilities
        .reports_health
        .then(|| health.borrow_and_update().clone());
    let effective_config = effective_config(&config);
    let installed = current.installed_packages(&[]);
    let accepts_packages = config.capabilities.accepts_packages;
    let initial_statuses = board.current();
    let _ = client
        .update(move |session| {
            if let Some(h) = initial_health {
                session.set_health(h);
            }
            if let Some(c) = effective_config {
                session.set_effective_config(c);
            }
            if accepts_packages {
                session.set_installed_packages(installed);
                session.set_package_statuses(initial_statuses);
            }
        })
        .await;
    let forwarder =
        accepts_packages.then(|| statuses::spawn_forwarder(client.clone(), statuses_rx));

    let (offers_tx, offers_rx) = watch::channel(None::<Offer>);
    let (restart_tx, restarts) = mpsc::channel(1);
    let (stop_tx, stop) = watch::channel(false);
    let worker = Worker {
        collector,
        installer,
        policy,
        client: client.clone(),
        identity,
        configured_package: config.agent.package_name.clone(),
        statuses: board,
        current,
        state_store,
        health: health_sync,
    };
    let worker = tokio::spawn(worker.run(Inputs {
        offers: offers_rx,
        restarts,
        stop,
    }));

    tokio::pin!(shutdown);
    let mut client_stopped = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
            event = events.recv() => match event {
                Some(event) => on_client_event(event, &offers_tx, &restart_tx, layout.root()),
                None => {
                    tracing::error!("the OpAMP client stopped");
                    client_stopped = true;
                    break;
                }
            },
            changed = health.changed(), if config.capabilities.reports_health => {
                if changed.is_err() {
                    continue;
                }
                health.borrow_and_update();
                // Read the monitor when the update runs, not now: an update captured
                // earlier and applied late must not overwrite newer health (the worker
                // also pushes health right before it reports an install result).
                let latest = health.clone();
                let _ = client
                    .update(move |session| session.set_health(latest.borrow().clone()))
                    .await;
            }
        }
    }

    let _ = stop_tx.send(true);
    drop(offers_tx);
    let collector = worker.await;
    if let Some(forwarder) = forwarder {
        // Its client reference must be gone before the client can be shut down.
        forwarder.abort();
        let _ = forwarder.await;
    }
    if let Ok(mut collector) = collector
        && let Err(err) = collector.stop().await
    {
        tracing::error!(%err, "stopping the collector failed");
    }
    health_task.abort();
    disconnect(client).await;
    drop(lock);
    if client_stopped {
        return Err(Error::ClientStopped);
    }
    Ok(())
}

fn on_client_event(
    event: ClientEvent,
    offers: &watch::Sender<Option<Offer>>,
    restarts: &mpsc::Sender<()>,
    storage_dir: &std::path::Path,
) {
    match event {
        ClientEvent::Connected => tracing::info!("connected to the OpAMP server"),
        ClientEvent::Disconnected { reason, retry_in } => {
            tracing::warn!(%reason, ?retry_in, "disconnected from the OpAMP server");
        }
        ClientEvent::Agent(event) => match *event {
            AgentEvent::PackagesAvailable { offer, plan, .. } => {
                tracing::info!(packages = offer.packages.len(), "package offer received");
                offers.send_replace(Some(Offer { offer, plan }));
            }
            AgentEvent::Restart => {
                // A restart already waiting covers this one.
                let _ = restarts.try_send(());
            }
            AgentEvent::NewInstanceUid(uid) => {
                // The session uses it from now on; keep it for the next start too.
                if let Err(err) = identity::store_instance_uid(storage_dir, uid) {
                    tracing::error!(%err, "cannot store the instance uid the server assigned");
                }
            }
            other => tracing::debug!(event = ?other, "server event"),
        },
        other => tracing::debug!(event = ?other, "client event"),
    }
}

fn build_installer(config: &SupervisorConfig, layout: StorageLayout) -> Result<Installer, Error> {
    let mut install = InstallConfig::new(&config.agent.executable);
    if let Some(name) = config.agent.archive_executable_name() {
        install.archive_executable = name;
    }
    install.health_timeout = config.health.start_timeout;
    let ca_file = config.server.tls.as_ref().and_then(|t| t.ca_file.as_ref());
    let downloader = match ca_file {
        None => Downloader::new(layout.downloads_dir(), install.download.clone()),
        Some(ca_file) => {
            // A private CA for the OpAMP server is trusted for package downloads too.
            let pem = std::fs::read(ca_file).map_err(|source| {
                Error::Installer(crate::install::InstallError::Io {
                    action: "read CA file",
                    path: ca_file.clone(),
                    source,
                })
            })?;
            Downloader::with_root_certificates(
                layout.downloads_dir(),
                install.download.clone(),
                &pem,
            )
        }
    }
    // Servers may offer download URLs relative to their OpAMP endpoint.
    .and_then(|downloader| downloader.with_base_url(config.server.endpoint.url()))
    .map_err(|e| Error::Installer(e.into()))?;
    Ok(Installer::with_downloader(layout, install, downloader))
}

/// What runs after start-up: the installed state's record, else the executable's
/// `--version` with its file hash.
async fn current_package(
    config: &SupervisorConfig,
    identity: &Identity,
    installer: &Installer,
) -> Current {
    let state = installer.installed_state();
    let recorded = match &config.agent.package_name {
        Some(name) => state.packages.get(name).map(|p| (name.clone(), p.clone())),
        None if state.packages.len() == 1 => state
            .packages
            .iter()
            .next()
            .map(|(name, p)| (name.clone(), p.clone())),
        None => None,
    };
    if let Some((name, package)) = recorded {
        return Current {
            name,
            version: package.version,
            server_hash: package.server_hash,
            content_hash: package.content_hash.map(|h| h.0),
        };
    }
    let version = identity::detect_version(&identity.executable)
        .await
        .unwrap_or_default();
    Current {
        name: config
            .agent
            .package_name
            .clone()
            .unwrap_or_else(|| identity.service_name.clone()),
        version,
        server_hash: Vec::new(),
        content_hash: storage::sha256_file(&identity.executable).ok(),
    }
}

fn effective_config(config: &SupervisorConfig) -> Option<opamp_proto::v1::EffectiveConfig> {
    if !config.capabilities.reports_effective_config {
        return None;
    }
    match config.agent.read_effective_config() {
        Ok(effective) => Some(effective),
        Err(err) => {
            tracing::warn!(%err, "effective config not reported");
            None
        }
    }
}

async fn disconnect(client: Arc<ClientHandle>) {
    match Arc::try_unwrap(client) {
        Ok(client) => {
            if let Err(err) = client.shutdown().await {
                tracing::warn!(%err, "OpAMP client did not shut down cleanly");
            }
        }
        Err(_) => {
            tracing::warn!("OpAMP client still in use at shutdown; not sending agent_disconnect")
        }
    }
}
