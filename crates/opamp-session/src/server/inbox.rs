//! Taking in agent messages: validation, sequence tracking, merging compressed reports,
//! and deciding when to ask for a full report or re-send an offer.

use std::collections::VecDeque;
use std::time::Instant;

use opamp_proto::{AgentCapabilities, AgentToServerFlags, InstanceUid, v1};

use super::{MAX_FULL_STATE_REQUESTS, ServerEvent, ServerSession};
use crate::{SessionError, TransportMode, validate};

impl ServerSession {
    pub(super) fn accept(
        &mut self,
        msg: v1::AgentToServer,
        now: Instant,
    ) -> Result<(), SessionError> {
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
        let new_uid = self.state.instance_uid != Some(uid);
        let to_assigned = new_uid
            && self
                .assigned_uid
                .is_some_and(|(assigned, _)| assigned == uid);
        let to_superseded = new_uid && self.superseded_uids.contains(&uid);
        if to_assigned || to_superseded {
            self.previous_uid = self.state.instance_uid;
            if to_assigned {
                self.assigned_uid = None;
                self.superseded_uids.clear();
            } else if let Some((_, delivered)) = &mut self.assigned_uid {
                // The agent took an earlier assignment; the newer one may have crossed
                // its message: send it again.
                self.superseded_uids.retain(|superseded| *superseded != uid);
                *delivered = false;
            }
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
                // An offer that crossed the agent's withdrawal of a capability was refused;
                // when the capability comes back, offer again.
                let gained = capabilities.difference(self.state.capabilities);
                if gained.contains(AgentCapabilities::ACCEPTS_PACKAGES) {
                    self.packages.sent = false;
                }
                if gained.contains(AgentCapabilities::ACCEPTS_REMOTE_CONFIG) {
                    self.remote_config.sent = false;
                }
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
    pub(super) fn take_requests(&mut self, msg: &v1::AgentToServer, uid: InstanceUid) {
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

    pub(super) fn check_uid(&self, uid: InstanceUid) -> Result<(), SessionError> {
        let known = |candidate: Option<InstanceUid>| candidate == Some(uid);
        match self.state.instance_uid {
            // Another agent's messages must never be merged into this agent's state.
            Some(expected)
                if expected != uid
                    && !known(self.previous_uid)
                    && !self.superseded_uids.contains(&uid)
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
    pub(super) fn track_full_state(
        &mut self,
        msg: &v1::AgentToServer,
        last: Option<u64>,
        seq: u64,
    ) {
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
    pub(super) fn could_be_full_report(&self, msg: &v1::AgentToServer) -> bool {
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

    pub(super) fn merge(&mut self, msg: &v1::AgentToServer) {
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
    pub(super) fn recheck_packages(&mut self) {
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
    pub(super) fn recheck_remote_config(&mut self) {
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
