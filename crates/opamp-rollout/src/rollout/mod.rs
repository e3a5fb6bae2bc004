//! The rollout engine: a persisted, sans-IO state machine.
//!
//! A [`Rollout`] is planned from a fleet snapshot ([`Rollout::plan`]) and then driven by
//! [`Rollout::handle`]`(event, now)`, which returns the [`Command`]s the caller must carry out.
//! The engine performs no IO and never reads the clock, so the same code runs inside the server
//! and inside a simulation with a virtual clock.
//!
//! # Driver loop
//! 1. Feed every relevant event (agent reports, operator actions) to [`Rollout::handle`] with the
//!    current time and execute the commands it returns, in order (persist first: see
//!    [`crate::store`]).
//! 2. Ask [`Rollout::poll_timeout`] for the next deadline; when it passes, feed
//!    [`Event::Timeout`]. Handling a timeout early is harmless.
//! 3. Stop when [`Rollout::status`] is terminal.
//!
//! # Rules
//! - Waves: wave 0 holds the canaries (a share of the agents, at least one, chosen by a hash of
//!   rollout id and instance uid, preferring connected agents); waves 1.. are the batches.
//! - An agent of the current wave must report the target installed within the install timeout
//!   of its offer, then report healthy within the health timeout of that install. A later
//!   unhealthy report (while the rollout runs) also fails it. Failed agents are reverted at once.
//! - Agents that disconnect are not failed on the spot: their offer stays, and if they never
//!   return they fail when their install (or health) timeout passes.
//! - A wave whose failures exceed its budget (zero for canaries) aborts the whole rollout: every
//!   agent already offered the target is reverted to the version it ran before.
//! - The next wave starts only once every agent of the current wave has settled (healthy, or
//!   failed within budget) and the wave then stayed so for the bake time.
//! - Pause stops new waves from starting; failure detection continues while paused, and so
//!   does the bake clock (a wave that finished baking during the pause moves on at resume).
//! - Aborting waits up to the install timeout for agents that had installed the target to
//!   confirm their previous version: then `RolledBack`, or `Failed` if some never confirmed.
//! - A downgrade is a rollout whose target is older; nothing treats it specially.

mod plan;
mod step;

use std::collections::{BTreeSet, HashMap};

use opamp_proto::InstanceUid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::audit::{Actor, AuditAction, AuditRecord};
pub use crate::events::{Command, Event, RolloutStatus};
pub use crate::failure::FailureReason;
pub use crate::id::RolloutId;
use crate::selector::Labels;
use crate::spec::RolloutSpec;
use crate::time::Timestamp;

/// What the server knows about one agent when it plans a rollout. Pass only agents that may
/// be offered packages (they report the `AcceptsPackages` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentSnapshot {
    /// Instance uid.
    pub uid: InstanceUid,
    /// Labels from the agent description.
    pub labels: Labels,
    /// The installed version of the rollout's package, if the agent reported one.
    pub current_version: Option<String>,
    /// Last reported health.
    pub healthy: bool,
    /// Whether it is connected now.
    pub connected: bool,
}

impl AgentSnapshot {
    /// A connected, healthy agent running `current_version`.
    #[must_use]
    pub fn new(uid: InstanceUid, labels: Labels, current_version: Option<String>) -> Self {
        AgentSnapshot {
            uid,
            labels,
            current_version,
            healthy: true,
            connected: true,
        }
    }

    /// Sets [`AgentSnapshot::healthy`].
    #[must_use]
    pub fn healthy(mut self, healthy: bool) -> Self {
        self.healthy = healthy;
        self
    }

    /// Sets [`AgentSnapshot::connected`].
    #[must_use]
    pub fn connected(mut self, connected: bool) -> Self {
        self.connected = connected;
        self
    }
}

/// Why a selected agent was left out of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// It already runs the target version.
    AlreadyAtTarget,
    /// It reported no version of the package, so there is nothing to revert to. Only a package
    /// status counts: a `service.version` attribute alone does not (docs/operations.md).
    UnknownVersion,
    /// It was unhealthy before the rollout, so its health says nothing about the target.
    Unhealthy,
}

/// A selected agent the rollout leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SkippedAgent {
    /// The agent.
    pub uid: InstanceUid,
    /// Why.
    pub reason: SkipReason,
}

