//! Unit tests of the endpoint's routing, holding, idle and reassignment rules.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, AgentToServerFlags, InstanceUid, ServerCapabilities, v1};

use super::*;
use crate::test_support::{description, health, t0};
use crate::{ServerEvent, ServerSessionConfig};

const WS: ConnectionId = ConnectionId(1);
const OTHER_WS: ConnectionId = ConnectionId(2);
const HTTP: ConnectionId = ConnectionId(3);

fn ws_params() -> ConnectionParams {
    ConnectionParams::new(TransportMode::WebSocket).endpoint_url("ws://127.0.0.1:4320/v1/opamp")
}

fn http_params() -> ConnectionParams {
    ConnectionParams::new(TransportMode::HttpPolling).endpoint_url("http://127.0.0.1:4320/v1/opamp")
}

fn uid(n: u8) -> InstanceUid {
    InstanceUid::from([n; 16])
}

fn endpoint(heartbeat: Option<Duration>) -> ServerEndpoint {
    let mut session = ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::OFFERS_CONNECTION_SETTINGS,
    );
    session.heartbeat_interval = heartbeat;
    ServerEndpoint::new(EndpointConfig::new(session))
}

fn hello(uid: InstanceUid, seq: u64) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: (AgentCapabilities::REPORTS_STATUS | AgentCapabilities::REPORTS_HEARTBEAT)
            .bits(),
        agent_description: (seq == 0).then(|| description(&format!("agent-{uid}"))),
        ..Default::default()
    }
}

fn drain(
    endpoint: &mut ServerEndpoint,
) -> (Vec<(ConnectionId, v1::ServerToAgent)>, Vec<EndpointEvent>) {
    let transmits = std::iter::from_fn(|| endpoint.poll_transmit()).collect();
    let events = std::iter::from_fn(|| endpoint.poll_event()).collect();
    (transmits, events)
}

fn answered_uids(transmits: &[(ConnectionId, v1::ServerToAgent)]) -> Vec<InstanceUid> {
    transmits
        .iter()
        .map(|(_, m)| InstanceUid::from_slice(&m.instance_uid).expect("uid"))
        .collect()
}

#[test]
fn several_agents_share_one_websocket_and_each_is_answered_on_it() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    for n in 1..=50 {
        endpoint
            .handle(now, WS, hello(uid(n), 0))
            .expect("accepted");
    }
    let (transmits, events) = drain(&mut endpoint);
    assert!(transmits.iter().all(|(c, _)| *c == WS));
    let answered = answered_uids(&transmits);
    for n in 1..=50 {
        assert_eq!(
            answered.iter().filter(|u| **u == uid(n)).count(),
            1,
            "agent {n} answered once"
        );
    }
    let connected = events
        .iter()
        .filter(|e| matches!(e, EndpointEvent::Connected { connection, .. } if *connection == WS))
        .count();
    assert_eq!(connected, 50);
    assert_eq!(endpoint.agents_on(WS).count(), 50);
    // A later message of one agent changes only that agent.
    let mut update = hello(uid(7), 1);
    update.health = Some(health(false));
    endpoint.handle(now, WS, update).expect("accepted");
    let (transmits, events) = drain(&mut endpoint);
    assert_eq!(answered_uids(&transmits), [uid(7)]);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, EndpointEvent::Agent { uid: u, .. } if *u == uid(7)))
    );
    assert!(
        endpoint
            .session(uid(8))
            .expect("known")
            .agent_state()
            .status
            .health
            .is_none()
    );
    // Closing the socket disconnects all fifty.
    endpoint.close_connection(now, WS);
    assert_eq!(endpoint.connected().count(), 0);
}

#[test]
fn a_second_connection_claiming_a_held_uid_is_refused_and_changes_nothing() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    endpoint.open_connection(now, OTHER_WS, ws_params());
    endpoint.open_connection(now, HTTP, http_params());
    endpoint
        .handle(now, WS, hello(uid(1), 0))
        .expect("accepted");
    drain(&mut endpoint);
    let before = endpoint
        .session(uid(1))
        .expect("known")
        .agent_state()
        .clone();

    for impostor in [OTHER_WS, HTTP] {
        let mut forged = hello(uid(1), 1);
        forged.agent_description = Some(description("impostor"));
        forged.agent_disconnect = Some(v1::AgentDisconnect {});
        let error = endpoint.handle(now, impostor, forged).expect_err("refused");
        assert!(
            matches!(error, EndpointError::UidInUse { holder: WS, .. }),
            "{error}"
        );
        let (transmits, events) = drain(&mut endpoint);
        assert_eq!(transmits.len(), 1, "the impostor gets one error answer");
        assert_eq!(transmits[0].0, impostor);
        assert!(transmits[0].1.error_response.is_some());
        assert!(matches!(events.as_slice(), [EndpointEvent::Refused { .. }]));
        assert_eq!(
            endpoint.session(uid(1)).expect("known").agent_state(),
            &before
        );
        assert_eq!(endpoint.connection_of(uid(1)), Some(WS));
    }
    // Once the holder closes, the uid may arrive elsewhere (the agent reconnected).
    endpoint.close_connection(now, WS);
    endpoint
        .handle(now, OTHER_WS, hello(uid(1), 1))
        .expect("accepted");
    assert_eq!(endpoint.connection_of(uid(1)), Some(OTHER_WS));
}

