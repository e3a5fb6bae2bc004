#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod conflicts;
mod error;
pub mod events;
mod failure;
pub mod fleet;
mod id;
pub mod rollout;
pub mod selector;
pub mod spec;
pub mod store;
pub mod string_map;
pub mod time;

pub use agent::AgentRecord;
pub use audit::{Actor, AuditAction, AuditRecord};
pub use conflicts::RolloutConflicts;
pub use error::RolloutError;
pub use events::{Command, Event, RolloutStatus};
pub use fleet::{
    AgentReport, ConfigReport, Fleet, FleetSettings, Operation, Output, PackageReport, RolloutStep,
};
pub use rollout::{
    AgentPhase, AgentProgress, AgentSnapshot, FailureReason, Progress, Rollout, RolloutId,
    RolloutState, SkipReason, SkippedAgent, Wave,
};
pub use selector::{LabelRequirement, LabelSelector, Labels};
pub use spec::{BatchPlan, FailureBudget, RolloutSpec, TargetKind};
pub use store::{MemoryStore, MemoryStoreError, RolloutStore};
pub use string_map::StringMap;
pub use time::Timestamp;
