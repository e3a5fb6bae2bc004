//! The crate's error type.

/// Everything that can go wrong in `opamp-fleet`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The rollout engine or coordinator refused (bad spec or selector, nothing to roll
    /// out to, a conflicting rollout, a transition the rollout's status forbids).
    #[error(transparent)]
    Rollout(opamp_rollout::RolloutError),
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
    /// The server's rollout driver has stopped.
    #[error("the fleet server has stopped")]
    Stopped,
    /// The coordinator (another replica on the same PostgreSQL database) refused a rollout
    /// change this replica forwarded to it, or did not answer in time.
    #[error("{message}")]
    Coordinator {
        /// The HTTP status the coordinator answered (504 when it did not answer).
        status: u16,
        /// Its error message.
        message: String,
    },
    /// This replica no longer holds the coordinator lease (PostgreSQL store): it stopped
    /// serving, so that the replica that holds it is the only one deciding.
    #[error("lost the coordinator lease: {reason}")]
    LeaseLost {
        /// Why: taken by another replica, or not renewed in time.
        reason: String,
    },
}

impl From<opamp_rollout::RolloutError> for FleetError {
    /// A store failure the coordinator passes on is the fleet store's own error, kept as
    /// [`FleetError::Store`] (the driver retries those); everything else is a refusal.
    fn from(error: opamp_rollout::RolloutError) -> Self {
        match error {
            opamp_rollout::RolloutError::Store(source) => {
                match source.downcast::<crate::store::StoreError>() {
                    Ok(store) => FleetError::Store(*store),
                    Err(other) => FleetError::Rollout(opamp_rollout::RolloutError::Store(other)),
                }
            }
            other => FleetError::Rollout(other),
        }
    }
}
