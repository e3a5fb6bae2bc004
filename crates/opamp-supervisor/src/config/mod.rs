//! The supervisor configuration file (`opamp supervisor --config supervisor.yaml`).
//!
//! The YAML accepts the shape of the upstream supervisor's example (`server.endpoint`,
//! `server.tls`, `agent.executable`, `agent.storage_dir`, `capabilities`) and extends it with
//! agent arguments, environment and config files, health checking, stop and restart timing,
//! the package trust policy, and the heartbeat interval. Unknown keys and invalid values are
//! rejected with the file, line and reason. Durations are humantime strings (`"250ms"`, `"5s"`).
//! Relative paths are resolved against the directory of the config file.
//!
//! ```
//! use opamp_supervisor::config::SupervisorConfig;
//! let yaml = "
//! server:
//!   endpoint: wss://opamp.example.invalid/v1/opamp
//! agent:
//!   executable: /usr/local/bin/otelcol
//!   storage_dir: /var/lib/opamp-supervisor
//! capabilities:
//!   accepts_packages: true
//!   reports_health: true
//!   reports_effective_config: true
//! ";
//! let config = SupervisorConfig::from_yaml_str(yaml, "supervisor.yaml".as_ref())?;
//! assert!(config.capabilities.accepts_packages);
//! assert_eq!(config.stop_timeout, std::time::Duration::from_secs(10));
//! # Ok::<(), opamp_supervisor::config::ConfigError>(())
//! ```

mod effective;
mod locate;
mod types;
pub mod upstream;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use types::{
    AgentSettings, Capabilities, EndpointScheme, HealthConfig, KeySource, RemoteConfigMode,
    RemoteConfigSettings, RestartBackoff, ServerEndpoint, ServerSettings, SupervisorConfig,
    TlsConfig, TrustConfig, TrustKey,
};

/// A position in the config file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1; `None` when only the line is known.
    pub column: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "line {}, column {column}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// Why a supervisor config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read supervisor config {}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A collector config file listed in `agent.config_files` cannot be read for the
    /// effective-config report.
    #[error("cannot read collector config file {} for the effective-config report", path.display())]
    EffectiveConfig {
        /// The collector config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its content is invalid.
    #[error("{}{}: {reason}", path.display(), PositionSuffix(*position))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Where the problem is, when known.
        position: Option<Position>,
        /// What is wrong, naming the key.
        reason: String,
    },
}

struct PositionSuffix(Option<Position>);

impl fmt::Display for PositionSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, ": {p}"),
            None => Ok(()),
        }
    }
}

impl ConfigError {
    /// The line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { position, .. } => position.map(|p| p.line),
            ConfigError::Read { .. } | ConfigError::EffectiveConfig { .. } => None,
        }
    }
}

impl SupervisorConfig {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`] with the line
    /// and reason for syntax errors, unknown keys and invalid values.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates config text; `origin` names the file in errors and is the base for
    /// relative paths.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the line and reason.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let mut config: SupervisorConfig =
            serde_norway::from_str(text).map_err(|e| yaml_error(origin, &e))?;
        config
            .check_consistency()
            .map_err(|(key_path, reason)| ConfigError::Invalid {
                path: origin.to_path_buf(),
                position: locate::line_of(text, &key_path)
                    .map(|line| Position { line, column: None }),
                reason,
            })?;
        let base = origin.parent().unwrap_or_else(|| Path::new(""));
        config.resolve_relative_paths(base);
        if config.capabilities.accepts_packages && config.trust.refuses_all_packages() {
            tracing::warn!(
                config = %origin.display(),
                "trust.require_signature is on but trust.keys is empty: every package offer will be refused"
            );
        }
        Ok(config)
    }
}

fn yaml_error(origin: &Path, error: &serde_norway::Error) -> ConfigError {
    let mut reason = error.to_string();
    let position = error.location().map(|l| Position {
        line: l.line(),
        column: Some(l.column()),
    });
    if let Some(p) = position {
        // serde_norway appends the position to its message; we report it in front instead.
        let suffix = format!(" at line {} column {}", p.line, p.column.unwrap_or(0));
        if let Some(stripped) = reason.strip_suffix(&suffix) {
            reason = stripped.to_owned();
        }
    }
    ConfigError::Invalid {
        path: origin.to_path_buf(),
        position,
        reason,
    }
}
