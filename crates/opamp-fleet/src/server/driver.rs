//! The rollout driver: one tokio task that does the IO around the sans-IO coordinator
//! ([`opamp_rollout::Fleet`]). It reads the clock, decodes agent reports into the
//! coordinator's terms, holds the store lock while the coordinator persists a step, and
//! carries out what comes out of it: offers built from the catalogs and sent over the agent
//! sessions, progress for the admin API's listeners, metrics, registry writes.
//!
//! Everything that changes a rollout goes through this task, so steps never interleave.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opamp_proto::{AgentCapabilities, InstanceUid};
use opamp_rollout::fleet::{AgentReport, Fleet, FleetSettings, Output, RolloutStep};
use opamp_session::ServerEvent;
use opamp_transport::server::{AgentSessions, ServerNotification};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::agents::{labels, package_reports};
use super::config_offers::{build_remote_config, can_offer, config_report, empty_hash_hex};
use super::details::{self, DetailsBook};
use super::offers::{OfferSettings, build_offer};
use crate::admin::agents::{RestartReport, RestartRequest};
use crate::admin::types::{RolloutRequest, RolloutUpdate, RolloutView};
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::catalog::{Catalog, SharedStore, lock};
use crate::config_catalog::ConfigCatalog;
use crate::metrics::FleetMetrics;
use crate::rollout::{Rollout, RolloutId};
use crate::selector::LabelSelector;
use crate::spec::{RolloutSpec, TargetKind};
use crate::store::{AgentRecord, FleetStore, RolloutStore};
use crate::time::Timestamp;
use crate::{FleetError, RolloutError};

/// An operator action on an existing rollout.
pub(crate) use opamp_rollout::fleet::Operation;

type Reply<T> = oneshot::Sender<Result<T, FleetError>>;

