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

/// Mode of a staged executable: runnable by all, writable by the owner only.
const EXECUTABLE_MODE: u32 = 0o755;

/// What [`place_verified`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// `dest` holds the expected bytes, made executable and durable.
    Verified,
    /// The copied bytes hashed to `actual`; `dest` was removed.
    Mismatch { actual: ContentHash },
}

/// Puts the bytes of `source` at `dest` (the `<exe>.next` beside the live executable) as an
/// executable, durably, and makes sure they hash to `expected`.
///
/// When `source_is_hashed` (the file holds exactly the bytes whose hash was already checked,
/// such as a finished download or a just-extracted file) and both sit on one file system, the
/// file is renamed: no copy, no second hash. Otherwise it is copied, and the copy is hashed as
/// it is written, so what lands at `dest` is checked, not what was read earlier.
pub(crate) fn place_verified(
    source: &Path,
    dest: &Path,
    expected: ContentHash,
    source_is_hashed: bool,
) -> io::Result<Placed> {
    use std::os::unix::fs::PermissionsExt;
    let dest_dir = dest.parent().unwrap_or(Path::new("."));
    if source_is_hashed {
        fs::set_permissions(source, fs::Permissions::from_mode(EXECUTABLE_MODE))?;
        match fs::rename(source, dest) {
            Ok(()) => {
                // The source was fsynced when it was written; the new name needs its directory.
                storage::sync_dir(dest_dir)?;
                return Ok(Placed::Verified);
            }
            Err(err) if err.kind() == io::ErrorKind::CrossesDevices => {}
            Err(err) => return Err(err),
        }
    }
    let copied = storage::copy_atomic(source, dest)?;
    if copied != expected {
        storage::remove_file_if_exists(dest)?;
        return Ok(Placed::Mismatch { actual: copied });
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(EXECUTABLE_MODE))?;
    Ok(Placed::Verified)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn hash(bytes: &[u8]) -> ContentHash {
        use sha2::{Digest, Sha256};
        ContentHash::from_bytes(Sha256::digest(bytes).into())
    }

    #[test]
    fn a_hashed_file_on_the_same_file_system_is_moved_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("pkg.download");
        let dest = dir.path().join("otelcol.next");
        fs::write(&source, b"new collector").unwrap();
        let inode = fs::metadata(&source).unwrap().ino();
        let placed = place_verified(&source, &dest, hash(b"new collector"), true).unwrap();
        assert_eq!(placed, Placed::Verified);
        assert!(!source.exists());
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.ino(), inode, "copied instead of renamed");
        assert_eq!(meta.permissions().mode() & 0o777, EXECUTABLE_MODE);
    }

    #[test]
    fn an_unhashed_file_is_copied_and_its_copy_checked() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("caller-file");
        let dest = dir.path().join("otelcol.next");
        fs::write(&source, b"new collector").unwrap();
        let placed = place_verified(&source, &dest, hash(b"new collector"), false).unwrap();
        assert_eq!(placed, Placed::Verified);
        assert!(source.exists(), "the caller's file was moved");
        assert_eq!(fs::read(&dest).unwrap(), b"new collector");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            EXECUTABLE_MODE
        );

        fs::write(&source, b"changed since").unwrap();
        let placed = place_verified(&source, &dest, hash(b"new collector"), false).unwrap();
        assert_eq!(
            placed,
            Placed::Mismatch {
                actual: hash(b"changed since")
            }
        );
        assert!(!dest.exists(), "a copy with the wrong hash was left");
    }

    #[test]
    fn across_file_systems_a_hashed_file_is_copied_and_checked() {
        // /dev/shm is a tmpfs on Linux; the temp dir is usually on disk. Skip where they share one.
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        if fs::metadata(shm.path()).unwrap().dev() == fs::metadata(dir.path()).unwrap().dev() {
            return;
        }
        let source = shm.path().join("pkg.download");
        let dest = dir.path().join("otelcol.next");
        fs::write(&source, b"new collector").unwrap();
        let placed = place_verified(&source, &dest, hash(b"new collector"), true).unwrap();
        assert_eq!(placed, Placed::Verified);
        assert_eq!(fs::read(&dest).unwrap(), b"new collector");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            EXECUTABLE_MODE
        );
    }
}
