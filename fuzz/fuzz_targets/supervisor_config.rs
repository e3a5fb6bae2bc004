//! The supervisor's YAML config loader on arbitrary text: never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use opamp_supervisor::config::SupervisorConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = SupervisorConfig::from_yaml_str(text, Path::new("/fuzz/supervisor.yaml")) {
        // Error rendering (line lookup, reason text) must not panic either.
        let _ = error.to_string();
        let _ = error.line();
    }
});
