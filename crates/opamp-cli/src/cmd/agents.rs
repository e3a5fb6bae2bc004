//! `opamp agents`: what the server knows about its agents.

use clap::Subcommand;

use super::AdminConnection;
use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  opamp agents list --selector region=eu-west --server http://127.0.0.1:4321 --token \"$TOKEN\"";

/// Arguments of `opamp agents`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct AgentsArgs {
    #[command(subcommand)]
    pub(crate) command: AgentsCommand,
}

/// `opamp agents` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// List agents with their version, health and connection state.
    #[command(after_help = "Example:\n  opamp agents list --selector env=prod --json")]
    List {
        /// Only agents whose labels match (key=value, repeatable, all must match).
        #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_label)]
        selector: Vec<(String, String)>,

        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,

        #[command(flatten)]
        connection: AdminConnection,
    },
}

/// Runs `opamp agents ...`.
pub(crate) fn run(args: &AgentsArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "agents requested");
    match &args.command {
        AgentsCommand::List { .. } => Err(super::not_available(
            "agents list",
            "the opamp-fleet admin API client (GET /agents)",
        )),
    }
}
