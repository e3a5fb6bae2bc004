//! Async (tokio) transports for OpAMP: they move bytes between sockets and the sans-IO
//! sessions of `opamp-session`, and hold no protocol logic of their own.
//!
//! - [`server`]: one listener on `/v1/opamp` serving WebSocket upgrades and HTTP `POST`,
//!   plain, TLS or mutual TLS, moving bytes between sockets and one
//!   [`opamp_session::ServerEndpoint`] (which owns every agent's session, routing by
//!   instance uid and idle deadlines); [`server::Registry`] is the handle to send to one
//!   agent, a set or all; an optional package download route with `Range`, `ETag` and
//!   bearer-token authorisation.
//! - [`client`]: the agent side over `ws`, `wss`, `http` or `https`, with reconnect back-off
//!   (jitter, `Retry-After`, `RetryInfo`), extra headers, gzip bodies and a clean shutdown that
//!   sends `agent_disconnect`.
//! - [`tls`]: rustls settings for both sides.
//!
//! # Refusals
//! | condition | WebSocket | HTTP |
//! | --- | --- | --- |
//! | message over the size limit (64 MiB default) | close 1009 | 413 |
//! | first byte is not the `0x00` OpAMP header | close 1002 | n/a |
//! | text message | close 1003 | n/a |
//! | bytes that are not an `AgentToServer`, bad instance uid | close 1007 | 400 |
//! | wrong `Content-Type` or `Content-Encoding` | n/a | 415 |
//! | refused by the embedder's authoriser | 401 before the upgrade | 401 |
//! | may not speak for the claimed instance uid (`authorize_agent`) | close 1008 | 403 |
//! | instance uid held by another open WebSocket | error response, socket stays | error response (200) |
//! | socket silent (not even a pong) for the idle timeout | close 1001 | n/a |
//! | agent silent beyond 2.5 heartbeat/poll intervals + grace | reported disconnected (socket closed 1001 when no agent is left on it) | reported disconnected |
//! | headers not complete within the header timeout (slow-loris) | connection closed | connection closed |
//! | body not complete within the body timeout | n/a | 408 |
//! | more connections than the maximum | 503 + `Retry-After` | 503 + `Retry-After` |
//! | agent does not read what the server sends, or was forgotten by the server | close 1008 | n/a |
//! | no or untrusted client certificate under mutual TLS | TLS handshake fails | TLS handshake fails |
#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod server;
pub mod tls;

pub use error::{Result, TransportError};
