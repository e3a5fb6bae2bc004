//! The package and config catalogs: `packages`, and `configs` with their `config_files`.
//!
//! A version is added with `INSERT ... ON CONFLICT DO NOTHING`; when it existed, the stored
//! content is compared: identical is a no-op, different is [`StoreError::AlreadyExists`], the
//! rules SQLite applies. Two replicas adding the same version at once therefore end the same
//! way as one after the other (the second waits for the first's commit, then compares).

use std::path::PathBuf;

use ::postgres::GenericClient;

use super::PostgresStore;
use super::codec::{column, from_sql_u64, millis, pg, sql_u64, timestamp};
use super::lease::begin_write;
use crate::store::{ConfigEntry, ConfigFile, PackageEntry, StoreError};

impl PostgresStore {
    /// [`FleetStore::add_package`](crate::store::FleetStore::add_package).
    pub(super) fn insert_package(&self, entry: &PackageEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            let inserted = tx
                .execute(
                    "INSERT INTO packages (name, version, content_hash, size, signature,
                        file_path, added_at, added_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (name, version) DO NOTHING",
                    &[
                        &entry.name,
                        &entry.version,
                        &entry.content_hash,
                        &sql_u64(entry.size),
                        &entry.signature,
                        &entry.file_path.to_string_lossy(),
                        &millis(entry.added_at),
                        &entry.added_by,
                    ],
                )
                .map_err(pg("adding a package"))?;
            if inserted == 1 {
                return tx.commit().map_err(pg("committing a package"));
            }
            let existing = query_packages(&mut tx, Some((&entry.name, &entry.version)))?.pop();
            let same = existing.is_some_and(|existing| {
                existing.content_hash == entry.content_hash
                    && existing.size == entry.size
                    && existing.signature == entry.signature
            });
            if same {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists {
                    what: format!(
                        "package {} {} with different content",
                        entry.name, entry.version
                    ),
                })
            }
        })
    }

    /// Catalog entries: one version's, or all of them by name then insertion.
    pub(super) fn read_packages(
        &self,
        key: Option<(&str, &str)>,
    ) -> Result<Vec<PackageEntry>, StoreError> {
        let key = key.map(|(name, version)| (name.to_owned(), version.to_owned()));
        self.worker.call(move |client| {
            query_packages(
                client,
                key.as_ref()
                    .map(|(name, version)| (name.as_str(), version.as_str())),
            )
        })
    }

    /// [`FleetStore::add_config`](crate::store::FleetStore::add_config): the version and its
    /// files in one transaction.
    pub(super) fn insert_config(&self, entry: &ConfigEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        let fence = self.fence;
        self.worker.call(move |client| {
            let mut tx = begin_write(client, fence)?;
            let inserted = tx
                .execute(
                    "INSERT INTO configs (name, version, hash, signature, added_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name, version) DO NOTHING",
                    &[
                        &entry.name,
                        &entry.version,
                        &entry.hash,
                        &entry.signature,
                        &millis(entry.added_at),
                    ],
                )
                .map_err(pg("adding a config"))?;
            if inserted == 0 {
                let existing =
                    query_configs(&mut tx, ConfigKey::Version(&entry.name, &entry.version))?.pop();
                return if existing.is_some_and(|existing| existing.same_content(&entry)) {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyExists {
                        what: format!(
                            "config {} {} with different content",
                            entry.name, entry.version
                        ),
                    })
                };
            }
            let statement = tx
                .prepare(
                    "INSERT INTO config_files (config_name, config_version, file_name,
                        content_type, body)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .map_err(pg("adding a config file"))?;
            for file in &entry.files {
                tx.execute(
                    &statement,
                    &[
                        &entry.name,
                        &entry.version,
                        &file.name,
                        &file.content_type,
                        &file.body,
                    ],
                )
                .map_err(pg("adding a config file"))?;
            }
            tx.commit().map_err(pg("committing a config"))
        })
    }

    /// Config versions: one, the oldest with a hash, or all of them by name then insertion.
    pub(super) fn read_configs(&self, key: OwnedConfigKey) -> Result<Vec<ConfigEntry>, StoreError> {
        self.worker.call(move |client| {
            let key = match &key {
                OwnedConfigKey::All => ConfigKey::All,
                OwnedConfigKey::Version(name, version) => ConfigKey::Version(name, version),
                OwnedConfigKey::Hash(hash) => ConfigKey::Hash(hash),
            };
            query_configs(client, key)
        })
    }
}

