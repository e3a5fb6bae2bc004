//! What the server checks and cleans in its data directory before it opens the store: one
//! server per directory (a lock), no silently empty store next to existing package files, an
//! intact database (`PRAGMA quick_check`), and no upload left half-written by a killed server.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::FleetError;
use crate::config::FleetServerConfig;

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = "server.lock";

/// Holds the data directory's lock for as long as it lives (the OS drops the lock with the
/// file, also when the process is killed).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

/// Takes the exclusive lock on `<data_dir>/server.lock`.
///
/// # Errors
/// [`FleetError::DataDirInUse`] when another server holds it; [`FleetError::Io`].
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, FleetError> {
    std::fs::create_dir_all(data_dir).map_err(io_error("creating", data_dir))?;
    let path = data_dir.join(LOCK_FILE_NAME);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("opening", &path))?;
    if !FileExt::try_lock_exclusive(&file).map_err(io_error("locking", &path))? {
        return Err(FleetError::DataDirInUse {
            data_dir: data_dir.to_path_buf(),
            lock: path,
        });
    }
    Ok(DataDirLock { _file: file })
}

/// Refuses a missing or zero-byte `fleet.db` while `packages/` holds files, unless the
/// configuration says to initialise a new store.
///
/// # Errors
/// [`FleetError::StoreMissing`]; [`FleetError::Io`] when the packages directory is unreadable.
pub(crate) fn check_store_present(config: &FleetServerConfig) -> Result<(), FleetError> {
    let database = config.database_path();
    let state = match std::fs::metadata(&database) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) => "empty (0 bytes)",
        Err(err) if err.kind() == io::ErrorKind::NotFound => "missing",
        Err(err) => return Err(io_error("reading", &database)(err)),
    };
    let packages = config.packages_dir();
    let files = count_files(&packages).map_err(io_error("reading", &packages))?;
    if files == 0 {
        return Ok(());
    }
    if config.store.initialise {
        tracing::warn!(database = %database.display(), state, files, "initialising a new, empty store next to existing package files, as configured");
        return Ok(());
    }
    Err(FleetError::StoreMissing {
        database,
        state,
        packages,
        files,
    })
}

/// Removes whatever a killed server left in `uploads/` (uploads live there only while their
/// request runs, and the lock says no other server is running).
///
/// # Errors
/// [`FleetError::Io`] when it cannot be removed.
pub(crate) fn clear_uploads(upload_dir: &Path) -> Result<(), FleetError> {
    match std::fs::remove_dir_all(upload_dir) {
        Ok(()) => {
            tracing::info!(dir = %upload_dir.display(), "removed unfinished uploads of an earlier run");
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("clearing", upload_dir)(err)),
    }
}

/// Regular files under `dir`, recursively (0 when it does not exist).
fn count_files(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            count += count_files(&entry.path())?;
        } else if kind.is_file() {
            count += 1;
        }
    }
    Ok(count)
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FleetError {
    let path: PathBuf = path.to_path_buf();
    move |source| FleetError::Io {
        context: format!("{what} {}", path.display()),
        source,
    }
}
