//! The WebSocket client loop: connect, run the session over one socket, reconnect.

use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use opamp_session::{AgentSession, TransportMode, framing};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::backoff::parse_retry_after;
use super::driver::{Control, Driver, sleep_until_deadline};
use super::{ClientConfig, ClientEvent};
use std::sync::Arc;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
enum Ended {
    /// Connection lost or refused; the server may have said when to come back.
    Lost {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The embedder asked to stop; the close is done.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

pub(crate) async fn run(mut driver: Driver) -> AgentSession {
    loop {
        let uid = driver.session.instance_uid();
        let attempt = std::pin::pin!(connect(driver.config.clone(), driver.tls.clone(), uid));
        let ended = match driver.while_pending(attempt).await {
            Err(done) => Ended::Shutdown(done),
            Ok(Ok((socket, credential))) => {
                if let Some(credential) = credential {
                    driver.adopt_credential(credential).await;
                }
                driver.session.handle_connected(Instant::now());
                driver.emit(ClientEvent::Connected).await;
                let ended = serve(&mut driver, socket).await;
                driver.session.handle_disconnected(Instant::now());
                driver.forward_events().await;
                ended
            }
            Ok(Err(ended)) => ended,
        };
        match ended {
            Ended::Shutdown(done) => {
                let _ = done.send(());
                return driver.session;
            }
            Ended::Lost {
                reason,
                retry_after,
            } => {
                let retry_in = driver.next_delay(retry_after);
                tracing::info!(%reason, ?retry_in, "OpAMP connection lost; reconnecting");
                driver
                    .emit(ClientEvent::Disconnected { reason, retry_in })
                    .await;
                if let Control::Shutdown(done) = driver.wait(retry_in).await {
                    let _ = done.send(());
                    return driver.session;
                }
            }
        }
    }
}

async fn connect(
    config: ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    uid: opamp_proto::InstanceUid,
) -> Result<(Socket, Option<String>), Ended> {
    let lost = |reason: String, retry_after| Ended::Lost {
        reason,
        retry_after,
    };
    let mut request = config
        .endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| lost(format!("bad request: {e}"), None))?;
    for (name, value) in &config.headers {
        request.headers_mut().insert(name, value.clone());
    }
    // Names the agent at the upgrade, so the server can authorise it (and issue it a
    // credential) before the socket opens. Valid ASCII: a UUID's text form.
    if let Ok(value) = http::HeaderValue::from_str(&uid.to_string()) {
        request.headers_mut().insert("opamp-instance-uid", value);
    }
    let limit = config.limits.max_message_size.saturating_add(10);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(Connector::Rustls(tls)),
    );
    match tokio::time::timeout(config.request_timeout, connect).await {
        Err(_) => Err(lost("connect timed out".to_owned(), None)),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            Err(lost(
                format!("upgrade refused with HTTP {}", response.status()),
                retry_after,
            ))
        }
        Ok(Err(error)) => Err(lost(format!("connect failed: {error}"), None)),
        Ok(Ok((socket, response))) => {
            let credential = response
                .headers()
                .get(crate::AGENT_CREDENTIAL_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((socket, credential))
        }
    }
}

async fn serve(driver: &mut Driver, mut socket: Socket) -> Ended {
    loop {
        if let Err(reason) = flush(driver, &mut socket).await {
            return Ended::Lost {
                reason,
                retry_after: None,
            };
        }
        if driver.forward_events().await {
            // RetryInfo: close now and come back no earlier than the server asked.
            let _ = socket.close(None).await;
            return Ended::Lost {
                reason: "server unavailable (RetryInfo)".to_owned(),
                retry_after: None,
            };
        }
        let deadline = driver.session.poll_timeout();
        tokio::select! {
            received = socket.next() => match received {
                None => return Ended::Lost { reason: "server closed the connection".to_owned(), retry_after: None },
                Some(Err(error)) => return Ended::Lost { reason: format!("read failed: {error}"), retry_after: None },
                Some(Ok(Message::Binary(frame))) => {
                    match framing::decode_server_message(TransportMode::WebSocket, &frame, &driver.config.limits) {
                        Ok(message) => {
                            if let Err(error) = driver.session.handle_message(message, Instant::now()) {
                                tracing::warn!(%error, "server message refused by the session");
                            }
                        }
                        Err(error) => {
                            let _ = socket.close(None).await;
                            return Ended::Lost { reason: format!("bad message from server: {error}"), retry_after: None };
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map_or_else(|| "server closed".to_owned(), |f| format!("server closed ({} {})", u16::from(f.code), f.reason));
                    return Ended::Lost { reason, retry_after: None };
                }
                Some(Ok(_)) => {}
            },
            command = driver.next_command() => {
                if let Control::Shutdown(done) = driver.apply(command) {
                    close_cleanly(driver, &mut socket).await;
                    return Ended::Shutdown(done);
                }
            }
            () = sleep_until_deadline(deadline) => {
                driver.session.handle_timeout(Instant::now());
            }
        }
    }
}

async fn flush(driver: &mut Driver, socket: &mut Socket) -> Result<(), String> {
    while let Some(message) = driver.session.poll_transmit(Instant::now()) {
        let frame = framing::encode_agent_message(TransportMode::WebSocket, &message);
        socket
            .send(Message::Binary(frame.into()))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(())
}

/// Sends `agent_disconnect`, then the WebSocket close handshake, bounded in time.
async fn close_cleanly(driver: &mut Driver, socket: &mut Socket) {
    driver.session.disconnect();
    let bounded = async {
        let _ = flush(driver, socket).await;
        let _ = socket.close(None).await;
        // Wait for the server's close reply so the agent_disconnect is not lost in a reset.
        while let Some(Ok(_)) = socket.next().await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bounded).await;
}
