//! Why an agent failed in a rollout: named by the engine and by audit records alike.

use serde::{Deserialize, Serialize};

/// Why an agent failed in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum FailureReason {
    /// The agent reported `InstallFailed`.
    InstallFailed {
        /// The agent's message.
        error: String,
    },
    /// No install report within the install timeout. `connected` tells whether the agent was
    /// connected when the timeout passed (a disconnected agent that never returned).
    InstallTimedOut {
        /// Connection state at the deadline.
        connected: bool,
    },
    /// Installed, but no healthy report within the health timeout.
    HealthTimedOut {
        /// Connection state at the deadline.
        connected: bool,
    },
    /// Reported unhealthy after installing the target.
    Unhealthy,
}
