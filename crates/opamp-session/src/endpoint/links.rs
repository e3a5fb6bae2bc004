//! The endpoint's bookkeeping: which link each agent is reached by, deadlines, re-keying
//! after uid reassignment, and moving a session's output to the endpoint's queues.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, v1};

use super::{
    Agent, ConnectionId, DisconnectReason, EndpointError, EndpointEvent, Link, ServerEndpoint,
};
use crate::{ServerEvent, ServerSession, TransportMode};

impl ServerEndpoint {
    pub(super) fn connection_mode(
        &self,
        connection: ConnectionId,
    ) -> Result<TransportMode, EndpointError> {
        self.connections
            .get(&connection)
            .map(|open| open.params.mode)
            .ok_or(EndpointError::UnknownConnection(connection))
    }

    pub(super) fn resolve(&self, uid: InstanceUid) -> Option<InstanceUid> {
        if self.agents.contains_key(&uid) {
            Some(uid)
        } else {
            self.aliases.get(&uid).copied()
        }
    }

    pub(super) fn new_session(&self, mode: TransportMode) -> Box<ServerSession> {
        let mut config = self.config.session.clone();
        config.mode = mode;
        Box::new(ServerSession::new(config))
    }

    /// Makes `connection` the agent's link (creating the agent if new). Returns whether
    /// the link is new.
    pub(super) fn link(
        &mut self,
        now: Instant,
        key: InstanceUid,
        connection: ConnectionId,
        mode: TransportMode,
        endpoint_url: Option<String>,
    ) -> bool {
        let wanted = match mode {
            TransportMode::WebSocket => Link::WebSocket(connection),
            TransportMode::HttpPolling => Link::Http,
        };
        if !self.agents.contains_key(&key) {
            let session = self.new_session(mode);
            self.agents.insert(
                key,
                Agent {
                    session,
                    link: Link::Gone,
                    deadline: None,
                },
            );
        }
        let previous = self.agents.get(&key).map_or(Link::Gone, |agent| agent.link);
        if previous == wanted {
            return false;
        }
        if previous != Link::Gone {
            self.disconnect(key, DisconnectReason::TransportSwitched, now);
        }
        let configured_url = self.config.session.opamp_endpoint.is_some();
        if let Some(agent) = self.agents.get_mut(&key) {
            if agent.session.config().mode != mode {
                agent.session.switch_transport(mode, now);
            }
            if let (false, Some(url)) = (configured_url, endpoint_url) {
                agent.session.set_opamp_endpoint(url);
            }
            agent.link = wanted;
        }
        if let Link::WebSocket(connection) = wanted
            && let Some(open) = self.connections.get_mut(&connection)
        {
            open.agents.insert(key);
        }
        self.events.push_back(EndpointEvent::Connected {
            uid: key,
            connection,
            mode,
        });
        true
    }

    /// Removes the agent from its WebSocket's set and marks it gone. `close_if_empty`:
    /// the server ended the link (idle, forgotten), so a WebSocket left without agents
    /// should be closed; an agent that said goodbye closes its socket itself.
    pub(super) fn unlink(&mut self, uid: InstanceUid, close_if_empty: Option<DisconnectReason>) {
        let Some(agent) = self.agents.get_mut(&uid) else {
            return;
        };
        if let Link::WebSocket(connection) = agent.link
            && let Some(open) = self.connections.get_mut(&connection)
        {
            open.agents.remove(&uid);
            if let (Some(reason), true) = (close_if_empty, open.agents.is_empty()) {
                self.events
                    .push_back(EndpointEvent::CloseConnection { connection, reason });
            }
        }
        agent.link = Link::Gone;
    }

    pub(super) fn disconnect(&mut self, uid: InstanceUid, reason: DisconnectReason, now: Instant) {
        let server_ended = matches!(reason, DisconnectReason::Idle | DisconnectReason::Forgotten);
        self.unlink(uid, server_ended.then_some(reason));
        if let Some(agent) = self.agents.get_mut(&uid) {
            agent.session.handle_disconnected(now);
        }
        let uid = self.drain_session(uid);
        self.events
            .push_back(EndpointEvent::Disconnected { uid, reason });
        self.set_deadline(uid, self.config.forget_after.map(|after| now + after));
    }

    pub(super) fn remove(&mut self, uid: InstanceUid) {
        let Some(agent) = self.agents.remove(&uid) else {
            return;
        };
        if let Some(deadline) = agent.deadline {
            self.deadlines.remove(&(deadline, uid));
        }
        self.aliases.retain(|_, target| *target != uid);
        self.events.push_back(EndpointEvent::Forgotten { uid });
    }

