//! Crash-safe records of the install in progress and of what is installed.
//!
//! Two files in `storage_dir`, each replaced atomically ([`crate::storage::write_atomic`]: temp
//! file, fsync, rename, fsync of the directory) and each self-checking: the first line is
//! `opamp-<kind> v1 <sha256 of the rest>`, the rest is JSON. A torn or edited file fails the
//! check and loads as [`JournalError::Corrupt`] instead of as a plausible but wrong state.
//!
//! - [`Journal`] holds one [`InstallRecord`]: the step of the current install, written *before*
//!   the step takes effect, so recovery knows the furthest the install may have got.
//! - [`InstalledStateStore`] holds the [`InstalledState`]: the installed version and hashes, the
//!   highest version ever installed (anti-rollback floor), and offers that failed and must not be
//!   retried until the server changes them.
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

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage;

/// A SHA-256 digest, stored as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 32 bytes (e.g. an OpAMP `content_hash`).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({self})")
    }
}

impl Serialize for Sha256Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256Hash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        Self::from_slice(&bytes)
            .ok_or_else(|| serde::de::Error::custom("a SHA-256 hash has 32 bytes"))
    }
}

/// Opaque bytes (the server's package hash), stored as lowercase hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Steps of an install, in order; `RollingBack` and `Failed` can follow any in-progress step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InstallStep {
    /// No install in progress.
    Idle,
    /// Fetching the package file.
    Downloading,
    /// Checking hash and signature.
    Verifying,
    /// A verified executable is in the staging directory; nothing live has changed.
    Staged,
    /// Stopping the running collector.
    Stopping,
    /// Replacing the executable (the previous one is kept).
    Swapping,
    /// Starting the new executable.
    Starting,
    /// Waiting for the new collector to prove healthy.
    HealthGate,
    /// The new version runs and passed the health gate.
    Installed,
    /// Restoring the previous executable after a failure.
    RollingBack,
    /// The install failed; the previous executable runs (see the record's error).
    Failed,
}

impl InstallStep {
    /// Whether an install was under way at this step (recovery has work to do).
    pub fn is_in_progress(self) -> bool {
        !matches!(self, Self::Idle | Self::Installed | Self::Failed)
    }

    /// Whether the executable path may already hold the new binary at this step.
    pub fn may_have_swapped(self) -> bool {
        matches!(
            self,
            Self::Swapping | Self::Starting | Self::HealthGate | Self::RollingBack
        )
    }

