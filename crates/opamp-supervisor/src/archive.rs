//! Turns a downloaded package file into a staged executable.
//!
//! A package is either the raw executable or a `.tar.gz` release archive like the collector's
//! own releases; the format is detected from the gzip magic bytes, never from a file name.
//! Extraction treats the archive as hostile and refuses, instead of "fixing":
//! - absolute paths and any `..` component,
//! - symbolic links whose target is absolute or contains `..` (a link can then only point below
//!   its own directory, so neither it nor a chain of such links can leave the staging directory),
//! - hard links whose target is outside the archive's already-extracted regular files,
//! - device files, FIFOs and other special entries,
//! - more uncompressed bytes than [`ArchiveLimits::max_unpacked_bytes`] (counted while
//!   decompressing, so a gzip bomb stops at the limit) or more entries than allowed.
//!
//! Permissions keep only the `rwxr-xr-x` bits: never setuid, setgid, sticky or world-writable.
//!
//! ```no_run
//! # fn demo() -> Result<(), opamp_supervisor::archive::ArchiveError> {
//! use opamp_supervisor::archive::{stage_package, ArchiveLimits};
//! let staged = stage_package(
//!     "/var/lib/opamp/downloads/otelcol.download".as_ref(),
//!     "/var/lib/opamp/staging/otelcol".as_ref(),
//!     "otelcol-contrib",
//!     &ArchiveLimits::default(),
//! )?;
//! println!("staged {} ({})", staged.path.display(), staged.sha256);
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::report::ErrorReport;
use crate::storage;
use opamp_packages::ContentHash;

/// Mode bits an extracted file may keep.
const ALLOWED_MODE: u32 = 0o755;

/// Limits on what an archive may expand to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveLimits {
    /// Most bytes the decompressed tar stream may have (headers included). Default 2 GiB.
    pub max_unpacked_bytes: u64,
    /// Most entries the archive may have. Default 10 000.
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 2 << 30,
            max_entries: 10_000,
        }
    }
}

impl ArchiveLimits {
    /// Default limits with another unpacked-size limit.
    pub fn with_max_unpacked_bytes(max_unpacked_bytes: u64) -> Self {
        Self {
            max_unpacked_bytes,
            ..Self::default()
        }
    }
}

/// How a package file is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackageFormat {
    /// The file is the executable itself.
    RawExecutable,
    /// A gzip-compressed tar archive containing the executable.
    TarGz,
}

/// The executable ready to be swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedExecutable {
    /// Its path inside the staging directory (mode 0755, fsynced).
    pub path: PathBuf,
    /// SHA-256 of the executable (for a raw package, equal to the package's content hash).
    pub sha256: ContentHash,
    /// Size in bytes.
    pub size: u64,
    /// What the package file was.
    pub format: PackageFormat,
}

/// Why a package could not be staged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An entry's path is absolute or contains `..`.
    #[error("archive entry {path:?} has an unsafe path (absolute or containing \"..\")")]
    UnsafePath {
        /// The path as written in the archive.
        path: String,
    },
    /// A link entry points outside the staging directory (or could).
    #[error("archive link {path:?} -> {target:?} would leave the staging directory")]
    UnsafeLink {
        /// The link's path.
        path: String,
        /// Its target.
        target: String,
    },
    /// Device files, FIFOs and other special entries are never extracted.
    #[error("archive entry {path:?} is a {kind} and is not allowed")]
    ForbiddenEntry {
        /// The entry's path.
        path: String,
        /// What kind of entry it is.
        kind: &'static str,
    },
    /// The archive expands beyond the limit (gzip bomb or wrong file).
    #[error("archive expands beyond the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive has more entries than allowed.
    #[error("archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The configured executable is not in the archive (or is not a regular file).
    #[error("executable {name:?} not found as a regular file in the archive")]
    ExecutableNotFound {
        /// The configured name.
        name: String,
    },
    /// The configured executable name is itself unsafe.
    #[error("configured executable name {name:?} is not a relative path inside the archive")]
    BadExecutableName {
        /// The configured name.
        name: String,
    },
    /// The gzip or tar data is malformed.
    #[error("malformed archive")]
    Malformed {
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// A local file operation failed.
    #[error("cannot {action} {}", path.display())]
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

/// Detects the format from the first bytes (`1f 8b` = gzip).
///
/// # Errors
/// The file cannot be read.
pub fn detect_format(package: &Path) -> Result<PackageFormat, ArchiveError> {
    let mut magic = [0u8; 2];
    let mut file = File::open(package).map_err(io_error("open package", package))?;
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io_error("read package", package)(err)),
        }
    }
    Ok(if filled == 2 && magic == [0x1f, 0x8b] {
        PackageFormat::TarGz
    } else {
        PackageFormat::RawExecutable
    })
}

