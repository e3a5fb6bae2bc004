//! Conformance with peers we did not write: every byte an agent sends here is written by
//! hand from the OpAMP spec and RFC 6455 (no encoder of ours), over raw TCP on 127.0.0.1.
//!
//! - several agents multiplexed on one WebSocket (`ServerToAgent.instance_uid`);
//! - the WebSocket close handshake (RFC 6455 section 5.5.1);
//! - HTTP agents disconnected by the bound derived from their heartbeat interval, not by
//!   the socket idle timeout, and heartbeats reported.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opamp_proto::{InstanceUid, codec, v1};
use opamp_transport::server::{OpampServerConfig, ServerNotification};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `AgentCapabilities`: ReportsStatus (0x1) | ReportsHeartbeat (0x2000).
const REPORTS_STATUS_AND_HEARTBEAT: u64 = 0x2001;

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `AgentToServer` by hand: field 1 `instance_uid` (bytes), 2 `sequence_num`, 4
/// `capabilities`, and 9 `agent_disconnect` (an empty message) when `goodbye`.
fn agent_to_server(uid: [u8; 16], seq: u64, goodbye: bool) -> Vec<u8> {
    let mut out = vec![0x0A, 16];
    out.extend_from_slice(&uid);
    out.push(0x10);
    varint(seq, &mut out);
    out.push(0x20);
    varint(REPORTS_STATUS_AND_HEARTBEAT, &mut out);
    if goodbye {
        out.extend_from_slice(&[0x4A, 0x00]);
    }
    out
}

/// A masked client frame (RFC 6455 section 5.2) with FIN set.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// An OpAMP WebSocket message: the `0x00` header, then the protobuf bytes.
fn opamp_frame(protobuf: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x00];
    payload.extend_from_slice(protobuf);
    client_frame(0x2, &payload)
}

async fn websocket(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// One server frame (unmasked): `(opcode, payload)`, or `None` at EOF.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let first = stream.read_u8().await.ok()?;
    let second = stream.read_u8().await.ok()?;
    assert_eq!(second & 0x80, 0, "server frames are not masked");
    let len = match second & 0x7F {
        126 => u64::from(stream.read_u16().await.ok()?),
        127 => stream.read_u64().await.ok()?,
        len => u64::from(len),
    };
    let mut payload = vec![0; usize::try_from(len).unwrap()];
    stream.read_exact(&mut payload).await.ok()?;
    Some((first & 0x0F, payload))
}

/// Reads server messages until every uid in `waiting` was answered; returns the answers.
async fn answers_for(
    stream: &mut TcpStream,
    mut waiting: HashSet<[u8; 16]>,
) -> Vec<v1::ServerToAgent> {
    let mut answers = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !waiting.is_empty() {
            let (opcode, payload) = read_frame(stream).await.expect("connection open");
            if opcode != 0x2 {
                continue;
            }
            let answer: v1::ServerToAgent =
                codec::decode_ws_frame(&payload, &codec::Limits::default()).unwrap();
            assert!(answer.error_response.is_none(), "{answer:?}");
            waiting.remove(answer.instance_uid.as_slice());
            answers.push(answer);
        }
    })
    .await
    .expect("every agent answered");
    answers
}

async fn multiplexed_agents_are_all_served(count: u8) {
    init_tracing();
    let (server, mut notifications) = start_server(server_config()).await;
    let mut stream = websocket(server.local_addr()).await;
    let uids: Vec<[u8; 16]> = (1..=count).map(|n| [n; 16]).collect();
    for uid in &uids {
        stream
            .write_all(&opamp_frame(&agent_to_server(*uid, 0, false)))
            .await
            .unwrap();
    }
    answers_for(&mut stream, uids.iter().copied().collect()).await;
    let mut connected = HashSet::new();
    while connected.len() < uids.len() {
        let uid = wait_for(&mut notifications, |n| match n {
            ServerNotification::Connected { uid, .. } => Some(*uid),
            ServerNotification::Disconnected { uid } => panic!("{uid} disconnected"),
            _ => None,
        })
        .await;
        connected.insert(uid);
    }
    assert_eq!(server.sessions().connected().len(), uids.len());
    // Later messages keep flowing for every agent on the same socket.
    for uid in &uids {
        stream
            .write_all(&opamp_frame(&agent_to_server(*uid, 1, false)))
            .await
            .unwrap();
    }
    answers_for(&mut stream, uids.iter().copied().collect()).await;
    // One agent says goodbye; the others stay.
    stream
        .write_all(&opamp_frame(&agent_to_server(uids[0], 2, true)))
        .await
        .unwrap();
    let gone = wait_for(&mut notifications, |n| match n {
        ServerNotification::Disconnected { uid } => Some(*uid),
        _ => None,
    })
    .await;
    assert_eq!(gone, InstanceUid::from(uids[0]));
    assert_eq!(server.sessions().connected().len(), uids.len() - 1);
    server.shutdown().await;
}

