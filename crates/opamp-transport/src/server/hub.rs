//! The IO side of [`ServerEndpoint`]: the endpoint under a lock, the sockets its
//! connection ids stand for, and the notification channel. All protocol decisions
//! (routing, holding uids, idle deadlines, reassignment) are the endpoint's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use opamp_proto::InstanceUid;
use opamp_proto::v1::{AgentToServer, ServerToAgent};
use opamp_session::{
    ConnectionId, ConnectionParams, DisconnectReason, EndpointConfig, EndpointEvent,
    ServerEndpoint, ServerEvent, ServerSession, TransportMode, framing,
};
use tokio::sync::mpsc;

use super::listener::ConnectionInfo;
use super::outbound::{self, Outbound, OutboundReceiver, OutboundSender};

/// What the server reports to its embedder, in order per agent.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerNotification {
    /// An agent sent its first message on a new connection (WebSocket) or its first poll
    /// after being unknown or disconnected (HTTP).
    Connected {
        /// The agent.
        uid: InstanceUid,
        /// How it is connected.
        transport: TransportMode,
        /// Who is on the other end (address, client certificate).
        connection: ConnectionInfo,
    },
    /// The agent's session reported something.
    Event {
        /// The agent.
        uid: InstanceUid,
        /// What happened.
        event: ServerEvent,
    },
    /// A message that changed nothing (a heartbeat or idle poll) arrived: the agent is
    /// alive.
    ///
    /// Heartbeats are gathered and delivered together by the server's timer task, up to
    /// [`HEARTBEAT_BATCH_PERIOD`] after they arrived, so that a large idle fleet wakes the
    /// receiver a few times a second rather than once per heartbeat. A batched heartbeat is
    /// delivered before its agent's `Disconnected`.
    Heartbeat {
        /// The agent.
        uid: InstanceUid,
    },
    /// The agent switched to the instance uid the server assigned it.
    UidReassigned {
        /// The uid it used before.
        from: InstanceUid,
        /// The uid it uses now.
        to: InstanceUid,
    },
    /// The agent's WebSocket closed, it said goodbye, or it was silent beyond the bound
    /// derived from its heartbeat or poll interval
    /// ([`opamp_session::EndpointConfig::idle_bound`]).
    Disconnected {
        /// The agent.
        uid: InstanceUid,
    },
}

struct Socket {
    info: ConnectionInfo,
    kind: SocketKind,
}

enum SocketKind {
    /// The socket task's queue.
    WebSocket(OutboundSender),
    /// The answer to the request, once the endpoint produced it (boxed: a `ServerToAgent`
    /// is 1.5 KiB inline, and every WebSocket's entry would pay for it).
    Http(Option<Box<ServerToAgent>>),
}

struct State {
    endpoint: ServerEndpoint,
    sockets: HashMap<ConnectionId, Socket>,
    /// Messages that may wait per agent on a WebSocket (a shared socket gets room for
    /// each of its agents).
    queue_per_agent: usize,
    /// Where each agent last connected from.
    seen_on: HashMap<InstanceUid, ConnectionInfo>,
    next_connection: u64,
    /// Heartbeats not delivered yet (see [`ServerNotification::Heartbeat`]).
    heartbeats: Vec<InstanceUid>,
}

/// The longest a heartbeat waits before it is delivered with the others.
pub const HEARTBEAT_BATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

struct Inner {
    state: Mutex<State>,
    notify: mpsc::Sender<ServerNotification>,
}

/// Handle to every agent session of one server (a [`ServerEndpoint`] shared by the
/// connection tasks). Cheap to clone.
#[derive(Clone)]
pub struct AgentSessions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSessions")
            .field("agents", &self.lock().endpoint.len())
            .finish()
    }
}

/// Notifications collected under the lock, delivered after it is released.
pub(crate) type Pending = Vec<ServerNotification>;

/// Close codes for connections the endpoint gives up (RFC 6455 section 7.4.1).
const GOING_AWAY: u16 = 1001;
const POLICY_VIOLATION: u16 = 1008;
/// Close reason for an agent that does not read what the server sends.
const NOT_READING: &str = "agent does not read what the server sends";

