//! Issue 22, finding 4, as an attacker would try it on loopback: WebSockets that upgrade
//! and never speak, many connections from one address, download readers that stall, and
//! more downloads at once than the server allows. Each is refused or dropped, and a
//! well-behaved agent is still served.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opamp_transport::server::{
    DownloadConfig, OpampServerConfig, RunningServer, ServerNotification,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A server with one well-behaved WebSocket agent connected to it.
struct Bystander {
    server: RunningServer,
    notifications: mpsc::Receiver<ServerNotification>,
    agent: opamp_transport::client::ClientHandle,
    uid: opamp_proto::InstanceUid,
}

impl Bystander {
    async fn start(config: OpampServerConfig) -> Self {
        init_tracing();
        let (server, mut notifications) = start_server(config).await;
        let agent = agent_config();
        let uid = agent.instance_uid;
        let url = format!("ws://{}/v1/opamp", server.local_addr());
        let (agent, _events) = start_agent(client_config(&url, None), agent);
        agent
            .update(|s| s.set_health(healthy("bystander up")))
            .await
            .unwrap();
        wait_for_health(&mut notifications, uid, "bystander up").await;
        Self {
            server,
            notifications,
            agent,
            uid,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The bystander was never disconnected, and its updates still reach the server.
    async fn assert_still_served(mut self) {
        while let Ok(notification) = self.notifications.try_recv() {
            assert!(
                !matches!(notification, ServerNotification::Disconnected { uid } if uid == self.uid),
                "the bystander was disconnected"
            );
        }
        self.agent
            .update(|s| s.set_health(healthy("bystander still up")))
            .await
            .unwrap();
        wait_for_health(&mut self.notifications, self.uid, "bystander still up").await;
        self.agent.shutdown().await.unwrap();
        self.server.shutdown().await;
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("server never closed")
        .ok();
    received
}

#[tokio::test]
async fn a_websocket_that_never_sends_an_opamp_message_is_closed_with_1008() {
    let mut config = server_config();
    config.admission.first_message_timeout = Duration::from_millis(400);
    // Pings every 100 ms: before the fix the server's own pings kept such a socket alive.
    config.idle_timeout = Duration::from_millis(300);
    let bystander = Bystander::start(config).await;
    // A WebSocket library answers pings, so this socket is never idle, only silent.
    let url = format!("ws://{}/v1/opamp", bystander.addr());
    let started = Instant::now();
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let code = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match silent.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                    return u16::from(frame.code);
                }
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the silent WebSocket was never closed");
    assert_eq!(code, 1008);
    assert!(started.elapsed() >= Duration::from_millis(350));
    // The bystander spoke in time and stays, though it too is past the first-message window.
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn connections_over_the_per_address_bound_get_503_and_room_comes_back() {
    let mut config = server_config();
    // Loopback is exempt by default (load tests); an attacker's address is not.
    config.admission.exempt_loopback = false;
    config.admission.max_connections_per_address = Some(2);
    config.retry_after = Duration::from_secs(1);
    // The bystander's WebSocket is one connection from 127.0.0.1; this is the second.
    let bystander = Bystander::start(config).await;
    let mut held = TcpStream::connect(bystander.addr()).await.unwrap();
    held.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, held.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));

    let mut refused = TcpStream::connect(bystander.addr()).await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut refused).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "got {answer:?}");
    assert!(answer.contains("Retry-After: 1"), "got {answer:?}");

    drop(held);
    bystander.assert_still_served().await;
}

const PACKAGE_SIZE: usize = 32 << 20;

async fn download_server() -> (RunningServer, tempfile::TempDir) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; PACKAGE_SIZE]).unwrap();
    let mut config = server_config().downloads(DownloadConfig::new(dir.path()));
    config.admission.write_timeout = Duration::from_millis(500);
    config.admission.max_concurrent_downloads = 1;
    config.retry_after = Duration::from_secs(3);
    let (server, _notifications) = start_server(config).await;
    (server, dir)
}

#[tokio::test]
async fn a_stalled_download_reader_is_dropped_and_its_slot_given_back() {
    let (server, _dir) = download_server().await;
    // A reader with a small receive window that takes the response head and then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.local_addr()).await.unwrap();
    stalled
        .write_all(b"GET /packages/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stalled.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // The only download slot is held: another download is refused, not queued.
    let url = format!("http://{}/packages/big.bin", server.local_addr());
    let busy = reqwest::get(&url).await.unwrap();
    assert_eq!(busy.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "3");

    // The stall is the attack: longer than the server's write timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rest = read_to_close(&mut stalled).await;
    assert!(
        rest.len() < PACKAGE_SIZE,
        "the stalled reader got the whole file ({} bytes): it was never dropped",
        rest.len()
    );

    // Its slot came back: the next download gets the whole file.
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), PACKAGE_SIZE);
    server.shutdown().await;
}