#[tokio::test]
async fn two_agents_share_one_websocket() {
    multiplexed_agents_are_all_served(2).await;
}

#[tokio::test]
async fn fifty_agents_share_one_websocket() {
    multiplexed_agents_are_all_served(50).await;
}

#[tokio::test]
async fn a_client_close_is_echoed_before_the_connection_ends() {
    init_tracing();
    let (server, _notifications) = start_server(server_config()).await;
    let mut stream = websocket(server.local_addr()).await;
    stream
        .write_all(&opamp_frame(&agent_to_server([9; 16], 0, false)))
        .await
        .unwrap();
    answers_for(&mut stream, HashSet::from([[9; 16]])).await;
    // Close with status 1000 (normal closure).
    stream
        .write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(WAIT, async {
        loop {
            match read_frame(&mut stream).await {
                Some((0x8, payload)) => return Some(payload),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .unwrap();
    let payload = echoed.expect("the server answers a Close with a Close (RFC 6455 5.5.1)");
    assert_eq!(payload[..2], 1000u16.to_be_bytes());
    server.shutdown().await;
}

async fn post(addr: std::net::SocketAddr, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Scaled down from the field (2-minute polls, 2-minute heartbeat setting, 90 s socket
/// idle timeout): the agent polls less often than the socket idle timeout, yet within the
/// bound derived from its heartbeat interval, so it never flaps; once it stops, it is
/// reported disconnected within that bound.
#[tokio::test]
async fn http_agent_polling_at_its_heartbeat_never_flaps_and_goes_when_silent() {
    init_tracing();
    // Whole seconds: the protocol carries the heartbeat interval in seconds.
    let interval = Duration::from_secs(1);
    let mut config: OpampServerConfig = server_config();
    config.idle_timeout = Duration::from_millis(300);
    config.idle_grace = Duration::from_millis(100);
    config.session.heartbeat_interval = Some(interval);
    let bound = Duration::from_millis(2600); // 2.5 × 1 s + 100 ms
    let (server, mut notifications) = start_server(config).await;
    let uid = [0x42; 16];
    let mut heartbeats = 0;
    let mut last_poll = Instant::now();
    for seq in 0..4 {
        last_poll = Instant::now();
        let answer = post(server.local_addr(), &agent_to_server(uid, seq, false)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(interval).await; // the agent's poll interval, not a synchronisation
        while let Ok(notification) = notifications.try_recv() {
            match notification {
                ServerNotification::Disconnected { .. } => panic!("a polling agent flapped"),
                ServerNotification::Heartbeat { .. } => heartbeats += 1,
                _ => {}
            }
        }
    }
    assert!(
        heartbeats >= 2,
        "polls that change nothing are reported: {heartbeats}"
    );
    wait_for(&mut notifications, |n| {
        matches!(n, ServerNotification::Disconnected { .. }).then_some(())
    })
    .await;
    let silent_for = last_poll.elapsed();
    // The timer re-checks every 250 ms; allow that and scheduling on a busy machine.
    assert!(
        silent_for >= bound,
        "disconnected early, after {silent_for:?}"
    );
    assert!(
        silent_for <= bound + Duration::from_millis(1500),
        "disconnected late, after {silent_for:?}"
    );
    server.shutdown().await;
}
