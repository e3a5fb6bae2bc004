//! `opamp agents show` and `opamp agents restart` against a real `opamp server` and a real
//! `opamp supervisor` (with its test collector), and the heartbeat interval the server offers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SupervisorProcess, Workdir, launcher, spawn_server};

/// The collector's config file, reported by the supervisor as its effective config.
const COLLECTOR_YAML: &str = "receivers:\n  filelog:\n    include: ['/var/log/app.log']\n";

/// The supervisor's own heartbeat interval: far longer than the test, so heartbeats that
/// arrive every second can only come from the interval the server offered.
const SUPERVISOR_HEARTBEAT: &str = "60s";

fn collector_pid(work: &Workdir) -> Option<u32> {
    let text = std::fs::read_to_string(work.path("storage/collector.pid")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn agents_show_restart_and_the_offered_heartbeat_with_a_real_supervisor() {
    let work = Workdir::new();
    let server_toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = '{}'\nheartbeat_interval = \"1s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"secret\"\n\n\
         [[admin.operators]]\nname = \"viewer\"\ntoken = \"look-only\"\nread_only = true\n",
        work.path("data").display()
    );
    work.write("server.toml", server_toml.as_bytes());
    let (_server, admin, agents_url) = spawn_server(&work, &["server", "--config", "server.toml"]);
    let admin_flags = ["--server", admin.as_str(), "--token", "secret"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(admin_flags.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let opamp = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        work.opamp(&args)
    };

    work.keygen("keys", &[]);
    let collector = launcher(&work, "1.0.0");
    work.write("collector.yaml", COLLECTOR_YAML.as_bytes());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_port = listener.local_addr().unwrap().port();
    drop(listener);
    let yaml = format!(
        "server:\n  endpoint: {agents_url}\nagent:\n  executable: '{}'\n  storage_dir: '{}'\n  \
         package_name: otelcol\n  args: [\"--health-port\", \"{health_port}\"]\n  \
         config_files: ['{}']\n  labels:\n    env: test\n\
         health:\n  http_url: http://127.0.0.1:{health_port}/health\n  liveness_window: 1s\n  \
         start_timeout: 10s\n  check_interval: 300ms\ntrust:\n  keys:\n    - file: '{}'\n\
         heartbeat_interval: {SUPERVISOR_HEARTBEAT}\n",
        work.path(&collector).display(),
        work.path("storage").display(),
        work.path("collector.yaml").display(),
        work.path("keys/release.pub").display(),
    );
    work.write("supervisor.yaml", yaml.as_bytes());
    let supervisor = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["supervisor", "--config", "supervisor.yaml"])
        .current_dir(work.root())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _supervisor = SupervisorProcess(supervisor);

    // The agent appears, connected and healthy, with its effective config and health.
    let uid = wait_for("the agent's details", Duration::from_secs(60), || {
        let list = opamp(with(&["agents", "list", "--json"]));
        let agents: serde_json::Value = serde_json::from_str(&list.stdout).ok()?;
        let uid = agents[0]["uid"].as_str()?.to_owned();
        let show = opamp(with(&["agents", "show", &uid, "--json"]));
        let view: serde_json::Value = serde_json::from_str(&show.stdout).ok()?;
        let details = &view["details"];
        let ready = view["connected"] == true
            && details["health"]["healthy"] == true
            && details["effective_config"].is_object()
            && details["package_statuses"]["otelcol"].is_object();
        ready.then_some(uid)
    });
    let show = opamp(with(&["agents", "show", &uid, "--json"])).expect_code(0);
    let view: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let details = &view["details"];
    let config_path = work.path("collector.yaml").display().to_string();
    // The supervisor reports the file re-serialised with secrets redacted: same content,
    // its own YAML layout.
    let body = details["effective_config"]["files"][&config_path]["body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        body.contains("filelog:") && body.contains("/var/log/app.log"),
        "{view:#}"
    );
    let hash = details["effective_config"]["hash"]
        .as_str()
        .unwrap_or_default();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{view:#}"
    );
    assert_eq!(details["connection"]["transport"], "websocket", "{view:#}");
    assert!(
        details["connection"]["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{view:#}"
    );
    for time in [
        &view["last_seen"],
        &details["connection"]["connected_since"],
    ] {
        assert!(
            time.as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{view:#}"
        );
    }
    assert_eq!(
        details["package_statuses"]["otelcol"]["agent_has_version"], "1.0.0",
        "{view:#}"
    );
    assert_eq!(
        details["non_identifying_attributes"]["env"], "test",
        "{view:#}"
    );
    let text = opamp(with(&["agents", "show", &uid])).expect_code(0);
    for expected in [
        "health        healthy",
        "connected     yes, websocket from 127.0.0.1:",
        "Effective config",
        &format!("  sha256 {hash}"),
        "    - /var/log/app.log",
        "  agent: healthy",
    ] {
        assert!(
            text.stdout.contains(expected),
            "{expected:?} in\n{}",
            text.stdout
        );
    }
    let unknown = opamp(with(&[
        "agents",
        "show",
        "0193a5f0-6c2e-7d41-9a8b-2f1e0c3d4b5a",
    ]))
    .expect_code(1);
    assert!(unknown.stderr.contains("404"), "{}", unknown.stderr);

    // The supervisor adopts the 1 s heartbeat the server offers instead of its own 60 s: with
    // nothing else to report, LAST SEEN still moves, every second heartbeat (2 s).
    let mut seen = Vec::new();
    wait_for("three moves of LAST SEEN", Duration::from_secs(20), || {
        let show = opamp(with(&["agents", "show", &uid, "--json"]));
        let view: serde_json::Value = serde_json::from_str(&show.stdout).ok()?;
        let last_seen = view["last_seen"].as_str()?.to_owned();
        if seen.last() != Some(&last_seen) {
            seen.push(last_seen);
        }
        // The first value may predate the window; three moves after it are heartbeats.
        (seen.len() >= 4).then(String::new)
    });

    // A read-only operator may not restart anything.
    let refused = work
        .opamp(&[
            "agents",
            "restart",
            "--selector",
            "env=test",
            "--server",
            &admin,
            "--token",
            "look-only",
        ])
        .expect_code(1);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    let nobody = opamp(with(&["agents", "restart", "--selector", "env=none"])).expect_code(1);
    assert!(
        nobody.stderr.contains("422")
            && nobody
                .stderr
                .contains("no connected agent matching `env=none`"),
        "{}",
        nobody.stderr
    );

    // Restart: the supervisor stops its collector and starts a new one.
    let before = collector_pid(&work).unwrap();
    let restarted = opamp(with(&[
        "agents",
        "restart",
        "--selector",
        "env=test",
        "--json",
    ]))
    .expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&restarted.stdout).unwrap();
    assert_eq!(report["restarted"], serde_json::json!([uid]), "{report}");
    wait_for("a new collector process", Duration::from_secs(30), || {
        let pid = collector_pid(&work)?;
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        (pid != before && alive).then(String::new)
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{before}")).exists()
            || std::fs::read_to_string(format!("/proc/{before}/stat"))
                .is_ok_and(|stat| stat.contains(") Z ")),
        "the old collector {before} still runs"
    );

    // The audit log names the operator, the selector and the agent.
    let audit = opamp(with(&["rollout", "audit", "--json"])).expect_code(0);
    let records: serde_json::Value = serde_json::from_str(&audit.stdout).unwrap();
    let restart = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"]["action"]["action"] == "restart_sent")
        .unwrap_or_else(|| panic!("no restart_sent record in {records:#}"));
    assert_eq!(restart["record"]["actor"]["operator"], "admin", "{restart}");
    assert_eq!(
        restart["record"]["action"]["selector"], "env=test",
        "{restart}"
    );
    assert_eq!(
        restart["record"]["action"]["agents"],
        serde_json::json!([uid]),
        "{restart}"
    );
}