impl AgentSessions {
    pub(crate) fn new(
        config: EndpointConfig,
        queue_per_agent: usize,
        notify: mpsc::Sender<ServerNotification>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    endpoint: ServerEndpoint::new(config),
                    sockets: HashMap::new(),
                    queue_per_agent: queue_per_agent.max(1),
                    seen_on: HashMap::new(),
                    next_connection: 1,
                    heartbeats: Vec::new(),
                }),
                notify,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves sessions in whatever state they reached;
        // serving the others is better than taking the whole server down.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on one agent's session, then sends what the session queued (WebSocket) or
    /// leaves it for the next poll (HTTP). `None` when the agent is unknown.
    ///
    /// `f` runs under the sessions' lock: keep it short and never block or await in it.
    pub fn with_session<R>(
        &self,
        uid: InstanceUid,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Option<R> {
        let mut pending = Vec::new();
        let result = {
            let mut state = self.lock();
            let result = state.endpoint.with_session(Instant::now(), uid, f);
            state.pump(&mut pending);
            result
        };
        self.notify_now(pending);
        result
    }

    /// Runs `f` on the sessions of every listed agent that is known; returns how many.
    pub fn with_sessions(
        &self,
        uids: &[InstanceUid],
        mut f: impl FnMut(InstanceUid, &mut ServerSession),
    ) -> usize {
        let now = Instant::now();
        let mut pending = Vec::new();
        let count = {
            let mut state = self.lock();
            let count = uids
                .iter()
                .filter(|uid| {
                    state
                        .endpoint
                        .with_session(now, **uid, |session| f(**uid, session))
                        .is_some()
                })
                .count();
            state.pump(&mut pending);
            count
        };
        self.notify_now(pending);
        count
    }

    /// Runs `f` on every known agent's session; returns how many.
    pub fn with_all(&self, mut f: impl FnMut(InstanceUid, &mut ServerSession)) -> usize {
        let now = Instant::now();
        let mut pending = Vec::new();
        let count = {
            let mut state = self.lock();
            let uids: Vec<_> = state.endpoint.agents().collect();
            for uid in &uids {
                state
                    .endpoint
                    .with_session(now, *uid, |session| f(*uid, session));
            }
            state.pump(&mut pending);
            uids.len()
        };
        self.notify_now(pending);
        count
    }

    /// Agents currently connected (open WebSocket, or HTTP polls within their idle bound).
    pub fn connected(&self) -> Vec<InstanceUid> {
        self.lock().endpoint.connected().collect()
    }

    /// Number of agents with a session, connected or not.
    pub fn len(&self) -> usize {
        self.lock().endpoint.len()
    }

    /// Whether no agent has a session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connection an agent last spoke on (address and client certificate).
    pub fn connection_info(&self, uid: InstanceUid) -> Option<ConnectionInfo> {
        self.lock().seen_on.get(&uid).cloned()
    }

    /// Forgets the agent's session; its WebSocket is closed (1008) when no other agent
    /// shares it. Returns whether it was known.
    pub fn forget(&self, uid: InstanceUid) -> bool {
        let mut pending = Vec::new();
        let known = {
            let mut state = self.lock();
            let known = state.endpoint.forget(Instant::now(), uid);
            state.pump(&mut pending);
            known
        };
        self.notify_now(pending);
        known
    }

    // ----- connection tasks -------------------------------------------------------------

    /// Registers an upgraded WebSocket. Returns its id and the queue of what to send (which
    /// also carries the order to close at once).
    pub(crate) fn open_websocket(
        &self,
        info: ConnectionInfo,
        endpoint_url: Option<String>,
    ) -> (ConnectionId, OutboundReceiver) {
        let (sender, receiver) = outbound::queue();
        let mut state = self.lock();
        let id = state.open(
            info,
            endpoint_url,
            TransportMode::WebSocket,
            SocketKind::WebSocket(sender),
        );
        (id, receiver)
    }

    /// Handles one message of a WebSocket; answers and pushes go to the sockets' queues.
    /// Returns the notifications for [`notify`](Self::notify) (synchronous, so the caller's
    /// task never holds the message across an await).
    pub(crate) fn websocket_message(
        &self,
        connection: ConnectionId,
        message: AgentToServer,
    ) -> Pending {
        let mut pending = Vec::new();
        let mut state = self.lock();
        if let Err(error) = state.endpoint.handle(Instant::now(), connection, message) {
            // Answered with an error response; the socket stays up.
            tracing::info!(%connection, %error, "agent message refused");
        }
        state.pump(&mut pending);
        pending
    }

    /// A WebSocket closed: its agents are disconnected.
    pub(crate) async fn websocket_closed(&self, connection: ConnectionId) {
        let mut pending = Vec::new();
        {
            let mut state = self.lock();
            state.endpoint.close_connection(Instant::now(), connection);
            state.sockets.remove(&connection);
            state.pump(&mut pending);
        }
        self.notify(pending).await;
    }

    /// Handles one HTTP request and returns its answer.
    pub(crate) async fn http_request(
        &self,
        info: ConnectionInfo,
        endpoint_url: Option<String>,
        message: AgentToServer,
    ) -> ServerToAgent {
        let uid = message.instance_uid.clone();
        let mut pending = Vec::new();
        let answer = {
            let mut state = self.lock();
            let now = Instant::now();
            let id = state.open(
                info,
                endpoint_url,
                TransportMode::HttpPolling,
                SocketKind::Http(None),
            );
            if let Err(error) = state.endpoint.handle(now, id, message) {
                tracing::info!(connection = %id, %error, "agent request refused");
            }
            state.pump(&mut pending);
            state.endpoint.close_connection(now, id);
            let answer = match state.sockets.remove(&id).map(|socket| socket.kind) {
                Some(SocketKind::Http(answer)) => answer,
                _ => None,
            };
            state.pump(&mut pending);
            answer
        };
        self.notify(pending).await;
        // The endpoint answers every request; this fallback only guards the contract.
        answer.map_or_else(
            || ServerToAgent {
                instance_uid: uid,
                ..ServerToAgent::default()
            },
            |answer| *answer,
        )
    }

    /// Disconnects idle agents and forgets long-gone ones whose time came.
    /// Also delivers the batched heartbeats; the caller runs it at least every
    /// [`HEARTBEAT_BATCH_PERIOD`].
    pub(crate) async fn handle_timeout(&self) {
        let mut pending = Vec::new();
        {
            let mut state = self.lock();
            state.endpoint.handle_timeout(Instant::now());
            state.pump(&mut pending);
            let beats = std::mem::take(&mut state.heartbeats);
            pending.extend(
                beats
                    .into_iter()
                    .map(|uid| ServerNotification::Heartbeat { uid }),
            );
        }
        self.notify(pending).await;
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.lock().endpoint.poll_timeout()
    }

    /// Delivers notifications, waiting for room: a slow embedder slows agents down rather
    /// than growing memory without bound.
    pub(crate) async fn notify(&self, pending: Pending) {
        for notification in pending {
            if self.inner.notify.send(notification).await.is_err() {
                return; // Nobody listens any more.
            }
        }
    }

    /// Delivers what fits in the notification channel now and returns the rest, in order,
    /// for [`notify`](Self::notify). Lets a socket task deliver without an await in the
    /// common case, which keeps the wait (and its state) off its hot path.
    pub(crate) fn notify_ready(&self, pending: Pending) -> Pending {
        let mut pending = pending.into_iter();
        while let Some(notification) = pending.next() {
            match self.inner.notify.try_send(notification) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(notification)) => {
                    return std::iter::once(notification).chain(pending).collect();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Vec::new(),
            }
        }
        Vec::new()
    }

    /// Delivers notifications from synchronous callers; drops (and logs) what does not fit.
    fn notify_now(&self, pending: Pending) {
        for notification in pending {
            if let Err(mpsc::error::TrySendError::Full(dropped)) =
                self.inner.notify.try_send(notification)
            {
                tracing::warn!(?dropped, "notification channel full; notification dropped");
            }
        }
    }
}

