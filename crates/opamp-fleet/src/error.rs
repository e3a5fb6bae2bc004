//! The crate's error type.

use opamp_proto::InstanceUid;

use crate::events::RolloutStatus;
use crate::rollout::RolloutId;

/// Everything that can go wrong in `opamp-fleet`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A rollout spec field has an unusable value.
    #[error("invalid rollout spec: {field}: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A label selector could not be parsed.
    #[error("invalid label selector {selector:?}: {reason}")]
    InvalidSelector {
        /// The text given.
        selector: String,
        /// What is wrong.
        reason: String,
    },
    /// The fleet snapshot lists the same agent twice.
    #[error("agent {uid} appears twice in the fleet snapshot")]
    DuplicateAgent {
        /// The agent.
        uid: InstanceUid,
    },
    /// After selection and skipping, no agent is left.
    #[error("no agent to roll out to: {selected} selected, {skipped} skipped")]
    NoAgents {
        /// Agents matching the selector.
        selected: usize,
        /// Of those, agents skipped (already at target, no version, unhealthy).
        skipped: usize,
    },
    /// No connected agent that matches the selector accepts the `Restart` command.
    #[error(
        "no connected agent matching `{selector}` accepts restart commands \
         ({not_accepting} matching agents do not)"
    )]
    NothingToRestart {
        /// The selector, as text.
        selector: String,
        /// Connected, matching agents that do not accept the command.
        not_accepting: usize,
    },
    /// More agents than the engine indexes (u32).
    #[error("{count} agents exceed the engine's limit")]
    TooManyAgents {
        /// The count.
        count: usize,
    },
    /// An operator event does not apply in the rollout's current status.
    #[error("rollout {rollout} is {status}: cannot {event}")]
    InvalidTransition {
        /// The rollout.
        rollout: RolloutId,
        /// Its status.
        status: RolloutStatus,
        /// The rejected event kind.
        event: &'static str,
    },
    /// Another active rollout already covers this package and selector or some of its agents.
    #[error("conflicts with active rollout {active} of {package}: {reason}")]
    Conflict {
        /// The active rollout.
        active: RolloutId,
        /// The package.
        package: String,
        /// Why they conflict.
        reason: String,
    },
    /// The store failed.
    #[error("fleet store failed")]
    Store(#[from] crate::store::StoreError),
    /// The server configuration is unusable.
    #[error("configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{context}")]
    Io {
        /// What the server was doing.
        context: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A package cannot enter the catalog (bad name or version, unreadable content).
    #[error("package {name} {version}: {reason}")]
    InvalidPackage {
        /// Package name as given.
        name: String,
        /// Version as given.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// A config version cannot enter the config catalog (no files, a reserved or repeated
    /// file name, too large).
    #[error("config {name} {version}: {reason}")]
    InvalidConfig {
        /// Config name as given.
        name: String,
        /// Version as given.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// Something asked for does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What.
        what: String,
    },
    /// The agent transport failed (bind, TLS).
    #[cfg(feature = "server")]
    #[error("agent transport failed")]
    Transport(#[from] opamp_transport::TransportError),
    /// The admin API could not be reached, or the connection broke before an answer.
    #[cfg(feature = "server")]
    #[error("cannot reach the admin API")]
    AdminUnreachable {
        /// The HTTP client's error (its sources name the OS error).
        #[source]
        source: reqwest::Error,
    },
    /// The admin API answered with an error (or could not be reached: `status` is `None`).
    #[error("admin API{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    AdminApi {
        /// HTTP status, when an answer came.
        status: Option<u16>,
        /// The server's message or the client error.
        message: String,
    },
    /// Another server holds the data directory's lock.
    #[error(
        "another opamp server already uses the data directory {} (lock {} is held); \
         stop it first, or give this one another --data-dir",
        data_dir.display(),
        lock.display()
    )]
    DataDirInUse {
        /// The data directory.
        data_dir: std::path::PathBuf,
        /// Its lock file.
        lock: std::path::PathBuf,
    },
    /// The store is missing or empty while package files exist: starting would hide them.
    #[error(
        "the store {} is {state} but {} holds {files} package file(s): refusing to start with \
         an empty store (restore fleet.db from a backup, or start once with \
         --initialise-store / [store] initialise = true to begin a new, empty catalog)",
        database.display(),
        packages.display()
    )]
    StoreMissing {
        /// The database file.
        database: std::path::PathBuf,
        /// `missing` or `empty (0 bytes)`.
        state: &'static str,
        /// The packages directory.
        packages: std::path::PathBuf,
        /// Package files found in it.
        files: usize,
    },
    /// The rollout has steps the store could not save yet; they are being retried.
    #[error(
        "rollout {rollout} has steps the store could not save yet (retrying); try again once \
         the store accepts writes"
    )]
    Unsaved {
        /// The rollout.
        rollout: RolloutId,
    },
    /// The server's rollout driver has stopped.
    #[error("the fleet server has stopped")]
    Stopped,
}
