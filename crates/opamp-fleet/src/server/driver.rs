//! The rollout driver: one tokio task that does the IO around the sans-IO coordinator
//! ([`opamp_rollout::Fleet`]). It reads the clock, decodes agent reports into the
//! coordinator's terms, holds the store lock while the coordinator persists a step, and
//! carries out what comes out of it: offers built from the catalogs and sent over the agent
//! sessions, progress for the admin API's listeners, metrics, registry writes.
//!
//! Everything that changes a rollout goes through this task, so steps never interleave.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opamp_proto::InstanceUid;
use opamp_rollout::fleet::{AgentReport, Fleet, FleetSettings, Output, RolloutStep};
use opamp_session::ServerEvent;
use opamp_transport::server::ServerNotification;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::agent_link::{AgentLink, ToAgent};
use super::agents::{labels, package_reports};
use super::config_offers::{build_remote_config, config_report};
use super::details;
use super::details_book::DetailsBook;
use super::offers::{OfferSettings, build_offer};
use super::unsent::{Unsent, UnsentOffers, is_transient};
use crate::FleetError;
use crate::admin::types::RolloutUpdate;
use crate::catalog::{Catalog, SharedStore, lock};
use crate::config_catalog::ConfigCatalog;
use crate::metrics::FleetMetrics;
use crate::store::{AgentRecord, FleetStore, StoreError};
use crate::time::Timestamp;

/// What another replica relayed about an agent it serves (PostgreSQL store only).
#[cfg(feature = "postgres")]
pub(crate) use super::relay::{RelayInput, Relayed, RelayedKind};
/// Without PostgreSQL nothing is ever relayed.
#[cfg(not(feature = "postgres"))]
pub(crate) enum RelayInput {}

pub(crate) use crate::admin::requests::{Operation, Request};

pub(super) fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

pub(crate) struct Driver {
    pub(crate) store: SharedStore,
    pub(crate) catalog: Catalog,
    pub(super) configs: ConfigCatalog,
    pub(crate) offer_settings: OfferSettings,
    /// How offers and commands reach agents (here, or through the replica holding them).
    pub(crate) link: AgentLink,
    pub(crate) metrics: Arc<FleetMetrics>,
    pub(crate) updates: broadcast::Sender<RolloutUpdate>,
    /// The decisions: registry, rollouts, offers (see `opamp_rollout::fleet`).
    pub(super) fleet: Fleet,
    /// What agents report beyond their registry rows (see `server::details`).
    details: DetailsBook,
    /// Agents the coordinator forgot whose rows the store has not deleted yet.
    forget_pending: Vec<InstanceUid>,
    /// Offers the store could not build (a database restarting), retried shortly: the
    /// coordinator counts them as sent.
    unsent: UnsentOffers,
}

/// Most notifications handled before the registry is written out.
const NOTIFICATION_BATCH: usize = 1024;

impl Driver {
    /// Loads the registry and the active rollouts into the coordinator. Every agent starts
    /// disconnected (the server just started); each active rollout's desired versions become
    /// the offers agents get when they connect.
    pub(crate) fn load(
        store: SharedStore,
        catalog: Catalog,
        offer_settings: OfferSettings,
        link: AgentLink,
        metrics: Arc<FleetMetrics>,
        updates: broadcast::Sender<RolloutUpdate>,
        settings: FleetSettings,
    ) -> Result<Self, FleetError> {
        let fleet = {
            let db = lock(&store);
            let agents = db.agents()?;
            // The config each agent last reported applied, stored with its details: a config
            // rollout can plan (and revert) agents that did not reconnect yet.
            let mut applied = Vec::new();
            for agent in &agents {
                if let Some(hash) = db
                    .agent_details(&agent.uid)?
                    .and_then(|details| details.remote_config_status)
                    .filter(|status| status.status == "applied" && !status.hash.is_empty())
                    .map(|status| hex::encode(status.hash))
                {
                    applied.push((agent.uid, hash));
                }
            }
            Fleet::recover(&*db, agents, applied, settings, now())?
        };
        for rollout in fleet.rollouts() {
            metrics.set_rollout_state(
                rollout.id().as_str(),
                &rollout.spec().package_name,
                rollout.status().as_str(),
            );
        }
        let mut driver = Driver {
            configs: ConfigCatalog::new(store.clone()),
            store,
            catalog,
            offer_settings,
            link,
            metrics,
            updates,
            fleet,
            details: DetailsBook::default(),
            forget_pending: Vec::new(),
            unsent: UnsentOffers::default(),
        };
        // Agents recorded as connected before the restart are written back as disconnected.
        let changed = driver.fleet.take_changed_agents();
        let records: Vec<&AgentRecord> = changed
            .iter()
            .filter_map(|uid| driver.fleet.agent(uid))
            .collect();
        lock(&driver.store).upsert_agents(&records)?;
        driver.carry_out();
        Ok(driver)
    }

