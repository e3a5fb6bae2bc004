//! A config rollout end to end: `opamp server`, three real `opamp supervisor` processes (remote
//! config on top of a local base) each running a test collector, and the operator commands.
//! A good config completes; a config the collector refuses (`fail_with:`) fails the canary, the
//! rollout ends rolled back, and every host keeps the good config. Hosts that require signed
//! configs apply one signed by `opamp config sign` (relayed by the server as `opamp.signature`)
//! and refuse an unsigned one.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{SupervisorProcess, Workdir, launcher, operator, spawn_supervisor, start_server};

const HOSTS: usize = 3;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts host `index`: a supervisor accepting remote config on top of `base.yaml`, with
/// `extra` lines under `remote_config`.
fn start_host(
    work: &Workdir,
    agents_listen: &str,
    collector: &str,
    index: usize,
    extra: &str,
) -> SupervisorProcess {
    let port = free_port();
    let yaml = format!(
        "server:\n  endpoint: {agents_listen}\nagent:\n  executable: '{}'\n  storage_dir: '{}'\n  \
         package_name: otelcol\n  args: [\"--health-port\", \"{port}\"]\n  config_files: ['{}']\n  \
         labels:\n    env: test\nhealth:\n  http_url: http://127.0.0.1:{port}/health\n  \
         liveness_window: 1s\n  start_timeout: 10s\n  check_interval: 300ms\ntrust:\n  keys:\n    \
         - file: '{}'\nheartbeat_interval: 2s\nremote_config:\n  mode: remote_on_top\n{extra}",
        work.path(collector).display(),
        work.path(&format!("storage-{index}")).display(),
        work.path("base.yaml").display(),
        work.path("keys/release.pub").display(),
    );
    spawn_supervisor(work, index, &yaml)
}

/// Polls `check` every 200 ms for at most a minute.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_config_is_rolled_back_at_the_canary_and_every_host_keeps_the_good_one() {
    let work = Workdir::new();
    let (_server, admin, agents_listen) = start_server(&work, "secret", &[]);
    let run = |args: &[&str]| operator(&work, &admin, "secret", args);
    work.keygen("keys", &[]);
    let collector = launcher(&work, "1.0.0");
    work.write("base.yaml", b"receivers:\n  otlp: {}\n");
    work.write(
        "good.yaml",
        b"exporters:\n  debug:\n    verbosity: good-config-marker\n",
    );
    work.write(
        "bad.yaml",
        b"exporters:\n  nowhere: {}\nfail_with: 'unknown exporter type \"nowhere\"'\n",
    );
    let _hosts: Vec<SupervisorProcess> = (0..HOSTS)
        .map(|i| start_host(&work, &agents_listen, &collector, i, ""))
        .collect();
    wait_for("every host connected and healthy", || {
        let list = run(&["agents", "list", "--selector", "env=test"]);
        list.code == 0 && list.stdout.matches("healthy  yes").count() == HOSTS
    });

    run(&["config", "add", "collector", "--version", "1", "good.yaml"]).expect_code(0);
    run(&["config", "add", "collector", "--version", "2", "bad.yaml"]).expect_code(0);
    let knobs = [
        "--selector",
        "env=test",
        "--canary-share",
        "0.3",
        "--bake-time",
        "1s",
        "--health-timeout",
        "30s",
        "--install-timeout",
        "60s",
        "--watch",
    ];
    let mut good = vec!["config", "rollout", "start", "collector", "1"];
    good.extend_from_slice(&knobs);
    let completed = run(&good).expect_code(0);
    assert!(
        completed.stdout.contains("status completed"),
        "{}",
        completed.stdout
    );
    let running = |i: usize| {
        std::fs::read_to_string(work.path(&format!("storage-{i}/collector-config.yaml")))
            .unwrap_or_default()
    };
    for i in 0..HOSTS {
        let text = running(i);
        assert!(
            text.contains("good-config-marker") && text.contains("otlp"),
            "{text}"
        );
    }

    let mut bad = vec!["config", "rollout", "start", "collector", "2"];
    bad.extend_from_slice(&knobs);
    bad.push("--json");
    let rolled_back = run(&bad).expect_code(1);
    let view: serde_json::Value = serde_json::from_str(&rolled_back.stdout).unwrap();
    assert_eq!(view["status"], "rolled_back", "{view}");
    let failed: Vec<&serde_json::Value> = view["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phase"]["phase"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "only the canary failed: {view}");
    let reason = failed[0]["phase"]["reason"].to_string();
    assert!(
        reason.contains("unknown exporter type"),
        "the collector's line: {reason}"
    );
    assert_eq!(
        view["progress"]["pending"],
        HOSTS - 1,
        "no other host was offered it"
    );
    // Every host runs the good config (the canary's supervisor put it back).
    wait_for("every host on the good config", || {
        (0..HOSTS).all(|i| running(i).contains("good-config-marker"))
    });
    let audit = run(&["rollout", "audit", view["id"].as_str().unwrap()]).expect_code(0);
    assert!(audit.stdout.contains("agent_failed"), "{}", audit.stdout);
    assert!(audit.stdout.contains("rolled_back"), "{}", audit.stdout);
}

