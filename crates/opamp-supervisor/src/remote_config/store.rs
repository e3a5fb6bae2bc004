//! The collector config files in `storage_dir` and the journal that keeps them consistent.
//!
//! - `collector-config.yaml`: what the collector runs (`--config`), always replaced whole
//!   ([`crate::storage::write_atomic`]), so it is the old or the new config, never a mix.
//! - `collector-config.good.yaml`: the last config that passed the health gate.
//! - `remote-config.json`: the journal (self-checking, atomic): the remote config hash being
//!   applied, if any, the hash applied last, and the last failure.
//!
//! An apply journals its hash *before* touching the live file and clears it only after the
//! good copy was updated. A supervisor killed at any point finds the hash at start-up and puts
//! the good copy back ([`ConfigStore::recover`]); it then reports the previous hash, so the
//! server offers the new config again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RemoteConfigError;
use crate::journal::file::{load_checked, quarantine, save_checked};
use crate::report::ErrorReport;
use crate::storage;

/// File name of the config the collector runs.
pub const LIVE_CONFIG_FILE: &str = "collector-config.yaml";
/// File name of the last config that passed the health gate.
pub const GOOD_CONFIG_FILE: &str = "collector-config.good.yaml";
/// File name of the remote-config journal.
pub const CONFIG_JOURNAL_FILE: &str = "remote-config.json";
const JOURNAL_KIND: &str = "remote-config";

/// What the journal records (hashes are the server's `config_hash`, in hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigRecord {
    /// The remote config being applied; set before the live file changes.
    pub applying: Option<String>,
    /// The remote config the good copy holds (`None`: the local base only).
    pub applied: Option<String>,
    /// The last remote config that failed, with the reason; cleared by a success.
    pub failed: Option<FailedConfig>,
}

/// A remote config that was refused or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailedConfig {
    /// Its `config_hash`, hex.
    pub hash: String,
    /// Why, as reported in `RemoteConfigStatus.error_message`.
    pub message: String,
}

/// The config files and journal of one storage directory.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    live: PathBuf,
    good: PathBuf,
    journal: PathBuf,
}

impl ConfigStore {
    /// The store in `storage_dir` (which must exist).
    pub fn new(storage_dir: &Path) -> Self {
        Self {
            live: storage_dir.join(LIVE_CONFIG_FILE),
            good: storage_dir.join(GOOD_CONFIG_FILE),
            journal: storage_dir.join(CONFIG_JOURNAL_FILE),
        }
    }

    /// Path of the config the collector runs.
    pub fn live_path(&self) -> &Path {
        &self.live
    }

    /// Start-up: undoes an interrupted apply (the good copy goes back live) and makes sure both
    /// files exist, writing `initial` (the composed local base) when there is none yet.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`] when a file cannot be read or written.
    pub fn recover(&self, initial: &str) -> Result<ConfigRecord, RemoteConfigError> {
        let mut record = self.load();
        let good = read_optional(&self.good)?;
        let live = read_optional(&self.live)?;
        match (&good, &live) {
            (Some(good), _) if record.applying.is_some() => {
                tracing::warn!(
                    applying = record.applying.as_deref().unwrap_or_default(),
                    "a remote config apply was interrupted; the previous config is put back"
                );
                if live.as_deref() != Some(good.as_slice()) {
                    write(&self.live, good)?;
                }
            }
            (Some(_), Some(_)) => {}
            (Some(good), None) => write(&self.live, good)?,
            (None, Some(live)) if record.applying.is_none() => write(&self.good, live)?,
            (None, _) => {
                // No good copy: the first start (or an apply interrupted before the first
                // good copy existed): the local base is the known-good config.
                write(&self.good, initial.as_bytes())?;
                write(&self.live, initial.as_bytes())?;
                record.applied = None;
            }
        }
        if record.applying.take().is_some() {
            self.save(&record)?;
        }
        Ok(record)
    }