    pub(crate) async fn run(
        mut self,
        mut notifications: mpsc::Receiver<ServerNotification>,
        mut relayed: Option<mpsc::Receiver<RelayInput>>,
        mut requests: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) {
        // Deadlines that passed while the server was down are handled right away.
        self.on_timeout();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(notification) = notifications.recv() => {
                    self.on_notification(notification);
                    // Take what is already queued before writing the registry, so a burst of
                    // reports (an agent's first message yields several) costs one write per
                    // agent rather than one per report.
                    for _ in 0..NOTIFICATION_BATCH {
                        let Ok(notification) = notifications.try_recv() else { break };
                        self.on_notification(notification);
                    }
                    self.flush_agents();
                }
                Some(message) = next_relayed(&mut relayed) => {
                    self.on_relayed(message);
                    if let Some(queue) = relayed.as_mut() {
                        for _ in 0..NOTIFICATION_BATCH {
                            let Ok(message) = queue.try_recv() else { break };
                            self.on_relayed(message);
                        }
                    }
                    self.flush_agents();
                }
                Some(request) = requests.recv() => self.on_request(request),
                () = sleep_until(wake) => {
                    self.on_timeout();
                    self.flush_agents();
                }
            }
            self.link.flush();
        }
        self.flush_agents();
        self.link.flush();
    }

    /// Writes what changed in the registry: forgotten rows go first (an agent forgotten and
    /// back since is then written anew), then changed rows. Registry rows are soft state
    /// (agents report their full status on every connection), so a crash losing the latest
    /// ones costs nothing a reconnect does not repair; rollout steps, in contrast, are written
    /// before they act.
    fn flush_agents(&mut self) {
        if let Err(error) = self.details.flush(&self.store) {
            tracing::error!(%error, "saving agent details failed; kept for the next write");
        }
        if !self.forget_pending.is_empty() {
            match lock(&self.store).delete_agents(&self.forget_pending) {
                Ok(_) => self.forget_pending.clear(),
                Err(error) => {
                    tracing::error!(%error, agents = self.forget_pending.len(), "removing forgotten agents failed; retried at the next write");
                }
            }
        }
        // Heartbeat-only rows first: taking them leaves rows also changed otherwise to the
        // whole-row write below.
        let seen = self.fleet.take_seen_agents();
        self.write_rows(seen, "when agents were last seen", |store, rows| {
            store.touch_agents(rows)
        });
        let changed = self.fleet.take_changed_agents();
        self.write_rows(changed, "agent registry rows", |store, rows| {
            store.upsert_agents(rows)
        });
    }

    /// Writes the registry rows of `uids` with `write`; when it fails they are marked changed,
    /// so that the next flush writes them whole.
    fn write_rows(
        &mut self,
        uids: Vec<InstanceUid>,
        what: &str,
        write: impl FnOnce(&mut (dyn FleetStore + Send), &[&AgentRecord]) -> Result<(), StoreError>,
    ) {
        if uids.is_empty() {
            return;
        }
        let records: Vec<&AgentRecord> = uids
            .iter()
            .filter_map(|uid| self.fleet.agent(uid))
            .collect();
        if let Err(error) = write(&mut *lock(&self.store), &records) {
            tracing::error!(%error, agents = records.len(), "saving {what} failed; kept for the next write");
            self.fleet.mark_changed(uids);
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let retry = self.unsent.next_try();
        let Some(deadline) = self.fleet.poll_timeout() else {
            return retry;
        };
        let delay = deadline.saturating_since(now());
        // Deadlines are in milliseconds; waking a millisecond late avoids spinning on a
        // deadline that truncation placed just ahead of `now`.
        let wake = tokio::time::Instant::now() + delay + Duration::from_millis(1);
        Some(retry.map_or(wake, |retry| retry.min(wake)))
    }

    fn on_timeout(&mut self) {
        self.retry_unsent();
        let now = now();
        self.fleet.handle_timeout(now, &mut *lock(&self.store));
        self.carry_out();
    }

    /// Carries out what the coordinator decided, in order.
    pub(super) fn carry_out(&mut self) {
        while let Some(output) = self.fleet.poll_output() {
            match output {
                Output::OfferPackages { uid, versions } => self.send_offer(uid, &versions),
                Output::OfferConfig { uid, hash } => self.send_config_offer(uid, &hash),
                Output::RolloutStepped(step) => self.publish(step),
                Output::Audited(records) => {
                    for record in &records {
                        self.metrics.count_audit(&record.action);
                    }
                }
                Output::Forgotten(uids) => {
                    self.details.forget(&uids);
                    for uid in &uids {
                        self.link.send(*uid, ToAgent::Forget);
                    }
                    self.forget_pending.extend(uids);
                }
                _ => {}
            }
        }
    }

    /// Counts a step in the metrics and tells the admin API's listeners.
    fn publish(&mut self, step: RolloutStep) {
        for record in &step.audit {
            self.metrics.count_audit(&record.action);
        }
        if step.status_changed {
            self.metrics.set_rollout_state(
                step.rollout.as_str(),
                &step.package,
                step.status.as_str(),
            );
        }
        if self.updates.receiver_count() == 0 {
            return; // Progress counts cost a pass over the agents; nobody listens.
        }
        let rollout = step
            .finished
            .as_deref()
            .or_else(|| self.fleet.rollout(&step.rollout));
        if let Some(rollout) = rollout {
            // Nobody listening any more is fine.
            let _ = self.updates.send(RolloutUpdate::of(rollout, step.audit));
        }
    }

    /// Sends the agent the offer of `versions` (package name to version).
    fn send_offer(&mut self, uid: InstanceUid, versions: &BTreeMap<String, String>) {
        match build_offer(&self.catalog, &self.offer_settings, versions) {
            Ok(offer) => {
                self.link.send(uid, ToAgent::Packages(offer));
            }
            Err(error) => {
                tracing::error!(%uid, %error, "cannot build the agent's offer");
                if is_transient(&error) {
                    self.unsent.push(uid, Unsent::Packages(versions.clone()));
                }
            }
        }
    }

    /// Sends the agent the remote config whose hash is `hash` (hex).
    fn send_config_offer(&mut self, uid: InstanceUid, hash: &str) {
        match build_remote_config(&self.configs, hash) {
            Ok(config) => {
                self.link.send(uid, ToAgent::Config(config));
            }
            Err(error) => {
                tracing::error!(%uid, %error, "cannot build the agent's remote config");
                if is_transient(&error) {
                    self.unsent.push(uid, Unsent::Config(hash.to_owned()));
                }
            }
        }
    }

    /// Tries again the offers the store could not build before.
    fn retry_unsent(&mut self) {
        for (uid, unsent) in self.unsent.take_due(tokio::time::Instant::now()) {
            match unsent {
                Unsent::Packages(versions) => self.send_offer(uid, &versions),
                Unsent::Config(hash) => self.send_config_offer(uid, &hash),
            }
        }
    }

    // ----- agents ---------------------------------------------------------------------

    fn on_notification(&mut self, notification: ServerNotification) {
        let now = now();
        match notification {
            ServerNotification::Connected {
                uid,
                transport,
                connection,
            } => {
                self.link.connected_here(uid);
                let view = details::connection(transport, &connection, now);
                self.connected(uid, view, now);
            }
            // Another replica holds the agent now: this server's session of it is stale.
            ServerNotification::Disconnected { uid }
            | ServerNotification::Heartbeat { uid }
            | ServerNotification::Event { uid, .. }
                if self.link.is_elsewhere(&uid) => {}
            ServerNotification::Disconnected { uid } => self.disconnected(uid, now),
            ServerNotification::Heartbeat { uid } => self.fleet.heartbeat(uid, now),
            ServerNotification::Event { uid, event } => self.on_agent_event(uid, event, now),
            _ => {}
        }
        self.carry_out();
    }

    #[cfg(not(feature = "postgres"))]
    fn on_relayed(&mut self, relayed: RelayInput) {
        match relayed {}
    }

    /// What another replica relayed about an agent it serves. Only the replica that last
    /// announced the agent's connection is listened to: a replica the agent left may still
    /// report its old connection's end after the agent connected elsewhere.
    #[cfg(feature = "postgres")]
    fn on_relayed(&mut self, input: RelayInput) {
        let now = now();
        let relayed = match input {
            RelayInput::Agent(relayed) => relayed,
            RelayInput::ReplicaGone(replica) => {
                for uid in self.link.held_by_replica(&replica) {
                    self.link.disconnected_remote(&uid);
                    self.disconnected(uid, now);
                }
                self.carry_out();
                return;
            }
        };
        let Relayed { replica, uid, what } = relayed;
        match what {
            RelayedKind::Connected(view) => {
                self.link.connected_to(uid, replica);
                self.connected(uid, view, now);
            }
            _ if !self.link.held_by(&uid, &replica) => {}
            RelayedKind::Events(events) => {
                for event in events {
                    self.on_agent_event(uid, event, now);
                }
            }
            RelayedKind::Heartbeat => self.fleet.heartbeat(uid, now),
            RelayedKind::Disconnected => {
                self.link.disconnected_remote(&uid);
                self.disconnected(uid, now);
            }
        }
        self.carry_out();
    }

    fn connected(&mut self, uid: InstanceUid, view: crate::store::ConnectionView, now: Timestamp) {
        // An agent gets its row from what it reports, not from connecting: a first message
        // the session refused (over the caps, issue 22) leaves nothing.
        if self.fleet.agent(&uid).is_none() {
            self.details.arriving(uid, view);
            return;
        }
        self.details.connected(&self.store, uid, view);
        self.fleet.connected(uid, now, &mut *lock(&self.store));
    }

    fn disconnected(&mut self, uid: InstanceUid, now: Timestamp) {
        // Gone before anything it reported was accepted: nothing to keep.
        if !self.fleet.disconnected(uid, now, &mut *lock(&self.store)) {
            self.details.forget(&[uid]);
        }
    }

    fn on_agent_event(&mut self, uid: InstanceUid, event: ServerEvent, now: Timestamp) {
        self.details.observe(&self.store, uid, &event);
        let report = match event {
            // The session itself holds an offer back until the agent accepts packages.
            ServerEvent::CapabilitiesChanged(capabilities) => {
                AgentReport::Capabilities(capabilities.bits())
            }
            ServerEvent::DescriptionChanged(description) => {
                AgentReport::Labels(labels(&description))
            }
            ServerEvent::HealthChanged(health) => AgentReport::Health(health.healthy),
            ServerEvent::PackageStatusesChanged(statuses) => {
                AgentReport::Packages(package_reports(&statuses))
            }
            ServerEvent::RemoteConfigStatusChanged(status) => {
                AgentReport::RemoteConfig(config_report(&status))
            }
            ServerEvent::Disconnected { .. } => return self.disconnected(uid, now),
            _ => AgentReport::Other,
        };
        self.fleet.report(uid, report, now, &mut *lock(&self.store));
    }
}

async fn next_relayed(relayed: &mut Option<mpsc::Receiver<RelayInput>>) -> Option<RelayInput> {
    match relayed {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
