//! A stand-in OpenTelemetry Collector for tests and demos.
//!
//! The `opamp-test-collector` binary serves a health endpoint like the collector's
//! `health_check` extension, prints its version, reads a `--config` file, and can be scripted
//! to crash on start, crash later, turn unhealthy, or ignore SIGTERM, so every supervisor failure
//! path runs against a real process.
//!
//! Different "builds" for a demo need no compiler: [`build_variant`] copies the binary and
//! appends a trailer naming a version and a behaviour, which the copy reads at start-up. From a
//! shell: `opamp-test-collector --build-variant ./otelcol-2.0.0 --set-version 2.0.0
//! [--crash-on-start | --crash-after-ms N | --unhealthy-after-ms N | --hang-on-sigterm]`.
//!
//! ```no_run
//! use opamp_test_collector::{build_variant, read_variant, Variant};
//! let collector = std::path::Path::new("target/debug/opamp-test-collector");
//! let v2 = std::path::Path::new("/tmp/otelcol-2.0.0");
//! build_variant(collector, v2, &Variant::healthy("2.0.0"))?;
//! assert_eq!(read_variant(v2)?.map(|v| v.version), Some("2.0.0".to_owned()));
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod health_server;
pub mod run;
pub mod settings;
pub mod variant;

pub use settings::{Command, Settings, UsageError, resolve};
pub use variant::{
    Behaviour, EXIT_CODE_CRASH_LATER, EXIT_CODE_CRASH_ON_START, Variant, build_variant,
    read_variant,
};
