//! The connection registry: one [`ServerSession`] per agent, the link to reach it, and the
//! operations the embedding server uses to talk to one agent, a set, or all of them.
//!
//! Messages the sessions produce are encoded once, under the lock, and queued on the agent's
//! WebSocket; agents on HTTP keep them in their session until their next poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opamp_proto::InstanceUid;
use opamp_proto::v1::{AgentToServer, ServerToAgent};
use opamp_session::{ServerConfig as SessionConfig, ServerEvent, ServerSession, TransportMode};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::listener::ConnectionInfo;

/// How an agent is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// A WebSocket (`ws://` or `wss://`).
    WebSocket,
    /// HTTP polling (`http://` or `https://`).
    Http,
}

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
        transport: TransportKind,
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
    /// The agent's WebSocket closed, or an HTTP agent stopped polling for longer than the
    /// idle timeout.
    Disconnected {
        /// The agent.
        uid: InstanceUid,
    },
}

enum Link {
    /// Not connected since then.
    Gone {
        since: Instant,
    },
    WebSocket {
        id: u64,
        outbound: mpsc::Sender<Bytes>,
        /// Cancels the connection's token when this link is replaced, forgotten or
        /// dropped for falling behind, which makes the connection task close the socket.
        _close_on_drop: DropGuard,
    },
    Http {
        last_poll: Instant,
    },
}

struct AgentSlot {
    session: ServerSession,
    /// The transport the session was built for.
    mode: TransportMode,
    link: Link,
    connection: Option<ConnectionInfo>,
}

struct Inner {
    agents: Mutex<HashMap<InstanceUid, AgentSlot>>,
    session_template: SessionConfig,
    notify: mpsc::Sender<ServerNotification>,
    next_link_id: AtomicU64,
}

/// Handle to every agent session of one server. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("agents", &self.lock().len())
            .finish()
    }
}

/// Events collected under the lock, delivered after it is released.
pub(crate) type Pending = Vec<ServerNotification>;

