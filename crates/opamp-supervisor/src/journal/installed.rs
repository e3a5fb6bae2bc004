//! What is installed, which offers failed, and the store that keeps them together with the
//! anti-rollback floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JournalError;
use super::file::{load_checked, quarantine, save_checked};
use super::floor::RollbackFloor;
use crate::report::ErrorReport;
use opamp_packages::ContentHash;

use super::hash::hex_bytes;

/// What is installed, what may not be installed again, and the anti-rollback floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstalledState {
    /// Installed packages by name.
    pub packages: BTreeMap<String, InstalledPackage>,
    /// Offers that failed, by package name; not retried while the server's hash is the same.
    pub failed_offers: BTreeMap<String, FailedOffer>,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstalledPackage {
    /// Installed version (`agent_has_version`).
    pub version: String,
    /// SHA-256 of the package file it came from.
    pub content_hash: Option<ContentHash>,
    /// SHA-256 of the installed executable.
    pub executable_sha256: Option<ContentHash>,
    /// The server's package hash of the offer (`agent_has_hash`).
    #[serde(with = "hex_bytes")]
    pub server_hash: Vec<u8>,
    /// Highest version ever installed (never decreases, except by an authorised downgrade which
    /// does not lower it either): the anti-rollback floor.
    pub highest_version: String,
}

/// An offer that failed to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailedOffer {
    /// The server's package hash of the failed offer.
    #[serde(with = "hex_bytes")]
    pub offered_hash: Vec<u8>,
    /// Its version.
    pub version: String,
    /// What failed (the `InstallFailed` `error_message`).
    pub error: String,
}

impl InstalledState {
    /// Records a successful install and forgets an earlier failure of the package.
    pub fn record_installed(
        &mut self,
        package: &str,
        version: &str,
        server_hash: Vec<u8>,
        content_hash: Option<ContentHash>,
        executable_sha256: Option<ContentHash>,
    ) {
        let mut floor = self.rollback_floor();
        floor.raise(package, version);
        let highest = floor.versions.remove(package).unwrap_or_default();
        self.packages.insert(
            package.to_owned(),
            InstalledPackage {
                version: version.to_owned(),
                content_hash,
                executable_sha256,
                server_hash,
                highest_version: highest,
            },
        );
        self.failed_offers.remove(package);
    }

    /// The floor this state records (each package's `highest_version`; empty means none).
    pub fn rollback_floor(&self) -> RollbackFloor {
        let mut floor = RollbackFloor::default();
        for (name, package) in &self.packages {
            if !package.highest_version.is_empty() {
                floor
                    .versions
                    .insert(name.clone(), package.highest_version.clone());
            }
        }
        floor
    }

    /// Records a failed offer so it is not retried until its hash changes.
    pub fn record_failure(
        &mut self,
        package: &str,
        version: &str,
        offered_hash: Vec<u8>,
        error: &str,
    ) {
        self.failed_offers.insert(
            package.to_owned(),
            FailedOffer {
                offered_hash,
                version: version.to_owned(),
                error: error.to_owned(),
            },
        );
    }
}

/// The installed-state file and, beside it, the rollback floor file (`rollback-floor.json`).
#[derive(Debug, Clone)]
pub struct InstalledStateStore {
    path: PathBuf,
    floor_path: PathBuf,
}

