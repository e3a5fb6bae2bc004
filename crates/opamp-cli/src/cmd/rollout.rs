//! `opamp rollout`: staged rollouts through the server's admin API.

use std::time::Duration;

use clap::Subcommand;

use opamp_fleet::admin::{AdminClient, RolloutRequest, RolloutView};
use opamp_fleet::{Actor, AuditAction, BatchPlan, FailureBudget, RolloutStatus};

use super::json::{self, to_json};
use super::{
    AdminConnection, fleet_error, parse_duration, parse_label, parse_version, table, watch,
};
use crate::failure::CommandError;
use crate::output;

const AFTER_HELP: &str = "\
Example:
  opamp rollout start --package otelcol --version 1.1.0 --selector env=prod \\
      --canary-share 0.05 --batches 4 --bake-time 10m --watch
  opamp rollout status 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67 --watch
  opamp rollout audit 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67";

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
    #[command(
        after_help = "Example:\n  opamp rollout status 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67 --watch"
    )]
    Status {
        /// Rollout id.
        id: String,
        /// Keep showing live progress until the rollout ends.
        #[arg(long)]
        watch: bool,
        /// Print the rollout as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Pause a rollout: no new agents are offered the target until it resumes.
    #[command(
        after_help = "Example:\n  opamp rollout pause 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67 --json"
    )]
    Pause {
        /// Rollout id.
        id: String,
        /// Print the rollout as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Resume a paused rollout.
    #[command(after_help = "Example:\n  opamp rollout resume 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67")]
    Resume {
        /// Rollout id.
        id: String,
        /// Print the rollout as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Abort a rollout and offer the previous version to every agent already moved.
    #[command(
        after_help = "Example:\n  opamp rollout abort 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67 --reason \"error rate up in eu-west\""
    )]
    Abort {
        /// Rollout id.
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Print the rollout as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Show the audit log: who started, paused, resumed or aborted rollouts, every wave and
    /// every agent's result.
    #[command(
        after_help = "Example:\n  opamp rollout audit 0193a5f2-7c4e-7d1b-9a3e-5f2c8b1d4e67\n  opamp rollout audit --json"
    )]
    Audit {
        /// Only this rollout's records (default: every rollout's).
        id: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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

    #[command(flatten)]
    pub(crate) plan: PlanArgs,
}

