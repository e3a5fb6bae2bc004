//! The `opamp` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure OpAMP fleet upgrades for OpenTelemetry Collectors.
#[derive(Parser)]
#[command(name = "opamp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo on 127.0.0.1 (server, supervisors, staged rollouts).
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            println!(
                "opamp demo: not yet. The protocol libraries are landing first; the demo \
                 arrives with the supervisor and fleet server (see README.md, 'Status')."
            );
            ExitCode::SUCCESS
        }
    }
}