/// Stages `package` into `staging_dir` (emptied first) and returns the executable.
///
/// `executable` names the executable: for a raw package, the file name it gets in the staging
/// directory; for an archive, its relative path inside the archive (e.g. `otelcol-contrib`).
///
/// # Errors
/// See [`ArchiveError`]. A failed call removes the staging directory, so a refused archive (a
/// decompression bomb stopped at the limit) leaves nothing on disk.
pub fn stage_package(
    package: &Path,
    staging_dir: &Path,
    executable: &str,
    limits: &ArchiveLimits,
) -> Result<StagedExecutable, ArchiveError> {
    let staged = stage_into(package, staging_dir, executable, limits);
    if staged.is_err() {
        match fs::remove_dir_all(staging_dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(error = %ErrorReport(&err), dir = %staging_dir.display(), "cannot remove failed staging");
            }
            _ => {}
        }
    }
    staged
}

fn stage_into(
    package: &Path,
    staging_dir: &Path,
    executable: &str,
    limits: &ArchiveLimits,
) -> Result<StagedExecutable, ArchiveError> {
    let executable_rel =
        safe_relative_path(executable).ok_or_else(|| ArchiveError::BadExecutableName {
            name: executable.to_owned(),
        })?;
    let format = detect_format(package)?;
    reset_dir(staging_dir)?;
    let (path, copied_sha256) = match format {
        PackageFormat::RawExecutable => {
            let file_name = executable_rel
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| ArchiveError::BadExecutableName {
                    name: executable.to_owned(),
                })?;
            let dest = staging_dir.join(file_name);
            let digest =
                storage::copy_atomic(package, &dest).map_err(io_error("copy package", &dest))?;
            (dest, Some(digest))
        }
        PackageFormat::TarGz => {
            extract_tar_gz(package, staging_dir, limits)?;
            let dest = staging_dir.join(&executable_rel);
            let is_file = fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_file());
            if !is_file {
                return Err(ArchiveError::ExecutableNotFound {
                    name: executable.to_owned(),
                });
            }
            (dest, None)
        }
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(ALLOWED_MODE))
        .map_err(io_error("make executable", &path))?;
    File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(io_error("sync", &path))?;
    storage::sync_dir(path.parent().unwrap_or(staging_dir)).map_err(io_error("sync", &path))?;
    let sha256 = match copied_sha256 {
        Some(digest) => digest,
        None => storage::sha256_file(&path).map_err(io_error("hash", &path))?,
    };
    let size = fs::metadata(&path).map_err(io_error("stat", &path))?.len();
    Ok(StagedExecutable {
        path,
        sha256,
        size,
        format,
    })
}

/// Extracts every entry of a `.tar.gz` into `dest` (which must exist), enforcing the rules in the
/// module documentation.
///
/// # Errors
/// See [`ArchiveError`].
pub fn extract_tar_gz(
    package: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<(), ArchiveError> {
    let file = File::open(package).map_err(io_error("open package", package))?;
    let exceeded = Rc::new(Cell::new(false));
    let reader = LimitedReader {
        inner: GzDecoder::new(BufReader::new(file)),
        remaining: limits.max_unpacked_bytes,
        exceeded: Rc::clone(&exceeded),
    };
    let mut archive = tar::Archive::new(reader);
    let malformed = |source: io::Error| {
        if exceeded.get() {
            ArchiveError::TooLarge {
                limit: limits.max_unpacked_bytes,
            }
        } else {
            ArchiveError::Malformed { source }
        }
    };
    let mut count = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_relative_path(&raw_path).ok_or_else(|| ArchiveError::UnsafePath {
            path: raw_path.clone(),
        })?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let target = dest.join(&rel);
        let entry_type = entry.header().entry_type();
        match entry_type {
            EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_error("create directory", &target))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644) & ALLOWED_MODE;
                let mut out = create_fresh_file(&target, mode)?;
                io::copy(&mut entry, &mut out).map_err(|err| {
                    if exceeded.get() {
                        ArchiveError::TooLarge {
                            limit: limits.max_unpacked_bytes,
                        }
                    } else {
                        ArchiveError::Io {
                            action: "extract",
                            path: target.clone(),
                            source: err,
                        }
                    }
                })?;
                out.sync_all().map_err(io_error("sync", &target))?;
            }
            EntryType::Symlink => {
                let link = link_target(&entry, &raw_path)?;
                let safe = !link.as_os_str().is_empty()
                    && link.components().all(|c| matches!(c, Component::Normal(_)));
                if !safe {
                    return Err(ArchiveError::UnsafeLink {
                        path: raw_path,
                        target: link.display().to_string(),
                    });
                }
                ensure_parent(&target)?;
                storage::remove_file_if_exists(&target).map_err(io_error("replace", &target))?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_error("create symlink", &target))?;
            }
            EntryType::Link => {
                let link = link_target(&entry, &raw_path)?;
                let unsafe_link = || ArchiveError::UnsafeLink {
                    path: raw_path.clone(),
                    target: link.display().to_string(),
                };
                let link_rel = safe_relative_path(&link.to_string_lossy())
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(unsafe_link)?;
                let source = dest.join(link_rel);
                // Only an already-extracted regular file may be linked; never through a symlink.
                let is_regular =
                    fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_file());
                if !is_regular || has_symlink_ancestor(dest, &source) {
                    return Err(unsafe_link());
                }
                ensure_parent(&target)?;
                storage::remove_file_if_exists(&target).map_err(io_error("replace", &target))?;
                fs::copy(&source, &target).map_err(io_error("copy hard link", &target))?;
            }
            EntryType::Char => return forbidden(raw_path, "character device"),
            EntryType::Block => return forbidden(raw_path, "block device"),
            EntryType::Fifo => return forbidden(raw_path, "FIFO"),
            _ => return forbidden(raw_path, "special entry"),
        }
    }
    Ok(())
}

