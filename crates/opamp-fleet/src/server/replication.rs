//! Several replicas on one PostgreSQL database. Every replica serves agents, package
//! downloads and the admin API's reads from the moment it starts; the one holding the
//! coordinator lease also runs the rollout driver. The others relay their agents to it and
//! deliver what it sends them (`server::relay`), forward the admin API's rollout changes to
//! it (`server::forwarding`), and wait for the lease (`leadership`).
//!
//! Taking over: the new holder connects a store of its own fenced with the lease's token,
//! records the take in the audit log, loads the registry and the active rollouts, and
//! starts its driver, fed by its own agents (after a snapshot of them) and by the inbox.
//! Every other replica sees the lease's token change and sends it a snapshot of its agents.

use std::sync::Arc;

use opamp_proto::codec::Limits;
use opamp_transport::server::{AgentSessions, ServerNotification};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::agent_link::AgentLink;
use super::driver::{self, Request};
use super::leadership::{self, LeaseLoss};
use super::relay::{self, Route, Wakers};
use super::{DriverParts, spawn_driver};
use super::{forwarding, update_mirror};
use crate::FleetError;
use crate::audit::{Actor, AuditAction, AuditRecord, FLEET_RECORDS};
use crate::catalog::SharedStore;
use crate::config::{DatabaseUrl, FleetServerConfig};
use crate::store::{
    AgentRelay, CoordinatorLease, FleetStore as _, PostgresOptions, PostgresStore, RelayListener,
    RolloutStore as _,
};

/// This replica's connections for replication: the lease, the relay, and the listener.
pub(super) struct Replication {
    url: DatabaseUrl,
    lease: Arc<CoordinatorLease>,
    relay: Arc<AgentRelay>,
    /// Wakes the relay's tasks; its thread stops when this is dropped.
    _listener: RelayListener,
    wakers: Arc<Wakers>,
}

/// Connects the shared store (admin reads, catalog) and this replica's lease and relay
/// connections. Does not wait for the lease.
pub(super) async fn open(
    config: &FleetServerConfig,
    url: &DatabaseUrl,
) -> Result<(SharedStore, Replication), FleetError> {
    let replica = config.store.replica_name();
    let ttl = config.store.lease_ttl();
    tracing::info!(database = %url.redacted(), %replica, ?ttl, "store: PostgreSQL");
    let connecting = url.clone();
    let wakers = Arc::new(Wakers::default());
    let waking = wakers.clone();
    let (store, lease, relay, listener) = tokio::task::spawn_blocking(move || {
        let options = PostgresOptions::default();
        let store = PostgresStore::connect(connecting.as_str(), options)?;
        store.check_integrity()?;
        let lease = CoordinatorLease::connect(connecting.as_str(), options, replica.clone(), ttl)?;
        let relay = AgentRelay::connect(connecting.as_str(), options, replica.clone())?;
        relay.clear_presence()?;
        let listener = RelayListener::start(connecting.as_str(), options, replica, move |heard| {
            waking.heard(heard);
        })?;
        Ok::<_, FleetError>((store, lease, relay, listener))
    })
    .await
    .map_err(|_| FleetError::Stopped)??;
    let shared: SharedStore = Arc::new(std::sync::Mutex::new(store));
    Ok((
        shared,
        Replication {
            url: url.clone(),
            lease: Arc::new(lease),
            relay: Arc::new(relay),
            _listener: listener,
            wakers,
        },
    ))
}

/// Where rollout progress is read from and published to while another replica coordinates.
struct Progress {
    store: SharedStore,
    updates: tokio::sync::broadcast::Sender<crate::admin::types::RolloutUpdate>,
}

/// What [`start`] needs besides the replication connections.
pub(super) struct Serving {
    pub(super) sessions: AgentSessions,
    pub(super) notifications: mpsc::Receiver<ServerNotification>,
    pub(super) requests: mpsc::Receiver<Request>,
    /// Where forwarded rollout changes are handed to the driver, once this replica
    /// coordinates (the admin API's own sender).
    pub(super) requests_to_driver: mpsc::Sender<Request>,
    /// The shared store, read for rollout progress until this replica coordinates.
    pub(super) store: SharedStore,
    /// The admin API's rollout progress listeners.
    pub(super) updates: tokio::sync::broadcast::Sender<crate::admin::types::RolloutUpdate>,
    pub(super) limits: Limits,
    pub(super) lease_loss: Arc<LeaseLoss>,
    /// Cancelled once this replica coordinates.
    pub(super) coordinating: CancellationToken,
    pub(super) shutdown: CancellationToken,
}

