#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
mod error;
#[cfg(feature = "server")]
pub mod server;
pub mod tls;

pub use error::{Result, TransportError};

/// Response header that carries a credential the server issued to the agent (on the HTTP
/// answer or the WebSocket upgrade response, for example after enrolling). The agent sends
/// it back as `Authorization: Bearer <credential>` from then on.
pub const AGENT_CREDENTIAL_HEADER: &str = "opamp-agent-credential";
