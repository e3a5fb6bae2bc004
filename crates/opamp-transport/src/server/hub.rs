//! The IO side of [`ServerEndpoint`]: the endpoint under a lock, the sockets its
//! connection ids stand for, and the notification channel. All protocol decisions
//! (routing, holding uids, idle deadlines, reassignment) are the endpoint's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tokio_util::sync::CancellationToken;

use super::listener::ConnectionInfo;

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

/// A message for a WebSocket's task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Bytes),
    Close(u16, &'static str),
}

/// A WebSocket's send queue, bounded by the agent sessions (the bound grows with the number of
/// agents sharing the socket).
struct OutboundQueue {
    sender: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl OutboundQueue {
    /// Queues `message` unless `room` messages already wait; false when it did not fit
    /// or the task is gone.
    fn push(&self, message: Outbound, room: usize) -> bool {
        if self.queued.load(Ordering::Acquire) >= room {
            return false;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.sender.send(message).is_ok()
    }
}

/// The WebSocket task's end of its queue.
pub(crate) struct OutboundReceiver {
    receiver: mpsc::UnboundedReceiver<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl OutboundReceiver {
    /// The next message to send.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        let message = self.receiver.recv().await?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(message)
    }

    /// A message already waiting, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        let message = self.receiver.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(message)
    }
}

struct Socket {
    info: ConnectionInfo,
    /// WebSocket: the task's queue. HTTP: none, the answer waits in `http_answer`.
    outbound: Option<OutboundQueue>,
    /// Cancelled when the socket must close at once (the agent does not read).
    close: CancellationToken,
    http_answer: Option<ServerToAgent>,
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
}

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

    /// Registers an upgraded WebSocket. Returns its id, the queue of what to send, and the
    /// token cancelled when it must close at once.
    pub(crate) fn open_websocket(
        &self,
        info: ConnectionInfo,
        endpoint_url: Option<String>,
    ) -> (ConnectionId, OutboundReceiver, CancellationToken) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        let queue = OutboundQueue {
            sender,
            queued: queued.clone(),
        };
        let mut state = self.lock();
        let id = state.open(
            info,
            endpoint_url,
            TransportMode::WebSocket,
            Some(queue),
            close.clone(),
        );
        (id, OutboundReceiver { receiver, queued }, close)
    }

    /// Handles one message of a WebSocket; answers and pushes go to the sockets' queues.
    pub(crate) async fn websocket_message(&self, connection: ConnectionId, message: AgentToServer) {
        let mut pending = Vec::new();
        {
            let mut state = self.lock();
            if let Err(error) = state.endpoint.handle(Instant::now(), connection, message) {
                // Answered with an error response; the socket stays up.
                tracing::info!(%connection, %error, "agent message refused");
            }
            state.pump(&mut pending);
        }
        self.notify(pending).await;
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
                None,
                CancellationToken::new(),
            );
            if let Err(error) = state.endpoint.handle(now, id, message) {
                tracing::info!(connection = %id, %error, "agent request refused");
            }
            state.pump(&mut pending);
            state.endpoint.close_connection(now, id);
            let answer = state
                .sockets
                .remove(&id)
                .and_then(|socket| socket.http_answer);
            state.pump(&mut pending);
            answer
        };
        self.notify(pending).await;
        // The endpoint answers every request; this fallback only guards the contract.
        answer.unwrap_or_else(|| ServerToAgent {
            instance_uid: uid,
            ..ServerToAgent::default()
        })
    }

    /// Disconnects idle agents and forgets long-gone ones whose time came.
    pub(crate) async fn handle_timeout(&self) {
        let mut pending = Vec::new();
        {
            let mut state = self.lock();
            state.endpoint.handle_timeout(Instant::now());
            state.pump(&mut pending);
        }
        self.notify(pending).await;
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.lock().endpoint.poll_timeout()
    }

    /// Delivers notifications, waiting for room: a slow embedder slows agents down rather
    /// than growing memory without bound.
    async fn notify(&self, pending: Pending) {
        for notification in pending {
            if self.inner.notify.send(notification).await.is_err() {
                return; // Nobody listens any more.
            }
        }
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
        outbound: Option<OutboundQueue>,
        close: CancellationToken,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let mut params = ConnectionParams::new(mode);
        params.endpoint_url = endpoint_url;
        self.endpoint.open_connection(Instant::now(), id, params);
        self.sockets.insert(
            id,
            Socket {
                info,
                outbound,
                close,
                http_answer: None,
            },
        );
        id
    }

    /// Moves what the endpoint produced to the sockets and the notifications.
    fn pump(&mut self, pending: &mut Pending) {
        while let Some((connection, message)) = self.endpoint.poll_transmit() {
            let Some(socket) = self.sockets.get_mut(&connection) else {
                continue;
            };
            match &socket.outbound {
                Some(outbound) => {
                    let frame = framing::encode_server_message(TransportMode::WebSocket, &message);
                    let room = self
                        .queue_per_agent
                        .saturating_mul(self.endpoint.agents_on(connection).count().max(1));
                    if !outbound.push(Outbound::Frame(Bytes::from(frame)), room) {
                        // The agent does not read what we send: close the socket; its task
                        // reports the close, which disconnects its agents.
                        tracing::warn!(%connection, "agent not reading; closing its WebSocket");
                        socket.close.cancel();
                    }
                }
                None => socket.http_answer = Some(message),
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
                EndpointEvent::Heartbeat { uid, .. } => {
                    pending.push(ServerNotification::Heartbeat { uid });
                }
                EndpointEvent::UidReassigned { from, to, .. } => {
                    if let Some(info) = self.seen_on.remove(&from) {
                        self.seen_on.insert(to, info);
                    }
                    pending.push(ServerNotification::UidReassigned { from, to });
                }
                EndpointEvent::Disconnected { uid, .. } => {
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
                    if let Some(outbound) = &socket.outbound
                        && !outbound.push(close, usize::MAX)
                    {
                        socket.close.cancel();
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
