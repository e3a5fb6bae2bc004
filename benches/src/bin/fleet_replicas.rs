//! Fleet rollout over several server replicas on one PostgreSQL database: R `opamp-fleet`
//! `FleetServer` replicas (default 3), each in a child process with a data directory of its
//! own, the same database and one shared packages directory; A simulated agents per replica
//! (default 10,000), agent `i` connecting to replica `i % R`. The replica holding the
//! coordinator lease (found in the audit log) gets the packages and the rollout from 1.0.0 to
//! 2.0.0 with zero bake time, which is followed through its progress stream until it ends.
//!
//! The agents are the load tools' simulated agents (`opamp_benches::sim_agent`: an
//! `opamp-transport` client and an `opamp-session` `AgentSession` each, downloading offers
//! with the supervisor's `Downloader` to disk) in "agents" child processes of at most
//! `--agents-per-process` agents each, since one process may not hold 30,000 sockets here
//! (`RLIMIT_NOFILE` hard limit 20,000). Downloads go to the coordinator's own listener (no
//! `public_url`), at most `--download-concurrency` at a time per agents process; each replica
//! admits that many times the number of agents processes at once (`--max-downloads`; with
//! the server's default of 256 the rest would be refused with 503 and asked again after the
//! `Retry-After`, which measures the waits rather than the replicas).
//!
//! Prints the time to connect and register every agent, how many each replica holds, the
//! rollout time, each replica's CPU during the rollout and its memory (per agent it holds),
//! and PostgreSQL's transactions (per agent and per agent message) and database size.
//! `--postgres-url` is required: an admin database URL on a PostgreSQL server, where the run
//! creates a database of its own and drops it at the end.
//!
//! ```text
//! cargo run --release -p opamp-benches --bin fleet_replicas -- \
//!     --postgres-url postgres://postgres@127.0.0.1:55433/postgres \
//!     --replicas 3 --agents-per-replica 10000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use opamp_benches::bench_db::{BenchDatabase, DatabaseStats};
use opamp_benches::rollout_run::{self, Unfinished};
use opamp_benches::sim_agent::{self, AgentPool, PACKAGE};
use opamp_benches::{child, procfs};
use opamp_fleet::admin::AdminClient;
use opamp_fleet::{FleetServer, FleetServerConfig, RolloutStatus};
use tokio::sync::mpsc;

const TOKEN: &str = "fleet-replicas-bench-token";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Starts the database, the replicas and the agents, runs the rollout, measures
    /// (default).
    Driver,
    /// One measured fleet server replica.
    Server,
    /// A share of the simulated agents.
    Agents,
}

#[derive(Parser, Debug)]
#[command(about = "OpAMP fleet server rollout over several replicas on one PostgreSQL database")]
struct Args {
    /// Number of server replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Agents connected to each replica.
    #[arg(long, default_value_t = 10_000)]
    agents_per_replica: usize,
    /// At most this many agents in one agents process (each holds a socket per agent).
    #[arg(long, default_value_t = 9_000)]
    agents_per_process: usize,
    /// The URL of an admin database on a PostgreSQL server: the run creates a database of
    /// its own there for the replicas, reports its size and transactions, and drops it.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
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
    /// Downloads running at the same time in each agents process.
    #[arg(long, default_value_t = 256)]
    download_concurrency: usize,
    /// Downloads each replica serves at once (its `limits.max_concurrent_downloads`; more
    /// are refused with 503). Default: what the agents processes may ask for together,
    /// since every download goes to the coordinator.
    #[arg(long)]
    max_downloads: Option<usize>,
    /// Hard limit for the whole run, seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Seconds the registered agents idle before the replicas' memory is read; the
    /// database's transactions and the agents' messages (heartbeats) are counted over them.
    /// Default: the heartbeat interval, so that each agent sends about one heartbeat.
    #[arg(long)]
    idle_secs: Option<u64>,
    #[arg(long, value_enum, default_value_t = Role::Driver, hide = true)]
    role: Role,
    /// The database the replicas use (server role).
    #[arg(long, hide = true)]
    store_url: Option<String>,
    /// Data directory (server role), download directory (agents role).
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
    /// Packages directory shared by the replicas (server role).
    #[arg(long, hide = true)]
    packages_dir: Option<PathBuf>,
    /// The replica's name (server role).
    #[arg(long, hide = true)]
    replica_name: Option<String>,
    /// The first agent's index (agents role).
    #[arg(long, hide = true, default_value_t = 0)]
    first_agent: usize,
    /// How many agents (agents role).
    #[arg(long, hide = true, default_value_t = 0)]
    agent_count: usize,
    /// The replicas' OpAMP addresses, comma separated (agents role).
    #[arg(long, hide = true, value_delimiter = ',')]
    endpoints: Vec<SocketAddr>,
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
        Role::Agents => {
            runtime.block_on(run_agents(args));
            0
        }
        Role::Driver => runtime.block_on(drive(args, fd_limit)),
    };
    std::process::exit(code);
}

