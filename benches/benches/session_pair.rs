//! Messages per second through an `AgentSession` / `ServerSession` pair in memory.
//!
//! Each iteration is one status change round trip: the agent's health flips, the agent
//! emits a compressed report, the server merges it and answers, and the agent processes
//! the answer, i.e. two messages. `decoded` hands messages over as structs; `wire` encodes
//! and decodes WebSocket frames on the way, as a transport would.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_main};
use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{AgentSession, AgentSessionConfig, ServerSession, ServerSessionConfig};

fn description() -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![
            v1::KeyValue::string("service.name", "otelcol-contrib"),
            v1::KeyValue::string("service.instance.id", "a1b2c3"),
        ],
        non_identifying_attributes: vec![
            v1::KeyValue::string("os.type", "linux"),
            v1::KeyValue::string("host.name", "node-17"),
        ],
    }
}

fn health(healthy: bool) -> v1::ComponentHealth {
    v1::ComponentHealth {
        healthy,
        status: if healthy {
            "StatusOK"
        } else {
            "StatusRecoverableError"
        }
        .into(),
        ..Default::default()
    }
}

/// A connected pair that already exchanged the first full report.
fn pair(now: Instant) -> (AgentSession, ServerSession) {
    let mut config = AgentSessionConfig::new(InstanceUid::from([0x42; 16]), description());
    config.capabilities |= AgentCapabilities::REPORTS_HEALTH | AgentCapabilities::ACCEPTS_PACKAGES;
    let mut agent = AgentSession::new(config);
    let mut server = ServerSession::new(ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES,
    ));
    agent.handle_connected(now);
    while let Some(msg) = agent.poll_transmit(now) {
        server.handle_message(msg, now).expect("honest agent");
    }
    while let Some(msg) = server.poll_transmit(now) {
        agent.handle_message(msg, now).expect("honest server");
    }
    while agent.poll_event().is_some() {}
    while server.poll_event().is_some() {}
    (agent, server)
}

fn bench_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_pair");
    group.throughput(Throughput::Elements(2));
    let now = Instant::now();

    let (mut agent, mut server) = pair(now);
    let mut healthy = false;
    group.bench_function("decoded", |b| {
        b.iter(|| {
            healthy = !healthy;
            agent.set_health(health(healthy));
            let report = agent.poll_transmit(now).expect("a change is reported");
            server
                .handle_message(black_box(report), now)
                .expect("honest agent");
            let answer = server.poll_transmit(now).expect("every report is answered");
            agent
                .handle_message(black_box(answer), now)
                .expect("honest server");
            while server.poll_event().is_some() {}
        });
    });

    let (mut agent, mut server) = pair(now);
    group.bench_function("wire", |b| {
        b.iter(|| {
            healthy = !healthy;
            agent.set_health(health(healthy));
            let frame = agent
                .poll_transmit_bytes(now)
                .expect("a change is reported");
            server
                .handle_bytes(black_box(&frame), now)
                .expect("honest agent");
            let frame = server
                .poll_transmit_bytes(now)
                .expect("every report is answered");
            agent
                .handle_bytes(black_box(&frame), now)
                .expect("honest server");
            while server.poll_event().is_some() {}
        });
    });
    group.finish();
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_pair);
}
criterion_main!(harness::benches);
