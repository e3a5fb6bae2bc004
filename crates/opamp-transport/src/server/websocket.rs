//! WebSocket agents: binary messages carry the `0x00` header and an `AgentToServer`.
//!
//! Close codes sent on refusal (documented in the crate docs):
//! 1009 message too big, 1002 bad OpAMP header byte, 1003 text message, 1007 undecodable
//! protobuf or invalid instance uid, 1001 idle timeout (no frame, not even the pong to our
//! ping, for the idle timeout; or every agent on it went silent beyond its idle bound) or
//! server shutdown, 1008 the agent did not read what the server sent, was forgotten by the
//! server, may not speak for the instance uid it claims, or sent no OpAMP message within
//! the first-message timeout of the upgrade. An upgrade that names its agent in
//! `OpAMP-Instance-UID` is authorised before it is accepted (403 when refused), and may
//! carry a credential the embedder issued in its response.
//!
//! Several agents may share one WebSocket: messages are routed by instance uid (the
//! endpoint's rule). A uid held by another open connection is answered with an error
//! response and changes nothing; the socket stays open.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::FromRequest;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use opamp_proto::InstanceUid;
use opamp_proto::codec::CodecError;
use opamp_session::{SessionError, TransportMode, framing};

use super::Shared;
use super::authorize::{self, AGENT_CREDENTIAL_HEADER, AgentClaim, uid_from_headers};
use super::listener::{ConnectionInfo, ConnectionSlot};
use super::outbound::{Outbound, OutboundReceiver};
use super::stats::{RefusalReason, TransportStats};

/// Close codes (RFC 6455 section 7.4.1).
pub(crate) mod close_code {
    /// The server is going away or the peer was silent too long.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// Protocol error: the OpAMP header byte is not 0.
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// A text message where OpAMP only uses binary ones.
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    /// The payload is not a valid `AgentToServer`.
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// The agent does not read what the server sends.
    pub(crate) const POLICY_VIOLATION: u16 = 1008;
    /// The message exceeds the size limit.
    pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
}

/// Room for the varint header on top of the protobuf size limit.
const HEADER_ALLOWANCE: usize = 10;

