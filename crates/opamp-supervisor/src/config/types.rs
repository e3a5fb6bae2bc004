//! The typed configuration tree and its cross-field checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

use super::values;

/// The whole `supervisor.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// How to reach the OpAMP server.
    pub server: ServerSettings,
    /// The collector the supervisor runs.
    pub agent: AgentSettings,
    /// Capabilities announced to the server.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// How the collector's health is judged.
    #[serde(default)]
    pub health: HealthConfig,
    /// Time between SIGTERM and SIGKILL when stopping the collector (default 10s).
    #[serde(
        default = "default_stop_timeout",
        deserialize_with = "values::positive_duration"
    )]
    pub stop_timeout: Duration,
    /// Restarts after the collector crashes.
    #[serde(default)]
    pub restart_backoff: RestartBackoff,
    /// Which package signatures are trusted.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Longest time between two messages to the server (default 30s).
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "values::positive_duration"
    )]
    pub heartbeat_interval: Duration,
    /// Loopback address of the supervisor's own metrics endpoint (`GET /metrics`,
    /// OpenMetrics text; see [`crate::metrics`]). Off when absent.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Remote configuration from the server (off by default).
    #[serde(default)]
    pub remote_config: RemoteConfigSettings,
}

/// `remote_config`: whether and how the server may configure the collector, and what the host
/// refuses whatever the server says. See [`crate::remote_config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RemoteConfigSettings {
    /// `off` (default), `remote_on_top` or `remote_only`.
    pub mode: RemoteConfigMode,
    /// Refuse configs without a valid signature by a key in `trust.keys` (default false).
    pub require_signed: bool,
    /// Component types refused in a remote config: `kind/type` (`exporters/file`) or a bare
    /// type (`file`, any kind).
    pub deny_components: Vec<String>,
    /// When not empty, the only component types a remote config may use (same forms).
    pub allow_components: Vec<String>,
    /// When not empty, every `endpoint` under `exporters` must start with one of these.
    pub allowed_endpoints: Vec<String>,
}

/// How a remote config combines with the local `agent.config_files`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteConfigMode {
    /// Remote configs are refused; the collector runs with its own arguments.
    #[default]
    Off,
    /// The local files are the base; the remote config is deep-merged on top of them.
    RemoteOnTop,
    /// The remote config alone (the local files only until the first one arrives).
    RemoteOnly,
}

impl RemoteConfigMode {
    /// Whether remote configs are accepted.
    pub fn is_on(self) -> bool {
        self != RemoteConfigMode::Off
    }
}

/// `server`: the OpAMP server connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerSettings {
    /// `ws://`, `wss://`, `http://` or `https://` URL of the OpAMP endpoint.
    pub endpoint: ServerEndpoint,
    /// TLS files for `wss://` and `https://`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Extra HTTP headers on every request (e.g. `Authorization`).
    #[serde(default, deserialize_with = "values::headers")]
    pub headers: BTreeMap<String, String>,
    /// A one-time enrollment token (`opamp agents enroll-token create`) for a server in
    /// `[agent_identity] mode = "enrollment"`: sent as `Authorization: Bearer` until the
    /// server issues this agent its credential, which is kept in
    /// `<storage_dir>/agent_credential` and used from then on.
    #[serde(default, deserialize_with = "some_path")]
    pub enrollment_token_file: Option<PathBuf>,
}

/// A validated OpAMP server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEndpoint {
    url: String,
    scheme: EndpointScheme,
}

/// Transport and security implied by the endpoint's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointScheme {
    /// `ws://`: WebSocket, plain text.
    Ws,
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `http://`: plain HTTP polling.
    Http,
    /// `https://`: HTTP polling over TLS.
    Https,
}

impl EndpointScheme {
    /// Whether the transport is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, EndpointScheme::Wss | EndpointScheme::Https)
    }

    /// Whether the transport is WebSocket (else HTTP polling).
    pub fn is_websocket(self) -> bool {
        matches!(self, EndpointScheme::Ws | EndpointScheme::Wss)
    }
}

impl ServerEndpoint {
    /// The URL as written.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's scheme.
    pub fn scheme(&self) -> EndpointScheme {
        self.scheme
    }
}

impl<'de> Deserialize<'de> for ServerEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (url, scheme) = values::url(d, &["ws", "wss", "http", "https"])?;
        let scheme = match scheme.as_str() {
            "ws" => EndpointScheme::Ws,
            "wss" => EndpointScheme::Wss,
            "http" => EndpointScheme::Http,
            _ => EndpointScheme::Https,
        };
        Ok(ServerEndpoint { url, scheme })
    }
}

