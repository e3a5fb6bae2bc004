//! One test per agent-side protocol rule, each asserting the exact message produced.

use std::time::{Duration, Instant};

use opamp_proto::{
    AgentCapabilities, AgentToServerFlags, InstanceUid, ServerCapabilities, ServerToAgentFlags, v1,
};

use super::*;
use crate::test_support::*;

const BASE_CAPS: AgentCapabilities =
    AgentCapabilities::REPORTS_STATUS.union(AgentCapabilities::REPORTS_HEARTBEAT);

fn config() -> AgentSessionConfig {
    AgentSessionConfig::new(agent_uid(), description("otelcol"))
}

fn connected(config: AgentSessionConfig, now: Instant) -> AgentSession {
    let mut agent = AgentSession::new(config);
    agent.handle_connected(now);
    agent
}

/// A connected agent whose first (full) report is already out.
fn settled(config: AgentSessionConfig, now: Instant) -> AgentSession {
    let mut agent = connected(config, now);
    let first = agent.poll_transmit(now).unwrap();
    assert_eq!(first.sequence_num, 0);
    if agent.mode() == TransportMode::HttpPolling {
        agent.handle_message(ack(), now).unwrap();
    }
    agent
}

/// The bare message an agent sends when nothing changed (heartbeat, poll).
fn bare(seq: u64, caps: AgentCapabilities) -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: AGENT_UID.to_vec(),
        sequence_num: seq,
        capabilities: caps.bits(),
        ..Default::default()
    }
}

fn ack() -> v1::ServerToAgent {
    v1::ServerToAgent {
        instance_uid: AGENT_UID.to_vec(),
        ..Default::default()
    }
}

fn events(agent: &mut AgentSession) -> Vec<AgentEvent> {
    std::iter::from_fn(|| agent.poll_event()).collect()
}

#[test]
fn first_message_after_connect_is_a_full_report() {
    let now = t0();
    let mut agent = AgentSession::new(config());
    agent.set_health(health(true));
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "nothing is sent before the link is up"
    );
    agent.handle_connected(now);
    let expected = v1::AgentToServer {
        agent_description: Some(description("otelcol")),
        health: Some(health(true)),
        ..bare(0, BASE_CAPS)
    };
    assert_eq!(agent.poll_transmit(now), Some(expected));
    assert_eq!(agent.poll_transmit(now), None);
}

#[test]
fn sequence_num_grows_by_one_per_message() {
    let now = t0();
    let mut agent = settled(config(), now);
    for (seq, healthy) in (1..=5).zip([true, false, true, false, true]) {
        assert!(agent.set_health(health(healthy)));
        let msg = agent.poll_transmit(now).unwrap();
        assert_eq!(
            msg,
            v1::AgentToServer {
                health: Some(health(healthy)),
                ..bare(seq, BASE_CAPS)
            }
        );
    }
    assert_eq!(agent.next_sequence_num(), 6);
}

#[test]
fn setter_without_change_sends_nothing() {
    let now = t0();
    let mut agent = settled(config(), now);
    assert!(!agent.set_description(description("otelcol")));
    assert!(agent.set_health(health(true)));
    let _ = agent.poll_transmit(now).unwrap();
    assert!(!agent.set_health(health(true)));
    assert_eq!(agent.poll_transmit(now), None);
}

#[test]
fn status_compression_sends_only_changed_sub_messages() {
    let now = t0();
    let mut agent = connected(config(), now);
    agent.set_health(health(true));
    agent.set_package_statuses(package_statuses(b"a"));
    let _ = agent.poll_transmit(now).unwrap();
    agent.set_package_statuses(package_statuses(b"b"));
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            package_statuses: Some(package_statuses(b"b")),
            ..bare(1, BASE_CAPS)
        })
    );
}

#[test]
fn report_full_state_makes_the_next_message_full() {
    let now = t0();
    let mut agent = connected(config(), now);
    agent.set_health(health(true));
    let _ = agent.poll_transmit(now).unwrap();
    agent
        .handle_message(
            v1::ServerToAgent {
                flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
                ..ack()
            },
            now,
        )
        .unwrap();
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            agent_description: Some(description("otelcol")),
            health: Some(health(true)),
            ..bare(1, BASE_CAPS)
        })
    );
}

