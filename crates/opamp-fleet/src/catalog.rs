//! The package catalog: files the server can offer, each with its content hash and the
//! signature made by the release key (the server only relays it; it never holds that key).
//!
//! Files live under `<data_dir>/packages/<name>/<version>/<file name>` and are served by the
//! transport's download route at `<public_url>/packages/<name>/<version>/<file name>`.

mod statement_check;

pub(crate) use statement_check::downgrade_refusal;

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use opamp_packages::PackageName;
use opamp_verify::{HashingWriter, PublicKey};

use crate::FleetError;
use crate::store::{FleetStore, PackageEntry};
use crate::time::Timestamp;

/// A catalog entry (name, version, content hash, size, signature, file).
pub type CatalogEntry = PackageEntry;

/// The store shared by the server's tasks, whichever backend it is (SQLite connections are
/// not `Sync`, hence the mutex). An `Arc<Mutex<SqliteStore>>` converts into it.
pub type SharedStore = Arc<Mutex<dyn FleetStore + Send>>;

/// Largest package file accepted (4 GiB).
pub const MAX_PACKAGE_SIZE: u64 = 4 * 1024 * 1024 * 1024;

/// Locks the shared store, surviving a panic in another holder (the store's own
/// transactions keep the database consistent).
pub(crate) fn lock(store: &SharedStore) -> MutexGuard<'_, dyn FleetStore + Send + 'static> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds, lists and finds package files.
///
/// # Example
/// ```
/// use std::sync::{Arc, Mutex};
/// use opamp_fleet::catalog::Catalog;
/// use opamp_fleet::store::SqliteStore;
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(Mutex::new(SqliteStore::open(dir.path().join("fleet.db"))?));
/// let catalog = Catalog::new(store, dir.path().join("packages"));
/// let file = dir.path().join("otelcol.tar.gz");
/// std::fs::write(&file, b"release archive")?;
/// let entry = catalog.add_file(&file, "otelcol", "0.115.0", b"sig".to_vec())?;
/// assert_eq!(entry.size, 15);
/// assert_eq!(catalog.get("otelcol", "0.115.0")?, Some(entry));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Catalog {
    store: SharedStore,
    root: PathBuf,
    /// Serialises the check-rename-record sequence of [`Catalog::add_file`], so two uploads of
    /// one version can never leave served bytes that differ from the recorded hash.
    adding: Arc<Mutex<()>>,
    /// When not empty, every added package's signature must verify under one of these.
    release_keys: Arc<Vec<PublicKey>>,
}

impl Catalog {
    /// A catalog keeping files under `root` and entries in `store`.
    #[must_use]
    pub fn new(store: SharedStore, root: impl Into<PathBuf>) -> Self {
        Catalog {
            store,
            root: root.into(),
            adding: Arc::new(Mutex::new(())),
            release_keys: Arc::new(Vec::new()),
        }
    }