/// The server role: one replica, serving until the driver closes stdin.
async fn serve(args: Args, fd_limit: u64) {
    let mut config = FleetServerConfig::new(
        child::LOOPBACK_ANY_PORT,
        args.data_dir.expect("--data-dir"),
        TOKEN,
    );
    config.admin.listen = child::LOOPBACK_ANY_PORT;
    config.packages_dir = args.packages_dir;
    config.store.postgres_url = Some(opamp_fleet::config::DatabaseUrl(
        args.store_url.expect("--store-url"),
    ));
    config.store.replica_name = args.replica_name;
    if let Some(max_downloads) = args.max_downloads {
        config.limits.max_concurrent_downloads = max_downloads;
    }
    config.max_connections = child::max_connections(fd_limit);
    let server = FleetServer::start(config).await.unwrap();
    println!("LISTENING {} {}", server.opamp_addr(), server.admin_addr());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
    server.shutdown().await;
}

/// The agents role: agents `first_agent..first_agent + agent_count`, agent `i` connecting
/// to `endpoints[i % endpoints.len()]`; prints `CONNECTED <n>` once all connected, and runs
/// until the driver closes stdin.
async fn run_agents(args: Args) {
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|addr| format!("ws://{addr}/v1/opamp"))
        .collect();
    let pool = AgentPool::new(
        args.data_dir.expect("--data-dir"),
        Duration::from_secs(args.heartbeat_secs),
        args.download_concurrency,
    );
    let agents = args.first_agent..args.first_agent + args.agent_count;
    let mut connected = pool
        .start_all(agents, |index| endpoints[index % endpoints.len()].clone())
        .await;
    // No deadline of its own: the driver's applies, and it ends this process.
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    if sim_agent::wait_connected(&mut connected, args.agent_count, far).await {
        println!("CONNECTED {}", args.agent_count);
    } else {
        println!("GONE");
    }
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
}

/// A child process of this bench, killed when dropped.
struct Process {
    child: Child,
    /// Closed (dropped) to ask the child to end.
    stdin: Option<ChildStdin>,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet server replica.
struct Replica {
    name: String,
    process: Process,
    opamp: SocketAddr,
    admin: AdminClient,
}

impl Replica {
    fn spawn(work: &Path, index: usize, store_url: &str, max_downloads: usize) -> Self {
        let name = format!("replica-{index}");
        let mut command = child::self_command(None);
        command
            .args(["--role", "server", "--replica-name", &name, "--store-url"])
            .arg(store_url)
            .arg("--data-dir")
            .arg(work.join(&name))
            .arg("--packages-dir")
            .arg(work.join("packages"))
            .arg("--max-downloads")
            .arg(max_downloads.to_string());
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = child::read_until_prefixed(
            &mut BufReader::new(child.stdout.take().unwrap()),
            "LISTENING ",
        );
        let mut addrs = line.split(' ').map(|a| a.parse::<SocketAddr>().unwrap());
        let (opamp, admin) = (addrs.next().unwrap(), addrs.next().unwrap());
        let stdin = child.stdin.take();
        Replica {
            admin: AdminClient::new(&format!("http://{admin}"), TOKEN).unwrap(),
            name,
            process: Process { child, stdin },
            opamp,
        }
    }

    fn rss_kib(&self) -> u64 {
        procfs::memory_kib(self.process.pid(), "VmRSS:").unwrap()
    }

    fn cpu(&self) -> Duration {
        procfs::cpu_time(self.process.pid()).unwrap()
    }

