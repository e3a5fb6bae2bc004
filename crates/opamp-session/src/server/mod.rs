//! The server side of an OpAMP connection, one session per agent.

mod config;
mod event;
mod inbox;
mod outbox;
mod state;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use opamp_proto::{InstanceUid, ServerCapabilities, v1};

pub use self::config::ServerSessionConfig;
pub use self::event::ServerEvent;
use self::outbox::Standing;
pub use self::state::AgentState;
use crate::{SessionError, TransportMode};

/// How many times in a row the server repeats `ReportFullState` when the agent's answers
/// carry no description. Repeating repairs a lost request; the cap stops a ping-pong with
/// an agent whose full reports legitimately lack a description.
const MAX_FULL_STATE_REQUESTS: u32 = 8;

/// Delivered assignments remembered after a newer one replaced them.
const MAX_SUPERSEDED_UIDS: usize = 4;

/// The server side of OpAMP for one agent, as a state machine without IO.
///
/// Feed it what the agent sends ([`handle_message`](Self::handle_message) or
/// [`handle_bytes`](Self::handle_bytes)), queue what the server wants the agent to have
/// (`offer_*`, [`send_command`](Self::send_command), ...), and drain
/// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event) after every
/// input. The session answers every agent message, asks for a full report when it
/// detects missing messages, and holds offers back until the agent's capabilities allow
/// them.
///
/// ```
/// use std::time::Instant;
/// use opamp_proto::{v1, AgentCapabilities, InstanceUid, ServerCapabilities, ServerToAgentFlags};
/// use opamp_session::{ServerSessionConfig, ServerEvent, ServerSession};
///
/// let config = ServerSessionConfig::new(ServerCapabilities::OFFERS_PACKAGES);
/// let mut server = ServerSession::new(config);
/// let now = Instant::now();
/// // An agent the server never saw, sending a compressed message: ask for everything.
/// server.handle_message(v1::AgentToServer {
///     instance_uid: InstanceUid::new_v7().to_vec(),
///     sequence_num: 7,
///     capabilities: AgentCapabilities::REPORTS_STATUS.bits(),
///     ..Default::default()
/// }, now)?;
/// let reply = server.poll_transmit(now).expect("every message is answered");
/// assert!(ServerToAgentFlags::from_wire(reply.flags).contains(ServerToAgentFlags::REPORT_FULL_STATE));
/// assert_ne!(reply.capabilities, 0, "the first answer carries the server's capabilities");
/// assert!(matches!(server.poll_event(), Some(ServerEvent::Connected { .. })));
/// # Ok::<(), opamp_session::SessionError>(())
/// ```
#[derive(Debug)]
pub struct ServerSession {
    config: ServerSessionConfig,
    state: AgentState,
    /// A message of this connection arrived.
    greeted: bool,
    /// The server's capabilities went out on this connection.
    capabilities_sent: bool,
    /// Messages received and not yet answered.
    responses_due: usize,
    /// `ReportFullState` must go in the next answer.
    full_state_flag_due: bool,
    /// Waiting for the full report asked for; counts the requests made so far.
    awaiting_full_state: Option<u32>,
    heartbeat_offer_due: bool,
    /// The heartbeat interval sent to the agent (zero: heartbeats disabled).
    delivered_heartbeat: Option<std::time::Duration>,
    bad_requests: VecDeque<String>,
    packages: Standing<v1::PackagesAvailable>,
    remote_config: Standing<v1::AgentRemoteConfig>,
    /// Boxed: the offers are 1.2 KiB inline, rarely set, and every agent's session would
    /// pay for them.
    connection_settings: Option<Box<v1::ConnectionSettingsOffers>>,
    command: Option<v1::ServerToAgentCommand>,
    custom_messages: VecDeque<v1::CustomMessage>,
    custom_capabilities_due: bool,
    /// A uid the server assigned: `Some((uid, delivered))`.
    assigned_uid: Option<(InstanceUid, bool)>,
    /// The uid the agent used before switching to an assigned one.
    previous_uid: Option<InstanceUid>,
    /// Assigned uids a newer assignment replaced after they were delivered: the agent
    /// may already use one while the newer assignment is on its way.
    superseded_uids: Vec<InstanceUid>,
    /// HTTP: the answer to an `agent_disconnect` request is a bare acknowledgement.
    goodbye_due: bool,
    uid_request_reported: bool,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// A session for an agent the server knows nothing about.
    pub fn new(config: ServerSessionConfig) -> Self {
        Self::with_agent_state(config, AgentState::default())
    }

