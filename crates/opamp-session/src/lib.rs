//! Sans-IO OpAMP sessions: the protocol logic of both ends of an OpAMP connection, with
//! no networking, no async runtime and no clock reads.
//!
//! - [`AgentSession`]: the agent (client) side. It numbers messages, compresses status
//!   reports, sends heartbeats and HTTP polls on deadlines, honours `ReportFullState`,
//!   back-off and new instance uids, and turns server offers into [`AgentEvent`]s,
//!   refusing offers for capabilities the agent did not declare.
//! - [`ServerSession`]: the server side for one agent. It merges compressed reports into
//!   an [`AgentState`], asks for full reports when messages went missing, answers every
//!   message, and delivers queued offers once the agent's capabilities allow them.
//!
//! The caller owns the IO. It hands in decoded messages or raw bytes together with the
//! current [`Instant`](std::time::Instant), and drains three outputs: messages to send
//! (`poll_transmit`), events (`poll_event`) and the next deadline (`poll_timeout`). This
//! is the style of quinn-proto and str0m, and it lets the same logic run under tokio,
//! another runtime, or a deterministic simulation (see `tests/simulation.rs`).
//!
//! # Run loop
//!
//! 1. Feed every input: `handle_connected`/`handle_disconnected`, each received message
//!    (`handle_message` or `handle_bytes`), `handle_timeout` when a deadline passed.
//! 2. Drain `poll_transmit` (send each message) and `poll_event` (act on each event)
//!    until both return `None`: acting on an event often changes the status, which queues
//!    another message.
//! 3. Wait for the next input or until `poll_timeout`, then go to 1.
//!
//! # Protocol behaviour (OpAMP v0.18.0)
//!
//! Agent side:
//! - `sequence_num` starts at 0 and grows by exactly one per message, across reconnects.
//! - The first message after [`AgentSession::handle_connected`] is a full report; later
//!   messages carry only the sub-messages that changed (status compression). A setter that
//!   changes nothing sends nothing, and a server message that changes nothing is never
//!   answered (no ping-pong).
//! - `ReportFullState` makes the next message full; `ReportAvailableComponents` resends
//!   the component list. A failed HTTP request or an `UNAVAILABLE` answer also makes the
//!   next message full, which repairs a lost `ReportFullState` request.
//! - Heartbeats (WebSocket, with `REPORTS_HEARTBEAT`) and polls (HTTP, always) are due one
//!   interval after the last message sent; the interval comes from the configuration or
//!   from `OpAMPConnectionSettings.heartbeat_interval_seconds` (0 disables heartbeats; an
//!   HTTP agent then polls at the 30 s default). HTTP mode keeps one request in flight.
//! - Offers for capabilities the agent did not declare are dropped with an
//!   [`AgentEvent::OfferRefused`]; package offers come with an `opamp_packages::SyncPlan`.
//! - `RetryInfo` (or exponential back-off without it) holds all sending until a deadline.
//!
//! Server side:
//! - The first answer of a connection carries the server's capabilities; every message
//!   is answered (HTTP: exactly once; WebSocket: the session also pushes offers).
//! - A `sequence_num` gap, or a first message without a description, sets
//!   `ReportFullState`; in case the request was lost it is repeated (at most 8 times) while
//!   answers cannot be a full report (no description, or missing a sub-message the server
//!   already has: an agent cannot withdraw one). Older or duplicate messages are answered
//!   but not merged, except ones with a description (an agent restart resets numbering).
//! - Offers go out only when both sides' capabilities allow them, commands and error
//!   responses travel alone, packages are re-sent while the agent reports a different
//!   `server_provided_all_packages_hash` (remote config likewise with its hash).
//!
//! Both sides validate every message before acting on it ([`SessionLimits`]): instance uid
//! length, entry counts of maps and lists, nesting depth, sequence jumps and message size.
//! A refused message changes nothing, yields a [`SessionError`], and the session goes on.
//!
//! # Example: an agent and a server in memory
//!
//! ```
//! use std::time::{Duration, Instant};
//! use opamp_proto::{v1, AgentCapabilities, InstanceUid, ServerCapabilities};
//! use opamp_session::{AgentConfig, AgentEvent, AgentSession, ServerConfig, ServerSession};
//!
//! let mut config = AgentConfig::new(InstanceUid::new_v7(), v1::AgentDescription::default());
//! config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES;
//! let mut agent = AgentSession::new(config);
//! let mut server = ServerSession::new(ServerConfig::new(ServerCapabilities::OFFERS_PACKAGES));
//! server.offer_packages(v1::PackagesAvailable { all_packages_hash: vec![1; 32], ..Default::default() });
//!
//! let mut now = Instant::now();
//! agent.handle_connected(now);
//! for _ in 0..3 {
//!     while let Some(msg) = agent.poll_transmit(now) {
//!         server.handle_message(msg, now)?;
//!     }
//!     while let Some(msg) = server.poll_transmit(now) {
//!         agent.handle_message(msg, now)?;
//!     }
//!     now += Duration::from_secs(1);
//! }
//! let mut offered = false;
//! while let Some(event) = agent.poll_event() {
//!     offered |= matches!(event, AgentEvent::PackagesAvailable { .. });
//! }
//! assert!(offered);
//! assert_eq!(&server.agent_state().status, agent.status());
//! # Ok::<(), opamp_session::SessionError>(())
//! ```
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
    AgentConfig, AgentEvent, AgentSession, DEFAULT_HEARTBEAT_INTERVAL, OfferKind, RetryPolicy,
};
pub use endpoint::{
    ConnectionId, ConnectionParams, DisconnectReason, EndpointConfig, EndpointError, EndpointEvent,
    ServerEndpoint,
};
pub use error::SessionError;
pub use limits::SessionLimits;
pub use mode::TransportMode;
pub use server::{AgentState, ServerConfig, ServerEvent, ServerSession};
pub use status::AgentStatus;
