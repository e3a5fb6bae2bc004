//! Broken and hostile peers each get the documented refusal, and a well-behaved agent on
//! the same server keeps being served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers outside #[test] functions.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use opamp_proto::{InstanceUid, codec, v1};
use opamp_transport::client::ClientHandle;
use opamp_transport::server::{
    OpampServerConfig, RefusalReason, RunningServer, ServerNotification,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A server with one well-behaved WebSocket agent connected to it.
struct Bystander {
    server: RunningServer,
    notifications: mpsc::Receiver<ServerNotification>,
    agent: ClientHandle,
    uid: InstanceUid,
}

impl Bystander {
    async fn start(config: OpampServerConfig) -> Self {
        init_tracing();
        let (server, mut notifications) = start_server(config).await;
        let agent = agent_config();
        let uid = agent.instance_uid;
        let (handle, _events) = start_agent(
            client_config(&format!("ws://{}/v1/opamp", server.local_addr()), None),
            agent,
        );
        handle
            .update(|s| s.set_health(healthy("bystander up")))
            .await
            .unwrap();
        wait_for_health(&mut notifications, uid, "bystander up").await;
        Self {
            server,
            notifications,
            agent: handle,
            uid,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/v1/opamp", self.addr())
    }

    /// The bystander's updates still reach the server, and so does a brand-new agent.
    async fn assert_still_served(mut self) {
        self.agent
            .update(|s| s.set_health(healthy("bystander still up")))
            .await
            .unwrap();
        wait_for_health(&mut self.notifications, self.uid, "bystander still up").await;
        let newcomer = agent_config();
        let newcomer_uid = newcomer.instance_uid;
        let (handle, _events) = start_agent(client_config(&self.url("http"), None), newcomer);
        handle
            .update(|s| s.set_health(healthy("newcomer")))
            .await
            .unwrap();
        wait_for_health(&mut self.notifications, newcomer_uid, "newcomer").await;
        handle.shutdown().await.unwrap();
        self.agent.shutdown().await.unwrap();
        self.server.shutdown().await;
    }
}

fn small_limit_config() -> OpampServerConfig {
    server_config().max_message_size(1024)
}

fn agent_to_server(extra: usize) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: InstanceUid::new_v7().to_vec(),
        agent_description: Some(v1::AgentDescription {
            non_identifying_attributes: vec![v1::KeyValue {
                key: "padding".to_owned(),
                value: Some(v1::AnyValue {
                    value: Some(v1::any_value::Value::BytesValue(vec![b'x'; extra])),
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends one raw WebSocket message and returns the close code the server answers with.
async fn close_code_for(url: &str, message: Message) -> u16 {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let _ = socket.send(message).await; // The server may already be closing.
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame")
}

#[tokio::test]
async fn counters_follow_websocket_traffic_and_open_connections() {
    let bystander = Bystander::start(server_config()).await;
    let stats = bystander.server.stats().snapshot();
    assert_eq!((stats.websocket.opened, stats.websocket.open), (1, 1));
    assert_eq!(stats.connections_open, 1);
    assert!(stats.websocket.messages_received >= 1, "{stats:?}");
    assert!(stats.websocket.bytes_received > 0);
    assert!(stats.websocket.messages_sent >= 1);
    assert_eq!(stats.http.opened, 0);
    let Bystander { server, agent, .. } = bystander;
    agent.shutdown().await.unwrap();
    // The server counts the socket closed once its task ends.
    let deadline = Instant::now() + WAIT;
    while server.stats().snapshot().websocket.open != 0 {
        assert!(
            Instant::now() < deadline,
            "the WebSocket never counted as closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().snapshot().connections_open, 0);
}

#[tokio::test]
async fn oversize_websocket_message_is_closed_with_1009() {
    let bystander = Bystander::start(small_limit_config()).await;
    let url = bystander.url("ws");
    // Just over the protobuf limit (caught after framing) and far over it (caught by the
    // WebSocket layer before buffering it all).
    let just_over = codec::encode_ws_frame(&agent_to_server(1100));
    assert_eq!(
        close_code_for(&url, Message::Binary(just_over.into())).await,
        1009
    );
    let far_over = codec::encode_ws_frame(&agent_to_server(1 << 20));
    assert_eq!(
        close_code_for(&url, Message::Binary(far_over.into())).await,
        1009
    );
    // Counted before the close frame is sent.
    let stats = bystander.server.stats().snapshot();
    assert_eq!(stats.websocket.refused(RefusalReason::TooLarge), 2);
    assert_eq!(stats.websocket.refused(RefusalReason::Malformed), 0);
    bystander.assert_still_served().await;
}

/// A WebSocket whose upgrade does not name its agent is authorised per uid on its first
/// message: a refused uid closes it with 1008, and so does a verdict that would issue a
/// credential, which can no longer reach the agent (the upgrade response is gone).
#[tokio::test]
async fn a_websocket_message_for_an_unauthorised_uid_is_closed_with_1008() {
    use opamp_transport::server::AgentVerdict;
    let refused = InstanceUid::new_v7();
    let enrolling = InstanceUid::new_v7();
    let config = server_config().authorize_agent(move |claim| {
        if claim.uid == refused {
            AgentVerdict::refuse("not this one")
        } else if claim.uid == enrolling {
            AgentVerdict::AllowWithCredential {
                credential: "issued".into(),
            }
        } else {
            AgentVerdict::Allow
        }
    });
    let bystander = Bystander::start(config).await;
    let url = bystander.url("ws");
    for uid in [refused, enrolling] {
        let message = v1::AgentToServer {
            instance_uid: uid.to_vec(),
            ..Default::default()
        };
        let frame = codec::encode_ws_frame(&message);
        assert_eq!(
            close_code_for(&url, Message::Binary(frame.into())).await,
            1008
        );
        assert!(bystander.server.sessions().connection_info(uid).is_none());
    }
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn wrong_websocket_header_byte_is_closed_with_1002() {
    let bystander = Bystander::start(server_config()).await;
    let mut frame = codec::encode_ws_frame(&agent_to_server(0));
    frame[0] = 0x01;
    assert_eq!(
        close_code_for(&bystander.url("ws"), Message::Binary(frame.into())).await,
        1002
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn garbage_websocket_payload_is_closed_with_1007() {
    let bystander = Bystander::start(server_config()).await;
    let url = bystander.url("ws");
    let garbage = vec![0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    assert_eq!(
        close_code_for(&url, Message::Binary(garbage.into())).await,
        1007
    );
    let short_uid = codec::encode_ws_frame(&v1::AgentToServer {
        instance_uid: vec![1, 2, 3],
        ..Default::default()
    });
    assert_eq!(
        close_code_for(&url, Message::Binary(short_uid.into())).await,
        1007
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn text_websocket_message_is_closed_with_1003() {
    let bystander = Bystander::start(server_config()).await;
    assert_eq!(
        close_code_for(&bystander.url("ws"), Message::Text("hello".into())).await,
        1003
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn silent_websocket_peer_is_closed_with_1001() {
    let mut config = server_config();
    config.idle_timeout = Duration::from_millis(300);
    let bystander = Bystander::start(config).await;
    // A hand-made upgrade: unlike a WebSocket library, these raw bytes never answer pings.
    let mut stream = TcpStream::connect(bystander.addr()).await.unwrap();
    let upgrade = "GET /v1/opamp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("never closed")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 101"));
    let frames = &received[head_end..];
    assert_eq!(&frames[..2], [0x89, 0x00], "first a ping");
    assert_eq!(frames[2], 0x88, "then a close frame");
    assert_eq!(u16::from_be_bytes([frames[4], frames[5]]), 1001);
    // The bystander's agent has no heartbeat either, but it answers pings: still served.
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn agent_without_heartbeats_stays_connected_through_pings() {
    let mut config = server_config();
    config.idle_timeout = Duration::from_millis(300);
    let mut bystander = Bystander::start(config).await;
    // Several idle timeouts pass; the agent sends nothing but pongs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    while let Ok(notification) = bystander.notifications.try_recv() {
        assert!(
            !matches!(notification, ServerNotification::Disconnected { .. }),
            "{notification:?}"
        );
    }
    assert_eq!(bystander.server.sessions().connected(), [bystander.uid]);
    bystander.assert_still_served().await;
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::StatusCode {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn http_refusals_use_the_documented_status_codes() {
    let bystander = Bystander::start(small_limit_config()).await;
    let url = bystander.url("http");
    let good = codec::encode(&agent_to_server(10));
    assert_eq!(
        post(&url, "application/json", None, good.clone()).await,
        415
    );
    assert_eq!(
        post(&url, "application/x-protobuf", Some("br"), good.clone()).await,
        415
    );
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            codec::encode(&agent_to_server(2000))
        )
        .await,
        413
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&codec::encode(&agent_to_server(100_000)))
        .unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(
        bomb.len() < 1024,
        "the compressed body itself is under the limit"
    );
    assert_eq!(
        post(&url, "application/x-protobuf", Some("gzip"), bomb).await,
        413
    );
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            vec![0xff, 0xff, 0xff, 0xff, 0x0f]
        )
        .await,
        400
    );
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            Some("gzip"),
            b"not gzip".to_vec()
        )
        .await,
        400
    );
    let before = bystander.server.stats().snapshot().http;
    assert_eq!(
        post(
            &url,
            "application/x-protobuf; charset=binary",
            None,
            good.clone()
        )
        .await,
        200
    );
    let stats = bystander.server.stats().snapshot().http;
    assert_eq!(stats.refused(RefusalReason::TooLarge), 2);
    assert_eq!(stats.refused(RefusalReason::Malformed), 4);
    assert_eq!(stats.opened, 7);
    assert_eq!(
        (stats.messages_received, stats.bytes_received),
        (
            before.messages_received + 1,
            before.bytes_received + good.len() as u64
        )
    );
    assert_eq!(stats.messages_sent, before.messages_sent + 1);
    assert!(stats.bytes_sent > before.bytes_sent);
    bystander.assert_still_served().await;
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("server never closed")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn raw_garbage_bytes_get_400_and_a_close() {
    let bystander = Bystander::start(server_config()).await;
    let mut stream = TcpStream::connect(bystander.addr()).await.unwrap();
    stream
        .write_all(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "got {answer:?}"
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_after_the_header_timeout() {
    let mut config = server_config();
    config.header_read_timeout = Duration::from_millis(400);
    let bystander = Bystander::start(config).await;
    let started = Instant::now();
    // One sends half a request and stalls; one sends nothing at all.
    let mut half = TcpStream::connect(bystander.addr()).await.unwrap();
    half.write_all(b"POST /v1/opamp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        .await
        .unwrap();
    let mut mute = TcpStream::connect(bystander.addr()).await.unwrap();
    let (half_answer, mute_answer) =
        tokio::join!(read_to_close(&mut half), read_to_close(&mut mute));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "closed too late: {elapsed:?}"
    );
    assert!(
        !half_answer.starts_with("HTTP/1.1 2"),
        "got {half_answer:?}"
    );
    assert!(
        !mute_answer.starts_with("HTTP/1.1 2"),
        "got {mute_answer:?}"
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn connections_over_the_maximum_get_503_with_retry_after() {
    let mut config = server_config();
    // The bystander holds one connection; two idle ones fill the rest.
    config.max_connections = 3;
    config.retry_after = Duration::from_secs(2);
    let bystander = Bystander::start(config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(bystander.addr()).await.unwrap();
        // A complete request on a kept-alive connection: the server has surely counted it.
        stream
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
        held.push(stream);
    }
    let mut refused = TcpStream::connect(bystander.addr()).await.unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "got {answer:?}");
    assert!(answer.contains("Retry-After: 2"), "got {answer:?}");
    let stats = bystander.server.stats().snapshot();
    assert_eq!(stats.connections_refused_capacity, 1);
    assert_eq!((stats.connections_accepted, stats.connections_open), (4, 3));
    // Freeing the slots lets agents in again (a newcomer refused in the meantime retries
    // after the 2 s Retry-After).
    drop(held);
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn trickled_http_body_gets_408() {
    let mut config = server_config();
    config.body_read_timeout = Duration::from_millis(400);
    let bystander = Bystander::start(config).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(bystander.addr()).await.unwrap();
    let head = "POST /v1/opamp HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0x0a]).await.unwrap(); // then nothing more
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "got {answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(350));
    bystander.assert_still_served().await;
}

/// The endpoint's rule: an open WebSocket holds the uids of its agents. A second
/// connection claiming one (an impostor, or the agent itself before its old socket was
/// seen to close) gets an error response and changes nothing; the first stays served.
#[tokio::test]
async fn a_second_connection_claiming_a_held_uid_is_refused_and_the_first_kept() {
    let bystander = Bystander::start(server_config()).await;
    let url = bystander.url("ws");
    let hello = agent_to_server(0);
    let message = codec::encode_ws_frame(&hello);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    first
        .send(Message::Binary(message.clone().into()))
        .await
        .unwrap();
    // Wait for the server's answer so the first connection is surely registered.
    let answered = tokio::time::timeout(WAIT, first.next()).await.unwrap();
    assert!(
        matches!(answered, Some(Ok(Message::Binary(_)))),
        "{answered:?}"
    );
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut forged = hello.clone();
    forged.sequence_num = 1;
    forged.agent_disconnect = Some(v1::AgentDisconnect {});
    second
        .send(Message::Binary(codec::encode_ws_frame(&forged).into()))
        .await
        .unwrap();
    let answer = match tokio::time::timeout(WAIT, second.next()).await.unwrap() {
        Some(Ok(Message::Binary(frame))) => {
            codec::decode_ws_frame::<v1::ServerToAgent>(&frame, &Default::default()).unwrap()
        }
        other => panic!("expected an answer, got {other:?}"),
    };
    assert!(
        answer
            .error_response
            .is_some_and(|e| e.error_message.contains("connected on")),
        "the impostor is told the uid is in use"
    );
    // The first connection still holds the agent, which is still connected.
    assert_eq!(bystander.server.sessions().connected().len(), 2);
    let mut next = hello;
    next.sequence_num = 1;
    next.agent_description = None;
    first
        .send(Message::Binary(codec::encode_ws_frame(&next).into()))
        .await
        .unwrap();
    let answered = tokio::time::timeout(WAIT, first.next()).await.unwrap();
    assert!(
        matches!(answered, Some(Ok(Message::Binary(_)))),
        "the first connection is still served: {answered:?}"
    );
    bystander.assert_still_served().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let mut config = server_config();
    config.header_read_timeout = Duration::from_millis(400);
    let bystander = Bystander::start(config).await;
    let mut stream = TcpStream::connect(bystander.addr()).await.unwrap();
    stream
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // The 404 arrives, then the connection sits idle and must be closed: an idle
    // keep-alive connection holds a connection slot.
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "got {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    bystander.assert_still_served().await;
}

/// Seeded random frames, each on its own connection: every one is either answered or
/// refused with a documented close code, and the server keeps serving.
#[tokio::test]
async fn random_websocket_frames_get_an_answer_or_a_documented_close() {
    use rand::{Rng, SeedableRng};

    let bystander = Bystander::start(small_limit_config()).await;
    let url = bystander.url("ws");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0A3A_5EED);
    for round in 0..60 {
        let len = rng.gen_range(0..1600);
        let mut frame: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        if round % 2 == 0 && !frame.is_empty() {
            frame[0] = 0x00; // half of them pass the header check
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        socket
            .send(Message::Binary(frame.clone().into()))
            .await
            .unwrap();
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(_))) => return None,
                    Some(Ok(Message::Close(Some(close)))) => return Some(u16::from(close.code)),
                    Some(Ok(_)) => {}
                    other => panic!("round {round}: neither answer nor close: {other:?}"),
                }
            }
        })
        .await
        .unwrap();
        if let Some(code) = outcome {
            assert!(
                [1002, 1007, 1009].contains(&code),
                "round {round}: close {code} for {} bytes",
                frame.len()
            );
        }
    }
    bystander.assert_still_served().await;
}

/// The same for HTTP bodies: 200 for bytes that happen to decode, otherwise 400 or 413.
#[tokio::test]
async fn random_http_bodies_get_an_answer_or_a_documented_status() {
    use rand::{Rng, SeedableRng};

    let bystander = Bystander::start(small_limit_config()).await;
    let url = bystander.url("http");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4854_5450);
    for round in 0..60 {
        let len = rng.gen_range(0..1600);
        let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let gzip = round % 3 == 0;
        let status = post(&url, "application/x-protobuf", gzip.then_some("gzip"), body).await;
        assert!(
            [200, 400, 413].contains(&status.as_u16()),
            "round {round}: {status}"
        );
    }
    bystander.assert_still_served().await;
}
