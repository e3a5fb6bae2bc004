//! Test fixtures for the install pipeline: a real HTTP file server on 127.0.0.1 with Range
//! support and fault modes, and a real child-process [`Collector`] driven by shell scripts.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use opamp_supervisor::install::{Collector, CollectorError, HealthOutcome};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How the server misbehaves on the next body it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Send bytes up to this file offset, then break the connection (once).
    CutAt(usize),
    /// Send bytes up to this file offset, then send nothing more (once).
    StallAt(usize),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Debug)]
pub struct ServerState {
    pub body: Vec<u8>,
    pub etag: String,
    pub fault: Fault,
    /// Send no Content-Length (chunked encoding).
    pub chunked: bool,
    /// Answer 401 unless `Authorization` has this value.
    pub required_authorization: Option<String>,
    pub requests: Vec<SeenRequest>,
}

/// A file server for `GET /file` on 127.0.0.1.
pub struct FileServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ServerState>>,
    task: JoinHandle<()>,
}

impl FileServer {
    pub async fn start(body: Vec<u8>) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), body).await
    }

    pub async fn start_on(addr: SocketAddr, body: Vec<u8>) -> Self {
        Self::serve(addr, new_state(body)).await
    }

    /// A server on `addr` sharing `state` (to bring a "gone" server back with the same file).
    pub async fn serve(addr: SocketAddr, state: Arc<Mutex<ServerState>>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = file_router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/file", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    pub fn set_body(&self, body: Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        state.etag = etag_of(&body);
        state.body = body;
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stops accepting connections (the port is then refused).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `GET /file` router over `state` (for servers with their own transport, e.g. TLS).
pub fn file_router(state: Arc<Mutex<ServerState>>) -> axum::Router {
    axum::Router::new()
        .route("/file", axum::routing::get(serve_file))
        .with_state(state)
}

pub fn new_state(body: Vec<u8>) -> Arc<Mutex<ServerState>> {
    Arc::new(Mutex::new(ServerState {
        etag: etag_of(&body),
        body,
        fault: Fault::None,
        chunked: false,
        required_authorization: None,
        requests: Vec::new(),
    }))
}

fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16])
}

async fn serve_file(State(state): State<Arc<Mutex<ServerState>>>, headers: HeaderMap) -> Response {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = text(header::RANGE);
    let if_range = text(header::IF_RANGE);
    let authorization = text(header::AUTHORIZATION);
    let mut guard = state.lock().unwrap();
    let s = &mut *guard;
    let mut log = SeenRequest {
        range: range.clone(),
        if_range: if_range.clone(),
        authorization: authorization.clone(),
        status: 200,
    };
    if let Some(required) = &s.required_authorization
        && authorization.as_ref() != Some(required)
    {
        log.status = 401;
        s.requests.push(log);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::empty())
            .unwrap();
    }
    let len = s.body.len();
    // If-Range with another validator: the file changed, send it whole.
    let range_applies = if_range.as_ref().is_none_or(|v| *v == s.etag);
    let start = range
        .as_deref()
        .filter(|_| range_applies)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let mut builder = Response::builder()
        .header(header::ETAG, s.etag.clone())
        .header(header::ACCEPT_RANGES, "bytes");
    let start = match start {
        Some(start) if start >= len => {
            log.status = 416;
            s.requests.push(log);
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .unwrap();
        }
        Some(start) => {
            log.status = 206;
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{len}", len - 1),
            );
            start
        }
        None => 0,
    };
    s.requests.push(log);
    if !s.chunked {
        builder = builder.header(header::CONTENT_LENGTH, len - start);
    }
    let data = s.body[start..].to_vec();
    let fault = std::mem::replace(&mut s.fault, Fault::None);
    drop(guard);
    let chunks: Vec<Bytes> = data.chunks(8 * 1024).map(Bytes::copy_from_slice).collect();
    let body = match fault {
        Fault::None => Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        )),
        Fault::CutAt(offset) => {
            let prefix = Bytes::copy_from_slice(&data[..offset.saturating_sub(start)]);
            // hyper polls the body before flushing the headers; an error in the same poll
            // would abort before the response starts. Give the prefix time to go out first.
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("connection cut by the test"))
            });
            Body::from_stream(futures_util::stream::iter([Ok(prefix)]).chain(cut))
        }
        Fault::StallAt(offset) => {
            let prefix = Bytes::copy_from_slice(&data[..offset.saturating_sub(start)]);
            Body::from_stream(
                futures_util::stream::iter([Ok::<_, std::io::Error>(prefix)])
                    .chain(futures_util::stream::pending()),
            )
        }
    };
    builder.body(body).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift) so a test file is not trivially compressible.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

