//! OpAMP fleet server: the staged rollout engine, the fleet store, and the server that drives
//! them over OpAMP.
//!
//! - [`Rollout`] is a sans-IO state machine (no IO, no clock, no async runtime): plan it from a
//!   fleet snapshot, feed it [`Event`]s with the current time, carry out the [`Command`]s it
//!   returns, and wake it at [`Rollout::poll_timeout`]. See the [`rollout`] module for the rules.
//! - [`RolloutRegistry`] refuses a rollout that would compete with an active one.
//! - [`store::FleetStore`] persists rollouts (snapshot plus event log), the agent registry, the
//!   package catalog and the audit log; [`store::SqliteStore`] is the embedded default.
//!
//! - [`FleetServer::start`] (module [`server`]) runs it all from a [`FleetServerConfig`]
//!   (module [`config`], TOML): the OpAMP listener and package download route of
//!   `opamp-transport`, a rollout driver task that keeps the agent registry, feeds agent
//!   reports to the active rollouts, persists each step and sends the resulting offers, the
//!   [`catalog::Catalog`] of package files, the admin API (module [`admin`], with the typed
//!   [`admin::AdminClient`]) and Prometheus [`metrics`].
//!
//! Tests drive the engine with a simulated fleet (`tests/simulated_fleet.rs`) and the server
//! with real agents on 127.0.0.1 (`tests/server_*.rs`).
//!
//! # Wiring to OpAMP
//! How a server turns `AgentToServer` messages into [`Event`]s for every active rollout of the
//! package (events about agents outside a rollout are ignored, so broadcasting is fine):
//! - `PackageStatuses`: a package status `Installed` with `agent_has_version` gives
//!   [`Event::AgentInstalled`]; `InstallFailed` gives [`Event::AgentInstallFailed`] with its
//!   `error_message`. Feed these before the health of the same message.
//! - `ComponentHealth.healthy` gives [`Event::AgentHealth`] when it changes.
//! - Connection open and close (or a missed poll deadline over HTTP) give
//!   [`Event::AgentConnected`] and [`Event::AgentDisconnected`].
//! - [`Command::Offer`] and [`Command::Revert`] set the version the server puts in that
//!   agent's `PackagesAvailable`; after a restart rebuild those from
//!   [`Rollout::desired_version`].
//! - Persist every step with [`store::apply`] before acting on its commands.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod config;
mod error;
pub mod events;
pub mod metrics;
pub mod registry;
pub mod rollout;
pub mod selector;
pub mod server;
pub mod spec;
pub mod store;
pub mod time;

pub use audit::{Actor, AuditAction, AuditRecord};
pub use config::FleetServerConfig;
pub use error::FleetError;
pub use events::{Command, Event, RolloutStatus};
pub use registry::RolloutRegistry;
pub use rollout::{
    AgentPhase, AgentProgress, AgentSnapshot, FailureReason, Progress, Rollout, RolloutId,
    RolloutState, SkipReason, SkippedAgent, Wave,
};
pub use selector::{LabelRequirement, LabelSelector, Labels};
pub use server::{FleetServer, RunningFleetServer};
pub use spec::{BatchPlan, FailureBudget, RolloutSpec};
pub use time::Timestamp;
