//! The supervisor's OpAMP agent: [`run`] ties the collector process, its health, the
//! installer and the OpAMP client together.
//!
//! Start-up: lock `storage_dir`, load (or create once) the instance uid, finish or undo an
//! interrupted install ([`Installer::recover`]), start the collector, learn its version (the
//! installed state, else `<exe> --version`), and connect. While running: package offers and
//! restart commands go to one worker task that owns the collector and carries out what
//! [`crate::decide::decide`] says, so installs never overlap; a newer offer abandons an install
//! that is still downloading. Package statuses and health reach the session together through one
//! channel (`uplink`). Shutdown: stop the collector gracefully, send `agent_disconnect`, release
//! the lock.

mod connection;
pub mod credential;
mod error;
pub mod identity;
mod remote;
mod trust;
mod uplink;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opamp_session::{AgentEvent, AgentSessionConfig};
use opamp_transport::client::{ClientEvent, ClientHandle, OpampClient};
use tokio::sync::{mpsc, watch};

pub use connection::{capabilities, client_config};
pub use error::Error;
pub use trust::trust_policy;
pub use uplink::DOWNLOAD_REPORT_INTERVAL;

use crate::config::SupervisorConfig;
use crate::decide::{Running, StatusReport};
use crate::download::Downloader;
use crate::health::HealthMonitor;
use crate::install::{Collector, InstallConfig, InstallEvent, Installer};
use crate::lock::StorageLock;
use crate::process::ManagedCollector;
use crate::report::ErrorReport;
use crate::storage::{self, StorageLayout};
use identity::Identity;
use uplink::{Outbox, Uplink};
use worker::{Inputs, Offer, Worker};

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
    // Before anything can start the collector: it must find a whole config file.
    let config_store = remote::recover(&config).map_err(Error::RemoteConfig)?;
    let instance_uid = identity::load_or_create_instance_uid(layout.root())?;
    let identity = Identity::new(&config, instance_uid);
    let policy = trust_policy(&config.trust)?;
    let mut client_config = client_config(&config)?;
    let (installer, downloader) = build_installer(&config, layout.clone())?;
    // The credential the server issued wins over the enrollment token that obtained it.
    let presented = match credential::load(layout.root())? {
        Some(credential) => {
            downloader.set_server_credential(&credential);
            Some(credential)
        }
        None => config
            .server
            .enrollment_token_file
            .as_deref()
            .map(credential::read_enrollment_token)
            .transpose()?,
    };
    if let Some(secret) = presented {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|e| {
            Error::Header {
                name: "Authorization".into(),
                reason: format!("the credential or enrollment token: {e}"),
            }
        })?;
        value.set_sensitive(true);
        client_config = client_config.header(http::header::AUTHORIZATION, value);
    }
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

    let mut session = AgentSessionConfig::new(instance_uid, identity.description(&current.version));
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
    let accepts_packages = config.capabilities.accepts_packages;
    let report = StatusReport::at_start(&current, &installer.installed_state());
    let initial = Outbox {
        statuses: accepts_packages.then(|| report.to_proto()),
        health: config
            .capabilities
            .reports_health
            .then(|| health.borrow_and_update().clone()),
        installed: accepts_packages.then(|| current.installed_packages()),
        description: None,
        remote_config_status: config_store
            .as_ref()
            .map(|(_, record)| crate::remote_config::status_from_record(record)),
        effective_config: None,
        available_components: if config.capabilities.reports_available_components {
            crate::components::detect(&identity.executable).await
        } else {
            None
        },
    };
    let (uplink, outbox) = Uplink::new(initial, report, accepts_packages);
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    #[cfg(feature = "metrics")]
    if let Some(listen) = config.metrics_listen {
        let sources = crate::metrics::MetricsSources {
            run_state: collector.watch(),
            health: health.clone(),
            statuses: uplink.statuses(),
        };
        crate::metrics::serve(listen, sources, metrics_stop.clone()).await?;
    }
    #[cfg(not(feature = "metrics"))]
    if let Some(listen) = config.metrics_listen {
        tracing::warn!(%listen, "metrics_listen is set but this build has no `metrics` feature; no metrics endpoint");
    }
    let effective_config = config
        .capabilities
        .reports_effective_config
        .then(|| {
            remote::effective_config(
                &config.agent.config_files,
                config_store.as_ref().map(|(store, _)| store),
            )
        })
        .flatten();
    let first = uplink.current();
    let _ = client
        .update(move |session| {
            if let Some(h) = first.health {
                session.set_health(h);
            }
            if let Some(c) = effective_config {
                session.set_effective_config(c);
            }
            if let Some(installed) = first.installed {
                session.set_installed_packages(installed);
            }
            if let Some(statuses) = first.statuses {
                session.set_package_statuses(statuses);
            }
            if let Some(status) = first.remote_config_status {
                session.set_remote_config_status(status);
            }
            if let Some(components) = first.available_components {
                session.set_available_components(components);
            }
        })
        .await;
    let forwarder = uplink::spawn_forwarder(client.clone(), outbox);

    let (offers_tx, offers_rx) = watch::channel(None::<Offer>);
    let (restart_tx, restarts) = mpsc::channel(1);
    let (configs_tx, configs) = watch::channel(None::<opamp_proto::v1::AgentRemoteConfig>);
    let remote = config_store.map(|(store, record)| remote::RemoteConfigs {
        settings: config.remote_config.clone(),
        config_files: config.agent.config_files.clone(),
        store,
        record,
        keys: policy.keys().clone(),
        attributes: identity.attributes(),
        start_timeout: config.health.start_timeout,
        reports_effective: config.capabilities.reports_effective_config,
    });
    let (stop_tx, stop) = watch::channel(false);
    let worker = Worker {
        collector,
        installer,
        policy,
        identity,
        configured_package: config.agent.package_name.clone(),
        running: current,
        uplink: uplink.clone(),
        health: health_sync,
        remote,
        reports_components: config.capabilities.reports_available_components,
    };
    let worker = tokio::spawn(worker.run(Inputs {
        offers: offers_rx,
        restarts,
        configs,
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
                Some(ClientEvent::CredentialIssued { credential }) => {
                    // Kept for the next start; the client already uses it.
                    downloader.set_server_credential(&credential);
                    if let Err(err) = credential::store(layout.root(), &credential) {
                        tracing::error!(error = %ErrorReport(&err), "cannot store the agent credential; the next start cannot reconnect");
                    }
                }
                Some(event) => on_client_event(event, &offers_tx, &restart_tx, &configs_tx, layout.root()),
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
                let latest = health.borrow_and_update().clone();
                uplink.set_health(latest);
            }
        }
    }

    let _ = stop_tx.send(true);
    drop(offers_tx);
    drop(configs_tx);
    let collector = worker.await;
    // Its client reference must be gone before the client can be shut down.
    forwarder.abort();
    let _ = forwarder.await;
    if let Ok(mut collector) = collector
        && let Err(err) = collector.stop().await
    {
        tracing::error!(error = %ErrorReport(&err), "stopping the collector failed");
    }
    health_task.abort();
    metrics_stop.cancel();
    disconnect(client).await;
    drop(lock);
    if client_stopped {
        return Err(Error::ClientStopped);
    }
    Ok(())
}