#[test]
fn server_message_that_changes_nothing_gets_no_report() {
    let now = t0();
    let mut agent = settled(config(), now);
    agent
        .handle_message(
            v1::ServerToAgent {
                capabilities: ServerCapabilities::ACCEPTS_STATUS.bits(),
                ..ack()
            },
            now,
        )
        .unwrap();
    agent.handle_message(ack(), now).unwrap();
    assert_eq!(agent.poll_transmit(now), None);
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::ServerCapabilities(
            ServerCapabilities::ACCEPTS_STATUS
        )]
    );
}

#[test]
fn heartbeat_is_deadline_driven() {
    let now = t0();
    let mut agent = settled(config(), now);
    let due = now + DEFAULT_HEARTBEAT_INTERVAL;
    assert_eq!(agent.poll_timeout(), Some(due));
    let early = due - Duration::from_millis(1);
    agent.handle_timeout(early);
    assert_eq!(
        agent.poll_transmit(early),
        None,
        "an early timeout is harmless"
    );
    agent.handle_timeout(due);
    assert_eq!(agent.poll_transmit(due), Some(bare(1, BASE_CAPS)));
    assert_eq!(agent.poll_timeout(), Some(due + DEFAULT_HEARTBEAT_INTERVAL));
}

#[test]
fn a_configured_zero_heartbeat_interval_disables_heartbeats_instead_of_busy_looping() {
    // Found by the agent_session fuzz target: Some(ZERO) made every poll_transmit due.
    let now = t0();
    let mut websocket = config();
    websocket.heartbeat_interval = Some(Duration::ZERO);
    let mut agent = settled(websocket, now);
    assert_eq!(agent.heartbeat_interval(), None);
    assert_eq!(agent.poll_transmit(now), None);
    assert_eq!(agent.poll_timeout(), None);

    let mut http = config();
    http.heartbeat_interval = Some(Duration::ZERO);
    http.mode = TransportMode::HttpPolling;
    let agent = settled(http, now);
    assert_eq!(agent.heartbeat_interval(), Some(DEFAULT_HEARTBEAT_INTERVAL));
}

#[test]
fn heartbeat_counts_from_the_last_message_sent() {
    let now = t0();
    let mut agent = settled(config(), now);
    let later = now + Duration::from_secs(10);
    agent.set_health(health(false));
    let _ = agent.poll_transmit(later).unwrap();
    assert_eq!(
        agent.poll_timeout(),
        Some(later + DEFAULT_HEARTBEAT_INTERVAL)
    );
}

#[test]
fn no_heartbeats_without_the_capability_or_when_disabled() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities = AgentCapabilities::REPORTS_STATUS;
    let agent = settled(cfg, now);
    assert_eq!(agent.poll_timeout(), None);

    let mut cfg = config();
    cfg.heartbeat_interval = None;
    let agent = settled(cfg, now);
    assert_eq!(agent.poll_timeout(), None);
}

fn heartbeat_offer(seconds: u64) -> v1::ServerToAgent {
    v1::ServerToAgent {
        connection_settings: Some(v1::ConnectionSettingsOffers {
            opamp: Some(v1::OpAmpConnectionSettings {
                heartbeat_interval_seconds: seconds,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..ack()
    }
}

#[test]
fn server_heartbeat_interval_replaces_the_configured_one_and_zero_disables() {
    let now = t0();
    let mut agent = settled(config(), now);
    agent.handle_message(heartbeat_offer(5), now).unwrap();
    assert_eq!(agent.poll_timeout(), Some(now + Duration::from_secs(5)));
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::HeartbeatInterval(Some(Duration::from_secs(5)))]
    );
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "a settings offer alone does not change the status"
    );

    agent.handle_message(heartbeat_offer(0), now).unwrap();
    assert_eq!(agent.poll_timeout(), None);
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::HeartbeatInterval(None)]
    );
}

