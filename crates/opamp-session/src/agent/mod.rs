//! The agent (client) side of an OpAMP connection.

mod config;
mod event;
mod inbox;
mod outbox;
mod parts;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opamp_packages::{InstalledPackages, plan_sync};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, ServerToAgentFlags, v1};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use self::config::{AgentSessionConfig, DEFAULT_HEARTBEAT_INTERVAL, RetryPolicy};
pub use self::event::{AgentEvent, OfferKind};
use self::parts::Parts;
use crate::{AgentStatus, SessionError, TransportMode, validate};

/// Where the agent is in saying goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Farewell {
    /// Not leaving.
    None,
    /// [`AgentSession::disconnect`] was called; the next message carries `agent_disconnect`.
    Queued,
    /// The `agent_disconnect` message was handed out; nothing more will be sent.
    Sent,
}

/// What an HTTP request in flight carried, so a failure can put it back.
#[derive(Debug)]
struct InFlight {
    custom_message: Option<v1::CustomMessage>,
    connection_settings_request: Option<v1::ConnectionSettingsRequest>,
    farewell: bool,
}

/// The agent side of OpAMP as a state machine without IO.
///
/// It never touches the network or the clock. Methods fall into four groups:
/// - inputs: `handle_*` (link events, received messages, timeouts);
/// - reported state: `set_*` setters, [`request_full_report`](Self::request_full_report),
///   [`send_custom_message`](Self::send_custom_message), [`disconnect`](Self::disconnect);
/// - outputs: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout), all `#[must_use]`;
/// - getters.
///
/// After every input, drain `poll_transmit` and `poll_event` until they return `None`,
/// then sleep until `poll_timeout` (or the next input) and call
/// [`handle_timeout`](Self::handle_timeout).
///
/// ```
/// use std::time::Instant;
/// use opamp_proto::{v1, InstanceUid};
/// use opamp_session::{AgentSessionConfig, AgentSession};
///
/// let config = AgentSessionConfig::new(InstanceUid::new_v7(), v1::AgentDescription::default());
/// let mut agent = AgentSession::new(config);
/// let now = Instant::now();
/// agent.handle_connected(now);
/// let first = agent.poll_transmit(now).expect("a full report follows the connection");
/// assert_eq!(first.sequence_num, 0);
/// assert!(first.agent_description.is_some());
/// assert!(agent.poll_transmit(now).is_none(), "nothing changed, nothing to send");
/// ```
#[derive(Debug)]
pub struct AgentSession {
    config: AgentSessionConfig,
    instance_uid: InstanceUid,
    /// The uid before the server assigned a new one; messages still in flight may use it.
    previous_uid: Option<InstanceUid>,
    status: AgentStatus,
    /// Sub-messages the next message must carry.
    pending: Parts,
    /// A message is owed even without sub-messages (for example capabilities changed).
    message_due: bool,
    next_sequence_num: u64,
    connected: bool,
    in_flight: Option<InFlight>,
    last_sent: Option<Instant>,
    heartbeat_interval: Option<Duration>,
    retry_not_before: Option<Instant>,
    consecutive_failures: u32,
    /// Source of back-off jitter, seeded (see [`AgentSessionConfig::retry_seed`]).
    jitter: ChaCha8Rng,
    server_capabilities: Option<ServerCapabilities>,
    server_custom_capabilities: Option<v1::CustomCapabilities>,
    custom_messages: VecDeque<v1::CustomMessage>,
    connection_settings_request: Option<v1::ConnectionSettingsRequest>,
    request_instance_uid: bool,
    /// What the application installed from earlier offers, for sync planning.
    installed_packages: InstalledPackages,
    farewell: Farewell,
    events: VecDeque<AgentEvent>,
}

