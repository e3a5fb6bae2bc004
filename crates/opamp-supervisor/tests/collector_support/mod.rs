//! Shared helpers for tests that run the real test collector.
//!
//! Locating the `opamp-test-collector` binary: `CARGO_BIN_EXE_*` only exists inside the crate
//! that owns a binary, and Cargo does not build a dev-dependency's binaries. So the first test
//! that needs it runs `cargo build -p opamp-test-collector --bin opamp-test-collector` (the same
//! cargo, target dir and profile as the test run, so it is a no-op when up to date) and takes
//! the executable path from cargo's JSON messages. `OPAMP_TEST_COLLECTOR_BIN` overrides this
//! (e.g. for running the test binaries without cargo).
#![allow(dead_code, unused_imports, unreachable_pub)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

pub use opamp_test_collector::{Behaviour, Variant, build_variant};

/// Path of the freshly built test collector.
pub fn collector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("OPAMP_TEST_COLLECTOR_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "opamp-test-collector",
                "--bin",
                "opamp-test-collector",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build for the test collector");
        assert!(
            output.status.success(),
            "building opamp-test-collector failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| msg["reason"] == "compiler-artifact")
            .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no opamp-test-collector executable")
    })
}

/// Builds a variant of the test collector into `dir/name`.
pub fn variant_in(dir: &Path, name: &str, variant: &Variant) -> PathBuf {
    let path = dir.join(name);
    build_variant(collector_bin(), &path, variant).expect("build collector variant");
    path
}

/// A loopback port that was free a moment ago. The collector binds it shortly after; another
/// process grabbing it in between is possible but rare, and shows up as a failed start.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// `http://127.0.0.1:PORT/` for a health port.
pub fn health_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

/// Whether a process with this pid still exists (zombies count as gone for our purposes only
/// after they are reaped, which the process manager does).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `command` to completion, retrying while the kernel reports the executable busy
/// (ETXTBSY): another test thread may have forked while a variant file was open for writing.
pub fn output_retrying(command: &mut Command) -> Output {
    retry_busy(|| command.output())
}

/// Spawns `command`, retrying on ETXTBSY like [`output_retrying`].
pub fn spawn_retrying(command: &mut Command) -> Child {
    retry_busy(|| command.spawn())
}

fn retry_busy<T>(mut run: impl FnMut() -> std::io::Result<T>) -> T {
    const ETXTBSY: i32 = 26;
    for _ in 0..100 {
        match run() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other.expect("run the test collector"),
        }
    }
    panic!("executable stayed busy (ETXTBSY)");
}

/// Whether `pid` runs: exists and is not a zombie (an orphan's zombie may wait for a reaper
/// that is not us).
pub fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}