#[test]
fn absurd_heartbeat_interval_never_fires_and_does_not_panic() {
    let now = t0();
    let mut agent = settled(config(), now);
    agent
        .handle_message(heartbeat_offer(u64::MAX), now)
        .unwrap();
    assert_eq!(agent.poll_timeout(), None);
    assert_eq!(agent.poll_transmit(now + Duration::from_secs(3600)), None);
}

fn http_config() -> AgentSessionConfig {
    let mut cfg = config();
    cfg.mode = TransportMode::HttpPolling;
    cfg.heartbeat_interval = Some(Duration::from_secs(10));
    cfg
}

#[test]
fn http_allows_exactly_one_request_in_flight() {
    let now = t0();
    let mut agent = connected(http_config(), now);
    let first = agent.poll_transmit(now).unwrap();
    assert_eq!(first.sequence_num, 0);
    assert!(agent.is_request_in_flight());
    agent.set_health(health(true));
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "the response to the first request is still due"
    );
    assert_eq!(agent.poll_timeout(), None);
    agent.handle_message(ack(), now).unwrap();
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            health: Some(health(true)),
            ..bare(1, BASE_CAPS)
        }),
        "a pending change goes out right after the response, without waiting for the poll interval"
    );
}

#[test]
fn http_polls_on_the_heartbeat_interval_with_uid_sequence_and_capabilities() {
    let now = t0();
    let mut cfg = http_config();
    cfg.capabilities = AgentCapabilities::REPORTS_STATUS; // polling does not depend on ReportsHeartbeat
    let mut agent = settled(cfg, now);
    let due = now + Duration::from_secs(10);
    assert_eq!(agent.poll_timeout(), Some(due));
    assert_eq!(
        agent.poll_transmit(due),
        Some(bare(1, AgentCapabilities::REPORTS_STATUS))
    );
}

#[test]
fn http_polls_even_when_heartbeats_are_disabled() {
    let now = t0();
    let mut cfg = http_config();
    cfg.heartbeat_interval = None;
    let agent = settled(cfg, now);
    assert_eq!(agent.poll_timeout(), Some(now + DEFAULT_HEARTBEAT_INTERVAL));
}

#[test]
fn failed_http_request_backs_off_then_resends_a_full_report() {
    let now = t0();
    let mut config = http_config();
    config.retry.jitter = false; // exact deadlines; jitter has its own test
    let mut agent = settled(config, now);
    agent.set_health(health(false));
    let _ = agent.poll_transmit(now).unwrap();
    agent.handle_request_failed(now);
    let retry = now + Duration::from_secs(1);
    assert_eq!(agent.poll_transmit(now), None);
    assert_eq!(agent.poll_timeout(), Some(retry));
    assert_eq!(agent.retry_not_before(), Some(retry));
    assert!(
        events(&mut agent).is_empty(),
        "the transport already knows its request failed"
    );
    agent.handle_timeout(retry);
    assert_eq!(
        agent.poll_transmit(retry),
        Some(v1::AgentToServer {
            agent_description: Some(description("otelcol")),
            health: Some(health(false)),
            ..bare(2, BASE_CAPS)
        })
    );
    // A second consecutive failure doubles the wait.
    agent.handle_request_failed(retry);
    assert_eq!(agent.poll_timeout(), Some(retry + Duration::from_secs(2)));
}

#[test]
fn retry_info_sets_a_back_off_deadline() {
    let now = t0();
    let mut agent = settled(config(), now);
    let unavailable = v1::ServerToAgent {
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::Unavailable.into(),
            error_message: "overloaded".into(),
            details: Some(v1::server_error_response::Details::RetryInfo(
                v1::RetryInfo {
                    retry_after_nanoseconds: 45_000_000_000,
                },
            )),
        }),
        ..ack()
    };
    agent.handle_message(unavailable, now).unwrap();
    let deadline = now + Duration::from_secs(45);
    assert_eq!(
        events(&mut agent),
        vec![
            AgentEvent::ServerError {
                kind: v1::ServerErrorResponseType::Unavailable,
                message: "overloaded".into()
            },
            AgentEvent::RetryAfter(deadline),
        ]
    );
    assert_eq!(agent.retry_not_before(), Some(deadline));
    assert_eq!(agent.poll_transmit(deadline - Duration::from_secs(1)), None);
    assert_eq!(agent.poll_timeout(), Some(deadline));
    assert_eq!(
        agent.poll_transmit(deadline),
        Some(v1::AgentToServer {
            agent_description: Some(description("otelcol")),
            ..bare(1, BASE_CAPS)
        }),
        "the server did not process the report, so it is sent again in full"
    );
}