#[test]
fn hosts_that_require_signed_configs_apply_a_signed_one_and_refuse_an_unsigned_one() {
    let work = Workdir::new();
    let (_server, admin, agents_listen) = start_server(&work, "secret", &[]);
    let run = |args: &[&str]| operator(&work, &admin, "secret", args);
    work.keygen("keys", &[]);
    let collector = launcher(&work, "1.0.0");
    work.write("base.yaml", b"receivers:\n  otlp: {}\n");
    work.write(
        "signed.yaml",
        b"exporters:\n  debug:\n    verbosity: signed-marker\n",
    );
    work.write(
        "unsigned.yaml",
        b"exporters:\n  debug:\n    verbosity: unsigned-marker\n",
    );
    let hosts = 2;
    let _hosts: Vec<SupervisorProcess> = (0..hosts)
        .map(|i| {
            start_host(
                &work,
                &agents_listen,
                &collector,
                i,
                "  require_signed: true\n",
            )
        })
        .collect();
    wait_for("every host connected and healthy", || {
        let list = run(&["agents", "list", "--selector", "env=test"]);
        list.code == 0 && list.stdout.matches("healthy  yes").count() == hosts
    });

    // Release side signs; the server only relays the signature as `opamp.signature`.
    work.opamp(&[
        "config",
        "sign",
        "signed.yaml",
        "--key",
        "keys/release.key",
        "--out",
        "signed.sig",
    ])
    .expect_code(0);
    run(&[
        "config",
        "add",
        "collector",
        "--version",
        "1",
        "signed.yaml",
        "--signature",
        "signed.sig",
    ])
    .expect_code(0);
    run(&[
        "config",
        "add",
        "collector",
        "--version",
        "2",
        "unsigned.yaml",
    ])
    .expect_code(0);
    let knobs = [
        "--selector",
        "env=test",
        "--canary-share",
        "0.5",
        "--bake-time",
        "1s",
        "--health-timeout",
        "30s",
        "--install-timeout",
        "60s",
        "--watch",
        "--json",
    ];
    let mut signed = vec!["config", "rollout", "start", "collector", "1"];
    signed.extend_from_slice(&knobs);
    let view: serde_json::Value =
        serde_json::from_str(&run(&signed).expect_code(0).stdout).unwrap();
    assert_eq!(view["status"], "completed", "{view}");
    let running = |i: usize| {
        std::fs::read_to_string(work.path(&format!("storage-{i}/collector-config.yaml")))
            .unwrap_or_default()
    };
    assert!((0..hosts).all(|i| running(i).contains("signed-marker")));

    let mut unsigned = vec!["config", "rollout", "start", "collector", "2"];
    unsigned.extend_from_slice(&knobs);
    let view: serde_json::Value =
        serde_json::from_str(&run(&unsigned).expect_code(1).stdout).unwrap();
    assert_eq!(view["status"], "rolled_back", "{view}");
    let reason = view["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["phase"]["phase"] == "failed")
        .map(|a| a["phase"]["reason"].to_string())
        .unwrap_or_default();
    assert!(
        reason.contains("not signed"),
        "the supervisor's refusal: {reason}"
    );
    assert!((0..hosts).all(|i| running(i).contains("signed-marker")));
}
