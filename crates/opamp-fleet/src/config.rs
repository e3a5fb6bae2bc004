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
//! [agent_identity]
//! mode = "mtls"          # or "enrollment"; "dangerous_open" (default) trusts every peer
//!
//! [store]
//! synchronous = "full"   # or "normal": faster commits, may lose the latest on power loss
//! # postgres_url = "postgres://opamp@db.example/opamp"   # instead of SQLite: see below
//! ```
//!
//! With `[store] postgres_url`, the server keeps its state in that PostgreSQL database instead
//! of `data_dir/fleet.db` (package files stay in `data_dir/packages`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use opamp_verify::PublicKey;

use crate::FleetError;
use crate::limits::FleetLimits;
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
    /// Where package files are kept and served from; default `data_dir/packages`. Server
    /// replicas on one PostgreSQL database share it (a shared file system mounted at the same
    /// path on every replica), since any of them may serve a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages_dir: Option<PathBuf>,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Base URL agents download packages from, for example `https://opamp.example:4320`.
    /// Defaults to `http://<listen>` (or `https://` with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Heartbeat interval offered to agents (humantime text such as `30s`). Agents that
    /// only heartbeat have their LAST SEEN written every second heartbeat (see
    /// [`FleetServerConfig::last_seen_period`]).
    #[serde(default, with = "duration_text::option")]
    pub heartbeat_interval: Option<Duration>,
    /// Largest OpAMP message accepted, in bytes (64 MiB by default).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Most agent connections open at once. The server also keeps it below its open-file
    /// limit (raised to the hard limit at start), leaving room for the admin API, downloads
    /// and the store, and logs the value in force.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// When set, package downloads need `Authorization: Bearer <download_token>`; offers
    /// carry the header so agents send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_token: Option<String>,
    /// The SQLite store's durability.
    #[serde(default)]
    pub store: StoreSettings,
    /// Release public keys (SPKI PEM files, as `opamp package keygen` writes them). When set,
    /// `package add` refuses a package whose signature none of them made; the supervisors'
    /// own trust settings still decide what they install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release_keys: Vec<PathBuf>,
    /// Who may speak for an agent (`[agent_identity]`); see `docs/security.md`.
    #[serde(default)]
    pub agent_identity: AgentIdentitySettings,
    /// Bounds on what agents and admin clients may make the server hold (`[limits]`).
    #[serde(default)]
    pub limits: FleetLimits,
}

/// How the server decides that a connection may speak for the instance uid it claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentIdentitySettings {
    /// The mode (default `dangerous_open`).
    #[serde(default)]
    pub mode: AgentIdentityMode,
}

/// The agent identity modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentIdentityMode {
    /// Any network peer may speak for any agent (labs and demos only): a forged report can
    /// steer rollouts. The server warns at start.
    #[default]
    DangerousOpen,
    /// Mutual TLS where each client certificate names its agent in a SAN URI
    /// `urn:opamp:instance:<uid>`; messages for any other uid are refused. Needs
    /// `[tls] client_ca_file`.
    Mtls,
    /// One-time enrollment tokens exchanged for a per-agent credential (stored hashed) that
    /// the agent presents as `Authorization: Bearer` on every connection.
    Enrollment,
}

impl AgentIdentityMode {
    /// The mode's name in the configuration file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AgentIdentityMode::DangerousOpen => "dangerous_open",
            AgentIdentityMode::Mtls => "mtls",
            AgentIdentityMode::Enrollment => "enrollment",
        }
    }
}