/// Which config versions to read (owned, to travel to the worker).
#[derive(Debug)]
pub(super) enum OwnedConfigKey {
    /// Every version.
    All,
    /// One name and version.
    Version(String, String),
    /// The oldest version with this hash.
    Hash(Vec<u8>),
}

/// [`OwnedConfigKey`], borrowed.
#[derive(Debug, Clone, Copy)]
enum ConfigKey<'a> {
    All,
    Version(&'a str, &'a str),
    Hash(&'a [u8]),
}

fn query_packages(
    client: &mut impl GenericClient,
    key: Option<(&str, &str)>,
) -> Result<Vec<PackageEntry>, StoreError> {
    const CONTEXT: &str = "reading packages";
    let (name, version) = key.unzip();
    let rows = client
        .query(
            "SELECT name, version, content_hash, size, signature, file_path, added_at, added_by
             FROM packages WHERE $1::TEXT IS NULL OR (name = $1 AND version = $2)
             ORDER BY name, added_at, version",
            &[&name, &version],
        )
        .map_err(pg(CONTEXT))?;
    rows.iter()
        .map(|row| {
            Ok(PackageEntry {
                name: column(row, 0, CONTEXT)?,
                version: column(row, 1, CONTEXT)?,
                content_hash: column(row, 2, CONTEXT)?,
                size: from_sql_u64(column(row, 3, CONTEXT)?),
                signature: column(row, 4, CONTEXT)?,
                file_path: PathBuf::from(column::<String>(row, 5, CONTEXT)?),
                added_at: timestamp(column(row, 6, CONTEXT)?),
                added_by: column(row, 7, CONTEXT)?,
            })
        })
        .collect()
}

