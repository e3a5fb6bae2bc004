//! Deterministic simulation: an `AgentSession` and a `ServerSession` talk through an
//! in-memory link that loses, delays, reorders and duplicates messages, under a virtual
//! clock. After a chaotic phase the link heals; the server's view must then equal the
//! agent's state, and an idle pair must exchange only heartbeats (no message loops).
//!
//! Every run is a pure function of its seed, so a failing seed printed by proptest
//! replays exactly.

use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{
    AgentEvent, AgentSession, AgentSessionConfig, ServerEvent, ServerSession, ServerSessionConfig,
    TransportMode,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HEARTBEAT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How badly the link behaves.
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: f64,
    duplicate: f64,
    max_delay: Duration,
}

const CHAOS: Faults = Faults {
    loss: 0.15,
    duplicate: 0.1,
    max_delay: Duration::from_millis(1500),
};
const HEALED: Faults = Faults {
    loss: 0.0,
    duplicate: 0.0,
    max_delay: Duration::from_millis(20),
};

/// One direction of the link. Random per-message delays reorder messages.
struct Link<T> {
    queue: Vec<(Instant, u64, T)>,
    next_id: u64,
    sent: usize,
}

impl<T: Clone> Link<T> {
    fn new() -> Self {
        Self {
            queue: Vec::new(),
            next_id: 0,
            sent: 0,
        }
    }

    fn send(&mut self, msg: T, now: Instant, faults: Faults, rng: &mut ChaCha8Rng) {
        self.sent += 1;
        if rng.gen_bool(faults.loss) {
            return;
        }
        let copies = if rng.gen_bool(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = rng.gen_range(Duration::from_millis(1)..=faults.max_delay);
            self.queue.push((now + delay, self.next_id, msg.clone()));
            self.next_id += 1;
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.queue.iter().map(|(at, _, _)| *at).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut due: Vec<_> = Vec::new();
        let mut kept = Vec::new();
        for entry in self.queue.drain(..) {
            if entry.0 <= now {
                due.push(entry)
            } else {
                kept.push(entry)
            }
        }
        self.queue = kept;
        due.sort_by_key(|(at, id, _)| (*at, *id));
        due.into_iter().map(|(_, _, msg)| msg).collect()
    }

    fn clear(&mut self) {
        self.queue.clear();
    }
}

fn attribute(key: &str, value: &str) -> v1::KeyValue {
    v1::KeyValue::string(key, value)
}

fn description(version: u32) -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![attribute("service.name", "otelcol")],
        non_identifying_attributes: vec![attribute("service.version", &format!("0.{version}.0"))],
    }
}

fn effective_config(body: u8) -> v1::EffectiveConfig {
    let mut files = std::collections::HashMap::new();
    files.insert(
        String::new(),
        v1::AgentConfigFile {
            body: vec![body; 8],
            content_type: "text/yaml".into(),
        },
    );
    v1::EffectiveConfig {
        config_map: Some(v1::AgentConfigMap { config_map: files }),
    }
}

fn package_statuses(all_hash: &[u8], progress: u8) -> v1::PackageStatuses {
    let mut packages = std::collections::HashMap::new();
    packages.insert(
        String::new(),
        v1::PackageStatus {
            status: v1::PackageStatusEnum::Downloading.into(),
            download_details: Some(v1::PackageDownloadDetails {
                download_percent: f64::from(progress),
                download_bytes_per_second: 1e6,
            }),
            ..Default::default()
        },
    );
    v1::PackageStatuses {
        packages,
        server_provided_all_packages_hash: all_hash.to_vec(),
        error_message: String::new(),
    }
}

fn offer(generation: u8) -> v1::PackagesAvailable {
    v1::PackagesAvailable {
        packages: Default::default(),
        all_packages_hash: vec![generation; 32],
    }
}