pub(crate) async fn upgrade(
    shared: Arc<Shared>,
    connection: ConnectionInfo,
    endpoint_url: Option<String>,
    request: axum::extract::Request,
) -> Response {
    let slot = request.extensions().get::<Arc<ConnectionSlot>>().cloned();
    let headers = request.headers().clone();
    let upgrade = match WebSocketUpgrade::from_request(request, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // A valid upgrade that names its agent is authorised now: a refusal is a plain 403,
    // and a credential the embedder issues can travel in the upgrade response. (After the
    // upgrade request was checked, so a malformed one never spends an enrollment.)
    let named = uid_from_headers(&headers);
    let mut credential = None;
    if let Some(uid) = named {
        let verdict = authorize::check(
            &shared,
            &AgentClaim {
                uid,
                connection: &connection,
                headers: &headers,
                can_issue_credential: true,
            },
        );
        if !verdict.is_allowed() {
            shared
                .stats
                .refused(TransportMode::WebSocket, RefusalReason::Unauthorized);
            return (
                http::StatusCode::FORBIDDEN,
                "not authorised for this instance_uid",
            )
                .into_response();
        }
        credential = authorize::credential_header(&verdict);
    }
    let limit = shared
        .config
        .limits
        .max_message_size
        .saturating_add(HEADER_ALLOWANCE);
    let response = upgrade
        // Small buffers: most agents are idle most of the time, and memory per idle agent
        // is what bounds a server's fleet size. A larger message is read in several
        // reads (tungstenite reserves its whole length once the frame header is in).
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_write_buffer_size(limit.saturating_mul(2))
        .max_message_size(limit)
        .max_frame_size(limit);
    // Boxed: the closure below is kept, moved-from, in the upgrade task for the socket's
    // whole life, so what it captures should be one pointer.
    let task = Box::new(SocketTask {
        headers: shared
            .config
            .authorize_agent
            .is_some()
            .then(|| detached_headers(&headers)),
        named,
        shared,
        connection,
        endpoint_url,
        _slot: slot,
    });
    drop(headers);
    let response = response.on_upgrade(move |socket| run(task, socket));
    let mut response = response.into_response();
    if let Some(credential) = credential {
        response
            .headers_mut()
            .insert(AGENT_CREDENTIAL_HEADER, credential);
    }
    response
}

/// Bytes tungstenite reads at a time. OpAMP messages of an idle agent (heartbeats, status
/// changes) are far smaller; the buffer lives as long as the connection.
const READ_BUFFER_SIZE: usize = 1024;

/// What a WebSocket's task keeps from its upgrade request.
struct SocketTask {
    shared: Arc<Shared>,
    connection: ConnectionInfo,
    /// Taken when the socket is registered.
    endpoint_url: Option<String>,
    /// The headers the embedder's authorizer sees when an agent multiplexed on this socket
    /// is authorised on its first message; `None` without an authorizer.
    headers: Option<http::HeaderMap>,
    /// The uid authorised at the upgrade, if the request named one.
    named: Option<InstanceUid>,
    /// Counts the connection against the limits until the socket's task ends.
    _slot: Option<Arc<ConnectionSlot>>,
}

/// Headers that only served the upgrade handshake.
const UPGRADE_MECHANICS: [http::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
];

/// A copy of `headers` that owns its values. hyper's header values are slices of the
/// connection's read buffer, so keeping them would keep that whole buffer (8 KiB and more)
/// alive for the life of the WebSocket.
fn detached_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut copy = http::HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        if UPGRADE_MECHANICS.contains(name) {
            continue;
        }
        if let Ok(mut owned) = http::HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            copy.append(name.clone(), owned);
        }
    }
    copy
}

/// When the socket's one timer must wake: the idle close, the ping before it, and the
/// first-message deadline, all derived from when the peer was last heard.
struct Deadlines {
    idle: std::time::Duration,
    last_heard: tokio::time::Instant,
    /// A ping went out in the current silence.
    pinged: bool,
    /// A socket that never says who it is must not live on our own pings (issue 22).
    first_message_by: Option<tokio::time::Instant>,
}

/// What the timer found due.
enum Due {
    Close(u16, &'static str),
    Ping,
    Nothing,
}

impl Deadlines {
    fn idle_at(&self) -> tokio::time::Instant {
        self.last_heard + self.idle
    }

    /// Agents without heartbeats are legal: after half the idle timeout in silence we ping,
    /// and the pong (which WebSocket stacks send on their own) keeps a live agent in. Half,
    /// not less: at the default 90 s a third would be 30 s, the usual heartbeat interval,
    /// and a ping would cross nearly every heartbeat.
    fn ping_at(&self) -> Option<tokio::time::Instant> {
        (!self.pinged).then(|| self.last_heard + self.idle / 2)
    }

    fn next_wake(&self) -> tokio::time::Instant {
        [self.ping_at(), self.first_message_by]
            .into_iter()
            .flatten()
            .fold(self.idle_at(), std::cmp::min)
    }

    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
        self.pinged = false;
    }

    fn due(&mut self, now: tokio::time::Instant) -> Due {
        if now >= self.idle_at() {
            return Due::Close(close_code::GOING_AWAY, "idle timeout");
        }
        if self.first_message_by.is_some_and(|by| now >= by) {
            return Due::Close(close_code::POLICY_VIOLATION, "no OpAMP message in time");
        }
        if self.ping_at().is_some_and(|at| now >= at) {
            self.pinged = true;
            return Due::Ping;
        }
        Due::Nothing
    }
}