/// Starts relaying this replica's agents and waiting for the lease; the task ends after
/// `shutdown` once everything it started stopped.
pub(super) fn start(
    replication: Replication,
    parts: DriverParts,
    serving: Serving,
) -> JoinHandle<()> {
    let Serving {
        sessions,
        notifications,
        requests,
        requests_to_driver,
        store,
        updates,
        limits,
        lease_loss,
        coordinating,
        shutdown,
    } = serving;
    let (routes, routes_rx) = mpsc::channel(16);
    let delivering = tokio::spawn(relay::deliver_outbox(
        replication.relay.clone(),
        sessions.clone(),
        replication.wakers.clone(),
        limits,
        shutdown.clone(),
    ));
    let beating = tokio::spawn(relay::beat(
        replication.relay.clone(),
        routes.clone(),
        replication.lease.ttl() / 3,
        shutdown.clone(),
    ));
    let routing = tokio::spawn(relay::route_notifications(
        replication.relay.clone(),
        sessions.clone(),
        notifications,
        routes_rx,
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        let coordinated = coordinate(
            &replication,
            parts,
            sessions,
            requests,
            requests_to_driver,
            Progress { store, updates },
            routes,
            limits,
            &lease_loss,
            &coordinating,
            &shutdown,
        )
        .await;
        match coordinated {
            Ok(()) => {}
            Err(FleetError::LeaseLost { reason }) => {
                tracing::error!(reason, "this replica stops");
                lease_loss.record(reason);
                shutdown.cancel();
            }
            Err(error) => {
                tracing::error!(%error, "cannot coordinate; this replica stops");
                lease_loss.record(format!("cannot coordinate: {error}"));
                shutdown.cancel();
            }
        }
        shutdown.cancelled().await;
        let _ = delivering.await;
        let _ = routing.await;
        let _ = beating.await;
        // Its agents' connections close with it: tell the coordinator now rather than after
        // the lease's length.
        let leaving = replication.relay.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || leaving.leave()).await {
            tracing::warn!(%error, "cannot record that this replica stops");
        }
        // The listener thread ends when dropped.
        drop(replication);
    })
}

/// Waits for the lease (forwarding rollout changes to the coordinator meanwhile), then
/// coordinates until
/// `shutdown` or the lease is lost.
#[allow(clippy::too_many_arguments)] // one call site, each argument a different part
async fn coordinate(
    replication: &Replication,
    parts: DriverParts,
    sessions: AgentSessions,
    mut requests: mpsc::Receiver<Request>,
    requests_to_driver: mpsc::Sender<Request>,
    progress: Progress,
    routes: mpsc::Sender<Route>,
    limits: Limits,
    lease_loss: &Arc<LeaseLoss>,
    coordinating: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<(), FleetError> {
    let lease = &replication.lease;
    let resend = routes.clone();
    let acquired = tokio::select! {
        acquired = leadership::acquire(lease, move |_| { let _ = resend.try_send(Route::Resend); }) => acquired?,
        () = forwarding::forward_requests(&mut requests, replication.relay.clone()) => return Ok(()),
        () = update_mirror::mirror_updates(progress.store, progress.updates) => return Ok(()),
        () = shutdown.cancelled() => return Ok(()),
    };
    let (token, valid_until) = acquired;

    // The driver writes on a connection of its own, fenced with this take's token.
    let url = replication.url.clone();
    let holder = lease.holder().to_owned();
    let store = tokio::task::spawn_blocking(move || -> Result<PostgresStore, FleetError> {
        let mut store = PostgresStore::connect(url.as_str(), PostgresOptions::default())?;
        store.fence(token);
        let taken = AuditRecord::new(
            driver::now(),
            crate::rollout::RolloutId::new(FLEET_RECORDS),
            Actor::Engine,
            AuditAction::CoordinatorLeaseTaken {
                replica: holder,
                token: token.0,
            },
        );
        store.append_audit(&[taken])?;
        Ok(store)
    })
    .await
    .map_err(|_| FleetError::Stopped)??;
    let store: SharedStore = Arc::new(std::sync::Mutex::new(store));
    let metrics = parts.metrics.clone();
    let driver = parts.load(
        store,
        AgentLink::relayed(sessions, replication.relay.clone()),
    )?;
    let (local, local_rx) = mpsc::channel(1024);
    let (relayed, relayed_rx) = mpsc::channel(4096);
    routes
        .send(Route::Coordinate(local))
        .await
        .map_err(|_| FleetError::Stopped)?;
    let reading = tokio::spawn(relay::read_inbox(
        replication.relay.clone(),
        relayed,
        replication.wakers.clone(),
        limits,
        lease.ttl(),
        shutdown.clone(),
    ));
    let serving = tokio::spawn(forwarding::serve_forwarded(
        replication.relay.clone(),
        requests_to_driver,
        replication.wakers.clone(),
        shutdown.clone(),
    ));
    let driving = spawn_driver(
        driver,
        local_rx,
        Some(relayed_rx),
        requests,
        shutdown.clone(),
    )?;
    coordinating.cancel();
    metrics.set_coordinating();
    let keeper = leadership::keep(
        lease.clone(),
        token,
        valid_until,
        lease_loss.clone(),
        shutdown.clone(),
    );
    let _ = keeper.await;
    let _ = driving.await;
    let _ = reading.await;
    let _ = serving.await;
    Ok(())
}
