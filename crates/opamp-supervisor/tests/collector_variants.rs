//! The test collector binary itself: variants, version reporting, health endpoint, crashes.

mod collector_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::{
    Behaviour, Variant, collector_bin, free_port, output_retrying, spawn_retrying, variant_in,
};
use opamp_test_collector::{EXIT_CODE_CRASH_LATER, EXIT_CODE_CRASH_ON_START, read_variant};

fn version_output(exe: &std::path::Path, extra: &[&str]) -> String {
    let out = output_retrying(Command::new(exe).args(extra).arg("--version"));
    assert!(out.status.success(), "--version failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8 version line")
        .trim()
        .to_owned()
}

/// Raw HTTP GET so this test does not depend on the supervisor's client.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls until the endpoint answers; the collector has no other readiness signal.
fn wait_for_answer(port: u16, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(answer) = http_get(port, "/") {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "health endpoint on {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(exe: &std::path::Path, args: &[&str]) -> Running {
    Running(spawn_retrying(
        Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ))
}

#[test]
fn variants_report_their_embedded_version_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = variant_in(dir.path(), "otelcol-1.0.0", &Variant::healthy("1.0.0"));
    let v2 = variant_in(dir.path(), "otelcol-2.0.0", &Variant::healthy("2.0.0"));
    assert_eq!(
        version_output(&v1, &[]),
        "opamp-test-collector version 1.0.0"
    );
    assert_eq!(
        version_output(&v2, &[]),
        "opamp-test-collector version 2.0.0"
    );
    assert_eq!(
        version_output(&v2, &["--set-version", "2.0.1"]),
        "opamp-test-collector version 2.0.1"
    );
    assert_ne!(std::fs::read(&v1).unwrap(), std::fs::read(&v2).unwrap());
    assert_eq!(read_variant(&v2).unwrap(), Some(Variant::healthy("2.0.0")));
    assert_eq!(read_variant(collector_bin()).unwrap(), None);
}

#[test]
fn health_endpoint_serves_version_config_and_turns_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("otel.yaml");
    let config_text = format!("extensions:\n  health_check:\n    endpoint: 127.0.0.1:{port}\n");
    std::fs::write(&config, &config_text).unwrap();
    let exe = variant_in(
        dir.path(),
        "otelcol",
        &Variant::healthy("3.1.4").with_behaviour(Behaviour {
            unhealthy_after_ms: Some(600),
            ..Behaviour::default()
        }),
    );
    let started = Instant::now();
    let _collector = spawn(&exe, &["--config", config.to_str().unwrap()]);
    let (status, body) = wait_for_answer(port, Duration::from_secs(10));
    if started.elapsed() < Duration::from_millis(500) {
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"Server available"}"#)
        );
    }
    assert_eq!(
        http_get(port, "/version").unwrap(),
        (200, r#"{"version":"3.1.4"}"#.into())
    );
    assert_eq!(http_get(port, "/config").unwrap(), (200, config_text));
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);
    // The collector's own clock decides when it turns unhealthy; poll for the change.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let answer = http_get(port, "/health").unwrap();
        if answer.0 != 200 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "unhealthy too early"
    );
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"status":"Server not available"}"#)
    );
}

#[test]
fn scripted_crashes_exit_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = variant_in(
        dir.path(),
        "crash-on-start",
        &Variant::healthy("1").with_behaviour(Behaviour {
            crash_on_start: true,
            ..Behaviour::default()
        }),
    );
    let port = free_port().to_string();
    let status = output_retrying(Command::new(&exe).args(["--health-port", &port])).status;
    assert_eq!(status.code(), Some(EXIT_CODE_CRASH_ON_START));

    let started = Instant::now();
    let status = output_retrying(Command::new(collector_bin()).args([
        "--health-port",
        &port,
        "--crash-after-ms",
        "300",
    ]))
    .status;
    assert_eq!(status.code(), Some(EXIT_CODE_CRASH_LATER));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let status = output_retrying(Command::new(collector_bin()).args(["--bogus-flag"])).status;
    assert_eq!(status.code(), Some(2));
}

#[test]
fn environment_overrides_the_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let exe = variant_in(dir.path(), "otelcol", &Variant::healthy("1.0.0"));
    let out = output_retrying(
        Command::new(&exe)
            .env("OPAMP_TEST_COLLECTOR_VERSION", "1.0.0-env")
            .arg("--version"),
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "opamp-test-collector version 1.0.0-env"
    );
}

#[test]
fn command_line_builds_variants_for_shell_demos() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("otelcol-4.0.0");
    let built = output_retrying(Command::new(collector_bin()).args([
        "--build-variant",
        out.to_str().unwrap(),
        "--set-version",
        "4.0.0",
        "--crash-on-start",
    ]));
    assert!(built.status.success(), "{built:?}");
    assert_eq!(
        version_output(&out, &[]),
        "opamp-test-collector version 4.0.0"
    );
    let ran = output_retrying(&mut Command::new(&out));
    assert_eq!(ran.status.code(), Some(EXIT_CODE_CRASH_ON_START));
    assert_eq!(
        read_variant(&out).unwrap().unwrap().behaviour,
        Behaviour {
            crash_on_start: true,
            ..Behaviour::default()
        }
    );
}