    /// Journals `hash` as being applied, then makes `yaml` the live config.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn begin(
        &self,
        record: &mut ConfigRecord,
        hash: &str,
        yaml: &str,
    ) -> Result<(), RemoteConfigError> {
        record.applying = Some(hash.to_owned());
        self.save(record)?;
        write(&self.live, yaml.as_bytes())
    }

    /// The live config passed the gate: it becomes the good copy and `hash` the applied one.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn commit(
        &self,
        record: &mut ConfigRecord,
        hash: &str,
        yaml: &str,
    ) -> Result<(), RemoteConfigError> {
        write(&self.good, yaml.as_bytes())?;
        record.applying = None;
        record.applied = Some(hash.to_owned());
        record.failed = None;
        self.save(record)
    }

    /// The live config failed: the good copy goes back live and the failure is recorded.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn roll_back(
        &self,
        record: &mut ConfigRecord,
        hash: &str,
        message: &str,
    ) -> Result<(), RemoteConfigError> {
        let good = std::fs::read(&self.good).map_err(|source| io("read", &self.good, source))?;
        write(&self.live, &good)?;
        record.applying = None;
        self.record_failure(record, hash, message)
    }

    /// Records a config refused before it was applied.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn record_failure(
        &self,
        record: &mut ConfigRecord,
        hash: &str,
        message: &str,
    ) -> Result<(), RemoteConfigError> {
        record.failed = Some(FailedConfig {
            hash: hash.to_owned(),
            message: message.to_owned(),
        });
        self.save(record)
    }

    /// Forgets the last failure (the server offered what runs again).
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn clear_failure(&self, record: &mut ConfigRecord) -> Result<(), RemoteConfigError> {
        record.failed = None;
        self.save(record)
    }

    /// The live config's bytes.
    ///
    /// # Errors
    /// [`RemoteConfigError::Io`].
    pub fn read_live(&self) -> Result<Vec<u8>, RemoteConfigError> {
        std::fs::read(&self.live).map_err(|source| io("read", &self.live, source))
    }

    fn load(&self) -> ConfigRecord {
        match load_checked::<ConfigRecord>(&self.journal, JOURNAL_KIND) {
            Ok(record) => record.unwrap_or_default(),
            Err(err) => {
                // A corrupt journal cannot say what was applied; the good copy still can.
                tracing::error!(error = %ErrorReport(&err), "remote-config journal unreadable; starting from the good copy");
                let _ = quarantine(&self.journal);
                ConfigRecord {
                    applying: Some("unknown".to_owned()),
                    ..ConfigRecord::default()
                }
            }
        }
    }

    fn save(&self, record: &ConfigRecord) -> Result<(), RemoteConfigError> {
        save_checked(&self.journal, JOURNAL_KIND, record).map_err(RemoteConfigError::Journal)
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, RemoteConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io("read", path, source)),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RemoteConfigError> {
    storage::write_atomic(path, bytes).map_err(|source| io("write", path, source))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> RemoteConfigError {
    RemoteConfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_apply_puts_the_good_copy_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        let mut record = store.recover("base: 1\n").unwrap();
        assert_eq!(store.read_live().unwrap(), b"base: 1\n");
        store.begin(&mut record, "aa", "new: 2\n").unwrap();
        assert_eq!(store.read_live().unwrap(), b"new: 2\n");
        // Killed here: the next start finds `applying` and restores the good copy.
        let record = ConfigStore::new(dir.path()).recover("base: 1\n").unwrap();
        assert_eq!(store.read_live().unwrap(), b"base: 1\n");
        assert_eq!(record.applying, None);
        assert_eq!(record.applied, None);
    }

    #[test]
    fn commit_and_roll_back_keep_the_good_copy_right() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        let mut record = store.recover("base: 1\n").unwrap();
        store.begin(&mut record, "aa", "a: 1\n").unwrap();
        store.commit(&mut record, "aa", "a: 1\n").unwrap();
        store.begin(&mut record, "bb", "b: 1\n").unwrap();
        store.roll_back(&mut record, "bb", "bad").unwrap();
        assert_eq!(store.read_live().unwrap(), b"a: 1\n");
        let reloaded = ConfigStore::new(dir.path()).recover("base: 1\n").unwrap();
        assert_eq!(reloaded.applied.as_deref(), Some("aa"));
        assert_eq!(reloaded.failed.map(|f| f.hash), Some("bb".to_owned()));
        assert_eq!(store.read_live().unwrap(), b"a: 1\n");
    }
}