    /// AgentToServer messages this replica accepted so far (its transport metrics).
    async fn messages_received(&self) -> Option<u64> {
        let text = self.admin.metrics().await.ok()?;
        Some(
            text.lines()
                .filter(|line| line.starts_with("opamp_transport_messages_received_total"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }
}

/// How many agents processes run `total` agents.
fn agents_processes(args: &Args, total: usize) -> usize {
    total.div_ceil(args.agents_per_process.max(1)).max(1)
}

/// Starts agents processes for agents `0..total`, at most `--agents-per-process` each;
/// `said` gets what each prints.
fn spawn_agents(
    args: &Args,
    work: &Path,
    endpoints: &[SocketAddr],
    total: usize,
    said: &mpsc::UnboundedSender<String>,
) -> Vec<Process> {
    let processes = agents_processes(args, total);
    let share = total.div_ceil(processes);
    let endpoints: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    (0..processes)
        .map(|k| {
            let first = k * share;
            let count = share.min(total - first);
            let mut child = child::self_command(None)
                .args(["--role", "agents", "--first-agent"])
                .arg(first.to_string())
                .arg("--agent-count")
                .arg(count.to_string())
                .arg("--endpoints")
                .arg(endpoints.join(","))
                .arg("--heartbeat-secs")
                .arg(args.heartbeat_secs.to_string())
                .arg("--download-concurrency")
                .arg(args.download_concurrency.to_string())
                .arg("--data-dir")
                .arg(work.join(format!("agents-{k}")))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let said = said.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = said.send(line);
                }
            });
            let stdin = child.stdin.take();
            Process { child, stdin }
        })
        .collect()
}

/// Every `CoordinatorLeaseTaken` record in the audit log: (replica, fencing token), oldest
/// first.
async fn lease_takes(admin: &AdminClient) -> Vec<(String, i64)> {
    let audit = admin
        .audit(Some(opamp_fleet::audit::FLEET_RECORDS))
        .await
        .unwrap();
    audit
        .iter()
        .filter_map(|entry| match &entry.record.action {
            opamp_fleet::AuditAction::CoordinatorLeaseTaken { replica, token } => {
                Some((replica.clone(), *token))
            }
            _ => None,
        })
        .collect()
}

/// The window in which the replicas' own database traffic is counted, before any agent.
const QUIET: Duration = Duration::from_secs(5);

/// Agents per page when walking the agent list (the admin API's largest page).
const AGENTS_PAGE: usize = 10_000;

/// Connected agents at `version`, counted by the replica holding them (`"-"` for none).
async fn settled_by_replica(admin: &AdminClient, version: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = admin
            .agents_page(after.as_deref(), AGENTS_PAGE)
            .await
            .unwrap();
        for agent in page
            .iter()
            .filter(|a| a.connected && a.runs(PACKAGE, version))
        {
            let replica = agent.replica.clone().unwrap_or_else(|| "-".to_owned());
            *counts.entry(replica).or_default() += 1;
        }
        if page.len() < AGENTS_PAGE {
            return counts;
        }
        after = page.last().map(|agent| agent.uid.to_string());
    }
}

/// The CPU time of every process named `postgres` on this machine (the database server's
/// processes; backends that ended are missed).
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(|pid| procfs::cpu_time(pid).ok())
        .sum()
}

/// Agent messages all replicas accepted so far; `None` when a replica's metrics are
/// unavailable.
async fn messages_received(replicas: &[Replica]) -> Option<u64> {
    let mut total = 0;
    for replica in replicas {
        total += replica.messages_received().await?;
    }
    Some(total)
}

fn per(count: u64, of: usize) -> f64 {
    count as f64 / of.max(1) as f64
}

