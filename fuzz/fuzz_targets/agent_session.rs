//! `AgentSession` fed arbitrary sequences of inputs on a virtual clock.
//!
//! Inputs: connection changes, failed requests, `Retry-After`, time passing, status changes,
//! server replies built from fuzz data (addressed to the agent, so they get past the uid
//! check), decoded messages and raw transport bytes. After every input the harness drains
//! the outputs like a transport would. Invariants:
//! - nothing panics (overflowing deadlines included);
//! - `sequence_num` starts at 0 and grows by exactly one per transmitted `AgentToServer`;
//! - every transmitted message carries the agent's current 16-byte instance uid;
//! - no `PackagesAvailable` event reaches an agent that does not declare `AcceptsPackages`;
//! - after draining, the next deadline is in the future (a past one would make a runtime spin).
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::{AgentEvent, AgentSession, AgentSessionConfig, TransportMode};
use prost::Message;

#[derive(Debug, Arbitrary)]
struct Input {
    http: bool,
    accepts_packages: bool,
    heartbeat_seconds: Option<u16>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Connected,
    Disconnected,
    RequestFailed,
    RetryAfter {
        millis: u32,
    },
    Advance {
        millis: u32,
    },
    /// Jump to the session's own deadline and fire it.
    FireTimeout,
    SetHealth {
        healthy: bool,
        status: String,
    },
    SetCapabilities(u64),
    SetPackageStatuses(Vec<u8>),
    RequestFullReport,
    Disconnect,
    Reply(Reply),
    /// A decoded `ServerToAgent` from fuzz bytes.
    Decoded(Vec<u8>),
    /// Raw transport bytes.
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Reply {
    flags: u64,
    capabilities: u64,
    packages: Option<Vec<(String, String, [u8; 4])>>,
    error: Option<(i32, Option<u64>)>,
    heartbeat_interval_seconds: Option<u64>,
    new_instance_uid: Option<[u8; 16]>,
    restart: bool,
    previous_uid: bool,
}

impl Reply {
    fn to_message(&self, uid: InstanceUid, previous: InstanceUid) -> v1::ServerToAgent {
        let addressee = if self.previous_uid { previous } else { uid };
        let packages_available = self
            .packages
            .as_ref()
            .map(|packages| v1::PackagesAvailable {
                all_packages_hash: vec![packages.len() as u8; 32],
                packages: packages
                    .iter()
                    .map(|(name, version, hash)| {
                        let available = v1::PackageAvailable {
                            version: version.clone(),
                            file: Some(v1::DownloadableFile {
                                download_url: format!("http://127.0.0.1/{}", hash[0]),
                                content_hash: hash.repeat(8),
                                ..Default::default()
                            }),
                            hash: hash.to_vec(),
                            ..Default::default()
                        };
                        (name.clone(), available)
                    })
                    .collect(),
            });
        v1::ServerToAgent {
            instance_uid: addressee.to_vec(),
            flags: self.flags,
            capabilities: self.capabilities,
            error_response: self.error.map(|(kind, retry)| v1::ServerErrorResponse {
                r#type: kind,
                error_message: "fuzz".into(),
                details: retry.map(|nanos| {
                    v1::server_error_response::Details::RetryInfo(v1::RetryInfo {
                        retry_after_nanoseconds: nanos,
                    })
                }),
            }),
            connection_settings: self.heartbeat_interval_seconds.map(|seconds| {
                v1::ConnectionSettingsOffers {
                    hash: vec![1; 32],
                    opamp: Some(v1::OpAmpConnectionSettings {
                        heartbeat_interval_seconds: seconds,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }),
            agent_identification: self.new_instance_uid.map(|uid| v1::AgentIdentification {
                new_instance_uid: uid.to_vec(),
            }),
            command: self.restart.then(|| v1::ServerToAgentCommand { r#type: 0 }),
            packages_available,
            ..Default::default()
        }
    }
}

struct Harness {
    agent: AgentSession,
    now: Instant,
    next_sequence_num: u64,
    previous_uid: InstanceUid,
}

impl Harness {
    fn drain(&mut self) {
        let mut sent = 0;
        while let Some(message) = self.agent.poll_transmit(self.now) {
            sent += 1;
            assert!(sent < 1_000, "transmit loop does not end");
            assert_eq!(
                message.sequence_num, self.next_sequence_num,
                "sequence_num skipped"
            );
            self.next_sequence_num += 1;
            assert_eq!(message.instance_uid, self.agent.instance_uid().to_vec());
        }
        while let Some(event) = self.agent.poll_event() {
            if let AgentEvent::PackagesAvailable { .. } = event {
                assert!(
                    self.agent
                        .capabilities()
                        .contains(AgentCapabilities::ACCEPTS_PACKAGES),
                    "package offer surfaced without AcceptsPackages"
                );
            }
        }
        // A deadline that has already passed right after draining would make a runtime spin.
        if let Some(deadline) = self.agent.poll_timeout() {
            assert!(
                deadline > self.now,
                "poll_timeout is in the past after draining"
            );
        }
    }

    fn advance(&mut self, by: Duration) {
        if let Some(later) = self.now.checked_add(by) {
            self.now = later;
        }
    }
}

fuzz_target!(|input: Input| {
    let uid = InstanceUid::from([7; 16]);
    let mut config = AgentSessionConfig::new(uid, v1::AgentDescription::default());
    config.mode = if input.http {
        TransportMode::HttpPolling
    } else {
        TransportMode::WebSocket
    };
    // Zero included: it once made a WebSocket agent heartbeat without end
    // (regressions/agent_session/heartbeat-interval-zero-busy-loop, fixed in opamp-session).
    config.heartbeat_interval = input
        .heartbeat_seconds
        .map(|s| Duration::from_secs(u64::from(s)));
    if input.accepts_packages {
        config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES;
    }
    let mut h = Harness {
        agent: AgentSession::new(config),
        now: Instant::now(),
        next_sequence_num: 0,
        previous_uid: uid,
    };
    for op in input.ops.into_iter().take(256) {
        let now = h.now;
        match op {
            Op::Connected => h.agent.handle_connected(now),
            Op::Disconnected => h.agent.handle_disconnected(now),
            Op::RequestFailed => h.agent.handle_request_failed(now),
            Op::RetryAfter { millis } => {
                if let Some(at) = now.checked_add(Duration::from_millis(u64::from(millis))) {
                    h.agent.handle_retry_after(at);
                }
            }
            Op::Advance { millis } => {
                h.advance(Duration::from_millis(u64::from(millis)));
                h.agent.handle_timeout(h.now);
            }
            Op::FireTimeout => {
                if let Some(deadline) = h.agent.poll_timeout() {
                    h.now = h.now.max(deadline);
                }
                h.agent.handle_timeout(h.now);
            }
            Op::SetHealth { healthy, status } => {
                h.agent.set_health(v1::ComponentHealth {
                    healthy,
                    status,
                    ..Default::default()
                });
            }
            Op::SetCapabilities(bits) => {
                h.agent.set_capabilities(AgentCapabilities::from_wire(bits));
            }
            Op::SetPackageStatuses(bytes) => {
                if let Ok(statuses) = v1::PackageStatuses::decode(bytes.as_slice()) {
                    h.agent.set_package_statuses(statuses);
                }
            }
            Op::RequestFullReport => h.agent.request_full_report(),
            Op::Disconnect => h.agent.disconnect(),
            Op::Reply(reply) => {
                let current = h.agent.instance_uid();
                let message = reply.to_message(current, h.previous_uid);
                if reply.new_instance_uid.is_some() {
                    h.previous_uid = current;
                }
                let _ = h.agent.handle_message(message, now);
            }
            Op::Decoded(bytes) => {
                if let Ok(message) = v1::ServerToAgent::decode(bytes.as_slice()) {
                    let _ = h.agent.handle_message(message, now);
                }
            }
            Op::Bytes(bytes) => {
                let _ = h.agent.handle_bytes(&bytes, now);
            }
        }
        h.drain();
    }
});