/// `server.tls`: CA to verify the server, and an optional client certificate for mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM CA bundle that signs the server certificate (system roots when absent).
    #[serde(default, deserialize_with = "some_path")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (requires `key_file`).
    #[serde(default, deserialize_with = "some_path")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (requires `cert_file`).
    #[serde(default, deserialize_with = "some_path")]
    pub key_file: Option<PathBuf>,
}

/// `agent`: the collector process and its installation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentSettings {
    /// Path of the collector executable the supervisor runs and replaces on upgrade.
    #[serde(deserialize_with = "values::non_empty_path")]
    pub executable: PathBuf,
    /// Directory the supervisor owns: downloads, staged binaries, journal, lock file.
    #[serde(deserialize_with = "values::non_empty_path")]
    pub storage_dir: PathBuf,
    /// Command-line arguments for the collector.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for the collector.
    #[serde(default, deserialize_with = "values::environment")]
    pub env: BTreeMap<String, String>,
    /// Collector config files, reported to the server as effective config.
    #[serde(default)]
    pub config_files: Vec<PathBuf>,
    /// Name of the top-level package in `PackagesAvailable`; when absent, the one package of
    /// type top-level is used.
    #[serde(default)]
    pub package_name: Option<String>,
    /// Name of the executable inside a `.tar.gz` release (default: file name of `executable`).
    #[serde(default, deserialize_with = "values::optional_file_name")]
    pub archive_executable: Option<String>,
    /// Extra non-identifying attributes of the agent description (`{key: value}`), which the
    /// server's label selectors match against.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl AgentSettings {
    /// The executable's name inside a release archive.
    pub fn archive_executable_name(&self) -> Option<String> {
        self.archive_executable.clone().or_else(|| {
            self.executable
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
    }
}

/// `capabilities`: what the supervisor announces and does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Accept package offers (upgrades and downgrades). Default true.
    pub accepts_packages: bool,
    /// Report `ComponentHealth`. Default true.
    pub reports_health: bool,
    /// Report the collector's config files as effective config. Default true.
    pub reports_effective_config: bool,
    /// Restart the collector when the server sends a restart command. Default true.
    pub accepts_restart_command: bool,
    /// Report the components the collector was built with (`<executable> components`, at
    /// start-up and after each install). Default false.
    pub reports_available_components: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            accepts_packages: true,
            reports_health: true,
            reports_effective_config: true,
            accepts_restart_command: true,
            reports_available_components: false,
        }
    }
}

/// `health`: how a started collector is judged healthy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HealthConfig {
    /// `http://` or `https://` URL of a health endpoint (the collector's `health_check`
    /// extension); a 2xx answer means healthy. Without it only process liveness counts.
    #[serde(deserialize_with = "health_url")]
    pub http_url: Option<String>,
    /// A started collector must stay alive this long before it counts as healthy (default 2s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub liveness_window: Duration,
    /// Longest wait for a started collector to become healthy (default 30s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub start_timeout: Duration,
    /// Timeout of one health request (default 5s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub health_timeout: Duration,
    /// Time between periodic health checks of a running collector (default 10s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub check_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            http_url: None,
            liveness_window: Duration::from_secs(2),
            start_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            check_interval: Duration::from_secs(10),
        }
    }
}

/// `restart_backoff`: exponential back-off between restarts of a crashed collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RestartBackoff {
    /// Delay before the first restart (default 1s); doubles on each further crash.
    #[serde(deserialize_with = "values::positive_duration")]
    pub initial: Duration,
    /// Upper bound of the delay (default 30s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub max: Duration,
    /// Crashes in a row after which the supervisor stops restarting (default 5).
    pub max_restarts: u32,
    /// A collector that ran this long resets the crash count (default 60s).
    #[serde(deserialize_with = "values::positive_duration")]
    pub reset_after: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_restarts: 5,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// `trust`: keys and policy for package signatures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TrustConfig {
    /// Trusted public keys.
    pub keys: Vec<TrustKey>,
    /// Ids of revoked keys.
    pub revoked: Vec<String>,
    /// Refuse packages without a valid signature (default true).
    pub require_signature: bool,
    /// Accept packages in the compatibility mode of opamp-verify (default false).
    pub allow_compatible_mode: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            keys: Vec::new(),
            revoked: Vec::new(),
            require_signature: true,
            allow_compatible_mode: false,
        }
    }
}