#[allow(clippy::too_many_lines)] // One measured run, step by step.
async fn drive(args: Args, fd_limit: u64) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let total = args.replicas * args.agents_per_replica;
    let max_downloads = args
        .max_downloads
        .unwrap_or(agents_processes(&args, total) * args.download_concurrency);
    println!(
        "replicas: {}, agents: {} per replica ({total} in all) in {} agents processes; package {} KiB, canary {} then batches of {}, bake 0, download concurrency {} per agents process, {max_downloads} downloads at once per replica, heartbeat {} s; open files limit {fd_limit}",
        args.replicas,
        args.agents_per_replica,
        agents_processes(&args, total),
        args.package_kib,
        args.canary_share,
        args.batch_share,
        args.download_concurrency,
        args.heartbeat_secs
    );
    let Some(postgres_url) = args.postgres_url.as_deref() else {
        eprintln!(
            "--postgres-url is required: the URL of an admin database on a PostgreSQL server"
        );
        return 2;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("packages")).unwrap();
    let database = BenchDatabase::create(postgres_url);
    let started = Instant::now();
    let replicas: Vec<Replica> = (0..args.replicas)
        .map(|index| Replica::spawn(work.path(), index, &database.url, max_downloads))
        .collect();
    let takes = loop {
        let takes = lease_takes(&replicas[0].admin).await;
        if !takes.is_empty() {
            break takes;
        }
        if tokio::time::Instant::now() >= deadline {
            println!("FAIL: no replica took the coordinator lease");
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (coordinator_name, token) = takes.last().unwrap().clone();
    let coordinator = replicas
        .iter()
        .position(|replica| replica.name == coordinator_name)
        .expect("the lease holder is one of the replicas");
    println!(
        "coordinator: {coordinator_name} (fencing token {token}), {:.1?} after the replicas started",
        started.elapsed()
    );
    let admin = &replicas[coordinator].admin;
    sim_agent::add_packages(admin, work.path(), args.package_kib).await;
    let rss_idle: Vec<u64> = replicas.iter().map(Replica::rss_kib).collect();
    // What the replicas do in the database on their own, with no agent.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let quiet = database.stats();
    tokio::time::sleep(QUIET).await;
    let before_agents = database.stats();
    let messages_before = messages_received(&replicas).await;

    let started = Instant::now();
    let endpoints: Vec<SocketAddr> = replicas.iter().map(|replica| replica.opamp).collect();
    let (said_tx, mut said) = mpsc::unbounded_channel();
    let agents = spawn_agents(&args, work.path(), &endpoints, total, &said_tx);
    let mut connected = 0;
    while connected < agents.len() {
        match tokio::time::timeout_at(deadline, said.recv()).await {
            Ok(Some(line)) if line.starts_with("CONNECTED ") => connected += 1,
            Ok(Some(line)) => {
                println!("FAIL: an agents process said {line:?}");
                return 1;
            }
            Ok(None) | Err(_) => {
                println!(
                    "FAIL: {connected} of {} agents processes connected all their agents",
                    agents.len()
                );
                return 1;
            }
        }
    }
    println!(
        "agents connected: {total} in {:.1?} ({} agents processes)",
        started.elapsed(),
        agents.len()
    );
    // Wait until the registry shows every agent connected at 1.0.0 (reports are relayed
    // through the database and coalesced).
    let mut last_report = Instant::now();
    let held = loop {
        let counts = settled_by_replica(admin, "1.0.0").await;
        let ready: usize = counts.values().sum();
        if ready == total {
            break counts;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "{:.1?}: {ready} agents registered at 1.0.0 {counts:?}",
                started.elapsed()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            println!("FAIL: only {ready} agents registered at 1.0.0 {counts:?}");
            return 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "agents connected and registered: {total} in {:.1?}",
        started.elapsed()
    );
    println!(
        "agents held: {}",
        held.iter()
            .map(|(replica, count)| format!("{replica} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The replicas' statistics reach pg_stat_database within a second of each commit.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let registered = database.stats();
    let messages_registered = messages_received(&replicas).await;
    let idle_secs = args.idle_secs.unwrap_or(args.heartbeat_secs);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let rss_connected: Vec<u64> = replicas.iter().map(Replica::rss_kib).collect();
    let idled = database.stats();
    let messages_idled = messages_received(&replicas).await;

    let request = rollout_run::rollout_request(
        args.canary_share,
        args.batch_share,
        Duration::from_secs(args.timeout_secs),
    );
    let cpu_before: Vec<Duration> = replicas.iter().map(Replica::cpu).collect();
    let agents_cpu = || -> Duration {
        agents
            .iter()
            .filter_map(|process| procfs::cpu_time(process.pid()).ok())
            .sum()
    };
    let agents_cpu_before = agents_cpu();
    let postgres_cpu_before = postgres_cpu();
    let rollout_started = Instant::now();
    let rollout = admin.create_rollout(&request).await.unwrap();
    let id = rollout.id.to_string();
    let followed = rollout_run::follow_progress(
        admin,
        &id,
        deadline,
        rollout_started,
        Duration::from_secs(2),
        last_report,
    );
    let status = match followed.await {
        Ok(status) => status,
        Err(Unfinished::StreamEnded) => {
            println!(
                "FAIL: event stream ended; {:?}; lease takes {:?}",
                admin.rollout(&id).await.map(|v| v.status),
                lease_takes(&replicas[(coordinator + 1) % replicas.len()].admin).await
            );
            return 1;
        }
        Err(unfinished) => {
            println!("FAIL: {unfinished}");
            return 1;
        }
    };
    let elapsed = rollout_started.elapsed();
    let replica_cpu: Vec<Duration> = replicas
        .iter()
        .zip(&cpu_before)
        .map(|(replica, before)| replica.cpu().saturating_sub(*before))
        .collect();
    let agents_cpu = agents_cpu().saturating_sub(agents_cpu_before);
    let postgres_cpu = postgres_cpu().saturating_sub(postgres_cpu_before);
    let view = admin.rollout(&id).await.unwrap();
    // The replicas' statistics reach pg_stat_database within a second of each commit.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = database.stats();
    let messages_after = messages_received(&replicas).await;
    let final_takes = lease_takes(admin).await;

    println!(
        "rollout start -> {status:?}: {:.3} s ({} engine events; {:?})",
        elapsed.as_secs_f64(),
        view.sequence,
        view.progress
    );
    for (index, replica) in replicas.iter().enumerate() {
        let pid = replica.process.pid();
        let holds = held.get(&replica.name).copied().unwrap_or(0);
        let grown = rss_connected[index].saturating_sub(rss_idle[index]);
        // The coordinator also keeps the state of every agent in the fleet.
        let role = if index == coordinator {
            format!(
                "coordinator, {:.1} KiB per agent in the fleet",
                per(grown, total)
            )
        } else {
            "relaying".to_owned()
        };
        println!(
            "{}: {holds} agents; CPU in the rollout {:.2?} ({:.0}% of one core); RSS idle {} KiB, {} KiB connected ({:.1} KiB per agent held; {role}), {} KiB after, peak {} KiB",
            replica.name,
            replica_cpu[index],
            replica_cpu[index].as_secs_f64() / elapsed.as_secs_f64() * 100.0,
            rss_idle[index],
            rss_connected[index],
            per(grown, holds),
            replica.rss_kib(),
            procfs::memory_kib(pid, "VmHWM:").unwrap()
        );
    }
    let all_cpu: Duration = replica_cpu.iter().sum();
    println!(
        "CPU during the rollout: replicas {all_cpu:.2?} ({:.0}% of one core), agents processes {agents_cpu:.2?}, PostgreSQL {postgres_cpu:.2?}",
        all_cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    let transactions = |count: i64| u64::try_from(count).unwrap_or(0);
    let background =
        transactions(before_agents.transactions - quiet.transactions) as f64 / QUIET.as_secs_f64();
    let to_register = transactions(registered.transactions - before_agents.transactions);
    let idle = transactions(idled.transactions - registered.transactions);
    let in_rollout = transactions(after.transactions - idled.transactions);
    println!(
        "PostgreSQL: {background:.1} transactions/s from the replicas with no agent; {to_register} transactions to register {total} agents ({:.2} per agent), {in_rollout} during the rollout ({:.2} per agent, {:.2} per engine event); database {:.1} MiB ({:.1} MiB before the agents)",
        per(to_register, total),
        per(in_rollout, total),
        in_rollout as f64 / view.sequence.max(1) as f64,
        after.bytes as f64 / 1024.0 / 1024.0,
        before_agents.bytes as f64 / 1024.0 / 1024.0
    );
    if let (Some(before), Some(registered_messages), Some(idled_messages), Some(after_messages)) = (
        messages_before,
        messages_registered,
        messages_idled,
        messages_after,
    ) {
        let registering = registered_messages - before;
        let idling = idled_messages - registered_messages;
        let rolling = after_messages - idled_messages;
        let count = |messages: u64| usize::try_from(messages).unwrap_or(0);
        println!(
            "agent messages accepted by the replicas: {registering} while registering ({:.2} transactions per message); {idling} in {idle_secs} s idle (heartbeats), {idle} transactions ({:.2} per message, {:.2} above the no-agent rate); {rolling} during the rollout ({:.2} transactions per message)",
            per(to_register, count(registering)),
            per(idle, count(idling)),
            (idle as f64 - background * idle_secs as f64) / idling.max(1) as f64,
            per(in_rollout, count(rolling)),
        );
    }
    if final_takes.len() != takes.len() {
        println!("NOTE: the coordinator lease changed hands during the run: {final_takes:?}");
    }
    report_stats(&[
        ("with no agent", &quiet),
        ("before the agents", &before_agents),
        ("registered", &registered),
        ("after idling", &idled),
        ("after the rollout", &after),
    ]);
    i32::from(status != RolloutStatus::Completed)
}

/// The raw database counters, for the record.
fn report_stats(points: &[(&str, &DatabaseStats)]) {
    let points: Vec<String> = points
        .iter()
        .map(|(when, stats)| format!("{} {when}", stats.transactions))
        .collect();
    println!("pg_stat_database transactions: {}", points.join(", "));
}