#[test]
fn bad_request_is_reported_and_not_retried() {
    let now = t0();
    let mut agent = settled(config(), now);
    let bad = v1::ServerToAgent {
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::BadRequest.into(),
            error_message: "nope".into(),
            details: None,
        }),
        ..ack()
    };
    agent.handle_message(bad, now).unwrap();
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::ServerError {
            kind: v1::ServerErrorResponseType::BadRequest,
            message: "nope".into()
        }]
    );
    assert_eq!(agent.poll_transmit(now), None);
}

#[test]
fn offers_for_undeclared_capabilities_are_refused() {
    let now = t0();
    let mut agent = settled(config(), now);
    let msg = v1::ServerToAgent {
        packages_available: Some(offer(1)),
        remote_config: Some(v1::AgentRemoteConfig::default()),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    assert_eq!(
        events(&mut agent),
        vec![
            AgentEvent::OfferRefused {
                offer: OfferKind::RemoteConfig,
                required: AgentCapabilities::ACCEPTS_REMOTE_CONFIG
            },
            AgentEvent::OfferRefused {
                offer: OfferKind::Packages,
                required: AgentCapabilities::ACCEPTS_PACKAGES
            },
        ]
    );
    let restart = v1::ServerToAgent {
        command: Some(v1::ServerToAgentCommand::default()),
        ..ack()
    };
    agent.handle_message(restart, now).unwrap();
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::OfferRefused {
            offer: OfferKind::RestartCommand,
            required: AgentCapabilities::ACCEPTS_RESTART_COMMAND
        }]
    );
    assert_eq!(agent.poll_transmit(now), None);
}

#[test]
fn declared_offers_are_surfaced() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities |=
        AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::ACCEPTS_REMOTE_CONFIG;
    let mut agent = settled(cfg, now);
    let remote = v1::AgentRemoteConfig {
        config_hash: vec![9],
        ..Default::default()
    };
    let msg = v1::ServerToAgent {
        packages_available: Some(offer(1)),
        remote_config: Some(remote.clone()),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    let got = events(&mut agent);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], AgentEvent::RemoteConfig(remote));
    assert!(matches!(&got[1], AgentEvent::PackagesAvailable { offer: o, .. } if *o == offer(1)));
}

#[test]
fn a_command_travels_alone_and_other_fields_are_ignored() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities |=
        AgentCapabilities::ACCEPTS_RESTART_COMMAND | AgentCapabilities::ACCEPTS_PACKAGES;
    let mut agent = settled(cfg, now);
    let msg = v1::ServerToAgent {
        command: Some(v1::ServerToAgentCommand {
            r#type: v1::CommandType::Restart.into(),
        }),
        packages_available: Some(offer(1)),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    assert_eq!(events(&mut agent), vec![AgentEvent::Restart]);
}

#[test]
fn connection_settings_are_reduced_to_declared_parts() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities |= AgentCapabilities::REPORTS_OWN_METRICS;
    let mut agent = settled(cfg, now);
    let metrics = v1::TelemetryConnectionSettings {
        destination_endpoint: "https://m".into(),
        ..Default::default()
    };
    let msg = v1::ServerToAgent {
        connection_settings: Some(v1::ConnectionSettingsOffers {
            hash: vec![1],
            opamp: Some(v1::OpAmpConnectionSettings {
                destination_endpoint: "wss://x".into(),
                ..Default::default()
            }),
            own_metrics: Some(metrics.clone()),
            ..Default::default()
        }),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    assert_eq!(
        events(&mut agent),
        vec![
            AgentEvent::HeartbeatInterval(None),
            AgentEvent::OfferRefused {
                offer: OfferKind::ConnectionSettings,
                required: AgentCapabilities::ACCEPTS_OPAMP_CONNECTION_SETTINGS
            },
            AgentEvent::ConnectionSettings(v1::ConnectionSettingsOffers {
                hash: vec![1],
                own_metrics: Some(metrics),
                ..Default::default()
            }),
        ]
    );
}

