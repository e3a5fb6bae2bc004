//! The config catalog: named collector configs with versions, each a set of files plus an
//! optional signature, offered to agents as `AgentRemoteConfig` by config rollouts.
//!
//! # Config hash
//! A version is offered under its config hash (`AgentRemoteConfig.config_hash`), which is
//! also what agents report back in `RemoteConfigStatus.last_remote_config_hash`: SHA-256 over
//! the domain `opamp-verify/config-digest/v1\0` followed by every file except
//! [`SIGNATURE_ENTRY`], sorted by name (bytewise), each as name, content type and body, every
//! field its length as 8 bytes big-endian and then its bytes. The signature is left out so it
//! can vouch for the hash; it travels unchanged as the [`SIGNATURE_ENTRY`] file.
//!
//! An agent that had no remote config before a rollout is reverted to the empty config map,
//! whose hash is [`empty_config_hash`].

use opamp_proto::v1;

use crate::FleetError;
use crate::catalog::{SharedStore, lock};
use crate::store::{ConfigEntry, ConfigFile};
use crate::time::Timestamp;

/// The config-map entry that carries a version's signature to agents.
pub const SIGNATURE_ENTRY: &str = opamp_verify::CONFIG_SIGNATURE_ENTRY;

/// Largest config version accepted: the sum of its file bodies and signature (4 MiB).
pub const MAX_CONFIG_SIZE: usize = 4 * 1024 * 1024;

/// The config hash of `files` as `(name, content type, body)` (see the [module docs](self)):
/// `opamp_verify`'s config digest, the one supervisors check signatures against.
#[must_use]
pub fn config_hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>) -> Vec<u8> {
    let entries = files
        .into_iter()
        .map(|(name, content_type, body)| opamp_verify::ConfigEntry {
            name,
            content_type,
            body,
        });
    opamp_verify::config_digest(entries).as_bytes().to_vec()
}

/// The hash of the empty config map: what an agent without a remote config is reverted to.
#[must_use]
pub fn empty_config_hash() -> Vec<u8> {
    config_hash([])
}

/// The hash of a catalog entry's files.
fn files_hash(files: &[ConfigFile]) -> Vec<u8> {
    config_hash(
        files
            .iter()
            .map(|f| (f.name.as_str(), f.content_type.as_str(), f.body.as_slice())),
    )
}

/// The `AgentRemoteConfig` offering `entry` (its files, plus its signature as
/// [`SIGNATURE_ENTRY`] when it has one), or the empty config map when `entry` is `None`.
#[must_use]
pub fn remote_config(entry: Option<&ConfigEntry>) -> v1::AgentRemoteConfig {
    let Some(entry) = entry else {
        return v1::AgentRemoteConfig {
            config: Some(v1::AgentConfigMap::default()),
            config_hash: empty_config_hash(),
        };
    };
    let mut map = v1::AgentConfigMap::default();
    for file in &entry.files {
        map.config_map.insert(
            file.name.clone(),
            v1::AgentConfigFile {
                body: file.body.clone(),
                content_type: file.content_type.clone(),
            },
        );
    }
    if !entry.signature.is_empty() {
        map.config_map.insert(
            SIGNATURE_ENTRY.to_owned(),
            v1::AgentConfigFile {
                body: entry.signature.clone(),
                content_type: "application/octet-stream".to_owned(),
            },
        );
    }
    v1::AgentRemoteConfig {
        config: Some(map),
        config_hash: entry.hash.clone(),
    }
}

/// Adds and finds config versions in the store.
#[derive(Debug, Clone)]
pub struct ConfigCatalog {
    store: SharedStore,
}

impl ConfigCatalog {
    /// A catalog over `store`.
    #[must_use]
    pub fn new(store: SharedStore) -> Self {
        ConfigCatalog { store }
    }

