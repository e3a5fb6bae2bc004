//! The server side of OpAMP for many agents: every agent's [`ServerSession`] keyed by
//! instance uid, the links they arrive on, and their idle deadlines.

mod config;
mod error;
mod event;
mod links;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use opamp_proto::{InstanceUid, v1};

pub use self::config::EndpointConfig;
pub use self::error::EndpointError;
pub use self::event::{ConnectionId, ConnectionParams, DisconnectReason, EndpointEvent};
use crate::{ServerSession, TransportMode, framing};

/// How an agent is reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Over this open WebSocket, which the agent holds (see [`ServerEndpoint`]).
    WebSocket(ConnectionId),
    /// By answering its HTTP polls.
    Http,
    /// Not connected.
    Gone,
}

#[derive(Debug)]
struct Agent {
    /// Boxed: the map of agents grows to twice its count at times, and its empty slots
    /// should cost a pointer rather than a session.
    session: Box<ServerSession>,
    link: Link,
    /// The deadline this agent has in [`ServerEndpoint::deadlines`]: going idle while
    /// connected, being forgotten while gone.
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct Connection {
    params: ConnectionParams,
    /// Agents whose link is this WebSocket.
    agents: BTreeSet<InstanceUid>,
    /// When set, the only uids this connection may speak for.
    allowed: Option<HashSet<InstanceUid>>,
}

/// The server side of OpAMP for a whole fleet, as a state machine without IO (in the
/// style of quinn's `Endpoint` and str0m's `Rtc`).
///
/// The caller owns the sockets and names each connection with a [`ConnectionId`]:
///
/// 1. [`open_connection`](Self::open_connection) when a WebSocket opens or an HTTP request
///    arrives; [`handle`](Self::handle) (or [`handle_bytes`](Self::handle_bytes)) for every
///    message; [`close_connection`](Self::close_connection) when the socket closes or the
///    HTTP answer was sent; [`handle_timeout`](Self::handle_timeout) when
///    [`poll_timeout`](Self::poll_timeout) passed.
/// 2. Drain [`poll_transmit`](Self::poll_transmit) (send each message on its connection)
///    and [`poll_event`](Self::poll_event).
/// 3. Talk to agents with [`with_session`](Self::with_session): offers queued there go out
///    at once on WebSocket and with the next poll on HTTP.
///
/// # Rules
/// - **Routing.** Messages are routed by `AgentToServer.instance_uid`, so several agents
///   may share one WebSocket (the spec's multiplexing): each is answered on it with its own
///   `ServerToAgent.instance_uid`.
/// - **Answers.** On HTTP every message gets exactly one answer on its connection, an
///   error response if it was refused. On WebSocket every accepted message is answered
///   once and offers are pushed.
/// - **One holder per uid.** An open WebSocket holds the uids of the agents that spoke on
///   it until it closes, the agent says goodbye or goes idle. Another connection claiming
///   a held uid is refused ([`EndpointError::UidInUse`]) and changes nothing: an agent
///   cannot take over another agent's link or state by copying its uid. An HTTP agent
///   holds no connection: its next request may come over WebSocket (a transport switch
///   keeps the agent's state and offers).
/// - **Uid reassignment.** After [`ServerSession::assign_instance_uid`] (through
///   [`with_session`](Self::with_session)) messages with the new uid reach the same
///   session; when the agent switches, the agent is re-keyed
///   ([`EndpointEvent::UidReassigned`]) and its old uid stays an alias.
/// - **Idle agents.** An agent silent for [`EndpointConfig::idle_bound`] of its
///   heartbeat or poll interval is disconnected ([`DisconnectReason::Idle`]); one gone for
///   [`EndpointConfig::forget_after`] is forgotten.
/// - **Identity.** [`restrict_connection`](Self::restrict_connection) limits a connection
///   to the uids its credentials prove (for example from a client certificate).
///
/// ```
/// use std::time::Instant;
/// use opamp_proto::{v1, InstanceUid};
/// use opamp_session::{ConnectionId, ConnectionParams, EndpointConfig, EndpointEvent, ServerEndpoint, TransportMode};
///
/// let mut endpoint = ServerEndpoint::new(EndpointConfig::default());
/// let now = Instant::now();
/// let socket = ConnectionId(1);
/// endpoint.open_connection(now, socket, ConnectionParams::new(TransportMode::WebSocket));
/// // Two agents share one WebSocket.
/// let (a, b) = (InstanceUid::new_v7(), InstanceUid::new_v7());
/// for uid in [a, b] {
///     let hello = v1::AgentToServer { instance_uid: uid.to_vec(), ..Default::default() };
///     endpoint.handle(now, socket, hello)?;
/// }
/// let mut answered = Vec::new();
/// while let Some((connection, message)) = endpoint.poll_transmit() {
///     assert_eq!(connection, socket);
///     answered.push(InstanceUid::from_slice(&message.instance_uid).unwrap());
/// }
/// assert!(answered.contains(&a) && answered.contains(&b));
/// assert_eq!(endpoint.connected().count(), 2);
/// # Ok::<(), opamp_session::EndpointError>(())
/// ```
#[derive(Debug)]
pub struct ServerEndpoint {
    config: EndpointConfig,
    agents: HashMap<InstanceUid, Agent>,
    /// Other uids that reach an agent: uids assigned but not used yet, and uids an agent
    /// used before switching.
    aliases: HashMap<InstanceUid, InstanceUid>,
    connections: HashMap<ConnectionId, Connection>,
    deadlines: BTreeSet<(Instant, InstanceUid)>,
    transmits: VecDeque<(ConnectionId, v1::ServerToAgent)>,
    events: VecDeque<EndpointEvent>,
}

impl ServerEndpoint {
    /// An endpoint without agents or connections.
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            agents: HashMap::new(),
            aliases: HashMap::new(),
            connections: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    // ----- connections ----------------------------------------------------------------

