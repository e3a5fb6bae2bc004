//! Shared pieces of the benchmarks (see `benches/benches/`) and the load tools (`src/bin/`):
//! typical OpAMP messages built the way the agent and the server build them, and a CPU-time
//! measurement for criterion; the load tools' simulated agents, child processes,
//! PostgreSQL database and timed rollout.

pub mod bench_db;
pub mod child;
pub mod cpu_time;
pub mod dashboard_probe;
pub mod messages;
pub mod mux_agent;
pub mod procfs;
pub mod rollout_run;
pub mod sim_agent;
pub mod tls_fixture;
