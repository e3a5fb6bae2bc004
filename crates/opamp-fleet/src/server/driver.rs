//! The rollout driver: one tokio task that owns the active rollouts and the agent registry,
//! turns transport notifications into engine events, persists every step, carries out the
//! engine's commands (offers) and wakes rollouts at their deadlines.
//!
//! Everything that changes a rollout goes through this task, so steps never interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opamp_proto::{AgentCapabilities, InstanceUid};
use opamp_session::ServerEvent;
use opamp_transport::server::{AgentSessions, ServerNotification};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::agents::{
    PackageReport, agents_to_forget, apply_reports, labels, package_reports, report_event,
};
use super::config_offers::{
    ConfigReport, build_remote_config, can_offer, config_event, config_report, empty_hash_hex,
};
use super::details::{self, DetailsBook};
use super::offers::{OfferSettings, build_offer};
use super::standing::StandingVersions;
use super::unsaved::UnsavedSteps;
use crate::FleetError;
use crate::admin::agents::{RestartReport, RestartRequest};
use crate::admin::types::{RolloutRequest, RolloutUpdate, RolloutView};
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::catalog::{Catalog, SharedStore, lock};
use crate::config_catalog::ConfigCatalog;
use crate::conflicts::RolloutConflicts;
use crate::events::{Command, Event};
use crate::metrics::FleetMetrics;
use crate::rollout::{AgentPhase, FailureReason, Rollout, RolloutId, RolloutStatus};
use crate::selector::{LabelSelector, Labels};
use crate::spec::TargetKind;
use crate::store::{AgentRecord, FleetStore, apply};
use crate::time::Timestamp;

/// An operator action on an existing rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    Pause,
    Resume,
    Abort { reason: String },
}

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
    rollouts: BTreeMap<RolloutId, Rollout>,
    conflicts: RolloutConflicts,
    agents: HashMap<InstanceUid, AgentRecord>,
    /// The versions last offered to each agent, by package (an offer lists every package the
    /// agent should have, so it is rebuilt whole each time one changes).
    offered: HashMap<InstanceUid, BTreeMap<String, String>>,
    /// The config hash (hex) config rollouts want each agent to have.
    offered_configs: HashMap<InstanceUid, String>,
    /// The remote config each agent last reported applied (hex hash; `None`: none yet), from
    /// its stored details at start and its reports since. What a config rollout reverts it
    /// to; agents not in here are not known well enough to take part.
    applied_configs: HashMap<InstanceUid, Option<String>>,
    /// Agents whose registry row changed since the last write (see [`Driver::flush_agents`]).
    dirty: HashSet<InstanceUid>,
    /// What completed rollouts leave for agents that join later.
    standing: StandingVersions,
    /// Catch-up offers whose outcome is still to be audited: (agent, package) to the rollout
    /// whose version was offered, and that version.
    catching_up: HashMap<(InstanceUid, String), (RolloutId, String)>,
    /// Steps the store could not save, retried in order (see `server::unsaved`).
    unsaved: UnsavedSteps,
    /// What agents report beyond their registry rows (see `server::details`).
    details: DetailsBook,
    /// Disconnected agents outside active rollouts are forgotten after this long.
    forget_after: Duration,
    /// When the registry is next swept for agents to forget.
    next_forget_sweep: tokio::time::Instant,
}

/// How stale a stored LAST SEEN may get while an agent only sends heartbeats.
const LAST_SEEN_WRITE_PERIOD: Duration = Duration::from_secs(1);

/// Most notifications handled before the registry is written out.
const NOTIFICATION_BATCH: usize = 1024;

