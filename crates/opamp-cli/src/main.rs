//! The `opamp` command: runs the fleet server and the supervisor, signs and checks release
//! packages, drives rollouts, and runs the end-to-end demo.
//!
//! Exit codes: 0 success, 1 operation failed, 2 usage error, 3 verification refused
//! (signature, hash or policy), 4 cannot reach the server or an I/O error.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod collector_mode;
mod failure;
mod logging;
mod output;
mod progress;
mod service;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::failure::CommandError;

fn main() -> ExitCode {
    if let Some(code) = collector_mode::run_if_collector() {
        return code;
    }
    let cli = Cli::parse();
    let base = match cli.command {
        Command::Server(_) | Command::Supervisor(_) => logging::BaseLevel::Service,
        // The demo tells its own story on stdout; its embedded server logs only errors
        // unless -v asks for more.
        _ => logging::BaseLevel::Tool,
    };
    if let Err(error) = logging::init(cli.log_format, base, cli.verbose) {
        output::note(format_args!(
            "error: cannot set up logging\n  caused by: {error}"
        ));
        return failure::Failure::Operation.exit_code();
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::note(error.report().trim_end());
            error.failure().exit_code()
        }
    }
}

fn run(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Server(args) => cmd::server::run(&args),
        Command::Supervisor(args) => cmd::supervisor::run(&args),
        Command::Agents(args) => cmd::agents::run(&args),
        Command::Package(args) => cmd::package::run(args),
        Command::Rollout(args) => cmd::rollout::run(&args),
        Command::Config(args) => cmd::config::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
    }
}
