//! WebSocket agents: binary messages carry the `0x00` header and an `AgentToServer`.
//!
//! Close codes sent on refusal (documented in the crate docs):
//! 1009 message too big, 1002 bad OpAMP header byte, 1003 text message, 1007 undecodable
//! protobuf or invalid instance uid, 1001 idle timeout (no frame, not even the pong to our
//! ping, for the idle timeout) or server shutdown, 1008 the agent
//! did not read what the server sent, was replaced by a newer connection, or may not speak
//! for the instance uid it claims.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequest;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opamp_proto::InstanceUid;
use opamp_proto::codec::{self, CodecError};
use opamp_proto::v1::AgentToServer;
use tokio::sync::mpsc;

use super::Shared;
use super::listener::{ConnectionInfo, ConnectionSlot};
use super::registry::LinkHandle;

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
    request: axum::extract::Request,
) -> Response {
    let slot = request.extensions().get::<Arc<ConnectionSlot>>().cloned();
    let upgrade = match WebSocketUpgrade::from_request(request, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = shared
        .config
        .limits
        .max_message_size
        .saturating_add(HEADER_ALLOWANCE);
    upgrade
        // Small buffers: most agents are idle most of the time, and memory per idle agent
        // is what bounds a server's fleet size.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limit.saturating_mul(2))
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run(shared, connection, socket).await;
            drop(slot);
        })
}

async fn run(shared: Arc<Shared>, connection: ConnectionInfo, mut socket: WebSocket) {
    let registry = &shared.registry;
    let link_id = registry.new_link_id();
    let (outbound_tx, mut outbound) = mpsc::channel::<Bytes>(shared.config.outbound_queue.max(1));
    let dropped = tokio_util::sync::CancellationToken::new();
    let mut link = LinkHandle::WebSocket {
        id: link_id,
        outbound: outbound_tx,
        dropped: dropped.clone(),
    };
    let mut agent: Option<InstanceUid> = None;
    let idle = shared.config.idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    // Agents without heartbeats are legal: after a third of the idle timeout in silence we
    // ping, and the pong (which WebSocket stacks send on their own) keeps a live agent in.
    let ping_after = idle / 3;
    let mut ping_at = tokio::time::Instant::now() + ping_after;

    let close: Option<(u16, &'static str)> = loop {
        tokio::select! {
            received = socket.recv() => {
                deadline = tokio::time::Instant::now() + idle;
                ping_at = tokio::time::Instant::now() + ping_after;
                let message = match received {
                    None => break None,
                    Some(Ok(message)) => message,
                    Some(Err(error)) => break refusal_for_socket_error(error),
                };
                let frame = match message {
                    Message::Binary(frame) => frame,
                    Message::Text(_) => break Some((close_code::UNSUPPORTED_DATA, "OpAMP uses binary messages")),
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let message: AgentToServer = match codec::decode_ws_frame(&frame, &shared.config.limits) {
                    Ok(message) => message,
                    Err(error) => break Some(refusal_for_codec_error(&error)),
                };
                let Ok(uid) = InstanceUid::from_slice(&message.instance_uid) else {
                    break Some((close_code::INVALID_PAYLOAD, "instance_uid must be 16 bytes"));
                };
                if agent.is_some_and(|known| known != uid) {
                    // A connection belongs to one agent; a new uid here would be a second
                    // agent sharing the socket.
                    if let Some(previous) = agent.take() {
                        let mut pending = Vec::new();
                        registry.websocket_closed(previous, link_id, Instant::now(), &mut pending);
                        registry.notify(pending).await;
                    }
                    break Some((close_code::INVALID_PAYLOAD, "instance_uid changed on an open connection"));
                }
                if agent.is_none() && !agent_authorized(&shared, uid, &connection) {
                    break Some((close_code::POLICY_VIOLATION, "not authorised for this instance_uid"));
                }
                agent = Some(uid);
                let mut pending = Vec::new();
                registry.deliver(message, uid, &mut link, &connection, Instant::now(), &mut pending);
                registry.notify(pending).await;
            }
            frame = outbound.recv() => {
                let Some(frame) = frame else {
                    break None; // Unreachable while `link` holds a sender.
                };
                if socket.send(Message::Binary(frame)).await.is_err() {
                    break None;
                }
            }
            () = dropped.cancelled() => {
                // The registry let go of this connection: replaced by a newer one for the
                // same agent, the agent was forgotten, or it fell behind.
                break Some((close_code::POLICY_VIOLATION, "connection replaced or too slow"));
            }
            () = tokio::time::sleep_until(deadline) => {
                break Some((close_code::GOING_AWAY, "idle timeout"));
            }
            () = tokio::time::sleep_until(ping_at), if ping_at < deadline => {
                ping_at = deadline;
                if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break None;
                }
            }
            () = shared.shutdown.cancelled() => {
                break Some((close_code::GOING_AWAY, "server shutting down"));
            }
        }
    };
    if let Some((code, reason)) = close {
        tracing::info!(remote_addr = %connection.remote_addr, code, reason, "closing WebSocket");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
    drop(link);
    if let Some(uid) = agent {
        let mut pending = Vec::new();
        registry.websocket_closed(uid, link_id, Instant::now(), &mut pending);
        registry.notify(pending).await;
    }
}

pub(crate) fn agent_authorized(
    shared: &Shared,
    uid: InstanceUid,
    connection: &ConnectionInfo,
) -> bool {
    shared
        .config
        .authorize_agent
        .as_ref()
        .is_none_or(|authorize| authorize(uid, connection))
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
