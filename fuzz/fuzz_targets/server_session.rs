//! `ServerSession` fed arbitrary sequences of agent messages and server actions.
//!
//! Inputs: agent messages built from fuzz data (sequence jumps, capabilities, full or
//! compressed reports, flags, wrong uids), decoded messages, raw transport bytes, disconnects,
//! and the server's own offers, commands and uid assignments. After every input the harness
//! drains outputs like a transport would. Invariants:
//! - nothing panics;
//! - packages go only to an agent whose latest merged capabilities include `AcceptsPackages`
//!   (and that ever declared it), and only from a server declaring `OffersPackages`;
//! - over HTTP the session never sends more answers than it received requests.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opamp_proto::codec::{self, Limits};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{ServerSession, ServerSessionConfig, TransportMode};
use prost::Message;

#[derive(Debug, Arbitrary)]
struct Input {
    http: bool,
    capabilities: u64,
    heartbeat_seconds: Option<u8>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Agent(AgentMessage),
    /// A decoded `AgentToServer` from fuzz bytes.
    Decoded(Vec<u8>),
    /// Raw transport bytes.
    Bytes(Vec<u8>),
    Disconnected,
    OfferPackages(Vec<(String, String)>),
    OfferRemoteConfig(Vec<u8>),
    Restart,
    AssignUid([u8; 16]),
    Advance {
        millis: u32,
    },
}

#[derive(Debug, Arbitrary)]
struct AgentMessage {
    sequence_jump: i8,
    capabilities: u64,
    full_report: bool,
    server_provided_all_packages_hash: Option<Vec<u8>>,
    flags: u64,
    other_uid: Option<[u8; 16]>,
    agent_disconnect: bool,
}

struct Harness {
    server: ServerSession,
    http: bool,
    now: Instant,
    uid: InstanceUid,
    next_sequence_num: u64,
    ever_declared: AgentCapabilities,
    requests: u64,
    answers: u64,
}

impl Harness {
    fn note_request(&mut self, capabilities: u64) {
        self.requests += 1;
        self.ever_declared |= AgentCapabilities::from_wire(capabilities);
    }

    fn drain(&mut self) {
        let mut sent = 0;
        while let Some(message) = self.server.poll_transmit(self.now) {
            sent += 1;
            assert!(sent < 1_000, "transmit loop does not end");
            self.answers += 1;
            if self.http {
                assert!(
                    self.answers <= self.requests,
                    "HTTP answer without a request"
                );
            }
            if message.packages_available.is_some() {
                assert!(
                    self.server
                        .config()
                        .capabilities
                        .contains(ServerCapabilities::OFFERS_PACKAGES),
                    "packages sent by a server that does not offer them"
                );
                assert!(
                    self.server
                        .agent_state()
                        .capabilities
                        .contains(AgentCapabilities::ACCEPTS_PACKAGES)
                        && self
                            .ever_declared
                            .contains(AgentCapabilities::ACCEPTS_PACKAGES),
                    "packages sent to an agent without AcceptsPackages"
                );
            }
        }
        while self.server.poll_event().is_some() {}
    }
}

fuzz_target!(|input: Input| {
    let mut config = ServerSessionConfig::new(ServerCapabilities::from_wire(input.capabilities));
    config.mode = if input.http {
        TransportMode::HttpPolling
    } else {
        TransportMode::WebSocket
    };
    config.heartbeat_interval = input
        .heartbeat_seconds
        .map(|s| Duration::from_secs(u64::from(s)));
    let mut h = Harness {
        server: ServerSession::new(config),
        http: input.http,
        now: Instant::now(),
        uid: InstanceUid::from([9; 16]),
        next_sequence_num: 0,
        ever_declared: AgentCapabilities::empty(),
        requests: 0,
        answers: 0,
    };
    let limits = Limits::default();
    for op in input.ops.into_iter().take(256) {
        let now = h.now;
        match op {
            Op::Agent(agent) => {
                let sequence_num = h
                    .next_sequence_num
                    .wrapping_add(i64::from(agent.sequence_jump) as u64);
                h.next_sequence_num = sequence_num.wrapping_add(1);
                let uid = agent.other_uid.map_or(h.uid, InstanceUid::from);
                let message = v1::AgentToServer {
                    instance_uid: uid.to_vec(),
                    sequence_num,
                    capabilities: agent.capabilities,
                    flags: agent.flags,
                    agent_description: agent.full_report.then(v1::AgentDescription::default),
                    package_statuses: agent.server_provided_all_packages_hash.map(|hash| {
                        v1::PackageStatuses {
                            server_provided_all_packages_hash: hash,
                            ..Default::default()
                        }
                    }),
                    agent_disconnect: agent.agent_disconnect.then(v1::AgentDisconnect::default),
                    ..Default::default()
                };
                h.note_request(message.capabilities);
                let _ = h.server.handle_message(message, now);
            }
            Op::Decoded(bytes) => {
                if let Ok(message) = v1::AgentToServer::decode(bytes.as_slice()) {
                    h.note_request(message.capabilities);
                    let _ = h.server.handle_message(message, now);
                }
            }
            Op::Bytes(bytes) => {
                let decoded = if h.http {
                    codec::decode::<v1::AgentToServer>(&bytes, &limits)
                } else {
                    codec::decode_ws_frame::<v1::AgentToServer>(&bytes, &limits)
                };
                h.note_request(decoded.map_or(0, |m| m.capabilities));
                let _ = h.server.handle_bytes(&bytes, now);
            }
            Op::Disconnected => h.server.handle_disconnected(now),
            Op::OfferPackages(packages) => h.server.offer_packages(v1::PackagesAvailable {
                all_packages_hash: vec![packages.len() as u8; 32],
                packages: packages
                    .into_iter()
                    .map(|(name, version)| {
                        let available = v1::PackageAvailable {
                            version,
                            ..Default::default()
                        };
                        (name, available)
                    })
                    .collect(),
            }),
            Op::OfferRemoteConfig(hash) => h.server.offer_remote_config(v1::AgentRemoteConfig {
                config_hash: hash,
                ..Default::default()
            }),
            Op::Restart => h
                .server
                .send_command(v1::ServerToAgentCommand { r#type: 0 }),
            Op::AssignUid(bytes) => {
                let uid = InstanceUid::from(bytes);
                h.server.assign_instance_uid(uid);
            }
            Op::Advance { millis } => {
                if let Some(later) = h.now.checked_add(Duration::from_millis(u64::from(millis))) {
                    h.now = later;
                }
            }
        }
        h.drain();
    }
});