#[test]
fn new_instance_uid_is_adopted_and_the_request_flag_cleared() {
    let now = t0();
    let mut cfg = config();
    cfg.request_instance_uid = true;
    let mut agent = connected(cfg, now);
    let first = agent.poll_transmit(now).unwrap();
    assert_eq!(first.flags, AgentToServerFlags::REQUEST_INSTANCE_UID.bits());
    let msg = v1::ServerToAgent {
        agent_identification: Some(v1::AgentIdentification {
            new_instance_uid: OTHER_UID.to_vec(),
        }),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    assert_eq!(
        events(&mut agent),
        vec![AgentEvent::NewInstanceUid(InstanceUid::from(OTHER_UID))]
    );
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "a new uid alone does not trigger a report"
    );
    agent.set_health(health(true));
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            instance_uid: OTHER_UID.to_vec(),
            health: Some(health(true)),
            ..bare(1, BASE_CAPS)
        })
    );
    // Messages still addressed to the old uid are accepted.
    agent.handle_message(ack(), now).unwrap();
}

#[test]
fn malformed_new_instance_uid_is_a_typed_error_and_the_session_goes_on() {
    let now = t0();
    let mut agent = settled(config(), now);
    let msg = v1::ServerToAgent {
        agent_identification: Some(v1::AgentIdentification {
            new_instance_uid: vec![1, 2, 3],
        }),
        flags: ServerToAgentFlags::REPORT_FULL_STATE.bits(),
        ..ack()
    };
    let err = agent.handle_message(msg, now).unwrap_err();
    assert!(matches!(
        err,
        SessionError::InvalidInstanceUid {
            field: "AgentIdentification.new_instance_uid",
            ..
        }
    ));
    assert_eq!(agent.instance_uid(), agent_uid());
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "nothing in a refused message takes effect"
    );
    agent.set_health(health(true));
    assert_eq!(agent.poll_transmit(now).unwrap().sequence_num, 1);
}

#[test]
fn message_for_another_instance_is_refused() {
    let now = t0();
    let mut agent = settled(config(), now);
    let msg = v1::ServerToAgent {
        instance_uid: OTHER_UID.to_vec(),
        ..Default::default()
    };
    assert_eq!(
        agent.handle_message(msg, now),
        Err(SessionError::InstanceUidMismatch {
            expected: agent_uid(),
            received: InstanceUid::from(OTHER_UID)
        })
    );
}

#[test]
fn huge_package_offer_is_refused_and_the_session_goes_on() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES;
    cfg.limits.max_map_entries = 3;
    let mut agent = settled(cfg, now);
    let mut huge = offer(1);
    for i in 0..4 {
        huge.packages
            .insert(format!("addon-{i}"), v1::PackageAvailable::default());
    }
    let err = agent
        .handle_message(
            v1::ServerToAgent {
                packages_available: Some(huge),
                ..ack()
            },
            now,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::TooManyEntries {
            field: "PackagesAvailable.packages",
            count: 5,
            limit: 3
        }
    );
    assert!(events(&mut agent).is_empty());
    agent
        .handle_message(
            v1::ServerToAgent {
                packages_available: Some(offer(2)),
                ..ack()
            },
            now,
        )
        .unwrap();
    assert_eq!(events(&mut agent).len(), 1);
}

#[test]
fn garbage_bytes_are_a_decode_error() {
    let now = t0();
    let mut agent = settled(config(), now);
    assert!(matches!(
        agent.handle_bytes(&[0x07, 0xFF], now),
        Err(SessionError::Decode(_))
    ));
    let frame = opamp_proto::codec::encode_ws_frame(&ack());
    agent.handle_bytes(&frame, now).unwrap();
}

#[test]
fn disconnect_sends_agent_disconnect_then_nothing() {
    let now = t0();
    let mut agent = settled(config(), now);
    agent.disconnect();
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            agent_disconnect: Some(v1::AgentDisconnect {}),
            ..bare(1, BASE_CAPS)
        })
    );
    assert!(agent.is_closed());
    agent.set_health(health(false));
    assert_eq!(agent.poll_transmit(now + Duration::from_secs(3600)), None);
    assert_eq!(agent.poll_timeout(), None);
}

