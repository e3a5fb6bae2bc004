//! `opamp server`: the fleet server.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  opamp server --config server.toml
  opamp server --listen 127.0.0.1:4320 --admin-listen 127.0.0.1:4321 \\
      --data-dir /var/lib/opamp --admin-token \"$OPAMP_ADMIN_TOKEN\"

Flags override the values in the config file.";

/// Arguments of `opamp server`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct ServerArgs {
    /// Server configuration (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Address agents connect to (OpAMP over WebSocket and HTTP).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4320")]
    pub(crate) listen: SocketAddr,

    /// Address of the admin API (JSON) and metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4321")]
    pub(crate) admin_listen: SocketAddr,

    /// Directory for the SQLite store and the package files.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Token operators must present to the admin API.
    #[arg(long, env = "OPAMP_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,

    /// File holding the admin token (keeps it out of the process list).
    #[arg(long, value_name = "FILE", conflicts_with = "admin_token")]
    pub(crate) admin_token_file: Option<PathBuf>,

    /// Base URL agents download packages from (default: http(s)://<listen>).
    #[arg(long, value_name = "URL")]
    pub(crate) public_url: Option<String>,

    /// Server certificate chain (PEM) to serve agents over TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the server certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// CA bundle (PEM) that agent client certificates must chain to (turns on mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) client_ca: Option<PathBuf>,
}

/// Runs the server.
pub(crate) fn run(args: &ServerArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "server requested");
    Err(super::not_available(
        "server",
        "the opamp-fleet server entry point (agent listener, admin API, SQLite store)",
    ))
}