    /// Checks and records `name` `version` with `files` and `signature` (empty for none),
    /// computing its hash. Adding identical content again is a no-op.
    ///
    /// # Errors
    /// [`FleetError::InvalidConfig`] for an empty name or version, no files, an empty,
    /// repeated or reserved ([`SIGNATURE_ENTRY`]) file name, or more than
    /// [`MAX_CONFIG_SIZE`] bytes; store errors
    /// ([`crate::store::StoreError::AlreadyExists`] for changed content).
    pub fn add(
        &self,
        name: &str,
        version: &str,
        files: Vec<ConfigFile>,
        signature: Vec<u8>,
        now: Timestamp,
    ) -> Result<ConfigEntry, FleetError> {
        let invalid = |reason: String| FleetError::InvalidConfig {
            name: name.to_owned(),
            version: version.to_owned(),
            reason,
        };
        if name.trim().is_empty() || version.trim().is_empty() {
            return Err(invalid("name and version must not be empty".into()));
        }
        if files.is_empty() {
            return Err(invalid("a config needs at least one file".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for file in &files {
            if file.name.is_empty() {
                return Err(invalid("a file name is empty".into()));
            }
            if file.name == SIGNATURE_ENTRY {
                return Err(invalid(format!(
                    "the file name {SIGNATURE_ENTRY} is reserved for the signature"
                )));
            }
            if !names.insert(file.name.as_str()) {
                return Err(invalid(format!(
                    "the file name {} is given twice",
                    file.name
                )));
            }
        }
        let size = files
            .iter()
            .map(|f| f.body.len())
            .fold(signature.len(), usize::saturating_add);
        if size > MAX_CONFIG_SIZE {
            return Err(invalid(format!(
                "{size} bytes exceed the limit of {MAX_CONFIG_SIZE}"
            )));
        }
        let hash = files_hash(&files);
        let entry = ConfigEntry::new(name, version, hash, files, signature, now);
        let mut store = lock(&self.store);
        store.add_config(&entry)?;
        // An identical earlier add keeps its own time: answer with what is stored.
        Ok(store.config(name, version)?.unwrap_or(entry))
    }

    /// One version.
    ///
    /// # Errors
    /// Store errors.
    pub fn get(&self, name: &str, version: &str) -> Result<Option<ConfigEntry>, FleetError> {
        Ok(lock(&self.store).config(name, version)?)
    }

    /// The version offered under `hash`, if the catalog has one.
    ///
    /// # Errors
    /// Store errors.
    pub fn by_hash(&self, hash: &[u8]) -> Result<Option<ConfigEntry>, FleetError> {
        Ok(lock(&self.store).config_by_hash(hash)?)
    }

    /// Every version.
    ///
    /// # Errors
    /// Store errors.
    pub fn list(&self) -> Result<Vec<ConfigEntry>, FleetError> {
        Ok(lock(&self.store).configs()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_order_and_the_signature_but_not_content() {
        let a = ("a.yaml", "text/yaml", b"x: 1".as_slice());
        let b = ("b.yaml", "text/yaml", b"y: 2".as_slice());
        let signature = (SIGNATURE_ENTRY, "", b"sig".as_slice());
        assert_eq!(config_hash([a, b]), config_hash([b, signature, a]));
        assert_ne!(config_hash([a, b]), config_hash([a]));
        // Length prefixes: moving a byte from one field to the next changes the hash.
        assert_ne!(
            config_hash([("ab", "c", b"".as_slice())]),
            config_hash([("a", "bc", b"".as_slice())])
        );
        assert_eq!(empty_config_hash().len(), 32);
        assert_ne!(empty_config_hash(), config_hash([a]));
    }

    #[test]
    fn the_offer_carries_the_files_the_signature_and_the_hash() {
        let entry = ConfigEntry::new(
            "c",
            "1",
            vec![9; 32],
            vec![ConfigFile::new("c.yaml", "text/yaml", b"k: v".to_vec())],
            b"envelope".to_vec(),
            Timestamp::EPOCH,
        );
        let offer = remote_config(Some(&entry));
        assert_eq!(offer.config_hash, vec![9; 32]);
        let map = offer.config.unwrap().config_map;
        assert_eq!(map["c.yaml"].body, b"k: v");
        assert_eq!(map[SIGNATURE_ENTRY].body, b"envelope");
        let empty = remote_config(None);
        assert!(empty.config.unwrap().config_map.is_empty());
        assert_eq!(empty.config_hash, empty_config_hash());
    }
}
