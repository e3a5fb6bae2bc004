//! Embedding the server side: one `ServerSession` per connected agent, reacting to typed
//! events instead of parsing raw messages.
//!
//! The agent is an in-memory `AgentSession` and time is virtual. The example shows the
//! server offering packages when an agent first describes itself, following the install
//! through package status events, and recovering an agent's full state after the server
//! "restarts" and loses it (the session asks the agent for `ReportFullState`).
//!
//! Run with `cargo run -p opamp-session --example server_embedding`.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{
    AgentEvent, AgentSession, AgentSessionConfig, ServerEvent, ServerSession, ServerSessionConfig,
    SessionError,
};

fn server_config() -> ServerSessionConfig {
    let mut config = ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    // Ask agents that report heartbeats to do so every 15 seconds.
    config.heartbeat_interval = Some(Duration::from_secs(15));
    config
}

fn main() -> Result<(), SessionError> {
    let mut agent = demo_agent();
    let mut server = ServerSession::new(server_config());
    let mut now = Instant::now();
    agent.handle_connected(now);

    println!("== first connection");
    for _ in 0..4 {
        exchange(&mut agent, &mut server, now)?;
        now += Duration::from_secs(15);
        agent.handle_timeout(now);
    }

    println!("== the server restarts and forgets everything it knew");
    server = ServerSession::new(server_config());
    for _ in 0..3 {
        now += Duration::from_secs(15);
        agent.handle_timeout(now);
        exchange(&mut agent, &mut server, now)?;
    }
    assert_eq!(&server.agent_state().status, agent.status());
    println!(
        "server view matches the agent again: {:?}",
        server.agent_state().status.package_statuses.is_some()
    );
    Ok(())
}

/// One round trip of everything pending in both directions, with the server reacting to
/// each event as a fleet manager would.
fn exchange(
    agent: &mut AgentSession,
    server: &mut ServerSession,
    now: Instant,
) -> Result<(), SessionError> {
    loop {
        let mut progressed = false;
        while let Some(msg) = agent.poll_transmit(now) {
            progressed = true;
            server.handle_message(msg, now)?;
        }
        while let Some(event) = server.poll_event() {
            on_server_event(server, event);
        }
        while let Some(msg) = server.poll_transmit(now) {
            progressed = true;
            if msg.flags != 0 {
                println!("   server -> agent: ReportFullState");
            }
            agent.handle_message(msg, now)?;
        }
        while let Some(event) = agent.poll_event() {
            if let AgentEvent::PackagesAvailable { offer, .. } = event {
                // The agent side's supervisor would install here; report the outcome.
                agent.set_package_statuses(v1::PackageStatuses {
                    server_provided_all_packages_hash: offer.all_packages_hash,
                    ..Default::default()
                });
            }
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// The embedding server's business logic, driven by typed events.
fn on_server_event(server: &mut ServerSession, event: ServerEvent) {
    match event {
        ServerEvent::Connected { instance_uid, .. } => {
            println!("   event: agent {instance_uid} connected")
        }
        ServerEvent::DescriptionChanged(description) => {
            println!(
                "   event: description with {} identifying attributes",
                description.identifying_attributes.len()
            );
            // A rollout engine would decide here; this demo offers one version to everyone.
            server.offer_packages(target_packages());
        }
        ServerEvent::PackageStatusesChanged(statuses) => {
            let done =
                statuses.server_provided_all_packages_hash == target_packages().all_packages_hash;
            println!("   event: package statuses (offer applied: {done})");
        }
        ServerEvent::FullStateRequested { last, received, .. } => {
            println!(
                "   event: missing state (last seq {last:?}, got {received}); asked for a full report"
            );
        }
        other => println!("   event: {other:?}"),
    }
}

fn demo_agent() -> AgentSession {
    let mut config = AgentSessionConfig::new(
        InstanceUid::new_v7(),
        v1::AgentDescription {
            identifying_attributes: vec![v1::KeyValue {
                key: "service.name".into(),
                value: Some(v1::AnyValue {
                    value: Some(v1::any_value::Value::StringValue("otelcol".into())),
                }),
            }],
            non_identifying_attributes: Vec::new(),
        },
    );
    config.capabilities |=
        AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
    AgentSession::new(config)
}

fn target_packages() -> v1::PackagesAvailable {
    v1::PackagesAvailable {
        packages: Default::default(),
        all_packages_hash: vec![0x42; 32],
    }
}