fn forbidden(path: String, kind: &'static str) -> Result<(), ArchiveError> {
    Err(ArchiveError::ForbiddenEntry { path, kind })
}

fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    raw_path: &str,
) -> Result<PathBuf, ArchiveError> {
    entry
        .link_name()
        .map_err(|source| ArchiveError::Malformed { source })?
        .map(|name| name.into_owned())
        .ok_or_else(|| ArchiveError::UnsafeLink {
            path: raw_path.to_owned(),
            target: String::new(),
        })
}

/// Whether any directory between `root` (exclusive) and `path` is a symlink.
fn has_symlink_ancestor(root: &Path, path: &Path) -> bool {
    let mut current = path.parent();
    while let Some(dir) = current {
        if dir == root || !dir.starts_with(root) {
            return false;
        }
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
        current = dir.parent();
    }
    false
}

/// `a/./b` -> `a/b`; `None` for absolute paths or any `..`. `""` and `.` give an empty path.
fn safe_relative_path(raw: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn ensure_parent(path: &Path) -> Result<(), ArchiveError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io_error("create directory", parent)),
        None => Ok(()),
    }
}

/// Creates `path` anew: whatever was there (e.g. a symlink from an earlier entry) is removed, and
/// `create_new` (O_EXCL) refuses to follow a symlink raced into its place.
fn create_fresh_file(path: &Path, mode: u32) -> Result<File, ArchiveError> {
    ensure_parent(path)?;
    storage::remove_file_if_exists(path).map_err(io_error("replace", path))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("create", path))
}

fn reset_dir(dir: &Path) -> Result<(), ArchiveError> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("clear staging directory", dir)(err));
        }
        _ => {}
    }
    fs::create_dir_all(dir).map_err(io_error("create staging directory", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

/// Reads at most `remaining` bytes and then fails, flagging `exceeded` so the caller can tell a
/// size-limit stop from corrupt data after the tar reader has wrapped the error.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there is more data: probe one byte.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("archive exceeds the unpacked size limit"))
                }
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_escapes_refused() {
        assert_eq!(safe_relative_path("./a/./b"), Some(PathBuf::from("a/b")));
        assert_eq!(safe_relative_path("."), Some(PathBuf::new()));
        assert_eq!(safe_relative_path("/etc/passwd"), None);
        assert_eq!(safe_relative_path("a/../../b"), None);
        assert_eq!(safe_relative_path("a/.."), None);
    }

    #[test]
    fn limited_reader_allows_exact_size_and_flags_more() {
        let exceeded = Rc::new(Cell::new(false));
        let mut exact = LimitedReader {
            inner: &b"abcd"[..],
            remaining: 4,
            exceeded: Rc::clone(&exceeded),
        };
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        assert!(!exceeded.get());

        let mut over = LimitedReader {
            inner: &b"abcde"[..],
            remaining: 4,
            exceeded: Rc::clone(&exceeded),
        };
        assert!(over.read_to_end(&mut Vec::new()).is_err());
        assert!(exceeded.get());
    }
}
