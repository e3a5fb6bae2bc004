//! OpAMP supervisor for an OpenTelemetry Collector.
//!
//! The supervisor owns one collector installation on a host. It runs the collector as a child
//! process, watches its health, reports state to the OpAMP server, and installs offered packages
//! (upgrades and authorised downgrades) with a journaled, crash-safe swap and automatic rollback.
//!
//! Runtime building blocks:
//! - [`config`]: the `supervisor.yaml` file, parsed strictly with file/line errors.
//! - [`lock`]: exclusive ownership of a storage directory.
//! - [`process`]: start, stop (SIGTERM then SIGKILL), and restart the collector child.
//! - [`health`]: health gate after a start and periodic `ComponentHealth` reporting.
//!
//! Install pipeline:
//! - [`download`]: resumable (Range/If-Range), size-capped, hashing HTTP downloads.
//! - [`archive`]: raw executable or `.tar.gz` release, extracted with escape and bomb checks.
//! - [`journal`]: checksummed, atomically replaced install journal and installed state.
//! - [`install`]: the journaled install, health gate, rollback and start-up recovery.
//! - [`storage`]: layout of `storage_dir` and durable-write helpers.
//!
//! The agent: [`run`] (module [`agent`]) connects to the OpAMP server and drives all of the
//! above; the `opamp-supervisor` binary and `opamp supervisor` call it.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod decide;
pub mod health;
pub mod lock;
pub mod metrics;
pub mod process;

// Install pipeline.
pub mod archive;
pub mod download;
pub mod install;
pub mod journal;
pub mod storage;

pub use agent::{Error, reset_rollback_floor, run};
