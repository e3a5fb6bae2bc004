//! Embedding the agent side: an `AgentSession` driven by a hand-written run loop.
//!
//! The "network" is an in-memory queue to a `ServerSession` (which stands in for any OpAMP
//! server), and time is virtual, so the example runs instantly and deterministically.
//! A real embedding replaces `deliver_to_server` with a WebSocket send or an HTTP POST and
//! sleeps until `poll_timeout` instead of jumping the clock.
//!
//! Run with `cargo run -p opamp-session --example agent_embedding`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{
    AgentEvent, AgentSession, AgentSessionConfig, ServerSession, ServerSessionConfig, SessionError,
};

fn main() -> Result<(), SessionError> {
    // 1. Configure the agent: what it is and what it accepts.
    let mut config = AgentSessionConfig::new(
        InstanceUid::new_v7(),
        describe("otelcol-contrib", "0.110.0"),
    );
    config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
        | AgentCapabilities::REPORTS_PACKAGE_STATUSES
        | AgentCapabilities::ACCEPTS_REMOTE_CONFIG
        | AgentCapabilities::REPORTS_REMOTE_CONFIG
        | AgentCapabilities::REPORTS_HEALTH
        | AgentCapabilities::ACCEPTS_RESTART_COMMAND;
    config.heartbeat_interval = Some(Duration::from_secs(30));
    let mut agent = AgentSession::new(config);

    // The peer: a server that wants this agent on a new version and a new config.
    let mut server = ServerSession::new(ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES
            | ServerCapabilities::ACCEPTS_PACKAGES_STATUS
            | ServerCapabilities::OFFERS_REMOTE_CONFIG,
    ));
    server.offer_packages(upgrade_offer());
    server.offer_remote_config(v1::AgentRemoteConfig {
        config: None,
        config_hash: b"config-v2".to_vec(),
    });
    let mut to_agent: VecDeque<v1::ServerToAgent> = VecDeque::new();

    // 2. The link comes up: the session queues its full report.
    let start = Instant::now();
    let mut now = start;
    agent.handle_connected(now);
    agent.set_health(v1::ComponentHealth {
        healthy: true,
        status: "running".into(),
        ..Default::default()
    });

    // 3. The run loop: inputs, then drain outputs, then wait for the next deadline.
    let mut sent = 0;
    while now < start + Duration::from_secs(120) {
        // Outputs: drain messages and events until both are empty (acting on an event
        // may change the status, which queues another message).
        loop {
            let mut busy = false;
            while let Some(msg) = agent.poll_transmit(now) {
                busy = true;
                sent += 1;
                println!(
                    "agent -> server  #{:<3} {}",
                    msg.sequence_num,
                    summarize_report(&msg)
                );
                deliver_to_server(&mut server, msg, now, &mut to_agent)?;
            }
            while let Some(event) = agent.poll_event() {
                busy = true;
                act_on(&mut agent, event);
            }
            if !busy {
                break;
            }
        }
        // Inputs: whatever arrived.
        if let Some(msg) = to_agent.pop_front() {
            agent.handle_message(msg, now)?;
            continue;
        }
        // Nothing arrived: sleep until the session's next deadline (here: jump the clock).
        let Some(deadline) = agent.poll_timeout() else {
            break;
        };
        now = deadline;
        agent.handle_timeout(now);
    }
    println!("{sent} messages in {:?} of virtual time", now - start);
    assert_eq!(&server.agent_state().status, agent.status());
    Ok(())
}

/// What a supervisor would do with each event. Every reaction that changes the agent's
/// state goes back into the session through a setter, which schedules a report.
fn act_on(agent: &mut AgentSession, event: AgentEvent) {
    match event {
        AgentEvent::PackagesAvailable { offer, plan, .. } => {
            println!(
                "   event: {} package action(s) planned",
                plan.packages().len()
            );
            // Download, verify and install here (opamp-supervisor), then report.
            let statuses = v1::PackageStatuses {
                server_provided_all_packages_hash: offer.all_packages_hash.clone(),
                ..Default::default()
            };
            agent.set_package_statuses(statuses);
        }
        AgentEvent::RemoteConfig(config) => {
            println!(
                "   event: remote config {:?}",
                String::from_utf8_lossy(&config.config_hash)
            );
            agent.set_remote_config_status(v1::RemoteConfigStatus {
                last_remote_config_hash: config.config_hash,
                status: v1::RemoteConfigStatuses::Applied.into(),
                error_message: String::new(),
            });
        }
        AgentEvent::Restart => println!("   event: restart requested"),
        AgentEvent::RetryAfter(deadline) => println!("   event: server busy until {deadline:?}"),
        other => println!("   event: {other:?}"),
    }
}

/// Stands in for the network and the remote server.
fn deliver_to_server(
    server: &mut ServerSession,
    msg: v1::AgentToServer,
    now: Instant,
    to_agent: &mut VecDeque<v1::ServerToAgent>,
) -> Result<(), SessionError> {
    server.handle_message(msg, now)?;
    while let Some(reply) = server.poll_transmit(now) {
        to_agent.push_back(reply);
    }
    while server.poll_event().is_some() {}
    Ok(())
}

fn describe(name: &str, version: &str) -> v1::AgentDescription {
    let attribute = |key: &str, value: &str| v1::KeyValue {
        key: key.into(),
        value: Some(v1::AnyValue {
            value: Some(v1::any_value::Value::StringValue(value.into())),
        }),
    };
    v1::AgentDescription {
        identifying_attributes: vec![
            attribute("service.name", name),
            attribute("service.version", version),
        ],
        non_identifying_attributes: vec![attribute("os.type", std::env::consts::OS)],
    }
}

fn upgrade_offer() -> v1::PackagesAvailable {
    let package = v1::PackageAvailable {
        r#type: v1::PackageType::TopLevel.into(),
        version: "0.111.0".into(),
        file: Some(v1::DownloadableFile {
            download_url: "https://downloads.example.invalid/otelcol-contrib-0.111.0.tar.gz".into(),
            content_hash: vec![0xAB; 32],
            signature: Vec::new(),
            headers: None,
        }),
        hash: vec![0x01; 32],
    };
    v1::PackagesAvailable {
        packages: [("otelcol-contrib".to_string(), package)]
            .into_iter()
            .collect(),
        all_packages_hash: vec![0x02; 32],
    }
}

fn summarize_report(msg: &v1::AgentToServer) -> String {
    let mut parts = Vec::new();
    if msg.agent_description.is_some() {
        parts.push("description");
    }
    if msg.health.is_some() {
        parts.push("health");
    }
    if msg.remote_config_status.is_some() {
        parts.push("remote_config_status");
    }
    if msg.package_statuses.is_some() {
        parts.push("package_statuses");
    }
    if parts.is_empty() {
        "heartbeat".into()
    } else {
        parts.join(" + ")
    }
}
