//! One test per server-side protocol rule, each asserting the exact message produced.

use std::time::Duration;

use opamp_proto::{
    AgentCapabilities, AgentToServerFlags, InstanceUid, ServerCapabilities, ServerToAgentFlags, v1,
};

use super::*;
use crate::AgentStatus;
use crate::test_support::*;

const SERVER_CAPS: ServerCapabilities = ServerCapabilities::ACCEPTS_STATUS
    .union(ServerCapabilities::OFFERS_PACKAGES)
    .union(ServerCapabilities::ACCEPTS_PACKAGES_STATUS)
    .union(ServerCapabilities::OFFERS_REMOTE_CONFIG);

fn server() -> ServerSession {
    ServerSession::new(ServerSessionConfig::new(SERVER_CAPS))
}

fn report(seq: u64, caps: AgentCapabilities) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: AGENT_UID.to_vec(),
        sequence_num: seq,
        capabilities: caps.bits(),
        ..Default::default()
    }
}

fn full(seq: u64, caps: AgentCapabilities) -> v1::AgentToServer {
    v1::AgentToServer {
        agent_description: Some(description("otelcol")),
        ..report(seq, caps)
    }
}

fn ack() -> v1::ServerToAgent {
    v1::ServerToAgent {
        instance_uid: AGENT_UID.to_vec(),
        ..Default::default()
    }
}

fn first_answer() -> v1::ServerToAgent {
    v1::ServerToAgent {
        capabilities: SERVER_CAPS.bits(),
        ..ack()
    }
}

fn events(server: &mut ServerSession) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

const STATUS: AgentCapabilities = AgentCapabilities::REPORTS_STATUS;
const PACKAGES: AgentCapabilities =
    AgentCapabilities::REPORTS_STATUS.union(AgentCapabilities::ACCEPTS_PACKAGES);

/// A server that received and answered a first full report.
fn greeted(caps: AgentCapabilities) -> ServerSession {
    let now = t0();
    let mut server = server();
    server.handle_message(full(0, caps), now).unwrap();
    let _ = server.poll_transmit(now).unwrap();
    let _ = events(&mut server);
    server
}

#[test]
fn first_message_is_answered_with_server_capabilities_then_bare_acks() {
    let now = t0();
    let mut server = server();
    server.handle_message(full(0, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(first_answer()));
    assert_eq!(server.poll_transmit(now), None);
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    assert_eq!(
        events(&mut server),
        vec![
            ServerEvent::Connected {
                instance_uid: agent_uid()
            },
            ServerEvent::CapabilitiesChanged(STATUS),
            ServerEvent::DescriptionChanged(description("otelcol")),
        ]
    );
}

#[test]
fn unknown_agent_without_description_is_asked_for_full_state() {
    let now = t0();
    let mut server = server();
    server.handle_message(report(41, STATUS), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            ..first_answer()
        })
    );
    assert!(
        events(&mut server).contains(&ServerEvent::FullStateRequested {
            last: None,
            received: 41
        })
    );
    server.handle_message(full(42, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    assert!(!server.is_awaiting_full_state());
}

#[test]
fn sequence_gap_asks_for_full_state() {
    let now = t0();
    let mut server = greeted(STATUS);
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    server.handle_message(report(3, STATUS), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            ..ack()
        })
    );
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::FullStateRequested {
            last: Some(1),
            received: 3
        }]
    );
}

