//! What a [`crate::ServerEndpoint`] tells its embedding server, and how it names
//! connections.

use opamp_proto::InstanceUid;

use crate::{ServerEvent, TransportMode};

/// One transport connection, named by the caller (a WebSocket, or one HTTP request).
/// The endpoint never invents ids; reusing the id of a closed connection is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection {}", self.0)
    }
}

/// What the endpoint needs to know about a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionParams {
    /// WebSocket (one connection, many messages, pushes allowed) or HTTP (one request,
    /// exactly one answer).
    pub mode: TransportMode,
    /// The URL the agent connected to (for example `wss://host:4320/v1/opamp`), offered
    /// back as `OpAMPConnectionSettings.destination_endpoint`.
    pub endpoint_url: Option<String>,
}

impl ConnectionParams {
    /// A connection of this mode whose URL is unknown.
    pub fn new(mode: TransportMode) -> Self {
        Self {
            mode,
            endpoint_url: None,
        }
    }

    /// Sets the URL the agent connected to.
    #[must_use]
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }
}

/// Why an agent is no longer connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The agent said goodbye (`agent_disconnect`).
    AgentDisconnect,
    /// Its WebSocket closed.
    ConnectionClosed,
    /// Nothing arrived within its idle bound ([`crate::EndpointConfig::idle_bound`]).
    Idle,
    /// It now talks over the other transport (a `Connected` event follows).
    TransportSwitched,
    /// The server forgot it ([`crate::ServerEndpoint::forget`]).
    Forgotten,
}

/// Something the embedding server may act on, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// An agent's first message on a new link (a WebSocket, or HTTP after being unknown
    /// or disconnected) was accepted.
    #[non_exhaustive]
    Connected {
        /// The agent.
        uid: InstanceUid,
        /// The connection it arrived on.
        connection: ConnectionId,
        /// Its transport.
        mode: TransportMode,
    },
    /// The agent's session reported a change ([`ServerEvent`]). Connection lifecycle is
    /// reported by `Connected`/`Disconnected` of this enum instead; the session's
    /// `Disconnected { by_agent: true }` (the agent's goodbye) is passed on here too.
    #[non_exhaustive]
    Agent {
        /// The agent, by its current uid.
        uid: InstanceUid,
        /// What changed.
        event: ServerEvent,
    },
    /// A message that changed nothing arrived (a heartbeat or an idle poll): the agent is
    /// alive. Other messages report their changes as [`EndpointEvent::Agent`] instead.
    #[non_exhaustive]
    Heartbeat {
        /// The agent.
        uid: InstanceUid,
    },
    /// The agent switched to the uid the server assigned; later events use `to`.
    #[non_exhaustive]
    UidReassigned {
        /// The uid it used before.
        from: InstanceUid,
        /// The uid it uses now.
        to: InstanceUid,
    },
    /// The agent is no longer connected.
    #[non_exhaustive]
    Disconnected {
        /// The agent.
        uid: InstanceUid,
        /// Why.
        reason: DisconnectReason,
    },
    /// The agent's session was dropped after [`crate::EndpointConfig::forget_after`].
    #[non_exhaustive]
    Forgotten {
        /// The agent.
        uid: InstanceUid,
    },
    /// A message was refused before reaching any agent's session (see
    /// [`crate::EndpointError`]); it was answered with an error response.
    #[non_exhaustive]
    Refused {
        /// Where it arrived.
        connection: ConnectionId,
        /// The uid it claimed, if it had a valid one.
        uid: Option<InstanceUid>,
        /// Why, in words.
        reason: String,
    },
    /// No agent is left on this WebSocket (all went idle or were forgotten): the caller
    /// should close it.
    #[non_exhaustive]
    CloseConnection {
        /// The connection.
        connection: ConnectionId,
        /// Why its last agent left ([`DisconnectReason::Idle`] or
        /// [`DisconnectReason::Forgotten`]).
        reason: DisconnectReason,
    },
}
