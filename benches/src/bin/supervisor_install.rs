//! Supervisor cost per install (issue 24): N real supervisor processes (the lean
//! `opamp-supervisor` binary; `--supervisor-bin target/release/opamp` runs `opamp supervisor`
//! instead), each keeping a
//! test collector alive, connected to a fleet server in this process; one rollout of a signed
//! package (1 MiB by default) to all of them in a single wave, timed to the end.
//!
//! Measured per supervisor from `/proc`: RSS when idle, CPU per second when idle, CPU spent on
//! the install (download, hash, signature, stage, swap, health gate; the idle rate over the same
//! time is subtracted), and the time from the offer (the rollout's start) to the new collector
//! process's start (its `/proc/<pid>/stat` start time, 10 ms resolution). The server's CPU is
//! not counted: it runs in this process. In the same run, `openssl dgst -sha256` hashing the
//! package gives a floor for the part of the install that must touch every byte.
//!
//! ```text
//! cargo build --release --bin opamp --bin opamp-supervisor -p opamp-cli
//! cargo run --release -p opamp-benches --bin supervisor_install -- --supervisors 100
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use opamp_benches::procfs;
use opamp_fleet::admin::{AdminClient, RolloutRequest};
use opamp_fleet::{BatchPlan, FailureBudget, FleetServer, FleetServerConfig, RolloutStatus};
use opamp_verify::{ContentHash, ReleaseSigner, Statement};

const TOKEN: &str = "supervisor-install-bench-token";
const PACKAGE: &str = "otelcol";
const LABEL: (&str, &str) = ("bench", "supervisor-install");

