#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod agent;
mod endpoint;
mod error;
pub mod framing;
mod limits;
mod mode;
mod server;
mod status;
#[cfg(test)]
mod test_support;
mod validate;

pub use agent::{
    AgentEvent, AgentSession, AgentSessionConfig, DEFAULT_HEARTBEAT_INTERVAL, OfferKind,
    RetryPolicy,
};
pub use endpoint::{
    ConnectionId, ConnectionParams, DisconnectReason, EndpointConfig, EndpointError, EndpointEvent,
    ServerEndpoint,
};
pub use error::SessionError;
pub use limits::SessionLimits;
pub use mode::TransportMode;
pub use server::{AgentState, ServerEvent, ServerSession, ServerSessionConfig};
pub use status::AgentStatus;
