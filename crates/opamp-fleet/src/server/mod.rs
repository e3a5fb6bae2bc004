//! The fleet server: the OpAMP listener (from `opamp-transport`), the package download route,
//! the rollout driver and the admin API, started together by [`FleetServer::start`].
//!
//! ```text
//!  agents ──ws/http──▶ OpampServer ──notifications──▶ driver task ──▶ SQLite store
//!    ▲                     │  /packages/... (Range, ETag)   │  ▲
//!    └──── offers ◀────────┴─ AgentSessions::with_session ◀─┘  │ requests (create, pause...)
//!                                              admin API (axum) ┘ reads go to the store
//! ```

mod agent_link;
pub(crate) mod agents;
pub(crate) mod config_offers;
pub mod details;
mod details_book;
pub(crate) mod driver;
mod fd_limits;
#[cfg(feature = "postgres")]
mod forwarding;
pub(crate) mod identity;
mod leadership;
pub(crate) mod offers;
#[cfg(feature = "postgres")]
mod relay;
#[cfg(feature = "postgres")]
mod replication;
mod requests;
pub mod startup;
mod unsent;
#[cfg(feature = "postgres")]
mod update_mirror;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opamp_proto::ServerCapabilities;
use opamp_transport::server::{DownloadConfig, OpampServer, OpampServerConfig, RunningServer};
use opamp_transport::tls::{ClientAuth, Identity, ServerTls};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::FleetError;
use crate::admin::{AdminState, router};
use crate::catalog::{Catalog, SharedStore};
use crate::config::FleetServerConfig;
use crate::metrics::FleetMetrics;
use crate::store::{FleetStore as _, SqliteStore};
use driver::Driver;
use offers::OfferSettings;
use opamp_rollout::fleet::FleetSettings;

/// Entry point: see [`FleetServer::start`].
#[derive(Debug)]
pub struct FleetServer;