#[test]
fn lost_full_state_request_is_repeated_until_a_full_report_arrives() {
    let now = t0();
    let mut server = greeted(STATUS);
    server.handle_message(report(2, STATUS), now).unwrap();
    let _ = server.poll_transmit(now).unwrap(); // carries ReportFullState, pretend it was lost
    server.handle_message(report(3, STATUS), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            ..ack()
        })
    );
    server.handle_message(full(4, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
}

#[test]
fn full_state_requests_are_capped_for_agents_without_description() {
    let now = t0();
    let mut server = server();
    let mut flagged = 0;
    for seq in 5..40 {
        server.handle_message(report(seq, STATUS), now).unwrap();
        let answer = server.poll_transmit(now).unwrap();
        flagged += usize::from(answer.flags != 0);
    }
    assert_eq!(flagged, MAX_FULL_STATE_REQUESTS as usize);
}

#[test]
fn compressed_reports_are_merged_into_the_full_state() {
    let now = t0();
    let mut server = greeted(STATUS);
    server
        .handle_message(
            v1::AgentToServer {
                health: Some(health(true)),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap();
    server
        .handle_message(
            v1::AgentToServer {
                package_statuses: Some(package_statuses(b"x")),
                ..report(2, STATUS)
            },
            now,
        )
        .unwrap();
    server
        .handle_message(
            v1::AgentToServer {
                health: Some(health(false)),
                ..report(3, STATUS)
            },
            now,
        )
        .unwrap();
    let expected = AgentStatus {
        description: Some(description("otelcol")),
        health: Some(health(false)),
        package_statuses: Some(package_statuses(b"x")),
        ..AgentStatus::default()
    };
    assert_eq!(server.agent_state().status, expected);
    assert_eq!(server.agent_state().last_sequence_num, Some(3));
    assert_eq!(server.agent_state().last_seen, Some(now));
    assert_eq!(
        events(&mut server),
        vec![
            ServerEvent::HealthChanged(health(true)),
            ServerEvent::PackageStatusesChanged(package_statuses(b"x")),
            ServerEvent::HealthChanged(health(false)),
        ]
    );
}

#[test]
fn stale_and_duplicate_messages_do_not_overwrite_newer_state() {
    let now = t0();
    let mut server = greeted(STATUS);
    let old = v1::AgentToServer {
        health: Some(health(true)),
        ..report(1, STATUS)
    };
    server.handle_message(old.clone(), now).unwrap();
    server
        .handle_message(
            v1::AgentToServer {
                health: Some(health(false)),
                ..report(2, STATUS)
            },
            now,
        )
        .unwrap();
    server.handle_message(old, now).unwrap();
    assert_eq!(server.agent_state().status.health, Some(health(false)));
    assert_eq!(server.agent_state().last_sequence_num, Some(2));
    // Every message is still answered.
    assert_eq!(std::iter::from_fn(|| server.poll_transmit(now)).count(), 3);
}

#[test]
fn packages_are_offered_only_to_agents_that_accept_them() {
    let now = t0();
    let mut server = greeted(STATUS);
    server.offer_packages(offer(1));
    assert_eq!(
        server.poll_transmit(now),
        None,
        "held back: the agent does not accept packages"
    );
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    // The agent now declares AcceptsPackages: the offer goes out with the answer.
    server.handle_message(report(2, PACKAGES), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
    assert_eq!(server.poll_transmit(now), None);
}

#[test]
fn packages_are_pushed_on_websocket_without_waiting_for_a_message() {
    let now = t0();
    let mut server = greeted(PACKAGES);
    server.offer_packages(offer(1));
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
}

#[test]
fn packages_are_resent_when_the_reported_hash_differs() {
    let now = t0();
    let mut server = greeted(PACKAGES);
    server.offer_packages(offer(1));
    let _ = server.poll_transmit(now).unwrap();
    let stale = package_statuses(&[0; 32]);
    server
        .handle_message(
            v1::AgentToServer {
                package_statuses: Some(stale),
                ..report(1, PACKAGES)
            },
            now,
        )
        .unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
    let current = package_statuses(&[1; 32]);
    server
        .handle_message(
            v1::AgentToServer {
                package_statuses: Some(current),
                ..report(2, PACKAGES)
            },
            now,
        )
        .unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    // A heartbeat (no package statuses) never triggers a re-send.
    server.handle_message(report(3, PACKAGES), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
}

#[test]
fn remote_config_is_gated_and_resent_on_hash_mismatch() {
    let now = t0();
    let caps = STATUS | AgentCapabilities::ACCEPTS_REMOTE_CONFIG;
    let mut server = greeted(caps);
    let config = v1::AgentRemoteConfig {
        config_hash: vec![7],
        ..Default::default()
    };
    server.offer_remote_config(config.clone());
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            remote_config: Some(config.clone()),
            ..ack()
        })
    );
    let status = |hash: u8| v1::RemoteConfigStatus {
        last_remote_config_hash: vec![hash],
        ..Default::default()
    };
    server
        .handle_message(
            v1::AgentToServer {
                remote_config_status: Some(status(6)),
                ..report(1, caps)
            },
            now,
        )
        .unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            remote_config: Some(config),
            ..ack()
        })
    );
    server
        .handle_message(
            v1::AgentToServer {
                remote_config_status: Some(status(7)),
                ..report(2, caps)
            },
            now,
        )
        .unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
}

