//! The OpAMP client transport (agent side): connects to the server named by the endpoint
//! URL (`ws://`, `wss://`, `http://`, `https://`), runs an [`AgentSession`] on a background
//! task, reconnects with back-off, and shuts down cleanly.

mod backoff;
mod driver;
mod http_poll;
mod websocket;

use std::time::Duration;

use opamp_proto::codec::Limits;
use opamp_session::{AgentEvent, AgentSession, AgentSessionConfig, TransportMode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use backoff::Backoff;

use crate::error::{Result, TransportError};
use crate::tls::ClientTls;

/// Settings of an [`OpampClient`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's OpAMP endpoint; the scheme picks the transport.
    pub endpoint: url::Url,
    /// TLS settings for `wss://` and `https://`.
    pub tls: ClientTls,
    /// Headers sent with every request or upgrade (for example `Authorization`).
    pub headers: http::HeaderMap,
    /// Compress HTTP request bodies with gzip.
    pub gzip: bool,
    /// Delay between reconnect attempts.
    pub backoff: Backoff,
    /// Time allowed to connect (TCP, TLS and upgrade) or to complete one HTTP request.
    pub request_timeout: Duration,
    /// Largest message accepted from the server.
    pub limits: Limits,
}

impl ClientConfig {
    /// Settings for `endpoint` with default TLS (web PKI roots), no extra headers, no gzip.
    ///
    /// # Errors
    /// [`TransportError::Endpoint`] when the URL does not parse or has another scheme.
    pub fn new(endpoint: &str) -> Result<Self> {
        let endpoint = url::Url::parse(endpoint).map_err(|_| TransportError::Endpoint {
            url: endpoint.to_owned(),
            reason: "not a URL",
        })?;
        Scheme::of(&endpoint)?;
        Ok(Self {
            endpoint,
            tls: ClientTls {
                use_webpki_roots: true,
                ..ClientTls::default()
            },
            headers: http::HeaderMap::new(),
            gzip: false,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        })
    }

    /// Uses these TLS settings.
    #[must_use]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Adds a header sent with every request.
    #[must_use]
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    WebSocket,
    Http,
}

impl Scheme {
    pub(crate) fn of(url: &url::Url) -> Result<Self> {
        match url.scheme() {
            "ws" | "wss" => Ok(Self::WebSocket),
            "http" | "https" => Ok(Self::Http),
            _ => Err(TransportError::Endpoint {
                url: url.to_string(),
                reason: "scheme must be ws, wss, http or https",
            }),
        }
    }
}

/// What the client reports to its embedder.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Connected (WebSocket open, or the first HTTP exchange after a failure succeeded).
    Connected,
    /// The connection failed or closed; the next attempt is in `retry_in`.
    Disconnected {
        /// Why, in words.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// The session reported something (offers, commands, server errors...). Boxed: some
    /// events carry whole offers.
    Agent(Box<AgentEvent>),
    /// The server issued this agent a credential (response header
    /// `opamp-agent-credential`, for example after enrolling). The client sends it as
    /// `Authorization: Bearer <credential>` from now on; the embedder should store it for
    /// the next start.
    CredentialIssued {
        /// The credential, as the server sent it.
        credential: String,
    },
}

type Update = Box<dyn FnOnce(&mut AgentSession) + Send>;

pub(crate) enum Command {
    Update(Update),
    Shutdown(oneshot::Sender<()>),
}

/// Entry point of the agent side.
#[derive(Debug)]
pub struct OpampClient;

impl OpampClient {
    /// Starts the client on the current tokio runtime.
    ///
    /// The session's transport mode is set from the endpoint scheme. Events arrive on the
    /// returned receiver; keep draining it (the client waits when it is full).
    ///
    /// ```no_run
    /// use opamp_proto::{v1, InstanceUid};
    /// use opamp_session::AgentSessionConfig;
    /// use opamp_transport::client::{ClientConfig, ClientEvent, OpampClient};
    ///
    /// # async fn run() -> Result<(), opamp_transport::TransportError> {
    /// let config = ClientConfig::new("ws://127.0.0.1:4320/v1/opamp")?;
    /// let agent = AgentSessionConfig::new(InstanceUid::new_v7(), v1::AgentDescription::default());
    /// let (client, mut events) = OpampClient::start(config, agent)?;
    /// if let Some(ClientEvent::Connected) = events.recv().await {
    ///     client.update(|session| session.set_health(v1::ComponentHealth { healthy: true, ..Default::default() })).await?;
    /// }
    /// client.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TransportError::Endpoint`] for an unusable URL, TLS errors from
    /// [`ClientTls::build`], [`TransportError::HttpClient`] if the HTTP client cannot be built.
    pub fn start(
        config: ClientConfig,
        mut agent: AgentSessionConfig,
    ) -> Result<(ClientHandle, mpsc::Receiver<ClientEvent>)> {
        let scheme = Scheme::of(&config.endpoint)?;
        agent.mode = match scheme {
            Scheme::WebSocket => TransportMode::WebSocket,
            Scheme::Http => TransportMode::HttpPolling,
        };
        // One back-off for the agent: the session's, seeded jitter included.
        agent.retry = config.backoff;
        let tls = config.tls.build()?;
        let session = AgentSession::new(agent);
        let (commands_tx, commands) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(256);
        let driver = driver::Driver::new(config, tls, session, commands, events_tx);
        let task = match scheme {
            Scheme::WebSocket => tokio::spawn(websocket::run(driver)),
            Scheme::Http => {
                let http = http_poll::HttpTransport::new(&driver)?;
                tokio::spawn(http_poll::run(driver, http))
            }
        };
        Ok((
            ClientHandle {
                commands: commands_tx,
                task,
            },
            events,
        ))
    }
}

/// Controls a running client.
#[derive(Debug)]
pub struct ClientHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<AgentSession>,
}

impl ClientHandle {
    /// Runs `f` on the session (for example `set_health`, `set_package_statuses`) on the
    /// client task; whatever the change makes the session send goes out right after.
    ///
    /// # Errors
    /// [`TransportError::Stopped`] if the client has stopped.
    pub async fn update<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut AgentSession) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let update: Update = Box::new(move |session| {
            let _ = tx.send(f(session));
        });
        self.commands
            .send(Command::Update(update))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// Sends `agent_disconnect` (when connected), closes the connection and returns the
    /// session, for example to inspect or persist its final state. Dropping the handle
    /// also stops the client the same way, without waiting for it.
    ///
    /// # Errors
    /// [`TransportError::Stopped`] if the client task ended abnormally.
    pub async fn shutdown(self) -> Result<AgentSession> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.task.await.map_err(|_| TransportError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_scheme_picks_the_transport() {
        let scheme = |url: &str| Scheme::of(&url::Url::parse(url).unwrap());
        assert_eq!(scheme("ws://h/v1/opamp").unwrap(), Scheme::WebSocket);
        assert_eq!(scheme("wss://h/v1/opamp").unwrap(), Scheme::WebSocket);
        assert_eq!(scheme("http://h/v1/opamp").unwrap(), Scheme::Http);
        assert_eq!(scheme("https://h/v1/opamp").unwrap(), Scheme::Http);
        assert!(matches!(
            ClientConfig::new("ftp://h/x"),
            Err(TransportError::Endpoint { .. })
        ));
        assert!(matches!(
            ClientConfig::new("not a url"),
            Err(TransportError::Endpoint { .. })
        ));
    }
}