/// Which store the server uses, and the embedded SQLite store's tuning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSettings {
    /// Keep the fleet's state in this PostgreSQL database (`postgres://user:password@host/db`,
    /// or the key/value form) instead of `data_dir/fleet.db`. Absent: SQLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<DatabaseUrl>,
    /// PostgreSQL only: how long the coordinator lease lasts without a renewal (default
    /// `6s`). One replica at a time holds it and runs the server; another takes over at most
    /// this long after the holder dies. Renewed every third of it.
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<Duration>,
    /// PostgreSQL only: this replica's name in the lease and the audit log (default
    /// `<host name>/<process id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_name: Option<String>,
    /// SQLite only. `full` (default): every commit is fsync'd, so a rollout step survives power loss.
    /// `normal`: commits survive a process crash but the latest may be lost on power loss;
    /// several times faster per commit (each rollout step and registry write is one).
    #[serde(default)]
    pub synchronous: Durability,
    /// Start with a new, empty store even though `fleet.db` is missing or empty while
    /// `packages/` holds files. Without it the server refuses to start in that state, since
    /// the catalog, rollouts and audit log would silently vanish from view.
    #[serde(default)]
    pub initialise: bool,
}

/// A database connection string. Its `Debug` form hides the password, so logging a config
/// does not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The connection string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The connection string with any password replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let text = &self.0;
        // URL form: scheme://user:password@host...
        if let Some(scheme_end) = text.find("://") {
            let rest = &text[scheme_end + 3..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@')
                && let Some(colon) = rest[..at].find(':')
            {
                let start = scheme_end + 3 + colon + 1;
                let end = scheme_end + 3 + at;
                return format!("{}***{}", &text[..start], &text[end..]);
            }
            return text.clone();
        }
        // Key/value form: host=... password=secret ...
        text.split_whitespace()
            .map(|pair| {
                if pair.starts_with("password=") {
                    "password=***"
                } else {
                    pair
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
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

/// Default [`StoreSettings::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

impl StoreSettings {
    /// The coordinator lease's length (at least one second).
    #[must_use]
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
            .unwrap_or(DEFAULT_LEASE_TTL)
            .max(Duration::from_secs(1))
    }

    /// This replica's name: the configured one, else `<host name>/<process id>`.
    #[must_use]
    pub fn replica_name(&self) -> String {
        self.replica_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "replica".to_owned());
            format!("{host}/{}", std::process::id())
        })
    }

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
    /// A file holding the token (one trailing newline ignored; other surrounding whitespace
    /// is refused); used when `token` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Named operators, each with a token of their own. The audit log records the name of the
    /// operator whose token authorised each action; `token`/`token_file` above is the operator
    /// named `admin`. Give each person or automation its own entry, so that one can be revoked
    /// (removed) without rotating everyone's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorSettings>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: default_admin_listen(),
            token: None,
            token_file: None,
            operators: Vec::new(),
        }
    }
}

/// One named operator of the admin API (`[[admin.operators]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OperatorSettings {
    /// The name the audit log records: 1 to 64 characters among `A-Z a-z 0-9 . _ @ -`.
    pub name: String,
    /// The operator's bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token; used when `token` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Only reads (agents, packages, rollouts, audit log, metrics): every request that would
    /// change something is refused with 403. For dashboards and Prometheus scrapers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl OperatorSettings {
    /// An operator with an inline token.
    pub fn new(name: impl Into<String>, token: impl Into<String>) -> Self {
        OperatorSettings {
            name: name.into(),
            token: Some(token.into()),
            token_file: None,
            read_only: false,
        }
    }

    /// The same operator, limited to reading.
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}

/// A resolved admin credential: who, and the token that proves it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorToken {
    /// The operator's name, as the audit log records it.
    pub name: String,
    /// The bearer token.
    pub token: String,
    /// Whether the operator may only read.
    pub read_only: bool,
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// The name of the operator whose token is `admin.token` / `admin.token_file`.
pub const DEFAULT_OPERATOR: &str = "admin";

impl AdminSettings {
    /// The admin token, from `token` or `token_file`.
    ///
    /// # Errors
    /// [`FleetError::Config`] when neither is set, the file cannot be read, or the token is
    /// empty.
    pub fn resolve_token(&self) -> Result<String, FleetError> {
        read_token(
            DEFAULT_OPERATOR,
            self.token.as_deref(),
            self.token_file.as_deref(),
        )?
        .ok_or_else(|| FleetError::Config {
            reason: "admin.token or admin.token_file is required".into(),
        })
    }

