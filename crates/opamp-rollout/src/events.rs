//! The engine's inputs ([`Event`]) and outputs ([`Command`]).

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;

/// Something that happened, fed to [`Rollout::handle`](crate::Rollout::handle).
///
/// Agent events name agents by instance uid; events about agents that are not part of the
/// rollout are ignored, so a server may broadcast agent events to every active rollout of the
/// package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Event {
    /// An operator starts a planned rollout (offers go to the canaries).
    Start {
        /// Operator identity.
        by: String,
    },
    /// The agent reports `version` of the package installed (`PackageStatus` `Installed`).
    AgentInstalled {
        /// The agent.
        uid: InstanceUid,
        /// The version it now runs.
        version: String,
        /// The health the agent reported together with this status (`None`: not known). An
        /// agent reports an install's outcome together with the health it read afterwards, so
        /// this is the new version's first health reading.
        #[serde(default)]
        healthy: Option<bool>,
    },
    /// The agent reports the install failed (`PackageStatus` `InstallFailed`).
    AgentInstallFailed {
        /// The agent.
        uid: InstanceUid,
        /// The agent's error message.
        error: String,
    },
    /// The agent's health (`ComponentHealth.healthy`) as reported after its last change.
    ///
    /// Only health reported with or after the install report counts for the new version (see
    /// the `healthy` field of [`Event::AgentInstalled`]).
    AgentHealth {
        /// The agent.
        uid: InstanceUid,
        /// Whether it is healthy.
        healthy: bool,
    },
    /// The agent's connection closed (or it stopped polling).
    AgentDisconnected {
        /// The agent.
        uid: InstanceUid,
    },
    /// The agent connected again.
    AgentConnected {
        /// The agent.
        uid: InstanceUid,
    },
    /// Nothing but the clock moved; the driver sends this at [`Rollout::poll_timeout`](crate::Rollout::poll_timeout).
    Timeout,
    /// An operator freezes progress: no new wave starts until [`Event::Resume`].
    Pause {
        /// Operator identity.
        by: String,
    },
    /// An operator lets a paused rollout continue.
    Resume {
        /// Operator identity.
        by: String,
    },
    /// An operator stops the rollout; every agent already offered the target is reverted.
    Abort {
        /// Operator identity.
        by: String,
        /// Why, for the audit log.
        reason: String,
    },
}

impl Event {
    /// A short name for logs and error messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::AgentInstalled { .. } => "agent_installed",
            Event::AgentInstallFailed { .. } => "agent_install_failed",
            Event::AgentHealth { .. } => "agent_health",
            Event::AgentDisconnected { .. } => "agent_disconnected",
            Event::AgentConnected { .. } => "agent_connected",
            Event::Timeout => "timeout",
            Event::Pause { .. } => "pause",
            Event::Resume { .. } => "resume",
            Event::Abort { .. } => "abort",
        }
    }
}

/// The coarse state of a rollout, without its data (what the store indexes and the admin API
/// lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RolloutStatus {
    /// Agents chosen, nothing offered yet.
    Planned,
    /// The canary wave is installing.
    Canary,
    /// A wave is installed and healthy; waiting out the bake time.
    Baking,
    /// A batch wave is installing.
    Batch,
    /// Frozen by an operator.
    Paused,
    /// Reverting the agents already moved; waiting for them to confirm.
    Aborting,
    /// Every wave installed, healthy and baked.
    Completed,
    /// Aborted and every moved agent confirmed its previous version.
    RolledBack,
    /// Aborted, but some moved agents did not confirm their revert in time.
    Failed,
}

impl RolloutStatus {
    /// Stable lower-case name (store column, API).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Planned => "planned",
            RolloutStatus::Canary => "canary",
            RolloutStatus::Baking => "baking",
            RolloutStatus::Batch => "batch",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Aborting => "aborting",
            RolloutStatus::Completed => "completed",
            RolloutStatus::RolledBack => "rolled_back",
            RolloutStatus::Failed => "failed",
        }
    }

    /// Whether nothing more will happen (completed, rolled back or failed).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RolloutStatus::Completed | RolloutStatus::RolledBack | RolloutStatus::Failed
        )
    }
}

impl std::fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Command {
    /// Make `version` the desired version of the rollout's package for this agent (offer it in
    /// `PackagesAvailable`).
    Offer {
        /// The agent.
        uid: InstanceUid,
        /// The target version.
        version: String,
    },
    /// Make the agent's previous version its desired version again (re-offer it).
    Revert {
        /// The agent.
        uid: InstanceUid,
        /// The version the agent ran before the rollout.
        to_version: String,
    },
    /// Append to the audit log.
    Audit(AuditRecord),
    /// The rollout's coarse state changed.
    StateChanged {
        /// Old status.
        from: RolloutStatus,
        /// New status.
        to: RolloutStatus,
    },
}
