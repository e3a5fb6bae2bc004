//! Exclusive ownership of a storage directory.
//!
//! Two supervisors sharing a `storage_dir` would interleave journal writes and swap binaries
//! under each other. The first to start takes an exclusive advisory lock (`flock`) on
//! `<storage_dir>/supervisor.lock` and holds it for its lifetime; the kernel drops the lock when
//! the process exits, even on SIGKILL, so a crashed supervisor never leaves a stale lock behind.
//!
//! ```
//! use opamp_supervisor::lock::{StorageLock, LockError};
//! let dir = std::env::temp_dir().join(format!("opamp-lock-doc-{}", std::process::id()));
//! let first = StorageLock::acquire(&dir)?;
//! assert!(matches!(StorageLock::acquire(&dir), Err(LockError::Busy { .. })));
//! drop(first);
//! StorageLock::acquire(&dir)?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), LockError>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

/// Name of the lock file inside the storage directory.
pub const LOCK_FILE_NAME: &str = "supervisor.lock";

/// Why the storage directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "storage directory {} is already in use by another supervisor{} (lock file {})",
        dir.display(),
        holder_pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.join(LOCK_FILE_NAME).display()
    )]
    Busy {
        /// The storage directory.
        dir: PathBuf,
        /// Process id recorded by the holder, when readable.
        holder_pid: Option<u32>,
    },
    /// The directory or lock file could not be created, opened or locked.
    #[error("cannot lock storage directory {}", dir.display())]
    Io {
        /// The storage directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Held while this process owns the storage directory; dropping it releases the lock.
#[derive(Debug)]
pub struct StorageLock {
    dir: PathBuf,
    // Kept open: closing the descriptor releases the lock.
    _file: File,
}

impl StorageLock {
    /// Creates `dir` if needed and takes its lock without waiting.
    ///
    /// # Errors
    /// [`LockError::Busy`] when another holder exists (in this or another process),
    /// [`LockError::Io`] when the directory or lock file cannot be created or opened.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io_error = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))
            .map_err(io_error)?;
        if !FileExt::try_lock_exclusive(&file).map_err(io_error)? {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                holder_pid: read_pid(&mut file),
            });
        }
        // The pid is only for humans and error messages; the flock is the actual guard.
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        tracing::debug!(dir = %dir.display(), "storage directory locked");
        Ok(StorageLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_in_the_same_process_is_refused_with_the_dir_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let first = StorageLock::acquire(&storage).unwrap();
        assert_eq!(first.dir(), storage);
        let err = StorageLock::acquire(&storage).unwrap_err();
        match &err {
            LockError::Busy { dir, holder_pid } => {
                assert_eq!(dir, &storage);
                assert_eq!(*holder_pid, Some(std::process::id()));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&storage.display().to_string()), "{text}");
        assert!(text.contains("already in use"), "{text}");
        drop(first);
        StorageLock::acquire(&storage).unwrap();
    }

    #[test]
    fn unusable_directory_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = StorageLock::acquire(&file.join("storage")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
