//! `opamp supervisor convert-config`: this supervisor's config from an upstream
//! `opampsupervisor` config (the mapping: `opamp_supervisor::config::upstream`).

use std::path::PathBuf;

use opamp_supervisor::config::SupervisorConfig;
use opamp_supervisor::config::upstream;

use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;

/// Arguments of `opamp supervisor convert-config`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp supervisor convert-config --from /etc/otelcol/supervisor.yaml \\
      --trust-key /etc/opamp/release.pub --out /etc/opamp/supervisor.yaml

Settings with no equivalent here (capabilities not implemented, telemetry, ...) are named on
stderr and left out. server.tls.insecure_skip_verify: true is refused.")]
pub(crate) struct ConvertArgs {
    /// The upstream opampsupervisor config (YAML).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,

    /// A release public key that signs the packages this host may install (repeatable).
    #[arg(long, value_name = "FILE")]
    trust_key: Vec<PathBuf>,

    /// Where to write the converted config (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Converts, checks that the result loads, then writes it.
pub(crate) fn run(args: &ConvertArgs) -> Result<(), CommandError> {
    let text = std::fs::read_to_string(&args.from).or_fail(Failure::Unreachable, || {
        format!("cannot read {}", args.from.display())
    })?;
    let converted = upstream::convert(&text, &args.trust_key)
        .or_fail(Failure::Operation, || {
            format!("cannot convert {}", args.from.display())
        })?;
    let target = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("supervisor.yaml"));
    SupervisorConfig::from_yaml_str(&converted.yaml, &target).or_fail(
        Failure::Operation,
        || {
            format!(
                "the config converted from {} does not load",
                args.from.display()
            )
        },
    )?;
    for warning in &converted.warnings {
        output::note(format_args!("warning: {warning}"));
    }
    match &args.out {
        Some(out) => std::fs::write(out, &converted.yaml).or_fail(Failure::Unreachable, || {
            format!("cannot write {}", out.display())
        }),
        None => output::line(converted.yaml.trim_end()),
    }
}
