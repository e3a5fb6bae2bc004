//! [`Fleet`]: the coordinator around the rollout engine, without IO.
//!
//! It keeps the agent registry, routes each agent report to the active rollouts it tells
//! something new, persists each engine step through a [`RolloutStore`] before acting on it,
//! keeps the versions (and remote configs) each agent is to be offered, brings agents that
//! join later to the version a completed rollout established ("standing versions"), retries
//! steps the store could not save, and forgets agents long gone. It never reads the clock:
//! every call takes `now`, and [`Fleet::poll_timeout`] says when to call
//! [`Fleet::handle_timeout`] next. What the caller must do comes out of
//! [`Fleet::poll_output`] as [`Output`] values: offers to send, rollout progress to publish,
//! agents to delete from its registry.
//!
//! # Example
//! ```
//! use opamp_proto::InstanceUid;
//! use opamp_rollout::fleet::{AgentReport, Fleet, FleetSettings, Output, PackageReport};
//! use opamp_rollout::store::MemoryStore;
//! use opamp_rollout::{LabelSelector, RolloutId, RolloutSpec, RolloutStatus, Timestamp};
//!
//! let mut store = MemoryStore::default();
//! let mut fleet = Fleet::new(FleetSettings::default());
//! let now = Timestamp::from_millis(1_000);
//! let uid = InstanceUid::from([7; 16]);
//! fleet.connected(uid, now, &mut store);
//! let accepts_packages = opamp_proto::AgentCapabilities::ACCEPTS_PACKAGES.bits();
//! fleet.report(uid, AgentReport::Capabilities(accepts_packages), now, &mut store);
//! let running = vec![("otelcol".to_owned(), PackageReport::Installed("1.0.0".into()))];
//! fleet.report(uid, AgentReport::Packages(running), now, &mut store);
//!
//! let spec = RolloutSpec::new("otelcol", "1.1.0", LabelSelector::all(), "alice");
//! let rollout = fleet.plan_packages(RolloutId::new("r1"), spec, now)?;
//! fleet.start(rollout, "alice", now, &mut store)?;
//! let offered = std::iter::from_fn(|| fleet.poll_output())
//!     .any(|output| matches!(output, Output::OfferPackages { uid: to, .. } if to == uid));
//! assert!(offered);
//!
//! let installed = vec![("otelcol".to_owned(), PackageReport::Installed("1.1.0".into()))];
//! fleet.report(uid, AgentReport::Packages(installed), now, &mut store);
//! let status = fleet.rollout(&RolloutId::new("r1")).map(|r| r.status());
//! assert_eq!(status, Some(RolloutStatus::Baking));
//! # Ok::<(), opamp_rollout::RolloutError>(())
//! ```

mod reports;
#[cfg(test)]
mod seen_tests;
mod standing;
mod unsaved;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use opamp_proto::{AgentCapabilities, InstanceUid};

pub use reports::{AgentReport, ConfigReport, PackageReport};
use reports::{config_event, config_report_matters, offered, report_event, report_matters};
use standing::StandingVersions;
use unsaved::UnsavedSteps;

use crate::agent::AgentRecord;
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::error::RolloutError;
use crate::events::{Command, Event, RolloutStatus};
use crate::rollout::{AgentSnapshot, FailureReason, Rollout, RolloutId};
use crate::selector::Labels;
use crate::spec::{RolloutSpec, TargetKind};
use crate::store::{RolloutStore, apply};
use crate::time::Timestamp;

/// How the coordinator behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetSettings {
    /// Disconnected agents outside active rollouts are forgotten after this long.
    pub forget_after: Duration,
    /// How stale an agent's `last_seen` may get while it only sends heartbeats: it moves,
    /// and is listed by [`Fleet::take_seen_agents`] for writing, at most this often. Default
    /// 1 s; a server whose agents heartbeat every 30 s writes one row per agent per
    /// heartbeat at that setting, and half as many at 60 s.
    pub last_seen_period: Duration,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            forget_after: Duration::from_secs(7 * 24 * 3600),
            last_seen_period: Duration::from_secs(1),
        }
    }
}

