//! `opamp config`: signing configs (release side), the server's config catalog and staged
//! config rollouts.

use std::path::PathBuf;

use clap::Subcommand;
use opamp_fleet::admin::{ConfigFileUpload, ConfigUpload, RolloutRequest};

use super::config_sign;
use super::json::{ago, to_json};
use super::rollout::{PlanArgs, start};
use super::{AdminConnection, fleet_error, runtime, table};
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;

const AFTER_HELP: &str = "\
Example:
  opamp config add collector --version 2 collector.yaml --signature collector-2.sig
  opamp config list
  opamp config rollout start collector 2 --selector env=prod --bake-time 10m --watch
  opamp rollout status <ID>       # pause, resume, abort and audit work by id as for packages";

/// Arguments of `opamp config`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
}

/// `opamp config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Sign collector config files for the agents a selector names (offline, like packages).
    Sign(config_sign::ConfigSignArgs),
    /// Add a config version (one or more files) to the server's config catalog.
    Add(AddArgs),
    /// List the config catalog: versions, hashes, files.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Staged config rollouts.
    Rollout {
        #[command(subcommand)]
        command: ConfigRolloutCommand,
    },
}

/// `opamp config rollout` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigRolloutCommand {
    /// Roll a config version out as remote config, in stages: canary, bake, batches.
    #[command(after_help = "\
Example:
  opamp config rollout start collector 2 --selector env=prod --canary-share 0.05 \\
      --bake-time 10m --watch

An agent succeeds when it reports the config APPLIED and stays healthy; a FAILED report
(its message is kept) or an unhealthy agent fails it. A failed canary aborts the rollout, and
every agent already moved is offered the config it had before (an empty config if it had
none). Status, pause, resume, abort and audit: `opamp rollout ... ID`.")]
    Start(StartArgs),
}

/// Arguments of `opamp config add`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp config add collector --version 2 collector.yaml processors.yaml --signature c-2.sig

Each file is offered under its file name. The server computes the config hash (the signature
left out) and shows it; the signature is delivered unchanged as the `opamp.signature` entry.")]
pub(crate) struct AddArgs {
    /// Config name.
    pub(crate) name: String,

    /// Version label (any text, for example 2 or 2026-12-05).
    #[arg(long, value_name = "V")]
    pub(crate) version: String,

    /// The config files.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    /// Content type of every file (default: by extension, as `config sign` hashes them:
    /// text/yaml for .yaml/.yml, application/json for .json, text/plain otherwise).
    #[arg(long, value_name = "TYPE")]
    pub(crate) content_type: Option<String>,

    /// Signature file, relayed to agents as the `opamp.signature` entry.
    #[arg(long, value_name = "FILE")]
    pub(crate) signature: Option<PathBuf>,

    /// Print the catalog entry as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Arguments of `opamp config rollout start`.
#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// Config name in the config catalog.
    pub(crate) name: String,

    /// Version label in the config catalog.
    pub(crate) version: String,

    #[command(flatten)]
    pub(crate) plan: PlanArgs,
}

/// Runs `opamp config ...`.
pub(crate) fn run(args: &ConfigArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "config command requested");
    match &args.command {
        ConfigCommand::Sign(sign) => config_sign::run(sign),
        ConfigCommand::Add(add) => run_add(add),
        ConfigCommand::List { json, connection } => run_list(*json, connection),
        ConfigCommand::Rollout {
            command: ConfigRolloutCommand::Start(start_args),
        } => {
            let request = RolloutRequest::config(&start_args.name, &start_args.version);
            let what = format!("config {} {}", start_args.name, start_args.version);
            runtime()?.block_on(start(request, &start_args.plan, &what))
        }
    }
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, CommandError> {
    std::fs::read(path).or_fail(Failure::Unreachable, || {
        format!("cannot read {what} {}", path.display())
    })
}

fn run_add(args: &AddArgs) -> Result<(), CommandError> {
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        // The same name and content type `config sign` hashed, so its signature fits.
        let (name, by_extension) = config_sign::config_entry(path);
        let content_type = args.content_type.as_deref().unwrap_or(by_extension);
        let body = read(path, "config file")?;
        files.push(ConfigFileUpload::new(name, content_type, &body));
    }
    let mut upload = ConfigUpload::new(&args.name, &args.version, files);
    if let Some(signature) = &args.signature {
        upload = upload.signature(&read(signature, "signature file")?);
    }
    let client = args.connection.client()?;
    let view = runtime()?
        .block_on(client.add_config(&upload))
        .map_err(|e| {
            fleet_error(
                e,
                format!("cannot add config {} {}", args.name, args.version),
            )
        })?;
    if args.json {
        return output::line(to_json(&view)?);
    }
    output::line(format_args!(
        "added config {} {} ({} files{}, hash {})",
        view.name,
        view.version,
        view.files.len(),
        if view.signed { ", signed" } else { "" },
        view.hash
    ))
}

fn run_list(json: bool, connection: &AdminConnection) -> Result<(), CommandError> {
    let client = connection.client()?;
    let configs = runtime()?
        .block_on(client.configs())
        .map_err(|e| fleet_error(e, "cannot list the configs"))?;
    if json {
        return output::line(to_json(&configs)?);
    }
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            let files: Vec<&str> = c.files.iter().map(|f| f.name.as_str()).collect();
            vec![
                c.name.clone(),
                c.version.clone(),
                c.hash.clone(),
                files.join(","),
                if c.signed { "yes" } else { "no" }.to_owned(),
                ago(c.added_at),
            ]
        })
        .collect();
    output::line(table::render(
        &["NAME", "VERSION", "HASH", "FILES", "SIGNED", "ADDED"],
        &rows,
    ))
}
