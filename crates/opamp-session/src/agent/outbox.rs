//! Building outgoing messages: status compression, sequence numbers, heartbeats, and
//! putting back what an unanswered request carried.

use std::time::Instant;

use opamp_proto::{AgentToServerFlags, v1};

use super::parts::Parts;
use super::{AgentSession, Farewell, InFlight};
use crate::TransportMode;

impl AgentSession {
    pub(super) fn update<T: PartialEq>(
        slot: &mut Option<T>,
        value: T,
        pending: &mut Parts,
        part: Parts,
    ) -> bool {
        if slot.as_ref() == Some(&value) {
            return false;
        }
        *slot = Some(value);
        *pending |= part;
        true
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
            || self.message_due
            || !self.custom_messages.is_empty()
            || self.connection_settings_request.is_some()
            || self.farewell == Farewell::Queued
    }

    pub(super) fn heartbeat_deadline(&self) -> Option<Instant> {
        let interval = self.heartbeat_interval()?;
        // A deadline beyond what `Instant` can hold means "never".
        self.last_sent?.checked_add(interval)
    }

    pub(super) fn build_message(&mut self, now: Instant) -> v1::AgentToServer {
        let parts = std::mem::take(&mut self.pending);
        let status = &self.status;
        let pick = |part: Parts| parts.contains(part);
        let mut flags = AgentToServerFlags::empty();
        if self.request_instance_uid {
            flags |= AgentToServerFlags::REQUEST_INSTANCE_UID;
        }
        let farewell = self.farewell == Farewell::Queued;
        let custom_message = self.custom_messages.pop_front();
        let connection_settings_request = self.connection_settings_request.take();
        let msg = v1::AgentToServer {
            instance_uid: self.instance_uid.to_vec(),
            sequence_num: self.next_sequence_num,
            agent_description: status
                .description
                .as_ref()
                .filter(|_| pick(Parts::DESCRIPTION))
                .cloned(),
            capabilities: self.config.capabilities.bits(),
            health: status
                .health
                .as_ref()
                .filter(|_| pick(Parts::HEALTH))
                .cloned(),
            effective_config: status
                .effective_config
                .as_ref()
                .filter(|_| pick(Parts::EFFECTIVE_CONFIG))
                .cloned(),
            remote_config_status: status
                .remote_config_status
                .as_ref()
                .filter(|_| pick(Parts::REMOTE_CONFIG_STATUS))
                .cloned(),
            package_statuses: status
                .package_statuses
                .as_ref()
                .filter(|_| pick(Parts::PACKAGE_STATUSES))
                .cloned(),
            agent_disconnect: farewell.then_some(v1::AgentDisconnect {}),
            flags: flags.bits(),
            connection_settings_request: connection_settings_request.clone(),
            custom_capabilities: status
                .custom_capabilities
                .as_ref()
                .filter(|_| pick(Parts::CUSTOM_CAPABILITIES))
                .cloned(),
            custom_message: custom_message.clone(),
            available_components: status
                .available_components
                .as_ref()
                .filter(|_| pick(Parts::AVAILABLE_COMPONENTS))
                .cloned(),
            connection_settings_status: status
                .connection_settings_status
                .as_ref()
                .filter(|_| pick(Parts::CONNECTION_SETTINGS_STATUS))
                .cloned(),
        };
        self.message_due = false;
        self.next_sequence_num = self.next_sequence_num.wrapping_add(1);
        self.last_sent = Some(now);
        if farewell {
            self.farewell = Farewell::Sent;
        }
        if self.config.mode == TransportMode::HttpPolling {
            self.in_flight = Some(InFlight {
                custom_message,
                connection_settings_request,
                farewell,
            });
        }
        msg
    }

    /// Puts back what an unanswered HTTP request carried. The server may or may not have
    /// seen it, so the next message is a full report: that also repairs a lost
    /// `ReportFullState` request.
    pub(super) fn restore_in_flight(&mut self) {
        if let Some(lost) = self.in_flight.take() {
            if let Some(custom) = lost.custom_message {
                self.custom_messages.push_front(custom);
            }
            if lost.connection_settings_request.is_some()
                && self.connection_settings_request.is_none()
            {
                self.connection_settings_request = lost.connection_settings_request;
            }
            if lost.farewell {
                self.farewell = Farewell::Queued;
            }
            self.pending = Parts::all();
        }
    }

    /// Starts the next back-off step; returns its deadline.
    pub(super) fn back_off(&mut self, now: Instant) -> Option<Instant> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let unit = rand::Rng::gen_range(&mut self.jitter, 0.0..=1.0);
        let delay = self
            .config
            .retry
            .jittered_delay(self.consecutive_failures, unit);
        let deadline = now.checked_add(delay)?;
        self.hold_until(deadline);
        Some(deadline)
    }

    /// Sends nothing before `deadline`; an existing later deadline wins.
    pub(super) fn hold_until(&mut self, deadline: Instant) {
        self.retry_not_before = Some(self.retry_not_before.map_or(deadline, |t| t.max(deadline)));
    }
}
