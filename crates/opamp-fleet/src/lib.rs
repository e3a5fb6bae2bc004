#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod catalog;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod config_catalog;
#[cfg(feature = "server")]
mod enrollment;
mod error;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
pub mod store;

pub use opamp_rollout::{
    audit, conflicts, events, fleet as coordinator, rollout, selector, spec, time,
};

pub use audit::{Actor, AuditAction, AuditRecord};
#[cfg(feature = "server")]
pub use config::FleetServerConfig;
pub use conflicts::RolloutConflicts;
pub use error::FleetError;
pub use events::{Command, Event, RolloutStatus};
pub use opamp_rollout::{RolloutError, StringMap};
pub use rollout::{
    AgentPhase, AgentProgress, AgentSnapshot, FailureReason, Progress, Rollout, RolloutId,
    RolloutState, SkipReason, SkippedAgent, Wave,
};
pub use selector::{LabelRequirement, LabelSelector, Labels};
#[cfg(feature = "server")]
pub use server::{FleetServer, RunningFleetServer};
pub use spec::{BatchPlan, FailureBudget, RolloutSpec, TargetKind};
pub use time::Timestamp;
