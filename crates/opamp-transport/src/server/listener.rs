//! The accept loop: bounds the number of connections (in all and per source address),
//! runs the TLS handshake under a deadline, records who connected, and hands each
//! connection to hyper (HTTP/1.1 with upgrades) with a header read timeout against
//! slow-loris peers and a write timeout against peers that stop reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::admission::{AddressCounts, AddressPermit};
use super::stats::{OpenGuard, TransportStats};
use super::write_deadline::WriteDeadline;

/// What the server knows about the peer of one connection, available to the embedding
/// server for authorisation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's socket address.
    pub remote_addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate chain (leaf first, DER), when the agent presented one
    /// under mutual TLS.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl ConnectionInfo {
    /// The names in the agent's client certificate (leaf), when it presented one.
    pub fn client_identity(&self) -> Option<super::identity::ClientIdentity> {
        let leaf = self.peer_certificates.as_ref()?.first()?;
        super::identity::ClientIdentity::from_der(leaf)
    }
}

/// Held by a connection (and by its WebSocket after an upgrade) so that the connection
/// counts against the maximum until it really ends.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _counted: OpenGuard,
    _address: Option<AddressPermit>,
}

/// Settings of the accept loop.
#[derive(Clone)]
pub(crate) struct ListenerSettings {
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) stats: TransportStats,
    pub(crate) addresses: AddressCounts,
    pub(crate) write_timeout: Duration,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    settings: ListenerSettings,
    app: Router,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let (stream, remote_addr) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let counted = settings.stats.connection();
        let admitted = match slots.clone().try_acquire_owned() {
            Err(_) => Err("too many connections"),
            Ok(permit) => match settings.addresses.admit(remote_addr) {
                Err(()) => Err("too many connections from this address"),
                Ok(address) => Ok(ConnectionSlot {
                    _permit: permit,
                    _counted: counted,
                    _address: address,
                }),
            },
        };
        let settings = settings.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            handle_connection(stream, remote_addr, admitted, settings, app, shutdown).await;
        });
    }
}

async fn handle_connection(
    stream: TcpStream,
    remote_addr: SocketAddr,
    admitted: Result<ConnectionSlot, &'static str>,
    settings: ListenerSettings,
    app: Router,
    shutdown: CancellationToken,
) {
    let stream = WriteDeadline::new(stream, settings.write_timeout);
    match &settings.tls {
        None => {
            let info = ConnectionInfo {
                remote_addr,
                tls: false,
                peer_certificates: None,
            };
            serve(stream, info, admitted, &settings, app, shutdown).await;
        }
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        settings.stats.tls_handshake_failed();
                        tracing::info!(%remote_addr, %error, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        settings.stats.tls_handshake_failed();
                        tracing::info!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
            let peer_certificates = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|certs| Arc::new(certs.to_vec()));
            let info = ConnectionInfo {
                remote_addr,
                tls: true,
                peer_certificates,
            };
            serve(tls, info, admitted, &settings, app, shutdown).await;
        }
    }
}

async fn serve<S>(
    mut stream: S,
    info: ConnectionInfo,
    admitted: Result<ConnectionSlot, &'static str>,
    settings: &ListenerSettings,
    app: Router,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = match admitted {
        Ok(slot) => slot,
        Err(reason) => {
            // Over the limit: a clear, cheap refusal that well-behaved agents back off from.
            settings.stats.refused_for_capacity();
            tracing::warn!(remote_addr = %info.remote_addr, reason, "connection refused");
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                settings.retry_after.as_secs().max(1)
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            return;
        }
    };
    let slot = Arc::new(slot);
    let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(info.clone());
        request.extensions_mut().insert(slot.clone());
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}