/// The selected versions with their files (sorted by name, bytewise).
fn query_configs(
    client: &mut impl GenericClient,
    key: ConfigKey<'_>,
) -> Result<Vec<ConfigEntry>, StoreError> {
    const CONTEXT: &str = "reading configs";
    const COLUMNS: &str = "SELECT name, version, hash, signature, added_at FROM configs";
    let rows = match key {
        ConfigKey::All => client.query(&format!("{COLUMNS} ORDER BY name, added_at, version"), &[]),
        ConfigKey::Version(name, version) => client.query(
            &format!("{COLUMNS} WHERE name = $1 AND version = $2"),
            &[&name, &version],
        ),
        // Versions differing only in their signature share a hash; any of them offers the
        // same files.
        ConfigKey::Hash(hash) => client.query(
            &format!("{COLUMNS} WHERE hash = $1 ORDER BY added_at, name, version LIMIT 1"),
            &[&hash],
        ),
    }
    .map_err(pg(CONTEXT))?;
    let mut entries = rows
        .iter()
        .map(|row| {
            Ok(ConfigEntry {
                name: column(row, 0, CONTEXT)?,
                version: column(row, 1, CONTEXT)?,
                hash: column(row, 2, CONTEXT)?,
                files: Vec::new(),
                signature: column(row, 3, CONTEXT)?,
                added_at: timestamp(column(row, 4, CONTEXT)?),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if entries.is_empty() {
        return Ok(entries);
    }
    // The files of every selected version in one query. Versions are never removed and a
    // version's files are committed with it, so every file read belongs to a version read.
    let (names, versions): (Vec<&str>, Vec<&str>) = entries
        .iter()
        .map(|entry| (entry.name.as_str(), entry.version.as_str()))
        .unzip();
    const FILES: &str = "reading config files";
    let rows = client
        .query(
            "SELECT f.config_name, f.config_version, f.file_name, f.content_type, f.body
             FROM config_files f
             JOIN UNNEST($1::TEXT[], $2::TEXT[]) AS k (name, version)
                 ON f.config_name = k.name AND f.config_version = k.version
             ORDER BY f.config_name, f.config_version, f.file_name",
            &[&names, &versions],
        )
        .map_err(pg(FILES))?;
    let mut files: std::collections::HashMap<(String, String), Vec<ConfigFile>> =
        std::collections::HashMap::new();
    for row in &rows {
        let key = (column(row, 0, FILES)?, column(row, 1, FILES)?);
        files.entry(key).or_default().push(ConfigFile {
            name: column(row, 2, FILES)?,
            content_type: column(row, 3, FILES)?,
            body: column(row, 4, FILES)?,
        });
    }
    for entry in &mut entries {
        entry.files = files
            .remove(&(entry.name.clone(), entry.version.clone()))
            .unwrap_or_default();
    }
    Ok(entries)
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::store::FleetStore;
    use crate::time::Timestamp;

    /// Names sort bytewise and then by insertion, as in SQLite, whatever the database's
    /// collation.
    #[test]
    fn catalogs_list_by_name_bytewise_then_insertion() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        for (name, version, at) in [("b", "1", 1), ("B", "2", 2), ("B", "1", 3), ("_", "1", 0)] {
            let at = Timestamp::from_millis(at);
            store
                .add_package(&PackageEntry::new(
                    name,
                    version,
                    vec![1],
                    1,
                    vec![],
                    "/p".into(),
                    at,
                ))
                .unwrap();
            let files = vec![
                ConfigFile::new("b.yaml", "", b"b".to_vec()),
                ConfigFile::new("B.yaml", "", b"B".to_vec()),
                ConfigFile::new("_.yaml", "", Vec::new()),
            ];
            store
                .add_config(&ConfigEntry::new(name, version, vec![7], files, vec![], at))
                .unwrap();
        }
        let packages: Vec<(String, String)> = store
            .packages()
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        let expected = [("B", "2"), ("B", "1"), ("_", "1"), ("b", "1")]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .to_vec();
        assert_eq!(packages, expected);
        let configs = store.configs().unwrap();
        let listed: Vec<(String, String)> = configs
            .iter()
            .map(|c| (c.name.clone(), c.version.clone()))
            .collect();
        assert_eq!(listed, expected);
        let names: Vec<&str> = configs[0].files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["B.yaml", "_.yaml", "b.yaml"]);
        // The oldest with the hash.
        let oldest = store.config_by_hash(&[7]).unwrap().unwrap();
        assert_eq!((oldest.name.as_str(), oldest.version.as_str()), ("_", "1"));
        assert_eq!(store.config("B", "1").unwrap().unwrap().files.len(), 3);
        assert_eq!(store.config("B", "9").unwrap(), None);
        assert_eq!(store.package("B", "9").unwrap(), None);
    }

    #[test]
    fn an_unchanged_package_with_another_path_is_a_no_op() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let at = Timestamp::from_millis(1);
        let entry = PackageEntry::new("p", "1", vec![1], u64::MAX, vec![2], "/a".into(), at)
            .with_added_by("alice");
        store.add_package(&entry).unwrap();
        let mut moved = entry.clone();
        moved.file_path = "/b".into();
        moved.added_by = None;
        store.add_package(&moved).unwrap();
        assert_eq!(store.package("p", "1").unwrap(), Some(entry.clone()));
        let mut resigned = entry;
        resigned.signature = vec![3];
        assert!(matches!(
            store.add_package(&resigned),
            Err(StoreError::AlreadyExists { .. })
        ));
    }
}
