//! Config catalog records: named configs with versions, each a set of files.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// One file of a catalog config: an `AgentConfigFile` under `name` in the `AgentConfigMap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigFile {
    /// The config-map key (for example `collector.yaml`).
    pub name: String,
    /// `AgentConfigFile.content_type` (for example `text/yaml`); may be empty.
    pub content_type: String,
    /// The file's bytes.
    pub body: Vec<u8>,
}

impl ConfigFile {
    /// A file.
    #[must_use]
    pub fn new(name: impl Into<String>, content_type: impl Into<String>, body: Vec<u8>) -> Self {
        ConfigFile {
            name: name.into(),
            content_type: content_type.into(),
            body,
        }
    }
}

/// A config version in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigEntry {
    /// Config name (`collector`).
    pub name: String,
    /// Version label (`2`, `2026-12-05`); any text the operator chooses.
    pub version: String,
    /// The config hash the server offers it under (`AgentRemoteConfig.config_hash`): the
    /// digest of the files, the signature left out (docs/operations.md).
    pub hash: Vec<u8>,
    /// The files, sorted by name.
    pub files: Vec<ConfigFile>,
    /// Signature envelope delivered unchanged as the `opamp.signature` entry; empty for none.
    pub signature: Vec<u8>,
    /// When it was added.
    pub added_at: Timestamp,
}

impl ConfigEntry {
    /// An entry; `files` are sorted by name.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        hash: Vec<u8>,
        mut files: Vec<ConfigFile>,
        signature: Vec<u8>,
        added_at: Timestamp,
    ) -> Self {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        ConfigEntry {
            name: name.into(),
            version: version.into(),
            hash,
            files,
            signature,
            added_at,
        }
    }

    /// Whether `other` has the same content (hash, files and signature), whenever it was added.
    #[must_use]
    pub fn same_content(&self, other: &ConfigEntry) -> bool {
        self.hash == other.hash && self.files == other.files && self.signature == other.signature
    }
}
