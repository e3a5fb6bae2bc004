//! Load test: N simulated agents over WebSocket against one OpAMP server on loopback.
//!
//! The server runs in a child process (this same binary with `--role server`) so its
//! memory and CPU are measured alone, from `/proc/<pid>/status` (VmRSS) and
//! `/proc/<pid>/stat` (utime + stime, in USER_HZ = 100 ticks per second on Linux).
//!
//! ```text
//! cargo run --release -p opamp-transport --example load -- --agents 10000 --window-secs 60
//! ```
//!
//! Prints: agents connected and still held after the window, server RSS before and after
//! and per connection, and the server's CPU use over the window at the heartbeat interval.
//!
//! `--restart` then kills the server (SIGKILL), starts a new one on the same address and
//! times the reconnect storm: how long until every agent is connected again (agents use the
//! default back-off, 1 s doubling to 60 s with jitter, as deployed agents do), the new
//! server's CPU per handshake, and its RSS once they are all back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::AgentSessionConfig;
use opamp_transport::client::{Backoff, ClientConfig, ClientEvent, OpampClient};
use opamp_transport::server::{OpampServer, OpampServerConfig};
use opamp_transport::tls::{ClientTls, Identity, ServerTls};
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Opens the agents and measures the server (default).
    Driver,
    /// The measured server; prints `LISTENING <addr>` and serves until killed.
    Server,
}

#[derive(Parser, Debug)]
#[command(about = "OpAMP WebSocket load test on loopback")]
struct Args {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Heartbeat interval of every agent, seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// How long to measure the server's CPU with all agents connected, seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// Agents connecting at the same time.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Use TLS (wss://) with a certificate made at start.
    #[arg(long)]
    tls: bool,
    #[arg(long, value_enum, default_value_t = Role::Driver, hide = true)]
    role: Role,
    /// Server certificate and key (PEM files), given to the server child with `--tls`.
    #[arg(long, hide = true, num_args = 2)]
    server_identity: Option<Vec<std::path::PathBuf>>,
    /// After the window, kill the server, start a new one on the same address and time
    /// until every agent is back.
    #[arg(long)]
    restart: bool,
    /// Address the server child listens on (the restarted server reuses the first one's).
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() {
    let args = Args::parse();
    // Each agent is one file descriptor on each side.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.role {
        Role::Server => runtime.block_on(serve(limit, args.listen, args.server_identity)),
        Role::Driver => runtime.block_on(drive(args, limit)),
    }
}