    /// Every operator allowed to use the admin API: `admin` (from `token`/`token_file`, when
    /// set) and each `[[admin.operators]]` entry.
    ///
    /// ```
    /// use opamp_fleet::config::{AdminSettings, OperatorSettings};
    /// let mut admin = AdminSettings::default();
    /// admin.token = Some("root-secret".into());
    /// admin.operators.push(OperatorSettings::new("alice", "alice-secret"));
    /// let operators = admin.resolve_operators()?;
    /// assert_eq!(operators.len(), 2);
    /// assert_eq!(operators[1].name, "alice");
    /// # Ok::<(), opamp_fleet::FleetError>(())
    /// ```
    ///
    /// # Errors
    /// [`FleetError::Config`] when there is no operator at all, a name is invalid or repeated,
    /// a token is empty or shared by two operators, or an operator has no token; [`FleetError::Io`]
    /// when a token file cannot be read.
    pub fn resolve_operators(&self) -> Result<Vec<OperatorToken>, FleetError> {
        let config = |reason: String| FleetError::Config { reason };
        let mut resolved = Vec::with_capacity(self.operators.len() + 1);
        if let Some(token) = read_token(
            DEFAULT_OPERATOR,
            self.token.as_deref(),
            self.token_file.as_deref(),
        )? {
            resolved.push(OperatorToken {
                name: DEFAULT_OPERATOR.to_owned(),
                token,
                read_only: false,
            });
        }
        for operator in &self.operators {
            check_operator_name(&operator.name)?;
            let token = read_token(
                &operator.name,
                operator.token.as_deref(),
                operator.token_file.as_deref(),
            )?
            .ok_or_else(|| {
                config(format!(
                    "admin operator {:?} needs a token or token_file",
                    operator.name
                ))
            })?;
            if resolved.iter().any(|known| known.name == operator.name) {
                return Err(config(format!(
                    "admin operator {:?} is defined twice",
                    operator.name
                )));
            }
            if resolved.iter().any(|known| known.token == token) {
                return Err(config(format!(
                    "admin operator {:?} has the same token as another operator; the audit log \
                     could not tell them apart",
                    operator.name
                )));
            }
            resolved.push(OperatorToken {
                name: operator.name.clone(),
                token,
                read_only: operator.read_only,
            });
        }
        if resolved.is_empty() {
            return Err(config(
                "admin.token, admin.token_file or an [[admin.operators]] entry is required".into(),
            ));
        }
        Ok(resolved)
    }
}

