#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod agent;
pub mod components;
pub mod config;
pub mod decide;
pub mod health;
pub mod lock;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod process;
pub mod remote_config;
pub mod report;

// Install pipeline.
pub mod archive;
pub mod download;
pub mod install;
pub mod journal;
pub mod storage;

pub use agent::{Error, reset_rollback_floor, run};