async fn serve(fd_limit: u64, listen: SocketAddr, identity: Option<Vec<std::path::PathBuf>>) {
    let mut session = opamp_session::ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    session.heartbeat_interval = None;
    let mut config = OpampServerConfig::new(listen).session(session);
    if let Some(files) = identity {
        let identity = Identity::from_files(&files[0], &files[1]).unwrap();
        config = config.tls(ServerTls::new(identity));
    }
    config.max_connections = usize::try_from(fd_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(100)
        .max(1);
    let (server, mut notifications) = OpampServer::start(config).await.unwrap();
    println!("LISTENING {}", server.local_addr());
    // Drain notifications as an embedding server would.
    while notifications.recv().await.is_some() {}
}

struct ServerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(identity: Option<&[std::path::PathBuf]>, listen: Option<SocketAddr>) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["--role", "server"]);
        if let Some(listen) = listen {
            command.arg("--listen").arg(listen.to_string());
        }
        if let Some(files) = identity {
            command.arg("--server-identity").args(files);
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .expect("server did not start")
            .parse()
            .unwrap();
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// CPU time used so far (user + system), from USER_HZ ticks.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn drive(args: Args, fd_limit: u64) {
    println!("file descriptor limit: {fd_limit}");
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = args.tls.then(|| make_certificate(dir.path()));
    let identity_files = [dir.path().join("server.pem"), dir.path().join("server.key")];
    let identity = ca_pem.as_ref().map(|_| &identity_files[..]);
    let mut server = ServerProcess::spawn(identity, None);
    tokio::time::sleep(Duration::from_millis(300)).await; // let the child settle its heap
    let rss_before = server.rss_kib();
    let scheme = if args.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/v1/opamp", server.addr);

    let connected = Arc::new(AtomicUsize::new(0));
    let disconnected = Arc::new(AtomicUsize::new(0));
    // Agents connected now; each agent's task counts itself in and out once per connection.
    let (up, back) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(tokio::sync::Notify::new()),
    );
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.agents);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..args.agents {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let mut config = ClientConfig::new(&url).unwrap();
        if !args.restart {
            config.backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        }
        if let Some(ca_pem) = &ca_pem {
            config = config.tls(ClientTls::with_ca_pem(ca_pem.clone()));
        }
        let mut agent = AgentSessionConfig::new(InstanceUid::new_v7(), description(i));
        agent.capabilities |=
            AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
        agent.heartbeat_interval = Some(Duration::from_secs(args.heartbeat_secs));
        let (handle, mut events) = OpampClient::start(config, agent).unwrap();
        handles.push(handle);
        let (connected, disconnected, ready_tx) =
            (connected.clone(), disconnected.clone(), ready_tx.clone());
        let (up, back) = (up.clone(), back.clone());
        tokio::spawn(async move {
            let mut permit = Some(permit);
            let mut first = true;
            let mut is_up = false;
            while let Some(event) = events.recv().await {
                match event {
                    ClientEvent::Connected => {
                        connected.fetch_add(1, Ordering::Relaxed);
                        if !std::mem::replace(&mut is_up, true) {
                            up.fetch_add(1, Ordering::Relaxed);
                            back.notify_one();
                        }
                        permit.take();
                        if first {
                            first = false;
                            let _ = ready_tx.send(());
                        }
                    }
                    ClientEvent::Disconnected { .. } => {
                        disconnected.fetch_add(1, Ordering::Relaxed);
                        if std::mem::replace(&mut is_up, false) {
                            up.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for _ in 0..args.agents {
        if tokio::time::timeout_at(deadline, ready_rx.recv())
            .await
            .is_err()
        {
            break;
        }
    }
    let connect_time = started.elapsed();
    let held_at_start = connected.load(Ordering::Relaxed) - disconnected.load(Ordering::Relaxed);
    println!(
        "agents connected: {held_at_start}/{} in {connect_time:.1?}",
        args.agents
    );

    // Let first reports and answers finish before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = server.rss_kib();
    let cpu_start = server.cpu();
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.window_secs)).await;
    let window = window_start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_start);
    let rss_end = server.rss_kib();
    let held = connected.load(Ordering::Relaxed) - disconnected.load(Ordering::Relaxed);

    let per_agent = (rss_connected.saturating_sub(rss_before)) as f64 / held_at_start.max(1) as f64;
    println!(
        "connections held after {window:.0?}: {held} (disconnects seen: {})",
        disconnected.load(Ordering::Relaxed)
    );
    println!(
        "server RSS: {rss_before} KiB idle, {rss_connected} KiB with agents, {rss_end} KiB at end"
    );
    println!("server RSS per connection: {per_agent:.1} KiB");
    println!(
        "server CPU over {window:.0?} at {} s heartbeats: {cpu:.2?} = {:.2}% of one core ({:.0} heartbeats/s)",
        args.heartbeat_secs,
        cpu.as_secs_f64() / window.as_secs_f64() * 100.0,
        held as f64 / args.heartbeat_secs as f64
    );
    if args.restart {
        reconnect_storm(&mut server, identity, [&connected, &up], &back, args.agents).await;
    }
    drop(handles); // Closing the handles stops the agents.
}

/// Kills the server, starts a new one on the same address and waits (at most 120 s) until
/// `agents` connected anew and are all up (`connections` counts every connection made, `up`
/// the agents connected now).
async fn reconnect_storm(
    server: &mut ServerProcess,
    identity: Option<&[std::path::PathBuf]>,
    [connections, up]: [&AtomicUsize; 2],
    back: &tokio::sync::Notify,
    agents: usize,
) {
    let addr = server.addr;
    let before = connections.load(Ordering::Relaxed);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let killed = Instant::now();
    *server = ServerProcess::spawn(identity, Some(addr));
    let restarted = killed.elapsed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while connections.load(Ordering::Relaxed) - before < agents
        || up.load(Ordering::Relaxed) < agents
    {
        if tokio::time::timeout_at(deadline, back.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let all_back = killed.elapsed();
    let cpu = server.cpu();
    let now_up = up.load(Ordering::Relaxed);
    println!(
        "restart: new server listening {restarted:.1?} after the kill; {now_up}/{agents} agents back {all_back:.1?} after the kill"
    );
    println!(
        "restart: new server CPU until then {cpu:.2?} = {:.0} handshakes per CPU second; RSS {} KiB",
        now_up as f64 / cpu.as_secs_f64().max(0.01),
        server.rss_kib()
    );
}

/// A self-signed certificate for 127.0.0.1, written as server.pem/server.key; returns the
/// certificate PEM, which the agents trust.
fn make_certificate(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    cert.pem()
}

fn description(i: usize) -> v1::AgentDescription {
    let attribute = |key: &str, value: String| v1::KeyValue {
        key: key.to_owned(),
        value: Some(v1::AnyValue {
            value: Some(v1::any_value::Value::StringValue(value)),
        }),
    };
    v1::AgentDescription {
        identifying_attributes: vec![
            attribute("service.name", "otelcol".to_owned()),
            attribute("host.name", format!("load-agent-{i}")),
        ],
        non_identifying_attributes: vec![attribute("os.type", "linux".to_owned())],
    }
}