/// Why the receive loop ended: `Some` with the close frame to send, `None` when the
/// socket is already gone or closed by the peer.
type LoopEnd = Option<(u16, &'static str)>;

/// The socket's task. A plain function returning an `async move` block rather than an
/// `async fn`: an `async fn` copies its arguments into locals and keeps both in its state,
/// which doubled what every idle socket's task holds.
#[allow(clippy::manual_async_fn)] // On purpose, see above.
fn run(mut task: Box<SocketTask>, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
    async move {
        let shared = &*task.shared;
        let sessions = &shared.sessions;
        let stats = &shared.stats;
        let _open = stats.opened(TransportMode::WebSocket);
        let (id, mut outbound) =
            sessions.open_websocket(task.connection.clone(), task.endpoint_url.take());
        // Several agents may share this socket (OpAMP multiplexing); each uid is authorised
        // once, on its first message.
        let mut authorized: HashSet<InstanceUid> = task.named.into_iter().collect();
        let now = tokio::time::Instant::now();
        let mut deadlines = Deadlines {
            idle: shared.config.idle_timeout,
            last_heard: now,
            pinged: false,
            first_message_by: Some(now + shared.config.admission.first_message_timeout),
        };
        // One timer for every deadline, re-armed only when it fires: an idle socket costs one
        // timer entry, and a message costs no timer work at all.
        let timer = tokio::time::sleep_until(deadlines.next_wake());
        tokio::pin!(timer);

        let close: LoopEnd = loop {
            tokio::select! {
                received = socket.recv() => {
                    deadlines.heard(tokio::time::Instant::now());
                    let message = match received {
                        None => break None,
                        Some(Ok(message)) => message,
                        Some(Err(error)) => break refusal_for_socket_error(error),
                    };
                    let frame = match message {
                        Message::Binary(frame) => frame,
                        Message::Text(_) => break Some((close_code::UNSUPPORTED_DATA, "OpAMP uses binary messages")),
                        Message::Close(_) => {
                            Box::pin(finish_close_handshake(&mut socket)).await;
                            break None;
                        }
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    let claim = ClaimContext { shared, connection: &task.connection, headers: task.headers.as_ref() };
                    let pending = match accept_message(&claim, id, &frame, &mut authorized) {
                        Ok(pending) => pending,
                        Err(close) => break Some(close),
                    };
                    deadlines.first_message_by = None;
                    let waiting = sessions.notify_ready(pending);
                    if !waiting.is_empty() {
                        // The embedder is behind: wait for room (boxed, as this is rare and its
                        // state would otherwise be part of every idle socket's task).
                        Box::pin(sessions.notify(waiting)).await;
                    }
                    // Send the answers before reading on, so a burst of messages from many
                    // agents on this socket does not pile up its queue.
                    if let Some(close) = send_queued(&mut socket, &mut outbound, stats).await {
                        break close;
                    }
                }
                queued = outbound.recv() => {
                    match queued {
                        Some(Outbound::Frame(frame)) => {
                            stats.sent(TransportMode::WebSocket, frame.len());
                            if socket.send(Message::Binary(frame)).await.is_err() {
                                break None;
                            }
                        }
                        Some(Outbound::Close(code, reason)) => break Some((code, reason)),
                        None => break None, // Unreachable while the hub holds the sender.
                    }
                }
                () = &mut timer => {
                    match deadlines.due(tokio::time::Instant::now()) {
                        Due::Close(code, reason) => break Some((code, reason)),
                        Due::Ping => {
                            if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                                break None;
                            }
                        }
                        Due::Nothing => {}
                    }
                    timer.as_mut().reset(deadlines.next_wake());
                }
                () = shared.shutdown.cancelled() => {
                    break Some((close_code::GOING_AWAY, "server shutting down"));
                }
            }
        };
        if let Some((code, reason)) = close {
            if let Some(refusal) = refusal_counted_as(code) {
                stats.refused(TransportMode::WebSocket, refusal);
            }
            tracing::info!(remote_addr = %task.connection.remote_addr, code, reason, "closing WebSocket");
            // Boxed: what runs once at the end need not be part of the task's state for the
            // connection's whole life.
            Box::pin(close_socket(&mut socket, code, reason)).await;
        }
        Box::pin(sessions.websocket_closed(id)).await;
    }
}

/// Sends a close frame and waits (bounded) for the peer's.
async fn close_socket(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Wait for the peer's Close so the TCP connection ends cleanly.
            finish_close_handshake(socket).await;
        }
    })
    .await;
}

