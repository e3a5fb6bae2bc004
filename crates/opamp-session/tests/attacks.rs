//! Attacks on the sessions, through their public API only:
//! - a server that sends packages to an agent that did not declare `AcceptsPackages`: the
//!   agent session refuses to surface the offer, and our own server session never sends one;
//! - a message over the size limit: refused by the codec and by both sessions before decoding,
//!   with nothing taking effect; one byte less is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use opamp_proto::codec::{self, CodecError, DEFAULT_MAX_MESSAGE_SIZE, Limits};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{
    AgentEvent, AgentSession, AgentSessionConfig, OfferKind, ServerSession, ServerSessionConfig,
    SessionError, TransportMode,
};

const AGENT_UID: [u8; 16] = [0xa7; 16];

fn agent(capabilities: AgentCapabilities) -> AgentSession {
    let mut config = AgentSessionConfig::new(
        InstanceUid::from(AGENT_UID),
        v1::AgentDescription::default(),
    );
    config.capabilities = capabilities;
    AgentSession::new(config)
}

/// A connected agent whose first full report went out, with its events drained.
fn connected_agent(capabilities: AgentCapabilities, now: Instant) -> AgentSession {
    let mut agent = agent(capabilities);
    agent.handle_connected(now);
    while agent.poll_transmit(now).is_some() {}
    while agent.poll_event().is_some() {}
    agent
}

fn package_offer() -> v1::PackagesAvailable {
    let mut offer = v1::PackagesAvailable {
        all_packages_hash: vec![0x11; 32],
        ..Default::default()
    };
    offer.packages.insert(
        "otelcol-contrib".to_owned(),
        v1::PackageAvailable {
            r#type: v1::PackageType::TopLevel.into(),
            version: "9.9.9".to_owned(),
            file: Some(v1::DownloadableFile {
                download_url: "http://127.0.0.1:1/evil".to_owned(),
                content_hash: vec![0x22; 32],
                ..Default::default()
            }),
            hash: vec![0x33; 32],
        },
    );
    offer
}

/// What a hostile server sends: packages, addressed correctly, claiming `OffersPackages`.
fn hostile_server_message() -> v1::ServerToAgent {
    v1::ServerToAgent {
        instance_uid: AGENT_UID.to_vec(),
        capabilities: (ServerCapabilities::ACCEPTS_STATUS | ServerCapabilities::OFFERS_PACKAGES)
            .bits(),
        packages_available: Some(package_offer()),
        ..Default::default()
    }
}

fn drain_events(agent: &mut AgentSession) -> Vec<AgentEvent> {
    std::iter::from_fn(|| agent.poll_event()).collect()
}

#[test]
fn agent_without_accepts_packages_refuses_a_package_offer() {
    let now = Instant::now();
    for via_bytes in [false, true] {
        let mut agent = connected_agent(AgentCapabilities::REPORTS_STATUS, now);
        if via_bytes {
            let frame = codec::encode_ws_frame(&hostile_server_message());
            agent.handle_bytes(&frame, now).unwrap();
        } else {
            agent.handle_message(hostile_server_message(), now).unwrap();
        }
        let events = drain_events(&mut agent);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, AgentEvent::PackagesAvailable { .. })),
            "offer surfaced: {events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                AgentEvent::OfferRefused { offer: OfferKind::Packages, required, .. }
                    if *required == AgentCapabilities::ACCEPTS_PACKAGES
            )),
            "no refusal event: {events:?}"
        );
        // The agent keeps not declaring the capability.
        let report = {
            agent.request_full_report();
            agent.poll_transmit(now).unwrap()
        };
        assert!(
            !AgentCapabilities::from_wire(report.capabilities)
                .contains(AgentCapabilities::ACCEPTS_PACKAGES)
        );
    }
}

#[test]
fn agent_with_accepts_packages_surfaces_the_same_offer() {
    // Control: the refusal above is about the capability, not about the message.
    let now = Instant::now();
    let mut agent = connected_agent(
        AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES,
        now,
    );
    agent.handle_message(hostile_server_message(), now).unwrap();
    let events = drain_events(&mut agent);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::PackagesAvailable { offer, .. } if *offer == package_offer())),
        "{events:?}"
    );
}

#[test]
fn server_session_never_sends_packages_to_an_agent_without_accepts_packages() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    ));
    server.offer_packages(package_offer());
    let mut agent = agent(AgentCapabilities::REPORTS_STATUS);
    agent.handle_connected(now);

    let mut exchanges = 0;
    let mut pump = |agent: &mut AgentSession, server: &mut ServerSession| -> bool {
        let mut packages_sent = false;
        for _ in 0..4 {
            while let Some(message) = agent.poll_transmit(now) {
                server.handle_message(message, now).unwrap();
            }
            while let Some(message) = server.poll_transmit(now) {
                packages_sent |= message.packages_available.is_some();
                agent.handle_message(message, now).unwrap();
                exchanges += 1;
            }
            while agent.poll_event().is_some() {}
        }
        packages_sent
    };
    assert!(
        !pump(&mut agent, &mut server),
        "packages sent without AcceptsPackages"
    );

    // Control: once the agent declares the capability, the queued offer goes out.
    assert!(
        agent.set_capabilities(
            AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES
        )
    );
    assert!(pump(&mut agent, &mut server), "offer never delivered");
    assert!(exchanges > 0);
}

