//! Acting on what the server sent: errors and back-off, commands, connection settings,
//! and the capability checks that refuse undeclared offers.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, v1};

use super::{AgentEvent, AgentSession, OfferKind, Parts};
use crate::{SessionError, TransportMode, validate};

impl AgentSession {
    pub(super) fn handle_error_response(&mut self, error: v1::ServerErrorResponse, now: Instant) {
        let kind = error.r#type();
        tracing::warn!(?kind, message = %error.error_message, "server reported an error");
        self.events.push_back(AgentEvent::ServerError {
            kind,
            message: error.error_message.clone(),
        });
        if kind != v1::ServerErrorResponseType::Unavailable {
            // BAD_REQUEST must not be retried; UNKNOWN gives nothing to act on.
            return;
        }
        // The server did not process what we sent: report everything again later.
        self.pending = Parts::all();
        let retry_after =
            error
                .details
                .map(|v1::server_error_response::Details::RetryInfo(info)| {
                    Duration::from_nanos(info.retry_after_nanoseconds)
                });
        let deadline = match retry_after.and_then(|delay| now.checked_add(delay)) {
            Some(deadline) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.hold_until(deadline);
                Some(deadline)
            }
            // No RetryInfo: the spec asks for exponential back-off.
            None => self.back_off(now),
        };
        if let Some(deadline) = deadline {
            self.events.push_back(AgentEvent::RetryAfter(deadline));
        }
    }

    pub(super) fn handle_command(&mut self, command: v1::ServerToAgentCommand) {
        match command.r#type() {
            v1::CommandType::Restart => {
                if self.accepts(
                    AgentCapabilities::ACCEPTS_RESTART_COMMAND,
                    OfferKind::RestartCommand,
                ) {
                    self.events.push_back(AgentEvent::Restart);
                }
            }
        }
    }

    pub(super) fn handle_connection_settings(&mut self, mut offers: v1::ConnectionSettingsOffers) {
        if let Some(opamp) = &offers.opamp {
            let heartbeat_applies = self.config.mode == TransportMode::HttpPolling
                || self
                    .config
                    .capabilities
                    .contains(AgentCapabilities::REPORTS_HEARTBEAT);
            if heartbeat_applies {
                let offered = match opamp.heartbeat_interval_seconds {
                    0 => None,
                    seconds => Some(Duration::from_secs(seconds)),
                };
                if offered != self.heartbeat_interval {
                    self.heartbeat_interval = offered;
                    self.events
                        .push_back(AgentEvent::HeartbeatInterval(self.heartbeat_interval()));
                }
            }
        }
        let caps = self.config.capabilities;
        let mut refused = AgentCapabilities::empty();
        let mut keep = |present: bool, required: AgentCapabilities| {
            let allowed = caps.contains(required);
            if present && !allowed {
                refused |= required;
            }
            allowed
        };
        let opamp_has_more_than_heartbeat = offers.opamp.as_ref().is_some_and(|o| {
            let mut rest = o.clone();
            rest.heartbeat_interval_seconds = 0;
            rest != v1::OpAmpConnectionSettings::default()
        });
        if !keep(
            opamp_has_more_than_heartbeat,
            AgentCapabilities::ACCEPTS_OPAMP_CONNECTION_SETTINGS,
        ) {
            offers.opamp = None;
        }
        if !keep(
            offers.own_metrics.is_some(),
            AgentCapabilities::REPORTS_OWN_METRICS,
        ) {
            offers.own_metrics = None;
        }
        if !keep(
            offers.own_traces.is_some(),
            AgentCapabilities::REPORTS_OWN_TRACES,
        ) {
            offers.own_traces = None;
        }
        if !keep(
            offers.own_logs.is_some(),
            AgentCapabilities::REPORTS_OWN_LOGS,
        ) {
            offers.own_logs = None;
        }
        if !keep(
            !offers.other_connections.is_empty(),
            AgentCapabilities::ACCEPTS_OTHER_CONNECTION_SETTINGS,
        ) {
            offers.other_connections.clear();
        }
        if !refused.is_empty() {
            tracing::warn!(
                ?refused,
                "refusing connection settings for undeclared capabilities"
            );
            self.events.push_back(AgentEvent::OfferRefused {
                offer: OfferKind::ConnectionSettings,
                required: refused,
            });
        }
        let anything_left = offers.opamp.is_some()
            || offers.own_metrics.is_some()
            || offers.own_traces.is_some()
            || offers.own_logs.is_some()
            || !offers.other_connections.is_empty();
        if anything_left {
            self.events
                .push_back(AgentEvent::ConnectionSettings(offers));
        }
    }

    /// Whether the agent declared `required`; records a refusal when it did not.
    pub(super) fn accepts(&mut self, required: AgentCapabilities, offer: OfferKind) -> bool {
        if self.config.capabilities.contains(required) {
            return true;
        }
        tracing::warn!(
            ?offer,
            ?required,
            "refusing an offer for a capability the agent did not declare"
        );
        self.events
            .push_back(AgentEvent::OfferRefused { offer, required });
        false
    }

    pub(super) fn declares_custom_capability(&self, capability: &str) -> bool {
        self.status
            .custom_capabilities
            .as_ref()
            .is_some_and(|declared| declared.capabilities.iter().any(|c| c == capability))
    }

    pub(super) fn check_addressee(&self, uid: &[u8]) -> Result<(), SessionError> {
        // Servers that do not multiplex may leave the field empty.
        if uid.is_empty() {
            return Ok(());
        }
        let received = validate::instance_uid("ServerToAgent.instance_uid", uid)?;
        if received == self.instance_uid || Some(received) == self.previous_uid {
            Ok(())
        } else {
            Err(SessionError::InstanceUidMismatch {
                expected: self.instance_uid,
                received,
            })
        }
    }
}