/// Where one agent stands in the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
#[non_exhaustive]
pub enum AgentPhase {
    /// Its wave has not started.
    Pending,
    /// The target was offered.
    Offered {
        /// When.
        at: Timestamp,
    },
    /// It reported the target installed; waiting for a healthy report.
    Installed {
        /// When.
        at: Timestamp,
    },
    /// Installed and healthy.
    Healthy {
        /// When it first reported healthy.
        at: Timestamp,
    },
    /// It failed and was reverted.
    Failed {
        /// When.
        at: Timestamp,
        /// Why.
        reason: FailureReason,
    },
}

/// The engine's record of one participating agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentProgress {
    /// The agent.
    pub uid: InstanceUid,
    /// Its wave (0 = canary).
    pub wave: u32,
    /// The version it ran when the rollout was planned; reverts go back to it.
    pub previous_version: String,
    /// The last version it reported installed.
    pub reported_version: String,
    /// Whether it is connected, as last reported.
    pub connected: bool,
    /// Its phase.
    pub phase: AgentPhase,
    /// Whether it was told to go back to `previous_version`.
    pub reverted: bool,
    /// Why the agent is expected to refuse that revert (its previous version is signed without
    /// a downgrade authorisation from the target): it is still offered, but an abort does not
    /// wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_refusal: Option<String>,
    /// Health last reported since the agent's current version was installed (`None` before
    /// any report).
    pub health: Option<bool>,
    /// The deadline that applies to its phase (install or health timeout).
    deadline: Option<Timestamp>,
}

impl AgentProgress {
    /// Whether the agent was ever offered the target.
    #[must_use]
    pub fn was_offered(&self) -> bool {
        !matches!(self.phase, AgentPhase::Pending)
    }

    /// Whether a revert was requested and the agent has not yet confirmed it.
    #[must_use]
    pub fn revert_pending(&self) -> bool {
        self.reverted
            && self.revert_refusal.is_none()
            && self.reported_version != self.previous_version
    }
}

/// One wave of agents: a contiguous range of the rollout's agent list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Wave {
    /// First agent index.
    pub start: u32,
    /// One past the last agent index.
    pub end: u32,
    /// Failures tolerated before the rollout aborts.
    pub budget: u32,
    /// Agents that are healthy or failed.
    pub settled: u32,
    /// Agents that failed.
    pub failed: u32,
    /// When offers went out.
    pub started_at: Option<Timestamp>,
    /// When every agent had settled (baking started).
    pub settled_at: Option<Timestamp>,
}

impl Wave {
    /// Number of agents in the wave.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.end - self.start
    }
}

/// A rollout's full state, with the data each state needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum RolloutState {
    /// Planned, not started.
    Planned,
    /// Canary wave installing.
    Canary,
    /// Batch wave `wave` (1-based; wave 0 is the canary wave) installing.
    Batch {
        /// Wave index.
        wave: u32,
    },
    /// Wave `wave` settled; the next starts at `until`.
    Baking {
        /// Wave index.
        wave: u32,
        /// End of the bake time.
        until: Timestamp,
    },
    /// Frozen by `by`; `resume_to` is where it continues.
    Paused {
        /// Operator.
        by: String,
        /// The state it was in.
        resume_to: Box<RolloutState>,
    },
    /// Reverting; gives up waiting for confirmations at `deadline`.
    Aborting {
        /// Why.
        reason: String,
        /// Confirmation deadline.
        deadline: Timestamp,
    },
    /// Done.
    Completed,
    /// Aborted and fully reverted.
    RolledBack {
        /// Why it was aborted.
        reason: String,
    },
    /// Aborted; some reverts were never confirmed.
    Failed {
        /// What is missing.
        reason: String,
    },
}

impl RolloutState {
    /// The coarse status.
    #[must_use]
    pub fn status(&self) -> RolloutStatus {
        match self {
            RolloutState::Planned => RolloutStatus::Planned,
            RolloutState::Canary => RolloutStatus::Canary,
            RolloutState::Batch { .. } => RolloutStatus::Batch,
            RolloutState::Baking { .. } => RolloutStatus::Baking,
            RolloutState::Paused { .. } => RolloutStatus::Paused,
            RolloutState::Aborting { .. } => RolloutStatus::Aborting,
            RolloutState::Completed => RolloutStatus::Completed,
            RolloutState::RolledBack { .. } => RolloutStatus::RolledBack,
            RolloutState::Failed { .. } => RolloutStatus::Failed,
        }
    }
}

/// Counts of agents by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// Participating agents.
    pub total: u32,
    /// Not yet offered.
    pub pending: u32,
    /// Offered, not installed.
    pub offered: u32,
    /// Installed, not yet healthy.
    pub installed: u32,
    /// Installed and healthy.
    pub healthy: u32,
    /// Failed.
    pub failed: u32,
    /// Told to go back to their previous version.
    pub reverted: u32,
}