#[test]
fn restricted_connection_may_speak_only_for_its_uids() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    endpoint.restrict_connection(WS, [uid(1)]).expect("open");
    endpoint.handle(now, WS, hello(uid(1), 0)).expect("allowed");
    let error = endpoint
        .handle(now, WS, hello(uid(2), 0))
        .expect_err("refused");
    assert!(matches!(error, EndpointError::NotAuthorized { .. }));
    assert!(endpoint.session(uid(2)).is_none());
}

#[test]
fn http_agent_polling_at_its_heartbeat_never_flaps_and_a_silent_one_expires_within_its_bound() {
    let interval = Duration::from_secs(120);
    let mut endpoint = endpoint(Some(interval));
    let bound = endpoint.config().idle_bound(interval);
    let mut now = t0();
    for seq in 0..20 {
        endpoint.open_connection(now, HTTP, http_params());
        endpoint
            .handle(now, HTTP, hello(uid(1), seq))
            .expect("accepted");
        endpoint.close_connection(now, HTTP);
        let (transmits, events) = drain(&mut endpoint);
        assert_eq!(transmits.len(), 1, "exactly one answer per request");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, EndpointEvent::Disconnected { .. }))
        );
        if seq > 0 {
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, EndpointEvent::Heartbeat { .. })),
                "a poll that changes nothing still shows the agent alive: {events:?}"
            );
        }
        now += interval;
        if let Some(deadline) = endpoint.poll_timeout()
            && deadline <= now
        {
            endpoint.handle_timeout(deadline);
        }
        endpoint.handle_timeout(now);
    }
    let (_, events) = drain(&mut endpoint);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, EndpointEvent::Disconnected { .. }))
    );
    // Silence: disconnected once the bound passes, not before.
    let last_poll = now - interval;
    let deadline = endpoint.poll_timeout().expect("a deadline");
    assert_eq!(deadline, last_poll + bound);
    endpoint.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(endpoint.connected().count(), 1);
    endpoint.handle_timeout(deadline);
    let (_, events) = drain(&mut endpoint);
    assert!(events.contains(&EndpointEvent::Disconnected {
        uid: uid(1),
        reason: DisconnectReason::Idle
    }));
}

#[test]
fn idle_websocket_agent_is_disconnected_and_its_empty_socket_closed() {
    let interval = Duration::from_secs(5);
    let mut endpoint = endpoint(Some(interval));
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    endpoint
        .handle(now, WS, hello(uid(1), 0))
        .expect("accepted");
    endpoint
        .handle(now, WS, hello(uid(2), 0))
        .expect("accepted");
    // Agent 2 keeps its heartbeats, agent 1 goes silent.
    let mut t = now;
    for seq in 1..=4 {
        t += interval;
        endpoint
            .handle(t, WS, hello(uid(2), seq))
            .expect("accepted");
        endpoint.handle_timeout(t);
    }
    drain(&mut endpoint);
    assert_eq!(endpoint.connected().collect::<Vec<_>>(), [uid(2)]);
    assert_eq!(endpoint.agents_on(WS).collect::<Vec<_>>(), [uid(2)]);
    t += endpoint.config().idle_bound(interval);
    endpoint.handle_timeout(t);
    let (_, events) = drain(&mut endpoint);
    assert!(events.contains(&EndpointEvent::CloseConnection {
        connection: WS,
        reason: DisconnectReason::Idle
    }));
}

#[test]
fn transport_switch_keeps_the_agents_state() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, HTTP, http_params());
    endpoint
        .handle(now, HTTP, hello(uid(1), 0))
        .expect("accepted");
    endpoint.close_connection(now, HTTP);
    drain(&mut endpoint);
    endpoint.open_connection(now, WS, ws_params());
    endpoint
        .handle(now, WS, hello(uid(1), 1))
        .expect("accepted");
    let (transmits, events) = drain(&mut endpoint);
    assert_eq!(transmits.len(), 1);
    assert_eq!(
        events[..2],
        [
            EndpointEvent::Disconnected {
                uid: uid(1),
                reason: DisconnectReason::TransportSwitched
            },
            EndpointEvent::Connected {
                uid: uid(1),
                connection: WS,
                mode: TransportMode::WebSocket
            },
        ]
    );
    let session = endpoint.session(uid(1)).expect("known");
    assert!(
        session.agent_state().status.description.is_some(),
        "state kept"
    );
    assert_eq!(session.config().mode, TransportMode::WebSocket);
    assert!(
        !session.is_awaiting_full_state(),
        "no gap, no full report needed"
    );
}