impl FleetSettings {
    /// Sets [`FleetSettings::forget_after`].
    #[must_use]
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// Sets [`FleetSettings::last_seen_period`].
    #[must_use]
    pub fn last_seen_period(mut self, period: Duration) -> Self {
        self.last_seen_period = period;
        self
    }
}

/// An operator action on an active rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Start no new wave.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Revert every agent already moved.
    Abort {
        /// Why, for the audit log.
        reason: String,
    },
}

/// One engine step, for whoever publishes progress.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RolloutStep {
    /// The rollout.
    pub rollout: RolloutId,
    /// Its package (or config) name.
    pub package: String,
    /// Its status after the step.
    pub status: RolloutStatus,
    /// Whether the step changed the status.
    pub status_changed: bool,
    /// What the step logged (already persisted with the step).
    pub audit: Vec<AuditRecord>,
    /// The rollout itself when the step ended it (it is no longer active, so
    /// [`Fleet::rollout`] no longer has it).
    pub finished: Option<Box<Rollout>>,
}

/// What the caller must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Send the agent an offer of exactly these packages (name to version): an offer lists
    /// every package the agent should have.
    OfferPackages {
        /// The agent.
        uid: InstanceUid,
        /// Package name to version.
        versions: BTreeMap<String, String>,
    },
    /// Send the agent the remote config with this hash (hex).
    OfferConfig {
        /// The agent.
        uid: InstanceUid,
        /// The config's hash, lower-case hex.
        hash: String,
    },
    /// A rollout took a step (already persisted).
    RolloutStepped(RolloutStep),
    /// Audit records the coordinator appended to the store outside engine steps (catch-up
    /// offers and their outcomes).
    Audited(Vec<AuditRecord>),
    /// These agents were forgotten (long disconnected, in no active rollout): delete their
    /// registry rows and anything else kept about them.
    Forgotten(Vec<InstanceUid>),
}

/// The coordinator. See the [module documentation](self).
#[derive(Debug)]
pub struct Fleet {
    settings: FleetSettings,
    rollouts: BTreeMap<RolloutId, Rollout>,
    conflicts: crate::conflicts::RolloutConflicts,
    agents: HashMap<InstanceUid, AgentRecord>,
    /// The versions last offered to each agent, by package.
    offered: HashMap<InstanceUid, BTreeMap<String, String>>,
    /// The config hash (hex) config rollouts want each agent to have.
    offered_configs: HashMap<InstanceUid, String>,
    /// The remote config each agent last reported applied (`None`: none yet). What a config
    /// rollout reverts it to; agents not in here are not known well enough to take part.
    applied_configs: HashMap<InstanceUid, Option<String>>,
    /// Agents whose registry row changed since [`Fleet::take_changed_agents`].
    changed: HashSet<InstanceUid>,
    /// Agents whose row changed only in `last_seen` since [`Fleet::take_seen_agents`]
    /// (heartbeats): a write of one column, not of the row.
    seen: HashSet<InstanceUid>,
    standing: StandingVersions,
    /// Catch-up offers whose outcome is still to be audited: (agent, package) to the rollout
    /// whose version was offered, and that version.
    catching_up: HashMap<(InstanceUid, String), (RolloutId, String)>,
    unsaved: UnsavedSteps,
    /// When the registry is next swept for agents to forget (`None`: at the first timeout).
    next_forget_sweep: Option<Timestamp>,
    outputs: VecDeque<Output>,
}

impl Fleet {
    /// An empty coordinator: no agents, no rollouts.
    #[must_use]
    pub fn new(settings: FleetSettings) -> Self {
        Fleet {
            settings,
            rollouts: BTreeMap::new(),
            conflicts: crate::conflicts::RolloutConflicts::default(),
            agents: HashMap::new(),
            offered: HashMap::new(),
            offered_configs: HashMap::new(),
            applied_configs: HashMap::new(),
            changed: HashSet::new(),
            seen: HashSet::new(),
            standing: StandingVersions::default(),
            catching_up: HashMap::new(),
            unsaved: UnsavedSteps::default(),
            next_forget_sweep: None,
            outputs: VecDeque::new(),
        }
    }

