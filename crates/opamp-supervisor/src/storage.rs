//! Layout of the supervisor's storage directory and the durable-write primitives every other
//! install module builds on.
//!
//! A file counts as written only after its bytes and the directory entry that names it have both
//! reached the disk. [`write_atomic`] gives that for small records (temp file, fsync, rename,
//! fsync of the directory), so a reader sees either the old content or the new, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use opamp_packages::ContentHash;
use sha2::{Digest, Sha256};

/// Paths inside `agent.storage_dir`.
///
/// ```text
/// storage_dir/
///   downloads/<name>.partial   download in progress (resumable)
///   downloads/<name>.meta      validator (ETag, URL) for resuming it
///   staging/<name>/            verified, extracted package waiting to be swapped in
///   install-journal.json       current install step (see crate::journal)
///   installed-state.json       what is installed, anti-rollback floor, failed offers
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLayout {
    root: PathBuf,
}

impl StorageLayout {
    /// Uses `root` as the storage directory and creates the sub-directories that are missing.
    ///
    /// # Errors
    /// [`StorageError`] when a directory cannot be created (read-only or full disk, bad
    /// permissions).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let layout = Self { root: root.into() };
        for dir in [
            layout.root.clone(),
            layout.downloads_dir(),
            layout.staging_root(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StorageError {
                action: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(layout)
    }

    /// The storage directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloads are written while in progress.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Parent of every package's staging directory.
    pub fn staging_root(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Staging directory of one package (the package name is made file-name safe).
    pub fn staging_dir(&self, package_name: &str) -> PathBuf {
        self.staging_root().join(safe_file_stem(package_name))
    }

    /// The install journal (one record, replaced atomically at every step).
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("install-journal.json")
    }

    /// The persistent installed state.
    pub fn installed_state_path(&self) -> PathBuf {
        self.root.join("installed-state.json")
    }
}

/// A storage operation failed; says what was being done to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct StorageError {
    /// What was being done, e.g. "create directory".
    pub action: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Turns a package name (any string from the server) into a single safe path component: ASCII
/// letters, digits, `-`, `_` and `.` are kept, everything else becomes `_`, and names that would
/// be special (`""`, `.`, `..`) get a prefix. Never yields a path separator.
pub fn safe_file_stem(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        format!("pkg_{cleaned}")
    } else {
        cleaned
    }
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or the
/// complete new one: write a temp file in the same directory, fsync it, rename it over `path`,
/// then fsync the directory so the rename itself is durable.
///
/// # Errors
/// The first failing I/O operation; the temp file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Atomically replaces `dest` with a copy of `source` (copy to a temp sibling of `dest`, fsync,
/// rename, fsync the directory) and returns the SHA-256 of the bytes copied, so callers can check
/// that what landed at `dest` is exactly what they meant to put there. Works across file systems,
/// unlike a plain rename. File permissions are copied too.
///
/// # Errors
/// The first failing I/O operation; the temp file is removed on failure.
pub fn copy_atomic(source: &Path, dest: &Path) -> io::Result<ContentHash> {
    let tmp = temp_sibling(dest);
    let result = (|| {
        let mut input = File::open(source)?;
        let permissions = input.metadata()?.permissions();
        let mut output = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let digest = copy_hashing(&mut input, &mut output)?;
        output.set_permissions(permissions)?;
        output.sync_all()?;
        drop(output);
        fs::rename(&tmp, dest)?;
        sync_dir(parent_dir(dest))?;
        Ok(digest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so that entries created, renamed or removed in it survive a crash.
///
/// # Errors
/// Opening or syncing the directory failed.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// SHA-256 of a whole file, read in 64 KiB blocks.
///
/// # Errors
/// Opening or reading the file failed.
pub fn sha256_file(path: &Path) -> io::Result<ContentHash> {
    let mut file = File::open(path)?;
    copy_hashing(&mut file, &mut io::sink())
}

/// Removes a file if it exists; a missing file is not an error.
///
/// # Errors
/// Removal failed for another reason than the file being absent.
pub fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn copy_hashing(input: &mut impl Read, output: &mut impl Write) -> io::Result<ContentHash> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
    }
    Ok(ContentHash::from_bytes(hasher.finalize().into()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `dir/.name.tmp`: same directory (so rename is atomic), hidden, and fixed so a crashed write's
/// leftover is overwritten by the next attempt instead of piling up.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_file_stem_never_yields_separators_or_dot_names() {
        assert_eq!(safe_file_stem("otelcol-contrib"), "otelcol-contrib");
        assert_eq!(safe_file_stem("../etc/passwd"), ".._etc_passwd");
        assert_eq!(safe_file_stem(".."), "pkg_..");
        assert_eq!(safe_file_stem(""), "pkg_");
        assert_eq!(safe_file_stem("a/b\\c"), "a_b_c");
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
    }

    #[test]
    fn copy_atomic_returns_hash_of_copied_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::write(&src, b"hello").unwrap();
        let digest = copy_atomic(&src, &dst).unwrap();
        assert_eq!(digest, sha256_file(&dst).unwrap());
        assert_eq!(
            digest.to_string(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