#[test]
fn a_command_travels_alone() {
    let now = t0();
    let caps = PACKAGES | AgentCapabilities::ACCEPTS_RESTART_COMMAND;
    let mut server = greeted(caps);
    server.offer_packages(offer(1));
    let restart = v1::ServerToAgentCommand {
        r#type: v1::CommandType::Restart.into(),
    };
    server.send_command(restart);
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            command: Some(restart),
            ..ack()
        })
    );
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
}

#[test]
fn restart_is_held_for_agents_that_do_not_accept_it() {
    let now = t0();
    let mut server = greeted(STATUS);
    server.send_command(v1::ServerToAgentCommand::default());
    assert_eq!(server.poll_transmit(now), None);
}

#[test]
fn agent_disconnect_ends_the_session_without_an_answer() {
    let now = t0();
    let mut server = greeted(STATUS);
    server
        .handle_message(
            v1::AgentToServer {
                agent_disconnect: Some(v1::AgentDisconnect {}),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap();
    assert_eq!(server.poll_transmit(now), None);
    assert!(!server.agent_state().connected);
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::Disconnected {
            instance_uid: Some(agent_uid()),
            by_agent: true
        }]
    );
}

#[test]
fn transport_close_emits_disconnected_once() {
    let now = t0();
    let mut server = greeted(STATUS);
    server.handle_disconnected(now);
    server.handle_disconnected(now);
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::Disconnected {
            instance_uid: Some(agent_uid()),
            by_agent: false
        }]
    );
}

#[test]
fn assigned_instance_uid_is_delivered_and_both_uids_accepted_during_the_switch() {
    let now = t0();
    let mut server = server();
    let request = v1::AgentToServer {
        flags: AgentToServerFlags::REQUEST_INSTANCE_UID.bits(),
        ..full(0, STATUS)
    };
    server.handle_message(request.clone(), now).unwrap();
    assert!(events(&mut server).contains(&ServerEvent::InstanceUidRequested));
    let new_uid = InstanceUid::from(OTHER_UID);
    server.assign_instance_uid(new_uid);
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            agent_identification: Some(v1::AgentIdentification {
                new_instance_uid: OTHER_UID.to_vec()
            }),
            ..first_answer()
        })
    );
    // A message sent before the agent switched still carries the old uid.
    server
        .handle_message(
            v1::AgentToServer {
                sequence_num: 1,
                ..request
            },
            now,
        )
        .unwrap();
    let switched = v1::AgentToServer {
        instance_uid: OTHER_UID.to_vec(),
        ..report(2, STATUS)
    };
    server.handle_message(switched, now).unwrap();
    assert_eq!(server.agent_state().instance_uid, Some(new_uid));
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::InstanceUidChanged(new_uid)]
    );
    // Answers are addressed to the uid in force when they are produced.
    let new_ack = v1::ServerToAgent {
        instance_uid: OTHER_UID.to_vec(),
        ..Default::default()
    };
    assert_eq!(server.poll_transmit(now), Some(new_ack.clone()));
    assert_eq!(server.poll_transmit(now), Some(new_ack));
    assert_eq!(server.poll_transmit(now), None);
}

fn bad_request(text: &str) -> v1::ServerToAgent {
    v1::ServerToAgent {
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::BadRequest.into(),
            error_message: text.into(),
            details: None,
        }),
        ..ack()
    }
}

#[test]
fn wrong_uid_length_is_a_typed_error_answered_with_bad_request() {
    let now = t0();
    let mut server = greeted(STATUS);
    let err = server
        .handle_message(
            v1::AgentToServer {
                instance_uid: vec![1; 15],
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::InvalidInstanceUid {
            field: "AgentToServer.instance_uid",
            ..
        }
    ));
    assert_eq!(
        server.poll_transmit(now),
        Some(bad_request(&err.to_string()))
    );
    // The session keeps working, and the refused message did not count.
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
}

#[test]
fn absurd_sequence_jump_is_refused() {
    let now = t0();
    let mut server = greeted(STATUS);
    let err = server
        .handle_message(report(u64::MAX, STATUS), now)
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::SequenceNumberOutOfRange {
            last: 0,
            received: u64::MAX,
            max_gap: 1 << 32
        }
    );
    assert_eq!(
        server.poll_transmit(now),
        Some(bad_request(&err.to_string()))
    );
    assert_eq!(server.agent_state().last_sequence_num, Some(0));
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
}

