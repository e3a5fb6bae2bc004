//! `opamp supervisor`: keeps one collector running and installs what the server offers.

use std::path::PathBuf;

use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  opamp supervisor --config /etc/opamp/supervisor.yaml

The YAML names the server (server.endpoint, server.tls.*), the collector (agent.executable,
agent.storage_dir), its health check and the trusted release keys.";

/// Arguments of `opamp supervisor`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct SupervisorArgs {
    /// Supervisor configuration (YAML).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

/// Runs the supervisor.
pub(crate) fn run(args: &SupervisorArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "supervisor requested");
    Err(super::not_available(
        "supervisor",
        "the opamp-supervisor run loop (collector process, download, verify, swap, health gate)",
    ))
}
