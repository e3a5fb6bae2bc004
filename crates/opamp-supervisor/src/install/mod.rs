//! Installing an offered collector package: download, verify, stage, swap, health gate, and
//! rollback, each step that recovery depends on journaled before it takes effect.
//!
//! The flow ([`Installer::install_offer`]):
//! 1. `Downloading`: the offer's signature and the trust policy are checked first
//!    ([`opamp_verify::TrustPolicy::verify_offer`]), so the signed size caps the download; then
//!    the file is downloaded (resuming an earlier attempt).
//! 2. `Verifying`: the file on disk is checked against the approved offer, giving the
//!    [`opamp_verify::Verified`]`<`[`opamp_verify::VerifiedPackage`]`>` proof.
//! 3. `Staged` ([`Installer::stage`], which only accepts that proof): the executable is put
//!    beside the live one as `<exe>.next`, and its SHA-256 is journaled. A raw package is the
//!    executable: the finished download is renamed there (copied and hashed again only across
//!    file systems). A `.tar.gz` is extracted into the staging directory first.
//! 4. `Stopping`, `Swapping` (the live executable is kept as `<exe>.previous`, then `<exe>.next`
//!    is renamed over it), `Starting`, `HealthGate`, `Installed`. `Verifying`, `Stopping`,
//!    `Starting` and `HealthGate` are reported but not journaled: recovery from each is the
//!    same as from the step before ([`crate::journal::InstallStep::needs_journaling`]).
//! 5. On any failure after the swap: `RollingBack` (restore `<exe>.previous`, start it, confirm
//!    it is healthy) and `Failed`, with an error message that says what failed.
//!
//! [`Installer::recover`] runs at start-up and finishes or undoes an interrupted install.
//! Progress is reported as [`InstallEvent`]s, which [`crate::decide::StatusReport`] turns into
//! OpAMP `PackageStatus` messages. Whether to install an offer at all is decided by
//! [`crate::decide::decide`]; [`Installer::install_offer`] asks it for one package.
//!
//! ```no_run
//! # async fn demo(
//! #     collector: &mut impl opamp_supervisor::install::Collector,
//! #     offer: &opamp_proto::v1::PackageAvailable,
//! #     policy: &opamp_verify::TrustPolicy,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use opamp_supervisor::install::{InstallConfig, Installer};
//! use opamp_supervisor::storage::StorageLayout;
//!
//! let layout = StorageLayout::create("/var/lib/opamp")?;
//! let installer = Installer::new(layout, InstallConfig::new("/opt/otelcol/otelcol"))?;
//! installer.recover(collector, &mut |_| {}).await?;
//! match installer
//!     .install_offer(collector, "otelcol", offer, policy, std::time::SystemTime::now(), &mut |e| {
//!         println!("{e:?}")
//!     })
//!     .await
//! {
//!     Ok(installed) => println!("now running {}", installed.version),
//!     Err(failed) => println!("InstallFailed: {}", failed.error_message),
//! }
//! # Ok(()) }
//! ```

mod collector;
mod installer;
mod recovery;
mod swap;

use std::path::PathBuf;
use std::time::Duration;

pub use collector::{Collector, CollectorError, HealthOutcome};
pub use installer::{Installer, StagedInstall};
pub use recovery::Recovery;

use crate::archive::{ArchiveError, ArchiveLimits};
use crate::download::{DownloadError, DownloadLimits, DownloadProgress};
use crate::journal::{InstallStep, JournalError};
use crate::report::ErrorReport;
use opamp_packages::ContentHash;

/// Settings of an [`Installer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstallConfig {
    /// The live collector executable (`agent.executable`).
    pub executable: PathBuf,
    /// Path of the executable inside `.tar.gz` packages. Default: the live executable's name.
    pub archive_executable: String,
    /// Time the new collector has to become healthy. Default 30 s.
    pub health_timeout: Duration,
    /// How often recovery may resume an install whose health gate was interrupted before it
    /// rolls back instead (a new version that takes the supervisor down must not loop).
    /// Default 2.
    pub max_recovery_attempts: u32,
    /// Download limits.
    pub download: DownloadLimits,
    /// Archive limits.
    pub archive: ArchiveLimits,
}

impl InstallConfig {
    /// Defaults for the collector at `executable`.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        let executable = executable.into();
        let archive_executable = executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            executable,
            archive_executable,
            health_timeout: Duration::from_secs(30),
            max_recovery_attempts: 2,
            download: DownloadLimits::default(),
            archive: ArchiveLimits::default(),
        }
    }
}

/// Progress of an install, for the agent's `PackageStatuses`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InstallEvent {
    /// Bytes arrived (maps to `Downloading` with `download_details`).
    Downloading(DownloadProgress),
    /// A step was journaled and is about to take effect (maps to `Installing`).
    Step(InstallStep),
    /// The new version passed its health gate (maps to `Installed`).
    Installed {
        /// The version now running.
        version: String,
    },
    /// The install failed (maps to `InstallFailed`).
    InstallFailed {
        /// What failed, and what runs now.
        error_message: String,
    },
}

