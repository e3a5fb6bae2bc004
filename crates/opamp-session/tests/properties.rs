//! Property tests: invariants that must hold for any sequence of inputs, and robustness
//! against arbitrary bytes from the network.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, ServerToAgentFlags, v1};
use opamp_session::{
    AgentSession, AgentSessionConfig, AgentStatus, ServerSession, ServerSessionConfig,
    TransportMode,
};
use proptest::prelude::*;

/// Something that can happen to an agent session.
#[derive(Debug, Clone)]
enum Op {
    Connect,
    Disconnect,
    SetHealth(bool),
    SetConfig(u8),
    FullReport,
    Ack,
    AckReportFullState,
    HeartbeatOffer(u8),
    RequestFailed,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
        3 => any::<bool>().prop_map(Op::SetHealth),
        2 => (0u8..3).prop_map(Op::SetConfig),
        1 => Just(Op::FullReport),
        4 => Just(Op::Ack),
        1 => Just(Op::AckReportFullState),
        1 => (0u8..40).prop_map(Op::HeartbeatOffer),
        1 => Just(Op::RequestFailed),
        3 => (0u16..60_000).prop_map(Op::Advance),
    ]
}

fn agent(mode: TransportMode) -> AgentSession {
    let mut config =
        AgentSessionConfig::new(InstanceUid::from([3; 16]), v1::AgentDescription::default());
    config.mode = mode;
    config.capabilities |= AgentCapabilities::REPORTS_HEALTH;
    AgentSession::new(config)
}

fn ack(flags: ServerToAgentFlags) -> v1::ServerToAgent {
    v1::ServerToAgent {
        instance_uid: vec![3; 16],
        flags: flags.bits(),
        ..Default::default()
    }
}