    /// A connection opened: a WebSocket after its upgrade, or an HTTP request. Opening an
    /// id that is still open closes the old connection first.
    pub fn open_connection(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        params: ConnectionParams,
    ) {
        if self.connections.contains_key(&connection) {
            self.close_connection(now, connection);
        }
        self.connections.insert(
            connection,
            Connection {
                params,
                agents: BTreeSet::new(),
                allowed: None,
            },
        );
    }

    /// Limits a connection to speaking for these uids (for example the ones its client
    /// certificate names). Messages for other uids are refused with
    /// [`EndpointError::NotAuthorized`].
    ///
    /// # Errors
    /// [`EndpointError::UnknownConnection`] if the connection is not open.
    pub fn restrict_connection(
        &mut self,
        connection: ConnectionId,
        uids: impl IntoIterator<Item = InstanceUid>,
    ) -> Result<(), EndpointError> {
        let open = self
            .connections
            .get_mut(&connection)
            .ok_or(EndpointError::UnknownConnection(connection))?;
        open.allowed = Some(uids.into_iter().collect());
        Ok(())
    }

    /// A connection closed. Agents held by it (WebSocket) are disconnected; HTTP agents
    /// stay connected until they go idle.
    pub fn close_connection(&mut self, now: Instant, connection: ConnectionId) {
        let Some(closed) = self.connections.remove(&connection) else {
            return;
        };
        for uid in closed.agents {
            if self
                .agents
                .get(&uid)
                .is_some_and(|agent| agent.link == Link::WebSocket(connection))
            {
                self.disconnect(uid, DisconnectReason::ConnectionClosed, now);
            }
        }
    }

    // ----- messages -------------------------------------------------------------------

