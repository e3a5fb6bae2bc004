//! Fleet-scale load run: N agents on loopback take a package offer from one server, download
//! it over HTTP, check its SHA-256 on disk and report `Installed`; measures the time from the
//! offer to the last `Installed`, and the server's memory and CPU.
//!
//! The server is `opamp-transport`'s server (WebSocket and HTTP, with its download route)
//! with one `ServerSession` per agent, run in a child process (this binary with
//! `--role server`) so its memory and CPU are measured alone from `/proc`. It offers the
//! package to every connected agent at once (no rollout engine: the fleet server was not
//! available to embed when this was written), which is a rollout with one wave and no bake
//! time. Agents are `opamp-transport` clients with an `opamp-session` `AgentSession`; each
//! downloads with the supervisor's `Downloader` (streamed to disk, SHA-256 checked, fsynced).
//!
//! ```text
//! cargo run --release -p opamp-benches --bin fleet_load -- --agents 10000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use opamp_benches::tls_fixture::TlsFiles;
use opamp_benches::{child, procfs, sim_agent};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use opamp_packages::{ContentHash, OfferedPackage, PackageName, PackageOffer};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{AgentEvent, AgentSessionConfig, ServerEvent};
use opamp_supervisor::download::{DownloadLimits, DownloadRequest, Downloader};
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, ClientHandle, OpampClient};
use opamp_transport::server::{DownloadConfig, OpampServer, OpampServerConfig, ServerNotification};
use opamp_transport::tls::{ClientAuth, ClientTls, Identity, ServerTls};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, mpsc};

const PACKAGE_NAME: &str = "otelcol";
const PACKAGE_VERSION: &str = "0.2.0";
const PACKAGE_FILE: &str = "otelcol-0.2.0.tar.gz";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Runs the agents and measures the server (default).
    Driver,
    /// The measured server.
    Server,
}

/// How agents reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TlsMode {
    /// `ws://` and `http://`.
    None,
    /// `wss://` and `https://`, server certificate only.
    Tls,
    /// `wss://` and `https://` with a client certificate the server requires.
    Mtls,
}