/// The persisted part of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RolloutData {
    id: RolloutId,
    spec: RolloutSpec,
    created_at: Timestamp,
    /// Latest `now` seen; time never runs backwards inside the engine.
    clock: Timestamp,
    /// Number of events applied.
    sequence: u64,
    state: RolloutState,
    agents: Vec<AgentProgress>,
    waves: Vec<Wave>,
    skipped: Vec<SkippedAgent>,
    /// Agents told to revert that have not confirmed yet (kept in step with the agent list).
    pending_reverts: u32,
}

/// A staged rollout of one package version to a set of agents. See the [module docs](self).
///
/// Serialises to (and deserialises from) its full state, so a rollout reloaded from the store
/// continues exactly where it stopped.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use opamp_rollout::{AgentSnapshot, Command, Event, LabelSelector, Rollout, RolloutId,
///     RolloutSpec, RolloutStatus, Timestamp};
/// use opamp_proto::InstanceUid;
///
/// let fleet: Vec<AgentSnapshot> = (0..20u8)
///     .map(|i| AgentSnapshot::new(InstanceUid::from([i; 16]), Default::default(),
///         Some("0.114.0".into())))
///     .collect();
/// let spec = RolloutSpec::new("otelcol-contrib", "0.115.0", LabelSelector::all(), "alice")
///     .bake_time(Duration::from_secs(60));
/// let mut now = Timestamp::from_millis(1_000);
/// let mut rollout = Rollout::plan(RolloutId::new("r1"), spec, &fleet, now)?;
///
/// let commands = rollout.handle(Event::Start { by: "alice".into() }, now)?;
/// let canaries: Vec<InstanceUid> = commands.iter().filter_map(|c| match c {
///     Command::Offer { uid, .. } => Some(*uid),
///     _ => None,
/// }).collect();
/// assert_eq!(canaries.len(), 1); // 5 % of 20, at least one
///
/// // The canary installs and turns healthy; the wave then bakes for a minute.
/// // The canary reports the install together with the health it read afterwards.
/// let installed = Event::AgentInstalled {
///     uid: canaries[0],
///     version: "0.115.0".into(),
///     healthy: Some(true),
/// };
/// rollout.handle(installed, now)?;
/// assert_eq!(rollout.status(), RolloutStatus::Baking);
///
/// now = rollout.poll_timeout().expect("bake deadline");
/// let commands = rollout.handle(Event::Timeout, now)?;
/// let first_batch = commands.iter().filter(|c| matches!(c, Command::Offer { .. })).count();
/// assert_eq!(first_batch, 5); // batches of 25 % of the 19 others, rounded up
/// # Ok::<(), opamp_rollout::RolloutError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rollout {
    data: RolloutData,
    /// Instance uid to agent index; rebuilt on load.
    index: HashMap<InstanceUid, u32>,
    /// Pending per-agent deadlines `(when, agent index)`; rebuilt on load.
    deadlines: BTreeSet<(Timestamp, u32)>,
}

impl PartialEq for Rollout {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl Serialize for Rollout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rollout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let data = RolloutData::deserialize(deserializer)?;
        Rollout::from_data(data).map_err(serde::de::Error::custom)
    }
}

impl Rollout {
    /// Rebuilds the indexes and checks the waves cover the agent list.
    fn from_data(mut data: RolloutData) -> Result<Self, String> {
        let pending = data.agents.iter().filter(|a| a.revert_pending()).count();
        data.pending_reverts = u32::try_from(pending).map_err(|_| "too many agents".to_owned())?;
        let count = u32::try_from(data.agents.len()).map_err(|_| "too many agents".to_owned())?;
        let mut expected_start = 0;
        for wave in &data.waves {
            if wave.start != expected_start || wave.end <= wave.start || wave.end > count {
                return Err(format!(
                    "wave {}..{} does not tile {count} agents",
                    wave.start, wave.end
                ));
            }
            expected_start = wave.end;
        }
        if expected_start != count {
            return Err("waves do not cover every agent".to_owned());
        }
        let mut index = HashMap::with_capacity(data.agents.len());
        let mut deadlines = BTreeSet::new();
        for (i, agent) in (0u32..).zip(&data.agents) {
            if index.insert(agent.uid, i).is_some() {
                return Err(format!("agent {} listed twice", agent.uid));
            }
            if let Some(deadline) = agent.deadline {
                deadlines.insert((deadline, i));
            }
        }
        Ok(Rollout {
            data,
            index,
            deadlines,
        })
    }