/// The token from `inline` or `file`, `None` when neither is set. Tokens are compared
/// exactly: a file loses one trailing newline (editors add it) and nothing else, and a
/// token with surrounding whitespace is refused rather than silently trimmed, so the
/// token that works is exactly the one written down.
fn read_token(
    who: &str,
    inline: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, FleetError> {
    let token = match (inline, file) {
        (Some(token), _) => token.to_owned(),
        (None, Some(file)) => {
            let mut text = std::fs::read_to_string(file).map_err(|source| FleetError::Io {
                context: format!(
                    "reading the token file of admin operator {who}: {}",
                    file.display()
                ),
                source,
            })?;
            if text.ends_with('\n') {
                text.pop();
            }
            text
        }
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(FleetError::Config {
            reason: format!("the token of admin operator {who} is empty"),
        });
    }
    if token.trim() != token {
        return Err(FleetError::Config {
            reason: format!(
                "the token of admin operator {who} begins or ends with whitespace; tokens are \
                 compared exactly, so remove it"
            ),
        });
    }
    Ok(Some(token))
}

fn check_operator_name(name: &str) -> Result<(), FleetError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(FleetError::Config {
            reason: format!(
                "invalid admin operator name {name:?}: use 1 to 64 characters among A-Z a-z 0-9 . _ @ -"
            ),
        });
    }
    Ok(())
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
            packages_dir: None,
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
            release_keys: Vec::new(),
            agent_identity: AgentIdentitySettings::default(),
            limits: FleetLimits::default(),
        }
    }

    /// How often a connected agent that only sends heartbeats has its `last_seen` written:
    /// every second heartbeat (`heartbeat_interval`, else the agents' default of 30 s), at
    /// least a second apart. A connected agent is alive by construction (the transport drops
    /// one that stays silent past its idle deadline), so its LAST SEEN lagging by up to two
    /// intervals misleads no one, and an idle fleet writes half the rows it would at every
    /// heartbeat (docs/benchmarks.md). Reports, connects and disconnects are written at once.
    #[must_use]
    pub fn last_seen_period(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or(opamp_session::DEFAULT_HEARTBEAT_INTERVAL)
            .saturating_mul(2)
            .max(Duration::from_secs(1))
    }

    /// Checks settings that only make sense together.
    ///
    /// # Errors
    /// [`FleetError::Config`] when `agent_identity.mode = "mtls"` but the agent listener
    /// does not require client certificates (`[tls] client_ca_file`).
    pub fn validate(&self) -> Result<(), FleetError> {
        let mutual_tls = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some());
        if self.agent_identity.mode == AgentIdentityMode::Mtls && !mutual_tls {
            return Err(FleetError::Config {
                reason: "agent_identity.mode = \"mtls\" needs [tls] client_ca_file".into(),
            });
        }
        Ok(())
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// [`FleetError::Config`] naming what does not parse.
    pub fn from_toml(text: &str) -> Result<Self, FleetError> {
        let config: Self = toml::from_str(text).map_err(|error| FleetError::Config {
            reason: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
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

    /// Reads [`FleetServerConfig::release_keys`].
    ///
    /// # Errors
    /// [`FleetError::Config`] naming the file that cannot be read or is not a public key.
    pub fn load_release_keys(&self) -> Result<Vec<PublicKey>, FleetError> {
        self.release_keys
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| FleetError::Config {
                    reason: format!("release key {}: {e}", path.display()),
                })?;
                PublicKey::from_spki_pem(&text).map_err(|e| FleetError::Config {
                    reason: format!("release key {}: {e}", path.display()),
                })
            })
            .collect()
    }

    /// The SQLite database file.
    #[must_use]
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("fleet.db")
    }

    /// The directory package files are kept in and served from.
    #[must_use]
    pub fn packages_dir(&self) -> PathBuf {
        self.packages_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("packages"))
    }
}

