//! The agent listener's protections for any other HTTP service of the embedder (the fleet
//! server's admin API): a connection cap, per-address bounds, header, body and write
//! timeouts.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admission::{AddressCounts, AdmissionLimits};
use super::listener::{ListenerSettings, accept_loop};

/// Bounds of [`serve_router`]. Start from [`HttpServeLimits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpServeLimits {
    /// Most connections open at once; more are answered `503` with `Retry-After`.
    /// Default 256.
    pub max_connections: usize,
    /// Time a client has to send complete request headers. Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest pause while a request body is read; a slower body fails the request.
    /// Default 30 s.
    pub body_idle_timeout: Duration,
    /// `Retry-After` sent with refusals for lack of capacity. Default 5 s.
    pub retry_after: Duration,
    /// Per-address bound and write timeout (the first-message and download fields do not
    /// apply here).
    pub admission: AdmissionLimits,
}

impl Default for HttpServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(5),
            admission: AdmissionLimits::default(),
        }
    }
}

/// Serves `app` on `listener` (plain HTTP/1.1 with upgrades) under `limits` until
/// `shutdown` is cancelled; then lets requests in flight finish for up to 5 s.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: HttpServeLimits,
    shutdown: CancellationToken,
) {
    let body_idle_timeout = limits.body_idle_timeout;
    let app = app.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            request.map(|body| {
                Body::new(tower_http::timeout::TimeoutBody::new(
                    body_idle_timeout,
                    body,
                ))
            })
        },
    ));
    let settings = ListenerSettings {
        tls: None,
        max_connections: limits.max_connections,
        header_read_timeout: limits.header_read_timeout,
        handshake_timeout: limits.header_read_timeout,
        retry_after: limits.retry_after,
        addresses: AddressCounts::new(&limits.admission),
        write_timeout: limits.admission.write_timeout,
        // Counted apart from the agent listener's figures, and not reported.
        stats: super::stats::TransportStats::default(),
    };
    accept_loop(listener, settings, app, shutdown).await;
}
