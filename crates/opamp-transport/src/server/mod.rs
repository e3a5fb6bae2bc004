//! The OpAMP server transport: one listener on `/v1/opamp` for WebSocket and HTTP agents,
//! plain or TLS (optionally mutual), with an optional package download route.

mod admission;
mod authorize;
mod download;
mod http_listener;
mod http_poll;
mod hub;
mod identity;
mod listener;
mod outbound;
mod stats;
mod websocket;
mod write_deadline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use opamp_proto::codec::Limits;
use opamp_session::TransportMode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admission::AdmissionLimits;
pub use authorize::{AGENT_CREDENTIAL_HEADER, AgentClaim, AgentVerdict};
pub use download::{DownloadAuthorizer, DownloadConfig};
pub use http_listener::{HttpServeLimits, serve_router};
pub use http_poll::{BodyRefusal, decode_agent_body};
pub use hub::{AgentSessions, HEARTBEAT_BATCH_PERIOD, ServerNotification};
pub use identity::ClientIdentity;
pub use listener::ConnectionInfo;
pub use stats::{RefusalReason, TransportCounters, TransportStats, TransportStatsSnapshot};

use crate::error::{Result, TransportError};
use crate::tls::ServerTls;

/// Decides whether a request to the OpAMP endpoint is let in, from the connection (address,
/// client certificate) and the request headers (for example `Authorization`). A refused
/// request gets HTTP 401 before any OpAMP message is read.
pub type RequestAuthorizer = Arc<dyn Fn(&ConnectionInfo, &http::HeaderMap) -> bool + Send + Sync>;

/// Decides whether a connection may speak for an agent, from the instance uid the agent
/// claims, the connection (for example its client certificate) and the request headers (for
/// example an `Authorization` credential). Checked on every HTTP request and once per uid on
/// a WebSocket (at the upgrade when it names the uid in `OpAMP-Instance-UID`, otherwise on
/// the uid's first message), before the session sees the message.
pub type AgentAuthorizer = Arc<dyn Fn(&AgentClaim<'_>) -> AgentVerdict + Send + Sync>;

/// Settings of an [`OpampServer`]. Start from [`OpampServerConfig::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct OpampServerConfig {
    /// Address to listen on (port 0 picks a free port; see [`RunningServer::local_addr`]).
    pub bind: SocketAddr,
    /// Path of the OpAMP endpoint. Default `/v1/opamp`.
    pub path: String,
    /// TLS, and whether agents must present a certificate. `None` serves plain TCP.
    pub tls: Option<ServerTls>,
    /// Largest message accepted, after gzip decompression (64 MiB by default). Larger ones
    /// get WebSocket close 1009 or HTTP 413.
    pub limits: Limits,
    /// Most connections open at once; more are answered `503` with `Retry-After`.
    pub max_connections: usize,
    /// `Retry-After` sent with refusals for lack of capacity.
    pub retry_after: Duration,
    /// Time a client has to send complete request headers (slow-loris guard). Also bounds
    /// the TLS handshake.
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete HTTP request body; slower ones get 408.
    pub body_read_timeout: Duration,
    /// A WebSocket that carries nothing for this long is closed with 1001; the server
    /// pings after half of it in silence, so a live agent without heartbeats stays
    /// connected through its pongs. Agents (HTTP, or WebSocket with heartbeats) are
    /// reported disconnected when silent beyond the bound derived from their heartbeat or
    /// poll interval ([`opamp_session::EndpointConfig::idle_bound`]), whatever this is.
    pub idle_timeout: Duration,
    /// Added to an agent's idle bound (2.5 heartbeat or poll intervals) for network and
    /// scheduling delay. Default 5 s.
    pub idle_grace: Duration,
    /// Capacity of the notification channel returned by [`OpampServer::start`].
    pub notification_capacity: usize,
    /// Messages that may wait on one WebSocket per agent it carries; a socket that falls
    /// further behind is closed (1008).
    pub outbound_queue: usize,
    /// Optional authorisation of OpAMP requests.
    pub authorize: Option<RequestAuthorizer>,
    /// Optional check that a connection may speak for the instance uid it claims (for
    /// example: the client certificate names that uid). Refused: HTTP 403 (also for a
    /// WebSocket upgrade that names the uid), WebSocket close 1008 on a later message.
    pub authorize_agent: Option<AgentAuthorizer>,
    /// Agents disconnected for longer than this lose their session (and its state), so
    /// churning agents do not grow the agent sessions without bound. `None` keeps them.
    pub forget_after: Option<Duration>,
    /// Optional package download route.
    pub downloads: Option<DownloadConfig>,
    /// Bounds on first messages, connections per address, stalled writes and concurrent
    /// downloads.
    pub admission: AdmissionLimits,
    /// Settings of each agent's [`opamp_session::ServerSession`] (capabilities, heartbeat
    /// interval, limits). The transport sets `mode` per agent.
    pub session: opamp_session::ServerSessionConfig,
}

