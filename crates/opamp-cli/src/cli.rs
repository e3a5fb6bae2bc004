//! The command line: global flags and the subcommand tree.

use clap::{Parser, Subcommand};

use crate::cmd;
use crate::logging::LogFormat;

const TOP_AFTER_HELP: &str = "\
Examples:
  opamp demo                                   # the whole story on 127.0.0.1
  opamp package keygen --scheme ed25519 --out keys/
  opamp package sign otelcol --key keys/release.key --name otelcol --version 1.1.0
  opamp --log-format json -v server --config server.toml

Exit codes:
  0  success
  1  the operation failed
  2  usage error (unknown flag, missing or invalid argument)
  3  verification refused (signature, hash or trust policy)
  4  cannot reach the server, or reading/writing a file failed

Logs go to stderr: info and up for server and supervisor, errors only for the other commands
(the demo prints its own progress; its supervisors log to files); each -v shows one level more. RUST_LOG (e.g. RUST_LOG=opamp_verify=debug) overrides -v.";

/// Secure, staged OpAMP upgrades and downgrades of OpenTelemetry Collectors.
#[derive(Debug, Parser)]
#[command(name = "opamp", version, after_help = TOP_AFTER_HELP)]
pub(crate) struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// More log output; repeat for more (-v, -vv, -vvv). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the fleet server: agents connect over OpAMP, operators use the admin API.
    Server(cmd::server::ServerArgs),
    /// Run the supervisor that keeps one collector running and installs what the server offers.
    Supervisor(cmd::supervisor::SupervisorArgs),
    /// Inspect the agents the server knows about.
    Agents(cmd::agents::AgentsArgs),
    /// Release packages: keys, signatures, hashes and the server's catalog.
    Package(cmd::package::PackageArgs),
    /// Staged rollouts: canary, bake time, batches, pause, resume, abort.
    Rollout(cmd::rollout::RolloutArgs),
    /// Collector configs: signing, the server's config catalog and staged config rollouts.
    Config(cmd::config::ConfigArgs),
    /// Run the end-to-end demo on 127.0.0.1 (server, supervisors, staged rollouts).
    Demo(cmd::demo::DemoArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
