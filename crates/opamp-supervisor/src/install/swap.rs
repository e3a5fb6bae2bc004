//! File moves of an install. Each leaves the live executable path holding a complete file at
//! every instant: new files are written beside it and renamed over it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::report::ErrorReport;
use crate::storage;
use opamp_packages::ContentHash;

/// `<exe>.next`: the verified new executable, written beside the live one so the swap is a
/// rename within one directory (atomic, and instant even for a large binary).
pub(crate) fn next_path_for(executable: &Path) -> PathBuf {
    let mut name = executable
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".next");
    executable.with_file_name(name)
}

/// Whether the file at `path` exists and has exactly `expected` as SHA-256.
pub(crate) fn has_hash(path: &Path, expected: ContentHash) -> bool {
    storage::sha256_file(path).is_ok_and(|actual| actual == expected)
}

/// SHA-256 of `path`, `None` when it does not exist.
pub(crate) fn hash_if_exists(path: &Path) -> io::Result<Option<ContentHash>> {
    match storage::sha256_file(path) {
        Ok(digest) => Ok(Some(digest)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Makes `dest` a durable copy of `source` through a temp sibling and a rename: a hard link
/// when both are on one file system (no bytes copied), a full copy otherwise.
pub(crate) fn link_or_copy_atomic(source: &Path, dest: &Path) -> io::Result<()> {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".link-tmp");
    let tmp = dest.with_file_name(name);
    storage::remove_file_if_exists(&tmp)?;
    if fs::hard_link(source, &tmp).is_err() {
        fs::copy(source, &tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, dest)?;
    storage::sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// [`hash_if_exists`] on the blocking pool: hashing a collector binary takes long enough to
/// stall other tasks on the runtime thread.
pub(crate) async fn hash_if_exists_async(path: &Path) -> io::Result<Option<ContentHash>> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_if_exists(&owned))
        .await
        .map_err(io::Error::other)?
}

/// Keeps the live executable (if any) at `previous`, then renames `next` over the live path.
pub(crate) fn swap_in(next: &Path, executable: &Path, previous: &Path) -> io::Result<()> {
    if executable.exists() {
        link_or_copy_atomic(executable, previous)?;
    }
    fs::rename(next, executable)?;
    storage::sync_dir(executable.parent().unwrap_or(Path::new(".")))
}

/// Removes temp files an interrupted copy or link may have left beside the live executable.
/// None of them is ever used without being re-created, so removal is always safe.
pub(crate) fn remove_leftovers(executable: &Path) {
    let name = executable
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for leftover in [
        format!(".{name}.next.tmp"),
        format!("{name}.previous.link-tmp"),
        format!("{name}.link-tmp"),
    ] {
        let path = executable.with_file_name(leftover);
        if let Err(err) = storage::remove_file_if_exists(&path) {
            tracing::warn!(error = %ErrorReport(&err), path = %path.display(), "cannot remove leftover temp file");
        }
    }
}
