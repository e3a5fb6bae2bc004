//! Downloads over HTTPS (rustls) from a server whose certificate is signed by a private CA, as
//! a private release mirror would be: trusted when the CA is configured, refused otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use install_support::{file_router, new_state, test_bytes};
use opamp_packages::ContentHash;
use opamp_supervisor::download::{DownloadError, DownloadLimits, DownloadRequest, Downloader};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Serves `body` over TLS on 127.0.0.1; returns the URL and the certificate PEM.
async fn https_server(body: Vec<u8>) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = file_router(new_state(body));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                // A client that rejects our certificate aborts the handshake: not an error here.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    (format!("https://{addr}/file"), pem)
}

#[tokio::test]
async fn https_download_with_a_configured_ca() {
    let body = test_bytes(100_000, 42);
    let (url, ca_pem) = https_server(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = Downloader::with_root_certificates(
        dir.path(),
        DownloadLimits::default(),
        ca_pem.as_bytes(),
    )
    .unwrap();
    let file = downloader
        .download(&DownloadRequest::new("otelcol", url), |_| {})
        .await
        .unwrap();
    assert_eq!(file.sha256(), ContentHash::of(&body));
}

#[tokio::test]
async fn https_download_from_an_untrusted_server_is_refused() {
    let (url, _) = https_server(test_bytes(1000, 43)).await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = Downloader::new(dir.path(), DownloadLimits::default()).unwrap();
    let err = downloader
        .download(&DownloadRequest::new("otelcol", url), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Connect { .. }), "{err}");
}

#[test]
fn garbage_ca_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Downloader::with_root_certificates(dir.path(), DownloadLimits::default(), b"nope")
        .unwrap_err();
    assert!(matches!(err, DownloadError::InvalidRequest { .. }), "{err}");
}
