//! A download server at its limit of downloads at once answers 503 with `Retry-After`; the
//! downloader asks again after that wait instead of failing the install. Against the real
//! `opamp-transport` download route (the fleet server's), capped at one download at a time,
//! with a reader that holds the only slot by not reading.
#![allow(clippy::unwrap_used)] // a panic fails the test

mod install_support;

use std::time::{Duration, Instant};

use install_support::{sha256, test_bytes};
use opamp_session::ServerSessionConfig;
use opamp_supervisor::download::{DownloadError, DownloadLimits, DownloadRequest, Downloader};
use opamp_transport::server::{DownloadConfig, OpampServer, OpampServerConfig, RunningServer};
use tokio::io::AsyncWriteExt;

/// Large enough that a reader who reads nothing keeps the server writing (and the slot held).
const SIZE: usize = 16 * 1024 * 1024;

async fn capped_server(dir: &std::path::Path) -> RunningServer {
    let mut config = OpampServerConfig::new("127.0.0.1:0".parse().unwrap())
        .session(ServerSessionConfig::default())
        .downloads(DownloadConfig::new(dir));
    config.admission.max_concurrent_downloads = 1;
    config.retry_after = Duration::from_secs(1);
    OpampServer::start(config).await.unwrap().0
}

/// Opens a download of `path` and reads nothing: the server's only slot stays taken until
/// the connection is dropped.
async fn hold_the_slot(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_is_asked_again_after_its_retry_after() {
    let files = tempfile::tempdir().unwrap();
    let body = test_bytes(SIZE, 7);
    std::fs::write(files.path().join("otelcol.bin"), &body).unwrap();
    let server = capped_server(files.path()).await;
    let addr = server.local_addr();
    let holder = hold_the_slot(addr, "/packages/otelcol.bin").await;

    let dir = tempfile::tempdir().unwrap();
    let downloader =
        Downloader::new(dir.path().join("downloads"), DownloadLimits::default()).unwrap();
    let request = DownloadRequest::new("otelcol", format!("http://{addr}/packages/otelcol.bin"))
        .with_expected_sha256(sha256(&body));
    let started = Instant::now();
    let download = tokio::spawn(async move { downloader.download(&request, |_| {}).await });
    // The downloader meets the busy server at least once, then the slot comes free.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(holder);
    let file = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("the download ends")
        .unwrap()
        .expect("the download succeeds once the server has room");
    assert_eq!(std::fs::read(&file.path).unwrap(), body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it never waited"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_past_the_deadline_is_an_http_status_error() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("otelcol.bin"), test_bytes(SIZE, 8)).unwrap();
    let server = capped_server(files.path()).await;
    let addr = server.local_addr();
    let _holder = hold_the_slot(addr, "/packages/otelcol.bin").await;

    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.total_timeout = Duration::from_secs(3);
    let downloader = Downloader::new(dir.path().join("downloads"), limits).unwrap();
    let request = DownloadRequest::new("otelcol", format!("http://{addr}/packages/otelcol.bin"));
    let started = Instant::now();
    let error = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(
        matches!(error, DownloadError::HttpStatus { status: 503, .. }),
        "{error}"
    );
    // It asked again until the next wait would pass the deadline, not for ever.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    server.shutdown().await;
}
