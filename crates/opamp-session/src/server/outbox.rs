//! Building answers: which offers the agent's capabilities allow, and what travels alone.

use opamp_proto::{AgentCapabilities, ServerCapabilities, ServerToAgentFlags, v1};

use super::ServerSession;

/// An offer the server keeps until it is delivered, and may deliver again.
#[derive(Debug, Clone, Default)]
pub(super) struct Standing<T> {
    pub(super) offer: Option<T>,
    pub(super) sent: bool,
}

impl<T: Clone> Standing<T> {
    pub(super) fn set(&mut self, offer: T) {
        self.offer = Some(offer);
        self.sent = false;
    }

    pub(super) fn due(&self) -> bool {
        self.offer.is_some() && !self.sent
    }

    pub(super) fn take(&mut self) -> Option<T> {
        if self.sent {
            return None;
        }
        self.sent = true;
        self.offer.clone()
    }
}

impl ServerSession {
    pub(super) fn agent_accepts(&self, required: AgentCapabilities) -> bool {
        self.state.capabilities.contains(required)
    }

    pub(super) fn server_offers(&self, offered: ServerCapabilities) -> bool {
        self.config.capabilities.contains(offered)
    }

    pub(super) fn packages_allowed(&self) -> bool {
        self.server_offers(ServerCapabilities::OFFERS_PACKAGES)
            && self.agent_accepts(AgentCapabilities::ACCEPTS_PACKAGES)
    }

    pub(super) fn remote_config_allowed(&self) -> bool {
        self.server_offers(ServerCapabilities::OFFERS_REMOTE_CONFIG)
            && self.agent_accepts(AgentCapabilities::ACCEPTS_REMOTE_CONFIG)
    }

    pub(super) fn connection_settings_allowed(&self) -> bool {
        let accepting = AgentCapabilities::ACCEPTS_OPAMP_CONNECTION_SETTINGS
            | AgentCapabilities::ACCEPTS_OTHER_CONNECTION_SETTINGS
            | AgentCapabilities::REPORTS_OWN_METRICS
            | AgentCapabilities::REPORTS_OWN_TRACES
            | AgentCapabilities::REPORTS_OWN_LOGS;
        self.server_offers(ServerCapabilities::OFFERS_CONNECTION_SETTINGS)
            && self.state.capabilities.intersects(accepting)
    }

    pub(super) fn heartbeat_offer_allowed(&self) -> bool {
        self.heartbeat_offer_due && self.agent_accepts(AgentCapabilities::REPORTS_HEARTBEAT)
    }

    pub(super) fn command_allowed(&self) -> bool {
        self.command.is_some() && self.agent_accepts(AgentCapabilities::ACCEPTS_RESTART_COMMAND)
    }

    pub(super) fn custom_message_allowed(&self) -> Option<usize> {
        let declared = self.state.status.custom_capabilities.as_ref()?;
        self.custom_messages
            .iter()
            .position(|m| declared.capabilities.contains(&m.capability))
    }

    /// Whether anything may be pushed to the agent now.
    pub(super) fn has_sendable(&self) -> bool {
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

    pub(super) fn build_message(&mut self) -> v1::ServerToAgent {
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
            self.connection_settings.take().map(|offers| *offers)
        } else {
            None
        };
        let mut heartbeat_offered = None;
        if self.heartbeat_offer_allowed() {
            self.heartbeat_offer_due = false;
            let seconds = self
                .config
                .heartbeat_interval
                .map_or(0, |interval| interval.as_secs());
            heartbeat_offered = Some(seconds);
            let offers = settings.get_or_insert_with(Default::default);
            let opamp = offers.opamp.get_or_insert_with(Default::default);
            opamp.heartbeat_interval_seconds = seconds;
        }
        if let Some(offers) = &mut settings {
            complete_offers(offers, self.config.opamp_endpoint.as_deref());
        }
        // An OpAMP offer without a destination is invalid (the spec says MUST be set); an
        // agent would refuse it, so it is left out rather than sent.
        if let Some(offers) = &mut settings
            && offers
                .opamp
                .as_ref()
                .is_some_and(|opamp| opamp.destination_endpoint.is_empty())
        {
            tracing::debug!("no OpAMP endpoint known; OpAMP connection settings not offered");
            offers.opamp = None;
            if offers.own_metrics.is_none()
                && offers.own_traces.is_none()
                && offers.own_logs.is_none()
                && offers.other_connections.is_empty()
            {
                settings = None;
            } else {
                offers.hash = settings_hash(offers);
            }
        }
        if let Some(seconds) = heartbeat_offered
            && settings
                .as_ref()
                .is_some_and(|offers| offers.opamp.is_some())
        {
            self.delivered_heartbeat = Some(std::time::Duration::from_secs(seconds));
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

/// Fills what the spec requires of an offer: the OpAMP destination (when the server
/// knows its own URL and the offer left it empty) and a hash of the offers, so the agent
/// can tell a new offer from one it already applied.
fn complete_offers(offers: &mut v1::ConnectionSettingsOffers, opamp_endpoint: Option<&str>) {
    if let (Some(opamp), Some(url)) = (&mut offers.opamp, opamp_endpoint)
        && opamp.destination_endpoint.is_empty()
    {
        url.clone_into(&mut opamp.destination_endpoint);
    }
    if offers.hash.is_empty() {
        offers.hash = settings_hash(offers);
    }
}

/// SHA-256 of the offers' encoding without the hash field. It is computed once per offer
/// (a later send reuses it), so map order in the encoding does not matter.
fn settings_hash(offers: &v1::ConnectionSettingsOffers) -> Vec<u8> {
    let mut unhashed = offers.clone();
    unhashed.hash.clear();
    opamp_packages::ContentHash::of(&opamp_proto::codec::encode(&unhashed))
        .as_bytes()
        .to_vec()
}