impl AgentSession {
    /// Creates a disconnected session. Call [`handle_connected`](Self::handle_connected)
    /// once the transport is up (for HTTP: when polling may start).
    pub fn new(mut config: AgentSessionConfig) -> Self {
        // ReportsStatus is mandatory; bits the protocol does not define must be sent as 0.
        config.capabilities =
            (config.capabilities | AgentCapabilities::REPORTS_STATUS) & AgentCapabilities::all();
        let status = AgentStatus {
            description: Some(config.description.clone()),
            ..AgentStatus::default()
        };
        Self {
            instance_uid: config.instance_uid,
            previous_uid: None,
            status,
            pending: Parts::all(),
            message_due: false,
            next_sequence_num: 0,
            connected: false,
            in_flight: None,
            last_sent: None,
            // Zero means "no heartbeats", as it does when the server offers it; taken
            // literally it would make every poll_transmit due at once (a busy loop).
            heartbeat_interval: config
                .heartbeat_interval
                .filter(|interval| !interval.is_zero()),
            retry_not_before: None,
            consecutive_failures: 0,
            jitter: ChaCha8Rng::seed_from_u64(config.retry_seed.unwrap_or_else(|| {
                let uid = config.instance_uid.to_vec();
                uid.iter()
                    .fold(0u64, |seed, byte| seed.rotate_left(8) ^ u64::from(*byte))
            })),
            server_capabilities: None,
            server_custom_capabilities: None,
            custom_messages: VecDeque::new(),
            connection_settings_request: None,
            request_instance_uid: config.request_instance_uid,
            installed_packages: InstalledPackages::new(),
            farewell: Farewell::None,
            events: VecDeque::new(),
            config,
        }
    }

    // ----- inputs -------------------------------------------------------------------

    /// The transport is up. The next message is a full status report, as the spec
    /// requires for the first message of a connection.
    pub fn handle_connected(&mut self, _now: Instant) {
        self.connected = true;
        // A request still marked in flight belongs to the old connection: put it back.
        self.restore_in_flight();
        self.pending = Parts::all();
    }