    /// A session that resumes from a state the server kept (for example in its store).
    /// Sequence numbers continue from [`AgentState::last_sequence_num`].
    pub fn with_agent_state(mut config: ServerSessionConfig, mut state: AgentState) -> Self {
        config.capabilities =
            (config.capabilities | ServerCapabilities::ACCEPTS_STATUS) & ServerCapabilities::all();
        state.connected = false;
        Self {
            heartbeat_offer_due: config.heartbeat_interval.is_some(),
            delivered_heartbeat: None,
            custom_capabilities_due: config.custom_capabilities.is_some(),
            config,
            state,
            greeted: false,
            capabilities_sent: false,
            responses_due: 0,
            full_state_flag_due: false,
            awaiting_full_state: None,
            bad_requests: VecDeque::new(),
            packages: Standing::default(),
            remote_config: Standing::default(),
            connection_settings: None,
            command: None,
            custom_messages: VecDeque::new(),
            assigned_uid: None,
            previous_uid: None,
            superseded_uids: Vec::new(),
            goodbye_due: false,
            uid_request_reported: false,
            events: VecDeque::new(),
        }
    }

    // ----- inputs -------------------------------------------------------------------

    /// Processes raw bytes: a WebSocket binary message (with its `0x00` header) or an
    /// HTTP request body, depending on [`ServerSessionConfig::mode`]. Undecodable bytes are
    /// answered with `BAD_REQUEST`.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), SessionError> {
        let limits = &self.config.limits.codec;
        match crate::framing::decode_agent_message(self.config.mode, bytes, limits) {
            Ok(msg) => self.handle_message(msg, now),
            Err(err) => {
                self.refuse(&err);
                Err(err)
            }
        }
    }

    /// Processes one decoded `AgentToServer` and queues the answer.
    ///
    /// A refused message (wrong uid, absurd sequence number, oversized maps) changes no
    /// state; it is answered with a `BAD_REQUEST` error response and the session goes on.
    pub fn handle_message(
        &mut self,
        msg: v1::AgentToServer,
        now: Instant,
    ) -> Result<(), SessionError> {
        match self.accept(msg, now) {
            Ok(()) => Ok(()),
            Err(err) => {
                self.refuse(&err);
                Err(err)
            }
        }
    }

    /// The transport closed (WebSocket), or an HTTP agent is considered gone. Offers
    /// already delivered are delivered again if the agent comes back on this session.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if self.state.connected {
            self.state.connected = false;
            self.events.push_back(ServerEvent::Disconnected {
                instance_uid: self.state.instance_uid,
                by_agent: false,
            });
        }
        self.reset_connection();
    }

    // ----- what the server wants the agent to have ------------------------------------

    /// Sets the packages the agent should have. Sent once the agent declared
    /// `ACCEPTS_PACKAGES` (and the server `OFFERS_PACKAGES`), and again whenever the agent
    /// reports a `server_provided_all_packages_hash` different from this offer's
    /// `all_packages_hash`.
    pub fn offer_packages(&mut self, offer: v1::PackagesAvailable) {
        self.packages.set(offer);
    }

    /// Sets the remote configuration. Sent once the agent declared
    /// `ACCEPTS_REMOTE_CONFIG` (and the server `OFFERS_REMOTE_CONFIG`), and again whenever
    /// the agent reports a `last_remote_config_hash` different from `config_hash`.
    pub fn offer_remote_config(&mut self, config: v1::AgentRemoteConfig) {
        self.remote_config.set(config);
    }

    /// Queues connection settings offers, sent once when the server declares
    /// `OFFERS_CONNECTION_SETTINGS` and the agent accepts some kind of connection
    /// settings. A newer call replaces an undelivered offer.
    pub fn offer_connection_settings(&mut self, offers: v1::ConnectionSettingsOffers) {
        self.connection_settings = Some(Box::new(offers));
    }

    /// Queues a command, sent alone (as the spec requires) once the agent declared
    /// `ACCEPTS_RESTART_COMMAND`.
    pub fn send_command(&mut self, command: v1::ServerToAgentCommand) {
        self.command = Some(command);
    }

    /// Queues a custom message, sent once the agent declared its custom capability.
    pub fn send_custom_message(&mut self, message: v1::CustomMessage) -> Result<(), SessionError> {
        let limit = self.config.limits.max_pending_custom_messages;
        if self.custom_messages.len() >= limit {
            return Err(SessionError::CustomMessageQueueFull { limit });
        }
        self.custom_messages.push_back(message);
        Ok(())
    }

    /// Gives the agent a new instance uid (`AgentIdentification.new_instance_uid`).
    /// Messages with the old uid stay accepted until the agent switches.
    pub fn assign_instance_uid(&mut self, uid: InstanceUid) {
        if let Some((earlier, true)) = self.assigned_uid
            && earlier != uid
        {
            // Bounded: an agent only ever uses the newest few.
            if self.superseded_uids.len() >= MAX_SUPERSEDED_UIDS {
                self.superseded_uids.remove(0);
            }
            self.superseded_uids.push(earlier);
        }
        self.assigned_uid = Some((uid, false));
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next message for the agent, if one is owed or may be pushed now.
    ///
    /// Every received message gets exactly one answer. On WebSocket the session also
    /// pushes offers as soon as the agent's capabilities allow; on HTTP it only answers.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<v1::ServerToAgent> {
        let push =
            self.config.mode == TransportMode::WebSocket && self.greeted && self.has_sendable();
        if self.responses_due == 0 && !push {
            return None;
        }
        self.responses_due = self.responses_due.saturating_sub(1);
        Some(self.build_message())
    }

    /// Like [`poll_transmit`](Self::poll_transmit), encoded for the transport: a
    /// WebSocket binary message (`0x00` header + protobuf) or an HTTP response body.
    #[must_use]
    pub fn poll_transmit_bytes(&mut self, now: Instant) -> Option<Vec<u8>> {
        let msg = self.poll_transmit(now)?;
        Some(crate::framing::encode_server_message(
            self.config.mode,
            &msg,
        ))
    }

    /// The next event for the server, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 0 {
            // Drained: an idle agent's session keeps no buffer from its last burst.
            self.events = VecDeque::new();
        }
        event
    }

    // ----- getters ----------------------------------------------------------------------

    /// The merged, last known full state of the agent.
    pub fn agent_state(&self) -> &AgentState {
        &self.state
    }

    /// The session's configuration.
    pub fn config(&self) -> &ServerSessionConfig {
        &self.config
    }

    /// Whether the server is still waiting for a full report it asked for.
    pub fn is_awaiting_full_state(&self) -> bool {
        self.awaiting_full_state.is_some()
    }

    /// The heartbeat interval the agent was sent (in whole seconds, as the protocol
    /// carries it; zero means heartbeats were disabled), once an offer went out.
    pub fn delivered_heartbeat_interval(&self) -> Option<std::time::Duration> {
        self.delivered_heartbeat
    }

    /// The uid given with [`assign_instance_uid`](Self::assign_instance_uid) that the
    /// agent has not switched to yet.
    pub fn assigned_instance_uid(&self) -> Option<InstanceUid> {
        self.assigned_uid.map(|(uid, _)| uid)
    }

    /// The agent now talks over another transport (it switched between WebSocket and
    /// HTTP): the old connection ends, the agent's state and standing offers stay, and
    /// answers follow the new transport's rules.
    pub fn switch_transport(&mut self, mode: TransportMode, now: Instant) {
        self.handle_disconnected(now);
        self.config.mode = mode;
    }

    /// Sets the URL agents reach this server at, offered as
    /// `OpAMPConnectionSettings.destination_endpoint` when no
    /// [`ServerSessionConfig::opamp_endpoint`] is configured. The endpoint sets it from the
    /// connection an agent arrived on.
    pub fn set_opamp_endpoint(&mut self, url: impl Into<String>) {
        self.config.opamp_endpoint = Some(url.into());
    }

    // ----- internals ------------------------------------------------------------------

    fn reset_connection(&mut self) {
        self.greeted = false;
        self.capabilities_sent = false;
        self.responses_due = 0;
        self.goodbye_due = false;
        self.heartbeat_offer_due = self.config.heartbeat_interval.is_some();
        self.custom_capabilities_due = self.config.custom_capabilities.is_some();
        self.packages.sent = false;
        self.remote_config.sent = false;
        self.bad_requests.clear();
    }

    fn refuse(&mut self, err: &SessionError) {
        tracing::warn!(error = %err, "refusing an agent message");
        self.bad_requests.push_back(err.to_string());
        self.responses_due = match self.config.mode {
            TransportMode::WebSocket => self.responses_due.saturating_add(1),
            TransportMode::HttpPolling => 1,
        };
    }
}