/// Sets the anti-rollback floor of the configured collector package to `version` and clears an
/// unknown floor (after both copies of it were lost, every install is refused until this is
/// done). Takes the storage directory's lock, so it refuses while a supervisor runs on it.
/// Returns the package name.
///
/// # Errors
/// [`Error::Lock`] while a supervisor runs, [`Error::FloorReset`] for a version that does not
/// parse or a failed write.
pub fn reset_rollback_floor(config: &SupervisorConfig, version: &str) -> Result<String, Error> {
    let _lock = StorageLock::acquire(&config.agent.storage_dir)?;
    let layout = StorageLayout::create(&config.agent.storage_dir)?;
    let package = identity::collector_package_name(config);
    crate::journal::InstalledStateStore::new(layout.installed_state_path())
        .reset_rollback_floor(&package, version)
        .map_err(Error::FloorReset)?;
    tracing::warn!(%package, %version, "anti-rollback floor reset by the operator");
    Ok(package)
}

fn on_client_event(
    event: ClientEvent,
    offers: &watch::Sender<Option<Offer>>,
    restarts: &mpsc::Sender<()>,
    configs: &watch::Sender<Option<opamp_proto::v1::AgentRemoteConfig>>,
    storage_dir: &std::path::Path,
) {
    match event {
        ClientEvent::Connected => tracing::info!("connected to the OpAMP server"),
        ClientEvent::Disconnected { reason, retry_in } => {
            tracing::warn!(%reason, ?retry_in, "disconnected from the OpAMP server");
        }
        ClientEvent::Agent(event) => match *event {
            AgentEvent::PackagesAvailable { offer, .. } => {
                tracing::info!(packages = offer.packages.len(), "package offer received");
                offers.send_replace(Some(Offer { offer }));
            }
            AgentEvent::RemoteConfig(config) => {
                tracing::info!(hash = %hex::encode(&config.config_hash), "remote config received");
                configs.send_replace(Some(config));
            }
            AgentEvent::Restart => {
                // A restart already waiting covers this one.
                let _ = restarts.try_send(());
            }
            AgentEvent::NewInstanceUid(uid) => {
                // The session uses it from now on; keep it for the next start too.
                if let Err(err) = identity::store_instance_uid(storage_dir, uid) {
                    tracing::error!(error = %ErrorReport(&err), "cannot store the instance uid the server assigned");
                }
            }
            other => tracing::debug!(event = ?other, "server event"),
        },
        other => tracing::debug!(event = ?other, "client event"),
    }
}

