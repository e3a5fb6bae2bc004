//! Start-up recovery: finish or undo an install that a crash interrupted.
//!
//! The journal says the furthest step the install may have reached; the live executable's hash
//! says whether the swap happened. Because the swap is a rename, the live path always holds a
//! whole file: the previous executable or the verified new one.
//!
//! | journaled step                          | live executable         | action                  |
//! |-----------------------------------------|-------------------------|-------------------------|
//! | `Idle`, `Installed`, `Failed`, none     | -                       | nothing ([`Recovery::Clean`]) |
//! | `Downloading` .. `Stopping`             | previous                | drop `<exe>.next`, keep the partial download ([`Recovery::Abandoned`]) |
//! | `Swapping` .. `HealthGate`              | previous                | as above (the swap never happened) |
//! | `Swapping` .. `HealthGate`              | new (journaled hash)    | start it, health gate again; `Installed` or rollback |
//! | `Swapping` .. `RollingBack`             | other, previous kept    | restore previous, start, health gate, `Failed` |
//! | `RollingBack`                           | previous or new         | restore previous if kept, start, health gate, `Failed` |
//! | `Swapping` .. `RollingBack`             | other, no previous copy | start nothing, [`InstallError::UnknownExecutable`] |
//! | corrupt journal                         | -                       | move it aside; nothing else ([`Recovery::CorruptJournal`]) |
//!
//! The installer does not journal `Verifying`, `Stopping`, `Starting` or `HealthGate` (each
//! recovers like the step before it), but a journal from an older supervisor may hold them.
//!
//! Only a file whose hash equals the hash journaled at `Staged` (computed from a verified
//! package) is ever started as the new version.

use super::swap::{self, hash_if_exists, next_path_for};
use super::{Collector, InstallError, InstallEvent, Installer};
use crate::journal::{InstallRecord, InstallStep, JournalError};
use crate::report::ErrorReport;
use crate::storage;

/// What [`Installer::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// No install was in progress; the collector was not started.
    Clean,
    /// An install was interrupted before the swap; the previous executable is untouched and the
    /// collector was not started. The offer is tried again when it is seen again (a partial
    /// download resumes).
    Abandoned {
        /// The journaled step.
        step: InstallStep,
    },
    /// The interrupted install was finished: the new version runs and passed its health gate.
    Completed {
        /// The version now running.
        version: String,
    },
    /// The interrupted install was undone: the previous executable was restored and started.
    RolledBack {
        /// The `InstallFailed` message.
        error_message: String,
        /// Whether the restored collector passed its health gate; `None` when nothing was
        /// started (no previous executable, or restoring or starting it failed: see the
        /// message). The live path then still holds a verified binary or nothing.
        healthy: Option<bool>,
    },
    /// The journal was unreadable and was moved aside; the live executable (always a complete
    /// file) is left as is and the collector was not started.
    CorruptJournal {
        /// What was wrong with it.
        reason: String,
    },
}

impl Recovery {
    /// Whether recovery left a collector running (otherwise the caller starts it as usual).
    pub fn collector_started(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. }
                | Self::RolledBack {
                    healthy: Some(_),
                    ..
                }
        )
    }
}

impl Installer {
    /// Reads the journal and brings the installation to a consistent state: either the previous
    /// or the new executable, never an unverified file. Call once at start-up, before starting
    /// the collector; see the module table for what happens at each step.
    ///
    /// # Errors
    /// The journal cannot be read or written (I/O), or the live executable is neither the
    /// previous nor the new version and no previous copy exists to restore.
    pub async fn recover<C: Collector>(
        &self,
        collector: &mut C,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Recovery, InstallError> {
        swap::remove_leftovers(&self.config.executable);
        let mut record = match self.journal.load() {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(Recovery::Clean),
            Err(JournalError::Corrupt { reason, .. }) => {
                tracing::error!(%reason, "install journal corrupt; leaving the executable as is");
                self.journal.quarantine()?;
                // `<exe>.next` cannot be trusted without its journaled hash.
                let next = next_path_for(&self.config.executable);
                storage::remove_file_if_exists(&next)
                    .map_err(super::io_error("remove unverified", &next))?;
                return Ok(Recovery::CorruptJournal { reason });
            }
            Err(err) => return Err(err.into()),
        };
        if !record.step.is_in_progress() {
            return Ok(Recovery::Clean);
        }
        let step = record.step;
        tracing::warn!(package = %record.package_name, ?step, "recovering an interrupted install");
        if !step.may_have_swapped() {
            return self.abandon(record);
        }

        let exe = record.executable_path.clone();
        let live = hash_if_exists(&exe).map_err(super::io_error("hash", &exe))?;
        let is_new = live.is_some() && live == record.staged_sha256;
        // `None == None`: a first install whose swap had not happened yet.
        let is_previous = live == record.previous_sha256;
        let previous_ok = record
            .previous_sha256
            .is_some_and(|hash| swap::has_hash(&record.previous_path, hash));
        if !is_new && !is_previous && !previous_ok {
            // Neither version is in place and the previous one cannot be restored: start
            // nothing rather than an unverified file.
            let next = next_path_for(&exe);
            storage::remove_file_if_exists(&next)
                .map_err(super::io_error("remove unverified", &next))?;
            return Err(InstallError::UnknownExecutable {
                path: exe,
                actual: live.map_or_else(|| "missing".to_owned(), |h| h.to_string()),
            });
        }
        if step == InstallStep::RollingBack {
            let error = match record.error.take() {
                Some(message) => InstallError::Earlier { message },
                None => InstallError::Interrupted { step },
            };
            let failed = self.rollback(collector, &mut record, error, events).await;
            return Ok(rolled_back(failed));
        }
        if !is_new {
            if is_previous {
                // The swap never happened: the previous binary is untouched.
                return self.abandon(record);
            }
            let error = InstallError::UnknownExecutable {
                path: exe.clone(),
                actual: live.map_or_else(|| "missing".to_owned(), |h| h.to_string()),
            };
            let failed = self.rollback(collector, &mut record, error, events).await;
            return Ok(rolled_back(failed));
        }

        if record.recovery_attempts >= self.config.max_recovery_attempts {
            let error = InstallError::InterruptedTooOften {
                package: record.package_name.clone(),
                version: record.offered_version.clone(),
                attempts: record.recovery_attempts,
            };
            let failed = self.rollback(collector, &mut record, error, events).await;
            return Ok(rolled_back(failed));
        }
        record.recovery_attempts += 1;
        // Re-enter the flow just after the swap (a legal successor for `start_and_gate`).
        record.step = InstallStep::Swapping;
        self.journal.write(&record)?;
        if let Err(err) = collector.stop().await {
            tracing::warn!(error = %ErrorReport(&err), "stopping a leftover collector before the health gate");
        }
        match self.start_and_gate(collector, record, events).await {
            Ok(installed) => Ok(Recovery::Completed {
                version: installed.version,
            }),
            Err(failed) => Ok(rolled_back(failed)),
        }
    }

    fn abandon(&self, mut record: InstallRecord) -> Result<Recovery, InstallError> {
        let step = record.step;
        let next = next_path_for(&record.executable_path);
        storage::remove_file_if_exists(&next).map_err(super::io_error("remove", &next))?;
        record.step = InstallStep::Idle;
        record.error = Some(InstallError::Interrupted { step }.to_string());
        self.journal.write(&record)?;
        Ok(Recovery::Abandoned { step })
    }
}

fn rolled_back(failed: super::InstallFailed) -> Recovery {
    Recovery::RolledBack {
        error_message: failed.error_message,
        healthy: failed.collector_healthy,
    }
}
