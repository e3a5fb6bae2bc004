//! `opamp demo`: the end-to-end story on 127.0.0.1.
//!
//! Release side (key, signed packages), a real fleet server on loopback ports with SQLite in a
//! temporary directory, N real `opamp supervisor` processes each running a test collector, and
//! package rollouts and one config rollout driven through the admin API exactly as
//! `opamp rollout start` and `opamp config rollout start` would.

mod agents;
mod release;
mod scenario;
mod summary;

use std::time::Duration;

use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example:
  cargo run --release --bin opamp -- demo
  opamp demo --agents 50 --fast

Creates a release key, signs three collector versions, starts a server and N supervisors on
127.0.0.1, rolls out a good version, a bad one (canary fails, rollout aborts) and a signed
downgrade (after showing that an unauthorised downgrade and a tampered file are refused),
then a collector config the collector refuses (rolled back at the canary).
Exits 0 only if every step ends as expected. Files and logs live in a temporary directory,
kept (and printed) when a step fails.";

/// Arguments of `opamp demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct DemoArgs {
    /// Number of supervisors (each runs a real test-collector process).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub(crate) agents: u32,

    /// Short bake times and timeouts, for CI.
    #[arg(long)]
    pub(crate) fast: bool,
}

/// The demo's clocks: rollout knobs, supervisor health settings and how long each step may
/// take before it counts as failed.
///
/// The health check interval stays well below the liveness window: the supervisor reports
/// `Installed` when its health gate passes, together with the last health its monitor saw,
/// and the server fails an agent that reports unhealthy after installing. A monitor that has
/// not looked since the swap would still say "unhealthy" (seen while the collector was
/// stopped), which once failed a default-mode run with a 2 s interval and a 2 s window.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// Bake time of every wave.
    pub(crate) bake: Duration,
    /// A started collector must stay alive this long to count as healthy.
    pub(crate) liveness_window: Duration,
    /// Longest wait for a started collector to become healthy.
    pub(crate) start_timeout: Duration,
    /// Time between health checks of a running collector.
    pub(crate) health_check_interval: Duration,
    /// Supervisor heartbeat.
    pub(crate) heartbeat: Duration,
    /// Rollout install timeout.
    pub(crate) install_timeout: Duration,
    /// Rollout health timeout.
    pub(crate) health_timeout: Duration,
    /// Longest wait for one step (all agents up, one rollout, the fleet settling).
    pub(crate) step_timeout: Duration,
}

impl Timing {
    fn new(fast: bool, agents: u32) -> Self {
        // Supervisors start and install in parallel; on 2 cores their start-up grows with N.
        let per_agent = Duration::from_millis(if fast { 500 } else { 1000 }) * agents;
        if fast {
            Timing {
                bake: Duration::from_secs(2),
                liveness_window: Duration::from_millis(1500),
                start_timeout: Duration::from_secs(15),
                health_check_interval: Duration::from_millis(500),
                heartbeat: Duration::from_secs(5),
                install_timeout: Duration::from_secs(60),
                health_timeout: Duration::from_secs(30),
                step_timeout: Duration::from_secs(60) + per_agent,
            }
        } else {
            Timing {
                bake: Duration::from_secs(10),
                liveness_window: Duration::from_secs(3),
                start_timeout: Duration::from_secs(30),
                health_check_interval: Duration::from_secs(1),
                heartbeat: Duration::from_secs(10),
                install_timeout: Duration::from_secs(120),
                health_timeout: Duration::from_secs(60),
                step_timeout: Duration::from_secs(120) + per_agent,
            }
        }
    }
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "demo requested");
    let timing = Timing::new(args.fast, args.agents);
    crate::cmd::runtime()?.block_on(scenario::run(args.agents, timing))
}