/// Who is on a socket, for authorising the uids its messages claim.
struct ClaimContext<'a> {
    shared: &'a Shared,
    connection: &'a ConnectionInfo,
    headers: Option<&'a http::HeaderMap>,
}

/// Decodes one binary message, authorises the uid it claims and hands it to the sessions.
/// Returns the notifications to deliver, or the close frame for the socket. Synchronous,
/// so the decoded message never lives in the socket task's state.
fn accept_message(
    claim: &ClaimContext<'_>,
    id: opamp_session::ConnectionId,
    frame: &[u8],
    authorized: &mut HashSet<InstanceUid>,
) -> Result<super::hub::Pending, (u16, &'static str)> {
    let shared = claim.shared;
    let limits = &shared.config.limits;
    let message = match framing::decode_agent_message(TransportMode::WebSocket, frame, limits) {
        Ok(message) => message,
        Err(SessionError::Decode(error)) => return Err(refusal_for_codec_error(&error)),
        Err(_) => return Err((close_code::INVALID_PAYLOAD, "not an AgentToServer message")),
    };
    let Ok(uid) = InstanceUid::from_slice(&message.instance_uid) else {
        return Err((close_code::INVALID_PAYLOAD, "instance_uid must be 16 bytes"));
    };
    if !authorized.contains(&uid) {
        let empty = http::HeaderMap::new();
        let agent_claim = AgentClaim {
            uid,
            connection: claim.connection,
            headers: claim.headers.unwrap_or(&empty),
            can_issue_credential: false,
        };
        if !authorize::check(shared, &agent_claim).is_allowed() {
            shared
                .stats
                .refused(TransportMode::WebSocket, RefusalReason::Unauthorized);
            return Err((
                close_code::POLICY_VIOLATION,
                "not authorised for this instance_uid",
            ));
        }
        authorized.insert(uid);
    }
    shared.stats.received(TransportMode::WebSocket, frame.len());
    Ok(shared.sessions.websocket_message(id, message))
}

/// Sends what is already queued. `Some` when the socket must close: with a close frame
/// the agent sessions asked for, or `None` inside when sending failed.
async fn send_queued(
    socket: &mut WebSocket,
    outbound: &mut OutboundReceiver,
    stats: &TransportStats,
) -> Option<Option<(u16, &'static str)>> {
    while let Some(queued) = outbound.try_recv() {
        match queued {
            Outbound::Frame(frame) => {
                stats.sent(TransportMode::WebSocket, frame.len());
                if socket.send(Message::Binary(frame)).await.is_err() {
                    return Some(None);
                }
            }
            Outbound::Close(code, reason) => return Some(Some((code, reason))),
        }
    }
    None
}

