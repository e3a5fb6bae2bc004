//! The fleet server's settings: [`FleetServerConfig`], read from TOML.
//!
//! ```toml
//! listen = "0.0.0.0:4320"
//! data_dir = "/var/lib/opamp"
//! public_url = "https://opamp.example:4320"
//! heartbeat_interval = "30s"
//!
//! [tls]
//! cert_file = "server.pem"
//! key_file = "server.key"
//! client_ca_file = "agents-ca.pem"   # optional: mutual TLS
//!
//! [admin]
//! listen = "127.0.0.1:4321"
//! token_file = "/etc/opamp/admin.token"
//!
//! [store]
//! synchronous = "full"   # or "normal": faster commits, may lose the latest on power loss
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FleetError;
use crate::store::{SqliteOptions, Synchronous};

/// Everything [`crate::server::FleetServer::start`] needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FleetServerConfig {
    /// Address agents connect to (`/v1/opamp`, WebSocket and HTTP) and download packages from
    /// (`/packages/...`).
    pub listen: SocketAddr,
    /// TLS for the agent listener; plain TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Directory holding the SQLite store (`fleet.db`) and package files (`packages/`).
    pub data_dir: PathBuf,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Base URL agents download packages from, for example `https://opamp.example:4320`.
    /// Defaults to `http://<listen>` (or `https://` with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Heartbeat interval offered to agents (humantime text such as `30s`).
    #[serde(default, with = "duration_text::option")]
    pub heartbeat_interval: Option<Duration>,
    /// Largest OpAMP message accepted, in bytes (64 MiB by default).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Most agent connections open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// When set, package downloads need `Authorization: Bearer <download_token>`; offers
    /// carry the header so agents send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_token: Option<String>,
    /// The SQLite store's durability.
    #[serde(default)]
    pub store: StoreSettings,
}

/// Tuning of the embedded SQLite store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSettings {
    /// `full` (default): every commit is fsync'd, so a rollout step survives power loss.
    /// `normal`: commits survive a process crash but the latest may be lost on power loss;
    /// several times faster per commit (each rollout step and registry write is one).
    #[serde(default)]
    pub synchronous: Durability,
}

/// Commit durability (SQLite `synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Durability {
    /// fsync on every commit.
    #[default]
    Full,
    /// fsync at WAL checkpoints.
    Normal,
}

impl StoreSettings {
    /// The store options these settings select.
    #[must_use]
    pub fn options(&self) -> SqliteOptions {
        let synchronous = match self.synchronous {
            Durability::Full => Synchronous::Full,
            Durability::Normal => Synchronous::Normal,
        };
        SqliteOptions::default().synchronous(synchronous)
    }
}

/// Certificate files of the agent listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsSettings {
    /// Server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Server private key, PEM.
    pub key_file: PathBuf,
    /// CA certificates agents' client certificates must chain to (mutual TLS), PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// The admin API listener and its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminSettings {
    /// Address of the admin API (default `127.0.0.1:4321`: loopback only).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// The bearer token every admin request must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored); used when `token` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: default_admin_listen(),
            token: None,
            token_file: None,
        }
    }
}

impl AdminSettings {
    /// The admin token, from `token` or `token_file`.
    ///
    /// # Errors
    /// [`FleetError::Config`] when neither is set, the file cannot be read, or the token is
    /// empty.
    pub fn resolve_token(&self) -> Result<String, FleetError> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| FleetError::Io {
                    context: format!("reading admin token file {}", file.display()),
                    source,
                })?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(FleetError::Config {
                    reason: "admin.token or admin.token_file is required".into(),
                });
            }
        };
        if token.is_empty() {
            return Err(FleetError::Config {
                reason: "the admin token is empty".into(),
            });
        }
        Ok(token)
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4321))
}

fn default_max_message_size() -> usize {
    64 * 1024 * 1024
}

fn default_max_connections() -> usize {
    50_000
}

impl FleetServerConfig {
    /// Settings with defaults: plain TCP on `listen`, admin on `127.0.0.1:4321` with `token`.
    #[must_use]
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>, admin_token: &str) -> Self {
        FleetServerConfig {
            listen,
            tls: None,
            data_dir: data_dir.into(),
            admin: AdminSettings {
                token: Some(admin_token.to_owned()),
                ..AdminSettings::default()
            },
            public_url: None,
            heartbeat_interval: None,
            max_message_size: default_max_message_size(),
            max_connections: default_max_connections(),
            download_token: None,
            store: StoreSettings::default(),
        }
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// [`FleetError::Config`] naming what does not parse.
    pub fn from_toml(text: &str) -> Result<Self, FleetError> {
        toml::from_str(text).map_err(|error| FleetError::Config {
            reason: error.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`FleetError::Io`] or [`FleetError::Config`].
    pub fn from_file(path: &Path) -> Result<Self, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The SQLite database file.
    #[must_use]
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("fleet.db")
    }

    /// The directory package files are kept in and served from.
    #[must_use]
    pub fn packages_dir(&self) -> PathBuf {
        self.data_dir.join("packages")
    }
}

/// Durations as humantime text (`30s`, `10m`, `1h 30m`) in TOML and JSON.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(crate) mod option {
        use super::{Deserialize, Deserializer, Duration, Serializer};

        // serde's `with` hands `&Option<T>` to the serializer.
        #[allow(clippy::ref_option)]
        pub(crate) fn serialize<S: Serializer>(
            value: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(duration) => super::serialize(duration, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            let text = Option::<String>::deserialize(d)?;
            text.map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_with_defaults_filled_in() {
        let config = FleetServerConfig::from_toml(
            r#"
            listen = "127.0.0.1:4320"
            data_dir = "/tmp/fleet"
            heartbeat_interval = "15s"
            [tls]
            cert_file = "c.pem"
            key_file = "k.pem"
            [admin]
            token = " secret "
            [store]
            synchronous = "normal"
            "#,
        )
        .unwrap();
        assert_eq!(config.heartbeat_interval, Some(Duration::from_secs(15)));
        assert_eq!(config.admin.listen, default_admin_listen());
        assert_eq!(config.admin.resolve_token().unwrap(), "secret");
        assert_eq!(config.max_message_size, 64 * 1024 * 1024);
        assert_eq!(config.store.synchronous, Durability::Normal);
        assert!(config.tls.unwrap().client_ca_file.is_none());
    }

    #[test]
    fn unknown_keys_and_missing_tokens_are_refused() {
        assert!(
            FleetServerConfig::from_toml(
                "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\nlisten_typo = 1"
            )
            .is_err()
        );
        let config =
            FleetServerConfig::from_toml("listen = \"127.0.0.1:1\"\ndata_dir = \"d\"").unwrap();
        assert!(matches!(
            config.admin.resolve_token(),
            Err(FleetError::Config { .. })
        ));
    }
}
