//! `opamp demo`: the end-to-end story on 127.0.0.1.

use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  cargo run --release --bin opamp -- demo
  opamp demo --agents 50 --fast

Creates a release key, signs three collector versions, starts a server and N supervisors on
127.0.0.1, rolls out a good version, a bad one (canary fails, rollout aborts) and a signed
downgrade. Exits 0 only if every step ends as expected.";

/// Arguments of `opamp demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct DemoArgs {
    /// Number of supervisors (each runs a real test-collector process).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) agents: u32,

    /// Short bake times and timeouts, for CI.
    #[arg(long)]
    pub(crate) fast: bool,
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "demo requested");
    crate::output::line(
        "opamp demo: not yet. The protocol libraries are landing first; the demo \
         arrives with the supervisor and fleet server (see README.md, 'Status').",
    )
}