#[test]
fn another_agents_uid_is_refused() {
    let now = t0();
    let mut server = greeted(STATUS);
    let other = v1::AgentToServer {
        instance_uid: OTHER_UID.to_vec(),
        ..full(1, STATUS)
    };
    assert_eq!(
        server.handle_message(other, now),
        Err(SessionError::InstanceUidMismatch {
            expected: agent_uid(),
            received: InstanceUid::from(OTHER_UID)
        })
    );
    assert_eq!(
        server.agent_state().status.description,
        Some(description("otelcol"))
    );
}

#[test]
fn huge_and_deep_health_trees_are_refused() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.limits.max_map_entries = 10;
    config.limits.max_nesting_depth = 4;
    let mut server = ServerSession::new(config);
    server.handle_message(full(0, STATUS), now).unwrap();

    let mut wide = health(true);
    for i in 0..11 {
        wide.component_health_map
            .insert(format!("c{i}"), health(true));
    }
    let err = server
        .handle_message(
            v1::AgentToServer {
                health: Some(wide),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::TooManyEntries { limit: 10, .. }
    ));

    let mut deep = health(true);
    for _ in 0..6 {
        let mut parent = health(true);
        parent.component_health_map.insert("child".into(), deep);
        deep = parent;
    }
    let err = server
        .handle_message(
            v1::AgentToServer {
                health: Some(deep),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(err, SessionError::TooDeep { limit: 4, .. }));
    assert_eq!(server.agent_state().status.health, None);

    server
        .handle_message(
            v1::AgentToServer {
                health: Some(health(true)),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap();
    assert_eq!(server.agent_state().status.health, Some(health(true)));
}

/// Finding 3 of issue 22: a description or status list that would make the server keep
/// megabytes per agent is refused whole, and the state keeps the last accepted one.
#[test]
fn oversized_descriptions_and_status_lists_are_refused() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.limits.max_description_attributes = 4;
    config.limits.max_attribute_bytes = 64;
    config.limits.max_description_bytes = 150;
    config.limits.max_package_statuses = 2;
    let mut server = ServerSession::new(config);
    server.handle_message(full(0, STATUS), now).unwrap();
    let accepted = server.agent_state().status.description.clone();

    let attribute = |key: &str, bytes: usize| v1::KeyValue::string(key, "x".repeat(bytes));
    let with_attributes = |seq: u64, attributes: Vec<v1::KeyValue>| v1::AgentToServer {
        agent_description: Some(v1::AgentDescription {
            identifying_attributes: attributes,
            ..Default::default()
        }),
        ..report(seq, STATUS)
    };
    let many = (0..5).map(|i| attribute(&format!("k{i}"), 1)).collect();
    assert!(matches!(
        server.handle_message(with_attributes(1, many), now),
        Err(SessionError::TooManyEntries {
            limit: 4,
            count: 5,
            ..
        })
    ));
    assert!(matches!(
        server.handle_message(with_attributes(2, vec![attribute("big", 62)]), now),
        Err(SessionError::TooLarge {
            limit: 64,
            size: 65,
            ..
        })
    ));
    let three_of_60 = (0..3).map(|i| attribute(&format!("k{i}"), 58)).collect();
    assert!(matches!(
        server.handle_message(with_attributes(3, three_of_60), now),
        Err(SessionError::TooLarge {
            limit: 150,
            size: 180,
            ..
        })
    ));
    assert_eq!(server.agent_state().status.description, accepted);

    let mut statuses = v1::PackageStatuses::default();
    for name in ["a", "b", "../../etc/passwd"] {
        statuses
            .packages
            .insert(name.into(), v1::PackageStatus::default());
    }
    let err = server
        .handle_message(
            v1::AgentToServer {
                package_statuses: Some(statuses),
                ..report(4, STATUS)
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::TooManyEntries {
            limit: 2,
            count: 3,
            ..
        }
    ));
    assert_eq!(server.agent_state().status.package_statuses, None);

    let two = (0..2).map(|i| attribute(&format!("k{i}"), 58)).collect();
    server.handle_message(with_attributes(5, two), now).unwrap();
}

#[test]
fn garbage_bytes_are_answered_with_bad_request() {
    let now = t0();
    let mut server = greeted(STATUS);
    let err = server.handle_bytes(&[0x01, 0x02], now).unwrap_err();
    assert!(matches!(err, SessionError::Decode(_)));
    assert_eq!(
        server.poll_transmit(now),
        Some(bad_request(&err.to_string()))
    );
}

#[test]
fn http_mode_answers_each_request_exactly_once_and_never_pushes() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.mode = TransportMode::HttpPolling;
    let mut server = ServerSession::new(config);
    server.handle_message(full(0, PACKAGES), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(first_answer()));
    server.offer_packages(offer(1));
    assert_eq!(server.poll_transmit(now), None, "HTTP has no way to push");
    server.handle_message(report(1, PACKAGES), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
    assert_eq!(server.poll_transmit(now), None);
}

#[test]
fn heartbeat_interval_is_offered_to_agents_that_report_heartbeats() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.heartbeat_interval = Some(Duration::from_secs(15));
    config.opamp_endpoint = Some("wss://opamp.example/v1/opamp".into());
    let mut server = ServerSession::new(config);
    server
        .handle_message(full(0, STATUS | AgentCapabilities::REPORTS_HEARTBEAT), now)
        .unwrap();
    let answer = server.poll_transmit(now).unwrap();
    let offers = answer.connection_settings.clone().expect("offered");
    // The spec requires the destination in every OpAMP offer, and a hash of the offers.
    assert_eq!(offers.hash.len(), 32);
    assert_eq!(
        answer,
        v1::ServerToAgent {
            connection_settings: Some(v1::ConnectionSettingsOffers {
                hash: offers.hash.clone(),
                opamp: Some(v1::OpAmpConnectionSettings {
                    destination_endpoint: "wss://opamp.example/v1/opamp".into(),
                    heartbeat_interval_seconds: 15,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..first_answer()
        }
    );
}

#[test]
fn no_opamp_offer_without_a_destination_endpoint() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.heartbeat_interval = Some(Duration::from_secs(15));
    let mut server = ServerSession::new(config);
    server
        .handle_message(full(0, STATUS | AgentCapabilities::REPORTS_HEARTBEAT), now)
        .unwrap();
    assert_eq!(server.poll_transmit(now), Some(first_answer()));
}

#[test]
fn resumed_state_continues_sequence_checks() {
    let now = t0();
    let state = AgentState {
        instance_uid: Some(agent_uid()),
        last_sequence_num: Some(10),
        status: AgentStatus {
            description: Some(description("otelcol")),
            ..AgentStatus::default()
        },
        ..AgentState::default()
    };
    let mut server = ServerSession::with_agent_state(ServerSessionConfig::new(SERVER_CAPS), state);
    server.handle_message(report(11, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(first_answer()));
    server.handle_message(report(13, STATUS), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            ..ack()
        })
    );
}

#[test]
fn custom_messages_wait_for_the_agents_custom_capability() {
    let now = t0();
    let mut server = greeted(STATUS);
    let message = v1::CustomMessage {
        capability: "io.example.ping".into(),
        r#type: "ping".into(),
        data: vec![],
    };
    server.send_custom_message(message.clone()).unwrap();
    assert_eq!(server.poll_transmit(now), None);
    let declared = v1::CustomCapabilities {
        capabilities: vec!["io.example.ping".into()],
    };
    server
        .handle_message(
            v1::AgentToServer {
                custom_capabilities: Some(declared),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            custom_message: Some(message),
            ..ack()
        })
    );
}

#[test]
fn http_agent_disconnect_gets_one_bare_answer() {
    let now = t0();
    let mut config = ServerSessionConfig::new(SERVER_CAPS);
    config.mode = TransportMode::HttpPolling;
    let mut server = ServerSession::new(config);
    server.handle_message(full(0, PACKAGES), now).unwrap();
    let _ = server.poll_transmit(now).unwrap();
    server.offer_packages(offer(1));
    let goodbye = v1::AgentToServer {
        agent_disconnect: Some(v1::AgentDisconnect {}),
        ..report(1, PACKAGES)
    };
    server.handle_message(goodbye, now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    assert_eq!(server.poll_transmit(now), None);
    // Coming back later is a new connection: capabilities and the offer go out again.
    server.handle_message(full(2, PACKAGES), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..first_answer()
        })
    );
}

