//! Crash-safe records of the install in progress and of what is installed.
//!
//! Three files in `storage_dir`, each replaced atomically ([`crate::storage::write_atomic`]:
//! temp file, fsync, rename, fsync of the directory) and each self-checking: the first line is
//! `opamp-<kind> v1 <sha256 of the rest>`, the rest is JSON. A torn or edited file fails the
//! check and loads as [`JournalError::Corrupt`] instead of as a plausible but wrong state.
//!
//! - [`Journal`] holds one [`InstallRecord`]: the step of the current install, written *before*
//!   the step takes effect, so recovery knows the furthest the install may have got. Steps whose
//!   recovery equals their predecessor's are not written ([`Journal::enter`]).
//! - [`InstalledStateStore`] holds the [`InstalledState`]: the installed version and hashes, and
//!   offers that failed and must not be retried until the server changes them.
//! - The anti-rollback floor ([`RollbackFloor`]) is kept in both the installed state and its
//!   own file, and fails closed when neither copy can be read.
//!
//! One concern per module: `hash` (hex encoding of opaque hashes), `step` (the step machine), `file` (the checked
//! file format), `record` (the journal), `installed` (installed state and its store), `floor`
//! (the anti-rollback floor).
//!
//! ```no_run
//! # fn demo() -> Result<(), opamp_supervisor::journal::JournalError> {
//! use opamp_supervisor::journal::{InstallStep, Journal};
//! let journal = Journal::new("/var/lib/opamp/install-journal.json");
//! if let Some(record) = journal.load()? {
//!     if record.step.is_in_progress() {
//!         println!("interrupted at {:?}", record.step);
//!     }
//! }
//! # Ok(()) }
//! ```

pub(crate) mod file;
mod floor;
mod hash;
mod installed;
mod record;
mod step;

use std::io;
use std::path::PathBuf;

pub use floor::{FloorUnknown, RollbackFloor};
pub use installed::{FailedOffer, InstalledPackage, InstalledState, InstalledStateStore};
pub use record::{InstallRecord, Journal, previous_path_for};
pub use step::InstallStep;

/// A journal or state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file exists but fails its checksum or does not parse.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A step was journaled out of order (a bug in the caller).
    #[error("illegal install step transition {from:?} -> {to:?}")]
    IllegalTransition {
        /// The journaled step.
        from: InstallStep,
        /// The requested step.
        to: InstallStep,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
