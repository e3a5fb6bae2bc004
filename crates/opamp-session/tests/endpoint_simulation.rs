//! Deterministic simulation of a `ServerEndpoint` serving many `AgentSession`s under a
//! virtual clock: several agents per WebSocket, HTTP agents, sockets that drop (losing
//! what was in flight), lost HTTP requests and answers, messages of different sockets
//! delivered in random interleavings, agents that restart on the other transport, uid
//! reassignment, agents that go silent, and impostors copying a held uid.
//!
//! Checked on every step:
//! - every HTTP request gets exactly one answer, on its own connection, for its own uid;
//!   every WebSocket message gets at least one answer, on the socket it came from;
//! - a message changes no other agent's state (and a refused impostor changes nothing);
//! - an agent is never declared idle before its bound, and a silent agent that was sent
//!   a heartbeat interval is disconnected once its bound passed.
//!
//! After the chaos the network heals; every agent's state on the server must then equal
//! the agent's own. A run is a pure function of its seed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid, ServerCapabilities, v1};
use opamp_session::{
    AgentSession, AgentSessionConfig, AgentState, ConnectionId, ConnectionParams, DisconnectReason,
    EndpointConfig, EndpointError, EndpointEvent, ServerEndpoint, ServerSessionConfig,
    TransportMode,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HEARTBEAT: Duration = Duration::from_secs(10);
const URL: &str = "ws://127.0.0.1:4320/v1/opamp";

struct SimAgent {
    session: AgentSession,
    /// The WebSocket it is on, if it uses one and is connected.
    socket: Option<ConnectionId>,
    mode: TransportMode,
    connected: bool,
    reconnect_at: Option<Instant>,
    /// A stuck process: sends and reads nothing until then.
    silent_until: Option<Instant>,
    last_sent: Option<Instant>,
}

struct Sim {
    rng: ChaCha8Rng,
    now: Instant,
    endpoint: ServerEndpoint,
    agents: Vec<SimAgent>,
    /// What is in flight to the server on each open WebSocket, in order.
    sockets: BTreeMap<ConnectionId, VecDeque<v1::AgentToServer>>,
    next_connection: u64,
    chaos: bool,
    idle_bound: Duration,
}

fn agent_session(uid: InstanceUid, mode: TransportMode, rng: &mut ChaCha8Rng) -> AgentSession {
    let description = v1::AgentDescription {
        identifying_attributes: vec![v1::KeyValue::string("service.name", format!("agent-{uid}"))],
        non_identifying_attributes: vec![],
    };
    let mut config = AgentSessionConfig::new(uid, description);
    config.mode = mode;
    config.capabilities |= AgentCapabilities::REPORTS_HEALTH;
    let mut session = AgentSession::new(config);
    session.set_health(health(rng));
    session
}

fn health(rng: &mut ChaCha8Rng) -> v1::ComponentHealth {
    v1::ComponentHealth {
        healthy: rng.gen_bool(0.8),
        status: ["ok", "degraded", "starting"][rng.gen_range(0..3)].into(),
        ..Default::default()
    }
}

fn uid_of(message_uid: &[u8]) -> InstanceUid {
    InstanceUid::from_slice(message_uid).expect("16-byte uid")
}

impl Sim {
    fn new(seed: u64, agents: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut session = ServerSessionConfig::new(ServerCapabilities::ACCEPTS_STATUS);
        session.heartbeat_interval = Some(HEARTBEAT);
        let config = EndpointConfig::new(session);
        let idle_bound = config.idle_bound(HEARTBEAT);
        let now = Instant::now();
        let agents = (0..agents)
            .map(|n| {
                let mode = if n % 3 == 0 {
                    TransportMode::HttpPolling
                } else {
                    TransportMode::WebSocket
                };
                let uid = InstanceUid::from(rng.r#gen::<[u8; 16]>());
                SimAgent {
                    session: agent_session(uid, mode, &mut rng),
                    socket: None,
                    mode,
                    connected: false,
                    reconnect_at: Some(now),
                    silent_until: None,
                    last_sent: None,
                }
            })
            .collect();
        Self {
            rng,
            now,
            endpoint: ServerEndpoint::new(config),
            agents,
            sockets: BTreeMap::new(),
            next_connection: 1,
            chaos: true,
            idle_bound,
        }
    }

    fn connection_id(&mut self) -> ConnectionId {
        self.next_connection += 1;
        ConnectionId(self.next_connection)
    }

    fn states(&self) -> HashMap<InstanceUid, AgentState> {
        self.endpoint
            .agents()
            .filter_map(|uid| Some((uid, self.endpoint.session(uid)?.agent_state().clone())))
            .collect()
    }

    fn silent(&self, index: usize) -> bool {
        self.agents[index]
            .silent_until
            .is_some_and(|until| until > self.now)
    }

    /// Handles one message and checks that no other agent's state changed.
    fn deliver(&mut self, connection: ConnectionId, message: v1::AgentToServer) {
        let sender = self
            .endpoint
            .session(uid_of(&message.instance_uid))
            .map(|s| {
                s.agent_state()
                    .instance_uid
                    .expect("a known agent has a uid")
            });
        let before = self.states();
        let result = self.endpoint.handle(self.now, connection, message.clone());
        let after = self.states();
        for (uid, state) in &before {
            if Some(*uid) != sender && after.get(uid).is_some_and(|now| now != state) {
                panic!(
                    "a message of {:?} changed agent {uid}",
                    message.instance_uid
                );
            }
        }
        if let Err(error) = result {
            assert!(
                !matches!(error, EndpointError::UnknownConnection(_)),
                "{error}"
            );
        }
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(self.rng.gen_range(100..1500));
        if self.chaos {
            self.faults();
        }
        self.reconnect();
        for index in 0..self.agents.len() {
            self.send(index);
        }
        // Messages of different sockets arrive in a random interleaving; some wait.
        let mut budget = self.rng.gen_range(0..40);
        while budget > 0 {
            let ready: Vec<_> = self
                .sockets
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(c, _)| *c)
                .collect();
            if ready.is_empty() {
                break;
            }
            let connection = ready[self.rng.gen_range(0..ready.len())];
            let message = self
                .sockets
                .get_mut(&connection)
                .and_then(VecDeque::pop_front)
                .expect("non-empty");
            let uid = uid_of(&message.instance_uid);
            self.deliver(connection, message);
            let answers = self.route_transmits(Some(connection));
            assert!(
                !answers.is_empty(),
                "a WebSocket message of {uid} was not answered on its socket"
            );
            budget -= 1;
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= self.now) {
            self.endpoint.handle_timeout(self.now);
        }
        self.route_transmits(None);
        self.check_events();
        self.check_idle();
    }

    fn faults(&mut self) {
        let roll: f64 = self.rng.r#gen();
        if roll < 0.03 && !self.sockets.is_empty() {
            // A socket drops; what was in flight on it is lost.
            let sockets: Vec<_> = self.sockets.keys().copied().collect();
            let connection = sockets[self.rng.gen_range(0..sockets.len())];
            self.close_socket(connection);
        } else if roll < 0.05 {
            self.impostor();
        } else if roll < 0.07 {
            let index = self.rng.gen_range(0..self.agents.len());
            if self.agents[index].connected {
                let new_uid = InstanceUid::from(self.rng.r#gen::<[u8; 16]>());
                let uid = self.agents[index].session.instance_uid();
                self.endpoint
                    .with_session(self.now, uid, |s| s.assign_instance_uid(new_uid));
            }
        } else if roll < 0.09 {
            let index = self.rng.gen_range(0..self.agents.len());
            let silence = Duration::from_secs(self.rng.gen_range(5..90));
            self.agents[index].silent_until = Some(self.now + silence);
        } else if roll < 0.11 {
            // The agent restarts, perhaps on the other transport, keeping its uid.
            let index = self.rng.gen_range(0..self.agents.len());
            let mode = if self.rng.gen_bool(0.5) {
                TransportMode::HttpPolling
            } else {
                TransportMode::WebSocket
            };
            let uid = self.agents[index].session.instance_uid();
            if let Some(socket) = self.agents[index].socket.take() {
                self.leave_socket(index, socket);
            }
            self.agents[index].session = agent_session(uid, mode, &mut self.rng);
            self.agents[index].mode = mode;
            self.agents[index].connected = false;
            self.agents[index].reconnect_at = Some(self.now + Duration::from_secs(1));
        } else if roll < 0.4 {
            let index = self.rng.gen_range(0..self.agents.len());
            let health = health(&mut self.rng);
            self.agents[index].session.set_health(health);
        }
    }

    /// An agent leaving a shared socket closes it for everybody on it, as a real
    /// multiplexing peer (one process reporting for several agents) would.
    fn leave_socket(&mut self, _index: usize, socket: ConnectionId) {
        self.close_socket(socket);
    }

    fn close_socket(&mut self, connection: ConnectionId) {
        self.sockets.remove(&connection);
        self.endpoint.close_connection(self.now, connection);
        let reconnect = self.now + Duration::from_secs(self.rng.gen_range(1..5));
        for agent in &mut self.agents {
            if agent.socket == Some(connection) {
                agent.socket = None;
                agent.connected = false;
                agent.session.handle_disconnected(self.now);
                agent.reconnect_at = Some(reconnect);
            }
        }
    }

    /// Another peer copies the uid of an agent held by a WebSocket: refused, nothing
    /// changes.
    fn impostor(&mut self) {
        // Only a uid the endpoint knows to be held by an open WebSocket.
        let held = |agent: &SimAgent| {
            agent.socket.is_some()
                && self.endpoint.connection_of(agent.session.instance_uid()) == agent.socket
        };
        let Some(index) = self.agents.iter().position(held) else {
            return;
        };
        let uid = self.agents[index].session.instance_uid();
        let Some(before) = self.endpoint.session(uid).map(|s| s.agent_state().clone()) else {
            return;
        };
        let connection = self.connection_id();
        self.endpoint.open_connection(
            self.now,
            connection,
            ConnectionParams::new(TransportMode::WebSocket).endpoint_url(URL),
        );
        let forged = v1::AgentToServer {
            instance_uid: uid.to_vec(),
            sequence_num: before.last_sequence_num.unwrap_or(0) + 1,
            health: Some(v1::ComponentHealth {
                status: "forged".into(),
                ..Default::default()
            }),
            agent_disconnect: Some(v1::AgentDisconnect {}),
            ..Default::default()
        };
        let result = self.endpoint.handle(self.now, connection, forged);
        assert!(
            matches!(result, Err(EndpointError::UidInUse { .. })),
            "{result:?}"
        );
        let answers = self.route_transmits(Some(connection));
        assert_eq!(
            answers,
            [uid],
            "the impostor gets exactly one (error) answer"
        );
        assert_eq!(
            self.endpoint.session(uid).map(|s| s.agent_state()),
            Some(&before)
        );
        self.endpoint.close_connection(self.now, connection);
    }

    fn reconnect(&mut self) {
        for index in 0..self.agents.len() {
            let due = self.agents[index]
                .reconnect_at
                .is_some_and(|at| at <= self.now);
            if !due || self.silent(index) {
                continue;
            }
            self.agents[index].reconnect_at = None;
            self.agents[index].connected = true;
            if self.agents[index].mode == TransportMode::WebSocket {
                // Join an open socket (multiplexing) or open a new one.
                let open: Vec<_> = self.sockets.keys().copied().collect();
                let socket = if !open.is_empty() && self.rng.gen_bool(0.6) {
                    open[self.rng.gen_range(0..open.len())]
                } else {
                    let connection = self.connection_id();
                    self.endpoint.open_connection(
                        self.now,
                        connection,
                        ConnectionParams::new(TransportMode::WebSocket).endpoint_url(URL),
                    );
                    self.sockets.insert(connection, VecDeque::new());
                    connection
                };
                self.agents[index].socket = Some(socket);
            }
            self.agents[index].session.handle_connected(self.now);
        }
    }

    fn send(&mut self, index: usize) {
        if self.silent(index) || !self.agents[index].connected {
            return;
        }
        let now = self.now;
        self.agents[index].session.handle_timeout(now);
        while let Some(message) = self.agents[index].session.poll_transmit(now) {
            self.agents[index].last_sent = Some(now);
            match self.agents[index].socket {
                Some(socket) => {
                    if let Some(queue) = self.sockets.get_mut(&socket) {
                        queue.push_back(message);
                    }
                }
                None => self.http_request(index, message),
            }
        }
    }

    fn http_request(&mut self, index: usize, message: v1::AgentToServer) {
        let loss = if self.chaos { 0.1 } else { 0.0 };
        if self.rng.gen_bool(loss) {
            self.agents[index].session.handle_request_failed(self.now);
            return;
        }
        let connection = self.connection_id();
        self.endpoint.open_connection(
            self.now,
            connection,
            ConnectionParams::new(TransportMode::HttpPolling).endpoint_url(URL),
        );
        let uid = uid_of(&message.instance_uid);
        self.deliver(connection, message);
        let mut answers = Vec::new();
        let mut others = Vec::new();
        while let Some((to, answer)) = self.endpoint.poll_transmit() {
            if to == connection {
                answers.push(answer);
            } else {
                others.push((to, answer));
            }
        }
        self.endpoint.close_connection(self.now, connection);
        assert_eq!(answers.len(), 1, "an HTTP request gets exactly one answer");
        let answer = answers.remove(0);
        let answered = uid_of(&answer.instance_uid);
        let known = self
            .endpoint
            .session(uid)
            .and_then(|s| s.agent_state().instance_uid);
        assert!(
            answered == uid || Some(answered) == known,
            "answered for {answered}, asked by {uid}"
        );
        for (to, message) in others {
            self.deliver_to_agent(to, message);
        }
        if self.rng.gen_bool(loss) {
            self.agents[index].session.handle_request_failed(self.now);
        } else {
            let _ = self.agents[index].session.handle_message(answer, self.now);
        }
    }

    /// Delivers what the endpoint sends; returns the uids answered on `watch`.
    fn route_transmits(&mut self, watch: Option<ConnectionId>) -> Vec<InstanceUid> {
        let mut answered = Vec::new();
        while let Some((connection, message)) = self.endpoint.poll_transmit() {
            if Some(connection) == watch {
                answered.push(uid_of(&message.instance_uid));
            }
            self.deliver_to_agent(connection, message);
        }
        answered
    }

    fn deliver_to_agent(&mut self, connection: ConnectionId, message: v1::ServerToAgent) {
        let uid = uid_of(&message.instance_uid);
        let Some(index) = self
            .agents
            .iter()
            .position(|a| a.socket == Some(connection) && a.session.instance_uid() == uid)
        else {
            return; // Its socket closed since, or an error answer to an impostor.
        };
        if !self.silent(index) {
            let _ = self.agents[index].session.handle_message(message, self.now);
        }
    }

    fn check_events(&mut self) {
        let mut to_close = Vec::new();
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                EndpointEvent::Disconnected {
                    uid,
                    reason: DisconnectReason::Idle,
                    ..
                } => {
                    let last_seen = self
                        .endpoint
                        .session(uid)
                        .and_then(|s| s.agent_state().last_seen)
                        .expect("an idle agent was seen");
                    assert!(
                        self.now >= last_seen + self.idle_bound,
                        "{uid} declared idle early"
                    );
                }
                // The transport closes a socket its last agent left idle.
                EndpointEvent::CloseConnection { connection, .. } => to_close.push(connection),
                _ => {}
            }
        }
        for connection in to_close {
            if self.sockets.contains_key(&connection) {
                self.close_socket(connection);
            }
        }
    }

    fn check_idle(&self) {
        for agent in &self.agents {
            let uid = agent.session.instance_uid();
            let Some(session) = self.endpoint.session(uid) else {
                continue;
            };
            let heartbeat_known = session.delivered_heartbeat_interval() == Some(HEARTBEAT);
            let Some(last_seen) = session.agent_state().last_seen else {
                continue;
            };
            if heartbeat_known
                && session.agent_state().connected
                && self.now > last_seen + self.idle_bound
            {
                panic!(
                    "{uid} silent for {:?} and still connected (deadline in {:?}, socket {:?}, mode {:?})",
                    self.now - last_seen,
                    self.endpoint
                        .idle_deadline(uid)
                        .map(|d| d.saturating_duration_since(self.now)),
                    self.endpoint.connection_of(uid),
                    session.config().mode,
                );
            }
        }
    }

    fn heal(&mut self) {
        self.chaos = false;
        for agent in &mut self.agents {
            agent.silent_until = None;
            if !agent.connected && agent.reconnect_at.is_none() {
                agent.reconnect_at = Some(self.now);
            }
        }
    }

    fn assert_converged(&self) {
        for agent in &self.agents {
            let uid = agent.session.instance_uid();
            let session = self
                .endpoint
                .session(uid)
                .unwrap_or_else(|| panic!("agent {uid} unknown to the endpoint"));
            assert_eq!(
                &session.agent_state().status,
                agent.session.status(),
                "agent {uid}"
            );
            assert!(session.agent_state().connected, "agent {uid} connected");
        }
    }
}

fn run(seed: u64, agents: usize, chaos_steps: usize) {
    let mut sim = Sim::new(seed, agents);
    for _ in 0..chaos_steps {
        sim.step();
    }
    sim.heal();
    // Long enough for reconnects and a full report after any gap (a few heartbeats).
    let end = sim.now + Duration::from_secs(120);
    while sim.now < end {
        sim.step();
    }
    sim.assert_converged();
}

/// A seed that once found an agent stuck after two uid assignments in a row.
#[test]
fn reassigned_twice_before_the_agent_answered_converges() {
    run(16958114564437336994, 9, 300);
}

#[test]
fn many_agents_long_run_converges() {
    run(0x5EED_0015, 40, 1500);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn endpoint_invariants_hold_for_any_seed(seed in any::<u64>(), agents in 2usize..12) {
        run(seed, agents, 300);
    }
}
