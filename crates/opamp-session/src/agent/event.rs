//! What an agent session tells its embedding application.

use std::time::{Duration, Instant};

use opamp_packages::SyncPlan;
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};

/// Something the server asked for or told the agent, already validated and filtered by
/// the capabilities the agent declared. Drain with [`crate::AgentSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Events are drained one at a time right after they are produced, so the size of the
// largest variant costs little, and boxing would make matching on offers clumsier.
#[allow(clippy::large_enum_variant)]
pub enum AgentEvent {
    /// The server announced (or changed) its capabilities.
    ServerCapabilities(ServerCapabilities),
    /// The server offers a set of packages (`ServerToAgent.packages_available`), with the
    /// sync plan computed against the packages the application registered through
    /// [`crate::AgentSession::set_installed_packages`].
    ///
    /// Only surfaced when the agent declared `ACCEPTS_PACKAGES`. The same offer may arrive
    /// again (the server re-sends when the agent's reported
    /// `server_provided_all_packages_hash` differs), so acting on it must be idempotent;
    /// [`SyncPlan::is_already_applied`] tells when there is nothing to do.
    #[non_exhaustive]
    PackagesAvailable {
        /// The offer as received.
        offer: v1::PackagesAvailable,
        /// What to install, upgrade, downgrade, re-download or remove
        /// (`opamp_packages::plan_sync`). Downgrades must still pass the signed trust policy.
        plan: SyncPlan,
    },
    /// A remote configuration offer; only with `ACCEPTS_REMOTE_CONFIG`. Report the outcome
    /// with [`crate::AgentSession::set_remote_config_status`].
    RemoteConfig(v1::AgentRemoteConfig),
    /// Connection settings offers, reduced to the parts the agent declared it accepts
    /// (`opamp` with `ACCEPTS_OPAMP_CONNECTION_SETTINGS`, `own_*` with `REPORTS_OWN_*`,
    /// `other_connections` with `ACCEPTS_OTHER_CONNECTION_SETTINGS`).
    ConnectionSettings(v1::ConnectionSettingsOffers),
    /// The heartbeat (and HTTP polling) interval changed because the server offered
    /// `heartbeat_interval_seconds`; `None` means heartbeats are now disabled.
    HeartbeatInterval(Option<Duration>),
    /// The server asks the agent to restart; only with `ACCEPTS_RESTART_COMMAND`.
    Restart,
    /// The server assigned a new instance uid; the session already uses it.
    NewInstanceUid(InstanceUid),
    /// The server reported an error processing an earlier message.
    #[non_exhaustive]
    ServerError {
        /// `BAD_REQUEST`, `UNAVAILABLE` or `UNKNOWN`.
        kind: v1::ServerErrorResponseType,
        /// The server's human-readable text.
        message: String,
    },
    /// The server answered `UNAVAILABLE`: send nothing before this instant (from its
    /// `RetryInfo`, or the session's exponential back-off when it gave none). The session
    /// already holds back its messages; a WebSocket transport should also close and
    /// reconnect no earlier than this.
    RetryAfter(Instant),
    /// A custom message for a custom capability the agent declared.
    CustomMessage(v1::CustomMessage),
    /// The server announced its custom capabilities.
    ServerCustomCapabilities(v1::CustomCapabilities),
    /// The server sent something the agent did not declare it accepts; it was dropped.
    #[non_exhaustive]
    OfferRefused {
        /// What was refused.
        offer: OfferKind,
        /// The capability the agent would have needed to declare.
        required: AgentCapabilities,
    },
}

/// The kinds of server offer an agent may refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OfferKind {
    /// `ServerToAgent.packages_available`.
    Packages,
    /// `ServerToAgent.remote_config`.
    RemoteConfig,
    /// A part of `ServerToAgent.connection_settings`.
    ConnectionSettings,
    /// `ServerToAgent.command` (restart).
    RestartCommand,
    /// `ServerToAgent.custom_message` for an undeclared custom capability.
    CustomMessage,
}
