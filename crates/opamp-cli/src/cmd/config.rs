//! `opamp config`: collector configs for the server's remote-config offers.

use clap::Subcommand;

use crate::cmd::config_sign;
use crate::failure::CommandError;

/// Arguments of `opamp config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
}

/// `opamp config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Sign collector config files for the agents a selector names (offline, like packages).
    Sign(config_sign::ConfigSignArgs),
}

/// Runs `opamp config ...`.
pub(crate) fn run(args: ConfigArgs) -> Result<(), CommandError> {
    match args.command {
        ConfigCommand::Sign(args) => config_sign::run(&args),
    }
}