impl std::fmt::Debug for OpampServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpampServerConfig")
            .field("bind", &self.bind)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("forget_after", &self.forget_after)
            .field("downloads", &self.downloads)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl OpampServerConfig {
    /// Defaults: plain TCP on `bind`, path `/v1/opamp`, 64 MiB messages, 50 000
    /// connections, 10 s header timeout, 30 s body timeout, 90 s idle timeout (three 30 s
    /// heartbeats), sessions forgotten one hour after their agent disconnected.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            path: "/v1/opamp".to_owned(),
            tls: None,
            limits: Limits::default(),
            max_connections: 50_000,
            retry_after: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            idle_grace: Duration::from_secs(5),
            notification_capacity: 4096,
            outbound_queue: 32,
            authorize: None,
            authorize_agent: None,
            forget_after: Some(Duration::from_secs(3600)),
            downloads: None,
            admission: AdmissionLimits::default(),
            session: opamp_session::ServerSessionConfig::default(),
        }
    }

    /// Serves TLS with these settings.
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the largest accepted message.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits = Limits::with_max_message_size(bytes);
        self
    }

    /// Sets the settings of each agent's session.
    #[must_use]
    pub fn session(mut self, session: opamp_session::ServerSessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Adds the package download route.
    #[must_use]
    pub fn downloads(mut self, downloads: DownloadConfig) -> Self {
        self.downloads = Some(downloads);
        self
    }

    /// Checks each agent's claim to its instance uid.
    #[must_use]
    pub fn authorize_agent(
        mut self,
        authorize: impl Fn(&AgentClaim<'_>) -> AgentVerdict + Send + Sync + 'static,
    ) -> Self {
        self.authorize_agent = Some(Arc::new(authorize));
        self
    }

    /// Authorises each OpAMP request.
    #[must_use]
    pub fn authorize(
        mut self,
        authorize: impl Fn(&ConnectionInfo, &http::HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Arc::new(authorize));
        self
    }
}

/// State shared by the request handlers.
pub(crate) struct Shared {
    pub(crate) config: OpampServerConfig,
    pub(crate) sessions: AgentSessions,
    pub(crate) shutdown: CancellationToken,
    pub(crate) stats: TransportStats,
}

/// Entry point of the server side.
#[derive(Debug)]
pub struct OpampServer;

impl OpampServer {
    /// Binds, starts serving, and returns the running server and its notifications.
    ///
    /// Keep draining the notifications: when the channel
    /// ([`OpampServerConfig::notification_capacity`]) is full, connection tasks wait for room,
    /// which slows agents down rather than letting memory grow.
    ///
    /// Each agent gets an [`opamp_session::ServerSession`] built from
    /// [`OpampServerConfig::session`] the first time it speaks.
    ///
    /// ```no_run
    /// use opamp_proto::ServerCapabilities;
    /// use opamp_transport::server::{OpampServer, OpampServerConfig, ServerNotification};
    ///
    /// # async fn run() -> Result<(), opamp_transport::TransportError> {
    /// let config = OpampServerConfig::new("127.0.0.1:4320".parse().unwrap())
    ///     .session(opamp_session::ServerSessionConfig::new(ServerCapabilities::OFFERS_PACKAGES));
    /// let (server, mut notifications) = OpampServer::start(config).await?;
    /// while let Some(notification) = notifications.recv().await {
    ///     if let ServerNotification::Connected { uid, .. } = notification {
    ///         println!("{uid} connected; {} agents known", server.sessions().len());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TransportError::Bind`] if the address cannot be bound; TLS errors from
    /// [`ServerTls::build`].
    pub async fn start(
        config: OpampServerConfig,
    ) -> Result<(RunningServer, mpsc::Receiver<ServerNotification>)> {
        let tls = config
            .tls
            .as_ref()
            .map(ServerTls::build)
            .transpose()?
            .map(tokio_rustls::TlsAcceptor::from);
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.bind,
                source,
            })?;
        let (notify, notifications) = mpsc::channel(config.notification_capacity.max(1));
        let mut endpoint = opamp_session::EndpointConfig::new(config.session.clone());
        endpoint.forget_after = config.forget_after;
        endpoint.idle_grace = config.idle_grace;
        let sessions = AgentSessions::new(endpoint, config.outbound_queue, notify);
        let shutdown = CancellationToken::new();
        let stats = TransportStats::default();
        let shared = Arc::new(Shared {
            config: config.clone(),
            sessions: sessions.clone(),
            shutdown: shutdown.clone(),
            stats: stats.clone(),
        });

        let mut app = Router::new()
            .route(&config.path, any(opamp_endpoint))
            .with_state(shared.clone());
        if let Some(downloads) = config.downloads.clone() {
            let prefix = downloads.prefix.clone();
            let downloads = Arc::new(download::Downloads::new(
                downloads,
                config.admission.max_concurrent_downloads,
                config.retry_after,
            ));
            app = app.nest_service(
                &prefix,
                tower::service_fn(move |request| download::serve(downloads.clone(), request)),
            );
        }
        let settings = listener::ListenerSettings {
            tls,
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            handshake_timeout: config.header_read_timeout,
            retry_after: config.retry_after,
            stats: stats.clone(),
            addresses: admission::AddressCounts::new(&config.admission),
            write_timeout: config.admission.write_timeout,
        };
        let accept = tokio::spawn(listener::accept_loop(
            listener,
            settings,
            app,
            shutdown.clone(),
        ));
        let sweeper = tokio::spawn(drive_timeouts(sessions.clone(), shutdown.clone()));
        Ok((
            RunningServer {
                local_addr,
                sessions,
                shutdown,
                stats,
                tasks: vec![accept, sweeper],
            },
            notifications,
        ))
    }
}

