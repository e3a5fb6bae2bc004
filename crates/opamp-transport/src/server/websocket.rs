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
use super::hub::{Outbound, OutboundReceiver};
use super::listener::{ConnectionInfo, ConnectionSlot};
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
        // is what bounds a server's fleet size.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limit.saturating_mul(2))
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let upgrade = UpgradeRequest { headers, named };
            run(shared, connection, endpoint_url, upgrade, socket).await;
            drop(slot);
        });
    let mut response = response.into_response();
    if let Some(credential) = credential {
        response
            .headers_mut()
            .insert(AGENT_CREDENTIAL_HEADER, credential);
    }
    response
}

/// What the WebSocket keeps of its upgrade request.
struct UpgradeRequest {
    headers: http::HeaderMap,
    /// The uid authorised at the upgrade, if the request named one.
    named: Option<InstanceUid>,
}

async fn run(
    shared: Arc<Shared>,
    connection: ConnectionInfo,
    endpoint_url: Option<String>,
    upgrade: UpgradeRequest,
    mut socket: WebSocket,
) {
    let sessions = &shared.sessions;
    let stats = &shared.stats;
    let _open = stats.opened(TransportMode::WebSocket);
    let (id, mut outbound, dropped) = sessions.open_websocket(connection.clone(), endpoint_url);
    // Several agents may share this socket (OpAMP multiplexing); each uid is authorised
    // once, on its first message.
    let mut authorized: HashSet<InstanceUid> = upgrade.named.into_iter().collect();
    let idle = shared.config.idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    // Agents without heartbeats are legal: after a third of the idle timeout in silence we
    // ping, and the pong (which WebSocket stacks send on their own) keeps a live agent in.
    let ping_after = idle / 3;
    let mut ping_at = tokio::time::Instant::now() + ping_after;
    // A socket that never says who it is must not live on our own pings (issue 22).
    let mut first_message_by =
        Some(tokio::time::Instant::now() + shared.config.admission.first_message_timeout);

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
                    Message::Close(_) => {
                        finish_close_handshake(&mut socket).await;
                        break None;
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let limits = &shared.config.limits;
                let message = match framing::decode_agent_message(TransportMode::WebSocket, &frame, limits) {
                    Ok(message) => message,
                    Err(SessionError::Decode(error)) => break Some(refusal_for_codec_error(&error)),
                    Err(_) => break Some((close_code::INVALID_PAYLOAD, "not an AgentToServer message")),
                };
                let Ok(uid) = InstanceUid::from_slice(&message.instance_uid) else {
                    break Some((close_code::INVALID_PAYLOAD, "instance_uid must be 16 bytes"));
                };
                if !authorized.contains(&uid) {
                    let claim = AgentClaim {
                        uid,
                        connection: &connection,
                        headers: &upgrade.headers,
                        can_issue_credential: false,
                    };
                    if !authorize::check(&shared, &claim).is_allowed() {
                        stats.refused(TransportMode::WebSocket, RefusalReason::Unauthorized);
                        break Some((close_code::POLICY_VIOLATION, "not authorised for this instance_uid"));
                    }
                    authorized.insert(uid);
                }
                stats.received(TransportMode::WebSocket, frame.len());
                first_message_by = None;
                sessions.websocket_message(id, message).await;
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
            () = dropped.cancelled() => {
                break Some((close_code::POLICY_VIOLATION, "agent does not read what the server sends"));
            }
            () = tokio::time::sleep_until(deadline) => {
                break Some((close_code::GOING_AWAY, "idle timeout"));
            }
            () = sleep_until_some(first_message_by) => {
                break Some((close_code::POLICY_VIOLATION, "no OpAMP message in time"));
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
        if let Some(refusal) = refusal_counted_as(code) {
            stats.refused(TransportMode::WebSocket, refusal);
        }
        tracing::info!(remote_addr = %connection.remote_addr, code, reason, "closing WebSocket");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            if socket.send(Message::Close(Some(frame))).await.is_ok() {
                // Wait for the peer's Close so the TCP connection ends cleanly.
                finish_close_handshake(&mut socket).await;
            }
        })
        .await;
    }
    sessions.websocket_closed(id).await;
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
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
