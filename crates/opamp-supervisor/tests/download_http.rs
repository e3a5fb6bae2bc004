//! Downloads against a real HTTP server on 127.0.0.1: complete, cut and resumed, server gone,
//! file changed between attempts, too large, wrong hash, stalled.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use std::time::Duration;

use install_support::{Fault, FileServer, sha256, test_bytes};
use opamp_packages::ContentHash;
use opamp_supervisor::download::{
    DownloadError, DownloadLimits, DownloadProgress, DownloadRequest, Downloader,
};

const SIZE: usize = 300 * 1024;

fn downloader(dir: &tempfile::TempDir, limits: DownloadLimits) -> Downloader {
    Downloader::new(dir.path().join("downloads"), limits).unwrap()
}

#[tokio::test]
async fn complete_download_reports_progress_and_sends_offer_headers() {
    let body = test_bytes(SIZE, 1);
    let server = FileServer::start(body.clone()).await;
    server.state.lock().unwrap().required_authorization = Some("Bearer t0k".into());
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("otelcol", server.url())
        .with_header("Authorization", "Bearer t0k")
        .with_expected_sha256(sha256(&body));

    let mut seen: Vec<DownloadProgress> = Vec::new();
    let file = downloader
        .download(&request, |p| seen.push(p))
        .await
        .unwrap();

    assert_eq!(std::fs::read(&file.path).unwrap(), body);
    assert_eq!(file.sha256(), ContentHash::of(&body));
    assert_eq!(file.size(), SIZE as u64);
    assert_eq!(file.resumed_from, 0);
    assert!(!downloader.partial_path("otelcol").exists());
    let last = seen.last().unwrap();
    assert_eq!(last.bytes, SIZE as u64);
    assert_eq!(last.total, Some(SIZE as u64));
    assert_eq!(last.percent(), Some(100.0));
    assert!(seen.windows(2).all(|w| w[0].bytes <= w[1].bytes));
}

#[tokio::test]
async fn offer_headers_from_downloadable_file_are_sent() {
    let body = test_bytes(1000, 2);
    let server = FileServer::start(body.clone()).await;
    server.state.lock().unwrap().required_authorization = Some("Bearer abc".into());
    let dir = tempfile::tempdir().unwrap();
    let file = opamp_proto::v1::DownloadableFile {
        download_url: server.url(),
        content_hash: sha256(&body).to_vec(),
        signature: Vec::new(),
        headers: Some(opamp_proto::v1::Headers {
            headers: vec![opamp_proto::v1::Header {
                key: "Authorization".into(),
                value: "Bearer abc".into(),
            }],
        }),
    };
    let request = DownloadRequest::from_downloadable_file("otelcol", &file);
    let done = downloader(&dir, DownloadLimits::default())
        .download(&request, |_| {})
        .await
        .unwrap();
    assert_eq!(done.sha256(), ContentHash::of(&body));
}

#[tokio::test]
async fn truncated_download_resumes_with_range_and_if_range() {
    let body = test_bytes(SIZE, 3);
    let server = FileServer::start(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("otelcol", server.url()).with_expected_sha256(sha256(&body));

    server.set_fault(Fault::CutAt(100_000));
    let err = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(err.is_resumable(), "{err}");
    assert_eq!(
        std::fs::metadata(downloader.partial_path("otelcol"))
            .unwrap()
            .len(),
        100_000
    );

    let file = downloader.download(&request, |_| {}).await.unwrap();
    assert_eq!(file.resumed_from, 100_000);
    assert_eq!(std::fs::read(&file.path).unwrap(), body);
    let requests = server.requests();
    let resume = requests.last().unwrap();
    assert_eq!(resume.range.as_deref(), Some("bytes=100000-"));
    assert!(resume.if_range.is_some());
    assert_eq!(resume.status, 206);
}

#[tokio::test]
async fn server_gone_mid_download_then_back_resumes() {
    let body = test_bytes(SIZE, 4);
    let server = FileServer::start(body.clone()).await;
    let addr = server.addr;
    let state = std::sync::Arc::clone(&server.state);
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("otelcol", server.url()).with_expected_sha256(sha256(&body));

    server.set_fault(Fault::CutAt(64 * 1024));
    let err = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Interrupted {
                received: 65536,
                ..
            }
        ),
        "{err}"
    );
    server.shutdown();
    drop(server);

    let err = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(matches!(err, DownloadError::Connect { .. }), "{err}");
    // The bytes already fetched survive a refused connection.
    assert_eq!(
        std::fs::metadata(downloader.partial_path("otelcol"))
            .unwrap()
            .len(),
        64 * 1024
    );

    let _back = FileServer::serve(addr, state).await;
    let file = downloader.download(&request, |_| {}).await.unwrap();
    assert_eq!(file.resumed_from, 64 * 1024);
    assert_eq!(file.sha256(), ContentHash::of(&body));
}

#[tokio::test]
async fn file_changed_between_attempts_restarts_from_zero() {
    let old = test_bytes(SIZE, 5);
    let new = test_bytes(SIZE + 10, 6);
    let server = FileServer::start(old).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("otelcol", server.url());

    server.set_fault(Fault::CutAt(50_000));
    downloader.download(&request, |_| {}).await.unwrap_err();
    server.set_body(new.clone());

    let file = downloader.download(&request, |_| {}).await.unwrap();
    assert_eq!(
        file.resumed_from, 0,
        "If-Range must make the server send the new file whole"
    );
    assert_eq!(std::fs::read(&file.path).unwrap(), new);
}

