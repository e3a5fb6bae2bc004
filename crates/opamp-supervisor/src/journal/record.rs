//! The install journal: one [`InstallRecord`], written before each step takes effect.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file::{load_checked, quarantine, save_checked};
use opamp_packages::ContentHash;

use super::hash::hex_bytes;
use super::{InstallStep, JournalError};

/// The journaled state of one install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstallRecord {
    /// The step about to take effect (or reached, for terminal steps).
    pub step: InstallStep,
    /// OpAMP package name.
    pub package_name: String,
    /// Version offered by the server.
    pub offered_version: String,
    /// The server's `PackageAvailable.hash` of the offer.
    #[serde(with = "hex_bytes")]
    pub offered_hash: Vec<u8>,
    /// SHA-256 of the package file, once verified.
    pub content_hash: Option<ContentHash>,
    /// SHA-256 of the staged executable, once staged from a verified package. Only a file with
    /// exactly this hash may be swapped in.
    pub staged_sha256: Option<ContentHash>,
    /// Staged executable.
    pub staged_path: Option<PathBuf>,
    /// Version running before this install.
    pub previous_version: Option<String>,
    /// SHA-256 of the executable before this install.
    pub previous_sha256: Option<ContentHash>,
    /// The live executable path (`agent.executable`).
    pub executable_path: PathBuf,
    /// Where the previous executable is kept.
    pub previous_path: PathBuf,
    /// Why the install failed (with `RollingBack` and `Failed`).
    pub error: Option<String>,
    /// How many times recovery has resumed this install; bounds crash loops.
    pub recovery_attempts: u32,
}

impl InstallRecord {
    /// A record at [`InstallStep::Downloading`] for a new offer.
    pub fn new(
        package_name: impl Into<String>,
        offered_version: impl Into<String>,
        offered_hash: Vec<u8>,
        executable_path: PathBuf,
    ) -> Self {
        let previous_path = previous_path_for(&executable_path);
        Self {
            step: InstallStep::Downloading,
            package_name: package_name.into(),
            offered_version: offered_version.into(),
            offered_hash,
            content_hash: None,
            staged_sha256: None,
            staged_path: None,
            previous_version: None,
            previous_sha256: None,
            executable_path,
            previous_path,
            error: None,
            recovery_attempts: 0,
        }
    }
}

/// Where the previous executable is kept: `<exe>.previous`, in the same directory so that
/// restoring it is a rename on the same file system.
pub fn previous_path_for(executable: &Path) -> PathBuf {
    let mut name = executable
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".previous");
    executable.with_file_name(name)
}

/// The install journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journaled record; `None` when no journal exists.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] for a damaged file, [`JournalError::Io`] when unreadable.
    pub fn load(&self) -> Result<Option<InstallRecord>, JournalError> {
        load_checked(&self.path, "journal")
    }

    /// Durably replaces the journal with `record`.
    ///
    /// # Errors
    /// [`JournalError::Io`] (disk full, read-only storage): the step must then not take effect.
    pub fn write(&self, record: &InstallRecord) -> Result<(), JournalError> {
        save_checked(&self.path, "journal", record)
    }

    /// Journals `record` at step `next` after checking the transition is legal.
    ///
    /// # Errors
    /// [`JournalError::IllegalTransition`] or a write failure; `record` is unchanged then.
    pub fn advance(
        &self,
        record: &mut InstallRecord,
        next: InstallStep,
    ) -> Result<(), JournalError> {
        check_transition(record, next)?;
        let mut updated = record.clone();
        updated.step = next;
        self.write(&updated)?;
        tracing::debug!(package = %record.package_name, from = ?record.step, to = ?next, "install step");
        *record = updated;
        Ok(())
    }

    /// Moves `record` to step `next` (after checking the transition is legal) and journals it
    /// when [`InstallStep::needs_journaling`] says recovery depends on it; otherwise the step
    /// is only recorded in memory and the journal keeps the previous one, whose recovery is
    /// the same.
    ///
    /// # Errors
    /// As [`Journal::advance`]; `record` is unchanged then.
    pub fn enter(&self, record: &mut InstallRecord, next: InstallStep) -> Result<(), JournalError> {
        if next.needs_journaling() {
            return self.advance(record, next);
        }
        check_transition(record, next)?;
        tracing::debug!(package = %record.package_name, from = ?record.step, to = ?next, "install step (not journaled)");
        record.step = next;
        Ok(())
    }

    /// Moves a corrupt journal aside (`<path>.corrupt`) so it can be inspected and does not block
    /// the next install. Returns the new path.
    ///
    /// # Errors
    /// The rename failed.
    pub fn quarantine(&self) -> Result<PathBuf, JournalError> {
        quarantine(&self.path)
    }
}

/// [`JournalError::IllegalTransition`] unless `next` may follow `record`'s step.
fn check_transition(record: &InstallRecord, next: InstallStep) -> Result<(), JournalError> {
    if record.step.can_advance_to(next) {
        Ok(())
    } else {
        Err(JournalError::IllegalTransition {
            from: record.step,
            to: next,
        })
    }
}