impl Registry {
    pub(crate) fn new(
        session_template: SessionConfig,
        notify: mpsc::Sender<ServerNotification>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                agents: Mutex::new(HashMap::new()),
                session_template,
                notify,
                next_link_id: AtomicU64::new(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<InstanceUid, AgentSlot>> {
        // A panic while holding the lock leaves sessions in whatever state they reached;
        // serving the others is better than taking the whole server down.
        self.inner
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on one agent's session, then sends what the session queued (WebSocket) or
    /// leaves it for the next poll (HTTP). `None` when the agent is unknown.
    ///
    /// `f` runs under the registry's lock: keep it short and never block or await in it.
    pub fn with_session<R>(
        &self,
        uid: InstanceUid,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Option<R> {
        let now = Instant::now();
        let mut pending = Vec::new();
        let result = {
            let mut agents = self.lock();
            let slot = agents.get_mut(&uid)?;
            let result = f(&mut slot.session);
            flush(uid, slot, now, &mut pending);
            result
        };
        self.notify_now(pending);
        Some(result)
    }

    /// Runs `f` on the sessions of every listed agent that is known; returns how many.
    pub fn with_sessions(
        &self,
        uids: &[InstanceUid],
        mut f: impl FnMut(InstanceUid, &mut ServerSession),
    ) -> usize {
        let now = Instant::now();
        let mut pending = Vec::new();
        let mut count = 0;
        {
            let mut agents = self.lock();
            for uid in uids {
                if let Some(slot) = agents.get_mut(uid) {
                    f(*uid, &mut slot.session);
                    flush(*uid, slot, now, &mut pending);
                    count += 1;
                }
            }
        }
        self.notify_now(pending);
        count
    }

    /// Runs `f` on every known agent's session; returns how many.
    pub fn with_all(&self, mut f: impl FnMut(InstanceUid, &mut ServerSession)) -> usize {
        let now = Instant::now();
        let mut pending = Vec::new();
        let count = {
            let mut agents = self.lock();
            for (uid, slot) in agents.iter_mut() {
                f(*uid, &mut slot.session);
                flush(*uid, slot, now, &mut pending);
            }
            agents.len()
        };
        self.notify_now(pending);
        count
    }

    /// Agents currently connected (open WebSocket, or HTTP polls within the idle timeout).
    pub fn connected(&self) -> Vec<InstanceUid> {
        self.lock()
            .iter()
            .filter(|(_, slot)| !matches!(slot.link, Link::Gone { .. }))
            .map(|(uid, _)| *uid)
            .collect()
    }

    /// Number of agents with a session, connected or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no agent has a session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connection an agent last spoke on (address and client certificate).
    pub fn connection_info(&self, uid: InstanceUid) -> Option<ConnectionInfo> {
        self.lock()
            .get(&uid)
            .and_then(|slot| slot.connection.clone())
    }

    /// Closes the agent's WebSocket (if any) and forgets its session. Returns whether it
    /// was known.
    pub fn forget(&self, uid: InstanceUid) -> bool {
        // Dropping the slot drops the link's guard, which closes the socket.
        self.lock().remove(&uid).is_some()
    }

    /// Handles one message from an agent. For WebSocket the replies are queued on `link`;
    /// for HTTP the first reply is returned (the rest wait for the next poll).
    pub(crate) fn deliver(
        &self,
        message: AgentToServer,
        uid: InstanceUid,
        link: &mut LinkHandle,
        connection: &ConnectionInfo,
        now: Instant,
        pending: &mut Pending,
    ) -> Option<ServerToAgent> {
        let mode = match link {
            LinkHandle::WebSocket { .. } => TransportMode::WebSocket,
            LinkHandle::Http => TransportMode::HttpPolling,
        };
        let mut agents = self.lock();
        let slot = agents.entry(uid).or_insert_with(|| AgentSlot {
            session: self.new_session(mode),
            mode,
            link: Link::Gone { since: now },
            connection: None,
        });
        if slot.mode != mode {
            // The agent switched transports; a session answers on one only. The new
            // session does not know the agent's state and asks for a full report.
            slot.session = self.new_session(mode);
            slot.mode = mode;
        }
        let newly_linked = match (&slot.link, &*link) {
            (Link::WebSocket { id, .. }, LinkHandle::WebSocket { id: mine, .. }) => id != mine,
            (Link::Http { .. }, LinkHandle::Http) => false,
            _ => true,
        };
        if newly_linked {
            if !matches!(slot.link, Link::Gone { .. }) {
                // A new connection replaces a live one (the agent reconnected before we
                // noticed the old one drop): close the old one in the session's eyes first.
                slot.session.handle_disconnected(now);
                drain_events(uid, &mut slot.session, pending);
                pending.push(ServerNotification::Disconnected { uid });
            }
            slot.link = match link {
                LinkHandle::WebSocket {
                    id,
                    outbound,
                    dropped,
                } => Link::WebSocket {
                    id: *id,
                    outbound: outbound.clone(),
                    _close_on_drop: dropped.clone().drop_guard(),
                },
                LinkHandle::Http => Link::Http { last_poll: now },
            };
            slot.connection = Some(connection.clone());
            let transport = match link {
                LinkHandle::WebSocket { .. } => TransportKind::WebSocket,
                LinkHandle::Http => TransportKind::Http,
            };
            pending.push(ServerNotification::Connected {
                uid,
                transport,
                connection: connection.clone(),
            });
        }
        if let Link::Http { last_poll } = &mut slot.link {
            *last_poll = now;
        }
        if let Err(error) = slot.session.handle_message(message, now) {
            // The session answers with an error response itself; the link stays up.
            tracing::info!(%uid, %error, "agent message refused by the session");
        }
        match link {
            LinkHandle::WebSocket { .. } => {
                flush(uid, slot, now, pending);
                None
            }
            LinkHandle::Http => {
                let reply = slot.session.poll_transmit(now);
                drain_events(uid, &mut slot.session, pending);
                reply
            }
        }
    }

    /// Marks a WebSocket gone, if it is still the agent's current link.
    pub(crate) fn websocket_closed(
        &self,
        uid: InstanceUid,
        link_id: u64,
        now: Instant,
        pending: &mut Pending,
    ) {
        let mut agents = self.lock();
        if let Some(slot) = agents.get_mut(&uid)
            && matches!(slot.link, Link::WebSocket { id, .. } if id == link_id)
        {
            slot.link = Link::Gone { since: now };
            slot.session.handle_disconnected(now);
            drain_events(uid, &mut slot.session, pending);
            pending.push(ServerNotification::Disconnected { uid });
        }
    }

    /// Disconnects HTTP agents that have not polled for `idle_timeout`, and forgets agents
    /// disconnected for longer than `forget_after`.
    pub(crate) fn sweep(
        &self,
        idle_timeout: Duration,
        forget_after: Option<Duration>,
        now: Instant,
    ) {
        let mut pending = Vec::new();
        {
            let mut agents = self.lock();
            for (uid, slot) in agents.iter_mut() {
                if matches!(slot.link, Link::Http { last_poll } if now.saturating_duration_since(last_poll) > idle_timeout)
                {
                    slot.link = Link::Gone { since: now };
                    slot.session.handle_disconnected(now);
                    drain_events(*uid, &mut slot.session, &mut pending);
                    pending.push(ServerNotification::Disconnected { uid: *uid });
                }
            }
            if let Some(forget_after) = forget_after {
                agents.retain(|_, slot| {
                    !matches!(slot.link, Link::Gone { since } if now.saturating_duration_since(since) > forget_after)
                });
            }
        }
        self.notify_now(pending);
    }

    fn new_session(&self, mode: TransportMode) -> ServerSession {
        let mut config = self.inner.session_template.clone();
        config.mode = mode;
        ServerSession::new(config)
    }

    pub(crate) fn new_link_id(&self) -> u64 {
        self.inner.next_link_id.fetch_add(1, Ordering::Relaxed)
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

/// The connection side of a link, as the connection task knows it.
pub(crate) enum LinkHandle {
    WebSocket {
        id: u64,
        outbound: mpsc::Sender<Bytes>,
        /// Cancelled when the registry lets go of this connection.
        dropped: CancellationToken,
    },
    Http,
}

/// Sends what the session queued over its WebSocket and collects its events.
fn flush(uid: InstanceUid, slot: &mut AgentSlot, now: Instant, pending: &mut Pending) {
    if let Link::WebSocket { outbound, .. } = &slot.link {
        while let Some(message) = slot.session.poll_transmit(now) {
            let frame = Bytes::from(opamp_proto::codec::encode_ws_frame(&message));
            if outbound.try_send(frame).is_err() {
                // The agent does not read what we send: drop the link, which closes it.
                tracing::warn!(%uid, "agent not reading; closing its WebSocket");
                slot.link = Link::Gone { since: now };
                slot.session.handle_disconnected(now);
                pending.push(ServerNotification::Disconnected { uid });
                break;
            }
        }
    }
    drain_events(uid, &mut slot.session, pending);
}

fn drain_events(uid: InstanceUid, session: &mut ServerSession, pending: &mut Pending) {
    while let Some(event) = session.poll_event() {
        pending.push(ServerNotification::Event { uid, event });
    }
}
