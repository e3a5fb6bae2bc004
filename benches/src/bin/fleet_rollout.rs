//! Fleet rollout load run: N agents on loopback, one `opamp-fleet` `FleetServer` (admin API,
//! catalog, rollout engine, SQLite store) in a child process; a rollout from 1.0.0 to 2.0.0
//! with zero bake time is started through the admin API and timed until it completes.
//!
//! Agents (`opamp_benches::sim_agent`) are `opamp-transport` clients with an `opamp-session`
//! `AgentSession` that report 1.0.0 installed and healthy, and on an offer download the package
//! with the supervisor's `Downloader` (streamed to disk, SHA-256 checked, fsynced) and report
//! `Installed`.
//!
//! With `--agents-per-socket N` the agents (`opamp_benches::mux_agent`) share WebSockets, N to
//! a socket, as OpAMP's multiplexing allows, and check downloads in memory: how 100,000 agents
//! fit in the open files one process may hold here.
//!
//! ```text
//! cargo run --release -p opamp-benches --bin fleet_rollout -- --agents 10000
//! cargo run --release -p opamp-benches --bin fleet_rollout -- --agents 100000 --agents-per-socket 6
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use opamp_benches::bench_db::BenchDatabase;
use opamp_benches::mux_agent::MuxPool;
use opamp_benches::sim_agent::{self, AgentPool, PACKAGE};
use opamp_benches::{child, dashboard_probe, procfs, rollout_run};
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use opamp_fleet::admin::AdminClient;
use opamp_fleet::{FleetServer, FleetServerConfig};

const TOKEN: &str = "fleet-rollout-bench-token";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Runs the agents and the rollout, measures the server (default).
    Driver,
    /// The measured fleet server.
    Server,
}

#[derive(Parser, Debug)]
#[command(about = "OpAMP fleet server rollout load run on loopback")]
struct Args {
    /// Number of agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Heartbeat interval, seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Size of the package, KiB.
    #[arg(long, default_value_t = 64)]
    package_kib: usize,
    /// Canary share of the rollout.
    #[arg(long, default_value_t = 0.01)]
    canary_share: f64,
    /// Share of the fleet per batch after the canary.
    #[arg(long, default_value_t = 0.25)]
    batch_share: f64,
    /// Agents sharing each WebSocket (OpAMP multiplexing; routed by `instance_uid`). Above 1
    /// the agents are `mux_agent`'s, which check downloads in memory: how one process here
    /// (20,000 open files at most) holds 100,000 agents.
    #[arg(long, default_value_t = 1)]
    agents_per_socket: usize,
    /// Downloads running at the same time across all agents.
    #[arg(long, default_value_t = 256)]
    download_concurrency: usize,
    /// SQLite durability of the fleet store: `full` (default, fsync per commit) or `normal`.
    #[arg(long, default_value = "full")]
    store_sync: String,
    /// Keep the fleet's state in PostgreSQL instead of SQLite: the URL of an admin database
    /// on the server; the run creates a database of its own there, reports its size and
    /// transactions, and drops it.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// The database the server uses (server role).
    #[arg(long, hide = true)]
    store_url: Option<String>,
    /// Also measure the web dashboard: page loads with the whole fleet registered, and the
    /// live pages' event traffic during the rollout.
    #[arg(long)]
    dashboard: bool,
    /// Hard limit for the whole run, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Seconds the registered agents idle before the server's memory is read.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// Stop after the idle measurement: no rollout.
    #[arg(long)]
    idle_only: bool,
    /// Read the idle CPU over at least this many seconds (whole heartbeat intervals, at least
    /// two); 12 s windows scatter by about two points of a core from run to run.
    #[arg(long, default_value_t = 0)]
    idle_cpu_secs: u64,
    /// Run the server under this command (for example `heaptrack -o /tmp/server`), split
    /// at spaces. The memory figures then include the wrapper's own.
    #[arg(long)]
    server_wrapper: Option<String>,
    #[arg(long, value_enum, default_value_t = Role::Driver, hide = true)]
    role: Role,
    /// Data directory (server role).
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let fd_limit = child::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = match args.role {
        Role::Server => {
            runtime.block_on(serve(args, fd_limit));
            0
        }
        Role::Driver => runtime.block_on(drive(args)),
    };
    std::process::exit(code);
}