/// Which agents take part in a rollout and how it is staged (shared by `opamp rollout start`
/// and `opamp config rollout start`).
#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
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

    /// Accept agents that run a version the catalog does not have (hosts set up before this
    /// server): the server cannot offer that version back, so it will not revert them; their
    /// supervisors still roll back by themselves when the new version fails its health gate.
    /// Without it such a rollout is refused until the old version is signed and added.
    #[arg(long)]
    pub(crate) adopt_unknown_versions: bool,

    /// Keep showing live progress until the rollout ends.
    #[arg(long)]
    pub(crate) watch: bool,

    /// Print the rollout as JSON (with --watch: once it has ended).
    #[arg(long)]
    pub(crate) json: bool,

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
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match &args.command {
            RolloutCommand::Start(start) => run_start(start).await,
            RolloutCommand::Status {
                id,
                watch,
                json,
                connection,
            } => {
                let client = connection.client()?;
                let view = if *watch {
                    follow(&client, id).await?
                } else {
                    client
                        .rollout(id)
                        .await
                        .map_err(|e| fleet_error(e, format!("cannot read rollout {id}")))?
                };
                if *json {
                    return output::line(to_json(&view)?);
                }
                print_view(&client, &view).await
            }
            RolloutCommand::Pause {
                id,
                json,
                connection,
            } => {
                let client = connection.client()?;
                let view = client
                    .pause(id)
                    .await
                    .map_err(|e| fleet_error(e, format!("cannot pause rollout {id}")))?;
                print_changed(&view, *json)
            }
            RolloutCommand::Resume {
                id,
                json,
                connection,
            } => {
                let client = connection.client()?;
                let view = client
                    .resume(id)
                    .await
                    .map_err(|e| fleet_error(e, format!("cannot resume rollout {id}")))?;
                print_changed(&view, *json)
            }
            RolloutCommand::Abort {
                id,
                reason,
                json,
                connection,
            } => {
                let client = connection.client()?;
                let reason = reason.as_deref().unwrap_or("aborted by an operator");
                let view = client
                    .abort(id, reason)
                    .await
                    .map_err(|e| fleet_error(e, format!("cannot abort rollout {id}")))?;
                print_changed(&view, *json)
            }
            RolloutCommand::Audit {
                id,
                json,
                connection,
            } => {
                let client = connection.client()?;
                let records = client
                    .audit(id.as_deref())
                    .await
                    .map_err(|e| fleet_error(e, "cannot read the audit log"))?;
                if *json {
                    return output::line(to_json(&records)?);
                }
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|stored| {
                        let record = &stored.record;
                        // Records about no rollout (an operator's restart) have no id.
                        let rollout = match record.rollout_id.as_str() {
                            "" => "-".to_owned(),
                            id => id.to_owned(),
                        };
                        vec![
                            json::ago(record.at),
                            rollout,
                            actor(&record.actor),
                            record.action.kind().to_owned(),
                            details(&record.action),
                        ]
                    })
                    .collect();
                output::line(table::render(
                    &["AT", "ROLLOUT", "WHO", "ACTION", "DETAILS"],
                    &rows,
                ))
            }
            RolloutCommand::List { json, connection } => {
                let client = connection.client()?;
                let rollouts = client
                    .rollouts()
                    .await
                    .map_err(|e| fleet_error(e, "cannot list rollouts"))?;
                if *json {
                    return output::line(to_json(&rollouts)?);
                }
                let rows: Vec<Vec<String>> = rollouts
                    .iter()
                    .map(|r| {
                        // A config rollout's "package" is its config's name.
                        let target = if r.target_kind.is_package() {
                            r.package.clone()
                        } else {
                            format!("config:{}", r.package)
                        };
                        vec![
                            r.id.to_string(),
                            target,
                            r.target_version.clone(),
                            r.status.to_string(),
                            r.selector.clone(),
                            json::ago(r.created_at),
                        ]
                    })
                    .collect();
                output::line(table::render(
                    &["ID", "PACKAGE", "VERSION", "STATUS", "SELECTOR", "CREATED"],
                    &rows,
                ))
            }
        }
    })
}

impl PlanArgs {
    /// `request` with these knobs; `fleet_size` (an upper bound of the agents selected) turns
    /// a fixed `--batch-size` into explicit sizes.
    pub(crate) fn apply(&self, mut request: RolloutRequest, fleet_size: usize) -> RolloutRequest {
        let args = self;
        request.selector = args
            .selector
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",");
        request.canary_share = Some(args.canary_share);
        request.batches = match (args.batch_size, args.batches) {
            (Some(size), _) => {
                let batches = fleet_size.div_ceil(usize::try_from(size).unwrap_or(1).max(1));
                Some(BatchPlan::Sizes(vec![size; batches.max(1)]))
            }
            (None, Some(count)) => Some(BatchPlan::Share(1.0 / f64::from(count))),
            (None, None) => None,
        };
        request.bake_time = Some(args.bake_time);
        request.health_timeout = Some(args.health_timeout);
        request.install_timeout = Some(args.install_timeout);
        request.failure_budget = Some(FailureBudget::Count(args.failure_budget));
        request.adopt_unknown_versions = args.adopt_unknown_versions;
        request
    }
}

async fn run_start(args: &StartArgs) -> Result<(), CommandError> {
    let request = RolloutRequest::new(args.package.clone(), args.version.to_string());
    let what = format!("{} {}", args.package, args.version);
    start(request, &args.plan, &what).await
}