/// Changes one random piece of the agent's state, as a real agent would over time.
fn mutate(agent: &mut AgentSession, rng: &mut ChaCha8Rng) {
    match rng.gen_range(0..10) {
        0..=3 => {
            let healthy = rng.gen_bool(0.7);
            let status = ["ok", "degraded", "starting"][rng.gen_range(0..3)];
            agent.set_health(v1::ComponentHealth {
                healthy,
                status: status.into(),
                ..Default::default()
            });
        }
        4 | 5 => {
            agent.set_effective_config(effective_config(rng.gen_range(0..4)));
        }
        6 => {
            let hash = agent
                .status()
                .package_statuses
                .as_ref()
                .map(|s| s.server_provided_all_packages_hash.clone())
                .unwrap_or_default();
            agent.set_package_statuses(package_statuses(&hash, rng.gen_range(0..=100)));
        }
        7 => {
            agent.set_description(description(rng.gen_range(100..103)));
        }
        8 => {
            let hash = vec![rng.gen_range(0..3)];
            agent.set_remote_config_status(v1::RemoteConfigStatus {
                last_remote_config_hash: hash,
                status: v1::RemoteConfigStatuses::Applied.into(),
                error_message: String::new(),
            });
        }
        9 if rng.gen_bool(0.3) => {
            // Withdraw or restore a capability; offers may cross the change in flight.
            agent.set_capabilities(agent.capabilities() ^ AgentCapabilities::ACCEPTS_PACKAGES);
        }
        _ => agent.request_full_report(),
    }
}

/// Once the chaos is over the agent accepts packages again, so offers can converge.
fn restore_capabilities(agent: &mut AgentSession) {
    agent.set_capabilities(agent.capabilities() | AgentCapabilities::ACCEPTS_PACKAGES);
}

/// What the embedding application does with agent events: acknowledge package offers by
/// reporting the offer's hash, as a supervisor would once it starts working on them.
fn react(agent: &mut AgentSession) {
    while let Some(event) = agent.poll_event() {
        if let AgentEvent::PackagesAvailable { offer, .. } = event {
            agent.set_package_statuses(package_statuses(&offer.all_packages_hash, 0));
        }
    }
}

fn new_pair(mode: TransportMode, start: Instant) -> (AgentSession, ServerSession) {
    let uid = InstanceUid::from([0x5E; 16]);
    let mut config = AgentSessionConfig::new(uid, description(100));
    config.capabilities |= AgentCapabilities::ACCEPTS_PACKAGES
        | AgentCapabilities::REPORTS_PACKAGE_STATUSES
        | AgentCapabilities::REPORTS_HEALTH
        | AgentCapabilities::REPORTS_EFFECTIVE_CONFIG;
    config.heartbeat_interval = Some(HEARTBEAT);
    config.mode = mode;
    // Exercise identity assignment too: the server hands out ASSIGNED_UID.
    config.request_instance_uid = true;
    let mut agent = AgentSession::new(config);
    agent.handle_connected(start);
    let mut server_config = ServerSessionConfig::new(
        ServerCapabilities::OFFERS_PACKAGES | ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
    );
    server_config.mode = mode;
    (agent, ServerSession::new(server_config))
}

/// The uid the simulated server assigns when asked.
const ASSIGNED_UID: [u8; 16] = [0xA5; 16];

/// What the embedding server does with session events.
fn serve_events(server: &mut ServerSession) {
    while let Some(event) = server.poll_event() {
        if event == ServerEvent::InstanceUidRequested {
            server.assign_instance_uid(InstanceUid::from(ASSIGNED_UID));
        }
    }
}

/// Counts of messages sent in each direction.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    to_server: usize,
    to_agent: usize,
}

/// The WebSocket world: both directions push, the link misbehaves, the connection
/// sometimes drops.
struct WsWorld {
    rng: ChaCha8Rng,
    now: Instant,
    agent: AgentSession,
    server: ServerSession,
    up: Link<v1::AgentToServer>,
    down: Link<v1::ServerToAgent>,
    reconnect_at: Option<Instant>,
    offers: u8,
}