    /// Rebuilds the coordinator after a restart from what it asked to persist: the active,
    /// standing and recently ended rollouts in `store`, the registry rows the caller kept
    /// (`agents`) and the remote config hash (hex) each agent last reported applied. Every
    /// agent starts disconnected (those that were connected are marked changed). The offers
    /// agents get when they connect are rebuilt from the rollouts: each active rollout's
    /// desired versions, and the reverts that rollouts which ended within
    /// [`FleetSettings::forget_after`] of `now` left unconfirmed (agents away at the time).
    ///
    /// # Errors
    /// [`RolloutError::Store`] when the store cannot be read.
    pub fn recover<S: RolloutStore + ?Sized>(
        store: &S,
        agents: impl IntoIterator<Item = AgentRecord>,
        applied_configs: impl IntoIterator<Item = (InstanceUid, String)>,
        settings: FleetSettings,
        now: Timestamp,
    ) -> Result<Self, RolloutError> {
        let since =
            Timestamp::from_millis(now.as_millis().saturating_sub(
                u64::try_from(settings.forget_after.as_millis()).unwrap_or(u64::MAX),
            ));
        let mut fleet = Fleet::new(settings);
        for mut agent in agents {
            // Nobody is connected to a server that just started.
            if agent.connected {
                agent.connected = false;
                fleet.changed.insert(agent.uid);
            }
            fleet.agents.insert(agent.uid, agent);
        }
        for (uid, hash) in applied_configs {
            fleet.applied_configs.insert(uid, Some(hash));
        }
        let store_error = |error: S::Error| RolloutError::Store(Box::new(error));
        for (rollout, finished_at) in store.standing_rollouts().map_err(store_error)? {
            fleet.standing.record(&rollout, finished_at);
        }
        // Oldest first, so a later rollout's word on an agent replaces an earlier one's.
        let mut ended = store.ended_since(since).map_err(store_error)?;
        ended.sort_by_key(|(_, ended_at)| *ended_at);
        for (rollout, _) in &ended {
            for agent in rollout.agents() {
                if agent.revert_pending() {
                    let revert = rollout.desired_version(&agent.uid);
                    fleet.set_offer(rollout, agent.uid, revert);
                } else if agent.was_offered() {
                    // Settled by this rollout: whatever an older one wanted is moot.
                    fleet.set_offer(rollout, agent.uid, None);
                }
            }
        }
        let active = store.active_rollouts().map_err(store_error)?;
        fleet.conflicts = crate::conflicts::RolloutConflicts::from_rollouts(&active);
        for rollout in active {
            for agent in rollout.agents() {
                if let Some(version) = rollout.desired_version(&agent.uid) {
                    fleet.set_offer(&rollout, agent.uid, Some(version));
                }
            }
            tracing::info!(rollout = %rollout.id(), status = %rollout.status(), "resuming rollout");
            fleet.rollouts.insert(rollout.id().clone(), rollout);
        }
        Ok(fleet)
    }

    /// Records what `rollout` wants `uid` to run (`None`: nothing any more).
    fn set_offer(&mut self, rollout: &Rollout, uid: InstanceUid, version: Option<&str>) {
        let spec = rollout.spec();
        if spec.target_kind == TargetKind::Config {
            match version {
                Some(hash) => self.offered_configs.insert(uid, hash.to_owned()),
                None => self.offered_configs.remove(&uid),
            };
            return;
        }
        match version {
            Some(version) => {
                self.offered
                    .entry(uid)
                    .or_default()
                    .insert(spec.package_name.clone(), version.to_owned());
            }
            None => {
                if let Some(offers) = self.offered.get_mut(&uid) {
                    offers.remove(&spec.package_name);
                    if offers.is_empty() {
                        self.offered.remove(&uid);
                    }
                }
            }
        }
    }

    // ----- what the caller reads --------------------------------------------------------