    /// The transport went down. Nothing is sent until the next
    /// [`handle_connected`](Self::handle_connected); state changes made meanwhile are
    /// kept and reported then.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.connected = false;
        self.restore_in_flight();
    }

    /// HTTP mode: the request in flight failed (connection error, timeout, non-2xx
    /// status). Its content is sent again, as a full report, after the back-off of
    /// [`AgentSessionConfig::retry`]. Harmless when nothing is in flight.
    pub fn handle_request_failed(&mut self, now: Instant) {
        if self.in_flight.is_none() {
            return;
        }
        self.restore_in_flight();
        // The transport knows the request failed; the deadline shows in `poll_timeout`.
        let _ = self.back_off(now);
    }

    /// A connection attempt failed or an open connection was lost. Counts a failure and
    /// returns how long to wait before the next attempt: the jittered back-off of
    /// [`AgentSessionConfig::retry`], or longer if the server asked for more (`server_retry_after`
    /// from a `Retry-After` header, or a `RetryInfo` received earlier). Sending is held
    /// back until then. The next message from the server resets the count.
    pub fn handle_connection_failed(
        &mut self,
        now: Instant,
        server_retry_after: Option<Duration>,
    ) -> Duration {
        if let Some(asked) = server_retry_after.and_then(|delay| now.checked_add(delay)) {
            self.hold_until(asked);
        }
        let _ = self.back_off(now);
        self.retry_not_before
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// The transport learnt that the server wants no traffic before `not_before`
    /// (HTTP `Retry-After` on 429/503, a refused WebSocket upgrade). Later deadlines win.
    /// Unlike a `RetryInfo` from the server, this emits no [`AgentEvent::RetryAfter`].
    pub fn handle_retry_after(&mut self, not_before: Instant) {
        // No event: the transport already knows, it told us.
        self.hold_until(not_before);
    }

    /// Processes raw bytes from the transport: a WebSocket binary message (with its
    /// `0x00` header) or an HTTP response body, depending on [`AgentSessionConfig::mode`].
    ///
    /// In HTTP mode a body that does not decode counts as a failed request.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), SessionError> {
        let limits = &self.config.limits.codec;
        match crate::framing::decode_server_message(self.config.mode, bytes, limits) {
            Ok(msg) => self.handle_message(msg, now),
            Err(err) => {
                if self.config.mode == TransportMode::HttpPolling {
                    self.handle_request_failed(now);
                }
                Err(err)
            }
        }
    }

    /// Processes one decoded `ServerToAgent`.
    ///
    /// The whole message is validated first; on error nothing in it takes effect and the
    /// session stays usable. In HTTP mode any message (even a refused one) completes the
    /// request in flight.
    pub fn handle_message(
        &mut self,
        msg: v1::ServerToAgent,
        now: Instant,
    ) -> Result<(), SessionError> {
        self.in_flight = None;
        self.check_addressee(&msg.instance_uid)?;
        validate::server_to_agent(&msg, &self.config.limits)?;

        if msg.capabilities != 0 {
            let capabilities = ServerCapabilities::from_wire(msg.capabilities);
            if self.server_capabilities != Some(capabilities) {
                self.server_capabilities = Some(capabilities);
                self.events
                    .push_back(AgentEvent::ServerCapabilities(capabilities));
            }
        }

        if let Some(error) = msg.error_response {
            self.handle_error_response(error, now);
            return Ok(());
        }
        self.consecutive_failures = 0;

        let flags = ServerToAgentFlags::from_wire(msg.flags);
        if flags.contains(ServerToAgentFlags::REPORT_FULL_STATE) {
            self.pending = Parts::all();
        }
        if flags.contains(ServerToAgentFlags::REPORT_AVAILABLE_COMPONENTS) {
            self.pending |= Parts::AVAILABLE_COMPONENTS;
        }

        // A command travels alone; the spec tells the agent to ignore anything else.
        if let Some(command) = msg.command {
            self.handle_command(command);
            return Ok(());
        }

        if let Some(identification) = msg.agent_identification {
            let new_uid = validate::instance_uid(
                "AgentIdentification.new_instance_uid",
                &identification.new_instance_uid,
            )?;
            if new_uid != self.instance_uid {
                tracing::info!(old = %self.instance_uid, new = %new_uid, "server assigned a new instance uid");
                self.previous_uid = Some(self.instance_uid);
                self.instance_uid = new_uid;
                self.events.push_back(AgentEvent::NewInstanceUid(new_uid));
            }
            self.request_instance_uid = false;
        }
        if let Some(offers) = msg.connection_settings {
            self.handle_connection_settings(offers);
        }
        if let Some(config) = msg.remote_config
            && self.accepts(
                AgentCapabilities::ACCEPTS_REMOTE_CONFIG,
                OfferKind::RemoteConfig,
            )
        {
            self.events.push_back(AgentEvent::RemoteConfig(config));
        }
        if let Some(offer) = msg.packages_available
            && self.accepts(AgentCapabilities::ACCEPTS_PACKAGES, OfferKind::Packages)
        {
            let plan = plan_sync(&offer, &self.installed_packages);
            self.events
                .push_back(AgentEvent::PackagesAvailable { offer, plan });
        }
        if let Some(custom) = msg.custom_capabilities
            && self.server_custom_capabilities.as_ref() != Some(&custom)
        {
            self.server_custom_capabilities = Some(custom.clone());
            self.events
                .push_back(AgentEvent::ServerCustomCapabilities(custom));
        }
        if let Some(custom) = msg.custom_message {
            if self.declares_custom_capability(&custom.capability) {
                self.events.push_back(AgentEvent::CustomMessage(custom));
            } else {
                tracing::warn!(capability = %custom.capability, "refusing custom message for an undeclared capability");
                self.events.push_back(AgentEvent::OfferRefused {
                    offer: OfferKind::CustomMessage,
                    required: AgentCapabilities::empty(),
                });
            }
        }
        Ok(())
    }

    /// Lets the session notice expired deadlines. Harmless when called early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_not_before.is_some_and(|t| now >= t) {
            self.retry_not_before = None;
        }
    }

    // ----- reported state -------------------------------------------------------------

    /// Replaces the agent description. Returns whether it changed (only then is it sent).
    pub fn set_description(&mut self, description: v1::AgentDescription) -> bool {
        Self::update(
            &mut self.status.description,
            description,
            &mut self.pending,
            Parts::DESCRIPTION,
        )
    }

    /// Replaces the health tree. Returns whether it changed (only then is it sent).
    pub fn set_health(&mut self, health: v1::ComponentHealth) -> bool {
        Self::update(
            &mut self.status.health,
            health,
            &mut self.pending,
            Parts::HEALTH,
        )
    }

    /// Replaces the effective configuration. Returns whether it changed.
    pub fn set_effective_config(&mut self, config: v1::EffectiveConfig) -> bool {
        Self::update(
            &mut self.status.effective_config,
            config,
            &mut self.pending,
            Parts::EFFECTIVE_CONFIG,
        )
    }

    /// Replaces the remote config status. Returns whether it changed.
    pub fn set_remote_config_status(&mut self, status: v1::RemoteConfigStatus) -> bool {
        Self::update(
            &mut self.status.remote_config_status,
            status,
            &mut self.pending,
            Parts::REMOTE_CONFIG_STATUS,
        )
    }

    /// Replaces the package statuses (all packages the agent has or is processing, and
    /// the `server_provided_all_packages_hash` of the last offer it processed). Returns
    /// whether they changed.
    pub fn set_package_statuses(&mut self, statuses: v1::PackageStatuses) -> bool {
        Self::update(
            &mut self.status.package_statuses,
            statuses,
            &mut self.pending,
            Parts::PACKAGE_STATUSES,
        )
    }

    /// Replaces the custom capabilities the agent declares. Returns whether they changed.
    pub fn set_custom_capabilities(&mut self, capabilities: v1::CustomCapabilities) -> bool {
        Self::update(
            &mut self.status.custom_capabilities,
            capabilities,
            &mut self.pending,
            Parts::CUSTOM_CAPABILITIES,
        )
    }

    /// Replaces the available components list. Returns whether it changed.
    pub fn set_available_components(&mut self, components: v1::AvailableComponents) -> bool {
        Self::update(
            &mut self.status.available_components,
            components,
            &mut self.pending,
            Parts::AVAILABLE_COMPONENTS,
        )
    }

    /// Replaces the connection settings status. Returns whether it changed.
    pub fn set_connection_settings_status(&mut self, status: v1::ConnectionSettingsStatus) -> bool {
        Self::update(
            &mut self.status.connection_settings_status,
            status,
            &mut self.pending,
            Parts::CONNECTION_SETTINGS_STATUS,
        )
    }

    /// Records what the agent has installed from earlier offers (and the
    /// `all_packages_hash` it last applied). Package offers are planned against it; it is
    /// not reported by itself: report statuses with
    /// [`set_package_statuses`](Self::set_package_statuses).
    pub fn set_installed_packages(&mut self, installed: InstalledPackages) {
        self.installed_packages = installed;
    }

    /// Changes the declared capabilities (`REPORTS_STATUS` stays set). Returns whether
    /// they changed; a change is reported in the next message.
    pub fn set_capabilities(&mut self, capabilities: AgentCapabilities) -> bool {
        let capabilities =
            (capabilities | AgentCapabilities::REPORTS_STATUS) & AgentCapabilities::all();
        if capabilities == self.config.capabilities {
            return false;
        }
        self.config.capabilities = capabilities;
        self.message_due = true;
        true
    }

    /// Makes the next message a full report, whatever the server already has.
    pub fn request_full_report(&mut self) {
        self.pending = Parts::all();
    }

    /// Queues a custom message. Its capability must be one the agent declared with
    /// [`set_custom_capabilities`](Self::set_custom_capabilities).
    pub fn send_custom_message(&mut self, message: v1::CustomMessage) -> Result<(), SessionError> {
        if !self.declares_custom_capability(&message.capability) {
            return Err(SessionError::UndeclaredCustomCapability {
                capability: message.capability,
            });
        }
        let limit = self.config.limits.max_pending_custom_messages;
        if self.custom_messages.len() >= limit {
            return Err(SessionError::CustomMessageQueueFull { limit });
        }
        self.custom_messages.push_back(message);
        Ok(())
    }

    /// Asks the server for connection settings (for example a client certificate for a
    /// CSR), sent with the next message. A newer request replaces one not yet sent.
    pub fn request_connection_settings(&mut self, request: v1::ConnectionSettingsRequest) {
        self.connection_settings_request = Some(request);
    }

    /// Says goodbye: the next message carries `agent_disconnect`, and after it the session
    /// sends nothing more. Close the transport once that message is out.
    pub fn disconnect(&mut self) {
        if self.farewell == Farewell::None {
            self.farewell = Farewell::Queued;
        }
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next message to send, if the session may and should send one now.
    ///
    /// Returns `None` while disconnected, before a back-off deadline, while an HTTP
    /// request is in flight, and when there is nothing to report and no heartbeat or poll
    /// is due. Each message returned takes the next sequence number.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<v1::AgentToServer> {
        if !self.connected || self.farewell == Farewell::Sent || self.in_flight.is_some() {
            return None;
        }
        if self.retry_not_before.is_some_and(|t| now < t) {
            return None;
        }
        if !self.has_pending() && self.heartbeat_deadline().is_none_or(|t| now < t) {
            return None;
        }
        Some(self.build_message(now))
    }

    /// Like [`poll_transmit`](Self::poll_transmit), encoded for the transport: a
    /// WebSocket binary message (`0x00` header + protobuf) or an HTTP request body.
    #[must_use]
    pub fn poll_transmit_bytes(&mut self, now: Instant) -> Option<Vec<u8>> {
        let msg = self.poll_transmit(now)?;
        Some(crate::framing::encode_agent_message(self.config.mode, &msg))
    }

    /// The next event for the application, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next (heartbeat,
    /// HTTP poll or end of back-off). `None` means no timer is needed: the session waits
    /// for an input. Only meaningful after `poll_transmit` returned `None`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.connected || self.farewell == Farewell::Sent || self.in_flight.is_some() {
            return None;
        }
        let wake = if self.has_pending() {
            self.retry_not_before
        } else {
            self.heartbeat_deadline()
        };
        match (wake, self.retry_not_before) {
            (Some(wake), Some(retry)) => Some(wake.max(retry)),
            (wake, _) => wake,
        }
    }

    // ----- getters ----------------------------------------------------------------------

    /// The instance uid the agent currently uses.
    pub fn instance_uid(&self) -> InstanceUid {
        self.instance_uid
    }

    /// The sequence number the next message will carry.
    pub fn next_sequence_num(&self) -> u64 {
        self.next_sequence_num
    }

    /// The capabilities the agent declares.
    pub fn capabilities(&self) -> AgentCapabilities {
        self.config.capabilities
    }

    /// The server's capabilities, once it announced them.
    pub fn server_capabilities(&self) -> Option<ServerCapabilities> {
        self.server_capabilities
    }

    /// The agent's current reported state.
    pub fn status(&self) -> &AgentStatus {
        &self.status
    }

    /// The interval between heartbeats (WebSocket) or polls (HTTP) now in force.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        match self.config.mode {
            TransportMode::WebSocket
                if self
                    .config
                    .capabilities
                    .contains(AgentCapabilities::REPORTS_HEARTBEAT) =>
            {
                self.heartbeat_interval
            }
            TransportMode::WebSocket => None,
            TransportMode::HttpPolling => Some(
                self.heartbeat_interval
                    .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
            ),
        }
    }

    /// The transport mode from the configuration.
    pub fn mode(&self) -> TransportMode {
        self.config.mode
    }

    /// Whether the transport is up (between `handle_connected` and `handle_disconnected`).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// HTTP mode: whether a request is waiting for its response.
    pub fn is_request_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the `agent_disconnect` message was handed out.
    pub fn is_closed(&self) -> bool {
        self.farewell == Farewell::Sent
    }

    /// The back-off deadline in force, if any.
    pub fn retry_not_before(&self) -> Option<Instant> {
        self.retry_not_before
    }
}