    /// Requires every package added from now on to be signed by one of `keys` (the release
    /// public keys; the server still never holds a private key). Empty: no such requirement.
    #[must_use]
    pub fn with_release_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.release_keys = Arc::new(keys);
        self
    }

    /// The directory files are kept in.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copies `path` into the catalog as `name` `version`, hashing it on the way (SHA-256),
    /// and records it with `signature`. A signed statement must name this file's content,
    /// `name` and `version`, or the file is refused before it is kept. The copy is written to a temporary file, synced and
    /// renamed, so a crash never leaves a partial file under the served name. Adding the same
    /// bytes again is a no-op; different bytes for an existing version are refused.
    ///
    /// # Errors
    /// [`FleetError::InvalidPackage`] for an unsafe name, an unusable version, an
    /// unreadable or too large file, a signed statement for another file, name or version, or
    /// (with [`Catalog::with_release_keys`]) a signature none of the release keys made; [`FleetError::Io`]; store errors
    /// ([`crate::store::StoreError::AlreadyExists`] for changed bytes).
    pub fn add_file(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        signature: Vec<u8>,
    ) -> Result<CatalogEntry, FleetError> {
        self.copy_in(path, name, version, signature, None)
    }

    fn copy_in(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        signature: Vec<u8>,
        added_by: Option<&str>,
    ) -> Result<CatalogEntry, FleetError> {
        let invalid = invalid_package(name, version);
        let target = self.placement(path, name, version)?;
        let mut source = BufReader::new(File::open(path).map_err(io_error("opening", path))?);
        let temp = tempfile::NamedTempFile::new_in(&target.dir)
            .map_err(io_error("creating a temporary file in", &target.dir))?;
        let mut writer = HashingWriter::new(temp, MAX_PACKAGE_SIZE);
        io::copy(&mut source, &mut writer).map_err(copy_error(&invalid, &target.dir))?;
        let (temp, hashed) = writer
            .finish()
            .map_err(|e| invalid(format!("hashing: {e}")))?;
        self.check_signature_for(name, version, &hashed, &signature)
            .map_err(invalid)?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("syncing", temp.path()))?;
        let placed = |final_path: &Path| {
            temp.persist(final_path)
                .map(drop)
                .map_err(|e| FleetError::Io {
                    context: format!("renaming into {}", final_path.display()),
                    source: e.error,
                })
        };
        self.record(&target, signature, &hashed, added_by, placed)
    }

    /// Like [`Catalog::add_file`] for a file the caller hands over (an upload on the same file
    /// system as the catalog): hashed where it is and renamed into place, so adding it needs
    /// no second copy of its size on disk. On another file system it is copied instead.
    ///
    /// # Errors
    /// As for [`Catalog::add_file`].
    pub fn add_owned_file(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        signature: Vec<u8>,
    ) -> Result<CatalogEntry, FleetError> {
        self.move_in(path, name, version, signature, None)
    }

    /// [`Catalog::add_owned_file`] on behalf of an operator, whose name the entry keeps
    /// ([`PackageEntry::added_by`]).
    ///
    /// # Errors
    /// As for [`Catalog::add_file`].
    pub fn add_owned_file_by(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        signature: Vec<u8>,
        operator: &str,
    ) -> Result<CatalogEntry, FleetError> {
        self.move_in(path, name, version, signature, Some(operator))
    }

    fn move_in(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        signature: Vec<u8>,
        added_by: Option<&str>,
    ) -> Result<CatalogEntry, FleetError> {
        let invalid = invalid_package(name, version);
        let target = self.placement(path, name, version)?;
        let file = File::open(path).map_err(io_error("opening", path))?;
        let device = |meta: std::fs::Metadata| std::os::unix::fs::MetadataExt::dev(&meta);
        let same_device =
            file.metadata().map(device).ok() == std::fs::metadata(&target.dir).map(device).ok();
        if !same_device {
            drop(file);
            return self.copy_in(path, name, version, signature, added_by);
        }
        let mut writer = HashingWriter::new(io::sink(), MAX_PACKAGE_SIZE);
        io::copy(&mut BufReader::new(&file), &mut writer).map_err(copy_error(&invalid, path))?;
        let (_, hashed) = writer
            .finish()
            .map_err(|e| invalid(format!("hashing: {e}")))?;
        self.check_signature_for(name, version, &hashed, &signature)
            .map_err(invalid)?;
        file.sync_all().map_err(io_error("syncing", path))?;
        drop(file);
        let placed = |final_path: &Path| {
            std::fs::rename(path, final_path).map_err(|source| FleetError::Io {
                context: format!("renaming into {}", final_path.display()),
                source,
            })
        };
        self.record(&target, signature, &hashed, added_by, placed)
    }

    /// Checks `name` and `version` against the path rules (both become directory names) and
    /// creates the directory the file of `path` will be placed in.
    fn placement<'a>(
        &self,
        path: &Path,
        name: &'a str,
        version: &'a str,
    ) -> Result<Placement<'a>, FleetError> {
        let invalid = invalid_package(name, version);
        let safe_name = PackageName::new(name).map_err(|e| invalid(e.to_string()))?;
        // The version becomes a directory name too: hold it to the same rules as names.
        PackageName::new(version).map_err(|e| invalid(format!("version: {e}")))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| PackageName::new(n).ok())
            .map_or_else(|| "package".to_owned(), PackageName::into_string);
        let dir = self.root.join(safe_name.as_str()).join(version);
        std::fs::create_dir_all(&dir).map_err(io_error("creating the package directory", &dir))?;
        let final_path = dir.join(file_name);
        Ok(Placement {
            name,
            version,
            dir,
            final_path,
        })
    }

    /// The add-time checks of a signature against the file it comes with (both entries): a
    /// signed statement must describe this file, name and version, and with release keys
    /// configured one of them must have made it.
    fn check_signature_for(
        &self,
        name: &str,
        version: &str,
        hashed: &opamp_verify::HashedContent,
        signature: &[u8],
    ) -> Result<(), String> {
        statement_check::check_statement(name, version, hashed, signature)?;
        statement_check::check_release_key(&self.release_keys, hashed, signature)
    }

    /// Refuses changed bytes for a known version, places the file with `place` and records
    /// it, all under the `adding` lock.
    fn record(
        &self,
        target: &Placement<'_>,
        signature: Vec<u8>,
        hashed: &opamp_verify::HashedContent,
        added_by: Option<&str>,
        place: impl FnOnce(&Path) -> Result<(), FleetError>,
    ) -> Result<CatalogEntry, FleetError> {
        let Placement {
            name,
            version,
            dir,
            final_path,
        } = target;
        let content_hash = hex_bytes(&hashed.hash().to_string());
        let _adding = self
            .adding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = self.get(name, version)? {
            if existing.content_hash == content_hash && existing.signature == signature {
                return Ok(existing);
            }
            return Err(crate::store::StoreError::AlreadyExists {
                what: format!("package {name} {version} with other content"),
            }
            .into());
        }
        place(final_path)?;
        sync_dir(dir);
        let entry = PackageEntry::new(
            *name,
            *version,
            content_hash,
            hashed.len(),
            signature,
            final_path.clone(),
            Timestamp::from_system_time(SystemTime::now()),
        );
        let entry = match added_by {
            Some(operator) => entry.with_added_by(operator),
            None => entry,
        };
        lock(&self.store).add_package(&entry)?;
        tracing::info!(
            package = name,
            version,
            size = entry.size,
            added_by = added_by.unwrap_or("-"),
            "package added to the catalog"
        );
        Ok(entry)
    }

    /// Every entry, by name then insertion.
    ///
    /// # Errors
    /// Store errors.
    pub fn list(&self) -> Result<Vec<CatalogEntry>, FleetError> {
        Ok(lock(&self.store).packages()?)
    }

    /// One entry.
    ///
    /// # Errors
    /// Store errors.
    pub fn get(&self, name: &str, version: &str) -> Result<Option<CatalogEntry>, FleetError> {
        Ok(lock(&self.store).package(name, version)?)
    }

    /// The entry's path relative to the catalog root, with `/` separators (what the download
    /// route serves), or `None` when the file lies outside the root.
    #[must_use]
    pub fn relative_path(&self, entry: &CatalogEntry) -> Option<String> {
        let relative = entry.file_path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<&str>> = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect();
        Some(parts?.join("/"))
    }
}