/// A real `ServerToAgent` and its encoded size.
fn message_and_size() -> (v1::ServerToAgent, usize) {
    let message = hostile_server_message();
    let size = codec::encode(&message).len();
    (message, size)
}

#[test]
fn codec_refuses_a_message_one_byte_over_the_limit() {
    let (message, size) = message_and_size();
    let bytes = codec::encode(&message);
    let frame = codec::encode_ws_frame(&message);

    let over = Limits::with_max_message_size(size - 1);
    assert!(matches!(
        codec::decode::<v1::ServerToAgent>(&bytes, &over),
        Err(CodecError::TooLarge { size: s, limit }) if s == size && limit == size - 1
    ));
    assert!(matches!(
        codec::decode_ws_frame::<v1::ServerToAgent>(&frame, &over),
        Err(CodecError::TooLarge { .. })
    ));

    let exact = Limits::with_max_message_size(size);
    assert_eq!(
        codec::decode::<v1::ServerToAgent>(&bytes, &exact).unwrap(),
        message
    );
    assert_eq!(
        codec::decode_ws_frame::<v1::ServerToAgent>(&frame, &exact).unwrap(),
        message
    );
}

#[test]
fn codec_refuses_a_message_over_the_default_limit() {
    // 64 MiB of padding in a custom message: a real, well-formed message, just too big.
    let message = v1::AgentToServer {
        instance_uid: AGENT_UID.to_vec(),
        custom_message: Some(v1::CustomMessage {
            capability: "io.example.padding".to_owned(),
            r#type: "padding".to_owned(),
            data: vec![0; DEFAULT_MAX_MESSAGE_SIZE],
        }),
        ..Default::default()
    };
    let bytes = codec::encode(&message);
    assert!(bytes.len() > DEFAULT_MAX_MESSAGE_SIZE);
    assert!(matches!(
        codec::decode::<v1::AgentToServer>(&bytes, &Limits::default()),
        Err(CodecError::TooLarge {
            limit: DEFAULT_MAX_MESSAGE_SIZE,
            ..
        })
    ));
}

#[test]
fn agent_session_refuses_an_oversized_message_and_nothing_takes_effect() {
    let now = Instant::now();
    let (message, size) = message_and_size();
    for mode in [TransportMode::WebSocket, TransportMode::HttpPolling] {
        for (limit, accepted) in [(size - 1, false), (size, true)] {
            let mut config = AgentSessionConfig::new(
                InstanceUid::from(AGENT_UID),
                v1::AgentDescription::default(),
            );
            config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES;
            config.mode = mode;
            config.limits.codec = Limits::with_max_message_size(limit);
            let mut agent = AgentSession::new(config);
            agent.handle_connected(now);
            while agent.poll_transmit(now).is_some() {}
            while agent.poll_event().is_some() {}

            let bytes = match mode {
                TransportMode::WebSocket => codec::encode_ws_frame(&message),
                _ => codec::encode(&message),
            };
            let result = agent.handle_bytes(&bytes, now);
            let events = drain_events(&mut agent);
            if accepted {
                result.unwrap();
                assert!(agent.server_capabilities().is_some(), "{mode:?}");
                assert!(
                    events
                        .iter()
                        .any(|e| matches!(e, AgentEvent::PackagesAvailable { .. })),
                    "{mode:?}: {events:?}"
                );
            } else {
                assert!(
                    matches!(
                        result,
                        Err(SessionError::Decode(CodecError::TooLarge { size: s, limit: l }))
                            if s == size && l == size - 1
                    ),
                    "{mode:?}: {result:?}"
                );
                assert!(events.is_empty(), "{mode:?}: {events:?}");
                assert_eq!(agent.server_capabilities(), None, "{mode:?}");
            }
        }
    }
}

#[test]
fn server_session_refuses_an_oversized_message_and_answers_bad_request() {
    let now = Instant::now();
    let report = v1::AgentToServer {
        instance_uid: AGENT_UID.to_vec(),
        capabilities: AgentCapabilities::REPORTS_STATUS.bits(),
        agent_description: Some(v1::AgentDescription::default()),
        ..Default::default()
    };
    let frame = codec::encode_ws_frame(&report);
    let size = frame.len() - 1;
    for (limit, accepted) in [(size - 1, false), (size, true)] {
        let mut config = ServerSessionConfig::new(ServerCapabilities::OFFERS_PACKAGES);
        config.limits.codec = Limits::with_max_message_size(limit);
        let mut server = ServerSession::new(config);
        let result = server.handle_bytes(&frame, now);
        let answer = server
            .poll_transmit(now)
            .expect("every message is answered");
        if accepted {
            result.unwrap();
            assert!(answer.error_response.is_none());
            assert_eq!(
                server.agent_state().instance_uid,
                Some(InstanceUid::from(AGENT_UID))
            );
        } else {
            assert!(
                matches!(
                    result,
                    Err(SessionError::Decode(CodecError::TooLarge { .. }))
                ),
                "{result:?}"
            );
            let error = answer
                .error_response
                .expect("refusal is answered with an error");
            assert_eq!(error.r#type(), v1::ServerErrorResponseType::BadRequest);
            assert_eq!(server.agent_state().instance_uid, None);
            assert_eq!(server.agent_state().last_sequence_num, None);
        }
    }
}