async fn serve(args: Args, fd_limit: u64) {
    let mut config = FleetServerConfig::new(
        child::LOOPBACK_ANY_PORT,
        args.data_dir.expect("--data-dir"),
        TOKEN,
    );
    config.admin.listen = child::LOOPBACK_ANY_PORT;
    if args.store_sync == "normal" {
        config.store.synchronous = opamp_fleet::config::Durability::Normal;
    }
    config.store.postgres_url = args.store_url.map(opamp_fleet::config::DatabaseUrl);
    config.max_connections = child::max_connections(fd_limit);
    let server = FleetServer::start(config).await.unwrap();
    println!("LISTENING {} {}", server.opamp_addr(), server.admin_addr());
    // Serve until the driver closes stdin.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
    server.shutdown().await;
}

struct ServerProcess {
    child: Child,
    opamp: SocketAddr,
    admin: SocketAddr,
}

impl ServerProcess {
    fn spawn(
        data_dir: &Path,
        store_sync: &str,
        store_url: Option<&str>,
        wrapper: Option<&str>,
    ) -> Self {
        let mut command = child::self_command(wrapper);
        command
            .args(["--role", "server", "--store-sync", store_sync, "--data-dir"])
            .arg(data_dir);
        if let Some(url) = store_url {
            command.args(["--store-url", url]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = child::read_until_prefixed(
            &mut BufReader::new(child.stdout.take().unwrap()),
            "LISTENING ",
        );
        let mut addrs = line.split(' ').map(|a| a.parse().unwrap());
        let (opamp, admin) = (addrs.next().unwrap(), addrs.next().unwrap());
        Self {
            child,
            opamp,
            admin,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn drive(args: Args) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let work = tempfile::tempdir().unwrap();
    let database = args.postgres_url.as_deref().map(BenchDatabase::create);
    let server = ServerProcess::spawn(
        &work.path().join("server"),
        &args.store_sync,
        database.as_ref().map(|db| db.url.as_str()),
        args.server_wrapper.as_deref(),
    );
    let pid = server.child.id();
    let admin = AdminClient::new(&format!("http://{}", server.admin), TOKEN).unwrap();
    sim_agent::add_packages(&admin, work.path(), args.package_kib).await;
    let rss_idle = procfs::memory_kib(pid, "VmRSS:").unwrap();

    let started = Instant::now();
    let heartbeat = Duration::from_secs(args.heartbeat_secs);
    let endpoint = format!("ws://{}/v1/opamp", server.opamp);
    let mut connected = if args.agents_per_socket > 1 {
        MuxPool::new(heartbeat, args.agents_per_socket, args.download_concurrency)
            .start_all(0..args.agents, &endpoint)
            .await
    } else {
        AgentPool::new(
            work.path().join("agents"),
            heartbeat,
            args.download_concurrency,
        )
        .start_all(0..args.agents, |_| endpoint.clone())
        .await
    };
    if !sim_agent::wait_connected(&mut connected, args.agents, deadline).await {
        println!("FAIL: not all agents connected");
        return 1;
    }
    println!(
        "agents connected: {} in {:.1?}",
        args.agents,
        started.elapsed()
    );
    // Wait until the server's registry shows every agent at 1.0.0 (reports are coalesced).
    let mut last_report = Instant::now();
    loop {
        let ready = registered_at_first_version(&admin).await;
        if ready == args.agents {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "{:.1?}: {ready} agents registered at 1.0.0",
                started.elapsed()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            println!("FAIL: only {ready} agents registered at 1.0.0");
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "agents connected and registered: {} in {:.1?}",
        args.agents,
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let rss_connected = procfs::memory_kib(pid, "VmRSS:").unwrap();
    let registered_stats = database.as_ref().map(BenchDatabase::stats);
    if args.idle_only {
        let (cpu, window) = child::idle_cpu(pid, args.heartbeat_secs, args.idle_cpu_secs).await;
        println!(
            "server RSS: idle {rss_idle} KiB, {rss_connected} KiB after {} s connected ({:.1} KiB per agent)",
            args.idle_secs,
            rss_connected.saturating_sub(rss_idle) as f64 / args.agents as f64
        );
        println!(
            "server CPU while idle (heartbeat {} s): {cpu:.2?} in {window:.0?} ({:.2}% of one core)",
            args.heartbeat_secs,
            cpu.as_secs_f64() / window.as_secs_f64() * 100.0
        );
        return 0;
    }

    let base = format!("http://{}", server.admin);
    let cookie = if args.dashboard {
        Some(measure_pages(&base).await)
    } else {
        None
    };

    let request = rollout_run::rollout_request(
        args.canary_share,
        args.batch_share,
        Duration::from_secs(args.timeout_secs),
    );
    let cpu_before = procfs::cpu_time(pid).unwrap();
    let driver_cpu_before = procfs::cpu_time(std::process::id()).unwrap();
    let rollout_started = Instant::now();
    let rollout = admin.create_rollout(&request).await.unwrap();
    let id = rollout.id.to_string();
    let live = cookie.as_deref().map(|cookie| {
        (
            dashboard_probe::follow(&base, cookie, &format!("/ui/live/rollouts/{id}")),
            dashboard_probe::follow(&base, cookie, "/ui/live/fleet"),
        )
    });
    let page_times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pages = PageProber::start(admin.clone(), page_times.clone());
    let followed = rollout_run::follow_progress(
        &admin,
        &id,
        deadline,
        rollout_started,
        Duration::from_secs(1),
        last_report,
    );
    let status = match followed.await {
        Ok(status) => status,
        Err(unfinished) => {
            println!("FAIL: {unfinished}");
            return 1;
        }
    };
    let elapsed = rollout_started.elapsed();
    pages.stop();
    let mut page_times = std::mem::take(&mut *page_times.lock().unwrap());
    let server_cpu = procfs::cpu_time(pid).unwrap().saturating_sub(cpu_before);
    let driver_cpu = procfs::cpu_time(std::process::id())
        .unwrap()
        .saturating_sub(driver_cpu_before);
    let view = admin.rollout(&id).await.unwrap();
    if let (Some(database), Some(registered)) = (&database, registered_stats) {
        // The server's statistics reach pg_stat_database within a second of each commit.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let after = database.stats();
        let agents = args.agents as f64;
        println!(
            "PostgreSQL: {} transactions to register {} agents ({:.2} per agent), {} during the rollout ({:.2} per agent, {:.2} per engine event); database {:.1} MiB",
            registered.transactions,
            args.agents,
            registered.transactions as f64 / agents,
            after.transactions - registered.transactions,
            (after.transactions - registered.transactions) as f64 / agents,
            (after.transactions - registered.transactions) as f64 / view.sequence.max(1) as f64,
            after.bytes as f64 / 1024.0 / 1024.0
        );
    }
    if let Some(((rollout_task, rollout_live), (fleet_task, fleet_live))) = live {
        // The rollout page's stream ends by itself after the terminal render.
        let _ = tokio::time::timeout(Duration::from_secs(10), rollout_task).await;
        fleet_task.abort();
        let cookie = cookie.as_deref().unwrap_or_default();
        let rollout_page = format!("/ui/rollouts/{id}");
        let after = ["/ui", rollout_page.as_str(), "/ui/audit"];
        for load in dashboard_probe::time_pages(&base, cookie, &after, 5).await {
            println!(
                "dashboard page {} after the rollout: median {:.1?}, worst {:.1?}, {} bytes",
                load.path, load.median, load.worst, load.bytes
            );
        }
        for (name, traffic) in [
            ("rollout page", rollout_live),
            ("fleet overview", fleet_live),
        ] {
            let traffic = traffic.borrow();
            println!(
                "dashboard SSE {name}: {} events, {} bytes in {:.1?} ({:.1} KiB/s)",
                traffic.events,
                traffic.bytes,
                traffic.open_for,
                traffic.bytes as f64 / 1024.0 / traffic.open_for.as_secs_f64().max(0.001)
            );
        }
    }
    println!(
        "agents: {}, package {} KiB, canary {} then batches of {}, bake 0, download concurrency {}",
        args.agents,
        args.package_kib,
        args.canary_share,
        args.batch_share,
        args.download_concurrency
    );
    println!(
        "rollout start -> {status:?}: {:.3} s ({} engine events)",
        elapsed.as_secs_f64(),
        view.sequence
    );
    println!(
        "server RSS: idle {rss_idle} KiB, {rss_connected} KiB connected ({:.1} KiB per agent), {} KiB after, peak {} KiB",
        rss_connected.saturating_sub(rss_idle) as f64 / args.agents as f64,
        procfs::memory_kib(pid, "VmRSS:").unwrap(),
        procfs::memory_kib(pid, "VmHWM:").unwrap()
    );
    println!(
        "CPU during the rollout: server {server_cpu:.2?} ({:.0}% of one core), agents+downloads {driver_cpu:.2?}",
        server_cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    page_times.sort();
    if let (Some(first), Some(last)) = (page_times.first(), page_times.last()) {
        println!(
            "admin API agents pages of {AGENTS_PAGE} during the rollout: {} requests, min {first:.1?}, median {:.1?}, p99 {:.1?}, max {last:.1?}",
            page_times.len(),
            page_times[page_times.len() / 2],
            page_times[page_times.len() * 99 / 100],
        );
    }
    i32::from(status != opamp_fleet::RolloutStatus::Completed)
}

/// Agents connected and registered at 1.0.0, from the server's Prometheus metrics (a fraction
/// of the cost of listing every agent, which at 100,000 agents would load the server more
/// than the agents do): the smaller of `opamp_agents_connected` and the agents at 1.0.0.
async fn registered_at_first_version(admin: &AdminClient) -> usize {
    let text = admin.metrics().await.unwrap();
    let gauge = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    let at_first = format!("opamp_agents_by_version{{package=\"{PACKAGE}\",version=\"1.0.0\"}} ");
    gauge("opamp_agents_connected ").min(gauge(&at_first))
}

/// Agents per page the prober asks for.
const AGENTS_PAGE: usize = 100;

/// Walks the agents list a page at a time, over and over, every 50 ms, recording each page's
/// time: what an operator's `agents list` meets during the rollout. On its own thread and
/// runtime, so the driver's busy runtime (all the agents) does not delay it.
struct PageProber {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PageProber {
    fn start(admin: AdminClient, times: Arc<std::sync::Mutex<Vec<Duration>>>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut after: Option<String> = None;
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let page = admin
                        .agents_page(after.as_deref(), AGENTS_PAGE)
                        .await
                        .unwrap();
                    times.lock().unwrap().push(started.elapsed());
                    after = (page.len() == AGENTS_PAGE)
                        .then(|| page.last().map(|agent| agent.uid.to_string()))
                        .flatten();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        });
        PageProber { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Signs in to the dashboard and times its pages with the whole fleet registered.
async fn measure_pages(base: &str) -> String {
    let cookie = dashboard_probe::sign_in(base, TOKEN).await;
    let pages = [
        "/ui",
        "/ui/agents",
        "/ui/agents?page=100",
        "/ui/agents?labels=env%3Dbench&health=healthy&page=50",
        "/ui/agents?labels=service.instance.id%3Dagent-4242",
        "/ui/catalog",
        "/ui/rollouts",
        "/ui/audit",
    ];
    for load in dashboard_probe::time_pages(base, &cookie, &pages, 5).await {
        println!(
            "dashboard page {}: median {:.1?}, worst {:.1?}, {} bytes",
            load.path, load.median, load.worst, load.bytes
        );
    }
    cookie
}