impl FleetServer {
    /// Opens (or creates) the store in `config.data_dir`, resumes the active rollouts, and
    /// starts the agent listener and the admin API.
    ///
    /// Offers point agents at `<public_url>/packages/<name>/<version>/<file>`; without a
    /// configured `public_url` the listener's own address is used, which suits loopback
    /// tests but not a wildcard `listen` address.
    ///
    /// # Example
    /// ```no_run
    /// use opamp_fleet::{FleetServer, FleetServerConfig};
    ///
    /// # async fn run() -> Result<(), opamp_fleet::FleetError> {
    /// let config = FleetServerConfig::new("127.0.0.1:4320".parse().unwrap(), "/var/lib/opamp", "secret");
    /// let server = FleetServer::start(config).await?;
    /// println!("agents: {}, admin: {}", server.opamp_addr(), server.admin_addr());
    /// tokio::signal::ctrl_c().await.ok();
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`FleetError::Config`] (no admin operator or a bad one), [`FleetError::Io`] (data directory, admin
    /// bind), store errors, [`FleetError::Transport`] (agent listener bind, TLS files).
    pub async fn start(config: FleetServerConfig) -> Result<RunningFleetServer, FleetError> {
        config.validate()?;
        let operators = config.admin.resolve_operators()?;
        let lock = startup::lock_data_dir(&config.data_dir)?;
        if config.store.postgres_url.is_none() {
            startup::check_store_present(&config)?;
        }
        let upload_dir = config.data_dir.join("uploads");
        startup::clear_uploads(&upload_dir)?;
        let packages_dir = config.packages_dir();
        std::fs::create_dir_all(&packages_dir).map_err(|source| FleetError::Io {
            context: format!("creating {}", packages_dir.display()),
            source,
        })?;
        let (store, replication) = open_store(&config).await?;
        let reader = open_reader(&config, &store).await?;
        let catalog = Catalog::new(store.clone(), packages_dir.clone())
            .with_release_keys(config.load_release_keys()?);

        let gate = identity::IdentityGate::start(config.agent_identity.mode, store.clone())?;
        let mut transport = transport_config(&config, gate.clone())?;
        if let Some(gate) = gate {
            transport = transport.authorize_agent(move |claim| gate.authorize(claim));
        }
        let (opamp, notifications) = OpampServer::start(transport).await?;
        let opamp_addr = opamp.local_addr();
        let public_url = config.public_url.clone().unwrap_or_else(|| {
            if opamp_addr.ip().is_unspecified() {
                tracing::warn!(
                    %opamp_addr,
                    "no public_url configured: download URLs name the wildcard address, \
                     which remote agents cannot reach"
                );
            }
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{opamp_addr}")
        });
        let offer_settings = OfferSettings {
            download_base: format!("{}/packages", public_url.trim_end_matches('/')),
            download_token: config.download_token.clone(),
        };
        let metrics = Arc::new(FleetMetrics::new());
        let (updates, _) = broadcast::channel(1024);
        let parts = DriverParts {
            catalog: catalog.clone(),
            offer_settings,
            metrics: metrics.clone(),
            updates: updates.clone(),
            settings: FleetSettings::default()
                .forget_after(config.limits.forget_agents_after)
                .last_seen_period(config.last_seen_period()),
        };
        let shutdown = CancellationToken::new();
        let lease_loss = Arc::new(leadership::LeaseLoss::default());
        let coordinating = CancellationToken::new();
        let (requests, requests_rx) = mpsc::channel(64);
        let driver_task = match replication {
            None => {
                let link = agent_link::AgentLink::local(opamp.sessions().clone());
                parts.metrics.set_coordinating();
                let driver = parts.load(store.clone(), link)?;
                coordinating.cancel();
                spawn_driver(driver, notifications, None, requests_rx, shutdown.clone())?
            }
            #[cfg(feature = "postgres")]
            Some(replication) => replication::start(
                replication,
                parts,
                replication::Serving {
                    sessions: opamp.sessions().clone(),
                    notifications,
                    requests: requests_rx,
                    requests_to_driver: requests.clone(),
                    store: store.clone(),
                    updates: updates.clone(),
                    limits: opamp_proto::codec::Limits::with_max_message_size(
                        config.max_message_size,
                    ),
                    lease_loss: lease_loss.clone(),
                    coordinating: coordinating.clone(),
                    shutdown: shutdown.clone(),
                },
            ),
        };
        // A start that fails from here on must still stop the driver thread: nothing would
        // cancel it, and a runtime waiting for it would never exit.
        let stop_on_failure = shutdown.clone().drop_guard();

        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| FleetError::Io {
                context: format!("binding the admin API to {}", config.admin.listen),
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| FleetError::Io {
                context: "reading the admin address".into(),
                source,
            })?;
        let app = router(AdminState {
            operators: operators.into(),
            store,
            reader,
            catalog,
            driver: requests,
            updates,
            metrics,
            transport: opamp.stats(),
            upload_dir,
            shutdown: shutdown.clone(),
            agent_identity: config.agent_identity.mode,
        });
        // The agent listener's protections (connection cap, header, body and write
        // timeouts): half-sent admin requests must not hold the listener (issue 22).
        let admin_task = spawn_admin(
            admin_listener,
            app,
            config.limits.admin_listener(),
            shutdown.clone(),
        )?;
        // Dropped without `shutdown` (a panicking caller), the server still stops its driver
        // thread, so the runtime it was started on can exit.
        let stop_driver = stop_on_failure;
        tracing::info!(%opamp_addr, %admin_addr, %public_url, "fleet server started");
        Ok(RunningFleetServer {
            opamp_addr,
            admin_addr,
            opamp,
            shutdown,
            tasks: vec![driver_task, admin_task],
            lease_loss,
            coordinating,
            _lock: lock,
            _stop_driver: stop_driver,
        })
    }
}

/// Runs the driver on its own thread with a single-threaded runtime: every rollout step is
/// a synchronous SQLite transaction (with fsync), which must not stall the runtime serving
/// agents and the admin API.
fn spawn_driver(
    driver: Driver,
    notifications: mpsc::Receiver<opamp_transport::server::ServerNotification>,
    relayed: Option<mpsc::Receiver<driver::RelayInput>>,
    requests: mpsc::Receiver<driver::Request>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, FleetError> {
    spawn_on_own_thread("opamp-fleet-driver", "rollout driver", move || {
        driver.run(notifications, relayed, requests, shutdown)
    })
}

/// Serves the admin API on its own thread with a single-threaded runtime, so operators are
/// answered promptly however many agent tasks wait on the shared runtime: with tens of
/// thousands of agents in a rollout, an `agents list` page queued behind them took 124 ms at
/// the median. Store reads still run on that runtime's blocking pool.
fn spawn_admin(
    listener: TcpListener,
    app: axum::Router,
    limits: opamp_transport::server::HttpServeLimits,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, FleetError> {
    // A tokio listener belongs to the runtime that made it: hand its socket over.
    let listener = listener.into_std().map_err(|source| FleetError::Io {
        context: "handing the admin listener to its thread".into(),
        source,
    })?;
    spawn_on_own_thread("opamp-fleet-admin", "admin API", move || async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                opamp_transport::server::serve_router(listener, app, limits, shutdown).await;
            }
            Err(error) => {
                tracing::error!(%error, "the admin API cannot listen; stopping the server");
                shutdown.cancel();
            }
        }
    })
}

