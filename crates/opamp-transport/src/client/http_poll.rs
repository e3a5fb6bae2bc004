//! The HTTP polling client loop: one `POST` per `AgentToServer`, the reply fed back to the
//! session, polls on the session's deadline.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, StatusCode, header};
use opamp_proto::codec;
use opamp_proto::v1::{AgentToServer, ServerToAgent};
use opamp_session::{AgentSession, TransportMode, framing};
use tokio::sync::oneshot;

use super::ClientEvent;
use super::backoff::parse_retry_after;
use super::driver::{Control, Driver, sleep_until_deadline};
use crate::error::Result;

const PROTOBUF: &str = "application/x-protobuf";
const INSTANCE_UID_HEADER: &str = "OpAMP-Instance-UID";

pub(crate) struct HttpTransport {
    client: reqwest::Client,
    endpoint: url::Url,
    gzip: bool,
    limits: codec::Limits,
}

/// The credential the server issued in a reply, if any.
fn issued_credential(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(crate::AGENT_CREDENTIAL_HEADER)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// A failed exchange, with the server's `Retry-After` when it sent one.
struct Failure {
    reason: String,
    retry_after: Option<Duration>,
}

impl HttpTransport {
    pub(crate) fn new(driver: &Driver) -> Result<Self> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*driver.tls).clone())
            .default_headers(driver.config.headers.clone())
            .timeout(driver.config.request_timeout)
            .http1_only()
            // Servers close idle keep-alive connections (ours after its header timeout,
            // 10 s by default); reusing one just as it closes fails the poll. Polls are
            // usually further apart than this, so idle connections are dropped first.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        let config = &driver.config;
        Ok(Self {
            client,
            endpoint: config.endpoint.clone(),
            gzip: config.gzip,
            limits: config.limits,
        })
    }

    async fn exchange(
        &self,
        message: &AgentToServer,
        authorization: Option<&HeaderValue>,
    ) -> Result<(ServerToAgent, Option<String>), Failure> {
        let failure = |reason: String| Failure {
            reason,
            retry_after: None,
        };
        let mut body = framing::encode_agent_message(TransportMode::HttpPolling, message);
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, PROTOBUF);
        if let Some(authorization) = authorization {
            // Replaces the configured one: a credential issued since the client started.
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        if let Ok(uid) = opamp_proto::InstanceUid::from_slice(&message.instance_uid) {
            // The spec's hint for proxies and load balancers: who is asking, without
            // parsing the body.
            request = request.header(INSTANCE_UID_HEADER, uid.to_string());
        }
        if self.gzip {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 2),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&body)
                .map_err(|e| failure(format!("gzip failed: {e}")))?;
            body = encoder
                .finish()
                .map_err(|e| failure(format!("gzip failed: {e}")))?;
            request = request.header(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| failure(format!("request failed: {e}")))?;
        let status = response.status();
        if status != StatusCode::OK {
            let retry_after = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then(|| response.headers().get(header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(Failure {
                reason: format!("server answered HTTP {status}"),
                retry_after,
            });
        }
        let credential = issued_credential(response.headers());
        let limit = self.limits.max_message_size;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(failure(
                "reply larger than the message size limit".to_owned(),
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failure(format!("reading the reply failed: {e}")))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(failure(
                    "reply larger than the message size limit".to_owned(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        framing::decode_server_message(TransportMode::HttpPolling, &bytes, &self.limits)
            .map(|reply| (reply, credential))
            .map_err(|e| failure(format!("bad reply: {e}")))
    }
}

pub(crate) async fn run(mut driver: Driver, http: HttpTransport) -> AgentSession {
    let mut connected = false;
    driver.session.handle_connected(Instant::now());
    loop {
        driver.forward_events().await;
        if let Some(message) = driver.session.poll_transmit(Instant::now()) {
            let authorization = issued_authorization(&driver);
            let mut exchange = std::pin::pin!(http.exchange(&message, authorization.as_ref()));
            let (outcome, shutdown) = match driver.while_pending(&mut exchange).await {
                Ok(outcome) => (outcome, None),
                // Stopping mid-request: let it finish briefly so the goodbye can follow.
                Err(done) => {
                    let outcome = tokio::time::timeout(Duration::from_secs(2), exchange)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Failure {
                                reason: "shutting down".to_owned(),
                                retry_after: None,
                            })
                        });
                    (outcome, Some(done))
                }
            };
            match outcome {
                Ok((reply, credential)) => {
                    if let Some(credential) = credential {
                        driver.adopt_credential(credential).await;
                    }
                    if !connected {
                        connected = true;
                        driver.emit(ClientEvent::Connected).await;
                    }
                    if let Err(error) = driver.session.handle_message(reply, Instant::now()) {
                        tracing::warn!(%error, "server message refused by the session");
                    }
                }
                Err(Failure {
                    reason,
                    retry_after,
                }) => {
                    connected = false;
                    // The session re-queues the message and holds it back for its jittered
                    // back-off, or for the server's Retry-After when longer.
                    let now = Instant::now();
                    driver.session.handle_request_failed(now);
                    if let Some(asked) = retry_after {
                        driver.session.handle_retry_after(now + asked);
                    }
                    if shutdown.is_none() {
                        let retry_in = driver
                            .session
                            .retry_not_before()
                            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
                        tracing::info!(%reason, ?retry_in, "OpAMP request failed; retrying");
                        driver
                            .emit(ClientEvent::Disconnected { reason, retry_in })
                            .await;
                    }
                }
            }
            if let Some(done) = shutdown {
                return finish(driver, &http, connected, done).await;
            }
            continue;
        }
        let deadline = driver.session.poll_timeout();
        tokio::select! {
            command = driver.next_command() => {
                if let Control::Shutdown(done) = driver.apply(command) {
                    return finish(driver, &http, connected, done).await;
                }
            }
            () = sleep_until_deadline(deadline) => {
                driver.session.handle_timeout(Instant::now());
            }
        }
    }
}

/// Says goodbye when the server is reachable, then hands the session back.
async fn finish(
    mut driver: Driver,
    http: &HttpTransport,
    connected: bool,
    done: oneshot::Sender<()>,
) -> AgentSession {
    if connected {
        driver.session.disconnect();
        while let Some(message) = driver.session.poll_transmit(Instant::now()) {
            // Bounded: a server that stopped answering must not hold up the shutdown.
            let authorization = issued_authorization(&driver);
            let exchange = http.exchange(&message, authorization.as_ref());
            let sent = tokio::time::timeout(Duration::from_secs(2), exchange).await;
            if !matches!(sent, Ok(Ok(_))) {
                break;
            }
        }
    }
    let _ = done.send(());
    driver.session
}

/// The `Authorization` the driver holds now (it changes when a credential is issued).
fn issued_authorization(driver: &Driver) -> Option<HeaderValue> {
    driver.config.headers.get(header::AUTHORIZATION).cloned()
}