/// Checks the agent's message-level invariants over one run of operations.
fn check_agent_run(mode: TransportMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut agent = agent(mode);
    let mut now = Instant::now();
    let mut expected_seq = 0u64;
    let mut first_since_connect = false;
    let mut in_flight = false;
    for op in ops {
        // Whether this input may legitimately make the agent send something.
        let mut may_send = true;
        match op {
            Op::Connect => {
                agent.handle_connected(now);
                first_since_connect = true;
                in_flight = false;
            }
            Op::Disconnect => {
                agent.handle_disconnected(now);
                in_flight = false;
            }
            Op::SetHealth(healthy) => {
                agent.set_health(v1::ComponentHealth {
                    healthy: *healthy,
                    ..Default::default()
                });
            }
            Op::SetConfig(body) => {
                agent.set_effective_config(v1::EffectiveConfig {
                    config_map: Some(v1::AgentConfigMap {
                        config_map: [(
                            String::new(),
                            v1::AgentConfigFile {
                                body: vec![*body],
                                content_type: String::new(),
                            },
                        )]
                        .into_iter()
                        .collect(),
                    }),
                });
            }
            Op::FullReport => agent.request_full_report(),
            Op::Ack => {
                // Drain first so that only the server message itself could cause a send.
                drain(
                    &mut agent,
                    now,
                    &mut expected_seq,
                    &mut first_since_connect,
                    &mut in_flight,
                    mode,
                )?;
                agent
                    .handle_message(ack(ServerToAgentFlags::empty()), now)
                    .expect("valid ack");
                in_flight = false;
                // In HTTP mode the next poll may be due already; WebSocket must stay quiet.
                may_send = mode == TransportMode::HttpPolling;
            }
            Op::AckReportFullState => {
                agent
                    .handle_message(ack(ServerToAgentFlags::REPORT_FULL_STATE), now)
                    .expect("valid ack");
                in_flight = false;
            }
            Op::HeartbeatOffer(seconds) => {
                let offer = v1::ServerToAgent {
                    connection_settings: Some(v1::ConnectionSettingsOffers {
                        opamp: Some(v1::OpAmpConnectionSettings {
                            heartbeat_interval_seconds: u64::from(*seconds),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..ack(ServerToAgentFlags::empty())
                };
                agent.handle_message(offer, now).expect("valid offer");
                in_flight = false;
            }
            Op::RequestFailed => {
                agent.handle_request_failed(now);
                in_flight = false;
            }
            Op::Advance(millis) => {
                now += Duration::from_millis(u64::from(*millis));
                agent.handle_timeout(now);
            }
        }
        if !may_send {
            prop_assert!(
                agent.poll_transmit(now).is_none(),
                "answered a server message that changed nothing"
            );
        }
        drain(
            &mut agent,
            now,
            &mut expected_seq,
            &mut first_since_connect,
            &mut in_flight,
            mode,
        )?;
        while agent.poll_event().is_some() {}
        // A deadline, when there is one, is never in the past once outputs are drained.
        if let Some(deadline) = agent.poll_timeout() {
            prop_assert!(deadline > now || agent.retry_not_before().is_some() || in_flight);
        }
    }
    Ok(())
}

fn drain(
    agent: &mut AgentSession,
    now: Instant,
    expected_seq: &mut u64,
    first_since_connect: &mut bool,
    in_flight: &mut bool,
    mode: TransportMode,
) -> Result<(), TestCaseError> {
    while let Some(msg) = agent.poll_transmit(now) {
        prop_assert!(!*in_flight, "a second HTTP request while one is in flight");
        prop_assert_eq!(msg.sequence_num, *expected_seq);
        *expected_seq += 1;
        prop_assert_eq!(msg.instance_uid.len(), 16);
        prop_assert!(
            AgentCapabilities::from_wire(msg.capabilities)
                .contains(AgentCapabilities::REPORTS_STATUS)
        );
        if std::mem::take(first_since_connect) {
            prop_assert!(
                msg.agent_description.is_some(),
                "first message after connecting is not a full report"
            );
        }
        *in_flight = mode == TransportMode::HttpPolling;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn websocket_agent_invariants(ops in prop::collection::vec(op(), 1..120)) {
        check_agent_run(TransportMode::WebSocket, &ops)?;
    }

    #[test]
    fn http_agent_invariants(ops in prop::collection::vec(op(), 1..120)) {
        check_agent_run(TransportMode::HttpPolling, &ops)?;
    }

    /// Arbitrary bytes never panic either side, and both keep working afterwards.
    #[test]
    fn arbitrary_bytes_are_harmless(
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..256), 1..16),
        http in any::<bool>(),
    ) {
        let mode = if http { TransportMode::HttpPolling } else { TransportMode::WebSocket };
        let now = Instant::now();
        let mut agent = agent(mode);
        let mut server_config = ServerSessionConfig::default();
        server_config.mode = mode;
        let mut server = ServerSession::new(server_config);
        agent.handle_connected(now);
        for bytes in &garbage {
            let _ = server.handle_bytes(bytes, now);
            while server.poll_transmit(now).is_some() {}
            let _ = agent.handle_bytes(bytes, now);
        }
        while server.poll_event().is_some() {}
        // A clean exchange still works.
        agent.handle_connected(now);
        let report = agent.poll_transmit_bytes(now).expect("full report after connecting");
        server.handle_bytes(&report, now).expect("the server accepts an honest report");
        let answer = server.poll_transmit_bytes(now).expect("answered");
        agent.handle_bytes(&answer, now).expect("the agent accepts an honest answer");
        prop_assert_eq!(&server.agent_state().status, agent.status());
    }

    /// Whatever compressed, reordered or duplicated reports came before, a full report in
    /// sequence leaves the server with exactly that report's status.
    #[test]
    fn full_report_resets_the_server_view(
        reports in prop::collection::vec((0u64..20, any::<bool>(), any::<bool>(), 0u8..3), 0..40),
    ) {
        let now = Instant::now();
        let mut server = ServerSession::new(ServerSessionConfig::default());
        let base = v1::AgentToServer {
            instance_uid: vec![3; 16],
            capabilities: AgentCapabilities::REPORTS_STATUS.bits(),
            ..Default::default()
        };
        for (seq, described, healthy, config) in &reports {
            let msg = v1::AgentToServer {
                sequence_num: *seq,
                agent_description: described.then(v1::AgentDescription::default),
                health: Some(v1::ComponentHealth { healthy: *healthy, ..Default::default() }),
                effective_config: (*config > 0).then(v1::EffectiveConfig::default),
                ..base.clone()
            };
            server.handle_message(msg, now).expect("in-range reports are accepted");
        }
        let last = server.agent_state().last_sequence_num.map_or(0, |s| s + 1);
        let description = v1::AgentDescription {
            identifying_attributes: vec![v1::KeyValue { key: "k".into(), value: None }],
            ..Default::default()
        };
        let health = v1::ComponentHealth { status: "final".into(), ..Default::default() };
        let effective_config = v1::EffectiveConfig { config_map: Some(v1::AgentConfigMap::default()) };
        let full = v1::AgentToServer {
            sequence_num: last,
            agent_description: Some(description.clone()),
            health: Some(health.clone()),
            effective_config: Some(effective_config.clone()),
            ..base
        };
        server.handle_message(full, now).expect("full report accepted");
        let mut expected = AgentStatus::default();
        expected.description = Some(description);
        expected.health = Some(health);
        expected.effective_config = Some(effective_config);
        prop_assert_eq!(&server.agent_state().status, &expected);
        prop_assert!(!server.is_awaiting_full_state());
    }
}