/// Runs the future `task` makes on a new thread named `thread_name`, with a single-threaded
/// runtime of its own; the handle finishes when the thread does. The future is made on that
/// thread, so it need not be `Send`.
fn spawn_on_own_thread<Task, Run>(
    thread_name: &str,
    what: &str,
    task: Task,
) -> Result<JoinHandle<()>, FleetError>
where
    Task: FnOnce() -> Run + Send + 'static,
    Run: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| FleetError::Io {
            context: format!("building the {what}'s runtime"),
            source,
        })?;
    let thread = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || runtime.block_on(task()))
        .map_err(|source| FleetError::Io {
            context: format!("starting the {what} thread"),
            source,
        })?;
    let what = what.to_owned();
    Ok(tokio::task::spawn_blocking(move || {
        if thread.join().is_err() {
            tracing::error!("the {what} panicked");
        }
    }))
}

/// What the driver is loaded from, besides its store and its link to the agents.
pub(crate) struct DriverParts {
    catalog: Catalog,
    offer_settings: OfferSettings,
    metrics: Arc<FleetMetrics>,
    updates: broadcast::Sender<crate::admin::types::RolloutUpdate>,
    settings: FleetSettings,
}

impl DriverParts {
    /// Loads the registry and the active rollouts from `store` into a driver.
    fn load(self, store: SharedStore, link: agent_link::AgentLink) -> Result<Driver, FleetError> {
        Driver::load(
            store,
            self.catalog,
            self.offer_settings,
            link,
            self.metrics,
            self.updates,
            self.settings,
        )
    }
}

#[cfg(feature = "postgres")]
type Replication = replication::Replication;
/// Without PostgreSQL there is never a second replica.
#[cfg(not(feature = "postgres"))]
enum Replication {}

/// Opens the store the config selects (PostgreSQL when `[store] postgres_url` is set, else
/// `data_dir/fleet.db`) and checks it is usable before anything is served. With PostgreSQL it
/// also opens this replica's replication connections (see `replication`).
async fn open_store(
    config: &FleetServerConfig,
) -> Result<(SharedStore, Option<Replication>), FleetError> {
    match &config.store.postgres_url {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let (store, replication) = replication::open(config, url).await?;
            Ok((store, Some(replication)))
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => Err(FleetError::Config {
            reason: "[store] postgres_url needs opamp-fleet built with the `postgres` feature"
                .into(),
        }),
        None => {
            let database = config.database_path();
            let options = config.store.options();
            // Opening runs migrations and an integrity check: file IO off the runtime.
            let store = tokio::task::spawn_blocking(move || -> Result<SqliteStore, FleetError> {
                let store = SqliteStore::open_with(&database, options)?;
                store.check_integrity()?;
                Ok(store)
            })
            .await
            .map_err(|_| FleetError::Stopped)??;
            Ok((Arc::new(Mutex::new(store)), None))
        }
    }
}

/// The store the admin API reads through. With SQLite a second connection to the same file:
/// in WAL mode it reads the last committed state while the coordinator writes, so an
/// `agents list` page does not wait behind a rollout's writes and fsyncs (at 10,000 agents
/// mid-rollout: p99 274 ms sharing the writer's connection, 15 ms on its own). Reads that span
/// statements hold a read transaction (`load_rollout`). PostgreSQL reads share the store's
/// connection.
async fn open_reader(
    config: &FleetServerConfig,
    store: &SharedStore,
) -> Result<SharedStore, FleetError> {
    if config.store.postgres_url.is_some() {
        return Ok(store.clone());
    }
    let database = config.database_path();
    let options = config.store.options();
    let reader = tokio::task::spawn_blocking(move || SqliteStore::open_with(&database, options))
        .await
        .map_err(|_| FleetError::Stopped)??;
    Ok(Arc::new(Mutex::new(reader)))
}