#[test]
fn reconnect_sends_a_full_report_with_the_sequence_continuing() {
    let now = t0();
    let mut agent = settled(config(), now);
    agent.handle_disconnected(now);
    agent.set_health(health(true));
    assert_eq!(agent.poll_transmit(now), None);
    assert_eq!(agent.poll_timeout(), None);
    agent.handle_connected(now);
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            agent_description: Some(description("otelcol")),
            health: Some(health(true)),
            ..bare(1, BASE_CAPS)
        })
    );
}

#[test]
fn custom_messages_need_a_declared_capability_and_a_bounded_queue() {
    let now = t0();
    let mut cfg = config();
    cfg.limits.max_pending_custom_messages = 1;
    let mut agent = settled(cfg, now);
    let message = v1::CustomMessage {
        capability: "io.example.ping".into(),
        r#type: "ping".into(),
        data: vec![1],
    };
    assert_eq!(
        agent.send_custom_message(message.clone()),
        Err(SessionError::UndeclaredCustomCapability {
            capability: "io.example.ping".into()
        })
    );
    let declared = v1::CustomCapabilities {
        capabilities: vec!["io.example.ping".into()],
    };
    agent.set_custom_capabilities(declared.clone());
    agent.send_custom_message(message.clone()).unwrap();
    assert_eq!(
        agent.send_custom_message(message.clone()),
        Err(SessionError::CustomMessageQueueFull { limit: 1 })
    );
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            custom_capabilities: Some(declared),
            custom_message: Some(message.clone()),
            ..bare(1, BASE_CAPS)
        })
    );
    // Incoming custom messages are surfaced only for declared capabilities.
    agent
        .handle_message(
            v1::ServerToAgent {
                custom_message: Some(message.clone()),
                ..ack()
            },
            now,
        )
        .unwrap();
    let other = v1::CustomMessage {
        capability: "io.example.other".into(),
        ..Default::default()
    };
    agent
        .handle_message(
            v1::ServerToAgent {
                custom_message: Some(other),
                ..ack()
            },
            now,
        )
        .unwrap();
    assert_eq!(
        events(&mut agent),
        vec![
            AgentEvent::CustomMessage(message),
            AgentEvent::OfferRefused {
                offer: OfferKind::CustomMessage,
                required: AgentCapabilities::empty()
            },
        ]
    );
}

#[test]
fn capabilities_always_include_reports_status_and_never_unknown_bits() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities = AgentCapabilities::from_wire(1 << 40) | AgentCapabilities::ACCEPTS_PACKAGES;
    let mut agent = connected(cfg, now);
    let msg = agent.poll_transmit(now).unwrap();
    assert_eq!(
        msg.capabilities,
        (AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES).bits()
    );
    assert!(agent.set_capabilities(AgentCapabilities::ACCEPTS_REMOTE_CONFIG));
    assert_eq!(
        agent.poll_transmit(now),
        Some(bare(
            1,
            AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_REMOTE_CONFIG
        ))
    );
}

#[test]
fn report_available_components_flag_resends_them() {
    let now = t0();
    let mut agent = connected(config(), now);
    let components = v1::AvailableComponents {
        hash: vec![4],
        ..Default::default()
    };
    agent.set_available_components(components.clone());
    let _ = agent.poll_transmit(now).unwrap();
    let msg = v1::ServerToAgent {
        flags: ServerToAgentFlags::REPORT_AVAILABLE_COMPONENTS.bits(),
        ..ack()
    };
    agent.handle_message(msg, now).unwrap();
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            available_components: Some(components),
            ..bare(1, BASE_CAPS)
        })
    );
}

