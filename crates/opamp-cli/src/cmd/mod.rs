//! One module per subcommand.

pub(crate) mod agent_show;
pub(crate) mod agents;
pub(crate) mod config;
pub(crate) mod config_sign;
pub(crate) mod convert_config;
pub(crate) mod demo;
pub(crate) mod json;
pub(crate) mod package;
pub(crate) mod rollout;
pub(crate) mod server;
pub(crate) mod supervisor;
pub(crate) mod table;
pub(crate) mod watch;

use opamp_fleet::FleetError;
use opamp_fleet::admin::AdminClient;

use crate::failure::{CommandError, Failure};

/// Where the admin API is and how to authenticate to it (shared by the operator commands).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AdminConnection {
    /// Base URL of the server's admin API.
    #[arg(
        long = "server",
        env = "OPAMP_ADMIN_URL",
        default_value = "http://127.0.0.1:4321"
    )]
    pub(crate) server: String,

    /// Admin API bearer token.
    #[arg(long, env = "OPAMP_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl AdminConnection {
    /// A client of the admin API; a missing token is a usage problem reported up front.
    pub(crate) fn client(&self) -> Result<AdminClient, CommandError> {
        let Some(token) = self.token.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Err(CommandError::operation(anyhow::anyhow!(
                "no admin token: pass --token or set OPAMP_ADMIN_TOKEN"
            )));
        };
        AdminClient::new(&self.server, token.trim())
            .map_err(|error| fleet_error(error, format!("cannot use admin URL {}", self.server)))
    }
}

pub(crate) use crate::service::runtime;

/// Maps a fleet error to its exit code: no answer from the server or a file problem is 4,
/// anything the server or the library refused is 1.
pub(crate) fn fleet_error(error: FleetError, context: impl std::fmt::Display) -> CommandError {
    let failure = match &error {
        FleetError::AdminApi { status: None, .. }
        | FleetError::AdminUnreachable { .. }
        | FleetError::Io { .. } => Failure::Unreachable,
        _ => Failure::Operation,
    };
    CommandError::new(
        failure,
        anyhow::Error::new(error).context(context.to_string()),
    )
}

/// Parses `key=value` (a label selector term).
pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// Parses a package version the way agents do (canonical semver, optional leading `v`).
pub(crate) fn parse_version(text: &str) -> Result<semver::Version, String> {
    opamp_packages::parse_version(text).map_err(|e| e.to_string())
}

/// Parses a human duration such as `30s`, `5m` or `90d`.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_need_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_label("region=eu-west").unwrap(),
            ("region".to_owned(), "eu-west".to_owned())
        );
        assert_eq!(
            parse_label("tier=").unwrap(),
            ("tier".to_owned(), String::new())
        );
        assert!(parse_label("region").is_err());
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn versions_are_canonical_semver() {
        assert_eq!(
            parse_version("v1.2.3").unwrap(),
            semver::Version::new(1, 2, 3)
        );
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("01.2.3").is_err());
    }
}
