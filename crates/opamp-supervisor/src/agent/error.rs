//! The error of [`run`](super::run): why the supervisor could not start or keep going.

use std::path::PathBuf;

use crate::health::HealthError;
use crate::install::{CollectorError, InstallError};
use crate::lock::LockError;
use crate::storage::StorageError;

/// Why the supervisor stopped with an error. Failed installs are not errors: they are
/// reported to the server as `InstallFailed` and the supervisor keeps running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another supervisor owns the storage directory, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The storage directory layout cannot be created.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The persistent instance uid cannot be read or written.
    #[error("instance uid file {}: {reason}", path.display())]
    InstanceUid {
        /// The file in `storage_dir`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent credential or the enrollment token cannot be read or written.
    #[error("agent credential {}: {reason}", path.display())]
    Credential {
        /// The file (`storage_dir/agent_credential` or `server.enrollment_token_file`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `trust.keys` entry or a `trust.revoked` id is unusable.
    #[error("trust configuration: {what}: {reason}")]
    Trust {
        /// Which key or id.
        what: String,
        /// Why it is refused.
        reason: String,
    },
    /// The installer (downloads directory, HTTP client) cannot be set up.
    #[error("cannot set up the installer")]
    Installer(#[source] InstallError),
    /// Start-up recovery of an interrupted install failed; nothing was started.
    #[error("start-up recovery of an interrupted install failed")]
    Recovery(#[source] InstallError),
    /// The health check cannot be built.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The collector could not be started.
    #[error("cannot start the collector {}", executable.display())]
    Start {
        /// The executable.
        executable: PathBuf,
        /// The process manager's error.
        #[source]
        source: CollectorError,
    },
    /// A `server.headers` entry is not a valid HTTP header.
    #[error("server.headers: {name:?} is not a valid HTTP header: {reason}")]
    Header {
        /// The header name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The OpAMP client could not be started (endpoint, TLS files).
    #[error("OpAMP client failed")]
    Transport(#[from] opamp_transport::TransportError),
    #[cfg(feature = "metrics")]
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The OpAMP client task ended on its own; the collector was stopped.
    #[error("the OpAMP client stopped unexpectedly; the collector was stopped")]
    ClientStopped,
    /// The collector config could not be recovered or composed at start-up (remote configs on).
    #[error("remote config start-up")]
    RemoteConfig(#[source] crate::remote_config::RemoteConfigError),
    /// The anti-rollback floor could not be reset.
    #[error("cannot reset the rollback floor")]
    FloorReset(#[source] crate::journal::JournalError),
}
