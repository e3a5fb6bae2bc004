//! The server's merged view of one agent.

use std::time::Instant;

use opamp_proto::{AgentCapabilities, InstanceUid};

use crate::AgentStatus;

/// The last known full state of an agent, rebuilt from compressed reports.
///
/// A server that persists agents can keep this value and hand it to
/// [`crate::ServerSession::with_agent_state`] when the agent comes back.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct AgentState {
    /// The uid the agent uses, once it sent a message.
    pub instance_uid: Option<InstanceUid>,
    /// The capabilities from the agent's latest message.
    pub capabilities: AgentCapabilities,
    /// Merged status sub-messages.
    pub status: AgentStatus,
    /// Sequence number of the latest merged message.
    pub last_sequence_num: Option<u64>,
    /// When the latest message arrived (any message counts as a heartbeat).
    pub last_seen: Option<Instant>,
    /// Whether the agent is connected (between its first message and a disconnect).
    pub connected: bool,
}