#[test]
fn lost_uid_assignment_is_sent_again_while_the_agent_keeps_asking() {
    let now = t0();
    let mut server = server();
    let request = v1::AgentToServer {
        flags: AgentToServerFlags::REQUEST_INSTANCE_UID.bits(),
        ..full(0, STATUS)
    };
    server.handle_message(request.clone(), now).unwrap();
    server.assign_instance_uid(InstanceUid::from(OTHER_UID));
    let identification = Some(v1::AgentIdentification {
        new_instance_uid: OTHER_UID.to_vec(),
    });
    assert_eq!(
        server.poll_transmit(now).unwrap().agent_identification,
        identification
    );
    // That answer was lost: the agent asks again under its old uid.
    server
        .handle_message(
            v1::AgentToServer {
                sequence_num: 1,
                agent_description: None,
                ..request
            },
            now,
        )
        .unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            agent_identification: identification,
            ..ack()
        })
    );
    let requested = events(&mut server)
        .into_iter()
        .filter(|e| *e == ServerEvent::InstanceUidRequested)
        .count();
    assert_eq!(requested, 1, "the application is asked once");
}

#[test]
fn a_duplicated_custom_message_is_delivered_once() {
    let now = t0();
    let mut server = greeted(STATUS);
    let message = v1::CustomMessage {
        capability: "io.example.ping".into(),
        r#type: "ping".into(),
        data: vec![1],
    };
    let msg = v1::AgentToServer {
        custom_message: Some(message.clone()),
        ..report(1, STATUS)
    };
    server.handle_message(msg.clone(), now).unwrap();
    server.handle_message(msg, now).unwrap();
    assert_eq!(
        events(&mut server),
        vec![ServerEvent::CustomMessage(message)]
    );
    assert_eq!(
        std::iter::from_fn(|| server.poll_transmit(now)).count(),
        2,
        "both are answered"
    );
}

