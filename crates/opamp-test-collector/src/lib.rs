#![doc = include_str!("../README.md")]
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