/// Time allowed for the peer's half of a close handshake.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// After a Close was received or sent: keeps reading until the stream ends, which makes
/// tungstenite send its queued reply to the peer's Close (RFC 6455 section 5.5.1: the
/// endpoint that receives a Close answers with a Close) and flush it before the TCP
/// connection is dropped.
async fn finish_close_handshake(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// How a close for bad input is counted (authorisation refusals are counted where they
/// happen: 1008 also closes agents that do not read).
fn refusal_counted_as(code: u16) -> Option<RefusalReason> {
    match code {
        close_code::MESSAGE_TOO_BIG => Some(RefusalReason::TooLarge),
        close_code::PROTOCOL_ERROR | close_code::UNSUPPORTED_DATA | close_code::INVALID_PAYLOAD => {
            Some(RefusalReason::Malformed)
        }
        _ => None,
    }
}

fn refusal_for_codec_error(error: &CodecError) -> (u16, &'static str) {
    match error {
        CodecError::TooLarge { .. } => (close_code::MESSAGE_TOO_BIG, "message too big"),
        CodecError::BadWsHeader(_) => (close_code::PROTOCOL_ERROR, "bad OpAMP header"),
        _ => (close_code::INVALID_PAYLOAD, "not an AgentToServer message"),
    }
}

fn refusal_for_socket_error(error: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    // axum wraps tungstenite's error (same version: the workspace pins tokio-tungstenite to
    // the one axum uses); a capacity error means the peer sent more than the limit.
    let error = error.into_inner();
    match error.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((close_code::MESSAGE_TOO_BIG, "message too big")),
        _ => {
            tracing::debug!(%error, "WebSocket read failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn detached_headers_keep_what_an_authorizer_reads_and_drop_the_handshake() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::UPGRADE, "websocket".parse().expect("value"));
        headers.insert(
            http::header::SEC_WEBSOCKET_KEY,
            "abc".parse().expect("value"),
        );
        let mut secret = http::HeaderValue::from_static("Bearer token");
        secret.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, secret);
        headers.append("x-tenant", "a".parse().expect("value"));
        headers.append("x-tenant", "b".parse().expect("value"));
        let copy = detached_headers(&headers);
        assert_eq!(copy.len(), 3);
        assert!(copy.get(http::header::UPGRADE).is_none());
        assert!(copy.get(http::header::SEC_WEBSOCKET_KEY).is_none());
        let authorization = copy.get(http::header::AUTHORIZATION).expect("kept");
        assert_eq!(authorization, "Bearer token");
        assert!(authorization.is_sensitive());
        let tenants: Vec<_> = copy.get_all("x-tenant").iter().collect();
        assert_eq!(tenants, ["a", "b"]);
    }

    fn deadlines(now: Instant) -> Deadlines {
        Deadlines {
            idle: Duration::from_secs(90),
            last_heard: now,
            pinged: false,
            first_message_by: Some(now + Duration::from_secs(10)),
        }
    }

    #[test]
    fn a_silent_socket_is_closed_at_its_first_message_deadline() {
        let start = Instant::now();
        let mut deadlines = deadlines(start);
        assert_eq!(deadlines.next_wake(), start + Duration::from_secs(10));
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(5)),
            Due::Nothing
        ));
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(10)),
            Due::Close(close_code::POLICY_VIOLATION, _)
        ));
    }

    #[test]
    fn one_ping_per_silence_then_the_idle_close() {
        let start = Instant::now();
        let mut deadlines = deadlines(start);
        deadlines.first_message_by = None;
        assert_eq!(deadlines.next_wake(), start + Duration::from_secs(45));
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(45)),
            Due::Ping
        ));
        // Pinged: nothing more until the idle timeout.
        assert_eq!(deadlines.next_wake(), start + Duration::from_secs(90));
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(60)),
            Due::Nothing
        ));
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(90)),
            Due::Close(close_code::GOING_AWAY, _)
        ));
    }

    #[test]
    fn hearing_from_the_peer_moves_every_deadline_and_allows_a_new_ping() {
        let start = Instant::now();
        let mut deadlines = deadlines(start);
        deadlines.first_message_by = None;
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(45)),
            Due::Ping
        ));
        let later = start + Duration::from_secs(50);
        deadlines.heard(later);
        // A timer armed for the old deadline finds nothing due and re-arms.
        assert!(matches!(
            deadlines.due(start + Duration::from_secs(60)),
            Due::Nothing
        ));
        assert_eq!(deadlines.next_wake(), later + Duration::from_secs(45));
        assert!(matches!(
            deadlines.due(later + Duration::from_secs(45)),
            Due::Ping
        ));
    }
}