    /// Decodes bytes received on `connection` (a WebSocket binary message with its `0x00`
    /// header, or a decompressed HTTP body) and handles the message.
    ///
    /// # Errors
    /// As [`handle`](Self::handle); undecodable bytes are [`EndpointError::Session`] with
    /// [`crate::SessionError::Decode`] and are answered with an error response.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        bytes: &[u8],
    ) -> Result<(), EndpointError> {
        let mode = self.connection_mode(connection)?;
        match framing::decode_agent_message(mode, bytes, &self.config.session.limits.codec) {
            Ok(message) => self.handle(now, connection, message),
            Err(error) => {
                let reason = error.to_string();
                self.refuse(connection, None, reason);
                Err(EndpointError::Session(error))
            }
        }
    }

    /// Handles one message received on `connection` and queues its answer.
    ///
    /// # Errors
    /// [`EndpointError`] says why the message was refused; the connection and every agent
    /// stay usable. Except for [`EndpointError::UnknownConnection`], the refusal was
    /// answered with an error response.
    pub fn handle(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        message: v1::AgentToServer,
    ) -> Result<(), EndpointError> {
        let open = self
            .connections
            .get(&connection)
            .ok_or(EndpointError::UnknownConnection(connection))?;
        let mode = open.params.mode;
        let Ok(uid) = InstanceUid::from_slice(&message.instance_uid) else {
            let error = EndpointError::InvalidInstanceUid {
                len: message.instance_uid.len(),
            };
            self.refuse(connection, None, error.to_string());
            return Err(error);
        };
        let key = self.resolve(uid).unwrap_or(uid);
        if let Some(allowed) = &open.allowed
            && !allowed.contains(&uid)
            && !allowed.contains(&key)
        {
            let error = EndpointError::NotAuthorized { uid, connection };
            self.refuse(connection, Some(uid), error.to_string());
            return Err(error);
        }
        if let Some(Link::WebSocket(holder)) = self.agents.get(&key).map(|agent| agent.link)
            && holder != connection
        {
            let error = EndpointError::UidInUse {
                uid,
                holder,
                connection,
            };
            tracing::warn!(%error, "refusing a second connection for a held instance uid");
            self.refuse(connection, Some(uid), error.to_string());
            return Err(error);
        }
        let endpoint_url = open.params.endpoint_url.clone();
        let goodbye = message.agent_disconnect.is_some();
        let newly_linked = self.link(now, key, connection, mode, endpoint_url);
        let events_before = self.events.len();

        let agent = self
            .agents
            .get_mut(&key)
            .ok_or(EndpointError::UnknownConnection(connection))?;
        let result = agent.session.handle_message(message, now);
        match mode {
            TransportMode::WebSocket => {
                while let Some(answer) = agent.session.poll_transmit(now) {
                    self.transmits.push_back((connection, answer));
                }
            }
            TransportMode::HttpPolling => {
                // HTTP needs exactly one answer, even when the session has nothing to say.
                let answer =
                    agent
                        .session
                        .poll_transmit(now)
                        .unwrap_or_else(|| v1::ServerToAgent {
                            instance_uid: key.to_vec(),
                            ..Default::default()
                        });
                self.transmits.push_back((connection, answer));
            }
        }
        let key = self.drain_session(key);
        if result.is_ok() && goodbye {
            // The session already ended its connection; only the link is left to drop.
            self.unlink(key, None);
            self.events.push_back(EndpointEvent::Disconnected {
                uid: key,
                reason: DisconnectReason::AgentDisconnect,
            });
            self.set_deadline(key, self.config.forget_after.map(|after| now + after));
        } else {
            // Only an accepted message shows the agent alive: refused ones (a stale uid, an
            // absurd sequence number) must not keep a silent agent connected.
            if result.is_ok() || newly_linked {
                let bound = self.idle_bound(key);
                self.set_deadline(key, bound.map(|bound| now + bound));
            }
            if result.is_ok() && !newly_linked && self.events.len() == events_before {
                self.events.push_back(EndpointEvent::Heartbeat { uid: key });
            }
        }
        result.map_err(EndpointError::from)
    }

