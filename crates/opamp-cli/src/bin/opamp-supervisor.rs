//! `opamp-supervisor`: the supervisor alone, for the hosts that run collectors.
//!
//! It takes the same arguments as `opamp supervisor` and behaves the same (signals, exit
//! codes, logs), but links none of the server, the store drivers or the operator tools: a
//! third of the `opamp` binary's code, so a third of the code pages an idle supervisor keeps
//! mapped (issue 24: 9.4 MiB resident instead of 13.5 MiB). See docs/benchmarks.md.
//!
//! Exit codes: 0 success, 1 operation failed, 2 usage error, 4 an I/O error.
#![forbid(unsafe_code)]

// The modules it shares with `opamp`; this binary uses part of each.
#[allow(dead_code)]
#[path = "../failure.rs"]
mod failure;
#[allow(dead_code)]
#[path = "../logging.rs"]
mod logging;
#[allow(dead_code)]
#[path = "../output.rs"]
mod output;
#[allow(dead_code)]
#[path = "../service.rs"]
mod service;

// The two subcommand modules of `opamp` that make up the supervisor (at the root, where the
// `super::` paths between them resolve as they do under `opamp`'s `cmd`).
#[path = "../cmd/convert_config.rs"]
mod convert_config;
#[path = "../cmd/supervisor.rs"]
mod supervisor;

use std::process::ExitCode;

use clap::Parser as _;

/// Keeps one OpenTelemetry Collector running and installs what the OpAMP server offers.
#[derive(Debug, clap::Parser)]
#[command(name = "opamp-supervisor", version)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,

    /// More log output; repeat for more (-v, -vv, -vvv). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(flatten)]
    supervisor: supervisor::SupervisorArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logging::init(cli.log_format, logging::BaseLevel::Service, cli.verbose) {
        output::note(format_args!(
            "error: cannot set up logging\n  caused by: {error}"
        ));
        return failure::Failure::Operation.exit_code();
    }
    match supervisor::run(&cli.supervisor) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::note(error.report().trim_end());
            error.failure().exit_code()
        }
    }
}
