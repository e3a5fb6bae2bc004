//! The dashboard as an operator uses it: a real `opamp server` with three real supervisors
//! (test collectors), driven through Debian's Chromium by Playwright (`tests/dashboard/
//! dashboard.test.cjs`). Screenshots of every page land in `target/tmp/dashboard-screenshots/`.
//!
//! Needs `chromium` (or `OPAMP_CHROMIUM`) and the `playwright-core` npm package (found through
//! `OPAMP_INTEROP_NODE_PATH`, else `target/ci-tools/node_modules`); `.ci/run` installs both.
//! Without them the test is skipped with a message, unless `OPAMP_INTEROP_REQUIRED=1` or
//! `CI=true`, where it fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ServerProcess, SupervisorProcess, Workdir, launcher, sign_and_add_package, spawn_server,
};

const AGENTS: usize = 3;

/// Chromium and the playwright-core module, or why they are missing.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("OPAMP_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    // Set by .ci/run; a test reads nothing outside its crate by default.
    let node_path = std::env::var_os("OPAMP_INTEROP_NODE_PATH")
        .map(PathBuf::from)
        .ok_or("OPAMP_INTEROP_NODE_PATH is not set (the folder holding playwright-core)")?;
    if !node_path.join("playwright-core/package.json").is_file() {
        return Err(format!("no playwright-core in {}", node_path.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no node on PATH".to_owned());
    }
    Ok((chromium, node_path))
}

fn required() -> bool {
    std::env::var("OPAMP_INTEROP_REQUIRED").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Starts `opamp server --config server.toml`; returns it with its admin and agent URLs.
fn start_server(work: &Workdir) -> (ServerProcess, String, String) {
    work.write(
        "server.toml",
        b"listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nheartbeat_interval = \"2s\"\n\n\
          [admin]\nlisten = \"127.0.0.1:0\"\n\n\
          [[admin.operators]]\nname = \"alice\"\ntoken = \"alice-token\"\n\n\
          [[admin.operators]]\nname = \"viewer\"\ntoken = \"viewer-token\"\nread_only = true\n",
    );
    spawn_server(work, &["server", "--config", "server.toml"])
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `GET /metrics` of a supervisor's metrics endpoint, as text.
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The value of the sample line starting with `name` (labels included) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

fn start_supervisor(
    work: &Workdir,
    agents_listen: &str,
    initial: &str,
    n: usize,
    metrics_port: u16,
) -> SupervisorProcess {
    // Each supervisor swaps its executable in place: every one needs its own copy.
    let own = format!("{initial}-agent{n}");
    std::fs::copy(work.path(initial), work.path(&own)).unwrap();
    let health_port = free_port();
    // The first supervisor also serves its own metrics.
    let metrics = if n == 0 {
        format!("metrics_listen: 127.0.0.1:{}\n", metrics_port)
    } else {
        String::new()
    };
    let region = ["eu-west", "us-east", "ap-south"][n % 3];
    let yaml = format!(
        "server:\n  endpoint: {agents_listen}\nagent:\n  executable: '{}'\n  storage_dir: '{}'\n  \
         package_name: otelcol\n  args: [\"--health-port\", \"{health_port}\"]\n  labels:\n    \
         env: test\n    region: {region}\nhealth:\n  http_url: http://127.0.0.1:{health_port}/health\n  \
         liveness_window: 1s\n  start_timeout: 10s\n  check_interval: 300ms\ntrust:\n  keys:\n    \
         - file: '{}'\nheartbeat_interval: 2s\n{metrics}",
        work.path(&own).display(),
        work.path(&format!("storage-{n}")).display(),
        work.path("keys/release.pub").display(),
    );
    let config = format!("supervisor-{n}.yaml");
    work.write(&config, yaml.as_bytes());
    SupervisorProcess(
        Command::new(env!("CARGO_BIN_EXE_opamp"))
            .args(["supervisor", "--config", &config])
            .current_dir(work.root())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn an_operator_runs_rollouts_from_the_dashboard_in_a_real_browser() {
    let (chromium, node_path) = match browser_tools() {
        Ok(tools) => tools,
        Err(missing) if required() => panic!(
            "browser tests are required here (OPAMP_INTEROP_REQUIRED=1 or CI=true): {missing}"
        ),
        Err(missing) => {
            eprintln!(
                "SKIPPED dashboard browser test: {missing}. Install with `apt-get install \
                 chromium` and `npm install --prefix target/ci-tools playwright-core` (as \
                 .ci/run does)."
            );
            return;
        }
    };
    let work = Workdir::new();
    let (_server, admin, agents_listen) = start_server(&work);

    work.keygen("keys", &[]);
    let initial = launcher(&work, "1.0.0");
    let good = launcher(&work, "1.1.0");
    // 1.2.0 starts, then crashes: the canary turns unhealthy and the rollout must abort.
    let bad = "otelcol-1.2.0";
    let script = format!(
        "#!/bin/sh\nexec '{}' __test-collector --set-version 1.2.0 --crash-after-ms 600 \"$@\"\n",
        env!("CARGO_BIN_EXE_opamp")
    );
    let path = work.write(bad, script.as_bytes());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Good versions may be reverted to from anything up to 1.2.0 (an aborted rollout is a
    // downgrade for the agents it moved, which anti-rollback refuses without the release's
    // authorisation).
    let revertible = ["--allow-downgrade-from-at-most", "1.2.0"];
    sign_and_add_package(&work, &admin, "alice-token", &initial, "1.0.0", &revertible);
    sign_and_add_package(&work, &admin, "alice-token", &good, "1.1.0", &revertible);
    sign_and_add_package(&work, &admin, "alice-token", bad, "1.2.0", &[]);

    let metrics_port = free_port();
    let _supervisors: Vec<SupervisorProcess> = (0..AGENTS)
        .map(|n| start_supervisor(&work, &agents_listen, &initial, n, metrics_port))
        .collect();
    // The browser test starts once every agent is known, healthy, on 1.0.0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = work.opamp(&[
            "agents",
            "list",
            "--json",
            "--server",
            &admin,
            "--token",
            "viewer-token",
        ]);
        let ready = list.code == 0
            && serde_json::from_str::<serde_json::Value>(&list.stdout)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|agents| {
                    agents.len() == AGENTS
                        && agents.iter().all(|a| {
                            a["healthy"] == true && a["package_versions"]["otelcol"] == "1.0.0"
                        })
                });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents never settled:\n{}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/dashboard.test.cjs");
    let run = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &node_path)
        .env("OPAMP_CHROMIUM", &chromium)
        .env("OPAMP_DASHBOARD_URL", &admin)
        .env("OPAMP_DASHBOARD_AGENTS", AGENTS.to_string())
        .env("OPAMP_SCREENSHOTS", &screenshots)
        .env("OPAMP_USER_DATA_DIR", work.path("chromium-profile"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    eprintln!("{stdout}");
    // Every agent installed 1.1.0 in the good rollout: the first supervisor's own metrics
    // counted it, and the restarts that came with it.
    let metrics = scrape(metrics_port);
    assert!(
        sample(
            &metrics,
            "opamp_supervisor_installs_total{result=\"installed\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "opamp_supervisor_collector_starts_total").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "opamp_supervisor_install_duration_seconds_count{result=\"installed\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "opamp_supervisor_collector_up"),
        Some(1.0),
        "{metrics}"
    );
    for page in [
        "overview",
        "agents",
        "agent",
        "catalog",
        "rollouts",
        "rollout-completed",
        "rollout-rolled-back",
        "audit",
        "read-only",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).is_file(),
            "no screenshot of {page}"
        );
    }
}
