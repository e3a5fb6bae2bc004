//! Downloads against hostile HTTP servers on 127.0.0.1 (issue 23, items 2, 3 and 5): an endless
//! chunked body stops at the signed size, a trickle fails the minimum-throughput rule, a steady
//! but endless body hits the total deadline, a caller cancels, and a redirect to another origin
//! carries none of the offer's headers.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use opamp_supervisor::download::{DownloadError, DownloadLimits, DownloadRequest, Downloader};
use tokio_util::sync::CancellationToken;

/// How `GET /file` answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Chunked, never ends, 8 KiB chunks as fast as the client reads.
    Endless,
    /// One byte every `interval`, forever.
    Trickle(Duration),
    /// 1 KiB every 50 ms forever (20 KiB/s: above any minimum the tests set).
    Steady,
    /// Nothing after the headers.
    Stall,
    /// `302` to the server's redirect target.
    Redirect,
    /// 16 bytes.
    Small,
}

#[derive(Default)]
struct Seen {
    requests: Vec<HeaderMap>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Server {
    async fn start(body: Answer) -> Self {
        Self::start_with(body, String::new()).await
    }

    async fn start_with(body: Answer, redirect_to: String) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = (body, Arc::clone(&seen), redirect_to);
        let router = axum::Router::new()
            .route("/file", axum::routing::get(serve))
            .route("/other", axum::routing::get(serve))
            .with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/file", self.addr)
    }

    fn requests(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().requests.clone()
    }
}

type ServeState = Arc<(Answer, Arc<Mutex<Seen>>, String)>;

async fn serve(State(state): State<ServeState>, headers: HeaderMap) -> Response {
    let (body, seen, redirect_to) = (&state.0, &state.1, &state.2);
    seen.lock().unwrap().requests.push(headers);
    let stream: Body = match *body {
        Answer::Endless => Body::from_stream(futures_util::stream::unfold((), move |()| {
            let chunk = ok(Bytes::from(vec![7u8; 8 * 1024]));
            async move { Some((chunk, ())) }
        })),
        Answer::Trickle(interval) => {
            Body::from_stream(futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(interval).await;
                Some((ok(Bytes::from_static(b"x")), ()))
            }))
        }
        Answer::Steady => {
            Body::from_stream(futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((ok(Bytes::from(vec![1u8; 1024])), ()))
            }))
        }
        Answer::Stall => {
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())
        }
        Answer::Redirect => {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, redirect_to.as_str())
                .body(Body::empty())
                .unwrap();
        }
        Answer::Small => Body::from(vec![5u8; 16]),
    };
    Response::builder()
        .header(header::ETAG, "\"fixed\"")
        .body(stream)
        .unwrap()
}

fn ok(chunk: Bytes) -> Result<Bytes, std::io::Error> {
    Ok(chunk)
}

fn downloader(dir: &tempfile::TempDir, limits: DownloadLimits) -> Downloader {
    Downloader::new(dir.path().join("downloads"), limits).unwrap()
}

/// Bounds a download the old code never finished, so that the test fails instead of hanging.
async fn bounded<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the download did not end within 20 s")
}

#[tokio::test]
async fn an_endless_chunked_body_stops_at_the_signed_size() {
    let server = Server::start(Answer::Endless).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::with_max_size(4 << 20));
    let request = DownloadRequest::new("signed", server.url()).with_expected_size(91);
    let err = bounded(downloader.download(&request, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit: 91, .. }),
        "{err}"
    );
    // Refused at the first chunk that would pass the signed size; nothing is left on disk.
    assert!(!downloader.partial_path("signed").exists());
}

#[tokio::test]
async fn a_trickling_body_fails_the_minimum_throughput_rule() {
    let server = Server::start(Answer::Trickle(Duration::from_millis(100))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.min_bytes_per_second = 100;
    limits.throughput_window = Duration::from_secs(1);
    let downloader = downloader(&dir, limits);
    let request = DownloadRequest::new("trickle", server.url());
    let started = Instant::now();
    let err = bounded(downloader.download(&request, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooSlow { minimum: 100, measured, .. } if measured < 100),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_resumable());
}

#[tokio::test]
async fn a_steady_endless_body_hits_the_total_deadline() {
    let server = Server::start(Answer::Steady).await;
    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.total_timeout = Duration::from_millis(1500);
    limits.min_bytes_per_second = 1000;
    limits.throughput_window = Duration::from_secs(1);
    let downloader = downloader(&dir, limits);
    let started = Instant::now();
    let err = bounded(downloader.download(&DownloadRequest::new("steady", server.url()), |_| {}))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, DownloadError::DeadlineExceeded { received, .. } if received > 0),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_total_deadline_also_bounds_a_silent_server() {
    let server = Server::start(Answer::Stall).await;
    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.total_timeout = Duration::from_millis(500);
    let downloader = downloader(&dir, limits);
    let err = bounded(downloader.download(&DownloadRequest::new("stall", server.url()), |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::DeadlineExceeded { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_cancelled_download_ends_at_once_and_keeps_its_bytes() {
    let server = Server::start(Answer::Trickle(Duration::from_millis(20))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.progress_interval = Duration::ZERO;
    let downloader = downloader(&dir, limits);
    let request = DownloadRequest::new("cancelled", server.url());
    let cancel = CancellationToken::new();
    let (first_bytes, mut got_bytes) = tokio::sync::mpsc::unbounded_channel();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        // Cancel once the body is flowing (an event, not a sleep).
        let _ = got_bytes.recv().await;
        canceller.cancel();
    });
    let started = Instant::now();
    let err = bounded(downloader.download_cancellable(&request, &cancel, |p| {
        if p.bytes > 0 {
            let _ = first_bytes.send(());
        }
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::Cancelled { received } if received > 0),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(downloader.partial_path("cancelled").exists());
}

#[tokio::test]
async fn a_cross_origin_redirect_carries_none_of_the_offer_headers() {
    let target = Server::start(Answer::Small).await;
    let origin = Server::start_with(Answer::Redirect, target.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("moved", origin.url())
        .with_header("Authorization", "Bearer t0k")
        .with_header("X-Offer-Secret", "s3cret");
    let file = bounded(downloader.download(&request, |_| {}))
        .await
        .unwrap();
    assert_eq!(file.size(), 16);
    let at_origin = origin.requests();
    assert_eq!(at_origin.len(), 1);
    assert_eq!(at_origin[0]["x-offer-secret"], "s3cret");
    let at_target = target.requests();
    assert_eq!(at_target.len(), 1);
    assert!(
        at_target[0].get("x-offer-secret").is_none() && at_target[0].get("authorization").is_none(),
        "headers forwarded cross-origin: {:?}",
        at_target[0]
    );
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_the_offer_headers() {
    // `/file` and `/other` both redirect to `/other` on the same server: every hop stays on the
    // offer's origin, and the chain ends at the redirect limit.
    let origin = Server::start_with(Answer::Redirect, "/other".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request =
        DownloadRequest::new("same", origin.url()).with_header("X-Offer-Secret", "s3cret");
    let err = bounded(downloader.download(&request, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooManyRedirects { .. }),
        "{err}"
    );
    let requests = origin.requests();
    assert_eq!(requests.len(), 11);
    assert!(requests.iter().all(|r| r["x-offer-secret"] == "s3cret"));
}