impl WsWorld {
    fn new(seed: u64) -> Self {
        let now = Instant::now();
        let (agent, server) = new_pair(TransportMode::WebSocket, now);
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now,
            agent,
            server,
            up: Link::new(),
            down: Link::new(),
            reconnect_at: None,
            offers: 0,
        }
    }

    /// One step: maybe change something, flush outputs, advance virtual time to the next
    /// event, deliver what is due.
    fn step(&mut self, faults: Faults, chaotic: bool) {
        if !chaotic {
            restore_capabilities(&mut self.agent);
        }
        if chaotic {
            if self.rng.gen_bool(0.15) {
                mutate(&mut self.agent, &mut self.rng);
            }
            if self.rng.gen_bool(0.01) {
                self.offers += 1;
                self.server.offer_packages(offer(self.offers));
            }
            if self.reconnect_at.is_none() && self.rng.gen_bool(0.003) {
                self.agent.handle_disconnected(self.now);
                self.server.handle_disconnected(self.now);
                self.up.clear();
                self.down.clear();
                // The agent comes back to: the same session, a new session resumed from
                // the state a registry kept under the agent's uid, or a restarted server
                // that lost everything.
                let config = self.server.config().clone();
                let state = self.server.agent_state().clone();
                match self.rng.gen_range(0..3) {
                    0 => {}
                    1 if state.instance_uid == Some(self.agent.instance_uid()) => {
                        self.server = ServerSession::with_agent_state(config, state);
                    }
                    _ => self.server = ServerSession::new(config),
                }
                self.reconnect_at =
                    Some(self.now + Duration::from_millis(self.rng.gen_range(1..5000)));
            }
        }
        self.flush(faults);

        let idle_step = self.now + Duration::from_millis(self.rng.gen_range(1..2000));
        let next = [
            self.up.next_delivery(),
            self.down.next_delivery(),
            self.agent.poll_timeout(),
            self.reconnect_at,
        ]
        .into_iter()
        .flatten()
        .chain([idle_step])
        .min()
        .unwrap_or(idle_step)
        .max(self.now + Duration::from_millis(1));
        self.now = next;

        if self.reconnect_at.is_some_and(|t| t <= self.now) {
            self.reconnect_at = None;
            self.agent.handle_connected(self.now);
        }
        for msg in self.up.take_due(self.now) {
            // The server may refuse nothing an honest agent sends.
            self.server
                .handle_message(msg, self.now)
                .expect("server refused an honest agent message");
        }
        for msg in self.down.take_due(self.now) {
            self.agent
                .handle_message(msg, self.now)
                .expect("agent refused an honest server message");
        }
        self.agent.handle_timeout(self.now);
        react(&mut self.agent);
        serve_events(&mut self.server);
    }

    fn flush(&mut self, faults: Faults) {
        if self.reconnect_at.is_some() {
            return;
        }
        while let Some(msg) = self.agent.poll_transmit(self.now) {
            self.up.send(msg, self.now, faults, &mut self.rng);
        }
        while let Some(msg) = self.server.poll_transmit(self.now) {
            self.down.send(msg, self.now, faults, &mut self.rng);
        }
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            to_server: self.up.sent,
            to_agent: self.down.sent,
        }
    }

    /// Runs healed, without changes, for `span` of virtual time, then until nothing is in
    /// flight (so the two sides can be compared).
    fn run_healed(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            self.step(HEALED, false);
        }
        for _ in 0..100 {
            if self.up.next_delivery().is_none() && self.down.next_delivery().is_none() {
                return;
            }
            self.step(HEALED, false);
        }
        panic!("the link never went quiet");
    }
}

fn assert_converged(agent: &AgentSession, server: &ServerSession, seed: u64) {
    let state = server.agent_state();
    assert_eq!(
        &state.status,
        agent.status(),
        "seed {seed}: server view differs from agent state"
    );
    assert_eq!(state.capabilities, agent.capabilities(), "seed {seed}");
    assert_eq!(
        agent.instance_uid(),
        InstanceUid::from(ASSIGNED_UID),
        "seed {seed}: the agent never got its assigned uid"
    );
    assert_eq!(
        state.instance_uid,
        Some(agent.instance_uid()),
        "seed {seed}"
    );
    assert_eq!(
        state.last_sequence_num,
        agent.next_sequence_num().checked_sub(1),
        "seed {seed}"
    );
}

/// Messages an idle pair may exchange in `span`: one heartbeat per interval each way,
/// plus one in flight at either end of the window.
fn assert_no_loops(before: Traffic, after: Traffic, span: Duration, seed: u64) {
    let beats = (span.as_secs() / HEARTBEAT.as_secs()) as usize + 1;
    let to_server = after.to_server - before.to_server;
    let to_agent = after.to_agent - before.to_agent;
    assert!(
        to_server <= beats,
        "seed {seed}: {to_server} agent messages while idle for {span:?}"
    );
    assert!(
        to_agent <= to_server + 1,
        "seed {seed}: {to_agent} server messages for {to_server} agent messages"
    );
    assert!(
        to_server >= beats - 1,
        "seed {seed}: heartbeats stopped ({to_server} in {span:?})"
    );
}

fn run_websocket(seed: u64, steps: usize) {
    let mut world = WsWorld::new(seed);
    for _ in 0..steps {
        world.step(CHAOS, true);
    }
    // Heal, then give the pair a few heartbeats to repair what the chaos broke.
    world.run_healed(HEARTBEAT * 4);
    assert_converged(&world.agent, &world.server, seed);
    let before = world.traffic();
    let idle = Duration::from_secs(600);
    world.run_healed(idle);
    assert_no_loops(before, world.traffic(), idle, seed);
    assert_converged(&world.agent, &world.server, seed);
}