/// What the admin API asks the driver.
#[derive(Debug)]
pub(crate) enum Request {
    Create {
        request: RolloutRequest,
        by: String,
        reply: Reply<RolloutView>,
    },
    Operate {
        id: RolloutId,
        operation: Operation,
        by: String,
        reply: Reply<RolloutView>,
    },
    Restart {
        request: RestartRequest,
        by: String,
        reply: Reply<RestartReport>,
    },
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

pub(crate) struct Driver {
    pub(crate) store: SharedStore,
    pub(crate) catalog: Catalog,
    configs: ConfigCatalog,
    pub(crate) offer_settings: OfferSettings,
    pub(crate) sessions: AgentSessions,
    pub(crate) metrics: Arc<FleetMetrics>,
    pub(crate) updates: broadcast::Sender<RolloutUpdate>,
    /// The decisions: registry, rollouts, offers (see `opamp_rollout::fleet`).
    fleet: Fleet,
    /// What agents report beyond their registry rows (see `server::details`).
    details: DetailsBook,
    /// Agents the coordinator forgot whose rows the store has not deleted yet.
    forget_pending: Vec<InstanceUid>,
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
        sessions: AgentSessions,
        metrics: Arc<FleetMetrics>,
        updates: broadcast::Sender<RolloutUpdate>,
        forget_after: Duration,
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
            let settings = FleetSettings::default().forget_after(forget_after);
            Fleet::recover(&*db, agents, applied, settings)?
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
            sessions,
            metrics,
            updates,
            fleet,
            details: DetailsBook::default(),
            forget_pending: Vec::new(),
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
                Some(request) = requests.recv() => self.on_request(request),
                () = sleep_until(wake) => {
                    self.on_timeout();
                    self.flush_agents();
                }
            }
        }
        self.flush_agents();
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
        let changed = self.fleet.take_changed_agents();
        if changed.is_empty() {
            return;
        }
        let records: Vec<&AgentRecord> = changed
            .iter()
            .filter_map(|uid| self.fleet.agent(uid))
            .collect();
        if let Err(error) = lock(&self.store).upsert_agents(&records) {
            tracing::error!(%error, agents = records.len(), "saving agent registry rows failed; kept for the next write");
            self.fleet.mark_changed(changed);
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let deadline = self.fleet.poll_timeout()?;
        let delay = deadline.saturating_since(now());
        // Deadlines are in milliseconds; waking a millisecond late avoids spinning on a
        // deadline that truncation placed just ahead of `now`.
        Some(tokio::time::Instant::now() + delay + Duration::from_millis(1))
    }

    fn on_timeout(&mut self) {
        let now = now();
        self.fleet.handle_timeout(now, &mut *lock(&self.store));
        self.carry_out();
    }

    /// Carries out what the coordinator decided, in order.
    fn carry_out(&mut self) {
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
                        self.sessions.forget(*uid);
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
    fn send_offer(&self, uid: InstanceUid, versions: &BTreeMap<String, String>) {
        match build_offer(&self.catalog, &self.offer_settings, versions) {
            Ok(offer) => {
                self.sessions
                    .with_session(uid, |session| session.offer_packages(offer));
            }
            Err(error) => tracing::error!(%uid, %error, "cannot build the agent's offer"),
        }
    }

    /// Sends the agent the remote config whose hash is `hash` (hex).
    fn send_config_offer(&self, uid: InstanceUid, hash: &str) {
        match build_remote_config(&self.configs, hash) {
            Ok(config) => {
                self.sessions
                    .with_session(uid, |session| session.offer_remote_config(config));
            }
            Err(error) => tracing::error!(%uid, %error, "cannot build the agent's remote config"),
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
                let view = details::connection(transport, &connection, now);
                // An agent gets its row from what it reports, not from connecting: a first
                // message the session refused (over the caps, issue 22) leaves nothing.
                if self.fleet.agent(&uid).is_none() {
                    self.details.arriving(uid, view);
                    return;
                }
                self.details.connected(&self.store, uid, view);
                self.fleet.connected(uid, now, &mut *lock(&self.store));
            }
            ServerNotification::Disconnected { uid } => self.disconnected(uid, now),
            ServerNotification::Heartbeat { uid } => self.fleet.heartbeat(uid, now),
            ServerNotification::Event { uid, event } => self.on_agent_event(uid, event, now),
            _ => {}
        }
        self.carry_out();
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

    // ----- requests -------------------------------------------------------------------

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Create { request, by, reply } => {
                let _ = reply.send(self.create(request, by));
            }
            Request::Operate {
                id,
                operation,
                by,
                reply,
            } => {
                let _ = reply.send(self.operate(&id, operation, by));
            }
            Request::Restart { request, by, reply } => {
                let _ = reply.send(self.restart(&request, by));
            }
        }
        self.carry_out();
    }

    /// Sends the `Restart` command to the connected agents the request selects that accept
    /// it. The audit record is written first: a restart nobody could account for must not
    /// happen.
    fn restart(&self, request: &RestartRequest, by: String) -> Result<RestartReport, FleetError> {
        let selector: LabelSelector = request.selector.trim().parse()?;
        let named: HashSet<InstanceUid> = request.agents.iter().copied().collect();
        let mut report = RestartReport::default();
        let mut matching: Vec<&AgentRecord> = self
            .fleet
            .agents()
            .filter(|a| a.connected && selector.matches(&a.labels))
            .filter(|a| named.is_empty() || named.contains(&a.uid))
            .collect();
        matching.sort_by_key(|a| a.uid);
        for agent in matching {
            let accepts = AgentCapabilities::from_wire(agent.capabilities)
                .contains(AgentCapabilities::ACCEPTS_RESTART_COMMAND);
            if accepts {
                report.restarted.push(agent.uid);
            } else {
                report.not_accepting.push(agent.uid);
            }
        }
        if report.restarted.is_empty() {
            return Err(FleetError::NothingToRestart {
                selector: selector.to_string(),
                not_accepting: report.not_accepting.len(),
            });
        }
        let action = AuditAction::RestartSent {
            selector: selector.to_string(),
            agents: report.restarted.clone(),
        };
        // Not about a rollout: filed with the other fleet-wide records.
        let record = AuditRecord::new(
            now(),
            RolloutId::new(crate::audit::FLEET_RECORDS),
            Actor::Operator(by.clone()),
            action,
        );
        lock(&self.store).append_audit(&[record])?;
        let command = opamp_proto::v1::ServerToAgentCommand {
            r#type: opamp_proto::v1::CommandType::Restart.into(),
        };
        let sent = self
            .sessions
            .with_sessions(&report.restarted, |_, session| {
                session.send_command(command);
            });
        tracing::info!(by, selector = %selector, agents = sent, "restart command sent");
        Ok(report)
    }

    fn create(&mut self, request: RolloutRequest, by: String) -> Result<RolloutView, FleetError> {
        let now = now();
        let mut spec = request.into_spec(&by)?;
        if spec.target_kind == TargetKind::Config {
            return self.create_config_rollout(spec, by, now);
        }
        if self
            .catalog
            .get(&spec.package_name, &spec.target_version)?
            .is_none()
        {
            return Err(FleetError::NotFound {
                what: format!(
                    "package {} {} in the catalog",
                    spec.package_name, spec.target_version
                ),
            });
        }
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = self.fleet.plan_packages(id.clone(), spec.clone(), now)?;
        let unknown = self.versions_not_in_catalog(&rollout)?;
        if let Some((version, agents)) = unknown.first()
            && !spec.adopt_unknown_versions
        {
            return Err(FleetError::NotFound {
                what: format!(
                    "package {} {version} in the catalog ({agents} agents run it and would \
                     need it offered to revert; add it, or accept that the server will not \
                     revert them: `opamp rollout start --adopt-unknown-versions`, \
                     `adopt_unknown_versions: true` in the API)",
                    spec.package_name
                ),
            });
        }
        let unrevertible = self.versions_agents_would_refuse(&rollout)?;
        if !unknown.is_empty() || !unrevertible.is_empty() {
            // Planned again with the same id, so the same agents in the same waves.
            spec.adopted_versions = unknown.into_iter().map(|(version, _)| version).collect();
            spec.unrevertible_versions = unrevertible;
            rollout = self.fleet.plan_packages(id, spec, now)?;
        }
        self.start_planned(rollout, by, now)
    }

    /// Stores a planned rollout, registers it and starts it.
    fn start_planned(
        &mut self,
        rollout: Rollout,
        by: String,
        now: Timestamp,
    ) -> Result<RolloutView, FleetError> {
        let id = rollout.id().clone();
        self.fleet
            .start(rollout, &by, now, &mut *lock(&self.store))?;
        self.view(&id)
    }

    /// Plans and starts a config rollout: agents that accept remote config and whose current
    /// config the server knows (reported since it started), each reverted, if need be, to the
    /// config it had (the empty config when it had none).
    fn create_config_rollout(
        &mut self,
        mut spec: RolloutSpec,
        by: String,
        now: Timestamp,
    ) -> Result<RolloutView, FleetError> {
        let entry = self
            .configs
            .get(&spec.package_name, &spec.target_version)?
            .ok_or_else(|| FleetError::NotFound {
                what: format!(
                    "config {} {} in the config catalog",
                    spec.package_name, spec.target_version
                ),
            })?;
        spec.target_ref = Some(hex::encode(&entry.hash));
        let empty = empty_hash_hex();
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = self
            .fleet
            .plan_config(id.clone(), spec.clone(), &empty, now)?;
        let mut unknown = Vec::new();
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        for hash in previous {
            if !can_offer(&self.configs, hash)? {
                unknown.push(hash.to_owned());
            }
        }
        if let Some(hash) = unknown.first() {
            if !spec.adopt_unknown_versions {
                return Err(FleetError::NotFound {
                    what: format!(
                        "config with hash {hash} in the config catalog (agents run it and \
                         would need it offered to revert; add it, or accept that the server \
                         will not revert them: `adopt_unknown_versions: true`)"
                    ),
                });
            }
            spec.adopted_versions = unknown;
            rollout = self.fleet.plan_config(id, spec, &empty, now)?;
        }
        self.start_planned(rollout, by, now)
    }

    /// The versions below the target that agents of `rollout` would go back to and that an
    /// agent running the target would refuse (their signature authorises no downgrade from
    /// it), with why: an abort names those agents at once instead of waiting for them.
    fn versions_agents_would_refuse(
        &self,
        rollout: &Rollout,
    ) -> Result<BTreeMap<String, String>, FleetError> {
        let spec = rollout.spec();
        let Ok(target) = opamp_packages::parse_version(&spec.target_version) else {
            return Ok(BTreeMap::new());
        };
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        let mut refused = BTreeMap::new();
        for version in previous {
            let lower = opamp_packages::parse_version(version)
                .is_ok_and(|v| v.cmp_precedence(&target).is_lt());
            if !lower {
                continue;
            }
            let Some(entry) = self.catalog.get(&spec.package_name, version)? else {
                continue;
            };
            if let Some(why) = crate::catalog::downgrade_refusal(&entry.signature, &target) {
                refused.insert(version.to_owned(), why);
            }
        }
        Ok(refused)
    }

    /// The versions agents of `rollout` would go back to that the catalog does not have, with
    /// how many agents run each: the server could not offer them, so an abort could only end
    /// in `Failed` unless the operator adopts them.
    fn versions_not_in_catalog(
        &self,
        rollout: &Rollout,
    ) -> Result<Vec<(String, usize)>, FleetError> {
        let package = &rollout.spec().package_name;
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        let mut unknown = Vec::new();
        for version in previous {
            if self.catalog.get(package, version)?.is_none() {
                let agents = rollout
                    .agents()
                    .iter()
                    .filter(|a| a.previous_version == version)
                    .count();
                unknown.push((version.to_owned(), agents));
            }
        }
        Ok(unknown)
    }

    fn operate(
        &mut self,
        id: &RolloutId,
        operation: Operation,
        by: String,
    ) -> Result<RolloutView, FleetError> {
        let event = match &operation {
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Abort { .. } => "abort",
            _ => "operate",
        };
        let result = self
            .fleet
            .operate(id, operation, &by, now(), &mut *lock(&self.store));
        match result {
            Ok(()) => self.view(id),
            // Finished (or never was): say which.
            Err(RolloutError::NotActive { .. }) => match lock(&self.store).load_rollout(id)? {
                Some(rollout) => Err(FleetError::Rollout(RolloutError::InvalidTransition {
                    rollout: id.clone(),
                    status: rollout.status(),
                    event,
                })),
                None => Err(FleetError::NotFound {
                    what: format!("rollout {id}"),
                }),
            },
            Err(error) => Err(error.into()),
        }
    }

    fn view(&self, id: &RolloutId) -> Result<RolloutView, FleetError> {
        if let Some(rollout) = self.fleet.rollout(id) {
            return Ok(RolloutView::of(rollout));
        }
        lock(&self.store)
            .load_rollout(id)?
            .map(|r| RolloutView::of(&r))
            .ok_or_else(|| FleetError::NotFound {
                what: format!("rollout {id}"),
            })
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