#[derive(Parser, Debug)]
#[command(about = "OpAMP fleet load run on loopback: offer -> all agents Installed")]
struct Args {
    /// Number of agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Percentage of agents using HTTP polling instead of WebSocket.
    #[arg(long, default_value_t = 0)]
    http_percent: usize,
    /// Heartbeat (and HTTP polling) interval, seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Size of the offered package, KiB.
    #[arg(long, default_value_t = 64)]
    package_kib: usize,
    /// Agents connecting at the same time.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Downloads running at the same time across all agents (one machine plays the fleet).
    #[arg(long, default_value_t = 256)]
    download_concurrency: usize,
    /// Hard limit for the whole run, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Transport security between agents and server.
    #[arg(long, value_enum, default_value_t = TlsMode::None)]
    tls: TlsMode,
    /// Seconds the connected agents idle before the server's memory is read.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// Stop after the idle measurement: no offer, no downloads.
    #[arg(long)]
    idle_only: bool,
    /// Read the idle CPU over at least this many seconds (whole heartbeat intervals, at least
    /// two); 12 s windows scatter by about two points of a core from run to run.
    #[arg(long, default_value_t = 0)]
    idle_cpu_secs: u64,
    /// Fail (exit 1) when the idle server holds more than this many KiB per agent: the
    /// regression guard of `benches/scripts/quick.sh`.
    #[arg(long)]
    max_kib_per_agent: Option<f64>,
    /// Run the server under this command (for example `heaptrack -o /tmp/server`), split
    /// at spaces. The memory figures then include the wrapper's own.
    #[arg(long)]
    server_wrapper: Option<String>,
    #[arg(long, value_enum, default_value_t = Role::Driver, hide = true)]
    role: Role,
    /// Directory of served packages (server role).
    #[arg(long, hide = true)]
    package_dir: Option<PathBuf>,
    /// Directory of the run's certificates (server role, with `--tls`).
    #[arg(long, hide = true)]
    tls_dir: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    // Each agent is one descriptor on each side, plus one per running download.
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
        Role::Driver => runtime.block_on(drive(args, fd_limit)),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// Server role: serve, offer on `OFFER` from stdin, print `ALL_INSTALLED` when done.

async fn serve(args: Args, fd_limit: u64) {
    let package_dir = args.package_dir.expect("--package-dir");
    let content = std::fs::read(package_dir.join(PACKAGE_FILE)).unwrap();
    let content_hash = ContentHash::of(&content);
    let mut session = opamp_session::ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    session.heartbeat_interval = None;
    let mut config = OpampServerConfig::new(child::LOOPBACK_ANY_PORT)
        .session(session)
        .downloads(DownloadConfig::new(&package_dir));
    if args.tls != TlsMode::None {
        let files = TlsFiles::in_dir(args.tls_dir.as_deref().expect("--tls-dir"));
        let mut tls =
            ServerTls::new(Identity::from_files(&files.server_cert, &files.server_key).unwrap());
        if args.tls == TlsMode::Mtls {
            tls = tls.client_auth(ClientAuth::Required {
                ca_certs_pem: std::fs::read(&files.ca_cert).unwrap(),
            });
        }
        config = config.tls(tls);
    }
    config.max_connections = child::max_connections(fd_limit);
    let (server, mut notifications) = OpampServer::start(config).await.unwrap();
    let scheme = if args.tls == TlsMode::None {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{}/packages/{PACKAGE_FILE}", server.local_addr());
    println!("LISTENING {}", server.local_addr());

    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut offered_at: Option<Instant> = None;
    let mut installed: HashSet<InstanceUid> = HashSet::new();
    let mut connected: HashSet<InstanceUid> = HashSet::new();
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            line = commands.next_line() => match line.unwrap().as_deref() {
                Some("OFFER") => {
                    let name = PackageName::new(PACKAGE_NAME).unwrap();
                    let offer = PackageOffer::new()
                        .with_package(OfferedPackage::top_level(name, PACKAGE_VERSION, url.clone(), content_hash))
                        .unwrap()
                        .build();
                    offered_at = Some(Instant::now());
                    let count = server.sessions().with_all(|_uid, session| {
                        session.offer_packages(offer.clone());
                    });
                    println!("OFFERED {count} in {:.3?}", offered_at.unwrap().elapsed());
                }
                Some(_) => {}
                None => break, // the driver went away
            },
            notification = notifications.recv() => match notification {
                Some(ServerNotification::Connected { uid, .. }) => {
                    connected.insert(uid);
                }
                Some(ServerNotification::Disconnected { uid }) => {
                    connected.remove(&uid);
                }
                Some(ServerNotification::Event { uid, event: ServerEvent::PackageStatusesChanged(statuses) }) => {
                    let done = statuses.packages.get(PACKAGE_NAME).is_some_and(|status| {
                        status.status == i32::from(v1::PackageStatusEnum::Installed)
                            && status.agent_has_version == PACKAGE_VERSION
                    });
                    if done && installed.insert(uid) && installed.len() == args.agents {
                        let elapsed = offered_at.map(|at| at.elapsed()).unwrap_or_default();
                        println!("ALL_INSTALLED {:.3}", elapsed.as_secs_f64());
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = progress.tick() => {
                if offered_at.is_some() {
                    println!("PROGRESS installed {} connected {}", installed.len(), connected.len());
                }
            }
        }
        std::io::stdout().flush().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Driver role.

struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    addr: SocketAddr,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    fn spawn(args: &Args, package_dir: &std::path::Path, tls_dir: &std::path::Path) -> Self {
        let mut command = child::self_command(args.server_wrapper.as_deref());
        let tls = args.tls.to_possible_value().unwrap();
        let mut child = command
            .args(["--role", "server", "--agents", &args.agents.to_string()])
            .args(["--tls", tls.get_name()])
            .arg("--tls-dir")
            .arg(tls_dir)
            .arg("--package-dir")
            .arg(package_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = child::read_until_prefixed(&mut stdout, "LISTENING ")
            .parse()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            addr,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts of what the agents saw, shared by their tasks.
#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    installed: AtomicUsize,
    failed: AtomicUsize,
}

async fn drive(args: Args, fd_limit: u64) -> i32 {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    println!("file descriptor limit: {fd_limit}");
    let work = tempfile::tempdir().unwrap();
    let package_dir = work.path().join("packages");
    std::fs::create_dir_all(&package_dir).unwrap();
    // Incompressible but reproducible content.
    let content: Vec<u8> = (0..args.package_kib * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    std::fs::write(package_dir.join(PACKAGE_FILE), &content).unwrap();

    let tls_dir = work.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let tls_files = TlsFiles::create(&tls_dir);
    let mut server = ServerProcess::spawn(&args, &package_dir, &tls_dir);
    tokio::time::sleep(Duration::from_millis(300)).await; // let the child settle its heap
    let rss_idle = procfs::memory_kib(server.pid(), "VmRSS:").unwrap();

    let tally = Arc::new(Tally::default());
    let connect_gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let download_gate = Arc::new(Semaphore::new(args.download_concurrency.max(1)));
    let ca_pem = std::fs::read(&tls_files.ca_cert).unwrap();
    let mut client_tls = ClientTls::with_ca_pem(ca_pem.clone());
    let mut http = reqwest::Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(args.download_concurrency)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap());
    if args.tls == TlsMode::Mtls {
        client_tls = client_tls
            .identity(Identity::from_files(&tls_files.client_cert, &tls_files.client_key).unwrap());
        let mut identity_pem = std::fs::read(&tls_files.client_cert).unwrap();
        identity_pem.extend(std::fs::read(&tls_files.client_key).unwrap());
        http = http.identity(reqwest::Identity::from_pem(&identity_pem).unwrap());
    }
    let http = http.build().unwrap();
    let http_agents = args.agents * args.http_percent.min(100) / 100;
    for index in 0..args.agents {
        let permit = connect_gate.clone().acquire_owned().await.unwrap();
        let scheme = match (index < http_agents, args.tls) {
            (true, TlsMode::None) => "http",
            (true, _) => "https",
            (false, TlsMode::None) => "ws",
            (false, _) => "wss",
        };
        let mut config = ClientConfig::new(&format!("{scheme}://{}/v1/opamp", server.addr))
            .unwrap()
            .tls(client_tls.clone());
        config.backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut agent = AgentSessionConfig::new(InstanceUid::new_v7(), description(index));
        agent.capabilities |=
            AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
        agent.heartbeat_interval = Some(Duration::from_secs(args.heartbeat_secs));
        let (handle, events) = OpampClient::start(config, agent).unwrap();
        let downloader = Downloader::with_client(
            http.clone(),
            work.path().join("agents").join(index.to_string()),
            DownloadLimits::default(),
        )
        .unwrap();
        tokio::spawn(run_agent(
            handle,
            events,
            downloader,
            permit,
            download_gate.clone(),
            tally.clone(),
        ));
    }
    while tally.connected.load(Ordering::Relaxed) < args.agents {
        if tokio::time::Instant::now() >= deadline {
            println!(
                "FAIL: only {} agents connected",
                tally.connected.load(Ordering::Relaxed)
            );
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "agents connected: {} in {:.1?}",
        args.agents,
        started.elapsed()
    );
    // Let first reports and their answers finish (and the agents idle) before measuring.
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let rss_connected = procfs::memory_kib(server.pid(), "VmRSS:").unwrap();
    let per_agent = rss_connected.saturating_sub(rss_idle) as f64 / args.agents as f64;
    if let Some(limit) = args.max_kib_per_agent
        && per_agent > limit
    {
        println!("FAIL: {per_agent:.1} KiB per idle agent, over the {limit} KiB limit");
        return 1;
    }
    if args.idle_only {
        let (idle_cpu, window) =
            child::idle_cpu(server.pid(), args.heartbeat_secs, args.idle_cpu_secs).await;
        println!(
            "agents: {} over {:?}, heartbeat {} s",
            args.agents, args.tls, args.heartbeat_secs
        );
        println!(
            "server RSS: idle {rss_idle} KiB, {rss_connected} KiB after {} s connected ({per_agent:.1} KiB per agent)",
            args.idle_secs
        );
        println!(
            "server CPU while idle: {idle_cpu:.2?} in {window:.0?} ({:.2}% of one core)",
            idle_cpu.as_secs_f64() / window.as_secs_f64() * 100.0
        );
        return 0;
    }

    let server_cpu_before = procfs::cpu_time(server.pid()).unwrap();
    let driver_cpu_before = procfs::cpu_time(std::process::id()).unwrap();
    let offered = Instant::now();
    writeln!(server.stdin, "OFFER").unwrap();
    server.stdin.flush().unwrap();
    let mut all_installed = None;
    while all_installed.is_none() {
        match tokio::time::timeout_at(deadline, server.lines.recv()).await {
            Ok(Some(line)) => {
                if let Some(seconds) = line.strip_prefix("ALL_INSTALLED ") {
                    all_installed = Some(seconds.parse::<f64>().unwrap());
                } else {
                    println!("server: {line}");
                }
            }
            Ok(None) => {
                println!("FAIL: the server exited");
                return 1;
            }
            Err(_) => {
                println!(
                    "FAIL: timed out; agents installed {}, failed {}",
                    tally.installed.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed)
                );
                return 1;
            }
        }
    }
    let driver_wall = offered.elapsed();
    let server_cpu = procfs::cpu_time(server.pid())
        .unwrap()
        .saturating_sub(server_cpu_before);
    let driver_cpu = procfs::cpu_time(std::process::id())
        .unwrap()
        .saturating_sub(driver_cpu_before);
    let seconds = all_installed.unwrap_or_default();
    let rss_end = procfs::memory_kib(server.pid(), "VmRSS:").unwrap();
    let rss_peak = procfs::memory_kib(server.pid(), "VmHWM:").unwrap();
    println!(
        "agents: {} ({} over HTTP polling every {} s), package {} KiB, download concurrency {}",
        args.agents, http_agents, args.heartbeat_secs, args.package_kib, args.download_concurrency
    );
    println!(
        "offer -> all Installed: {seconds:.3} s at the server ({driver_wall:.2?} seen by the driver); agents done {}, failed downloads {}",
        tally.installed.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    println!(
        "server RSS: idle {rss_idle} KiB, {rss_connected} KiB connected ({per_agent:.1} KiB per agent), {rss_end} KiB after, peak {rss_peak} KiB"
    );
    println!(
        "CPU during the rollout: server {server_cpu:.2?} ({:.0}% of one core), agents+downloads {driver_cpu:.2?}",
        server_cpu.as_secs_f64() / seconds.max(1e-9) * 100.0
    );
    0
}

/// One agent: on an offer, download the package (bounded by `download_gate`), let the
/// downloader check its SHA-256 and fsync it, then report it installed.
async fn run_agent(
    handle: ClientHandle,
    mut events: mpsc::Receiver<ClientEvent>,
    downloader: Downloader,
    connect_permit: tokio::sync::OwnedSemaphorePermit,
    download_gate: Arc<Semaphore>,
    tally: Arc<Tally>,
) {
    let mut connect_permit = Some(connect_permit);
    let mut installed_hash: Option<Vec<u8>> = None;
    while let Some(event) = events.recv().await {
        match event {
            ClientEvent::Connected if connect_permit.take().is_some() => {
                tally.connected.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Agent(event) => {
                let AgentEvent::PackagesAvailable { offer, .. } = *event else {
                    continue;
                };
                if installed_hash.as_deref() == Some(&offer.all_packages_hash[..]) {
                    continue; // the same offer again: already installed
                }
                let Some(statuses) = install(&offer, &downloader, &download_gate).await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                installed_hash = Some(offer.all_packages_hash.clone());
                tally.installed.fetch_add(1, Ordering::Relaxed);
                if handle
                    .update(move |session| {
                        session.set_package_statuses(statuses);
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ => {}
        }
    }
}

async fn install(
    offer: &v1::PackagesAvailable,
    downloader: &Downloader,
    download_gate: &Semaphore,
) -> Option<v1::PackageStatuses> {
    let mut installed = Vec::with_capacity(offer.packages.len());
    for (name, package) in &offer.packages {
        let file = package.file.as_ref()?;
        let request = DownloadRequest::from_downloadable_file(name.clone(), file);
        let downloaded = {
            let _permit = download_gate.acquire().await.ok()?;
            downloader.download(&request, |_| {}).await
        };
        if let Err(error) = &downloaded {
            eprintln!("download of {name} failed: {error}");
            return None;
        }
        let _ = downloader.discard(name); // "installed": the file is not needed any more
        installed.push(sim_agent::package_status(
            name,
            &package.version,
            &package.hash,
            Some(package),
        ));
    }
    Some(sim_agent::statuses(&offer.all_packages_hash, installed))
}

fn description(index: usize) -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![
            v1::KeyValue::string("service.name", "otelcol"),
            v1::KeyValue::string("host.name", format!("fleet-agent-{index}")),
        ],
        non_identifying_attributes: vec![v1::KeyValue::string("os.type", "linux")],
    }
}