/// Where an added file goes: its checked name and version, its directory (created) and path.
struct Placement<'a> {
    name: &'a str,
    version: &'a str,
    dir: PathBuf,
    final_path: PathBuf,
}

/// The error for a package refused for `reason`.
fn invalid_package<'a>(name: &'a str, version: &'a str) -> impl Fn(String) -> FleetError + 'a {
    move |reason| FleetError::InvalidPackage {
        name: name.to_owned(),
        version: version.to_owned(),
        reason,
    }
}

fn io_error<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> FleetError + 'a {
    move |source| FleetError::Io {
        context: format!("{what} {}", path.display()),
        source,
    }
}

/// Makes the rename durable; failure only weakens crash safety, so it is logged.
fn sync_dir(dir: &Path) {
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %error, "syncing the package directory failed");
    }
}

/// A failed copy is the package's fault only when it is over the size limit; anything else
/// (a full disk, an I/O error) is the server's.
fn copy_error<'a>(
    invalid: &'a impl Fn(String) -> FleetError,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FleetError + 'a {
    move |err| {
        let over_limit = err
            .get_ref()
            .is_some_and(|inner| inner.is::<opamp_verify::VerifyError>());
        if over_limit {
            invalid(format!("copying: {err}"))
        } else {
            FleetError::Io {
                context: format!("copying the package into {}", path.display()),
                source: err,
            }
        }
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(dir: &Path) -> Catalog {
        let store = Arc::new(Mutex::new(
            crate::store::SqliteStore::open(dir.join("fleet.db")).unwrap(),
        ));
        Catalog::new(store, dir.join("packages"))
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_file_and_the_copy_is_served_from_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(dir.path());
        let file = dir.path().join("build.bin");
        std::fs::write(&file, b"abc").unwrap();
        let entry = catalog
            .add_file(&file, "otelcol", "1.0.0", vec![7])
            .unwrap();
        assert_eq!(
            hex::encode(&entry.content_hash),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(std::fs::read(&entry.file_path).unwrap(), b"abc");
        assert_eq!(
            catalog.relative_path(&entry).unwrap(),
            "otelcol/1.0.0/build.bin"
        );
        // Same bytes again: no-op. Other bytes: refused.
        assert_eq!(
            catalog
                .add_file(&file, "otelcol", "1.0.0", vec![7])
                .unwrap(),
            entry
        );
        std::fs::write(&file, b"abd").unwrap();
        assert!(
            catalog
                .add_file(&file, "otelcol", "1.0.0", vec![7])
                .is_err()
        );
        assert_eq!(catalog.list().unwrap().len(), 1);
    }

    #[test]
    fn unsafe_names_and_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(dir.path());
        let file = dir.path().join("build.bin");
        std::fs::write(&file, b"abc").unwrap();
        for (name, version) in [("../etc", "1"), ("ok", "../1"), ("a/b", "1"), ("ok", "")] {
            assert!(
                matches!(
                    catalog.add_file(&file, name, version, vec![]),
                    Err(FleetError::InvalidPackage { .. })
                ),
                "{name} {version}"
            );
        }
    }
}