    /// Disconnects idle agents and forgets long-gone ones whose deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, uid)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(agent) = self.agents.get_mut(&uid) else {
                continue;
            };
            agent.deadline = None;
            if agent.link == Link::Gone {
                self.remove(uid);
            } else {
                tracing::info!(%uid, "agent silent beyond its idle bound; disconnected");
                self.disconnect(uid, DisconnectReason::Idle, now);
            }
        }
    }

    // ----- talking to agents ----------------------------------------------------------

    /// Runs `f` on an agent's session (found by its current uid or an alias) and queues
    /// what it now wants to push; `None` when the agent is unknown.
    pub fn with_session<R>(
        &mut self,
        now: Instant,
        uid: InstanceUid,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Option<R> {
        let key = self.resolve(uid)?;
        let agent = self.agents.get_mut(&key)?;
        let result = f(&mut agent.session);
        if let Some(assigned) = agent.session.assigned_instance_uid()
            && assigned != key
        {
            if self.agents.contains_key(&assigned) {
                tracing::warn!(%key, %assigned, "assigned instance uid belongs to another agent");
            } else {
                self.aliases.insert(assigned, key);
            }
        }
        self.flush(now, key);
        Some(result)
    }

    /// Forgets an agent: drops its session and state. A WebSocket left without agents is
    /// reported with [`EndpointEvent::CloseConnection`]. Returns whether it was known.
    pub fn forget(&mut self, now: Instant, uid: InstanceUid) -> bool {
        let Some(key) = self.resolve(uid) else {
            return false;
        };
        if self
            .agents
            .get(&key)
            .is_some_and(|agent| agent.link != Link::Gone)
        {
            self.disconnect(key, DisconnectReason::Forgotten, now);
        }
        self.remove(key);
        true
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next message to send, and the connection to send it on.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(ConnectionId, v1::ServerToAgent)> {
        self.transmits.pop_front()
    }

    /// Like [`poll_transmit`](Self::poll_transmit), framed for the connection's transport.
    /// Messages for connections closed since are dropped.
    #[must_use]
    pub fn poll_transmit_bytes(&mut self) -> Option<(ConnectionId, Vec<u8>)> {
        while let Some((connection, message)) = self.transmits.pop_front() {
            if let Some(open) = self.connections.get(&connection) {
                return Some((
                    connection,
                    framing::encode_server_message(open.params.mode, &message),
                ));
            }
        }
        None
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    // ----- getters --------------------------------------------------------------------

    /// An agent's session, by its current uid or an alias.
    pub fn session(&self, uid: InstanceUid) -> Option<&ServerSession> {
        self.agents
            .get(&self.resolve(uid)?)
            .map(|agent| &*agent.session)
    }

    /// Every known agent's current uid.
    pub fn agents(&self) -> impl Iterator<Item = InstanceUid> + '_ {
        self.agents.keys().copied()
    }

    /// Agents currently connected.
    pub fn connected(&self) -> impl Iterator<Item = InstanceUid> + '_ {
        self.agents
            .iter()
            .filter(|(_, agent)| agent.link != Link::Gone)
            .map(|(uid, _)| *uid)
    }

    /// The WebSocket an agent is held by, if it is connected over one.
    pub fn connection_of(&self, uid: InstanceUid) -> Option<ConnectionId> {
        match self.agents.get(&self.resolve(uid)?)?.link {
            Link::WebSocket(connection) => Some(connection),
            Link::Http | Link::Gone => None,
        }
    }

    /// The agents a WebSocket holds.
    pub fn agents_on(&self, connection: ConnectionId) -> impl Iterator<Item = InstanceUid> + '_ {
        self.connections
            .get(&connection)
            .into_iter()
            .flat_map(|open| open.agents.iter().copied())
    }

    /// Number of known agents, connected or not.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The deadline by which a connected agent must be heard from, if it has one.
    pub fn idle_deadline(&self, uid: InstanceUid) -> Option<Instant> {
        let agent = self.agents.get(&self.resolve(uid)?)?;
        (agent.link != Link::Gone)
            .then_some(agent.deadline)
            .flatten()
    }
}
