//! A complete multi-agent OpAMP server in one file: TCP sockets and WebSockets
//! (tokio-tungstenite) around the sans-IO `opamp_session::ServerEndpoint`, which does all
//! the protocol work: routing by instance uid (several agents may share a socket),
//! answering, idle deadlines from the heartbeat interval, uid reassignment.
//!
//! ```text
//! cargo run -p opamp-transport --example endpoint_server -- 127.0.0.1:4320
//! ```
//!
//! Then point any OpAMP WebSocket agent at `ws://127.0.0.1:4320/v1/opamp`. The server
//! prints what happens, and offers every agent that accepts packages an (empty) set of
//! packages, to show how a server talks to one agent.
//!
//! `opamp_transport::server` is the production version of this loop (HTTP, TLS, limits,
//! downloads); this example shows that nothing but sockets is left to the embedder.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use opamp_proto::{AgentCapabilities, ServerCapabilities, v1};
use opamp_session::{
    ConnectionId, ConnectionParams, EndpointConfig, EndpointEvent, ServerEndpoint, ServerEvent,
    ServerSessionConfig, TransportMode,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What connection tasks tell the endpoint's loop.
enum Input {
    Opened(ConnectionId, mpsc::UnboundedSender<Message>),
    Received(ConnectionId, Vec<u8>),
    Closed(ConnectionId),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4320".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("OpAMP server on ws://{}/v1/opamp", listener.local_addr()?);
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
    tokio::spawn(accept(listener, inputs_tx));

    let mut session = ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    session.heartbeat_interval = Some(Duration::from_secs(30));
    session.opamp_endpoint = Some(format!("ws://{addr}/v1/opamp"));
    let mut endpoint = ServerEndpoint::new(EndpointConfig::new(session));
    let mut sockets: HashMap<ConnectionId, mpsc::UnboundedSender<Message>> = HashMap::new();

    loop {
        // 1. Wait for input or the endpoint's next deadline, and hand it over.
        let wake = endpoint
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            input = inputs.recv() => {
                let now = Instant::now();
                match input {
                    Some(Input::Opened(id, socket)) => {
                        sockets.insert(id, socket);
                        endpoint.open_connection(now, id, ConnectionParams::new(TransportMode::WebSocket));
                    }
                    Some(Input::Received(id, bytes)) => {
                        if let Err(error) = endpoint.handle_bytes(now, id, &bytes) {
                            println!("{id}: refused ({error}); answered with an error");
                        }
                    }
                    Some(Input::Closed(id)) => {
                        sockets.remove(&id);
                        endpoint.close_connection(now, id);
                    }
                    None => return Ok(()),
                }
            }
            () = tokio::time::sleep_until(wake.into()) => endpoint.handle_timeout(Instant::now()),
        }
        // 2. Act on events; talking to an agent queues messages for it.
        while let Some(event) = endpoint.poll_event() {
            match event {
                EndpointEvent::Agent {
                    uid,
                    event: ServerEvent::CapabilitiesChanged(capabilities),
                    ..
                } if capabilities.contains(AgentCapabilities::ACCEPTS_PACKAGES) => {
                    println!("{uid} accepts packages; offering the (empty) set");
                    endpoint.with_session(Instant::now(), uid, |session| {
                        session.offer_packages(v1::PackagesAvailable {
                            packages: HashMap::new(),
                            all_packages_hash: vec![0; 32],
                        });
                    });
                }
                EndpointEvent::CloseConnection { connection, .. } => {
                    // Dropping the sender ends the connection task, which closes it.
                    sockets.remove(&connection);
                }
                EndpointEvent::Heartbeat { .. } => {}
                other => println!("{other:?}"),
            }
        }
        // 3. Send what the endpoint queued, each on its connection.
        while let Some((id, bytes)) = endpoint.poll_transmit_bytes() {
            if let Some(socket) = sockets.get(&id) {
                let _ = socket.send(Message::Binary(bytes.into()));
            }
        }
    }
}

async fn accept(listener: TcpListener, inputs: mpsc::UnboundedSender<Input>) {
    let mut next = 0;
    while let Ok((tcp, _peer)) = listener.accept().await {
        next += 1;
        tokio::spawn(connection(ConnectionId(next), tcp, inputs.clone()));
    }
}

/// One WebSocket: frames in go to the endpoint's loop, frames out come from it.
async fn connection(id: ConnectionId, tcp: TcpStream, inputs: mpsc::UnboundedSender<Input>) {
    let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let (outbound, mut queued) = mpsc::unbounded_channel();
    if inputs.send(Input::Opened(id, outbound)).is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = stream.next() => match received {
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = inputs.send(Input::Received(id, bytes.to_vec()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // A Close (answered by tungstenite when the sink flushes), text, or an error.
                _ => break,
            },
            message = queued.recv() => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                None => break, // The endpoint let go of this connection.
            },
        }
    }
    let _ = sink.close().await;
    let _ = inputs.send(Input::Closed(id));
}
