//! `opamp rollout`: staged rollouts through the server's admin API.

use std::time::Duration;

use clap::Subcommand;

use super::{AdminConnection, parse_duration, parse_label, parse_version};
use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  opamp rollout start --package otelcol --version 1.1.0 --selector env=prod \\
      --canary-share 0.05 --batches 4 --bake-time 10m --watch
  opamp rollout status 7 --watch";

/// Arguments of `opamp rollout`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct RolloutArgs {
    #[command(subcommand)]
    pub(crate) command: RolloutCommand,
}

/// `opamp rollout` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Start a rollout (a downgrade is a rollout to an older, signed-downgrade version).
    #[command(after_help = "\
Example:
  opamp rollout start --package otelcol --version 1.1.0 --selector env=prod \\
      --canary-share 0.05 --batch-size 50 --bake-time 10m --failure-budget 2 --watch

The canary share is a fraction of the selected agents (at least one agent). Any canary that
fails to install or turns unhealthy within the bake time aborts the rollout and reverts it.")]
    Start(StartArgs),
    /// Show a rollout's stage and its agents per version and state.
    #[command(after_help = "Example:\n  opamp rollout status 7 --watch")]
    Status {
        /// Rollout id.
        id: String,
        /// Keep showing live progress until the rollout ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Pause a rollout: no new agents are offered the target until it resumes.
    #[command(after_help = "Example:\n  opamp rollout pause 7")]
    Pause {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Resume a paused rollout.
    #[command(after_help = "Example:\n  opamp rollout resume 7")]
    Resume {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Abort a rollout and offer the previous version to every agent already moved.
    #[command(
        after_help = "Example:\n  opamp rollout abort 7 --reason \"error rate up in eu-west\""
    )]
    Abort {
        /// Rollout id.
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// List rollouts, newest first.
    #[command(after_help = "Example:\n  opamp rollout list --json")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
}

/// Arguments of `opamp rollout start`.
#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// Package name in the catalog.
    #[arg(long, value_name = "NAME")]
    pub(crate) package: String,

    /// Target version (must be in the catalog, signed).
    #[arg(long, value_name = "V", value_parser = parse_version)]
    pub(crate) version: semver::Version,

    /// Only agents whose labels match (key=value, repeatable, all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) selector: Vec<(String, String)>,

    /// Fraction of the selected agents in the canary stage (at least one agent).
    #[arg(long, value_name = "SHARE", default_value_t = 0.05, value_parser = parse_share)]
    pub(crate) canary_share: f64,

    /// Agents per batch after the canary.
    #[arg(long, value_name = "N", conflicts_with = "batches", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch_size: Option<u32>,

    /// Number of batches after the canary.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batches: Option<u32>,

    /// How long each stage must stay healthy before the next starts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) bake_time: Duration,

    /// How long an agent may take to report healthy after installing.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub(crate) health_timeout: Duration,

    /// How long an agent may take to download and install.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub(crate) install_timeout: Duration,

    /// Failed agents tolerated after the canary before the rollout aborts.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) failure_budget: u32,

    /// Keep showing live progress until the rollout ends.
    #[arg(long)]
    pub(crate) watch: bool,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        Ok(_) => Err("must be greater than 0 and at most 1".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `opamp rollout ...`.
pub(crate) fn run(args: &RolloutArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "rollout requested");
    let (name, endpoint) = match &args.command {
        RolloutCommand::Start(_) => ("rollout start", "POST /rollouts"),
        RolloutCommand::Status { .. } => {
            ("rollout status", "GET /rollouts/{id} and its event stream")
        }
        RolloutCommand::Pause { .. } => ("rollout pause", "POST /rollouts/{id}/pause"),
        RolloutCommand::Resume { .. } => ("rollout resume", "POST /rollouts/{id}/resume"),
        RolloutCommand::Abort { .. } => ("rollout abort", "POST /rollouts/{id}/abort"),
        RolloutCommand::List { .. } => ("rollout list", "GET /rollouts"),
    };
    Err(super::not_available(
        name,
        &format!("the opamp-fleet admin API client ({endpoint})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_share_is_a_fraction() {
        assert_eq!(parse_share("0.05").unwrap(), 0.05);
        assert_eq!(parse_share("1").unwrap(), 1.0);
        assert!(parse_share("0").is_err());
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("NaN").is_err());
        assert!(parse_share("five").is_err());
    }
}
