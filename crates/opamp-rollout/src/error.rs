//! The crate's error type.

use opamp_proto::InstanceUid;

use crate::events::RolloutStatus;
use crate::id::RolloutId;

/// Everything the rollout engine and the coordinator refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// A rollout spec field has an unusable value.
    #[error("invalid rollout spec: {field}: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A label selector could not be parsed.
    #[error("invalid label selector {selector:?}: {reason}")]
    InvalidSelector {
        /// The text given.
        selector: String,
        /// What is wrong.
        reason: String,
    },
    /// The fleet snapshot lists the same agent twice.
    #[error("agent {uid} appears twice in the fleet snapshot")]
    DuplicateAgent {
        /// The agent.
        uid: InstanceUid,
    },
    /// After selection and skipping, no agent is left.
    #[error("no agent to roll out to: {selected} selected, {skipped} skipped")]
    NoAgents {
        /// Agents matching the selector.
        selected: usize,
        /// Of those, agents skipped (already at target, no version, unhealthy).
        skipped: usize,
    },
    /// More agents than the engine indexes (u32).
    #[error("{count} agents exceed the engine's limit")]
    TooManyAgents {
        /// The count.
        count: usize,
    },
    /// An operator event does not apply in the rollout's current status.
    #[error("rollout {rollout} is {status}: cannot {event}")]
    InvalidTransition {
        /// The rollout.
        rollout: RolloutId,
        /// Its status.
        status: RolloutStatus,
        /// The rejected event kind.
        event: &'static str,
    },
    /// Another active rollout already covers this package and selector or some of its agents.
    #[error("conflicts with active rollout {active} of {package}: {reason}")]
    Conflict {
        /// The active rollout.
        active: RolloutId,
        /// The package.
        package: String,
        /// Why they conflict.
        reason: String,
    },
    /// The coordinator has no active rollout with this id.
    #[error("no active rollout {rollout}")]
    NotActive {
        /// The rollout asked for.
        rollout: RolloutId,
    },
    /// The rollout has steps the store could not save yet; they are retried first.
    #[error("rollout {rollout} has steps the store could not save yet")]
    Unsaved {
        /// The rollout.
        rollout: RolloutId,
    },
    /// The embedder's store failed; the step it was to save did not happen (the rollout is
    /// as it was before it).
    #[error("rollout store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}