/// A server that is accepting connections. Dropping it does not stop it; call
/// [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    sessions: AgentSessions,
    shutdown: CancellationToken,
    stats: TransportStats,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The agent sessions.
    pub fn sessions(&self) -> &AgentSessions {
        &self.sessions
    }

    /// The listener's counters (connections, messages, bytes, refusals), for metrics.
    pub fn stats(&self) -> TransportStats {
        self.stats.clone()
    }

    /// Stops accepting, closes WebSockets with 1001 and lets in-flight HTTP requests finish
    /// (up to 5 s).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn opamp_endpoint(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(connection) = request.extensions().get::<ConnectionInfo>().cloned() else {
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let websocket = request.headers().contains_key(http::header::UPGRADE);
    if let Some(authorize) = &shared.config.authorize
        && !authorize(&connection, request.headers())
    {
        let kind = if websocket {
            TransportMode::WebSocket
        } else {
            TransportMode::HttpPolling
        };
        shared.stats.refused(kind, RefusalReason::Unauthorized);
        return http::StatusCode::UNAUTHORIZED.into_response();
    }
    let url = endpoint_url(&shared, request.headers(), websocket);
    if websocket {
        websocket::upgrade(shared, connection, url, request).await
    } else if request.method() == http::Method::POST {
        http_poll::handle(shared, connection, url, request).await
    } else {
        http::StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

/// Calls the endpoint's `handle_timeout` when its next deadline passes. Re-checks at
/// least every quarter second, so deadlines set meanwhile are never late by more.
async fn drive_timeouts(sessions: AgentSessions, shutdown: CancellationToken) {
    // Also the heartbeat batch's delivery period.
    const RECHECK: Duration = hub::HEARTBEAT_BATCH_PERIOD;
    loop {
        let now = Instant::now();
        let wake = sessions
            .poll_timeout()
            .map_or(now + RECHECK, |deadline| deadline.min(now + RECHECK));
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                sessions.handle_timeout().await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// The URL the agent connected to, offered back as the OpAMP destination endpoint.
fn endpoint_url(shared: &Shared, headers: &http::HeaderMap, websocket: bool) -> Option<String> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let scheme = match (websocket, shared.config.tls.is_some()) {
        (true, true) => "wss",
        (true, false) => "ws",
        (false, true) => "https",
        (false, false) => "http",
    };
    Some(format!("{scheme}://{host}{}", shared.config.path))
}
