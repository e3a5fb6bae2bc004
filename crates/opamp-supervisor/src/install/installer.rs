//! The install orchestrator: runs the journaled steps and the rollback.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use opamp_proto::v1::{PackageAvailable, PackagesAvailable};
use opamp_verify::{ApprovedPackage, TrustPolicy, Verified, VerifiedPackage};

use super::swap::{self, has_hash, hash_if_exists_async, next_path_for};
use super::{
    Collector, InstallConfig, InstallError, InstallEvent, InstallFailed, Installed, io_error,
    untouched_message,
};
use crate::archive;
use crate::decide::{CollectorDecision, Facts, Running, decide};
use crate::download::{DownloadRequest, Downloader};
use crate::journal::{
    InstallRecord, InstallStep, InstalledState, InstalledStateStore, Journal, JournalError,
    RollbackFloor,
};
use crate::report::ErrorReport;
use crate::storage::{self, StorageLayout};

/// A verified executable ready beside the live one, journaled as `Staged`. Only
/// [`Installer::stage`] makes one, and only from a [`Verified`] package.
#[derive(Debug)]
pub struct StagedInstall {
    pub(super) record: InstallRecord,
}

impl StagedInstall {
    /// The journaled record.
    pub fn record(&self) -> &InstallRecord {
        &self.record
    }
}

/// Runs installs for one collector executable and one storage directory.
#[derive(Debug)]
pub struct Installer {
    pub(super) layout: StorageLayout,
    pub(super) journal: Journal,
    pub(super) state: InstalledStateStore,
    pub(super) config: InstallConfig,
    pub(super) downloader: Downloader,
}

impl Installer {
    /// An installer using `layout` for its files.
    ///
    /// # Errors
    /// The downloads directory cannot be created or the HTTP client cannot be built.
    pub fn new(layout: StorageLayout, config: InstallConfig) -> Result<Self, InstallError> {
        let downloader = Downloader::new(layout.downloads_dir(), config.download.clone())?;
        Ok(Self::with_downloader(layout, config, downloader))
    }

    /// An installer with a caller-built downloader (custom TLS roots, proxies).
    pub fn with_downloader(
        layout: StorageLayout,
        config: InstallConfig,
        downloader: Downloader,
    ) -> Self {
        Self {
            journal: Journal::new(layout.journal_path()),
            state: InstalledStateStore::new(layout.installed_state_path()),
            layout,
            config,
            downloader,
        }
    }

    /// The settings.
    pub fn config(&self) -> &InstallConfig {
        &self.config
    }

    /// The install journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The persistent installed state; a corrupt file is moved aside and an empty state returned
    /// (logged), since refusing to run would leave the host without a collector. The
    /// anti-rollback floor it held is kept by [`Installer::rollback_floor`], which fails closed.
    pub fn installed_state(&self) -> InstalledState {
        self.state.load_or_recover()
    }

    /// Durably replaces the installed state (and raises the floor file with it).
    ///
    /// # Errors
    /// The write failed.
    pub fn save_installed_state(&self, state: &InstalledState) -> Result<(), JournalError> {
        self.state.save(state)
    }

    /// The anti-rollback floor (from both of its copies; unknown when neither can be read).
    pub fn rollback_floor(&self) -> RollbackFloor {
        self.state.rollback_floor()
    }

    /// What [`decide`] says about an offer of `package` alone, given what is installed: the
    /// supervisor's one decision procedure, for callers that install one package directly.
    pub fn decide_offer(
        &self,
        package: &str,
        offer: &PackageAvailable,
        policy: &TrustPolicy,
        now: SystemTime,
    ) -> CollectorDecision {
        let state = self.installed_state();
        let floor = self.rollback_floor();
        let running = state.packages.get(package).map_or_else(
            || Running::new(package, "", Vec::new(), None),
            |installed| {
                Running::new(
                    package,
                    &installed.version,
                    installed.server_hash.clone(),
                    installed.content_hash,
                )
            },
        );
        let offers = PackagesAvailable {
            packages: [(package.to_owned(), offer.clone())].into(),
            all_packages_hash: Vec::new(),
        };
        let facts =
            Facts::new(&running, &state, &floor, policy, now).collector_package(Some(package));
        decide(&offers, &facts).collector
    }

