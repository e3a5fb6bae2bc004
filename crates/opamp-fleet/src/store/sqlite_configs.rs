//! The config catalog's rows in [`SqliteStore`](super::SqliteStore): one `configs` row per
//! version and one `config_files` row per file.

use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{millis, timestamp};
use super::sqlite::db;
use super::{ConfigEntry, ConfigFile, StoreError};

/// Adds `entry` in one transaction; identical content again is a no-op, different content
/// for an existing name and version is refused.
pub(super) fn add_config(
    connection: &mut Connection,
    entry: &ConfigEntry,
) -> Result<(), StoreError> {
    if let Some(existing) = config(connection, &entry.name, &entry.version)? {
        return if existing.same_content(entry) {
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
    let tx = connection
        .transaction()
        .map_err(db("starting a transaction"))?;
    tx.execute(
        "INSERT INTO configs (name, version, hash, signature, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            entry.name,
            entry.version,
            entry.hash,
            entry.signature,
            millis(entry.added_at)
        ],
    )
    .map_err(db("adding a config"))?;
    for file in &entry.files {
        tx.execute(
            "INSERT INTO config_files (config_name, config_version, file_name, content_type, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                entry.name,
                entry.version,
                file.name,
                file.content_type,
                file.body
            ],
        )
        .map_err(db("adding a config file"))?;
    }
    tx.commit().map_err(db("committing a config"))
}

/// One version.
pub(super) fn config(
    connection: &Connection,
    name: &str,
    version: &str,
) -> Result<Option<ConfigEntry>, StoreError> {
    Ok(query(
        connection,
        "WHERE name = ?1 AND version = ?2",
        params![name, version],
    )?
    .pop())
}

/// The oldest version whose hash is `hash` (versions differing only in their signature share
/// a hash; any of them offers the same files).
pub(super) fn config_by_hash(
    connection: &Connection,
    hash: &[u8],
) -> Result<Option<ConfigEntry>, StoreError> {
    let key: Option<(String, String)> = connection
        .query_row(
            "SELECT name, version FROM configs WHERE hash = ?1 ORDER BY added_at, name, version LIMIT 1",
            params![hash],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(db("finding a config by hash"))?;
    match key {
        Some((name, version)) => config(connection, &name, &version),
        None => Ok(None),
    }
}

/// Every version, by name then insertion.
pub(super) fn configs(connection: &Connection) -> Result<Vec<ConfigEntry>, StoreError> {
    query(connection, "", params![])
}

fn query(
    connection: &Connection,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ConfigEntry>, StoreError> {
    let sql = format!(
        "SELECT name, version, hash, signature, added_at FROM configs {filter}
         ORDER BY name, added_at, version"
    );
    let mut statement = connection
        .prepare_cached(&sql)
        .map_err(db("reading configs"))?;
    let rows = statement
        .query_map(params, |row| {
            Ok(ConfigEntry {
                name: row.get(0)?,
                version: row.get(1)?,
                hash: row.get(2)?,
                files: Vec::new(),
                signature: row.get(3)?,
                added_at: timestamp(row.get(4)?),
            })
        })
        .map_err(db("reading configs"))?;
    let mut entries: Vec<ConfigEntry> = rows
        .collect::<Result<_, _>>()
        .map_err(db("reading configs"))?;
    let mut files = connection
        .prepare_cached(
            "SELECT file_name, content_type, body FROM config_files
             WHERE config_name = ?1 AND config_version = ?2 ORDER BY file_name",
        )
        .map_err(db("reading config files"))?;
    for entry in &mut entries {
        entry.files = files
            .query_map(params![entry.name, entry.version], |row| {
                Ok(ConfigFile {
                    name: row.get(0)?,
                    content_type: row.get(1)?,
                    body: row.get(2)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(db("reading config files"))?;
    }
    Ok(entries)
}
