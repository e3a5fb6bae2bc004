//! The one place OpAMP messages are framed for a transport: a WebSocket binary message is
//! a `0x00` header and the protobuf bytes, an HTTP body is the protobuf bytes alone.
//! Sessions, the endpoint and async transports all go through these functions.

use opamp_proto::codec::{self, Limits};
use opamp_proto::v1;

use crate::{SessionError, TransportMode};

/// Decodes what an agent sent: a WebSocket binary message or an (already decompressed)
/// HTTP request body.
///
/// ```
/// use opamp_proto::{codec::Limits, v1};
/// use opamp_session::{TransportMode, framing};
///
/// let message = v1::AgentToServer { sequence_num: 4, ..Default::default() };
/// let frame = framing::encode_agent_message(TransportMode::WebSocket, &message);
/// assert_eq!(frame[0], 0, "WebSocket messages start with the OpAMP header");
/// let decoded = framing::decode_agent_message(TransportMode::WebSocket, &frame, &Limits::default())?;
/// assert_eq!(decoded, message);
/// # Ok::<(), opamp_session::SessionError>(())
/// ```
///
/// # Errors
/// [`SessionError::Decode`] for a bad header, oversized or undecodable bytes.
pub fn decode_agent_message(
    mode: TransportMode,
    bytes: &[u8],
    limits: &Limits,
) -> Result<v1::AgentToServer, SessionError> {
    Ok(match mode {
        TransportMode::WebSocket => codec::decode_ws_frame(bytes, limits)?,
        TransportMode::HttpPolling => codec::decode(bytes, limits)?,
    })
}

/// Encodes a message for the agent: a WebSocket binary message or an HTTP response body.
#[must_use]
pub fn encode_server_message(mode: TransportMode, message: &v1::ServerToAgent) -> Vec<u8> {
    match mode {
        TransportMode::WebSocket => codec::encode_ws_frame(message),
        TransportMode::HttpPolling => codec::encode(message),
    }
}

/// Encodes a message for the server (the agent side of [`decode_agent_message`]).
#[must_use]
pub fn encode_agent_message(mode: TransportMode, message: &v1::AgentToServer) -> Vec<u8> {
    match mode {
        TransportMode::WebSocket => codec::encode_ws_frame(message),
        TransportMode::HttpPolling => codec::encode(message),
    }
}

/// Decodes what the server sent (the agent side of [`encode_server_message`]).
///
/// # Errors
/// [`SessionError::Decode`] for a bad header, oversized or undecodable bytes.
pub fn decode_server_message(
    mode: TransportMode,
    bytes: &[u8],
    limits: &Limits,
) -> Result<v1::ServerToAgent, SessionError> {
    Ok(match mode {
        TransportMode::WebSocket => codec::decode_ws_frame(bytes, limits)?,
        TransportMode::HttpPolling => codec::decode(bytes, limits)?,
    })
}
