//! The two OpAMP transports, as far as the session logic cares.

/// How messages travel between agent and server.
///
/// The mode changes timing and framing, never message content:
/// - [`TransportMode::WebSocket`]: full duplex; either side may send at any time; every
///   binary WebSocket message is a `0x00` header followed by the protobuf bytes.
/// - [`TransportMode::HttpPolling`]: the agent POSTs one `AgentToServer` and the server
///   answers with exactly one `ServerToAgent`; at most one request is in flight, and the
///   agent polls on the heartbeat interval when it has nothing else to say. Bodies are
///   plain protobuf bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TransportMode {
    /// Full-duplex WebSocket transport.
    #[default]
    WebSocket,
    /// Plain HTTP request/response polling.
    HttpPolling,
}
