//! Simulated agents multiplexed on shared WebSockets: OpAMP lets several agents share one
//! socket (each message carries its `instance_uid`, and the server answers each agent under
//! its own), so one load process can hold more agents than it may open sockets. Each agent
//! is an `opamp-session` `AgentSession` that reports [`PACKAGE`] 1.0.0 installed and healthy
//! and, on an offer, downloads the package into memory, checks its SHA-256 and reports
//! `Installed` (no disk: at 100,000 agents the disk writes of `sim_agent` would measure the
//! disk, not the server).

// Load-tool code: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use opamp_proto::codec::Limits;
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::{AgentEvent, AgentSession, AgentSessionConfig, TransportMode, framing};
use opamp_verify::{ContentHash, ContentHasher};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::sim_agent::{PACKAGE, description, package_status, statuses};

/// Sockets being set up at the same time by one [`MuxPool::start_all`].
const CONNECTING_AT_ONCE: usize = 200;

/// Largest package the simulated agents accept.
const MAX_PACKAGE: u64 = 64 << 20;

/// What the multiplexed agents of one process share: their settings, the HTTP client and the
/// limit on downloads running at the same time.
#[derive(Clone)]
pub struct MuxPool {
    heartbeat: Duration,
    per_socket: usize,
    http: reqwest::Client,
    downloads: Arc<Semaphore>,
}

/// A finished download, handed back to the socket task that owns the agent.
struct Installed {
    agent: usize,
    /// The offer's `all_packages_hash`, echoed in the report.
    all_hash: Vec<u8>,
    package: v1::PackageAvailable,
}

/// One agent of a socket: its session and the version it runs.
struct MuxAgent {
    session: AgentSession,
    version: String,
    has_hash: Vec<u8>,
    /// The version being downloaded, so a repeated offer does not start a second download.
    downloading: Option<String>,
    /// When this agent sends one extra full report, which moves its heartbeats to their own
    /// phase (see [`run_socket`]).
    nudge_at: Option<Instant>,
}

impl MuxPool {
    /// Agents with `heartbeat`, `per_socket` of them on each WebSocket, at most
    /// `download_concurrency` downloads at a time.
    #[must_use]
    pub fn new(heartbeat: Duration, per_socket: usize, download_concurrency: usize) -> Self {
        let http = reqwest::Client::builder()
            .no_gzip()
            .pool_max_idle_per_host(download_concurrency)
            .build()
            .unwrap();
        MuxPool {
            heartbeat,
            per_socket: per_socket.max(1),
            http,
            downloads: Arc::new(Semaphore::new(download_concurrency.max(1))),
        }
    }

    /// Starts agents `indices` on sockets to `endpoint` (a `ws://.../v1/opamp` URL), at most
    /// 200 sockets connecting at a time; the receiver gets one `()` per agent when its socket
    /// first connects. Call it inside a tokio runtime.
    pub async fn start_all(
        &self,
        indices: std::ops::Range<usize>,
        endpoint: &str,
    ) -> mpsc::UnboundedReceiver<()> {
        let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let (connected_tx, connected_rx) = mpsc::unbounded_channel();
        let mut first = indices.start;
        while first < indices.end {
            let last = (first + self.per_socket).min(indices.end);
            let permit = gate.clone().acquire_owned().await.unwrap();
            tokio::spawn(run_socket(
                self.clone(),
                endpoint.to_owned(),
                first..last,
                permit,
                connected_tx.clone(),
            ));
            first = last;
        }
        connected_rx
    }

    fn agent(&self, index: usize) -> MuxAgent {
        let mut config = AgentSessionConfig::new(InstanceUid::new_v7(), description(index));
        config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
            | AgentCapabilities::REPORTS_PACKAGE_STATUSES
            | AgentCapabilities::REPORTS_HEALTH;
        config.heartbeat_interval = Some(self.heartbeat);
        let mut session = AgentSession::new(config);
        let version = "1.0.0".to_owned();
        let has_hash = b"preinstalled".to_vec();
        session.set_health(v1::ComponentHealth {
            healthy: true,
            ..Default::default()
        });
        session.set_package_statuses(statuses(
            &[],
            [package_status(PACKAGE, &version, &has_hash, None)],
        ));
        MuxAgent {
            session,
            version,
            has_hash,
            downloading: None,
            nudge_at: None,
        }
    }
}

impl MuxAgent {
    /// Reports the version it runs against `offered` (of the offer whose all-packages hash
    /// is `all_hash`).
    fn report_offered(&mut self, all_hash: &[u8], offered: &v1::PackageAvailable) {
        let report = statuses(
            all_hash,
            [package_status(
                PACKAGE,
                &self.version,
                &self.has_hash,
                Some(offered),
            )],
        );
        self.session.set_package_statuses(report);
    }
}

