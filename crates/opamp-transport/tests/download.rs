//! The package download route: Range requests let an interrupted download resume, ETag and
//! If-Range make sure the pieces belong to the same file, and bearer tokens guard files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use opamp_transport::server::{DownloadConfig, RunningServer};
use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_RANGE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE, WWW_AUTHENTICATE,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 300_000;

/// Deterministic, incompressible-looking bytes.
fn package_bytes() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn serve(
    downloads: impl FnOnce(&std::path::Path) -> DownloadConfig,
) -> (RunningServer, tempfile::TempDir, Vec<u8>) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("packages");
    let bytes = package_bytes();
    std::fs::create_dir_all(root.join("nested dir")).unwrap();
    std::fs::write(root.join("collector-1.2.3.tar.gz"), &bytes).unwrap();
    std::fs::write(root.join("nested dir/small.bin"), b"small").unwrap();
    // Next to the served directory: must never be reachable.
    std::fs::write(dir.path().join("outside-secret.txt"), b"secret").unwrap();
    let (server, _notifications) = start_server(server_config().downloads(downloads(&root))).await;
    (server, dir, bytes)
}

#[tokio::test]
async fn interrupted_download_resumes_with_range_and_if_range() {
    let (server, _dir, bytes) = serve(|root| DownloadConfig::new(root)).await;
    let url = format!(
        "http://{}/packages/collector-1.2.3.tar.gz",
        server.local_addr()
    );
    let http = reqwest::Client::new();

    // First attempt "interrupted" after 100 000 bytes.
    let first = http
        .get(&url)
        .header(RANGE, "bytes=0-99999")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.headers()[CONTENT_RANGE],
        format!("bytes 0-99999/{SIZE}").as_str()
    );
    let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "strong tag: {etag}");
    let mut downloaded = first.bytes().await.unwrap().to_vec();

    // Resume from where it stopped, only if the file is still the same.
    let rest = http
        .get(&url)
        .header(RANGE, "bytes=100000-")
        .header(IF_RANGE, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(rest.headers()[ETAG].to_str().unwrap(), etag);
    downloaded.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(downloaded, bytes);

    // A stale tag means the file changed: the whole file comes back, not a splice.
    let stale = http
        .get(&url)
        .header(RANGE, "bytes=100000-")
        .header(IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap().len(), SIZE);

    // Nothing changed since: 304.
    let cached = http
        .get(&url)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    // A range past the end: 416.
    let beyond = http
        .get(&url)
        .header(RANGE, format!("bytes={}-", SIZE + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Names with spaces work; missing files are 404.
    let nested = http
        .get(format!(
            "http://{}/packages/nested%20dir/small.bin",
            server.local_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(nested.status(), StatusCode::OK);
    assert_eq!(nested.bytes().await.unwrap().as_ref(), b"small");
    let missing = http
        .get(format!(
            "http://{}/packages/nope.tar.gz",
            server.local_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_guard_each_file() {
    let (server, _dir, bytes) = serve(|root| {
        DownloadConfig::new(root)
            .authorize(|token, path| token == Some("s3cret") && path == "collector-1.2.3.tar.gz")
    })
    .await;
    let base = format!("http://{}/packages", server.local_addr());
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{base}/collector-1.2.3.tar.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()[WWW_AUTHENTICATE], "Bearer");
    let wrong = http
        .get(format!("{base}/collector-1.2.3.tar.gz"))
        .header(AUTHORIZATION, "Bearer guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let other_file = http
        .get(format!("{base}/nested%20dir/small.bin"))
        .header(AUTHORIZATION, "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(other_file.status(), StatusCode::UNAUTHORIZED);
    let allowed = http
        .get(format!("{base}/collector-1.2.3.tar.gz"))
        .header(AUTHORIZATION, "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.bytes().await.unwrap().to_vec(), bytes);
    server.shutdown().await;
}

#[tokio::test]
async fn paths_cannot_leave_the_download_directory() {
    let (server, _dir, _bytes) = serve(|root| DownloadConfig::new(root)).await;
    for path in [
        "/packages/../outside-secret.txt",
        "/packages/..%2foutside-secret.txt",
        "/packages/%2e%2e/outside-secret.txt",
    ] {
        // Raw request: an HTTP client library would normalise the dots away.
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{path}: {answer}"
        );
        assert!(!answer.contains("secret"), "{path} leaked the file");
    }
    server.shutdown().await;
}