#[test]
fn a_description_change_alone_is_not_taken_for_the_full_report() {
    let now = t0();
    let mut server = greeted(STATUS);
    server
        .handle_message(
            v1::AgentToServer {
                health: Some(health(true)),
                ..report(1, STATUS)
            },
            now,
        )
        .unwrap();
    server.handle_message(report(3, STATUS), now).unwrap(); // gap: ask for full state
    while server.poll_transmit(now).is_some() {}
    // A compressed report that only changes the description lacks the health the server
    // already knows, so it cannot be the full report: ask again.
    let renamed = v1::AgentToServer {
        agent_description: Some(description("renamed")),
        ..report(4, STATUS)
    };
    server.handle_message(renamed, now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            ..ack()
        })
    );
    let full_report = v1::AgentToServer {
        health: Some(health(false)),
        ..full(5, STATUS)
    };
    server.handle_message(full_report, now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    assert!(!server.is_awaiting_full_state());
}

#[test]
fn offers_are_sent_again_when_a_withdrawn_capability_returns() {
    let now = t0();
    let mut server = greeted(PACKAGES);
    server.offer_packages(offer(1));
    // Pushed, but the agent withdrew AcceptsPackages meanwhile and refused it.
    assert!(
        server
            .poll_transmit(now)
            .unwrap()
            .packages_available
            .is_some()
    );
    server.handle_message(report(1, STATUS), now).unwrap();
    assert_eq!(server.poll_transmit(now), Some(ack()));
    server.handle_message(report(2, PACKAGES), now).unwrap();
    assert_eq!(
        server.poll_transmit(now),
        Some(v1::ServerToAgent {
            packages_available: Some(offer(1)),
            ..ack()
        })
    );
}

/// Found by the endpoint simulation: the server assigned a uid, the agent took it, and
/// before its first message under that uid arrived the server assigned another. The
/// agent's messages under the first assignment must be accepted (not refused forever,
/// which also kept the newer assignment from ever reaching it).
#[test]
fn an_agent_using_a_superseded_assignment_is_accepted_and_sent_the_newer_one() {
    let now = t0();
    let mut server = server();
    server.handle_message(full(0, STATUS), now).unwrap();
    let first = InstanceUid::from([0x01; 16]);
    let second = InstanceUid::from([0x02; 16]);
    server.assign_instance_uid(first);
    assert!(
        server
            .poll_transmit(now)
            .unwrap()
            .agent_identification
            .is_some()
    );
    server.assign_instance_uid(second);
    let _ = server.poll_transmit(now);
    let under_first = v1::AgentToServer {
        instance_uid: first.to_vec(),
        ..report(1, STATUS)
    };
    server.handle_message(under_first, now).unwrap();
    assert_eq!(server.agent_state().instance_uid, Some(first));
    assert!(events(&mut server).contains(&ServerEvent::InstanceUidChanged(first)));
    let answer = server.poll_transmit(now).unwrap();
    assert_eq!(
        answer.agent_identification,
        Some(v1::AgentIdentification {
            new_instance_uid: second.to_vec()
        }),
        "the newer assignment is sent again"
    );
    let under_second = v1::AgentToServer {
        instance_uid: second.to_vec(),
        ..report(2, STATUS)
    };
    server.handle_message(under_second, now).unwrap();
    assert_eq!(server.agent_state().instance_uid, Some(second));
}