/// The agent listener's settings. Downloads need the `download_token` when one is set and,
/// under enrollment, an enrolled agent's credential (either one will do).
fn transport_config(
    config: &FleetServerConfig,
    gate: Option<Arc<identity::IdentityGate>>,
) -> Result<OpampServerConfig, FleetError> {
    let mut session = opamp_session::ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES
            | ServerCapabilities::ACCEPTS_PACKAGES_STATUS
            | ServerCapabilities::ACCEPTS_EFFECTIVE_CONFIG
            | ServerCapabilities::OFFERS_REMOTE_CONFIG,
    );
    session.heartbeat_interval = config.heartbeat_interval;
    let mut downloads = DownloadConfig::new(config.packages_dir());
    let enrolled = gate.filter(|gate| gate.issues_credentials());
    let expected = config.download_token.clone();
    if expected.is_some() || enrolled.is_some() {
        downloads = downloads.authorize(move |token, _path| {
            let Some(token) = token else { return false };
            let download_token = expected
                .as_ref()
                .is_some_and(|expected| bool::from(token.as_bytes().ct_eq(expected.as_bytes())));
            download_token
                || enrolled
                    .as_ref()
                    .is_some_and(|gate| gate.is_agent_credential(token))
        });
    }
    session.limits = config.limits.session_limits(session.limits);
    let mut transport = OpampServerConfig::new(config.listen)
        .max_message_size(config.max_message_size)
        .session(session)
        .downloads(downloads);
    transport.max_connections = fd_limits::agent_connections(config);
    transport.admission = config.limits.admission();
    // The transport forgets sessions no later than the driver forgets registry rows, so an
    // agent that comes back after both is registered afresh from its full report.
    transport.forget_after = transport
        .forget_after
        .map(|after| after.min(config.limits.forget_agents_after));
    if let Some(tls) = &config.tls {
        let identity = Identity::from_files(&tls.cert_file, &tls.key_file)?;
        let mut server_tls = ServerTls::new(identity);
        if let Some(ca_file) = &tls.client_ca_file {
            let ca_certs_pem = std::fs::read(ca_file).map_err(|source| FleetError::Io {
                context: format!("reading {}", ca_file.display()),
                source,
            })?;
            server_tls = server_tls.client_auth(ClientAuth::Required { ca_certs_pem });
        }
        transport = transport.tls(server_tls);
    }
    Ok(transport)
}

/// A running fleet server. Call [`RunningFleetServer::shutdown`] to stop it; dropping it only
/// stops the rollout driver (so that a runtime waiting for the driver thread can exit).
#[derive(Debug)]
pub struct RunningFleetServer {
    opamp_addr: SocketAddr,
    admin_addr: SocketAddr,
    opamp: RunningServer,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Set when this replica lost the coordinator lease (PostgreSQL) and stopped itself.
    lease_loss: Arc<leadership::LeaseLoss>,
    /// Cancelled once this server runs the rollout driver.
    coordinating: CancellationToken,
    /// Released when the server is shut down (or the process ends).
    _lock: startup::DataDirLock,
    /// Cancels the driver when the server is dropped.
    _stop_driver: tokio_util::sync::DropGuard,
}

impl RunningFleetServer {
    /// Where agents connect (`/v1/opamp`) and download (`/packages/...`).
    #[must_use]
    pub fn opamp_addr(&self) -> SocketAddr {
        self.opamp_addr
    }

    /// Where the admin API listens.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Resolves when the server stopped by itself because this replica lost the coordinator
    /// lease (PostgreSQL store, see `docs/operations.md`); never with SQLite. The driver and
    /// the admin API have stopped then; call [`RunningFleetServer::shutdown`] to close the
    /// agent connections too, so agents reconnect to the replica that holds the lease.
    pub async fn lease_lost(&self) -> FleetError {
        FleetError::LeaseLost {
            reason: self.lease_loss.wait().await,
        }
    }

    /// Resolves once this server coordinates rollouts: at once for a single server (SQLite);
    /// with several replicas on PostgreSQL, once this replica holds the coordinator lease
    /// (until then it serves agents and relays them to the replica that does).
    pub async fn coordinating(&self) {
        self.coordinating.cancelled().await;
    }

    /// Whether this server coordinates rollouts now (see [`RunningFleetServer::coordinating`]).
    #[must_use]
    pub fn is_coordinating(&self) -> bool {
        self.coordinating.is_cancelled()
    }

    /// Stops the driver and the admin API, then the agent listener (WebSockets close with
    /// 1001). Every rollout step was persisted when it happened, so a later start on the same
    /// data directory resumes where this one stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.opamp.shutdown().await;
    }
}