impl State {
    fn open(
        &mut self,
        info: ConnectionInfo,
        endpoint_url: Option<String>,
        mode: TransportMode,
        kind: SocketKind,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let mut params = ConnectionParams::new(mode);
        params.endpoint_url = endpoint_url;
        self.endpoint.open_connection(Instant::now(), id, params);
        self.sockets.insert(id, Socket { info, kind });
        id
    }

    /// Moves what the endpoint produced to the sockets and the notifications.
    fn pump(&mut self, pending: &mut Pending) {
        while let Some((connection, message)) = self.endpoint.poll_transmit() {
            let Some(socket) = self.sockets.get_mut(&connection) else {
                continue;
            };
            match &mut socket.kind {
                SocketKind::WebSocket(outbound) => {
                    let frame = framing::encode_server_message(TransportMode::WebSocket, &message);
                    let room = self
                        .queue_per_agent
                        .saturating_mul(self.endpoint.agents_on(connection).count().max(1));
                    if !outbound.push(Outbound::Frame(Bytes::from(frame)), room) {
                        // The agent does not read what we send: close the socket; its task
                        // reports the close, which disconnects its agents.
                        tracing::warn!(%connection, "agent not reading; closing its WebSocket");
                        outbound.abort(POLICY_VIOLATION, NOT_READING);
                    }
                }
                SocketKind::Http(answer) => *answer = Some(Box::new(message)),
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                EndpointEvent::Connected {
                    uid,
                    connection,
                    mode,
                    ..
                } => {
                    let Some(socket) = self.sockets.get(&connection) else {
                        continue;
                    };
                    self.seen_on.insert(uid, socket.info.clone());
                    pending.push(ServerNotification::Connected {
                        uid,
                        transport: mode,
                        connection: socket.info.clone(),
                    });
                }
                EndpointEvent::Agent { uid, event, .. } => {
                    pending.push(ServerNotification::Event { uid, event });
                }
                // Batched: one wake of the receiver per batch, not per heartbeat.
                EndpointEvent::Heartbeat { uid, .. } => self.heartbeats.push(uid),
                EndpointEvent::UidReassigned { from, to, .. } => {
                    if let Some(info) = self.seen_on.remove(&from) {
                        self.seen_on.insert(to, info);
                    }
                    pending.push(ServerNotification::UidReassigned { from, to });
                }
                EndpointEvent::Disconnected { uid, .. } => {
                    self.heartbeats.retain(|beat| {
                        let of_this_agent = *beat == uid;
                        if of_this_agent {
                            pending.push(ServerNotification::Heartbeat { uid });
                        }
                        !of_this_agent
                    });
                    pending.push(ServerNotification::Disconnected { uid });
                }
                EndpointEvent::Forgotten { uid, .. } => {
                    self.seen_on.remove(&uid);
                }
                EndpointEvent::CloseConnection {
                    connection, reason, ..
                } => {
                    let Some(socket) = self.sockets.get(&connection) else {
                        continue;
                    };
                    let close = match reason {
                        DisconnectReason::Idle => Outbound::Close(GOING_AWAY, "idle timeout"),
                        _ => Outbound::Close(POLICY_VIOLATION, "agent forgotten by the server"),
                    };
                    if let SocketKind::WebSocket(outbound) = &socket.kind {
                        outbound.push(close, usize::MAX);
                    }
                }
                EndpointEvent::Refused {
                    connection, reason, ..
                } => {
                    tracing::info!(%connection, reason, "message refused before any session");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opamp_proto::{AgentCapabilities, ServerCapabilities};

    use super::*;

    fn sessions(queue_per_agent: usize) -> AgentSessions {
        let mut config = EndpointConfig::default();
        config.session =
            opamp_session::ServerSessionConfig::new(ServerCapabilities::OFFERS_PACKAGES);
        let (notify, _receiver) = mpsc::channel(64);
        AgentSessions::new(config, queue_per_agent, notify)
    }

    fn local() -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: "127.0.0.1:40000".parse().expect("address"),
            tls: false,
            peer_certificates: None,
        }
    }

    fn hello(uid: InstanceUid) -> AgentToServer {
        AgentToServer {
            instance_uid: uid.to_vec(),
            capabilities: (AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES)
                .bits(),
            ..AgentToServer::default()
        }
    }

    #[tokio::test]
    async fn a_websocket_whose_queue_overflows_is_told_to_close_with_1008_first() {
        let sessions = sessions(1);
        let (id, mut receiver) = sessions.open_websocket(local(), None);
        let uid = InstanceUid::new_v7();
        let _ = sessions.websocket_message(id, hello(uid));
        // The answer to the hello fills the room of one; an offer does not fit.
        sessions.with_session(uid, |session| {
            session.offer_packages(opamp_proto::v1::PackagesAvailable::default());
        });
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Close(POLICY_VIOLATION, NOT_READING)),
            "the close order goes ahead of the queued answer"
        );
        assert_eq!(receiver.try_recv(), None, "what waited is dropped");
    }

