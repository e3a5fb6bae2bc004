//! State shared by both client transports: the session, the embedder's channels, and the
//! reconnect bookkeeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opamp_session::{AgentEvent, AgentSession};
use tokio::sync::{mpsc, oneshot};

use super::{ClientConfig, ClientEvent, Command};

pub(crate) struct Driver {
    pub(crate) config: ClientConfig,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) session: AgentSession,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClientEvent>,
}

/// What the embedder asked for while the driver was busy.
pub(crate) enum Control {
    Continue,
    Shutdown(oneshot::Sender<()>),
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        tls: Arc<rustls::ClientConfig>,
        session: AgentSession,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<ClientEvent>,
    ) -> Self {
        Self {
            config,
            tls,
            session,
            commands,
            events,
        }
    }

    pub(crate) async fn emit(&self, event: ClientEvent) {
        // An embedder that dropped the receiver does not want events; keep running.
        let _ = self.events.send(event).await;
    }

    /// Adopts a credential the server issued: later requests and upgrades carry it as
    /// `Authorization: Bearer`, and the embedder hears of it.
    pub(crate) async fn adopt_credential(&mut self, credential: String) {
        match http::HeaderValue::from_str(&format!("Bearer {credential}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.config
                    .headers
                    .insert(http::header::AUTHORIZATION, value);
                self.emit(ClientEvent::CredentialIssued { credential })
                    .await;
            }
            Err(_) => tracing::warn!("the server issued a credential that is not a header value"),
        }
    }

    /// Forwards the session's events. Returns whether the server asked the agent to back
    /// off (`RetryInfo`; the session holds sending until then).
    pub(crate) async fn forward_events(&mut self) -> bool {
        let mut retry = false;
        while let Some(event) = self.session.poll_event() {
            retry |= matches!(event, AgentEvent::RetryAfter(_));
            self.emit(ClientEvent::Agent(Box::new(event))).await;
        }
        retry
    }

    /// Next command; `None` when every handle is gone (treated as shutdown without a waiter).
    pub(crate) async fn next_command(&mut self) -> Option<Command> {
        self.commands.recv().await
    }

    pub(crate) fn apply(&mut self, command: Option<Command>) -> Control {
        match command {
            Some(Command::Update(update)) => {
                update(&mut self.session);
                Control::Continue
            }
            Some(Command::Shutdown(done)) => Control::Shutdown(done),
            None => {
                let (done, _) = oneshot::channel();
                Control::Shutdown(done)
            }
        }
    }

    /// The delay before the next attempt after a failed or lost connection: the session's
    /// jittered back-off, or the server's wish when longer.
    pub(crate) fn next_delay(&mut self, server_retry_after: Option<Duration>) -> Duration {
        self.session
            .handle_connection_failed(Instant::now(), server_retry_after)
    }

    /// Sleeps `delay` while still applying the embedder's updates to the session.
    pub(crate) async fn wait(&mut self, delay: Duration) -> Control {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Control::Continue,
                command = self.commands.recv() => {
                    if let Control::Shutdown(done) = self.apply(command) {
                        return Control::Shutdown(done);
                    }
                    // Nothing can be sent while disconnected; events may still appear.
                    self.forward_events().await;
                }
            }
        }
    }
}

impl Driver {
    /// Awaits `work` (a connect or a request) while still applying the embedder's updates.
    /// Returns `Err` with the shutdown waiter if the embedder asked to stop meanwhile;
    /// `work` is then left unfinished for the caller to finish or drop.
    pub(crate) async fn while_pending<F: std::future::Future + Unpin>(
        &mut self,
        mut work: F,
    ) -> Result<F::Output, oneshot::Sender<()>> {
        loop {
            tokio::select! {
                output = &mut work => return Ok(output),
                command = self.commands.recv() => {
                    if let Control::Shutdown(done) = self.apply(command) {
                        return Err(done);
                    }
                }
            }
        }
    }
}

/// Sleeps until the session's next deadline, or forever when it has none.
pub(crate) async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
