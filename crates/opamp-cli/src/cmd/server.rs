//! `opamp server`: the fleet server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use opamp_fleet::FleetServerConfig;
use opamp_fleet::config::TlsSettings;
use opamp_fleet::server::FleetServer;

use super::fleet_error;
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;
use crate::service::StopSignals;

const AFTER_HELP: &str = "\
Example:
  opamp server --config server.toml
  opamp server --listen 127.0.0.1:4320 --admin-listen 127.0.0.1:4321 \\
      --data-dir /var/lib/opamp --admin-token-file /etc/opamp/admin.token

Flags override the values in the config file. OPAMP_ADMIN_TOKEN (the other commands'
credential) never adds to or overrides a configured token; with no token configured at all
it becomes the `admin` operator's, and the server says so at start.";

/// Arguments of `opamp server`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct ServerArgs {
    /// Server configuration (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Address agents connect to (OpAMP over WebSocket and HTTP) [default: 127.0.0.1:4320].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,

    /// Address of the admin API (JSON) and metrics [default: 127.0.0.1:4321].
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin_listen: Option<SocketAddr>,

    /// Directory for the SQLite store and the package files.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Token operators must present to the admin API. Not read from OPAMP_ADMIN_TOKEN,
    /// which is the CLI's client credential (see `ENV_TOKEN`).
    #[arg(long)]
    pub(crate) admin_token: Option<String>,

    /// File holding the admin token (keeps it out of the process list).
    #[arg(long, value_name = "FILE", conflicts_with = "admin_token")]
    pub(crate) admin_token_file: Option<PathBuf>,

    /// Base URL agents download packages from (default: http(s):// plus the --listen address).
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

    /// A release public key (repeatable): `package add` then refuses packages none of them
    /// signed. Added to the config file's `release_keys`.
    #[arg(long, value_name = "FILE")]
    pub(crate) release_key: Vec<PathBuf>,

    /// Start a new, empty store although fleet.db is missing or empty while packages/ holds
    /// files (without it the server refuses to start in that state).
    #[arg(long)]
    pub(crate) initialise_store: bool,
}

/// Longest graceful stop after SIGINT, SIGTERM or SIGHUP; a second signal ends it at once.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the server until SIGINT (Ctrl-C), SIGTERM or SIGHUP, then stops it within [`DRAIN`].
pub(crate) fn run(args: &ServerArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "server requested");
    let config = config(args)?;
    let runtime = super::runtime()?;
    let result = runtime.block_on(async move {
        let mut signals = StopSignals::listen()?;
        // Connecting to PostgreSQL (and migrating) may take a while; a signal meanwhile stops.
        let server = tokio::select! {
            started = FleetServer::start(config) => {
                started.map_err(|e| fleet_error(e, "cannot start the fleet server"))?
            }
            reason = signals.recv() => {
                tracing::info!(reason, "stopped before serving");
                return Ok(());
            }
        };
        // The operator may have gone (`| head`): the server runs on without its banner.
        let _ = output::line(format_args!(
            "opamp server: agents at ws://{}/v1/opamp, admin API at http://{}",
            server.opamp_addr(),
            server.admin_addr()
        ));
        let lost = tokio::select! {
            reason = signals.recv() => {
                tracing::info!(reason, "shutting down");
                None
            }
            // This replica coordinated and another one decides now: close this one's agent
            // connections and exit, so agents reconnect elsewhere and a service manager
            // restarts this one as a relaying replica.
            lost = server.lease_lost() => Some(lost),
        };
        tokio::select! {
            () = server.shutdown() => {}
            () = tokio::time::sleep(DRAIN) => {
                tracing::warn!(drain = ?DRAIN, "graceful stop took too long; exiting");
            }
            again = signals.recv() => {
                tracing::warn!(signal = again, "second signal; exiting now");
            }
        }
        match lost {
            Some(error) => Err(fleet_error(error, "the fleet server stopped")),
            None => Ok(()),
        }
    });
    // A driver thread still inside a store write must not hold the exit (dropping the
    // runtime would wait for it without limit).
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The configuration: the file (if any) with flags on top.
pub(crate) fn config(args: &ServerArgs) -> Result<FleetServerConfig, CommandError> {
    let mut config = match &args.config {
        Some(path) => FleetServerConfig::from_file(path)
            .map_err(|e| fleet_error(e, format!("cannot load {}", path.display())))?,
        None => {
            let Some(data_dir) = &args.data_dir else {
                return Err(CommandError::operation(anyhow::anyhow!(
                    "no data directory: pass --data-dir or --config"
                )));
            };
            let mut config = FleetServerConfig::new(DEFAULT_LISTEN.into(), data_dir, "");
            config.admin.token = None;
            config
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(token) = &args.admin_token {
        config.admin.token = Some(token.clone());
        config.admin.token_file = None;
    }
    if let Some(file) = &args.admin_token_file {
        config.admin.token = None;
        config.admin.token_file = Some(file.clone());
    }
    apply_environment_token(&mut config, std::env::var(ENV_TOKEN).ok());
    if args.initialise_store {
        config.store.initialise = true;
    }
    if let Some(url) = &args.public_url {
        config.public_url = Some(url.clone());
    }
    if let (Some(cert_file), Some(key_file)) = (&args.tls_cert, &args.tls_key) {
        // TlsSettings has no constructor outside its crate; its serde form is public.
        let tls: TlsSettings = serde_json::from_value(serde_json::json!({
            "cert_file": cert_file,
            "key_file": key_file,
            "client_ca_file": args.client_ca,
        }))
        .or_fail(Failure::Operation, || "invalid TLS file names")?;
        config.tls = Some(tls);
    }
    config.release_keys.extend(args.release_key.iter().cloned());
    Ok(config)
}

/// The variable the other commands read their admin token from. Operators export it for the
/// CLI, so the server must not silently turn it into a credential of its own.
const ENV_TOKEN: &str = "OPAMP_ADMIN_TOKEN";

/// Issue 22, finding 5: `OPAMP_ADMIN_TOKEN` never overrides or adds to configured operators
/// (rotating a token file must revoke the old token). Only when nothing is configured does it
/// become the `admin` operator's token, logged loudly, since the server would not start
/// otherwise and the operator evidently meant it.
fn apply_environment_token(config: &mut FleetServerConfig, env_token: Option<String>) {
    let Some(token) = env_token.filter(|token| !token.is_empty()) else {
        return;
    };
    let admin = &config.admin;
    if admin.token.is_some() || admin.token_file.is_some() || !admin.operators.is_empty() {
        tracing::warn!(
            "{ENV_TOKEN} is set in the server's environment and ignored: the configured admin \
             token or operators are the only credentials"
        );
        return;
    }
    tracing::warn!(
        operator = opamp_fleet::config::DEFAULT_OPERATOR,
        "no admin token configured: the token in {ENV_TOKEN} is the admin operator's; \
         configure admin.token_file or [[admin.operators]] instead"
    );
    config.admin.token = Some(token);
}

/// The default agent listener address.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 4320);