#[derive(Parser, Debug)]
#[command(about = "Per-install cost of real opamp supervisors on loopback")]
struct Args {
    /// Number of supervisors.
    #[arg(long, default_value_t = 20)]
    supervisors: usize,
    /// Size of the package, KiB.
    #[arg(long, default_value_t = 1024)]
    package_kib: usize,
    /// The `opamp` binary, whose test collector the collectors run (default: the release build
    /// beside this tool).
    #[arg(long)]
    opamp: Option<PathBuf>,
    /// The supervisor binary: `opamp-supervisor`, or `opamp` to run `opamp supervisor`
    /// (default: `opamp-supervisor` beside this tool).
    #[arg(long)]
    supervisor_bin: Option<PathBuf>,
    /// How long to watch the idle fleet before the rollout, seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// The supervisors' health check interval of a running collector, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    health_interval_ms: u64,
    /// How long a started collector must stay alive to count as healthy, milliseconds.
    #[arg(long, default_value_t = 1000)]
    liveness_ms: u64,
    /// Supervisor heartbeat, seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Hard limit for each phase, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Keep the work directory (supervisor logs) after the run.
    #[arg(long)]
    keep: bool,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let opamp = args
        .opamp
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("opamp"));
    assert!(
        opamp.is_file(),
        "{} not found: build it with cargo build --release --bin opamp, or pass --opamp",
        opamp.display()
    );
    let supervisor_bin = args.supervisor_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .with_file_name("opamp-supervisor")
    });
    assert!(
        supervisor_bin.is_file(),
        "{} not found: build it with cargo build --release --bin opamp-supervisor, or pass \
         --supervisor-bin",
        supervisor_bin.display()
    );
    let work = tempfile::Builder::new()
        .prefix("supervisor-install-")
        .tempdir()
        .unwrap();
    let dir = work.path();
    let release = Release::prepare(dir, &opamp, args.package_kib * 1024);

    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = FleetServerConfig::new(listen, dir.join("server"), TOKEN);
    config.admin.listen = listen;
    config.heartbeat_interval = Some(Duration::from_secs(args.heartbeat_secs));
    let server = FleetServer::start(config).await.unwrap();
    let admin = AdminClient::new(&format!("http://{}", server.admin_addr()), TOKEN).unwrap();
    admin
        .add_package(&release.target, PACKAGE, "2.0.0", &release.signature)
        .await
        .unwrap();
    let endpoint = format!("ws://{}/v1/opamp", server.opamp_addr());

    let mut fleet = Fleet::default();
    let started = Instant::now();
    for index in 0..args.supervisors {
        fleet.start(&supervisor_bin, dir, index, &endpoint, &release, &args);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    wait_versions(&admin, &mut fleet, args.supervisors, "1.0.0", deadline).await;
    println!(
        "{} supervisors up, 1.0.0 healthy, in {:.1} s",
        args.supervisors,
        started.elapsed().as_secs_f64()
    );

    // Idle: a settling pause, then CPU over the idle window and RSS at its end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_from = fleet.cpu();
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_window = idle_started.elapsed();
    let idle_cpu: Vec<Duration> = fleet.cpu_since(&idle_from);
    let idle_rss = fleet.rss_kib();
    let collector_rss = fleet.collector_rss_kib();

    // The rollout: one wave of everyone, no bake.
    let before = fleet.cpu();
    let offered_at = procfs::since_boot();
    let rollout_started = Instant::now();
    let mut request = RolloutRequest::new(PACKAGE, "2.0.0");
    request.selector = format!("{}={}", LABEL.0, LABEL.1);
    request.canary_share = Some(1.0);
    request.batches = Some(BatchPlan::Share(1.0));
    request.bake_time = Some(Duration::ZERO);
    request.failure_budget = Some(FailureBudget::Count(0));
    // The 1.0.0 every agent starts with is not in the catalog: no revert is measured here.
    request.adopt_unknown_versions = true;
    let view = admin.create_rollout(&request).await.unwrap();
    let id = view.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let status = loop {
        let view = admin.rollout(&id).await.unwrap();
        if view.status.is_terminal() {
            break view.status;
        }
        assert!(Instant::now() < deadline, "rollout not done in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rollout_took = rollout_started.elapsed();
    assert_eq!(
        status,
        RolloutStatus::Completed,
        "the rollout did not complete"
    );
    let install_cpu = fleet.cpu_since(&before);
    let after_rss = fleet.rss_kib();
    let to_started = fleet.collector_started_after(offered_at);

    // CPU per install: what the supervisor used over the rollout less its idle rate.
    let per_install: Vec<f64> = install_cpu
        .iter()
        .zip(&idle_cpu)
        .map(|(install, idle)| {
            let idle_rate = idle.as_secs_f64() / idle_window.as_secs_f64();
            (install.as_secs_f64() - idle_rate * rollout_took.as_secs_f64()).max(0.0) * 1e3
        })
        .collect();
    let idle_ms_per_s: Vec<f64> = idle_cpu
        .iter()
        .map(|cpu| cpu.as_secs_f64() * 1e3 / idle_window.as_secs_f64())
        .collect();
    let openssl = openssl_sha256_cpu(&release.target);

    println!();
    println!("supervisor binary {}", supervisor_bin.display());
    println!(
        "supervisors {}   package {} KiB   health check every {} ms   liveness {} ms",
        args.supervisors, args.package_kib, args.health_interval_ms, args.liveness_ms
    );
    println!(
        "rollout start -> Completed         {:.2} s",
        rollout_took.as_secs_f64()
    );
    print_row("offer -> new collector started", "ms", &to_started);
    print_row("supervisor CPU per install", "ms", &per_install);
    print_row("supervisor idle CPU", "ms/s", &idle_ms_per_s);
    print_row("supervisor RSS idle", "MiB", &kib_to_mib(&idle_rss));
    print_row(
        "supervisor RSS after install",
        "MiB",
        &kib_to_mib(&after_rss),
    );
    print_row("collector RSS idle", "MiB", &kib_to_mib(&collector_rss));
    match openssl {
        Some(cpu) => println!(
            "baseline: a whole `openssl dgst -sha256` process on the package, CPU {:.1} ms (same run)",
            cpu.as_secs_f64() * 1e3
        ),
        None => println!("baseline: openssl not found"),
    }

    fleet.stop();
    server.shutdown().await;
    if args.keep {
        println!("work directory kept: {}", work.keep().display());
    }
}

/// The release side: a key, the 1.0.0 collector every agent starts with, and the signed 2.0.0
/// package padded to the wanted size (comment lines after the `exec`, which `sh` never reads).
struct Release {
    public_key: PathBuf,
    initial: PathBuf,
    target: PathBuf,
    signature: Vec<u8>,
}

impl Release {
    fn prepare(dir: &Path, opamp: &Path, size: usize) -> Self {
        let dir = dir.join("release");
        std::fs::create_dir_all(&dir).unwrap();
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let public_key = dir.join("release.pub");
        std::fs::write(&public_key, signer.public_key().to_spki_pem().unwrap()).unwrap();
        let initial = write_launcher(&dir, opamp, "1.0.0", 0);
        let target = write_launcher(&dir, opamp, "2.0.0", size);
        let bytes = std::fs::read(&target).unwrap();
        let statement = Statement::new(
            PACKAGE,
            "2.0.0",
            ContentHash::of(&bytes),
            bytes.len() as u64,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
        let signature = signer.sign_statement(&statement).unwrap();
        Release {
            public_key,
            initial,
            target,
            signature,
        }
    }
}

fn write_launcher(dir: &Path, opamp: &Path, version: &str, size: usize) -> PathBuf {
    let mut text = format!(
        "#!/bin/sh\nexec '{}' __test-collector --set-version {version} \"$@\"\n",
        opamp.display()
    );
    // Pseudo-random hex so the file does not compress away anywhere on its path.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while text.len() < size {
        text.push('#');
        for _ in 0..15 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!("{state:016x}"));
        }
        text.push('\n');
    }
    let path = dir.join(format!("otelcol-{version}"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The supervisor processes, killed on drop.
#[derive(Default)]
struct Fleet {
    children: Vec<Child>,
    next_port: u16,
}

impl Fleet {
    fn start(
        &mut self,
        supervisor_bin: &Path,
        root: &Path,
        index: usize,
        endpoint: &str,
        release: &Release,
        args: &Args,
    ) {
        let dir = root.join("agents").join(format!("agent-{index:03}"));
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let executable = dir.join(PACKAGE);
        std::fs::copy(&release.initial, &executable).unwrap();
        let health_port = self.health_port();
        let config = format!(
            "server:\n  endpoint: {endpoint}\n\
             agent:\n  executable: '{executable}'\n  storage_dir: '{storage}'\n  package_name: {PACKAGE}\n  \
             args: [\"--health-port\", \"{health_port}\"]\n  labels:\n    {key}: {value}\n\
             health:\n  http_url: http://127.0.0.1:{health_port}/health\n  liveness_window: {liveness}ms\n  \
             start_timeout: 30s\n  check_interval: {interval}ms\n  health_timeout: 2s\n\
             trust:\n  keys:\n    - file: '{key_file}'\n\
             stop_timeout: 5s\nheartbeat_interval: {heartbeat}s\n",
            executable = executable.display(),
            storage = storage.display(),
            key = LABEL.0,
            value = LABEL.1,
            liveness = args.liveness_ms,
            interval = args.health_interval_ms,
            key_file = release.public_key.display(),
            heartbeat = args.heartbeat_secs,
        );
        let config_path = dir.join("supervisor.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("supervisor.log")).unwrap();
        let mut command = Command::new(supervisor_bin);
        // `opamp` needs its subcommand; `opamp-supervisor` is the subcommand.
        if supervisor_bin
            .file_name()
            .is_some_and(|name| name == "opamp")
        {
            command.arg("supervisor");
        }
        let child = command
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// A free loopback port below the kernel's ephemeral range (32768 and up by default):
    /// a port the kernel handed out and took back could go to a supervisor's own outgoing
    /// connection before its collector binds it, which once left two of 100 collectors
    /// without their health port.
    fn health_port(&mut self) -> u16 {
        loop {
            self.next_port = self.next_port.max(20_000) + 1;
            assert!(
                self.next_port < 32_000,
                "no free port below the ephemeral range"
            );
            if std::net::TcpListener::bind(("127.0.0.1", self.next_port)).is_ok() {
                return self.next_port;
            }
        }
    }

    fn exited(&mut self) -> usize {
        self.children
            .iter_mut()
            .filter_map(|child| child.try_wait().ok().flatten())
            .count()
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.children.iter().map(Child::id)
    }

    fn cpu(&self) -> Vec<Duration> {
        self.pids()
            .map(|pid| procfs::cpu_time(pid).unwrap())
            .collect()
    }

    fn cpu_since(&self, before: &[Duration]) -> Vec<Duration> {
        self.cpu()
            .iter()
            .zip(before)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect()
    }

    fn rss_kib(&self) -> Vec<u64> {
        self.pids()
            .map(|pid| procfs::memory_kib(pid, "VmRSS:").unwrap())
            .collect()
    }

    fn collector_rss_kib(&self) -> Vec<u64> {
        self.pids()
            .filter_map(|pid| procfs::children(pid).first().copied())
            .filter_map(|child| procfs::memory_kib(child, "VmRSS:").ok())
            .collect()
    }

    /// For each supervisor, how long after `offered_at` (time since boot) its current collector
    /// process started, in milliseconds.
    fn collector_started_after(&self, offered_at: Duration) -> Vec<f64> {
        self.pids()
            .filter_map(|pid| procfs::children(pid).first().copied())
            .filter_map(|pid| procfs::start_time(pid).ok())
            .map(|started| (started.as_secs_f64() - offered_at.as_secs_f64()) * 1e3)
            .collect()
    }

    fn stop(&mut self) {
        for child in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
    }
}

/// Waits until `want` bench agents are connected, healthy and on `version`; fails early when a
/// supervisor exits.
async fn wait_versions(
    admin: &AdminClient,
    fleet: &mut Fleet,
    want: usize,
    version: &str,
    deadline: Instant,
) {
    loop {
        let agents = admin.agents().await.unwrap();
        let settled = agents
            .iter()
            .filter(|a| a.is_settled_on(PACKAGE, version))
            .count();
        if settled == want {
            return;
        }
        assert_eq!(
            fleet.exited(),
            0,
            "a supervisor exited (see its supervisor.log)"
        );
        assert!(
            Instant::now() < deadline,
            "{settled} of {want} agents on {version} in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU time of `openssl dgst -sha256` on `file`, from its rusage.
fn openssl_sha256_cpu(file: &Path) -> Option<Duration> {
    let before = children_cpu();
    let status = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    status
        .success()
        .then(|| children_cpu().saturating_sub(before))
}

fn children_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    time(usage.user_time()) + time(usage.system_time())
}

fn kib_to_mib(values: &[u64]) -> Vec<f64> {
    values.iter().map(|kib| *kib as f64 / 1024.0).collect()
}

fn print_row(name: &str, unit: &str, values: &[f64]) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    // CPU times come in 10 ms ticks per process: the mean over many supervisors is the
    // figure to read for them, the quantiles show the spread.
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    println!(
        "{name:<31} mean {mean:>7.1} {unit:<4} median {:>7.1}  p90 {:>7.1}  min {:>7.1}  max {:>7.1}  (n={})",
        at(0.5),
        at(0.9),
        at(0.0),
        at(1.0),
        sorted.len()
    );
}
