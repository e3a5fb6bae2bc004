//! The server side of an OpAMP connection, one session per agent.

mod config;
mod event;
mod state;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use opamp_proto::{
    AgentCapabilities, AgentToServerFlags, InstanceUid, ServerCapabilities, ServerToAgentFlags,
    codec, v1,
};

pub use self::config::ServerConfig;
pub use self::event::ServerEvent;
pub use self::state::AgentState;
use crate::{SessionError, TransportMode, validate};

/// How many times in a row the server repeats `ReportFullState` when the agent's answers
/// carry no description. Repeating repairs a lost request; the cap stops a ping-pong with
/// an agent whose full reports legitimately lack a description.
const MAX_FULL_STATE_REQUESTS: u32 = 8;

/// An offer the server keeps until it is delivered, and may deliver again.
#[derive(Debug, Clone, Default)]
struct Standing<T> {
    offer: Option<T>,
    sent: bool,
}

impl<T: Clone> Standing<T> {
    fn set(&mut self, offer: T) {
        self.offer = Some(offer);
        self.sent = false;
    }

    fn due(&self) -> bool {
        self.offer.is_some() && !self.sent
    }

    fn take(&mut self) -> Option<T> {
        if self.sent {
            return None;
        }
        self.sent = true;
        self.offer.clone()
    }
}

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
/// use opamp_session::{ServerConfig, ServerEvent, ServerSession};
///
/// let mut server = ServerSession::new(ServerConfig::new(ServerCapabilities::OFFERS_PACKAGES));
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
    config: ServerConfig,
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
    bad_requests: VecDeque<String>,
    packages: Standing<v1::PackagesAvailable>,
    remote_config: Standing<v1::AgentRemoteConfig>,
    connection_settings: Option<v1::ConnectionSettingsOffers>,
    command: Option<v1::ServerToAgentCommand>,
    custom_messages: VecDeque<v1::CustomMessage>,
    custom_capabilities_due: bool,
    /// A uid the server assigned: `Some((uid, delivered))`.
    assigned_uid: Option<(InstanceUid, bool)>,
    /// The uid the agent used before switching to an assigned one.
    previous_uid: Option<InstanceUid>,
    /// HTTP: the answer to an `agent_disconnect` request is a bare acknowledgement.
    goodbye_due: bool,
    uid_request_reported: bool,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// A session for an agent the server knows nothing about.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_agent_state(config, AgentState::default())
    }

    /// A session that resumes from a state the server kept (for example in its store).
    /// Sequence numbers continue from [`AgentState::last_sequence_num`].
    pub fn with_agent_state(mut config: ServerConfig, mut state: AgentState) -> Self {
        config.capabilities =
            (config.capabilities | ServerCapabilities::ACCEPTS_STATUS) & ServerCapabilities::all();
        state.connected = false;
        Self {
            heartbeat_offer_due: config.heartbeat_interval.is_some(),
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
            goodbye_due: false,
            uid_request_reported: false,
            events: VecDeque::new(),
        }
    }

    // ----- inputs -------------------------------------------------------------------

    /// Processes raw bytes: a WebSocket binary message (with its `0x00` header) or an
    /// HTTP request body, depending on [`ServerConfig::mode`]. Undecodable bytes are
    /// answered with `BAD_REQUEST`.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), SessionError> {
        let limits = &self.config.limits.codec;
        let decoded = match self.config.mode {
            TransportMode::WebSocket => codec::decode_ws_frame::<v1::AgentToServer>(bytes, limits),
            TransportMode::HttpPolling => codec::decode::<v1::AgentToServer>(bytes, limits),
        };
        match decoded {
            Ok(msg) => self.handle_message(msg, now),
            Err(err) => {
                let err = SessionError::from(err);
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
        self.connection_settings = Some(offers);
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
        Some(match self.config.mode {
            TransportMode::WebSocket => codec::encode_ws_frame(&msg),
            TransportMode::HttpPolling => codec::encode(&msg),
        })
    }

    /// The next event for the server, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    // ----- getters ----------------------------------------------------------------------

    /// The merged, last known full state of the agent.
    pub fn agent_state(&self) -> &AgentState {
        &self.state
    }

    /// The session's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether the server is still waiting for a full report it asked for.
    pub fn is_awaiting_full_state(&self) -> bool {
        self.awaiting_full_state.is_some()
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

    fn accept(&mut self, msg: v1::AgentToServer, now: Instant) -> Result<(), SessionError> {
        let uid = validate::agent_to_server(&msg, &self.config.limits)?;
        self.check_uid(uid)?;
        let seq = msg.sequence_num;
        if let (true, Some(last)) = (self.greeted, self.state.last_sequence_num) {
            let max_gap = self.config.limits.max_sequence_gap;
            if seq > last && seq - last > max_gap {
                return Err(SessionError::SequenceNumberOutOfRange {
                    last,
                    received: seq,
                    max_gap,
                });
            }
        }

        // Validation passed: from here on the message takes effect.
        self.goodbye_due = false;
        let switched = self
            .assigned_uid
            .is_some_and(|(assigned, _)| assigned == uid && self.state.instance_uid != Some(uid));
        if switched {
            self.previous_uid = self.state.instance_uid;
            self.assigned_uid = None;
            self.events.push_back(ServerEvent::InstanceUidChanged(uid));
            self.state.instance_uid = Some(uid);
        } else if self.state.instance_uid.is_none() {
            self.state.instance_uid = Some(uid);
        }
        self.state.last_seen = Some(now);
        if !self.greeted {
            self.greeted = true;
            self.state.connected = true;
            self.events
                .push_back(ServerEvent::Connected { instance_uid: uid });
        }

        let has_description = msg.agent_description.is_some();
        let last = self.state.last_sequence_num;
        // Within a connection messages arrive in order, so an older sequence number is a
        // duplicate or a replay whose content is stale. A description marks a full report,
        // which an agent sends after restarting (and restarting resets its numbering).
        let fresh = match last {
            None => true,
            Some(last) => seq > last || has_description,
        };
        if fresh {
            let capabilities = AgentCapabilities::from_wire(msg.capabilities);
            if capabilities != self.state.capabilities {
                self.state.capabilities = capabilities;
                self.events
                    .push_back(ServerEvent::CapabilitiesChanged(capabilities));
            }
            self.state.last_sequence_num = Some(seq);
            self.track_full_state(&msg, last, seq);
            self.merge(&msg);
            self.take_requests(&msg, uid);
        } else {
            tracing::debug!(
                seq,
                ?last,
                "ignoring the content of a stale or duplicate message"
            );
        }

        if msg.agent_disconnect.is_some() {
            self.state.connected = false;
            self.events.push_back(ServerEvent::Disconnected {
                instance_uid: Some(uid),
                by_agent: true,
            });
            self.reset_connection();
            if self.config.mode == TransportMode::HttpPolling {
                // The HTTP request still needs its response: a bare acknowledgement.
                self.responses_due = 1;
                self.goodbye_due = true;
            }
            return Ok(());
        }
        if fresh && (has_description || msg.package_statuses.is_some()) {
            self.recheck_packages();
        }
        if fresh && (has_description || msg.remote_config_status.is_some()) {
            self.recheck_remote_config();
        }
        self.responses_due = match self.config.mode {
            TransportMode::WebSocket => self.responses_due.saturating_add(1),
            TransportMode::HttpPolling => 1,
        };
        Ok(())
    }

    /// Handles what the agent asks of the server application in a fresh message.
    fn take_requests(&mut self, msg: &v1::AgentToServer, uid: InstanceUid) {
        if AgentToServerFlags::from_wire(msg.flags)
            .contains(AgentToServerFlags::REQUEST_INSTANCE_UID)
        {
            match &mut self.assigned_uid {
                // Still asking under another uid: the assignment was lost, send it again.
                Some((assigned, delivered)) if *assigned != uid => *delivered = false,
                Some(_) => {}
                None if !self.uid_request_reported => {
                    self.uid_request_reported = true;
                    self.events.push_back(ServerEvent::InstanceUidRequested);
                }
                None => {}
            }
        } else {
            self.uid_request_reported = false;
        }
        if let Some(request) = msg.connection_settings_request.clone() {
            self.events
                .push_back(ServerEvent::ConnectionSettingsRequest(request));
        }
        if let Some(custom) = msg.custom_message.clone() {
            self.events.push_back(ServerEvent::CustomMessage(custom));
        }
    }

    fn check_uid(&self, uid: InstanceUid) -> Result<(), SessionError> {
        let known = |candidate: Option<InstanceUid>| candidate == Some(uid);
        match self.state.instance_uid {
            // Another agent's messages must never be merged into this agent's state.
            Some(expected)
                if expected != uid
                    && !known(self.previous_uid)
                    && !known(self.assigned_uid.map(|(assigned, _)| assigned)) =>
            {
                Err(SessionError::InstanceUidMismatch {
                    expected,
                    received: uid,
                })
            }
            _ => Ok(()),
        }
    }

    /// Decides whether the server has (or will soon have) the agent's full state.
    fn track_full_state(&mut self, msg: &v1::AgentToServer, last: Option<u64>, seq: u64) {
        let gap = last.is_some_and(|last| last.checked_add(1) != Some(seq));
        let unknown_agent = last.is_none() && msg.agent_description.is_none();
        if gap || unknown_agent {
            self.awaiting_full_state = Some(1);
            self.full_state_flag_due = true;
            self.events.push_back(ServerEvent::FullStateRequested {
                last,
                received: seq,
            });
            return;
        }
        if let Some(requests) = self.awaiting_full_state {
            if self.could_be_full_report(msg) {
                self.awaiting_full_state = None;
            } else if requests >= MAX_FULL_STATE_REQUESTS {
                tracing::warn!(
                    requests,
                    "agent never answered ReportFullState with a full report; giving up"
                );
                self.awaiting_full_state = None;
            } else {
                // Our request may have been lost: ask again.
                self.awaiting_full_state = Some(requests + 1);
                self.full_state_flag_due = true;
            }
        }
    }

    /// Whether `msg` may be the full report asked for. OpAMP has no marker for full
    /// reports, but an agent cannot withdraw a sub-message once reported, so a full report
    /// carries the description and at least every kind of sub-message the server already
    /// knows. A compressed report (say, a changed description alone) usually does not.
    fn could_be_full_report(&self, msg: &v1::AgentToServer) -> bool {
        let known = &self.state.status;
        let covers = |known: bool, present: bool| !known || present;
        msg.agent_description.is_some()
            && covers(known.health.is_some(), msg.health.is_some())
            && covers(
                known.effective_config.is_some(),
                msg.effective_config.is_some(),
            )
            && covers(
                known.remote_config_status.is_some(),
                msg.remote_config_status.is_some(),
            )
            && covers(
                known.package_statuses.is_some(),
                msg.package_statuses.is_some(),
            )
            && covers(
                known.custom_capabilities.is_some(),
                msg.custom_capabilities.is_some(),
            )
            && covers(
                known.available_components.is_some(),
                msg.available_components.is_some(),
            )
            && covers(
                known.connection_settings_status.is_some(),
                msg.connection_settings_status.is_some(),
            )
    }

    fn merge(&mut self, msg: &v1::AgentToServer) {
        let status = &mut self.state.status;
        let events = &mut self.events;
        merge_one(
            &mut status.description,
            &msg.agent_description,
            events,
            ServerEvent::DescriptionChanged,
        );
        merge_one(
            &mut status.health,
            &msg.health,
            events,
            ServerEvent::HealthChanged,
        );
        merge_one(
            &mut status.effective_config,
            &msg.effective_config,
            events,
            ServerEvent::EffectiveConfigChanged,
        );
        merge_one(
            &mut status.remote_config_status,
            &msg.remote_config_status,
            events,
            ServerEvent::RemoteConfigStatusChanged,
        );
        merge_one(
            &mut status.package_statuses,
            &msg.package_statuses,
            events,
            ServerEvent::PackageStatusesChanged,
        );
        merge_one(
            &mut status.custom_capabilities,
            &msg.custom_capabilities,
            events,
            ServerEvent::CustomCapabilitiesChanged,
        );
        merge_one(
            &mut status.available_components,
            &msg.available_components,
            events,
            ServerEvent::AvailableComponentsChanged,
        );
        merge_one(
            &mut status.connection_settings_status,
            &msg.connection_settings_status,
            events,
            ServerEvent::ConnectionSettingsStatusChanged,
        );
    }

    /// Re-sends the package offer when the agent reports it processed a different one.
    fn recheck_packages(&mut self) {
        let Some(offer) = &self.packages.offer else {
            return;
        };
        let reported = self
            .state
            .status
            .package_statuses
            .as_ref()
            .map(|s| &s.server_provided_all_packages_hash);
        if self.packages.sent && reported != Some(&offer.all_packages_hash) {
            tracing::debug!("agent reports a different all_packages_hash; offering packages again");
            self.packages.sent = false;
        }
    }

    /// Re-sends the remote config when the agent reports a different config hash.
    fn recheck_remote_config(&mut self) {
        let Some(offer) = &self.remote_config.offer else {
            return;
        };
        let reported = self
            .state
            .status
            .remote_config_status
            .as_ref()
            .map(|s| &s.last_remote_config_hash);
        if self.remote_config.sent && reported != Some(&offer.config_hash) {
            self.remote_config.sent = false;
        }
    }

    fn agent_accepts(&self, required: AgentCapabilities) -> bool {
        self.state.capabilities.contains(required)
    }

    fn server_offers(&self, offered: ServerCapabilities) -> bool {
        self.config.capabilities.contains(offered)
    }

    fn packages_allowed(&self) -> bool {
        self.server_offers(ServerCapabilities::OFFERS_PACKAGES)
            && self.agent_accepts(AgentCapabilities::ACCEPTS_PACKAGES)
    }

    fn remote_config_allowed(&self) -> bool {
        self.server_offers(ServerCapabilities::OFFERS_REMOTE_CONFIG)
            && self.agent_accepts(AgentCapabilities::ACCEPTS_REMOTE_CONFIG)
    }

    fn connection_settings_allowed(&self) -> bool {
        let accepting = AgentCapabilities::ACCEPTS_OPAMP_CONNECTION_SETTINGS
            | AgentCapabilities::ACCEPTS_OTHER_CONNECTION_SETTINGS
            | AgentCapabilities::REPORTS_OWN_METRICS
            | AgentCapabilities::REPORTS_OWN_TRACES
            | AgentCapabilities::REPORTS_OWN_LOGS;
        self.server_offers(ServerCapabilities::OFFERS_CONNECTION_SETTINGS)
            && self.state.capabilities.intersects(accepting)
    }

    fn heartbeat_offer_allowed(&self) -> bool {
        self.heartbeat_offer_due && self.agent_accepts(AgentCapabilities::REPORTS_HEARTBEAT)
    }

    fn command_allowed(&self) -> bool {
        self.command.is_some() && self.agent_accepts(AgentCapabilities::ACCEPTS_RESTART_COMMAND)
    }

    fn custom_message_allowed(&self) -> Option<usize> {
        let declared = self.state.status.custom_capabilities.as_ref()?;
        self.custom_messages
            .iter()
            .position(|m| declared.capabilities.contains(&m.capability))
    }

    /// Whether anything may be pushed to the agent now.
    fn has_sendable(&self) -> bool {
        !self.bad_requests.is_empty()
            || self.full_state_flag_due
            || !self.capabilities_sent
            || self.command_allowed()
            || (self.packages.due() && self.packages_allowed())
            || (self.remote_config.due() && self.remote_config_allowed())
            || (self.connection_settings.is_some() && self.connection_settings_allowed())
            || self.heartbeat_offer_allowed()
            || self.assigned_uid.is_some_and(|(_, delivered)| !delivered)
            || self.custom_message_allowed().is_some()
            || self.custom_capabilities_due
    }

    fn build_message(&mut self) -> v1::ServerToAgent {
        let mut msg = v1::ServerToAgent {
            instance_uid: self
                .state
                .instance_uid
                .map(|uid| uid.to_vec())
                .unwrap_or_default(),
            ..Default::default()
        };
        if std::mem::take(&mut self.goodbye_due) {
            return msg;
        }
        // An error response travels alone.
        if let Some(error_message) = self.bad_requests.pop_front() {
            msg.error_response = Some(v1::ServerErrorResponse {
                r#type: v1::ServerErrorResponseType::BadRequest.into(),
                error_message,
                details: None,
            });
            return msg;
        }
        if !self.capabilities_sent {
            msg.capabilities = self.config.capabilities.bits();
            self.capabilities_sent = true;
        }
        // A command travels alone too (besides uid and capabilities).
        if self.command_allowed() {
            msg.command = self.command.take();
            return msg;
        }
        if std::mem::take(&mut self.full_state_flag_due) {
            msg.flags = ServerToAgentFlags::REPORT_FULL_STATE.bits();
        }
        if self.packages_allowed() {
            msg.packages_available = self.packages.take();
        }
        if self.remote_config_allowed() {
            msg.remote_config = self.remote_config.take();
        }
        let mut settings = if self.connection_settings_allowed() {
            self.connection_settings.take()
        } else {
            None
        };
        if self.heartbeat_offer_allowed() {
            self.heartbeat_offer_due = false;
            let seconds = self
                .config
                .heartbeat_interval
                .map_or(0, |interval| interval.as_secs());
            let offers = settings.get_or_insert_with(Default::default);
            offers
                .opamp
                .get_or_insert_with(Default::default)
                .heartbeat_interval_seconds = seconds;
        }
        msg.connection_settings = settings;
        if let Some((uid, delivered)) = &mut self.assigned_uid
            && !*delivered
        {
            *delivered = true;
            msg.agent_identification = Some(v1::AgentIdentification {
                new_instance_uid: uid.to_vec(),
            });
        }
        if let Some(index) = self.custom_message_allowed() {
            msg.custom_message = self.custom_messages.remove(index);
        }
        if std::mem::take(&mut self.custom_capabilities_due) {
            msg.custom_capabilities = self.config.custom_capabilities.clone();
        }
        msg
    }
}

/// Replaces `slot` with `update` when the message carries that sub-message and it
/// differs, recording a typed event.
fn merge_one<T: Clone + PartialEq>(
    slot: &mut Option<T>,
    update: &Option<T>,
    events: &mut VecDeque<ServerEvent>,
    event: impl FnOnce(T) -> ServerEvent,
) {
    if let Some(value) = update
        && slot.as_ref() != Some(value)
    {
        *slot = Some(value.clone());
        events.push_back(event(value.clone()));
    }
}