/// A successful install.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Installed {
    /// Package name.
    pub package: String,
    /// The version now running (`agent_has_version`).
    pub version: String,
    /// The server's package hash of the offer (`agent_has_hash`).
    pub server_hash: Vec<u8>,
}

/// A failed install: the error, the message to report, and what is running now.
#[derive(Debug, thiserror::Error)]
#[error("{error_message}")]
#[non_exhaustive]
pub struct InstallFailed {
    /// The first error.
    #[source]
    pub error: InstallError,
    /// The `InstallFailed` `error_message`: the error plus what the rollback did.
    pub error_message: String,
    /// Whether the failure happened after the swap and the previous executable was restored.
    pub rolled_back: bool,
    /// After a rollback, whether the restored collector passed its health gate; `None` when no
    /// collector was started (the failure happened before the collector was touched, there was
    /// no previous executable, or restoring or starting it failed).
    pub collector_healthy: Option<bool>,
}

/// What went wrong during an install.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Only top-level packages (the collector itself) are installed here.
    #[error("package {package} is not a top-level package; only the collector is installed")]
    NotTopLevel {
        /// Package name.
        package: String,
    },
    /// This exact offer failed before; it is retried only once the server changes it. The
    /// [`InstallFailed::error_message`] repeats the original failure.
    #[error("offer of {package} {version} failed before and is not retried until it changes")]
    PreviouslyFailed {
        /// Package name.
        package: String,
        /// The version that failed.
        version: String,
    },
    /// The offer is malformed (the planner refused it).
    #[error("offer for {package} is invalid: {reason}")]
    InvalidOffer {
        /// Package name as offered.
        package: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The anti-rollback floor cannot be read; installs wait for an operator's reset.
    #[error(transparent)]
    RollbackFloorUnknown(crate::journal::FloorUnknown),
    /// The offer has no file.
    #[error("offer for {package} {version} has no downloadable file")]
    NoFile {
        /// Package name.
        package: String,
        /// Offered version.
        version: String,
    },
    /// Signature, trust policy, size or content hash check failed.
    #[error("verification of {package} {version} failed")]
    Verify {
        /// Package name.
        package: String,
        /// Offered version.
        version: String,
        /// The verifier's error (boxed: it is large).
        #[source]
        source: Box<opamp_verify::VerifyError>,
    },
    /// The download failed.
    #[error("download failed")]
    Download(#[from] DownloadError),
    /// The package could not be unpacked.
    #[error("cannot unpack package")]
    Archive(#[from] ArchiveError),
    /// The journal or installed state could not be read or written.
    #[error("install journal")]
    Journal(#[from] JournalError),
    /// A file operation of the install failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The verification proof is for another package or version than the install.
    #[error("verification proof is for {verified}, but the install is of {offered}")]
    ProofMismatch {
        /// Name and version the proof covers.
        verified: String,
        /// Name and version being installed.
        offered: String,
    },
    /// A file that must hold a verified executable does not have the verified hash.
    #[error("{} does not match its verified sha256 {expected}; refusing to use it", path.display())]
    NotVerified {
        /// The file.
        path: PathBuf,
        /// The verified hash.
        expected: ContentHash,
    },
    /// Stopping or starting the collector failed.
    #[error("cannot {action} the collector")]
    Collector {
        /// "stop" or "start".
        action: &'static str,
        /// The process manager's error.
        #[source]
        source: CollectorError,
    },
    /// The new collector did not pass its health gate.
    #[error("{package} {version} failed its health gate: {outcome}")]
    HealthGate {
        /// Package name.
        package: String,
        /// The version that failed.
        version: String,
        /// What the gate saw.
        outcome: HealthOutcome,
    },
    /// Recovery found an executable it cannot identify and no previous one to restore.
    #[error("{} has sha256 {actual}, neither the previous nor the new version; not starting it", path.display())]
    UnknownExecutable {
        /// The live executable.
        path: PathBuf,
        /// Its hash.
        actual: String,
    },
    /// Recovery resumed this install too often; the new version is presumed to crash us.
    #[error(
        "install of {package} {version} was interrupted {attempts} times during its health gate"
    )]
    InterruptedTooOften {
        /// Package name.
        package: String,
        /// The version.
        version: String,
        /// How often it was resumed.
        attempts: u32,
    },
    /// A failure journaled before a supervisor restart (the rollback is being finished).
    #[error("{message}")]
    Earlier {
        /// The journaled error message.
        message: String,
    },
    /// The install was interrupted (supervisor restart) in the middle of an earlier step.
    #[error("install interrupted by a supervisor restart at step {step:?}")]
    Interrupted {
        /// The journaled step.
        step: InstallStep,
    },
}

impl InstallError {
    /// Whether the same offer may be tried again without the server changing it (the download
    /// was cut and resumes).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Download(err) => err.is_resumable(),
            Self::Interrupted { .. } => true,
            _ => false,
        }
    }
}

/// The `InstallFailed` message of a failure that happened before the collector was touched.
pub(crate) fn untouched_message(error: &InstallError) -> String {
    format!(
        "{}; the running collector was not changed",
        ErrorReport(error)
    )
}

pub(crate) fn io_error(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}