/// Starts the rollout `request` (`what` names its target in errors) with the knobs of `args`,
/// then prints it or follows it as asked.
pub(crate) async fn start(
    request: RolloutRequest,
    args: &PlanArgs,
    what: &str,
) -> Result<(), CommandError> {
    let client = args.connection.client()?;
    let fleet_size = match args.batch_size {
        Some(_) => client
            .agents()
            .await
            .map_err(|e| fleet_error(e, "cannot list the agents"))?
            .len(),
        None => 0,
    };
    let view = client
        .create_rollout(&args.apply(request, fleet_size))
        .await
        .map_err(|e| fleet_error(e, format!("cannot start a rollout of {what}")))?;
    if args.json && !args.watch {
        return output::line(to_json(&view)?);
    }
    let started = format!(
        "rollout {} started: {} to {} agents ({} waves)",
        view.id,
        target(&view),
        view.progress.total,
        view.waves.len()
    );
    if args.json {
        // stdout carries only the JSON document printed when the rollout ends.
        output::note(started);
    } else {
        output::line(started)?;
    }
    if !args.watch {
        return Ok(());
    }
    let view = follow(&client, &view.id.to_string()).await?;
    if args.json {
        output::line(to_json(&view)?)?;
    } else {
        print_view(&client, &view).await?;
    }
    match view.status {
        RolloutStatus::Completed => Ok(()),
        status => Err(CommandError::operation(anyhow::anyhow!(
            "rollout {} ended {status}",
            view.id
        ))),
    }
}

async fn follow(client: &AdminClient, id: &str) -> Result<RolloutView, CommandError> {
    watch::follow(client, id, &format!("rollout {id}"))
        .await
        .map_err(|e| fleet_error(e, format!("cannot follow rollout {id}")))
}

async fn print_view(client: &AdminClient, view: &RolloutView) -> Result<(), CommandError> {
    let fleet = client.agents().await.unwrap_or_default();
    // Agents report package versions only: the fleet line means nothing for a config.
    let fleet_line = if view.spec.target_kind.is_package() {
        format!(
            "\n  fleet: {}",
            watch::versions(&fleet, &view.spec.package_name)
        )
    } else {
        String::new()
    };
    output::line(format_args!(
        "rollout {}: {} | status {} | stage {}\n  agents: {}{fleet_line}{}",
        view.id,
        target(view),
        view.status,
        watch::stage(view),
        watch::counts(view),
        adopted_line(view)
    ))
}

/// What a rollout moves agents to: `otelcol 1.1.0`, or `config collector 2 (hash …)`.
fn target(view: &RolloutView) -> String {
    let spec = &view.spec;
    if spec.target_kind.is_package() {
        return format!("{} {}", spec.package_name, spec.target_version);
    }
    format!(
        "config {} {} (hash {})",
        spec.package_name,
        spec.target_version,
        spec.target_ref.as_deref().unwrap_or_default()
    )
}

/// The status line naming adopted versions, which the server will not revert to.
fn adopted_line(view: &RolloutView) -> String {
    if view.spec.adopted_versions.is_empty() {
        return String::new();
    }
    format!(
        "\n  adopted (not in the catalog, not reverted by the server): {}",
        view.spec.adopted_versions.join(", ")
    )
}

fn actor(actor: &Actor) -> String {
    match actor {
        Actor::Operator(name) => name.clone(),
        Actor::Agent(uid) => format!("agent {uid}"),
        Actor::Engine => "engine".to_owned(),
        Actor::Peer { address } => format!("peer {address}"),
        other => format!("{other:?}"),
    }
}

/// The action's fields as `key=value` pairs (its kind is a column of its own).
fn details(action: &AuditAction) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(action) else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(key, _)| key.as_str() != "action")
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer to pause, resume or abort: one line, or the whole rollout as JSON.
fn print_changed(view: &RolloutView, json: bool) -> Result<(), CommandError> {
    if json {
        return output::line(to_json(view)?);
    }
    output::line(format_args!("rollout {}: {}", view.id, view.status))
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