    /// Decides on `offer` for `package` ([`Installer::decide_offer`]) and carries the decision
    /// out, reporting progress to `events`.
    ///
    /// An offer that is already installed returns at once (`Installed` event); one that failed
    /// before returns its original failure ([`InstallError::PreviouslyFailed`]) without being
    /// retried, until the server changes the offer's hash; one the trust policy refuses is
    /// refused before anything is downloaded.
    ///
    /// On failure the previous collector is running again (restored if the swap had happened)
    /// and the failure is recorded so the same offer is not retried, except for interrupted
    /// downloads ([`InstallError::is_retryable`]), which resume on the next attempt.
    ///
    /// # Errors
    /// [`InstallFailed`] with the exact message for the `InstallFailed` status.
    pub async fn install_offer<C: Collector>(
        &self,
        collector: &mut C,
        package: &str,
        offer: &PackageAvailable,
        policy: &TrustPolicy,
        now: SystemTime,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Installed, InstallFailed> {
        match self.decide_offer(package, offer, policy, now) {
            CollectorDecision::Install { approved, .. } => {
                self.install_approved(collector, package, offer, *approved, events)
                    .await
            }
            CollectorDecision::AlreadyInstalled { .. } => {
                let state = self.installed_state();
                let version = state
                    .packages
                    .get(package)
                    .map_or_else(|| offer.version.clone(), |p| p.version.clone());
                events(InstallEvent::Installed {
                    version: version.clone(),
                });
                Ok(Installed {
                    package: package.to_owned(),
                    version,
                    server_hash: offer.hash.clone(),
                })
            }
            CollectorDecision::PreviouslyFailed { error_message, .. } => {
                events(InstallEvent::InstallFailed {
                    error_message: error_message.clone(),
                });
                Err(InstallFailed {
                    error: InstallError::PreviouslyFailed {
                        package: package.to_owned(),
                        version: offer.version.clone(),
                    },
                    error_message,
                    rolled_back: false,
                    collector_healthy: None,
                })
            }
            CollectorDecision::Refused {
                error, remember, ..
            } => Err(self.refuse(package, offer, error, remember, events)),
            _ => {
                let error = InstallError::InvalidOffer {
                    package: package.to_owned(),
                    reason: "the offer cannot be installed as this collector".to_owned(),
                };
                Err(self.refuse(package, offer, error, false, events))
            }
        }
    }

    /// Records an offer refused before anything was done (when `remember`, it is not retried
    /// until the server changes it) and reports the failure.
    pub fn refuse(
        &self,
        package: &str,
        offer: &PackageAvailable,
        error: InstallError,
        remember: bool,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> InstallFailed {
        let error_message = untouched_message(&error);
        tracing::warn!(%package, version = %offer.version, %error_message, "offer refused");
        if remember {
            self.record_failed_offer(package, &offer.version, &offer.hash, &error_message);
        }
        self.failed_untouched(error, events)
    }

    /// Records that the offer of `package` with `offered_hash` failed with `message`, so it is
    /// not retried until the server changes it.
    pub fn record_failed_offer(
        &self,
        package: &str,
        version: &str,
        offered_hash: &[u8],
        message: &str,
    ) {
        let mut state = self.installed_state();
        state.record_failure(package, version, offered_hash.to_vec(), message);
        if let Err(err) = self.state.save(&state) {
            tracing::error!(error = %ErrorReport(&err), "cannot record the failed offer");
        }
    }

    /// Records that `package` runs `version` from the offer with `server_hash` without an
    /// install (what runs is what the server offers).
    pub fn record_already_installed(&self, package: &str, version: &str, server_hash: &[u8]) {
        let mut state = self.installed_state();
        let (content_hash, executable) = state
            .packages
            .get(package)
            .map_or((None, None), |p| (p.content_hash, p.executable_sha256));
        state.record_installed(
            package,
            version,
            server_hash.to_vec(),
            content_hash,
            executable,
        );
        if let Err(err) = self.state.save(&state) {
            tracing::error!(error = %ErrorReport(&err), "cannot record the installed package");
        }
    }

    /// Downloads, verifies, stages and installs an offer the trust policy approved (see
    /// [`decide`]), reporting progress to `events`.
    ///
    /// # Errors
    /// [`InstallFailed`] with the exact message for the `InstallFailed` status.
    pub async fn install_approved<C: Collector>(
        &self,
        collector: &mut C,
        package: &str,
        offer: &PackageAvailable,
        approved: Verified<ApprovedPackage>,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Installed, InstallFailed> {
        let state = self.installed_state();
        let mut record = InstallRecord::new(
            package,
            offer.version.clone(),
            offer.hash.clone(),
            self.config.executable.clone(),
        );
        record.previous_version = state.packages.get(package).map(|p| p.version.clone());
        if let Err(err) = self.journal.write(&record) {
            // Nothing happened yet and nothing can be journaled: report, touch nothing.
            return Err(self.failed_untouched(err.into(), events));
        }
        events(InstallEvent::Step(InstallStep::Downloading));
        let staged = match self
            .fetch_and_stage(&mut record, package, offer, approved, events)
            .await
        {
            Ok(staged) => staged,
            Err(err) => return Err(self.fail_before_swap(&mut record, err, events)),
        };
        self.swap_staged(collector, staged.record, events).await
    }

    async fn fetch_and_stage(
        &self,
        record: &mut InstallRecord,
        package: &str,
        offer: &PackageAvailable,
        approved: Verified<ApprovedPackage>,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<StagedInstall, InstallError> {
        let file = offer.file.as_ref().ok_or_else(|| InstallError::NoFile {
            package: package.to_owned(),
            version: offer.version.clone(),
        })?;
        let verify_error = |source| InstallError::Verify {
            package: package.to_owned(),
            version: offer.version.clone(),
            source: Box::new(source),
        };
        if approved.name() != package || approved.version() != offer.version {
            return Err(InstallError::ProofMismatch {
                verified: format!("{} {}", approved.name(), approved.version()),
                offered: format!("{package} {}", offer.version),
            });
        }
        let max_size = self.config.download.max_size;
        let mut request = DownloadRequest::from_downloadable_file(package, file);
        request.expected_size = approved.signed_size();
        let downloaded = self
            .downloader
            .download(&request, |progress| {
                events(InstallEvent::Downloading(progress))
            })
            .await?;

        self.journal.enter(record, InstallStep::Verifying)?;
        events(InstallEvent::Step(InstallStep::Verifying));
        // The downloader hashed the bytes with opamp-verify's hasher as they streamed to disk, and
        // the file holds exactly those bytes: neither the check nor the staging reads it again.
        if downloaded.size() > max_size {
            return Err(verify_error(opamp_verify::VerifyError::TooLarge {
                limit: max_size,
            }));
        }
        let verified = approved
            .accept_hashed(downloaded.hashed)
            .map_err(verify_error)?;
        // Extraction and copies of a large binary run on the blocking pool.
        let stager = Stager {
            journal: self.journal.clone(),
            layout: self.layout.clone(),
            config: self.config.clone(),
        };
        let mut owned = record.clone();
        let package_file = downloaded.path.clone();
        let (staged, updated) = tokio::task::spawn_blocking(move || {
            let staged = stager.stage(&mut owned, &verified, &package_file, true);
            (staged, owned)
        })
        .await
        .map_err(|join| io_error("stage", &downloaded.path)(std::io::Error::other(join)))?;
        *record = updated;
        staged
    }

    /// Extracts the verified package, places the executable beside the live one as
    /// `<exe>.next`, and journals `Staged` with the executable's SHA-256.
    ///
    /// `record` must come from [`InstallRecord::new`] (journaled at `Downloading`) or be at
    /// `Verifying`; its executable paths are reset to this installer's.
    ///
    /// `package_file` is hashed again on the way (it may have changed since it was verified).
    ///
    /// # Errors
    /// The package file no longer has the verified hash, cannot be unpacked, or the copy or the
    /// journal write failed.
    pub fn stage(
        &self,
        record: &mut InstallRecord,
        verified: &Verified<VerifiedPackage>,
        package_file: &Path,
    ) -> Result<StagedInstall, InstallError> {
        Stager {
            journal: self.journal.clone(),
            layout: self.layout.clone(),
            config: self.config.clone(),
        }
        .stage(record, verified, package_file, false)
    }

    /// Stops the old collector, swaps in the staged executable, starts it and runs the health
    /// gate; rolls back on failure. `<exe>.next` is hashed once more first: a caller may have
    /// held `staged` for a while.
    ///
    /// # Errors
    /// [`InstallFailed`]; the previous collector runs again unless the message says otherwise.
    pub async fn install_staged<C: Collector>(
        &self,
        collector: &mut C,
        staged: StagedInstall,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Installed, InstallFailed> {
        let mut record = staged.record;
        if let (Some(next), Some(new_hash)) = (record.staged_path.clone(), record.staged_sha256)
            && !matches!(hash_if_exists_async(&next).await, Ok(Some(hash)) if hash == new_hash)
        {
            let err = InstallError::NotVerified {
                path: next,
                expected: new_hash,
            };
            events(InstallEvent::Step(InstallStep::Staged));
            return Err(self.fail_before_swap(&mut record, err, events));
        }
        self.swap_staged(collector, record, events).await
    }

    /// [`Self::install_staged`] for a record staged moments ago by this installer.
    async fn swap_staged<C: Collector>(
        &self,
        collector: &mut C,
        mut record: InstallRecord,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Installed, InstallFailed> {
        events(InstallEvent::Step(InstallStep::Staged));
        let exe = record.executable_path.clone();
        let Some(next) = record
            .staged_path
            .clone()
            .filter(|_| record.staged_sha256.is_some())
        else {
            let err = InstallError::Interrupted { step: record.step };
            return Err(self.fail_before_swap(&mut record, err, events));
        };
        match hash_if_exists_async(&exe).await {
            Ok(previous) => record.previous_sha256 = previous,
            Err(err) => {
                let err = io_error("hash current executable", &exe)(err);
                return Err(self.fail_before_swap(&mut record, err, events));
            }
        }

        if let Err(err) = self.step(&mut record, InstallStep::Stopping, events) {
            return Err(self.fail_before_swap(&mut record, err, events));
        }
        if let Err(source) = collector.stop().await {
            let err = InstallError::Collector {
                action: "stop",
                source,
            };
            // The old binary is untouched; make sure it runs.
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        if let Err(err) = self.step(&mut record, InstallStep::Swapping, events) {
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        if let Err(err) = swap::swap_in(&next, &exe, &record.previous_path) {
            let err = io_error("swap in the new executable", &exe)(err);
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        self.start_and_gate(collector, record, events).await
    }

    /// `Starting` and `HealthGate` on the swapped-in executable, then `Installed` or rollback.
    pub(super) async fn start_and_gate<C: Collector>(
        &self,
        collector: &mut C,
        mut record: InstallRecord,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<Installed, InstallFailed> {
        if let Err(err) = self.step(&mut record, InstallStep::Starting, events) {
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        if let Err(source) = collector.start(&record.executable_path).await {
            let err = InstallError::Collector {
                action: "start",
                source,
            };
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        if let Err(err) = self.step(&mut record, InstallStep::HealthGate, events) {
            return Err(self.rollback(collector, &mut record, err, events).await);
        }
        let deadline = tokio::time::Instant::now() + self.config.health_timeout;
        let outcome = collector.wait_healthy(deadline).await;
        if !outcome.is_healthy() {
            let err = InstallError::HealthGate {
                package: record.package_name.clone(),
                version: record.offered_version.clone(),
                outcome,
            };
            return Err(self.rollback(collector, &mut record, err, events).await);
        }

        let mut state = self.installed_state();
        state.record_installed(
            &record.package_name,
            &record.offered_version,
            record.offered_hash.clone(),
            record.content_hash,
            record.staged_sha256,
        );
        if let Err(err) = self.state.save(&state) {
            // The new version runs and is healthy; only the bookkeeping failed. Keep it, report.
            tracing::error!(error = %ErrorReport(&err), "cannot save installed state after a successful install");
        }
        record.error = None;
        if let Err(err) = self.journal.advance(&mut record, InstallStep::Installed) {
            tracing::error!(error = %ErrorReport(&err), "cannot journal Installed; recovery will re-run the health gate");
        }
        self.cleanup(&record.package_name);
        let _ = storage::remove_file_if_exists(&next_path_for(&record.executable_path));
        tracing::info!(package = %record.package_name, version = %record.offered_version, "installed");
        events(InstallEvent::Installed {
            version: record.offered_version.clone(),
        });
        Ok(Installed {
            package: record.package_name,
            version: record.offered_version,
            server_hash: record.offered_hash,
        })
    }

    fn step(
        &self,
        record: &mut InstallRecord,
        step: InstallStep,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> Result<(), InstallError> {
        self.journal.enter(record, step)?;
        events(InstallEvent::Step(step));
        Ok(())
    }

    /// Restores the previous executable if the live one is not it, starts it, confirms it is
    /// healthy, journals `Failed` and records the failed offer.
    pub(super) async fn rollback<C: Collector>(
        &self,
        collector: &mut C,
        record: &mut InstallRecord,
        error: InstallError,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> InstallFailed {
        let message = ErrorReport(&error).to_string();
        tracing::warn!(package = %record.package_name, error = %message, "install failed; rolling back");
        record.error = Some(message);
        if record.step != InstallStep::RollingBack
            && let Err(err) = self.journal.advance(record, InstallStep::RollingBack)
        {
            tracing::error!(error = %ErrorReport(&err), "cannot journal RollingBack; rolling back anyway");
            record.step = InstallStep::RollingBack;
        }
        events(InstallEvent::Step(InstallStep::RollingBack));
        if let Err(err) = collector.stop().await {
            tracing::warn!(error = %ErrorReport(&err), "stopping the failed collector");
        }
        let previous_label = record
            .previous_version
            .clone()
            .unwrap_or_else(|| "the previous version".to_owned());
        let exe = record.executable_path.clone();
        let (aftermath, healthy) = match self.restore_previous(record) {
            Err(reason) => (format!("rollback failed: {reason}"), None),
            Ok(false) => (
                "there was no previous executable; the failed one was removed".to_owned(),
                None,
            ),
            Ok(true) => match collector.start(&exe).await {
                Err(err) => (
                    format!(
                        "restored {previous_label} but it did not start: {}",
                        ErrorReport(&err)
                    ),
                    None,
                ),
                Ok(()) => {
                    let deadline = tokio::time::Instant::now() + self.config.health_timeout;
                    let outcome = collector.wait_healthy(deadline).await;
                    if outcome.is_healthy() {
                        (
                            format!("rolled back to {previous_label}, which is healthy"),
                            Some(true),
                        )
                    } else {
                        (
                            format!("rolled back to {previous_label}, which is {outcome}"),
                            Some(false),
                        )
                    }
                }
            },
        };
        let error_message = format!("{}; {aftermath}", ErrorReport(&error));
        record.error = Some(error_message.clone());
        if let Err(err) = self.journal.advance(record, InstallStep::Failed) {
            tracing::error!(error = %ErrorReport(&err), "cannot journal Failed");
        }
        self.remember_failure(record, &error, &error_message);
        let _ = storage::remove_file_if_exists(&next_path_for(&exe));
        events(InstallEvent::InstallFailed {
            error_message: error_message.clone(),
        });
        InstallFailed {
            error,
            error_message,
            rolled_back: true,
            collector_healthy: healthy,
        }
    }

    /// `Ok(true)` when the live path now holds the previous executable, `Ok(false)` when there
    /// never was one (first install).
    fn restore_previous(&self, record: &InstallRecord) -> Result<bool, String> {
        let exe = &record.executable_path;
        let Some(previous_hash) = record.previous_sha256 else {
            // First install: go back to having no collector rather than leave the failed
            // binary where the next start would pick it up.
            storage::remove_file_if_exists(exe)
                .map_err(|err| format!("cannot remove {}: {err}", exe.display()))?;
            return Ok(false);
        };
        if has_hash(exe, previous_hash) {
            return Ok(true);
        }
        if !has_hash(&record.previous_path, previous_hash) {
            return Err(format!(
                "{} is missing or does not have the previous executable's sha256 {previous_hash}",
                record.previous_path.display()
            ));
        }
        swap::link_or_copy_atomic(&record.previous_path, exe)
            .map_err(|err| format!("cannot restore {}: {err}", exe.display()))?;
        Ok(true)
    }

    /// A failure before the collector was touched: journal `Failed`, record the failed offer.
    pub(super) fn fail_before_swap(
        &self,
        record: &mut InstallRecord,
        error: InstallError,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> InstallFailed {
        let error_message = untouched_message(&error);
        tracing::warn!(package = %record.package_name, %error_message, "install failed");
        record.error = Some(error_message.clone());
        if let Err(err) = self.journal.advance(record, InstallStep::Failed) {
            tracing::error!(error = %ErrorReport(&err), "cannot journal Failed");
        }
        self.remember_failure(record, &error, &error_message);
        let _ = storage::remove_file_if_exists(&next_path_for(&record.executable_path));
        self.failed_untouched(error, events)
    }

    /// Reports a failure that left the collector untouched.
    fn failed_untouched(
        &self,
        error: InstallError,
        events: &mut (impl FnMut(InstallEvent) + Send),
    ) -> InstallFailed {
        let error_message = untouched_message(&error);
        events(InstallEvent::InstallFailed {
            error_message: error_message.clone(),
        });
        InstallFailed {
            error,
            error_message,
            rolled_back: false,
            collector_healthy: None,
        }
    }

    fn remember_failure(&self, record: &InstallRecord, error: &InstallError, message: &str) {
        if error.is_retryable() {
            return;
        }
        self.record_failed_offer(
            &record.package_name,
            &record.offered_version,
            &record.offered_hash,
            message,
        );
    }

    /// Removes staging files of a finished install (best effort: leftovers are harmless and are
    /// replaced by the next install).
    pub(super) fn cleanup(&self, package: &str) {
        let dir: PathBuf = self.layout.staging_dir(package);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(error = %ErrorReport(&err), dir = %dir.display(), "cannot remove staging directory");
        }
        if let Err(err) = self.downloader.discard(package) {
            tracing::debug!(error = %ErrorReport(&err), "cannot remove finished download");
        }
    }
}

/// The staging step with owned state, so it can run on the blocking pool.
struct Stager {
    journal: Journal,
    layout: StorageLayout,
    config: InstallConfig,
}

impl Stager {
    /// Puts the verified package's executable at `<exe>.next` and journals `Staged`.
    ///
    /// `package_is_hashed` says `package_file` holds exactly the bytes `verified` was computed
    /// from (the downloader hashed them as it wrote the file). Then a raw executable is renamed
    /// into place and an archive is extracted without another read; otherwise the file is
    /// hashed again, while it is copied or before it is extracted.
    fn stage(
        &self,
        record: &mut InstallRecord,
        verified: &Verified<VerifiedPackage>,
        package_file: &Path,
        package_is_hashed: bool,
    ) -> Result<StagedInstall, InstallError> {
        if verified.name() != record.package_name || verified.version() != record.offered_version {
            return Err(InstallError::ProofMismatch {
                verified: format!("{} {}", verified.name(), verified.version()),
                offered: format!("{} {}", record.package_name, record.offered_version),
            });
        }
        let expected = verified.content_hash();
        if record.step == InstallStep::Downloading {
            self.journal.enter(record, InstallStep::Verifying)?;
        }
        record.executable_path = self.config.executable.clone();
        record.previous_path = crate::journal::previous_path_for(&self.config.executable);
        let next = next_path_for(&self.config.executable);
        let not_verified = |path: &Path| InstallError::NotVerified {
            path: path.to_path_buf(),
            expected,
        };
        let staged_sha256 = match archive::detect_format(package_file)? {
            // A raw package is the executable: straight to `.next`, no staging directory.
            archive::PackageFormat::RawExecutable => {
                let placed = swap::place_verified(package_file, &next, expected, package_is_hashed)
                    .map_err(io_error("place new executable", &next))?;
                if placed != swap::Placed::Verified {
                    return Err(not_verified(package_file));
                }
                expected
            }
            archive::PackageFormat::TarGz => {
                if !package_is_hashed && !has_hash(package_file, expected) {
                    return Err(not_verified(package_file));
                }
                let staging_dir = self.layout.staging_dir(&record.package_name);
                let staged = archive::stage_package(
                    package_file,
                    &staging_dir,
                    &self.config.archive_executable,
                    &self.config.archive,
                )?;
                let placed = swap::place_verified(&staged.path, &next, staged.sha256, true)
                    .map_err(io_error("place new executable", &next))?;
                if placed != swap::Placed::Verified {
                    return Err(not_verified(&next));
                }
                staged.sha256
            }
        };
        record.content_hash = Some(expected);
        record.staged_sha256 = Some(staged_sha256);
        record.staged_path = Some(next);
        self.journal.advance(record, InstallStep::Staged)?;
        Ok(StagedInstall {
            record: record.clone(),
        })
    }
}