    /// The rollout id.
    #[must_use]
    pub fn id(&self) -> &RolloutId {
        &self.data.id
    }

    /// What was asked for.
    #[must_use]
    pub fn spec(&self) -> &RolloutSpec {
        &self.data.spec
    }

    /// When it was planned.
    #[must_use]
    pub fn created_at(&self) -> Timestamp {
        self.data.created_at
    }

    /// Number of events applied so far (the store uses it to order its event log).
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.data.sequence
    }

    /// The full state.
    #[must_use]
    pub fn state(&self) -> &RolloutState {
        &self.data.state
    }

    /// The coarse status.
    #[must_use]
    pub fn status(&self) -> RolloutStatus {
        self.data.state.status()
    }

    /// Whether nothing more will happen.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.status().is_terminal()
    }

    /// Participating agents, wave by wave.
    #[must_use]
    pub fn agents(&self) -> &[AgentProgress] {
        &self.data.agents
    }

    /// One participating agent.
    #[must_use]
    pub fn agent(&self, uid: &InstanceUid) -> Option<&AgentProgress> {
        let index = *self.index.get(uid)?;
        self.data.agents.get(index as usize)
    }

    /// The waves (0 = canary).
    #[must_use]
    pub fn waves(&self) -> &[Wave] {
        &self.data.waves
    }

    /// Agents of wave `wave`.
    #[must_use]
    pub fn wave_agents(&self, wave: u32) -> &[AgentProgress] {
        self.data
            .waves
            .get(wave as usize)
            .map_or(&[], |w| &self.data.agents[w.start as usize..w.end as usize])
    }

    /// The version of the rollout's package that `uid` should be offered now: the target once
    /// its wave started, its previous version once reverted, `None` while it waits for its
    /// wave or when it is not part of the rollout.
    ///
    /// A restarted server rebuilds each agent's `PackagesAvailable` from this instead of
    /// replaying old [`Command`]s.
    #[must_use]
    pub fn desired_version(&self, uid: &InstanceUid) -> Option<&str> {
        let agent = self.agent(uid)?;
        if agent.reverted {
            Some(&agent.previous_version)
        } else if agent.was_offered() {
            Some(self.data.spec.target_key())
        } else {
            None
        }
    }

    /// Selected agents left out, with the reason.
    #[must_use]
    pub fn skipped(&self) -> &[SkippedAgent] {
        &self.data.skipped
    }

    /// Counts of agents by phase (walks every agent).
    #[must_use]
    pub fn progress(&self) -> Progress {
        let mut progress = Progress::default();
        for agent in &self.data.agents {
            progress.total += 1;
            match agent.phase {
                AgentPhase::Pending => progress.pending += 1,
                AgentPhase::Offered { .. } => progress.offered += 1,
                AgentPhase::Installed { .. } => progress.installed += 1,
                AgentPhase::Healthy { .. } => progress.healthy += 1,
                AgentPhase::Failed { .. } => progress.failed += 1,
            }
            if agent.reverted {
                progress.reverted += 1;
            }
        }
        progress
    }

    /// The audit record describing the plan, for the store to log when the rollout is created.
    #[must_use]
    pub fn planned_record(&self) -> AuditRecord {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        AuditRecord::new(
            self.data.created_at,
            self.data.id.clone(),
            Actor::Operator(self.data.spec.created_by.clone()),
            AuditAction::Planned {
                package: self.data.spec.package_name.clone(),
                version: self.data.spec.target_version.clone(),
                agents: count(self.data.agents.len()),
                skipped: count(self.data.skipped.len()),
                canaries: self.data.waves.first().map_or(0, Wave::size),
                batches: count(self.data.waves.len().saturating_sub(1)),
            },
        )
    }

    /// The next time at which [`Event::Timeout`] has work to do, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let agent_deadline = || self.deadlines.first().map(|(when, _)| *when);
        match &self.data.state {
            RolloutState::Planned
            | RolloutState::Completed
            | RolloutState::RolledBack { .. }
            | RolloutState::Failed { .. } => None,
            RolloutState::Canary | RolloutState::Batch { .. } | RolloutState::Paused { .. } => {
                agent_deadline()
            }
            RolloutState::Baking { until, .. } => {
                Some(agent_deadline().map_or(*until, |d| d.min(*until)))
            }
            RolloutState::Aborting { deadline, .. } => Some(*deadline),
        }
    }
}

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod tests;