impl TrustConfig {
    /// True when signatures are required but no key is configured.
    pub fn refuses_all_packages(&self) -> bool {
        self.require_signature && self.keys.is_empty()
    }
}

/// One trusted public key.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawTrustKey")]
#[non_exhaustive]
pub struct TrustKey {
    /// Where the PEM comes from.
    pub source: KeySource,
    /// Key id used in signatures and revocation (default: derived by opamp-verify).
    pub id: Option<String>,
    /// Signatures by this key are not trusted after this time.
    pub not_after: Option<SystemTime>,
}

/// Where a trusted key's PEM text is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// A PEM file.
    File(PathBuf),
    /// PEM text inline in the config.
    Pem(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustKey {
    #[serde(default, deserialize_with = "some_path")]
    file: Option<PathBuf>,
    #[serde(default)]
    pem: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "values::optional_timestamp")]
    not_after: Option<SystemTime>,
}

impl TryFrom<RawTrustKey> for TrustKey {
    type Error = String;

    fn try_from(raw: RawTrustKey) -> Result<Self, String> {
        let source = match (raw.file, raw.pem) {
            (Some(file), None) => KeySource::File(file),
            (None, Some(pem)) => KeySource::Pem(pem),
            (Some(_), Some(_)) => {
                return Err("a trust key takes either `file` or `pem`, not both".into());
            }
            (None, None) => return Err("a trust key needs `file` or `pem`".into()),
        };
        Ok(TrustKey {
            source,
            id: raw.id,
            not_after: raw.not_after,
        })
    }
}

fn some_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    values::non_empty_path(d).map(Some)
}

fn health_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    values::url(d, &["http", "https"]).map(|(url, _)| Some(url))
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(30)
}

/// A failed cross-field check: the key path to blame and the reason.
pub(super) type Inconsistency = (Vec<&'static str>, String);

impl SupervisorConfig {
    /// Checks that need more than one value.
    pub(super) fn check_consistency(&self) -> Result<(), Inconsistency> {
        if let Some(tls) = &self.server.tls {
            if !self.server.endpoint.scheme().is_tls() {
                return Err((
                    vec!["server", "tls"],
                    format!(
                        "server.tls is set but server.endpoint {} is not wss:// or https://",
                        self.server.endpoint.url()
                    ),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err((
                    vec!["server", "tls"],
                    "server.tls.cert_file and server.tls.key_file must be given together".into(),
                ));
            }
        }
        let h = &self.health;
        if h.liveness_window >= h.start_timeout {
            return Err((
                vec!["health", "liveness_window"],
                format!(
                    "health.liveness_window ({}) must be shorter than health.start_timeout ({}), \
                     or no start could ever pass the health gate",
                    humantime::format_duration(h.liveness_window),
                    humantime::format_duration(h.start_timeout)
                ),
            ));
        }
        let b = &self.restart_backoff;
        if b.initial > b.max {
            return Err((
                vec!["restart_backoff", "initial"],
                format!(
                    "restart_backoff.initial ({}) is longer than restart_backoff.max ({})",
                    humantime::format_duration(b.initial),
                    humantime::format_duration(b.max)
                ),
            ));
        }
        let remote = &self.remote_config;
        if remote.mode.is_on() && self.agent.args.iter().any(|a| a.starts_with("--config")) {
            return Err((
                vec!["agent", "args"],
                "agent.args must not name a --config when remote_config.mode is on: the \
                 supervisor passes --config <storage_dir>/collector-config.yaml itself"
                    .into(),
            ));
        }
        if remote.mode.is_on() && remote.require_signed && self.trust.keys.is_empty() {
            return Err((
                vec!["remote_config", "require_signed"],
                "remote_config.require_signed needs at least one key in trust.keys".into(),
            ));
        }
        if self
            .agent
            .package_name
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err((
                vec!["agent", "package_name"],
                "agent.package_name must not be empty (omit it to use the top-level package)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Makes relative paths relative to the config file's directory.
    pub(super) fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.agent.executable);
        fix(&mut self.agent.storage_dir);
        self.agent.config_files.iter_mut().for_each(fix);
        if let Some(file) = &mut self.server.enrollment_token_file {
            fix(file);
        }
        if let Some(tls) = &mut self.server.tls {
            for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
        for key in &mut self.trust.keys {
            if let KeySource::File(p) = &mut key.source {
                fix(p);
            }
        }
    }
}
