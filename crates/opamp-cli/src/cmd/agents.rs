//! `opamp agents`: what the server knows about its agents.

use clap::Subcommand;

use opamp_fleet::admin::AgentSummary;
use opamp_fleet::admin::RestartRequest;

use super::{AdminConnection, fleet_error, table};
use crate::failure::CommandError;
use crate::output;

const AFTER_HELP: &str = "\
Examples:
  opamp agents list --selector region=eu-west --server http://127.0.0.1:4321 --token \"$TOKEN\"
  opamp agents show 0193a5f0-6c2e-7d41-9a8b-2f1e0c3d4b5a
  opamp agents restart --selector env=staging,region=eu-west";

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
    /// Show one agent: description, packages, effective config, health tree, connection.
    #[command(
        after_help = "Example:\n  opamp agents show 0193a5f0-6c2e-7d41-9a8b-2f1e0c3d4b5a --json"
    )]
    Show {
        /// The agent's instance uid (as `agents list` prints it).
        uid: String,

        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,

        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Send the Restart command to the connected agents the selector matches (their
    /// supervisors restart the collector).
    #[command(
        after_help = "Example:\n  opamp agents restart --selector env=staging,region=eu-west"
    )]
    Restart {
        /// Agents whose labels match: key=value terms, comma-separated or repeated, all must
        /// match. Required, so that no typo restarts the whole fleet.
        #[arg(long, required = true, value_name = "KEY=VALUE[,..]", value_delimiter = ',', value_parser = super::parse_label)]
        selector: Vec<(String, String)>,

        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,

        #[command(flatten)]
        connection: AdminConnection,
    },
    /// One-time enrollment tokens (server in `[agent_identity] mode = "enrollment"`).
    #[command(subcommand)]
    EnrollToken(EnrollTokenCommand),
}

/// `opamp agents enroll-token` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EnrollTokenCommand {
    /// Create a one-time token an agent exchanges for its own credential; printed once.
    #[command(
        after_help = "Example:\n  opamp agents enroll-token create --ttl 1h > host-7.token\n  \
                      (then server.enrollment_token_file: host-7.token in its supervisor.yaml)"
    )]
    Create {
        /// How long the token stays valid (default: one day).
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
        ttl: Option<std::time::Duration>,

        /// Print JSON (`token`, `expires_at`) instead of the bare token.
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
        AgentsCommand::EnrollToken(EnrollTokenCommand::Create {
            ttl,
            json,
            connection,
        }) => {
            let client = connection.client()?;
            let created = super::runtime()?
                .block_on(client.create_enrollment_token(*ttl))
                .map_err(|e| fleet_error(e, "cannot create an enrollment token"))?;
            if *json {
                return output::line(super::json::to_json(&created)?);
            }
            output::line(created.token)
        }
        AgentsCommand::List {
            selector,
            json,
            connection,
        } => {
            let client = connection.client()?;
            let agents = super::runtime()?
                .block_on(all_agents(&client))
                .map_err(|e| fleet_error(e, "cannot list the agents"))?;
            let agents: Vec<AgentSummary> = agents
                .into_iter()
                .filter(|agent| {
                    selector
                        .iter()
                        .all(|(key, value)| agent.labels.get(key) == Some(value))
                })
                .collect();
            if *json {
                return output::line(super::json::to_json(&agents)?);
            }
            // Several server replicas: say which one holds each connection.
            let replicas = agents.iter().any(|agent| agent.replica.is_some());
            let mut header = vec![
                "UID",
                "VERSIONS",
                "HEALTH",
                "CONNECTED",
                "LABELS",
                "LAST SEEN",
            ];
            if replicas {
                header.push("REPLICA");
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|agent| {
                    let mut cells = row(agent);
                    if replicas {
                        cells.push(agent.replica.clone().unwrap_or_else(|| "-".into()));
                    }
                    cells
                })
                .collect();
            output::line(table::render(&header, &rows))
        }
        AgentsCommand::Show {
            uid,
            json,
            connection,
        } => show(uid, *json, connection),
        AgentsCommand::Restart {
            selector,
            json,
            connection,
        } => restart(selector, *json, connection),
    }
}

/// Agents fetched per request: the server never builds one answer for the whole fleet.
const AGENTS_PAGE: usize = 1_000;

/// Every agent, a page at a time in uid order. A server without paging answers the whole list
/// to every request: a list longer than a page ends the walk, and one of exactly a page comes
/// back not starting after the cursor, which ends it too.
async fn all_agents(
    client: &opamp_fleet::admin::AdminClient,
) -> Result<Vec<AgentSummary>, opamp_fleet::FleetError> {
    let mut agents: Vec<AgentSummary> = Vec::new();
    loop {
        let after = agents.last().map(|agent| agent.uid.to_string());
        let page = client.agents_page(after.as_deref(), AGENTS_PAGE).await?;
        if let (Some(after), Some(first)) = (&after, page.first())
            && first.uid.to_string().as_str() <= after.as_str()
        {
            return Ok(agents);
        }
        let more = page.len() == AGENTS_PAGE;
        agents.extend(page);
        if !more {
            return Ok(agents);
        }
    }
}

fn show(uid: &str, json: bool, connection: &AdminConnection) -> Result<(), CommandError> {
    let client = connection.client()?;
    let view = super::runtime()?
        .block_on(client.agent(uid))
        .map_err(|e| fleet_error(e, format!("cannot show agent {uid}")))?;
    if json {
        return output::line(super::json::to_json(&view)?);
    }
    output::line(super::agent_show::render(&view))
}

fn restart(
    selector: &[(String, String)],
    json: bool,
    connection: &AdminConnection,
) -> Result<(), CommandError> {
    let client = connection.client()?;
    let text = selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let report = super::runtime()?
        .block_on(client.restart_agents(&RestartRequest::new(text.clone())))
        .map_err(|e| fleet_error(e, format!("cannot restart the agents matching {text}")))?;
    if json {
        return output::line(super::json::to_json(&report)?);
    }
    let mut lines = vec![format!(
        "restart sent to {} agents matching {text}",
        report.restarted.len()
    )];
    lines.extend(report.restarted.iter().map(|uid| format!("  {uid}")));
    if !report.not_accepting.is_empty() {
        lines.push(format!(
            "{} matching agents do not accept restart commands:",
            report.not_accepting.len()
        ));
        lines.extend(report.not_accepting.iter().map(|uid| format!("  {uid}")));
    }
    output::line(lines.join("\n"))
}

fn row(agent: &AgentSummary) -> Vec<String> {
    let versions: Vec<String> = agent
        .package_versions
        .iter()
        .map(|(name, version)| format!("{name}={version}"))
        .collect();
    let labels: Vec<String> = agent
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    vec![
        agent.uid.to_string(),
        versions.join(","),
        if agent.healthy {
            "healthy"
        } else {
            "unhealthy"
        }
        .to_owned(),
        if agent.connected { "yes" } else { "no" }.to_owned(),
        labels.join(","),
        super::json::ago(agent.last_seen),
    ]
}