#[test]
fn reassigned_uid_reaches_the_same_agent_and_the_agent_is_rekeyed() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    let mut first = hello(uid(1), 0);
    first.flags = AgentToServerFlags::REQUEST_INSTANCE_UID.bits();
    endpoint.handle(now, WS, first).expect("accepted");
    let (_, events) = drain(&mut endpoint);
    assert!(events.iter().any(|e| matches!(
        e,
        EndpointEvent::Agent {
            event: ServerEvent::InstanceUidRequested,
            ..
        }
    )));
    endpoint
        .with_session(now, uid(1), |s| s.assign_instance_uid(uid(9)))
        .expect("known");
    let (transmits, _) = drain(&mut endpoint);
    let identification = transmits[0]
        .1
        .agent_identification
        .as_ref()
        .expect("pushed");
    assert_eq!(identification.new_instance_uid, uid(9).to_vec());
    // The agent switches.
    endpoint
        .handle(now, WS, hello(uid(9), 1))
        .expect("accepted");
    let (transmits, events) = drain(&mut endpoint);
    assert_eq!(answered_uids(&transmits), [uid(9)]);
    assert!(events.contains(&EndpointEvent::UidReassigned {
        from: uid(1),
        to: uid(9)
    }));
    assert_eq!(endpoint.agents().collect::<Vec<_>>(), [uid(9)]);
    assert!(
        endpoint.session(uid(1)).is_some(),
        "the old uid is an alias"
    );
    assert_eq!(endpoint.agents_on(WS).collect::<Vec<_>>(), [uid(9)]);
}

#[test]
fn gone_agents_are_forgotten_after_forget_after() {
    let mut endpoint = endpoint(None);
    let now = t0();
    endpoint.open_connection(now, WS, ws_params());
    endpoint
        .handle(now, WS, hello(uid(1), 0))
        .expect("accepted");
    endpoint.close_connection(now, WS);
    let forget_at = endpoint.poll_timeout().expect("forget deadline");
    assert_eq!(Some(forget_at - now), endpoint.config().forget_after);
    endpoint.handle_timeout(forget_at);
    assert!(endpoint.is_empty());
    let (_, events) = drain(&mut endpoint);
    assert!(events.contains(&EndpointEvent::Forgotten { uid: uid(1) }));
}

#[test]
fn connection_settings_offer_names_the_endpoint_and_carries_a_hash() {
    let mut endpoint = endpoint(Some(Duration::from_secs(15)));
    let now = t0();
    let url = "ws://127.0.0.1:4320/v1/opamp";
    endpoint.open_connection(
        now,
        WS,
        ConnectionParams::new(TransportMode::WebSocket).endpoint_url(url),
    );
    endpoint
        .handle(now, WS, hello(uid(1), 0))
        .expect("accepted");
    let (transmits, _) = drain(&mut endpoint);
    let offers = transmits
        .iter()
        .find_map(|(_, m)| m.connection_settings.as_ref())
        .expect("heartbeat offered");
    let opamp = offers.opamp.as_ref().expect("opamp settings");
    assert_eq!(opamp.destination_endpoint, url);
    assert_eq!(opamp.heartbeat_interval_seconds, 15);
    assert_eq!(offers.hash.len(), 32);
}

#[test]
fn without_a_known_endpoint_no_invalid_opamp_offer_is_sent() {
    let mut endpoint = endpoint(Some(Duration::from_secs(15)));
    let now = t0();
    endpoint.open_connection(now, WS, ConnectionParams::new(TransportMode::WebSocket));
    endpoint
        .handle(now, WS, hello(uid(1), 0))
        .expect("accepted");
    let (transmits, _) = drain(&mut endpoint);
    for (_, message) in transmits {
        if let Some(offers) = message.connection_settings {
            let opamp = offers.opamp.expect("only OpAMP settings are offered here");
            assert!(!opamp.destination_endpoint.is_empty());
        }
    }
}

#[test]
fn undecodable_bytes_are_answered_and_refused() {
    let mut endpoint = endpoint(None);
    let now: Instant = t0();
    endpoint.open_connection(now, HTTP, http_params());
    let error = endpoint
        .handle_bytes(now, HTTP, b"\xff\xff\xff")
        .expect_err("refused");
    assert!(matches!(error, EndpointError::Session(_)));
    let (connection, bytes) = endpoint.poll_transmit_bytes().expect("one answer");
    assert_eq!(connection, HTTP);
    let answer = framing::decode_server_message(
        TransportMode::HttpPolling,
        &bytes,
        &opamp_proto::codec::Limits::default(),
    )
    .expect("decodes");
    assert!(answer.error_response.is_some());
}