    pub(super) fn set_deadline(&mut self, uid: InstanceUid, deadline: Option<Instant>) {
        let Some(agent) = self.agents.get_mut(&uid) else {
            return;
        };
        if let Some(old) = agent.deadline.take() {
            self.deadlines.remove(&(old, uid));
        }
        if let Some(new) = deadline {
            self.deadlines.insert((new, uid));
            agent.deadline = Some(new);
        }
    }

    /// How long a connected agent may stay silent, from its transport, whether it reports
    /// heartbeats, and the interval the server offers.
    pub(super) fn idle_bound(&self, uid: InstanceUid) -> Option<Duration> {
        let agent = self.agents.get(&uid)?;
        let heartbeats = agent
            .session
            .agent_state()
            .capabilities
            .contains(AgentCapabilities::REPORTS_HEARTBEAT);
        // Only an interval the agent was actually sent counts: one it never received (no
        // OpAMP endpoint known, or a sub-second setting that rounds to "disabled") would
        // make a healthy agent look dead.
        let delivered = agent
            .session
            .delivered_heartbeat_interval()
            .filter(|interval| !interval.is_zero());
        let interval = match (agent.link, heartbeats, delivered) {
            (Link::Gone, _, _) => return None,
            (_, true, Some(delivered)) => delivered,
            // An HTTP agent without a heartbeat setting from us polls at the default.
            (Link::Http, _, _) => self.config.fallback_interval,
            // A WebSocket agent without heartbeats is alive while its socket is.
            (Link::WebSocket(_), _, _) => return None,
        };
        Some(self.config.idle_bound(interval))
    }

    /// Queues what a session wants to push (WebSocket) and collects its events.
    pub(super) fn flush(&mut self, now: Instant, uid: InstanceUid) {
        let Some(agent) = self.agents.get_mut(&uid) else {
            return;
        };
        if let Link::WebSocket(connection) = agent.link {
            while let Some(message) = agent.session.poll_transmit(now) {
                self.transmits.push_back((connection, message));
            }
        }
        self.drain_session(uid);
    }

    /// Moves a session's events to the endpoint's queue, re-keying the agent when it
    /// switched to an assigned uid. Returns the agent's uid afterwards.
    pub(super) fn drain_session(&mut self, mut uid: InstanceUid) -> InstanceUid {
        while let Some(event) = self
            .agents
            .get_mut(&uid)
            .and_then(|a| a.session.poll_event())
        {
            match event {
                // The endpoint reports the link's lifecycle itself; only the agent's own
                // goodbye (a message content) is passed on as well.
                ServerEvent::Connected { .. }
                | ServerEvent::Disconnected {
                    by_agent: false, ..
                } => {}
                ServerEvent::InstanceUidChanged(new) => {
                    if self.rekey(uid, new) {
                        self.events
                            .push_back(EndpointEvent::UidReassigned { from: uid, to: new });
                        uid = new;
                    }
                    self.events.push_back(EndpointEvent::Agent {
                        uid,
                        event: ServerEvent::InstanceUidChanged(new),
                    });
                }
                event => self.events.push_back(EndpointEvent::Agent { uid, event }),
            }
        }
        uid
    }

    pub(super) fn rekey(&mut self, old: InstanceUid, new: InstanceUid) -> bool {
        if old == new {
            return false;
        }
        if self.agents.contains_key(&new) {
            tracing::warn!(%old, %new, "agent switched to a uid another agent uses; keeping the old key");
            return false;
        }
        let Some(agent) = self.agents.remove(&old) else {
            return false;
        };
        if let Some(deadline) = agent.deadline {
            self.deadlines.remove(&(deadline, old));
            self.deadlines.insert((deadline, new));
        }
        if let Link::WebSocket(connection) = agent.link
            && let Some(open) = self.connections.get_mut(&connection)
        {
            open.agents.remove(&old);
            open.agents.insert(new);
        }
        self.agents.insert(new, agent);
        for target in self.aliases.values_mut() {
            if *target == old {
                *target = new;
            }
        }
        self.aliases.remove(&new);
        self.aliases.insert(old, new);
        true
    }

    /// Answers a message refused before any session saw it.
    pub(super) fn refuse(
        &mut self,
        connection: ConnectionId,
        uid: Option<InstanceUid>,
        reason: String,
    ) {
        self.transmits.push_back((
            connection,
            v1::ServerToAgent {
                instance_uid: uid.map(|uid| uid.to_vec()).unwrap_or_default(),
                error_response: Some(v1::ServerErrorResponse {
                    r#type: v1::ServerErrorResponseType::BadRequest.into(),
                    error_message: reason.clone(),
                    details: None,
                }),
                ..Default::default()
            },
        ));
        self.events.push_back(EndpointEvent::Refused {
            connection,
            uid,
            reason,
        });
    }
}