    /// The next thing to do, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Fleet::handle_timeout`] next (`None`: only when something happens).
    /// Calling it early is harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let engine = self
            .rollouts
            .values()
            // A rollout with unsaved steps waits for them before its deadlines count.
            .filter(|r| !self.unsaved.holds(r.id()))
            .filter_map(Rollout::poll_timeout)
            .min();
        let sweep = self.next_forget_sweep.unwrap_or(Timestamp::EPOCH);
        [engine, self.unsaved.retry_at(), Some(sweep)]
            .into_iter()
            .flatten()
            .min()
    }

    /// An active rollout.
    #[must_use]
    pub fn rollout(&self, id: &RolloutId) -> Option<&Rollout> {
        self.rollouts.get(id)
    }

    /// The active rollouts, by id.
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values()
    }

    /// One agent's registry row.
    #[must_use]
    pub fn agent(&self, uid: &InstanceUid) -> Option<&AgentRecord> {
        self.agents.get(uid)
    }

    /// Every known agent, in no particular order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values()
    }

    /// The agents whose registry rows changed since the last call (the caller writes them
    /// out; they are soft state an agent's next connection repairs, so writing them in
    /// batches is fine). Put back with [`Fleet::mark_changed`] what could not be written.
    pub fn take_changed_agents(&mut self) -> Vec<InstanceUid> {
        self.changed.drain().collect()
    }

    /// The agents whose rows changed only in `last_seen` since the last call: agents that
    /// sent nothing but heartbeats. Writing that one column is enough for them; at a large
    /// fleet's heartbeat rate, rewriting whole rows was most of an idle server's store work.
    /// Rows also changed otherwise are left to [`Fleet::take_changed_agents`], so call this
    /// one first. What could not be written goes back with [`Fleet::mark_changed`].
    pub fn take_seen_agents(&mut self) -> Vec<InstanceUid> {
        let changed = &self.changed;
        self.seen
            .drain()
            .filter(|uid| !changed.contains(uid))
            .collect()
    }

    /// Marks registry rows as changed again (a write that failed).
    pub fn mark_changed(&mut self, uids: impl IntoIterator<Item = InstanceUid>) {
        self.changed
            .extend(uids.into_iter().filter(|uid| self.agents.contains_key(uid)));
    }

    /// Steps waiting for the store, in all.
    #[must_use]
    pub fn unsaved_steps(&self) -> usize {
        self.unsaved.len()
    }

    // ----- agents -----------------------------------------------------------------------

    /// An agent opened a connection. Returns whether it is registered (an agent gets its row
    /// from what it reports, not from connecting).
    pub fn connected<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        now: Timestamp,
        store: &mut S,
    ) -> bool {
        let Some(record) = self.agents.get_mut(&uid) else {
            return false;
        };
        record.last_seen = now;
        record.connected = true;
        self.changed.insert(uid);
        // Only news is stepped: after a restart the engine still thinks agents are
        // connected, and thousands of reconnects would otherwise each be a step.
        let was_away = |r: &Rollout| r.agent(&uid).is_some_and(|a| !a.connected);
        self.broadcast_to_members(uid, was_away, &Event::AgentConnected { uid }, now, store);
        // Known from now on: no remote config until it reports one.
        self.applied_configs.entry(uid).or_insert(None);
        self.push_offer(uid);
        self.push_config_offer(uid);
        true
    }

    /// An agent's connection closed. Returns whether it is registered.
    pub fn disconnected<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        now: Timestamp,
        store: &mut S,
    ) -> bool {
        let Some(record) = self.agents.get_mut(&uid) else {
            return false;
        };
        record.last_seen = now;
        if !record.connected {
            return true;
        }
        record.connected = false;
        self.changed.insert(uid);
        let was_there = |r: &Rollout| r.agent(&uid).is_some_and(|a| a.connected);
        self.broadcast_to_members(
            uid,
            was_there,
            &Event::AgentDisconnected { uid },
            now,
            store,
        );
        true
    }

    /// A message that changed nothing: the agent is alive. Its `last_seen` moves at most
    /// every [`FleetSettings::last_seen_period`], and the row is then listed by
    /// [`Fleet::take_seen_agents`].
    pub fn heartbeat(&mut self, uid: InstanceUid, now: Timestamp) {
        let Some(record) = self.agents.get_mut(&uid) else {
            return; // Not registered: nothing it reported was accepted yet.
        };
        // Moved only when due: the row written is the one compared against next time.
        if record
            .last_seen
            .saturating_add(self.settings.last_seen_period)
            <= now
        {
            record.last_seen = now;
            self.seen.insert(uid);
        }
    }

    /// An accepted report of an agent (its first one registers it).
    pub fn report<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        report: AgentReport,
        now: Timestamp,
        store: &mut S,
    ) {
        if !self.agents.contains_key(&uid) {
            // No remote config until it reports one.
            self.applied_configs.entry(uid).or_insert(None);
        }
        let record = self
            .agents
            .entry(uid)
            .or_insert_with(|| AgentRecord::new(uid, Labels::new(), 0, now));
        record.last_seen = now;
        self.changed.insert(uid);
        match report {
            AgentReport::Capabilities(bits) => record.capabilities = bits,
            AgentReport::Labels(labels) => {
                record.labels = labels;
                self.catch_up(uid, now, store);
            }
            AgentReport::Health(healthy) => {
                record.healthy = healthy;
                let event = Event::AgentHealth { uid, healthy };
                // Health only matters once an agent was offered the target.
                self.broadcast_to_members(uid, |r| offered(r, uid), &event, now, store);
            }
            AgentReport::Packages(reports) => {
                for (name, report) in &reports {
                    if let PackageReport::Installed(version) = report {
                        record
                            .package_versions
                            .insert(name.clone(), version.clone());
                    }
                }
                let healthy = record.healthy;
                self.on_package_reports(uid, &reports, healthy, now, store);
                self.audit_catch_up_results(uid, &reports, now, store);
                self.catch_up(uid, now, store);
            }
            AgentReport::RemoteConfig(report) => {
                let healthy = record.healthy;
                match &report {
                    ConfigReport::Applied(hash) => {
                        self.applied_configs.insert(uid, Some(hash.clone()));
                    }
                    // A failure of a config this coordinator did not offer, before any
                    // APPLIED since it connected (a supervisor restarted after a failed
                    // apply), says nothing about what it runs: unknown until it reports one.
                    ConfigReport::Failed { hash, .. }
                        if matches!(self.applied_configs.get(&uid), Some(None))
                            && self.offered_configs.get(&uid) != Some(hash) =>
                    {
                        self.applied_configs.remove(&uid);
                    }
                    _ => {}
                }
                self.on_config_report(uid, &report, healthy, now, store);
            }
            AgentReport::Other => {}
        }
    }

    /// The remote config hash (hex) `uid` last reported applied: `Some(None)` when it has
    /// none, `None` when the coordinator does not know.
    #[must_use]
    pub fn applied_config(&self, uid: &InstanceUid) -> Option<Option<&str>> {
        self.applied_configs.get(uid).map(Option::as_deref)
    }

    fn on_package_reports<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        reports: &[(String, PackageReport)],
        healthy: bool,
        now: Timestamp,
        store: &mut S,
    ) {
        for (package, report) in reports {
            let Some(event) = report_event(uid, report, Some(healthy)) else {
                continue;
            };
            let concerned = |r: &Rollout| {
                r.spec().target_kind.is_package()
                    && r.spec().package_name == *package
                    && report_matters(r, uid, report)
            };
            self.broadcast_to_members(uid, concerned, &event, now, store);
        }
    }

    /// Feeds a remote config status to the config rollouts it tells something new.
    fn on_config_report<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        report: &ConfigReport,
        healthy: bool,
        now: Timestamp,
        store: &mut S,
    ) {
        let Some(event) = config_event(uid, report, Some(healthy)) else {
            return;
        };
        let concerned = |r: &Rollout| {
            r.spec().target_kind == TargetKind::Config && config_report_matters(r, uid, report)
        };
        self.broadcast_to_members(uid, concerned, &event, now, store);
    }

    /// Offers a newcomer the versions completed rollouts established for agents like it, for
    /// each package it runs that no active rollout has it in.
    fn catch_up<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        now: Timestamp,
        store: &mut S,
    ) {
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
            if running == standing.version || offered == Some(&standing.version) || in_rollout {
                continue;
            }
            offers.push((
                package.to_owned(),
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
            audit.push(AuditRecord::new(now, rollout, Actor::Engine, action));
        }
        self.append_audit(audit, store);
        self.push_offer(uid);
    }

    /// Audits how a newcomer's catch-up install ended, under the rollout whose version it was.
    fn audit_catch_up_results<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        reports: &[(String, PackageReport)],
        now: Timestamp,
        store: &mut S,
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
            audit.push(AuditRecord::new(
                now,
                rollout.clone(),
                Actor::Agent(uid),
                action,
            ));
            self.catching_up.remove(&key);
        }
        self.append_audit(audit, store);
    }

    /// Appends records outside an engine step. A failure is logged, not fatal: the offer or
    /// outcome it describes stands either way.
    fn append_audit<S: RolloutStore + ?Sized>(&mut self, audit: Vec<AuditRecord>, store: &mut S) {
        if audit.is_empty() {
            return;
        }
        if let Err(error) = store.append_audit(&audit) {
            tracing::error!(%error, records = audit.len(), "cannot write to the audit log");
        }
        self.outputs.push_back(Output::Audited(audit));
    }

    /// Feeds `event` to every active rollout `uid` takes part in that passes `filter`.
    fn broadcast_to_members<S: RolloutStore + ?Sized>(
        &mut self,
        uid: InstanceUid,
        filter: impl Fn(&Rollout) -> bool,
        event: &Event,
        now: Timestamp,
        store: &mut S,
    ) {
        let ids: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(_, r)| r.agent(&uid).is_some() && filter(r))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.step_or_keep(&id, event.clone(), now, store);
        }
    }

    fn push_offer(&mut self, uid: InstanceUid) {
        if let Some(versions) = self.offered.get(&uid) {
            self.outputs.push_back(Output::OfferPackages {
                uid,
                versions: versions.clone(),
            });
        }
    }

    fn push_config_offer(&mut self, uid: InstanceUid) {
        if let Some(hash) = self.offered_configs.get(&uid) {
            self.outputs.push_back(Output::OfferConfig {
                uid,
                hash: hash.clone(),
            });
        }
    }

    // ----- time -------------------------------------------------------------------------

    /// Handles every deadline that passed by `now`: retries unsaved steps, sweeps the
    /// registry, and times out rollout waits.
    pub fn handle_timeout<S: RolloutStore + ?Sized>(&mut self, now: Timestamp, store: &mut S) {
        if self.unsaved.due(now) {
            self.retry_unsaved(now, store);
        }
        if self.next_forget_sweep.is_none_or(|at| at <= now) {
            self.forget_stale_agents(now);
        }
        let due: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(id, _)| !self.unsaved.holds(id))
            .filter(|(_, r)| r.poll_timeout().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.step_or_keep(&id, Event::Timeout, now, store);
        }
    }

    /// Forgets agents disconnected for longer than `forget_after` that take part in no
    /// active rollout, so uids an attacker made up (or hosts long gone) do not grow memory
    /// and the registry for ever.
    fn forget_stale_agents(&mut self, now: Timestamp) {
        let after = self.settings.forget_after;
        // A quarter of the bound between sweeps: an agent is gone at most 25% late.
        let period = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        self.next_forget_sweep = Some(now.saturating_add(period));
        let members: HashSet<InstanceUid> = self
            .rollouts
            .values()
            .filter(|rollout| !rollout.is_terminal())
            .flat_map(|rollout| rollout.agents().iter().map(|agent| agent.uid))
            .collect();
        let forget: Vec<InstanceUid> = self
            .agents
            .values()
            .filter(|agent| !agent.connected && !members.contains(&agent.uid))
            .filter(|agent| agent.last_seen.saturating_add(after) <= now)
            .map(|agent| agent.uid)
            .collect();
        if forget.is_empty() {
            return;
        }
        for uid in &forget {
            self.agents.remove(uid);
            self.changed.remove(uid);
            self.seen.remove(uid);
            self.applied_configs.remove(uid);
            self.offered_configs.remove(uid);
            self.offered.remove(uid);
            self.catching_up.retain(|(agent, _), _| agent != uid);
        }
        tracing::info!(
            agents = forget.len(),
            ?after,
            "forgot agents disconnected too long"
        );
        self.outputs.push_back(Output::Forgotten(forget));
    }

    /// Tries the unsaved steps again, oldest first per rollout; stops at the first that still
    /// cannot be saved.
    fn retry_unsaved<S: RolloutStore + ?Sized>(&mut self, now: Timestamp, store: &mut S) {
        let mut all_saved = true;
        'rollouts: for id in self.unsaved.rollouts() {
            while let Some((event, at)) = self.unsaved.front(&id) {
                let kind = event.kind();
                match self.step(&id, event, at, store) {
                    Ok(()) => self.unsaved.pop(&id),
                    Err(RolloutError::Store(error)) => {
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
        self.unsaved.round_done(all_saved, now);
    }

    // ----- rollouts ---------------------------------------------------------------------

    /// Plans a package rollout over the registered agents that accept packages. The caller
    /// may check the plan (are the versions agents would revert to offerable?), adjust the
    /// spec and plan again with the same id (the same agents land in the same waves), then
    /// [`Fleet::start`] it.
    ///
    /// # Errors
    /// As [`Rollout::plan`].
    pub fn plan_packages(
        &self,
        id: RolloutId,
        spec: RolloutSpec,
        now: Timestamp,
    ) -> Result<Rollout, RolloutError> {
        let fleet: Vec<AgentSnapshot> = self
            .capable(AgentCapabilities::ACCEPTS_PACKAGES)
            .map(|a| a.snapshot_for(&spec.package_name))
            .collect();
        Rollout::plan(id, spec, &fleet, now)
    }

    /// Plans a config rollout ([`TargetKind::Config`]) over the registered agents that accept
    /// remote config and whose current config is known; `empty_hash` (hex) stands for "no
    /// remote config", what agents without one go back to.
    ///
    /// # Errors
    /// As [`Rollout::plan`].
    pub fn plan_config(
        &self,
        id: RolloutId,
        spec: RolloutSpec,
        empty_hash: &str,
        now: Timestamp,
    ) -> Result<Rollout, RolloutError> {
        let fleet: Vec<AgentSnapshot> = self
            .capable(AgentCapabilities::ACCEPTS_REMOTE_CONFIG)
            .map(|a| {
                let current = self
                    .applied_configs
                    .get(&a.uid)
                    .map(|applied| applied.clone().unwrap_or_else(|| empty_hash.to_owned()));
                AgentSnapshot::new(a.uid, a.labels.clone(), current)
                    .healthy(a.healthy)
                    .connected(a.connected)
            })
            .collect();
        Rollout::plan(id, spec, &fleet, now)
    }

    /// The registered agents that report `capability`.
    fn capable(&self, capability: AgentCapabilities) -> impl Iterator<Item = &AgentRecord> {
        self.agents
            .values()
            .filter(move |a| AgentCapabilities::from_wire(a.capabilities).contains(capability))
    }

    /// Checks a planned rollout against the active ones, stores it and starts it.
    ///
    /// # Errors
    /// [`RolloutError::Conflict`], or [`RolloutError::Store`] (then nothing was started).
    pub fn start<S: RolloutStore + ?Sized>(
        &mut self,
        rollout: Rollout,
        by: &str,
        now: Timestamp,
        store: &mut S,
    ) -> Result<(), RolloutError> {
        let id = rollout.id().clone();
        self.conflicts.check(&rollout)?;
        store
            .create_rollout(&rollout)
            .map_err(|error| RolloutError::Store(Box::new(error)))?;
        self.conflicts.register(&rollout)?;
        tracing::info!(rollout = %id, by, agents = rollout.agents().len(), "rollout planned");
        self.rollouts.insert(id.clone(), rollout);
        self.step(&id, Event::Start { by: by.to_owned() }, now, store)
    }

    /// Pauses, resumes or aborts an active rollout.
    ///
    /// # Errors
    /// [`RolloutError::NotActive`] when it is not active (finished, or unknown: the caller
    /// tells which), [`RolloutError::Unsaved`] while earlier steps still wait for the store,
    /// [`RolloutError::InvalidTransition`], or [`RolloutError::Store`].
    pub fn operate<S: RolloutStore + ?Sized>(
        &mut self,
        id: &RolloutId,
        operation: Operation,
        by: &str,
        now: Timestamp,
        store: &mut S,
    ) -> Result<(), RolloutError> {
        if !self.rollouts.contains_key(id) {
            return Err(RolloutError::NotActive {
                rollout: id.clone(),
            });
        }
        if self.unsaved.holds(id) {
            // An operator's step must come after the events already received.
            self.retry_unsaved(now, store);
            if self.unsaved.holds(id) {
                return Err(RolloutError::Unsaved {
                    rollout: id.clone(),
                });
            }
        }
        let by = by.to_owned();
        let event = match operation {
            Operation::Pause => Event::Pause { by },
            Operation::Resume => Event::Resume { by },
            Operation::Abort { reason } => Event::Abort { by, reason },
        };
        self.step(id, event, now, store)
    }

    /// Applies an event nobody waits for an answer to. One the store cannot save is kept and
    /// retried (with everything after it for the same rollout): it is news that will not come
    /// again.
    fn step_or_keep<S: RolloutStore + ?Sized>(
        &mut self,
        id: &RolloutId,
        event: Event,
        now: Timestamp,
        store: &mut S,
    ) {
        let kind = event.kind();
        if self.unsaved.holds(id) {
            self.unsaved.push(id.clone(), event, now);
            return;
        }
        match self.step(id, event.clone(), now, store) {
            Ok(()) => {}
            Err(RolloutError::Store(error)) => {
                tracing::error!(rollout = %id, event = kind, %error, "rollout step could not be saved; keeping it to retry");
                self.unsaved.push(id.clone(), event, now);
            }
            Err(error) => {
                tracing::error!(rollout = %id, event = kind, %error, "rollout step failed");
            }
        }
    }

    /// Applies one event, persisted before its commands run.
    fn step<S: RolloutStore + ?Sized>(
        &mut self,
        id: &RolloutId,
        event: Event,
        now: Timestamp,
        store: &mut S,
    ) -> Result<(), RolloutError> {
        let rollout = self
            .rollouts
            .get_mut(id)
            .ok_or_else(|| RolloutError::NotActive {
                rollout: id.clone(),
            })?;
        let commands = apply(store, rollout, event, now)?;
        let package = rollout.spec().package_name.clone();
        let is_config = rollout.spec().target_kind == TargetKind::Config;
        let mut touched = BTreeSet::new();
        let mut touched_configs = BTreeSet::new();
        let mut audit: Vec<AuditRecord> = Vec::new();
        let mut status_changed = false;
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
                Command::Audit(record) => audit.push(record),
                Command::StateChanged { .. } => status_changed = true,
            }
        }
        for uid in touched {
            self.push_offer(uid);
        }
        for uid in touched_configs {
            self.push_config_offer(uid);
        }
        let Some(rollout) = self.rollouts.get(id) else {
            return Ok(());
        };
        let status = rollout.status();
        let finished = if rollout.is_terminal() {
            tracing::info!(rollout = %id, %status, "rollout finished");
            self.standing.record(rollout, now);
            self.conflicts.update(rollout);
            self.rollouts.remove(id).map(Box::new)
        } else {
            None
        };
        self.outputs.push_back(Output::RolloutStepped(RolloutStep {
            rollout: id.clone(),
            package,
            status,
            status_changed,
            audit,
            finished,
        }));
        Ok(())
    }
}