/// One socket and its agents, reconnecting (all of them) when it is lost.
async fn run_socket(
    pool: MuxPool,
    endpoint: String,
    indices: std::ops::Range<usize>,
    connect_permit: OwnedSemaphorePermit,
    connected: mpsc::UnboundedSender<()>,
) {
    let mut agents: Vec<MuxAgent> = indices.clone().map(|i| pool.agent(i)).collect();
    let by_uid: HashMap<InstanceUid, usize> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| (agent.session.instance_uid(), i))
        .collect();
    let (installed_tx, mut installed_rx) = mpsc::unbounded_channel::<Installed>();
    let mut connect_permit = Some(connect_permit);
    let mut retry = Duration::from_millis(200);
    loop {
        let socket = match tokio_tungstenite::connect_async(endpoint.as_str()).await {
            Ok((socket, _)) => socket,
            Err(_) => {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry = Duration::from_millis(200);
        let now = Instant::now();
        for agent in &mut agents {
            agent.session.handle_connected(now);
        }
        if connect_permit.take().is_some() {
            // Agents that share a socket connect together and would send their heartbeats
            // together, which the server reads in one go: cheaper than separate agents. One
            // extra report each, spread over the first interval, gives agent k of n the phase
            // k/n of the interval, as independent agents have.
            let count = u32::try_from(agents.len()).unwrap();
            for (k, agent) in (0..count).zip(&mut agents) {
                let _ = connected.send(());
                if k > 0 {
                    agent.nudge_at = Some(now + pool.heartbeat * k / count);
                }
            }
        }
        let context = SocketContext {
            pool: &pool,
            by_uid: &by_uid,
            installed: &installed_tx,
        };
        serve(&context, &mut agents, &mut installed_rx, socket).await;
        let now = Instant::now();
        for agent in &mut agents {
            agent.session.handle_disconnected(now);
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a socket's task lends to its loop.
struct SocketContext<'a> {
    pool: &'a MuxPool,
    by_uid: &'a HashMap<InstanceUid, usize>,
    installed: &'a mpsc::UnboundedSender<Installed>,
}

/// Serves the agents on `socket` until it is lost.
async fn serve(
    context: &SocketContext<'_>,
    agents: &mut [MuxAgent],
    installed: &mut mpsc::UnboundedReceiver<Installed>,
    mut socket: Socket,
) {
    let limits = Limits::default();
    loop {
        let now = Instant::now();
        for agent in agents.iter_mut() {
            while let Some(message) = agent.session.poll_transmit(now) {
                let frame = framing::encode_agent_message(TransportMode::WebSocket, &message);
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    return;
                }
            }
        }
        let wake = agents
            .iter()
            .flat_map(|agent| [agent.session.poll_timeout(), agent.nudge_at])
            .flatten()
            .min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = socket.next() => match received {
                Some(Ok(Message::Binary(frame))) => {
                    let Ok(message) = framing::decode_server_message(TransportMode::WebSocket, &frame, &limits) else {
                        return;
                    };
                    let Some(uid) = InstanceUid::from_slice(&message.instance_uid).ok() else { continue };
                    let Some(&index) = context.by_uid.get(&uid) else { continue };
                    let agent = &mut agents[index];
                    if agent.session.handle_message(message, Instant::now()).is_err() {
                        continue;
                    }
                    while let Some(event) = agent.session.poll_event() {
                        on_event(context, index, agent, event);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            Some(done) = installed.recv() => {
                let agent = &mut agents[done.agent];
                agent.downloading = None;
                agent.version.clone_from(&done.package.version);
                agent.has_hash.clone_from(&done.package.hash);
                agent.report_offered(&done.all_hash, &done.package);
            }
            () = sleep => {
                let now = Instant::now();
                for agent in agents.iter_mut() {
                    if agent.nudge_at.is_some_and(|at| at <= now) {
                        agent.nudge_at = None;
                        agent.session.request_full_report();
                    }
                    agent.session.handle_timeout(now);
                }
            }
        }
    }
}

/// What agent `index` does with one session event: on a package offer, report at once when
/// it already runs the offered version, else start the download (once).
fn on_event(context: &SocketContext<'_>, index: usize, agent: &mut MuxAgent, event: AgentEvent) {
    let AgentEvent::PackagesAvailable { offer, .. } = event else {
        return;
    };
    let Some(package) = offer.packages.get(PACKAGE) else {
        return;
    };
    if package.version == agent.version {
        agent.report_offered(&offer.all_packages_hash, package);
        return;
    }
    if agent.downloading.as_deref() == Some(package.version.as_str()) {
        return;
    }
    let Some(file) = package.file.clone() else {
        return;
    };
    agent.downloading = Some(package.version.clone());
    let pool = context.pool.clone();
    let installed = context.installed.clone();
    let done = Installed {
        agent: index,
        all_hash: offer.all_packages_hash.clone(),
        package: package.clone(),
    };
    tokio::spawn(async move {
        let _permit = pool.downloads.acquire().await.unwrap();
        match download_in_memory(&pool.http, &file).await {
            Ok(()) => {
                let _ = installed.send(done);
            }
            Err(error) => eprintln!("download failed: {error}"),
        }
    });
}

/// Fetches `file` into memory and checks its SHA-256 against `content_hash`, waiting out
/// `503` answers (the server's bound on downloads at once).
async fn download_in_memory(
    http: &reqwest::Client,
    file: &v1::DownloadableFile,
) -> Result<(), String> {
    let expected = ContentHash::from_slice(&file.content_hash).map_err(|e| e.to_string())?;
    for _ in 0..60 {
        let mut request = http.get(&file.download_url);
        for header in file.headers.iter().flat_map(|h| &h.headers) {
            request = request.header(&header.key, &header.value);
        }
        let mut response = request.send().await.map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut hasher = ContentHasher::new(MAX_PACKAGE);
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            hasher.update(&chunk).map_err(|e| e.to_string())?;
        }
        hasher
            .finish()
            .expect_hash(&expected)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err("the server stayed busy for a minute".to_owned())
}