impl InstalledStateStore {
    /// The store at `path`; the floor file sits in the same directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let floor_path = path.with_file_name("rollback-floor.json");
        Self { path, floor_path }
    }

    /// The installed-state file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rollback floor file path.
    pub fn floor_path(&self) -> &Path {
        &self.floor_path
    }

    /// The stored state, or the empty state when none was ever written.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] or [`JournalError::Io`]; see
    /// [`InstalledStateStore::load_or_recover`] for the safe reaction.
    pub fn load(&self) -> Result<InstalledState, JournalError> {
        Ok(load_checked(&self.path, "installed-state")?.unwrap_or_default())
    }

    /// The stored state; a corrupt file is moved aside (`.corrupt`) and the empty state
    /// returned, after the floor it held was secured: the floor file keeps it, or, when that
    /// copy is gone too, records the floor as unknown so installs are refused (fail closed).
    /// Failed offers recorded in a corrupt file are forgotten (they are retried once).
    pub fn load_or_recover(&self) -> InstalledState {
        match self.load() {
            Ok(state) => state,
            Err(err) => {
                tracing::error!(error = %ErrorReport(&err), "installed state unreadable; continuing without it");
                // Reads the floor while the corrupt state is still in place, so that an
                // unknown floor is written down before the evidence is moved aside.
                let floor = self.rollback_floor();
                if let Some(reason) = &floor.unknown {
                    tracing::error!(%reason, "anti-rollback floor unknown; installs are refused");
                }
                if matches!(err, JournalError::Corrupt { .. }) {
                    let _ = quarantine(&self.path);
                }
                InstalledState::default()
            }
        }
    }

    /// Durably replaces the stored state, and raises the floor file to the state's floor.
    ///
    /// # Errors
    /// [`JournalError::Io`]. The state file is written first; a failure to write the floor file
    /// is reported too, and the next load still finds the floor in the state.
    pub fn save(&self, state: &InstalledState) -> Result<(), JournalError> {
        save_checked(&self.path, "installed-state", state)?;
        let mut floor = match load_checked::<RollbackFloor>(&self.floor_path, "rollback-floor") {
            Ok(stored) => stored.unwrap_or_default(),
            // The state just written is the valid copy; it heals the floor file.
            Err(_) => RollbackFloor::default(),
        };
        floor.merge(&state.rollback_floor());
        save_checked(&self.floor_path, "rollback-floor", &floor)
    }

    /// The anti-rollback floor from both copies (the higher wins). When neither copy can be
    /// read the floor is unknown, and that is written to the floor file so it survives a
    /// restart; a readable state file heals a corrupt floor file.
    pub fn rollback_floor(&self) -> RollbackFloor {
        let state = load_checked::<InstalledState>(&self.path, "installed-state");
        let file = load_checked::<RollbackFloor>(&self.floor_path, "rollback-floor");
        let floor_file_damaged = matches!(file, Err(JournalError::Corrupt { .. }));
        let floor = match (state, file) {
            (Ok(state), Ok(file)) => {
                let mut floor = state.map(|s| s.rollback_floor()).unwrap_or_default();
                if let Some(file) = file {
                    floor.merge(&file);
                }
                return floor;
            }
            (Ok(Some(state)), Err(err)) => {
                tracing::warn!(error = %ErrorReport(&err), "rollback floor file unreadable; using the installed state's copy");
                let floor = state.rollback_floor();
                if floor_file_damaged {
                    let _ = save_checked(&self.floor_path, "rollback-floor", &floor);
                }
                return floor;
            }
            (Ok(None), Err(err)) => RollbackFloor::unknown(format!(
                "the floor file is unreadable ({}) and there is no installed state",
                ErrorReport(&err)
            )),
            (Err(_), Ok(Some(file))) => return file,
            (Err(err), Ok(None)) => RollbackFloor::unknown(format!(
                "the installed state is unreadable ({}) and there is no floor file",
                ErrorReport(&err)
            )),
            (Err(state_err), Err(file_err)) => RollbackFloor::unknown(format!(
                "both copies are unreadable: {}; {}",
                ErrorReport(&state_err),
                ErrorReport(&file_err)
            )),
        };
        // Remember the unknown floor; an unreadable (not corrupt) file is left alone.
        if (floor_file_damaged || !self.floor_path.exists())
            && let Err(err) = save_checked(&self.floor_path, "rollback-floor", &floor)
        {
            tracing::error!(error = %ErrorReport(&err), "cannot record the unknown rollback floor");
        }
        floor
    }

    /// The operator's reset: sets the floor of `package` to `version` in both copies and clears
    /// an unknown floor. Run it only while no supervisor uses the storage directory.
    ///
    /// # Errors
    /// `version` is not a version, or a write failed.
    pub fn reset_rollback_floor(&self, package: &str, version: &str) -> Result<(), JournalError> {
        if opamp_packages::parse_version(version).is_err() {
            return Err(JournalError::Corrupt {
                path: self.floor_path.clone(),
                reason: format!("{version:?} is not a version"),
            });
        }
        let mut state = self.load().unwrap_or_default();
        if let Some(installed) = state.packages.get_mut(package) {
            installed.highest_version = version.to_owned();
        }
        save_checked(&self.path, "installed-state", &state)?;
        let mut floor = match load_checked::<RollbackFloor>(&self.floor_path, "rollback-floor") {
            Ok(stored) => stored.unwrap_or_default(),
            Err(_) => RollbackFloor::default(),
        };
        floor.reset(package, version);
        save_checked(&self.floor_path, "rollback-floor", &floor)
    }

    /// Moves a corrupt state file aside; see [`super::Journal::quarantine`].
    ///
    /// # Errors
    /// The rename failed.
    pub fn quarantine(&self) -> Result<PathBuf, JournalError> {
        quarantine(&self.path)
    }
}