/// The installer, and a handle to its downloader (which shares the agent credential).
fn build_installer(
    config: &SupervisorConfig,
    layout: StorageLayout,
) -> Result<(Installer, Downloader), Error> {
    let mut install = InstallConfig::new(&config.agent.executable);
    if let Some(name) = config.agent.archive_executable_name() {
        install.archive_executable = name;
    }
    install.health_timeout = config.health.start_timeout;
    let read = |path: &std::path::Path, action: &'static str| {
        std::fs::read(path).map_err(|source| {
            Error::Installer(crate::install::InstallError::Io {
                action,
                path: path.to_path_buf(),
                source,
            })
        })
    };
    let tls = config.server.tls.as_ref();
    // A private CA for the OpAMP server is trusted for package downloads too, and the client
    // certificate of a mutual-TLS server is presented there as well.
    let ca_pem = tls
        .and_then(|t| t.ca_file.as_deref())
        .map(|file| read(file, "read CA file"))
        .transpose()?;
    let identity_pem = match tls.and_then(|t| t.cert_file.as_deref().zip(t.key_file.as_deref())) {
        Some((cert_file, key_file)) => {
            let mut pem = read(cert_file, "read client certificate file")?;
            pem.push(b'\n');
            pem.extend(read(key_file, "read client key file")?);
            Some(pem)
        }
        None => None,
    };
    let downloader = Downloader::with_tls(
        layout.downloads_dir(),
        install.download.clone(),
        ca_pem.as_deref(),
        identity_pem.as_deref(),
    )
    // Servers may offer download URLs relative to their OpAMP endpoint.
    .and_then(|downloader| downloader.with_base_url(config.server.endpoint.url()))
    .map_err(|e| Error::Installer(e.into()))?;
    let handle = downloader.clone();
    Ok((
        Installer::with_downloader(layout, install, downloader),
        handle,
    ))
}

/// What runs after start-up: the installed state's record, else the executable's
/// `--version` with its file hash.
async fn current_package(
    config: &SupervisorConfig,
    identity: &Identity,
    installer: &Installer,
) -> Running {
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
        return Running::new(
            name,
            package.version,
            package.server_hash,
            package.content_hash,
        );
    }
    let version = identity::detect_version(&identity.executable)
        .await
        .unwrap_or_default();
    Running::new(
        config
            .agent
            .package_name
            .clone()
            .unwrap_or_else(|| identity.service_name.clone()),
        version,
        Vec::new(),
        storage::sha256_file(&identity.executable).ok(),
    )
}

async fn disconnect(client: Arc<ClientHandle>) {
    match Arc::try_unwrap(client) {
        Ok(client) => {
            if let Err(err) = client.shutdown().await {
                tracing::warn!(error = %ErrorReport(&err), "OpAMP client did not shut down cleanly");
            }
        }
        Err(_) => {
            tracing::warn!("OpAMP client still in use at shutdown; not sending agent_disconnect")
        }
    }
}