#[test]
fn package_offers_carry_a_sync_plan_against_installed_packages() {
    let now = t0();
    let mut cfg = config();
    cfg.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES;
    let mut agent = settled(cfg, now);
    let msg = v1::ServerToAgent {
        packages_available: Some(offer(1)),
        ..ack()
    };
    agent.handle_message(msg.clone(), now).unwrap();
    let Some(AgentEvent::PackagesAvailable { plan, .. }) = agent.poll_event() else {
        panic!("expected a package offer");
    };
    assert!(!plan.is_already_applied());
    assert_eq!(plan.packages().len(), 1);
    assert!(matches!(
        plan.packages()[0].action,
        opamp_packages::PackageAction::Install { .. }
    ));
    assert!(plan.rejected().is_empty());

    agent.set_installed_packages(
        opamp_packages::InstalledPackages::new().with_last_applied_all_packages_hash(vec![1; 32]),
    );
    agent.handle_message(msg, now).unwrap();
    let Some(AgentEvent::PackagesAvailable { plan, .. }) = agent.poll_event() else {
        panic!("expected a package offer");
    };
    assert!(plan.is_already_applied());
    assert_eq!(
        agent.poll_transmit(now),
        None,
        "an offer alone changes no status"
    );
}

#[test]
fn unavailable_without_retry_info_backs_off_exponentially() {
    let now = t0();
    let mut no_jitter = config();
    no_jitter.retry.jitter = false;
    let mut agent = settled(no_jitter, now);
    let unavailable = v1::ServerToAgent {
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::Unavailable.into(),
            error_message: String::new(),
            details: None,
        }),
        ..ack()
    };
    agent.handle_message(unavailable.clone(), now).unwrap();
    let first = now + Duration::from_secs(1);
    assert_eq!(
        events(&mut agent).last(),
        Some(&AgentEvent::RetryAfter(first))
    );
    agent.handle_message(unavailable, first).unwrap();
    assert_eq!(
        events(&mut agent).last(),
        Some(&AgentEvent::RetryAfter(first + Duration::from_secs(2)))
    );
    // A transport-level Retry-After extends the hold without an event.
    let later = now + Duration::from_secs(60);
    agent.handle_retry_after(later);
    assert_eq!(agent.retry_not_before(), Some(later));
    assert!(events(&mut agent).is_empty());
}

#[test]
fn connection_settings_request_goes_out_once_and_survives_a_failed_request() {
    let now = t0();
    let mut agent = settled(http_config(), now);
    let request = v1::ConnectionSettingsRequest {
        opamp: Some(v1::OpAmpConnectionSettingsRequest {
            certificate_request: Some(v1::CertificateRequest {
                csr: b"csr".to_vec(),
            }),
        }),
    };
    agent.request_connection_settings(request.clone());
    assert_eq!(
        agent.poll_transmit(now),
        Some(v1::AgentToServer {
            connection_settings_request: Some(request.clone()),
            ..bare(1, BASE_CAPS)
        })
    );
    agent.handle_request_failed(now);
    let retry = now + Duration::from_secs(1);
    let resent = agent.poll_transmit(retry).unwrap();
    assert_eq!(resent.connection_settings_request, Some(request));
    agent.handle_message(ack(), retry).unwrap();
    agent.set_health(health(true));
    assert_eq!(
        agent
            .poll_transmit(retry)
            .unwrap()
            .connection_settings_request,
        None
    );
}

#[test]
fn reconnect_back_off_is_jittered_seeded_and_honours_the_server() {
    let now = t0();
    let delays = |seed: u64| {
        let mut config = config();
        config.retry_seed = Some(seed);
        let mut agent = AgentSession::new(config);
        (1..=8)
            .map(|_| agent.handle_connection_failed(now, None))
            .collect::<Vec<_>>()
    };
    let first = delays(7);
    assert_eq!(first, delays(7), "the same seed replays the same waits");
    assert_ne!(first, delays(8), "another seed spreads differently");
    let policy = RetryPolicy::default();
    for (failures, delay) in (1..).zip(&first) {
        let base = policy.delay(failures);
        assert!(
            *delay >= base / 2 && *delay <= base,
            "{failures}: {delay:?}"
        );
    }
    // A server's Retry-After longer than the back-off wins, and holds sending.
    let mut agent = AgentSession::new(config());
    let asked = Duration::from_secs(120);
    assert_eq!(agent.handle_connection_failed(now, Some(asked)), asked);
    assert_eq!(agent.retry_not_before(), Some(now + asked));
}
