//! `opamp-supervisor --config supervisor.yaml`: runs the OpAMP supervisor until SIGINT or
//! SIGTERM. Logs go to stderr (`RUST_LOG` filters, default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opamp_supervisor::config::SupervisorConfig;

/// Runs an OpenTelemetry Collector under OpAMP management: health, effective config, and
/// safe upgrades, downgrades and rollbacks offered by the server.
#[derive(Debug, Parser)]
#[command(name = "opamp-supervisor", version)]
struct Args {
    /// The supervisor configuration file (YAML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match SupervisorConfig::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("opamp-supervisor: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opamp-supervisor: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(opamp_supervisor::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("opamp-supervisor: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the supervisor");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
