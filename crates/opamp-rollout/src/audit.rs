//! Audit records: who did what to which rollout, and every install result per agent.

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

use crate::failure::FailureReason;
use crate::id::RolloutId;
use crate::time::Timestamp;

/// Who caused an audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Actor {
    /// A named operator (admin API token owner or CLI user).
    Operator(String),
    /// An agent's own report.
    Agent(InstanceUid),
    /// The engine itself (timeouts, budget checks, wave progress).
    Engine,
    /// A network peer that did not prove who it is (for example one refused for claiming
    /// an agent's instance uid).
    Peer {
        /// Its address, `ip:port`.
        address: String,
    },
}

/// The rollout id under which records not tied to a rollout are filed (agent identity:
/// enrollments, enrollment tokens, refused impersonations, restarts).
pub const FLEET_RECORDS: &str = "fleet";

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[non_exhaustive]
pub enum AuditAction {
    /// The rollout was planned.
    Planned {
        /// Package name.
        package: String,
        /// Target version.
        version: String,
        /// Agents that take part.
        agents: u32,
        /// Agents matched by the selector but left alone.
        skipped: u32,
        /// Agents in the canary wave.
        canaries: u32,
        /// Number of batch waves after the canaries.
        batches: u32,
    },
    /// An operator started the rollout.
    Started,
    /// The operator accepted agents running versions the catalog does not have: the server
    /// will not revert them (their supervisors still roll back locally).
    AdoptedVersions {
        /// The versions.
        versions: Vec<String>,
    },
    /// A failed or aborted agent was not offered its previous version: it is an adopted
    /// version the catalog does not have, or one the agent would refuse (`reason`).
    AgentNotReverted {
        /// The agent.
        uid: InstanceUid,
        /// The version the server could not offer back.
        version: String,
        /// Why, when it is not an adopted version.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// An operator paused it.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// An operator, or the engine after a failure, aborted it.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Offers went out to a wave (0 is the canary wave).
    WaveStarted {
        /// Wave index.
        wave: u32,
        /// Agents in the wave.
        agents: u32,
    },
    /// Every agent of the wave installed and reported healthy (or failed within budget).
    WaveSettled {
        /// Wave index.
        wave: u32,
        /// Failed agents in the wave.
        failed: u32,
    },
    /// The wave stayed healthy for the bake time.
    WaveBaked {
        /// Wave index.
        wave: u32,
    },
    /// An agent reported a version of the package installed.
    AgentInstalled {
        /// The agent.
        uid: InstanceUid,
        /// The version.
        version: String,
    },
    /// An agent reported healthy after installing the target.
    AgentHealthy {
        /// The agent.
        uid: InstanceUid,
    },
    /// An agent failed (install error, timeout or unhealthy) and was reverted.
    AgentFailed {
        /// The agent.
        uid: InstanceUid,
        /// Why.
        reason: FailureReason,
    },
    /// A reverted agent confirmed its previous version.
    AgentReverted {
        /// The agent.
        uid: InstanceUid,
        /// The version it is back on.
        version: String,
    },
    /// All waves done.
    Completed,
    /// Every moved agent is back on its previous version.
    RolledBack,
    /// An agent that joined the rollout's selector after it completed was offered its version
    /// (see the fleet server's standing versions).
    AgentCaughtUp {
        /// The agent.
        uid: InstanceUid,
        /// The version offered.
        version: String,
    },
    /// The rollback did not complete.
    Failed {
        /// Why.
        reason: String,
    },
    /// An operator sent the `Restart` command to these agents (filed under
    /// [`FLEET_RECORDS`]).
    RestartSent {
        /// The label selector the operator gave, as text.
        selector: String,
        /// The connected agents that accept the command and were sent it.
        agents: Vec<InstanceUid>,
    },
    /// A connection claimed an agent's instance uid it may not speak for, and was refused
    /// (filed under [`FLEET_RECORDS`]).
    ImpersonationRefused {
        /// The uid it claimed.
        uid: InstanceUid,
        /// The peer's address.
        peer: String,
        /// The subject of its client certificate, when it presented one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate_subject: Option<String>,
        /// Why it was refused.
        reason: String,
    },
    /// An operator created a one-time enrollment token (filed under [`FLEET_RECORDS`]).
    EnrollmentTokenCreated {
        /// When the token stops being valid.
        expires_at: crate::time::Timestamp,
    },
    /// An agent spent an enrollment token and received its credential (filed under
    /// [`FLEET_RECORDS`]).
    AgentEnrolled {
        /// The agent.
        uid: InstanceUid,
        /// The peer's address.
        peer: String,
    },
    /// A server replica took the coordinator lease and now runs the fleet (several replicas
    /// on one database; filed under [`FLEET_RECORDS`]). The records after it until the next
    /// one were written by this replica.
    CoordinatorLeaseTaken {
        /// The replica's name.
        replica: String,
        /// The lease's fencing token: one more than the previous holder's.
        token: i64,
    },
}

impl AuditAction {
    /// Stable short name (store column).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            AuditAction::Planned { .. } => "planned",
            AuditAction::Started => "started",
            AuditAction::AdoptedVersions { .. } => "adopted_versions",
            AuditAction::AgentNotReverted { .. } => "agent_not_reverted",
            AuditAction::Paused => "paused",
            AuditAction::Resumed => "resumed",
            AuditAction::Aborted { .. } => "aborted",
            AuditAction::WaveStarted { .. } => "wave_started",
            AuditAction::WaveSettled { .. } => "wave_settled",
            AuditAction::WaveBaked { .. } => "wave_baked",
            AuditAction::AgentInstalled { .. } => "agent_installed",
            AuditAction::AgentHealthy { .. } => "agent_healthy",
            AuditAction::AgentFailed { .. } => "agent_failed",
            AuditAction::AgentReverted { .. } => "agent_reverted",
            AuditAction::Completed => "completed",
            AuditAction::RolledBack => "rolled_back",
            AuditAction::Failed { .. } => "failed",
            AuditAction::AgentCaughtUp { .. } => "agent_caught_up",
            AuditAction::RestartSent { .. } => "restart_sent",
            AuditAction::ImpersonationRefused { .. } => "impersonation_refused",
            AuditAction::EnrollmentTokenCreated { .. } => "enrollment_token_created",
            AuditAction::AgentEnrolled { .. } => "agent_enrolled",
            AuditAction::CoordinatorLeaseTaken { .. } => "coordinator_lease_taken",
        }
    }

    /// The agent the action is about, if any.
    #[must_use]
    pub fn agent(&self) -> Option<InstanceUid> {
        match self {
            AuditAction::AgentInstalled { uid, .. }
            | AuditAction::AgentHealthy { uid }
            | AuditAction::AgentFailed { uid, .. }
            | AuditAction::AgentReverted { uid, .. }
            | AuditAction::AgentNotReverted { uid, .. }
            | AuditAction::AgentCaughtUp { uid, .. }
            | AuditAction::ImpersonationRefused { uid, .. }
            | AuditAction::AgentEnrolled { uid, .. } => Some(*uid),
            _ => None,
        }
    }
}

/// One append-only audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When (the `now` passed to the engine).
    pub at: Timestamp,
    /// Which rollout.
    pub rollout_id: RolloutId,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: AuditAction,
}

impl AuditRecord {
    /// Builds a record.
    #[must_use]
    pub fn new(at: Timestamp, rollout_id: RolloutId, actor: Actor, action: AuditAction) -> Self {
        AuditRecord {
            at,
            rollout_id,
            actor,
            action,
        }
    }
}