/// Durations as humantime text (`30s`, `10m`, `1h 30m`) in TOML and JSON.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
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
    fn last_seen_is_written_every_second_heartbeat_at_least_a_second_apart() {
        let mut config = FleetServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/f", "t");
        assert_eq!(config.last_seen_period(), Duration::from_secs(60));
        config.heartbeat_interval = Some(Duration::from_secs(10));
        assert_eq!(config.last_seen_period(), Duration::from_secs(20));
        config.heartbeat_interval = Some(Duration::from_millis(300));
        assert_eq!(config.last_seen_period(), Duration::from_secs(1));
    }

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
            token = "secret"
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
        assert_eq!(config.agent_identity.mode, AgentIdentityMode::DangerousOpen);
    }

    #[test]
    fn a_postgres_url_selects_postgres_and_never_prints_its_password() {
        let config = FleetServerConfig::from_toml(
            r#"
            listen = "127.0.0.1:4320"
            data_dir = "/tmp/fleet"
            [admin]
            token = "secret"
            [store]
            postgres_url = "postgres://opamp:hunter2@db.example:5432/fleet"
            "#,
        )
        .unwrap();
        let url = config.store.postgres_url.as_ref().unwrap();
        assert_eq!(
            url.as_str(),
            "postgres://opamp:hunter2@db.example:5432/fleet"
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://opamp:***@db.example:5432/fleet"));
        let key_value = DatabaseUrl("host=db user=opamp password=hunter2 dbname=fleet".into());
        assert_eq!(
            key_value.redacted(),
            "host=db user=opamp password=*** dbname=fleet"
        );
        let no_password = DatabaseUrl("postgres://opamp@db/fleet".into());
        assert_eq!(no_password.redacted(), "postgres://opamp@db/fleet");
    }

    #[test]
    fn agent_identity_modes_parse_and_mtls_needs_a_client_ca() {
        let base = r#"
            listen = "127.0.0.1:4320"
            data_dir = "/tmp/fleet"
            [admin]
            token = "secret"
        "#;
        let with = |extra: &str| FleetServerConfig::from_toml(&format!("{base}{extra}"));
        let enrollment = with("[agent_identity]\nmode = \"enrollment\"\n").unwrap();
        assert_eq!(
            enrollment.agent_identity.mode,
            AgentIdentityMode::Enrollment
        );
        let error = with("[agent_identity]\nmode = \"mtls\"\n").unwrap_err();
        assert!(error.to_string().contains("client_ca_file"), "{error}");
        let mtls = with(
            "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n\
             [agent_identity]\nmode = \"mtls\"\n",
        )
        .unwrap();
        assert_eq!(mtls.agent_identity.mode, AgentIdentityMode::Mtls);
        assert!(with("[agent_identity]\nmode = \"open\"\n").is_err());
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
    #[test]
    fn named_operators_parse_and_bad_ones_are_refused() {
        let config = FleetServerConfig::from_toml(
            r#"
            listen = "127.0.0.1:4320"
            data_dir = "/tmp/fleet"
            [[admin.operators]]
            name = "alice"
            token = "a-secret"
            [[admin.operators]]
            name = "ci.deploy-bot"
            token = "b-secret"
            [[admin.operators]]
            name = "prometheus"
            token = "c-secret"
            read_only = true
            "#,
        )
        .unwrap();
        let operators = config.admin.resolve_operators().unwrap();
        let names: Vec<&str> = operators.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["alice", "ci.deploy-bot", "prometheus"]);
        assert_eq!(operators[1].token, "b-secret");
        let read_only: Vec<bool> = operators.iter().map(|o| o.read_only).collect();
        assert_eq!(read_only, [false, false, true]);
        assert!(!format!("{operators:?}").contains("secret"));
        // No `admin` operator without admin.token: it is optional once others exist.
        assert!(config.admin.resolve_token().is_err());

        let refused = |admin: AdminSettings, needle: &str| match admin.resolve_operators() {
            Err(FleetError::Config { reason }) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
        };
        let with = |operators: Vec<OperatorSettings>| AdminSettings {
            token: Some("root".into()),
            operators,
            ..AdminSettings::default()
        };
        refused(AdminSettings::default(), "required");
        refused(
            with(vec![OperatorSettings::new("admin", "other")]),
            "defined twice",
        );
        refused(
            with(vec![
                OperatorSettings::new("a", "same"),
                OperatorSettings::new("b", "same"),
            ]),
            "same token",
        );
        refused(with(vec![OperatorSettings::new("c", "root")]), "same token");
        refused(with(vec![OperatorSettings::new("d", "")]), "empty");
        refused(
            with(vec![OperatorSettings::new("d", " d-secret ")]),
            "whitespace",
        );
        for bad in ["", "has space", "../x", "ünicode", &"x".repeat(65)] {
            refused(with(vec![OperatorSettings::new(bad, "t")]), "invalid");
        }
        let mut no_token = OperatorSettings::new("e", "t");
        no_token.token = None;
        refused(with(vec![no_token]), "needs a token");
        let dir = tempfile::tempdir().unwrap();
        let from_file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let mut operator = OperatorSettings::new(name, "unused");
            operator.token = None;
            operator.token_file = Some(path);
            operator
        };
        let resolved = with(vec![from_file("g", "g-secret\n")])
            .resolve_operators()
            .unwrap();
        assert_eq!(resolved[1].token, "g-secret");
        refused(with(vec![from_file("h", "h-secret\n\n")]), "whitespace");
        refused(with(vec![from_file("i", " i-secret\n")]), "whitespace");
        let mut missing_file = OperatorSettings::new("f", "t");
        missing_file.token = None;
        missing_file.token_file = Some("/nonexistent/opamp/token".into());
        assert!(matches!(
            with(vec![missing_file]).resolve_operators(),
            Err(FleetError::Io { .. })
        ));
    }
}
