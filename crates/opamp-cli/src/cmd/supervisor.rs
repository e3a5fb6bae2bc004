//! `opamp supervisor`: keeps one collector running and installs what the server offers.

use std::path::PathBuf;

use opamp_supervisor::config::SupervisorConfig;

use crate::failure::{CommandError, Failure, ResultExt as _};

const AFTER_HELP: &str = "\
Example:
  opamp supervisor --config /etc/opamp/supervisor.yaml
  opamp supervisor convert-config --from opampsupervisor.yaml --trust-key release.pub \\
      --out supervisor.yaml

After both copies of the anti-rollback floor were lost (installed-state.json and
rollback-floor.json corrupt), every install is refused until an operator sets the floor again,
with the supervisor stopped:
  opamp supervisor --config /etc/opamp/supervisor.yaml --reset-rollback-floor 0.115.0

The YAML names the server (server.endpoint, server.tls.*), the collector (agent.executable,
agent.storage_dir), its health check and the trusted release keys.";

/// Arguments of `opamp supervisor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct SupervisorArgs {
    /// Supervisor configuration (YAML).
    #[arg(long, value_name = "FILE", required = true)]
    pub(crate) config: Option<PathBuf>,

    /// Set the anti-rollback floor of the collector package to VERSION (the highest version
    /// this host may run without a signed downgrade authorisation) and exit. Refused while a
    /// supervisor runs on the same storage directory.
    #[arg(long, value_name = "VERSION")]
    pub(crate) reset_rollback_floor: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Option<SupervisorCommand>,
}

/// `opamp supervisor` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SupervisorCommand {
    /// Write this supervisor's config from an upstream `opampsupervisor` config.
    ConvertConfig(super::convert_config::ConvertArgs),
}

/// Runs the supervisor until Ctrl-C or SIGTERM, then stops the collector and disconnects.
pub(crate) fn run(args: &SupervisorArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "supervisor requested");
    if let Some(SupervisorCommand::ConvertConfig(convert)) = &args.command {
        return super::convert_config::run(convert);
    }
    let Some(path) = &args.config else {
        return Err(CommandError::operation(anyhow::anyhow!(
            "--config is required"
        )));
    };
    let config = SupervisorConfig::load(path).or_fail(Failure::Operation, || {
        format!("cannot load {}", path.display())
    })?;
    if let Some(version) = &args.reset_rollback_floor {
        let package = opamp_supervisor::reset_rollback_floor(&config, version)
            .or_fail(Failure::Operation, || "cannot reset the rollback floor")?;
        println!("anti-rollback floor of {package} set to {version}");
        return Ok(());
    }
    crate::service::supervisor_runtime()?.block_on(async move {
        // A failure to listen for signals is reported by the shutdown future completing; the
        // supervisor then stops cleanly rather than running without a way to stop it.
        let shutdown = async {
            match crate::service::stop_signal().await {
                Ok(reason) => tracing::info!(reason, "stopping the supervisor"),
                Err(error) => tracing::error!(error = %error.report(), "cannot wait for signals"),
            }
        };
        opamp_supervisor::run(config, shutdown).await.or_fail(
            Failure::Operation,
            || "the supervisor stopped with an error",
        )
    })
}