    /// Whether `next` is a legal successor of `self`.
    pub fn can_advance_to(self, next: Self) -> bool {
        use InstallStep::*;
        match (self, next) {
            (Idle | Installed | Failed, Downloading | Verifying | Idle) => true,
            (Downloading, Verifying)
            | (Verifying, Staged)
            | (Staged, Stopping)
            | (Stopping, Swapping)
            | (Swapping, Starting)
            | (Starting, HealthGate)
            | (HealthGate, Installed)
            | (RollingBack, Failed) => true,
            (from, RollingBack | Failed) => from.is_in_progress(),
            _ => false,
        }
    }
}

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
    pub content_hash: Option<Sha256Hash>,
    /// SHA-256 of the staged executable, once staged from a verified package. Only a file with
    /// exactly this hash may be swapped in.
    pub staged_sha256: Option<Sha256Hash>,
    /// Staged executable.
    pub staged_path: Option<PathBuf>,
    /// Version running before this install.
    pub previous_version: Option<String>,
    /// SHA-256 of the executable before this install.
    pub previous_sha256: Option<Sha256Hash>,
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
    #[error("cannot {action} {}: {source}", path.display())]
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
        if !record.step.can_advance_to(next) {
            return Err(JournalError::IllegalTransition {
                from: record.step,
                to: next,
            });
        }
        let mut updated = record.clone();
        updated.step = next;
        self.write(&updated)?;
        tracing::debug!(package = %record.package_name, from = ?record.step, to = ?next, "install step");
        *record = updated;
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
    pub content_hash: Option<Sha256Hash>,
    /// SHA-256 of the installed executable.
    pub executable_sha256: Option<Sha256Hash>,
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
    /// Whether an offer with this server hash should be attempted: not when it is what is
    /// installed, nor when exactly this offer failed before.
    pub fn should_attempt(&self, package: &str, offered_hash: &[u8]) -> bool {
        let installed = self
            .packages
            .get(package)
            .is_some_and(|p| p.server_hash == offered_hash);
        let failed = self
            .failed_offers
            .get(package)
            .is_some_and(|f| f.offered_hash == offered_hash);
        !installed && !failed
    }

    /// The anti-rollback floor of `package`, when it parses as semver.
    pub fn highest_version(&self, package: &str) -> Option<semver::Version> {
        self.packages
            .get(package)
            .and_then(|p| semver::Version::parse(p.highest_version.trim_start_matches('v')).ok())
    }

    /// Records a successful install and forgets an earlier failure of the package.
    pub fn record_installed(
        &mut self,
        package: &str,
        version: &str,
        server_hash: Vec<u8>,
        content_hash: Option<Sha256Hash>,
        executable_sha256: Option<Sha256Hash>,
    ) {
        let highest = match self.packages.get(package) {
            Some(old) if version_greater(&old.highest_version, version) => {
                old.highest_version.clone()
            }
            _ => version.to_owned(),
        };
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

/// `a > b` by semver when both parse, otherwise never (an unparsable version does not raise the
/// floor over a parsable one and is replaced by the newer install).
fn version_greater(a: &str, b: &str) -> bool {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// The installed-state file.
#[derive(Debug, Clone)]
pub struct InstalledStateStore {
    path: PathBuf,
}

impl InstalledStateStore {
    /// The store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, or the empty state when none was ever written.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] or [`JournalError::Io`]. The safe reaction to corruption is
    /// [`InstalledStateStore::quarantine`] and the default state: the anti-rollback floor is then
    /// lost, but the signed-statement policy still applies and nothing unverified is run.
    pub fn load(&self) -> Result<InstalledState, JournalError> {
        Ok(load_checked(&self.path, "installed-state")?.unwrap_or_default())
    }

    /// Durably replaces the stored state.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn save(&self, state: &InstalledState) -> Result<(), JournalError> {
        save_checked(&self.path, "installed-state", state)
    }

    /// Moves a corrupt file aside; see [`Journal::quarantine`].
    ///
    /// # Errors
    /// The rename failed.
    pub fn quarantine(&self) -> Result<PathBuf, JournalError> {
        quarantine(&self.path)
    }
}

fn header_prefix(kind: &str) -> String {
    format!("opamp-{kind} v1 ")
}

fn save_checked<T: Serialize>(path: &Path, kind: &str, value: &T) -> Result<(), JournalError> {
    let body = serde_json::to_vec_pretty(value).map_err(|err| JournalError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(err),
    })?;
    let mut bytes = header_prefix(kind).into_bytes();
    bytes.extend_from_slice(hex::encode(Sha256::digest(&body)).as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);
    storage::write_atomic(path, &bytes).map_err(|source| JournalError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn load_checked<T: DeserializeOwned>(path: &Path, kind: &str) -> Result<Option<T>, JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let header = std::str::from_utf8(header).map_err(|_| corrupt("header is not UTF-8".into()))?;
    let expected = header
        .strip_prefix(&header_prefix(kind))
        .ok_or_else(|| corrupt(format!("header {header:?} is not opamp-{kind} v1")))?;
    let actual = hex::encode(Sha256::digest(body));
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch (header {expected}, content {actual})"
        )));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|err| corrupt(format!("invalid content: {err}")))
}

fn quarantine(path: &Path) -> Result<PathBuf, JournalError> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".corrupt");
    let target = path.with_file_name(name);
    std::fs::rename(path, &target).map_err(|source| JournalError::Io {
        action: "quarantine",
        path: path.to_path_buf(),
        source,
    })?;
    tracing::warn!(from = %path.display(), to = %target.display(), "moved corrupt file aside");
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_transitions_are_legal_and_skips_are_not() {
        use InstallStep::*;
        let path = [
            Idle,
            Downloading,
            Verifying,
            Staged,
            Stopping,
            Swapping,
            Starting,
            HealthGate,
            Installed,
        ];
        for pair in path.windows(2) {
            assert!(
                pair[0].can_advance_to(pair[1]),
                "{:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(!Staged.can_advance_to(Swapping));
        assert!(!Downloading.can_advance_to(Installed));
        assert!(HealthGate.can_advance_to(RollingBack));
        assert!(!Installed.can_advance_to(RollingBack));
    }

    #[test]
    fn floor_never_decreases() {
        let mut state = InstalledState::default();
        state.record_installed("otelcol", "0.100.0", vec![1], None, None);
        state.record_installed("otelcol", "0.99.0", vec![2], None, None);
        assert_eq!(state.packages["otelcol"].version, "0.99.0");
        assert_eq!(
            state.highest_version("otelcol"),
            Some(semver::Version::new(0, 100, 0))
        );
    }

    #[test]
    fn failed_offer_is_not_retried_until_its_hash_changes() {
        let mut state = InstalledState::default();
        state.record_failure("otelcol", "0.101.0", vec![9], "health gate failed");
        assert!(!state.should_attempt("otelcol", &[9]));
        assert!(state.should_attempt("otelcol", &[10]));
    }
}