    #[tokio::test]
    async fn a_websocket_that_keeps_up_gets_every_answer_in_order() {
        let sessions = sessions(1);
        let (id, mut receiver) = sessions.open_websocket(local(), None);
        let uid = InstanceUid::new_v7();
        let _ = sessions.websocket_message(id, hello(uid));
        assert!(matches!(receiver.recv().await, Some(Outbound::Frame(_))));
        sessions.with_session(uid, |session| {
            session.offer_packages(opamp_proto::v1::PackagesAvailable::default());
        });
        assert!(matches!(receiver.recv().await, Some(Outbound::Frame(_))));
        sessions.websocket_closed(id).await;
        assert_eq!(
            receiver.recv().await,
            None,
            "closed: the hub dropped its end"
        );
    }

    fn beat(uid: InstanceUid, sequence_num: u64) -> AgentToServer {
        AgentToServer {
            sequence_num,
            ..hello(uid)
        }
    }

    fn heartbeats_in(pending: &[ServerNotification]) -> usize {
        pending
            .iter()
            .filter(|n| matches!(n, ServerNotification::Heartbeat { .. }))
            .count()
    }

    #[tokio::test]
    async fn heartbeats_wait_for_the_timer_and_arrive_together() {
        let (notify, mut receiver) = mpsc::channel(64);
        let sessions = AgentSessions::new(EndpointConfig::default(), 4, notify);
        let uids = [InstanceUid::new_v7(), InstanceUid::new_v7()];
        let mut connections = Vec::new();
        for uid in uids {
            let (id, outbound) = sessions.open_websocket(local(), None);
            let _ = sessions.websocket_message(id, hello(uid));
            connections.push((id, outbound));
        }
        for ((id, _), uid) in connections.iter().zip(uids) {
            let pending = sessions.websocket_message(*id, beat(uid, 1));
            assert_eq!(heartbeats_in(&pending), 0, "held back: {pending:?}");
        }
        while receiver.try_recv().is_ok() {} // the hellos' notifications
        sessions.handle_timeout().await;
        let mut delivered = Vec::new();
        while let Ok(notification) = receiver.try_recv() {
            delivered.push(notification);
        }
        assert_eq!(heartbeats_in(&delivered), 2, "{delivered:?}");
        sessions.handle_timeout().await;
        assert!(
            receiver.try_recv().is_err(),
            "each heartbeat is delivered once"
        );
    }

    #[tokio::test]
    async fn a_batched_heartbeat_goes_ahead_of_its_agents_disconnection() {
        let (notify, mut receiver) = mpsc::channel(64);
        let sessions = AgentSessions::new(EndpointConfig::default(), 4, notify);
        let uid = InstanceUid::new_v7();
        let (id, _outbound) = sessions.open_websocket(local(), None);
        let _ = sessions.websocket_message(id, hello(uid));
        let _ = sessions.websocket_message(id, beat(uid, 1));
        while receiver.try_recv().is_ok() {}
        sessions.websocket_closed(id).await;
        let first = receiver.try_recv().expect("a notification");
        assert!(
            matches!(first, ServerNotification::Heartbeat { uid: u } if u == uid),
            "{first:?}"
        );
        let second = receiver.try_recv().expect("a notification");
        assert!(matches!(second, ServerNotification::Disconnected { uid: u } if u == uid));
        sessions.handle_timeout().await;
        assert!(receiver.try_recv().is_err(), "nothing left in the batch");
    }
}