#[tokio::test]
async fn complete_partial_is_finished_on_416() {
    let body = test_bytes(20_000, 7);
    let server = FileServer::start(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("otelcol", server.url());
    server.set_fault(Fault::CutAt(5_000));
    downloader.download(&request, |_| {}).await.unwrap_err();
    // Simulate a crash after the last byte was written but before the rename.
    let partial = downloader.partial_path("otelcol");
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes.extend_from_slice(&body[5_000..]);
    std::fs::write(&partial, bytes).unwrap();

    let file = downloader.download(&request, |_| {}).await.unwrap();
    assert_eq!(file.sha256(), ContentHash::of(&body));
    assert_eq!(server.requests().last().unwrap().status, 416);
}

#[tokio::test]
async fn larger_than_declared_or_limit_is_refused_before_the_body() {
    let body = test_bytes(SIZE, 8);
    let server = FileServer::start(body).await;
    let dir = tempfile::tempdir().unwrap();

    let limited = downloader(&dir, DownloadLimits::with_max_size(1000));
    let request = DownloadRequest::new("a", server.url());
    let err = limited.download(&request, |_| {}).await.unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { size, limit: 1000 } if size == SIZE as u64),
        "{err}"
    );

    let declared = DownloadRequest::new("b", server.url()).with_expected_size(1000);
    let err = downloader(&dir, DownloadLimits::default())
        .download(&declared, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::SizeMismatch { expected: 1000, .. }),
        "{err}"
    );
    assert!(!limited.partial_path("a").exists());
    assert!(!limited.partial_path("b").exists());
}

#[tokio::test]
async fn chunked_body_over_the_limit_stops_at_the_limit() {
    let body = test_bytes(SIZE, 9);
    let server = FileServer::start(body).await;
    server.state.lock().unwrap().chunked = true;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::with_max_size(100_000));
    let err = downloader
        .download(&DownloadRequest::new("c", server.url()), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit: 100_000, .. }),
        "{err}"
    );
    assert!(!downloader.partial_path("c").exists());
}

#[tokio::test]
async fn wrong_hash_is_reported_and_the_file_discarded() {
    let body = test_bytes(10_000, 10);
    let server = FileServer::start(body).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = downloader(&dir, DownloadLimits::default());
    let request = DownloadRequest::new("d", server.url()).with_expected_sha256([7u8; 32]);
    let err = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(matches!(err, DownloadError::HashMismatch { .. }), "{err}");
    assert!(!downloader.partial_path("d").exists());
    assert!(!downloader.complete_path("d").exists());
}

#[tokio::test]
async fn http_error_status_is_typed() {
    let server = FileServer::start(vec![1, 2, 3]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/missing", server.addr);
    let err = downloader(&dir, DownloadLimits::default())
        .download(&DownloadRequest::new("e", url), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 404, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn stalled_server_times_out_and_keeps_the_partial() {
    let body = test_bytes(SIZE, 11);
    let server = FileServer::start(body.clone()).await;
    server.set_fault(Fault::StallAt(40_000));
    let dir = tempfile::tempdir().unwrap();
    let mut limits = DownloadLimits::default();
    limits.idle_timeout = Duration::from_millis(300);
    let downloader = downloader(&dir, limits);
    let request = DownloadRequest::new("f", server.url());
    let err = downloader.download(&request, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::TimedOut {
                received: 40_000,
                ..
            }
        ),
        "{err}"
    );
    let file = downloader.download(&request, |_| {}).await.unwrap();
    assert_eq!(file.resumed_from, 40_000);
    assert_eq!(file.sha256(), ContentHash::of(&body));
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(16))]

    /// However often and wherever the connection is cut, resuming yields exactly the file.
    #[test]
    fn any_sequence_of_cuts_resumes_to_the_exact_file(
        size in 1usize..200_000,
        cuts in proptest::collection::vec(0.0f64..1.0, 0..5),
        seed in proptest::num::u64::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let body = test_bytes(size, seed);
            let server = FileServer::start(body.clone()).await;
            let dir = tempfile::tempdir().unwrap();
            let downloader = downloader(&dir, DownloadLimits::default());
            let request =
                DownloadRequest::new("p", server.url()).with_expected_sha256(sha256(&body));
            let mut offsets: Vec<usize> = cuts.iter().map(|c| (c * size as f64) as usize).collect();
            offsets.sort_unstable();
            for offset in offsets {
                server.set_fault(Fault::CutAt(offset));
                match downloader.download(&request, |_| {}).await {
                    // A cut at or before the resume point can still complete the file.
                    Ok(file) => {
                        assert_eq!(file.sha256(), ContentHash::of(&body));
                        downloader.discard("p").unwrap();
                    }
                    Err(err) => assert!(err.is_resumable(), "{err}"),
                }
            }
            server.set_fault(Fault::None);
            let file = downloader.download(&request, |_| {}).await.unwrap();
            assert_eq!(std::fs::read(&file.path).unwrap(), body);
        });
    }
}

/// A server may offer `download_url: "/file"`: it is fetched from the host of the OpAMP
/// endpoint (`ws` → `http`). Without an endpoint the error says what is wrong.
#[tokio::test]
async fn relative_download_url_is_resolved_against_the_opamp_endpoint() {
    let body = test_bytes(4096, 7);
    let server = FileServer::start(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let relative = DownloadRequest::new("otelcol", "/file").with_expected_sha256(sha256(&body));

    let error = downloader(&dir, DownloadLimits::default())
        .download(&relative, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DownloadError::InvalidRequest { reason } if reason.contains("relative") || reason.contains("no OpAMP endpoint")),
        "{error}"
    );

    let downloader = downloader(&dir, DownloadLimits::default())
        .with_base_url(&format!("ws://{}/v1/opamp", server.addr))
        .unwrap();
    let file = downloader.download(&relative, |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&file.path).unwrap(), body);
    assert_eq!(server.requests().len(), 1);
}