impl Driver {
    /// Loads the registry and the active rollouts. Every agent starts disconnected (the
    /// server just started); each active rollout's desired versions become the offers agents
    /// get when they connect.
    pub(crate) fn load(
        store: SharedStore,
        catalog: Catalog,
        offer_settings: OfferSettings,
        sessions: AgentSessions,
        metrics: Arc<FleetMetrics>,
        updates: broadcast::Sender<RolloutUpdate>,
        forget_after: Duration,
    ) -> Result<Self, FleetError> {
        let (agents, active, standing, applied_configs) = {
            let mut db = lock(&store);
            let mut agents = HashMap::new();
            let mut was_connected = Vec::new();
            let mut applied_configs = HashMap::new();
            for mut agent in db.agents()? {
                // The config each agent last reported applied, stored with its details: a
                // config rollout can plan (and revert) agents that did not reconnect yet.
                if let Some(hash) = db
                    .agent_details(&agent.uid)?
                    .and_then(|details| details.remote_config_status)
                    .filter(|status| status.status == "applied" && !status.hash.is_empty())
                    .map(|status| hex::encode(status.hash))
                {
                    applied_configs.insert(agent.uid, Some(hash));
                }
                // Nobody is connected to a server that just started.
                if agent.connected {
                    agent.connected = false;
                    was_connected.push(agent.uid);
                }
                agents.insert(agent.uid, agent);
            }
            let records: Vec<&AgentRecord> = was_connected
                .iter()
                .filter_map(|uid| agents.get(uid))
                .collect();
            db.upsert_agents(&records)?;
            let mut standing = StandingVersions::default();
            // Only the newest completed rollout per package and selector stands (see
            // `StandingVersions::record`): skipping the others by their summary keeps start-up
            // from loading the whole rollout history.
            let mut seen = HashSet::new();
            let mut completed: Vec<_> = db
                .list_rollouts()?
                .into_iter()
                .filter(|summary| summary.status == RolloutStatus::Completed)
                // Config rollouts leave nothing standing (and may share a package's name).
                .filter(|summary| summary.target_kind.is_package())
                .collect();
            completed.sort_by_key(|summary| std::cmp::Reverse(summary.updated_at));
            for summary in completed {
                if !seen.insert((summary.package.clone(), summary.selector.clone())) {
                    continue;
                }
                if let Some(rollout) = db.load_rollout(&summary.id)? {
                    standing.record(&rollout, summary.updated_at);
                }
            }
            (agents, db.active_rollouts()?, standing, applied_configs)
        };
        let conflicts = RolloutConflicts::from_rollouts(&active);
        let mut offered: HashMap<InstanceUid, BTreeMap<String, String>> = HashMap::new();
        let mut offered_configs = HashMap::new();
        let mut rollouts = BTreeMap::new();
        for rollout in active {
            for agent in rollout.agents() {
                let Some(version) = rollout.desired_version(&agent.uid) else {
                    continue;
                };
                if rollout.spec().target_kind == TargetKind::Config {
                    offered_configs.insert(agent.uid, version.to_owned());
                } else {
                    offered
                        .entry(agent.uid)
                        .or_default()
                        .insert(rollout.spec().package_name.clone(), version.to_owned());
                }
            }
            metrics.set_rollout_state(
                rollout.id().as_str(),
                &rollout.spec().package_name,
                rollout.status().as_str(),
            );
            tracing::info!(rollout = %rollout.id(), status = %rollout.status(), "resuming rollout");
            rollouts.insert(rollout.id().clone(), rollout);
        }
        Ok(Driver {
            configs: ConfigCatalog::new(store.clone()),
            store,
            catalog,
            offer_settings,
            sessions,
            metrics,
            updates,
            rollouts,
            conflicts,
            agents,
            offered,
            offered_configs,
            applied_configs,
            dirty: HashSet::new(),
            standing,
            catching_up: HashMap::new(),
            unsaved: UnsavedSteps::default(),
            details: DetailsBook::default(),
            forget_after,
            // Rows left from before a restart may be long overdue: sweep at once.
            next_forget_sweep: tokio::time::Instant::now(),
        })
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
                () = sleep_until(wake) => self.on_timeout(),
            }
        }
        self.flush_agents();
    }

    /// Writes the changed registry rows. Registry rows are soft state (agents report their
    /// full status on every connection), so a crash losing the latest ones costs nothing a
    /// reconnect does not repair; rollout steps, in contrast, are written before they act.
    fn flush_agents(&mut self) {
        if let Err(error) = self.details.flush(&self.store) {
            tracing::error!(%error, "saving agent details failed; kept for the next write");
        }
        if self.dirty.is_empty() {
            return;
        }
        let records: Vec<&AgentRecord> = self
            .dirty
            .drain()
            .filter_map(|uid| self.agents.get(&uid))
            .collect();
        if let Err(error) = lock(&self.store).upsert_agents(&records) {
            tracing::error!(%error, agents = records.len(), "saving agent registry rows failed; kept for the next write");
            let uids: Vec<InstanceUid> = records.iter().map(|r| r.uid).collect();
            self.dirty.extend(uids);
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let deadline = self
            .rollouts
            .values()
            // A rollout with unsaved steps waits for them before its deadlines count.
            .filter(|r| !self.unsaved.holds(r.id()))
            .filter_map(Rollout::poll_timeout)
            .min();
        let engine = deadline.map(|deadline| {
            let delay = deadline.saturating_since(now());
            // Engine deadlines are in milliseconds; waking a millisecond late avoids spinning
            // on a deadline that truncation placed just ahead of `now`.
            tokio::time::Instant::now() + delay + std::time::Duration::from_millis(1)
        });
        [
            engine,
            self.unsaved.retry_at(),
            Some(self.next_forget_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tries the unsaved steps again, oldest first per rollout; stops at the first that still
    /// cannot be saved.
    fn retry_unsaved(&mut self) {
        let mut all_saved = true;
        'rollouts: for id in self.unsaved.rollouts() {
            while let Some((event, at)) = self.unsaved.front(&id) {
                let kind = event.kind();
                match self.step(&id, event, at) {
                    Ok(()) => self.unsaved.pop(&id),
                    Err(FleetError::Store(error)) => {
                        tracing::warn!(rollout = %id, event = kind, %error, waiting = self.unsaved.len(), "rollout step still cannot be saved; retrying later");
                        all_saved = false;
                        break 'rollouts;
                    }
                    Err(error) => {
                        tracing::error!(rollout = %id, event = kind, %error, "saved-late rollout step refused");
                        self.unsaved.pop(&id);
                    }
                }
            }
            tracing::info!(rollout = %id, "rollout steps saved after a store failure");
        }
        self.unsaved.round_done(all_saved);
    }

    fn on_timeout(&mut self) {
        if self.unsaved.due(tokio::time::Instant::now()) {
            self.retry_unsaved();
        }
        if self.next_forget_sweep <= tokio::time::Instant::now() {
            self.forget_stale_agents();
        }
        let now = now();
        let due: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(id, _)| !self.unsaved.holds(id))
            .filter(|(_, r)| r.poll_timeout().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.step_logged(&id, Event::Timeout, now);
        }
    }

    // ----- agents ---------------------------------------------------------------------

    /// Forgets agents disconnected for longer than `forget_after` that take part in no
    /// active rollout: their rows, offers and sessions go, so uids an attacker made up (or
    /// hosts long gone) do not grow memory, the store and `GET /api/v1/agents` for ever.
    fn forget_stale_agents(&mut self) {
        // A quarter of the bound between sweeps: an agent is gone at most 25% late.
        let period =
            (self.forget_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        self.next_forget_sweep = tokio::time::Instant::now() + period;
        let members: HashSet<InstanceUid> = self
            .rollouts
            .values()
            .filter(|rollout| !rollout.is_terminal())
            .flat_map(|rollout| rollout.agents().iter().map(|agent| agent.uid))
            .collect();
        let forget = agents_to_forget(self.agents.values(), &members, now(), self.forget_after);
        if forget.is_empty() {
            return;
        }
        // Unsaved changes would only write the rows back.
        self.flush_agents();
        if let Err(error) = lock(&self.store).delete_agents(&forget) {
            tracing::error!(%error, agents = forget.len(), "removing forgotten agents failed; retried at the next sweep");
            return;
        }
        self.details.forget(&forget);
        for uid in &forget {
            self.agents.remove(uid);
            self.applied_configs.remove(uid);
            self.offered_configs.remove(uid);
            self.offered.remove(uid);
            self.catching_up.retain(|(agent, _), _| agent != uid);
            self.sessions.forget(*uid);
        }
        tracing::info!(agents = forget.len(), after = ?self.forget_after, "forgot agents disconnected too long");
    }

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
                let Some(record) = self.agents.get_mut(&uid) else {
                    self.details.arriving(uid, view);
                    return;
                };
                self.details.connected(&self.store, uid, view);
                record.last_seen = now;
                record.connected = true;
                self.save_agent(uid);
                // Only news is logged: after a restart the engine still thinks agents are
                // connected, and thousands of reconnects would otherwise each be a step.
                let was_away = |r: &Rollout| r.agent(&uid).is_some_and(|a| !a.connected);
                self.broadcast_to_members(uid, was_away, &Event::AgentConnected { uid }, now);
                // Known from now on: no remote config until it reports one.
                self.applied_configs.entry(uid).or_insert(None);
                self.push_offer(uid);
                self.push_config_offer(uid);
            }
            ServerNotification::Disconnected { uid } => self.disconnected(uid, now),
            ServerNotification::Heartbeat { uid } => self.heartbeat(uid, now),
            ServerNotification::Event { uid, event } => self.on_agent_event(uid, event, now),
            _ => {}
        }
    }

    /// A message that changed nothing: the agent is alive, so LAST SEEN moves. The row
    /// is written at most every [`LAST_SEEN_WRITE_PERIOD`] per agent; frequent heartbeats
    /// of a large fleet would otherwise be a write each.
    fn heartbeat(&mut self, uid: InstanceUid, now: Timestamp) {
        let Some(record) = self.agents.get_mut(&uid) else {
            return; // Not registered: nothing it reported was accepted yet.
        };
        // Moved only when due: the row written is the one compared against next time.
        if record.last_seen.saturating_add(LAST_SEEN_WRITE_PERIOD) <= now {
            record.last_seen = now;
            self.save_agent(uid);
        }
    }

    fn disconnected(&mut self, uid: InstanceUid, now: Timestamp) {
        // Gone before anything it reported was accepted: nothing to keep.
        let Some(record) = self.agents.get_mut(&uid) else {
            self.details.forget(&[uid]);
            return;
        };
        record.last_seen = now;
        if !record.connected {
            return;
        }
        record.connected = false;
        self.save_agent(uid);
        let was_there = |r: &Rollout| r.agent(&uid).is_some_and(|a| a.connected);
        self.broadcast_to_members(uid, was_there, &Event::AgentDisconnected { uid }, now);
    }

    fn on_agent_event(&mut self, uid: InstanceUid, event: ServerEvent, now: Timestamp) {
        self.details.observe(&self.store, uid, &event);
        if !self.agents.contains_key(&uid) {
            // Its first accepted report registers it (its `Connected` came before): no
            // remote config until it reports one.
            self.applied_configs.entry(uid).or_insert(None);
        }
        let record = self.record(uid, now);
        match event {
            ServerEvent::CapabilitiesChanged(capabilities) => {
                // The session itself holds an offer back until the agent accepts packages.
                record.capabilities = capabilities.bits();
                self.save_agent(uid);
            }
            ServerEvent::DescriptionChanged(description) => {
                record.labels = labels(&description);
                self.save_agent(uid);
                self.catch_up(uid, now);
            }
            ServerEvent::HealthChanged(health) => {
                record.healthy = health.healthy;
                self.save_agent(uid);
                let event = Event::AgentHealth {
                    uid,
                    healthy: health.healthy,
                };
                // Health only matters once an agent was offered the target.
                self.broadcast_to_members(uid, |r| offered(r, uid), &event, now);
            }
            ServerEvent::PackageStatusesChanged(statuses) => {
                let reports = package_reports(&statuses);
                apply_reports(record, &reports);
                let healthy = record.healthy;
                self.save_agent(uid);
                self.on_package_reports(uid, &reports, healthy, now);
                self.audit_catch_up_results(uid, &reports, now);
                self.catch_up(uid, now);
            }
            ServerEvent::RemoteConfigStatusChanged(status) => {
                let report = config_report(&status);
                let healthy = record.healthy;
                match &report {
                    ConfigReport::Applied(hash) => {
                        self.applied_configs.insert(uid, Some(hash.clone()));
                    }
                    // A failure of a config this server did not offer, before any APPLIED
                    // since it connected (a supervisor restarted after a failed apply), says
                    // nothing about what it runs: unknown until it reports an applied one.
                    ConfigReport::Failed { hash, .. }
                        if matches!(self.applied_configs.get(&uid), Some(None))
                            && self.offered_configs.get(&uid) != Some(hash) =>
                    {
                        self.applied_configs.remove(&uid);
                    }
                    _ => {}
                }
                self.save_agent(uid);
                self.on_config_report(uid, &report, healthy, now);
            }
            ServerEvent::Disconnected { .. } => self.disconnected(uid, now),
            _ => {
                self.save_agent(uid);
            }
        }
    }

    fn on_package_reports(
        &mut self,
        uid: InstanceUid,
        reports: &[(String, PackageReport)],
        healthy: bool,
        now: Timestamp,
    ) {
        for (package, report) in reports {
            let Some(event) = report_event(uid, report, Some(healthy)) else {
                continue;
            };
            let ids: Vec<RolloutId> = self
                .rollouts
                .iter()
                .filter(|(_, r)| r.spec().target_kind.is_package())
                .filter(|(_, r)| r.spec().package_name == *package)
                .filter(|(_, r)| report_matters(r, uid, report))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                self.step_logged(&id, event.clone(), now);
            }
        }
    }

    /// Feeds a remote config status to the config rollouts it tells something new.
    fn on_config_report(
        &mut self,
        uid: InstanceUid,
        report: &ConfigReport,
        healthy: bool,
        now: Timestamp,
    ) {
        let Some(event) = config_event(uid, report, Some(healthy)) else {
            return;
        };
        let ids: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(_, r)| r.spec().target_kind == TargetKind::Config)
            .filter(|(_, r)| config_report_matters(r, uid, report))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.step_logged(&id, event.clone(), now);
        }
    }

    /// Offers a newcomer the versions completed rollouts established for agents like it (see
    /// `server::standing`), for each package it runs that no active rollout has it in.
    fn catch_up(&mut self, uid: InstanceUid, now: Timestamp) {
        let Some(record) = self.agents.get(&uid) else {
            return;
        };
        let mut offers = Vec::new();
        for (package, running) in &record.package_versions {
            let Some(standing) = self.standing.for_newcomer(&uid, package, &record.labels) else {
                continue;
            };
            let offered = self.offered.get(&uid).and_then(|o| o.get(package));
            let in_rollout = self.rollouts.values().any(|r| {
                r.spec().target_kind.is_package()
                    && r.spec().package_name == *package
                    && r.agent(&uid).is_some()
            });
            if *running == standing.version || offered == Some(&standing.version) || in_rollout {
                continue;
            }
            offers.push((
                package.clone(),
                standing.version.clone(),
                standing.rollout.clone(),
            ));
        }
        if offers.is_empty() {
            return;
        }
        let mut audit = Vec::new();
        for (package, version, rollout) in offers {
            tracing::info!(%uid, %package, %version, %rollout, "offering a newcomer the fleet's version");
            self.offered
                .entry(uid)
                .or_default()
                .insert(package.clone(), version.clone());
            self.catching_up
                .insert((uid, package), (rollout.clone(), version.clone()));
            let action = AuditAction::AgentCaughtUp { uid, version };
            self.metrics.count_audit(&action);
            audit.push(AuditRecord::new(now, rollout, Actor::Engine, action));
        }
        if let Err(error) = lock(&self.store).append_audit(&audit) {
            tracing::error!(%uid, %error, "cannot write the catch-up offer to the audit log");
        }
        self.push_offer(uid);
    }

    /// Audits how a newcomer's catch-up install ended, under the rollout whose version it was.
    fn audit_catch_up_results(
        &mut self,
        uid: InstanceUid,
        reports: &[(String, PackageReport)],
        now: Timestamp,
    ) {
        let mut audit = Vec::new();
        for (package, report) in reports {
            let key = (uid, package.clone());
            let Some((rollout, version)) = self.catching_up.get(&key) else {
                continue;
            };
            let action = match report {
                PackageReport::Installed(installed) if installed == version => {
                    AuditAction::AgentInstalled {
                        uid,
                        version: installed.clone(),
                    }
                }
                PackageReport::Failed(error) => AuditAction::AgentFailed {
                    uid,
                    reason: FailureReason::InstallFailed {
                        error: error.clone(),
                    },
                },
                _ => continue,
            };
            self.metrics.count_audit(&action);
            audit.push(AuditRecord::new(
                now,
                rollout.clone(),
                Actor::Agent(uid),
                action,
            ));
            self.catching_up.remove(&key);
        }
        if audit.is_empty() {
            return;
        }
        if let Err(error) = lock(&self.store).append_audit(&audit) {
            tracing::error!(%uid, %error, "cannot write a catch-up result to the audit log");
        }
    }

    fn record(&mut self, uid: InstanceUid, now: Timestamp) -> &mut AgentRecord {
        let record = self
            .agents
            .entry(uid)
            .or_insert_with(|| AgentRecord::new(uid, Labels::new(), 0, now));
        record.last_seen = now;
        record
    }

    fn save_agent(&mut self, uid: InstanceUid) {
        self.dirty.insert(uid);
    }

    /// Feeds `event` to every active rollout `uid` takes part in that passes `filter`.
    fn broadcast_to_members(
        &mut self,
        uid: InstanceUid,
        filter: impl Fn(&Rollout) -> bool,
        event: &Event,
        now: Timestamp,
    ) {
        let ids: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(_, r)| r.agent(&uid).is_some() && filter(r))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.step_logged(&id, event.clone(), now);
        }
    }

    /// Sends the agent the offer its rollouts want (nothing when no rollout ever offered it
    /// anything: agents outside rollouts are left alone).
    fn push_offer(&self, uid: InstanceUid) {
        let Some(versions) = self.offered.get(&uid) else {
            return;
        };
        match build_offer(&self.catalog, &self.offer_settings, versions) {
            Ok(offer) => {
                self.sessions
                    .with_session(uid, |session| session.offer_packages(offer));
            }
            Err(error) => tracing::error!(%uid, %error, "cannot build the agent's offer"),
        }
    }

    /// Sends the agent the remote config its config rollout wants (nothing when none ever
    /// offered it one).
    fn push_config_offer(&self, uid: InstanceUid) {
        let Some(hash) = self.offered_configs.get(&uid) else {
            return;
        };
        match build_remote_config(&self.configs, hash) {
            Ok(config) => {
                self.sessions
                    .with_session(uid, |session| session.offer_remote_config(config));
            }
            Err(error) => tracing::error!(%uid, %error, "cannot build the agent's remote config"),
        }
    }

    // ----- rollouts -------------------------------------------------------------------

    /// Applies an event nobody waits for an answer to. One the store cannot save is kept and
    /// retried (with everything after it for the same rollout): it is news that will not come
    /// again.
    fn step_logged(&mut self, id: &RolloutId, event: Event, now: Timestamp) {
        let kind = event.kind();
        if self.unsaved.holds(id) {
            self.unsaved.push(id.clone(), event, now);
            return;
        }
        match self.step(id, event.clone(), now) {
            Ok(()) => {}
            Err(FleetError::Store(error)) => {
                tracing::error!(rollout = %id, event = kind, %error, "rollout step could not be saved; keeping it to retry");
                self.unsaved.push(id.clone(), event, now);
            }
            Err(error) => {
                tracing::error!(rollout = %id, event = kind, %error, "rollout step failed")
            }
        }
    }

    /// Applies one event, persisted before its commands run.
    fn step(&mut self, id: &RolloutId, event: Event, now: Timestamp) -> Result<(), FleetError> {
        let rollout = self
            .rollouts
            .get_mut(id)
            .ok_or_else(|| FleetError::NotFound {
                what: format!("active rollout {id}"),
            })?;
        let commands = apply(&mut *lock(&self.store), rollout, event, now)?;
        let package = rollout.spec().package_name.clone();
        let is_config = rollout.spec().target_kind == TargetKind::Config;
        let mut touched = BTreeSet::new();
        let mut touched_configs = BTreeSet::new();
        let mut audit: Vec<AuditRecord> = Vec::new();
        for command in commands {
            match command {
                Command::Offer { uid, version }
                | Command::Revert {
                    uid,
                    to_version: version,
                } if is_config => {
                    self.offered_configs.insert(uid, version);
                    touched_configs.insert(uid);
                }
                Command::Offer { uid, version }
                | Command::Revert {
                    uid,
                    to_version: version,
                } => {
                    self.offered
                        .entry(uid)
                        .or_default()
                        .insert(package.clone(), version);
                    // A rollout owns this agent's offer now: its reports are that rollout's.
                    self.catching_up.remove(&(uid, package.clone()));
                    touched.insert(uid);
                }
                Command::Audit(record) => {
                    self.metrics.count_audit(&record.action);
                    audit.push(record);
                }
                Command::StateChanged { to, .. } => {
                    self.metrics
                        .set_rollout_state(id.as_str(), &package, to.as_str());
                }
            }
        }
        for uid in touched {
            self.push_offer(uid);
        }
        for uid in touched_configs {
            self.push_config_offer(uid);
        }
        if let Some(rollout) = self.rollouts.get(id) {
            // Nobody listening is fine.
            let _ = self.updates.send(RolloutUpdate::of(rollout, audit));
            if rollout.is_terminal() {
                tracing::info!(rollout = %id, status = %rollout.status(), "rollout finished");
                self.standing.record(rollout, now);
                self.conflicts.update(rollout);
                self.rollouts.remove(id);
            }
        }
        Ok(())
    }

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
    }

    /// Sends the `Restart` command to the connected agents the request selects that accept
    /// it. The audit record is written first: a restart nobody could account for must not
    /// happen.
    fn restart(&self, request: &RestartRequest, by: String) -> Result<RestartReport, FleetError> {
        let selector: LabelSelector = request.selector.trim().parse()?;
        let named: HashSet<InstanceUid> = request.agents.iter().copied().collect();
        let mut report = RestartReport::default();
        let mut matching: Vec<&AgentRecord> = self
            .agents
            .values()
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
        let fleet: Vec<_> = self
            .agents
            .values()
            .filter(|a| {
                AgentCapabilities::from_wire(a.capabilities)
                    .contains(AgentCapabilities::ACCEPTS_PACKAGES)
            })
            .map(|a| a.snapshot_for(&spec.package_name))
            .collect();
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = Rollout::plan(id.clone(), spec.clone(), &fleet, now)?;
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
            rollout = Rollout::plan(id.clone(), spec, &fleet, now)?;
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
        self.conflicts.check(&rollout)?;
        lock(&self.store).create_rollout(&rollout)?;
        self.conflicts.register(&rollout)?;
        tracing::info!(rollout = %id, by, agents = rollout.agents().len(), "rollout planned");
        self.rollouts.insert(id.clone(), rollout);
        self.step(&id, Event::Start { by }, now)?;
        self.view(&id)
    }

    /// Plans and starts a config rollout: agents that accept remote config and whose current
    /// config the server knows (reported since it started), each reverted, if need be, to the
    /// config it had (the empty config when it had none).
    fn create_config_rollout(
        &mut self,
        mut spec: crate::spec::RolloutSpec,
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
        let fleet: Vec<_> = self
            .agents
            .values()
            .filter(|a| {
                AgentCapabilities::from_wire(a.capabilities)
                    .contains(AgentCapabilities::ACCEPTS_REMOTE_CONFIG)
            })
            .map(|a| {
                let current = self
                    .applied_configs
                    .get(&a.uid)
                    .map(|applied| applied.clone().unwrap_or_else(|| empty.clone()));
                crate::rollout::AgentSnapshot::new(a.uid, a.labels.clone(), current)
                    .healthy(a.healthy)
                    .connected(a.connected)
            })
            .collect();
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = Rollout::plan(id.clone(), spec.clone(), &fleet, now)?;
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
            rollout = Rollout::plan(id, spec, &fleet, now)?;
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
        if !self.rollouts.contains_key(id) {
            let stored = lock(&self.store).load_rollout(id)?;
            return match stored {
                Some(rollout) => Err(FleetError::InvalidTransition {
                    rollout: id.clone(),
                    status: rollout.status(),
                    event: match operation {
                        Operation::Pause => "pause",
                        Operation::Resume => "resume",
                        Operation::Abort { .. } => "abort",
                    },
                }),
                None => Err(FleetError::NotFound {
                    what: format!("rollout {id}"),
                }),
            };
        }
        if self.unsaved.holds(id) {
            // An operator's step must come after the events already received.
            self.retry_unsaved();
            if self.unsaved.holds(id) {
                return Err(FleetError::Unsaved {
                    rollout: id.clone(),
                });
            }
        }
        let event = match operation {
            Operation::Pause => Event::Pause { by },
            Operation::Resume => Event::Resume { by },
            Operation::Abort { reason } => Event::Abort { by, reason },
        };
        self.step(id, event, now())?;
        self.view(id)
    }

    fn view(&self, id: &RolloutId) -> Result<RolloutView, FleetError> {
        if let Some(rollout) = self.rollouts.get(id) {
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

/// Whether `uid` was offered something by `rollout` (the target or a revert).
fn offered(rollout: &Rollout, uid: InstanceUid) -> bool {
    rollout.agent(&uid).is_some_and(|a| a.was_offered())
}

/// Whether a remote config status tells `rollout` something new about `uid`: a failure to
/// apply the rollout's config while it waits for it, or an applied config as for packages
/// (see [`report_matters`]).
fn config_report_matters(rollout: &Rollout, uid: InstanceUid, report: &ConfigReport) -> bool {
    match report {
        ConfigReport::Failed { hash, .. } => {
            *hash == rollout.spec().target_key()
                && report_matters(rollout, uid, &PackageReport::Failed(String::new()))
        }
        ConfigReport::Applied(hash) => {
            report_matters(rollout, uid, &PackageReport::Installed(hash.clone()))
        }
        ConfigReport::InProgress => false,
    }
}

/// Whether a package report tells `rollout` something new about `uid`: a failure, or an
/// install of a version other than the one last reported, or any install while the agent
/// has an offer outstanding. Repeats of the same version are not logged again.
fn report_matters(rollout: &Rollout, uid: InstanceUid, report: &PackageReport) -> bool {
    let Some(agent) = rollout.agent(&uid) else {
        return false;
    };
    match report {
        PackageReport::Failed(_) => matches!(
            agent.phase,
            AgentPhase::Offered { .. } | AgentPhase::Installed { .. }
        ),
        PackageReport::Installed(version) => {
            *version != agent.reported_version
                || agent.revert_pending()
                || matches!(agent.phase, AgentPhase::Offered { .. })
        }
        PackageReport::InProgress => false,
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::AgentSnapshot;
    use crate::selector::LabelSelector;
    use crate::spec::RolloutSpec;

    fn rollout() -> (Rollout, InstanceUid, InstanceUid) {
        let (a, b) = (InstanceUid::from([1; 16]), InstanceUid::from([2; 16]));
        let fleet = [a, b].map(|uid| AgentSnapshot::new(uid, Labels::new(), Some("1.0.0".into())));
        let spec = RolloutSpec::new("otelcol", "2.0.0", LabelSelector::all(), "ops");
        let mut rollout =
            Rollout::plan(RolloutId::new("r"), spec, &fleet, Timestamp::EPOCH).unwrap();
        rollout
            .handle(Event::Start { by: "ops".into() }, Timestamp::EPOCH)
            .unwrap();
        let canary = rollout.wave_agents(0)[0].uid;
        let other = if canary == a { b } else { a };
        (rollout, canary, other)
    }

    #[test]
    fn only_news_about_offered_agents_is_fed_to_the_engine() {
        let (mut rollout, canary, waiting) = rollout();
        let installed = |v: &str| PackageReport::Installed(v.into());
        let failed = PackageReport::Failed("boom".into());
        // The waiting agent repeating its version, or failing, says nothing new.
        assert!(!report_matters(&rollout, waiting, &installed("1.0.0")));
        assert!(!report_matters(&rollout, waiting, &failed));
        // The canary's reports matter while its offer is outstanding.
        assert!(report_matters(&rollout, canary, &installed("1.0.0")));
        assert!(report_matters(&rollout, canary, &failed));
        rollout
            .handle(
                Event::AgentInstalled {
                    uid: canary,
                    version: "2.0.0".into(),
                    healthy: None,
                },
                Timestamp::EPOCH,
            )
            .unwrap();
        assert!(!report_matters(&rollout, canary, &installed("2.0.0")));
        assert!(report_matters(&rollout, canary, &installed("1.0.0")));
        assert!(!report_matters(
            &rollout,
            InstanceUid::from([9; 16]),
            &failed
        ));
        assert!(!report_matters(
            &rollout,
            canary,
            &PackageReport::InProgress
        ));
    }
}