/// The HTTP world: the agent posts one request at a time; a lost request or response
/// surfaces to the agent as a failed request after a timeout.
fn run_http(seed: u64, steps: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut now = Instant::now();
    let (mut agent, mut server) = new_pair(TransportMode::HttpPolling, now);
    // The outcome of the request in flight: when it resolves, and the response if any.
    let mut in_flight: Option<(Instant, Option<v1::ServerToAgent>)> = None;
    let mut offers = 0u8;
    let mut traffic = Traffic::default();

    let mut step = |faults: Faults, chaotic: bool, now: &mut Instant, traffic: &mut Traffic| {
        if chaotic && rng.gen_bool(0.15) {
            mutate(&mut agent, &mut rng);
        }
        if !chaotic {
            restore_capabilities(&mut agent);
        }
        if chaotic && rng.gen_bool(0.01) {
            offers += 1;
            server.offer_packages(offer(offers));
        }
        if let Some(request) = agent.poll_transmit(*now) {
            assert!(
                in_flight.is_none(),
                "seed {seed}: a second request while one is in flight"
            );
            traffic.to_server += 1;
            let outcome = if rng.gen_bool(faults.loss) {
                (*now + HTTP_TIMEOUT, None)
            } else {
                server
                    .handle_message(request, *now)
                    .expect("server refused an honest request");
                let response = server
                    .poll_transmit(*now)
                    .expect("every request gets a response");
                assert!(
                    server.poll_transmit(*now).is_none(),
                    "seed {seed}: exactly one response per request"
                );
                traffic.to_agent += 1;
                let delay = rng.gen_range(Duration::from_millis(1)..=faults.max_delay);
                if rng.gen_bool(faults.loss) {
                    (*now + HTTP_TIMEOUT, None)
                } else {
                    (*now + delay, Some(response))
                }
            };
            in_flight = Some(outcome);
            assert!(
                agent.poll_transmit(*now).is_none(),
                "seed {seed}: a second request while one is in flight"
            );
        }
        assert!(
            server.poll_transmit(*now).is_none(),
            "seed {seed}: an HTTP server never pushes"
        );

        let idle_step = *now + Duration::from_millis(rng.gen_range(1..2000));
        let next = [in_flight.as_ref().map(|(at, _)| *at), agent.poll_timeout()]
            .into_iter()
            .flatten()
            .chain([idle_step])
            .min()
            .unwrap_or(idle_step)
            .max(*now + Duration::from_millis(1));
        *now = next;
        if in_flight.as_ref().is_some_and(|(at, _)| *at <= *now) {
            match in_flight.take().and_then(|(_, response)| response) {
                Some(response) => agent
                    .handle_message(response, *now)
                    .expect("agent refused an honest response"),
                None => agent.handle_request_failed(*now),
            }
        }
        agent.handle_timeout(*now);
        react(&mut agent);
        serve_events(&mut server);
    };

    for _ in 0..steps {
        step(CHAOS, true, &mut now, &mut traffic);
    }
    let heal_end = now + HEARTBEAT * 4 + RETRY_MAX;
    while now < heal_end {
        step(HEALED, false, &mut now, &mut traffic);
    }
    let before = traffic;
    let idle = Duration::from_secs(600);
    let idle_end = now + idle;
    while now < idle_end {
        step(HEALED, false, &mut now, &mut traffic);
    }
    assert_no_loops(before, traffic, idle, seed);
    assert_converged(&agent, &server, seed);
    // HTTP loses nothing silently (a lost response is a failed request, answered by a full
    // report), so the latest package offer must have reached the agent.
    if offers > 0 {
        let reported = agent
            .status()
            .package_statuses
            .as_ref()
            .map(|s| s.server_provided_all_packages_hash.clone());
        assert_eq!(
            reported,
            Some(offer(offers).all_packages_hash),
            "seed {seed}: latest offer not applied"
        );
    }
}

/// Longest back-off after chaos (the default retry policy's cap).
const RETRY_MAX: Duration = Duration::from_secs(60);

#[test]
fn websocket_long_run_converges() {
    run_websocket(7, 20_000);
}

#[test]
fn http_long_run_converges() {
    run_http(42, 20_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn websocket_converges_for_any_seed(seed in any::<u64>()) {
        run_websocket(seed, 3_000);
    }

    #[test]
    fn http_converges_for_any_seed(seed in any::<u64>()) {
        run_http(seed, 3_000);
    }
}