// ---------------------------------------------------------------------------------------------
// Collector scripts and a real child-process collector.

/// A collector that prints `ready <version>` and keeps running.
pub fn healthy_script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho \"ready {version}\"\nexec sleep 1000\n").into_bytes()
}

/// A collector that exits with status 3 at once.
pub fn crash_at_start_script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# version {version}\nexit 3\n").into_bytes()
}

/// A collector that reports ready, then crashes shortly after.
pub fn crash_later_script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho \"ready {version}\"\nsleep 0.1\nexit 4\n").into_bytes()
}

/// A collector that runs but never reports ready.
pub fn unhealthy_script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# version {version}\nexec sleep 1000\n").into_bytes()
}

pub fn write_executable(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the executable as a real child process. Healthy = it printed `ready <version>` and was
/// still alive after the settle window (which catches "crashes shortly after start").
pub struct ScriptCollector {
    child: Option<Child>,
    stdout: Option<tokio::io::Lines<BufReader<ChildStdout>>>,
    pub settle: Duration,
    /// Version printed by the collector that last became healthy.
    pub healthy_version: Option<String>,
    /// Every executable started, in order.
    pub started: Vec<PathBuf>,
    pub stops: usize,
}

impl ScriptCollector {
    pub fn new() -> Self {
        Self {
            child: None,
            stdout: None,
            settle: Duration::from_millis(400),
            healthy_version: None,
            started: Vec::new(),
            stops: 0,
        }
    }

    /// Whether a started child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Collector for ScriptCollector {
    async fn stop(&mut self) -> Result<(), CollectorError> {
        self.stops += 1;
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|e| CollectorError::with_source("kill collector", e))?;
        }
        self.healthy_version = None;
        Ok(())
    }

    async fn start(&mut self, executable: &Path) -> Result<(), CollectorError> {
        self.started.push(executable.to_path_buf());
        let mut child = Command::new(executable)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CollectorError::with_source(format!("spawn {}", executable.display()), e)
            })?;
        self.stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
        self.child = Some(child);
        Ok(())
    }

    async fn wait_healthy(&mut self, deadline: tokio::time::Instant) -> HealthOutcome {
        let (Some(child), Some(lines)) = (self.child.as_mut(), self.stdout.as_mut()) else {
            return HealthOutcome::Exited {
                status: "not started".into(),
            };
        };
        let ready = tokio::time::timeout_at(deadline, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(version) = line.strip_prefix("ready ") {
                            return Some(version.to_owned());
                        }
                    }
                    _ => return None,
                }
            }
        })
        .await;
        match ready {
            Err(_) => HealthOutcome::TimedOut,
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                HealthOutcome::Exited { status }
            }
            Ok(Some(version)) => {
                // Liveness window: a collector that dies right after reporting ready fails.
                tokio::select! {
                    status = child.wait() => HealthOutcome::Exited {
                        status: status.map(|s| s.to_string()).unwrap_or_default(),
                    },
                    () = tokio::time::sleep(self.settle) => {
                        self.healthy_version = Some(version);
                        HealthOutcome::Healthy
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A host: collector executable, storage directory, installer, release key and trust policy.

use opamp_proto::v1::{DownloadableFile, PackageAvailable};
use opamp_supervisor::install::{InstallConfig, InstallEvent, Installer};
use opamp_supervisor::journal::{InstalledState, InstalledStateStore};
use opamp_supervisor::storage::StorageLayout;
use opamp_verify::{
    ContentHash, DowngradeAuthorisation, KeyRing, PublicKey, ReleaseSigner, Statement, TrustPolicy,
    TrustedKey,
};

pub const PACKAGE: &str = "otelcol";

pub struct Host {
    pub dir: tempfile::TempDir,
    pub exe: PathBuf,
    pub layout: StorageLayout,
    pub installer: Installer,
    pub signer: ReleaseSigner,
    pub policy: TrustPolicy,
    pub collector: ScriptCollector,
}

impl Host {
    /// A host running `initial` (recorded as installed version `version`), health timeout 1 s.
    pub async fn new(initial: &[u8], version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let exe = dir.path().join("bin").join("otelcol");
        write_executable(&exe, initial);
        let layout = StorageLayout::create(dir.path().join("storage")).unwrap();
        let mut config = InstallConfig::new(&exe);
        config.health_timeout = Duration::from_secs(1);
        let installer = Installer::new(layout.clone(), config).unwrap();
        let mut state = InstalledState::default();
        state.record_installed(PACKAGE, version, b"initial".to_vec(), None, None);
        InstalledStateStore::new(layout.installed_state_path())
            .save(&state)
            .unwrap();
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let mut keys = KeyRing::new();
        keys.trust(TrustedKey::new(
            PublicKey::from_spki_pem(&signer.public_key().to_spki_pem().unwrap()).unwrap(),
        ));
        let policy = TrustPolicy::new(keys);
        let mut collector = ScriptCollector::new();
        collector.start(&exe).await.unwrap();
        let outcome = collector
            .wait_healthy(tokio::time::Instant::now() + Duration::from_secs(5))
            .await;
        assert!(outcome.is_healthy(), "initial collector: {outcome}");
        Self {
            dir,
            exe,
            layout,
            installer,
            signer,
            policy,
            collector,
        }
    }

    /// An offer of `bytes` as `version` served at `url`, signed by this host's release key.
    pub fn offer(&self, url: &str, version: &str, bytes: &[u8]) -> PackageAvailable {
        self.offer_signed(
            url,
            version,
            bytes,
            &self.signer,
            DowngradeAuthorisation::Forbidden,
        )
    }

    pub fn offer_signed(
        &self,
        url: &str,
        version: &str,
        bytes: &[u8],
        signer: &ReleaseSigner,
        downgrade: DowngradeAuthorisation,
    ) -> PackageAvailable {
        let hash = ContentHash::of(bytes);
        let expiry = std::time::SystemTime::now() + Duration::from_secs(3600);
        let statement = Statement::new(PACKAGE, version, hash, bytes.len() as u64, expiry)
            .unwrap()
            .with_downgrade(downgrade);
        let signature = signer.sign_statement(&statement).unwrap();
        PackageAvailable {
            r#type: opamp_proto::v1::PackageType::TopLevel as i32,
            version: version.to_owned(),
            file: Some(DownloadableFile {
                download_url: url.to_owned(),
                content_hash: hash.as_bytes().to_vec(),
                signature,
                headers: None,
            }),
            hash: sha256(format!("{version}:{url}").as_bytes()).to_vec(),
        }
    }

    /// Whether the supervisor's decision on `offer` now is to install it.
    pub fn would_install(&self, offer: &PackageAvailable) -> bool {
        matches!(
            self.installer
                .decide_offer(PACKAGE, offer, &self.policy, std::time::SystemTime::now()),
            opamp_supervisor::decide::CollectorDecision::Install { .. }
        )
    }

    /// Runs `install_offer` and returns its result with the events it reported.
    pub async fn install(
        &mut self,
        offer: &PackageAvailable,
    ) -> (
        Result<opamp_supervisor::install::Installed, opamp_supervisor::install::InstallFailed>,
        Vec<(std::time::Instant, InstallEvent)>,
    ) {
        let mut events = Vec::new();
        let result = self
            .installer
            .install_offer(
                &mut self.collector,
                PACKAGE,
                offer,
                &self.policy,
                std::time::SystemTime::now(),
                &mut |e| events.push((std::time::Instant::now(), e)),
            )
            .await;
        (result, events)
    }

    pub fn exe_content(&self) -> Vec<u8> {
        std::fs::read(&self.exe).unwrap()
    }

    pub fn previous_path(&self) -> PathBuf {
        self.exe.with_file_name("otelcol.previous")
    }

    pub fn next_path(&self) -> PathBuf {
        self.exe.with_file_name("otelcol.next")
    }

    pub fn state(&self) -> InstalledState {
        InstalledStateStore::new(self.layout.installed_state_path())
            .load()
            .unwrap()
    }
}
