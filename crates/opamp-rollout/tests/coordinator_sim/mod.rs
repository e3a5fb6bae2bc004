//! A seeded simulation of a whole fleet around the [`Fleet`] coordinator.
//!
//! Simulated agents register, install what they are offered (or fail, or turn unhealthy, or
//! flap, or stop answering), disconnect and come back, leave for good, or join late. Several
//! rollouts run at once on disjoint selectors; an operator pauses, resumes and aborts at random
//! moments; the store refuses writes for a while; the coordinator is restarted from what it
//! persisted. A virtual clock jumps to the next agent action or coordinator deadline. Every
//! invariant is checked as the run goes (a violation panics with the seed's story).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use opamp_proto::{AgentCapabilities, InstanceUid};
use opamp_rollout::fleet::{AgentReport, Fleet, FleetSettings, Operation, Output, PackageReport};
use opamp_rollout::store::{MemoryStore, RolloutStore};
use opamp_rollout::{
    AgentPhase, AgentRecord, AuditAction, LabelSelector, Labels, Rollout, RolloutId, RolloutSpec,
    RolloutState, RolloutStatus, Timestamp,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) const PACKAGE: &str = "otelcol";
pub(crate) const OLD: &str = "1.0.0";
pub(crate) const TARGET: &str = "2.0.0";
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// Nothing may still be running after this much virtual time.
const TIME_LIMIT: u64 = 72 * HOUR;

/// What to throw at the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    pub(crate) seed: u64,
    pub(crate) agents: usize,
    /// Concurrent rollouts, each on its own `group` label value (agents of one more group
    /// are in none).
    pub(crate) rollouts: usize,
    pub(crate) install_failure_rate: f64,
    pub(crate) unhealthy_rate: f64,
    pub(crate) flapping_rate: f64,
    /// Agents that stop answering offers.
    pub(crate) silent_rate: f64,
    /// Agents that disconnect for a while (and come back).
    pub(crate) disconnect_rate: f64,
    /// Agents that disconnect for good.
    pub(crate) leave_rate: f64,
    /// Agents registering after the rollouts started (in group 0).
    pub(crate) late_joiners: usize,
    pub(crate) operator: bool,
    pub(crate) store_failures: bool,
    pub(crate) restarts: usize,
    /// The coordinator's [`FleetSettings::forget_after`].
    pub(crate) forget_after: Duration,
}

impl SimConfig {
    /// Every failure mode on, at rates a budget of 10% per batch mostly absorbs.
    pub(crate) fn chaotic(agents: usize, seed: u64) -> Self {
        SimConfig {
            seed,
            agents,
            rollouts: 3,
            install_failure_rate: 0.01,
            unhealthy_rate: 0.01,
            flapping_rate: 0.01,
            silent_rate: 0.01,
            disconnect_rate: 0.05,
            leave_rate: 0.01,
            late_joiners: agents / 20,
            operator: true,
            store_failures: true,
            restarts: 2,
            forget_after: Duration::from_secs(6 * 3600),
        }
    }

    /// No faults at all.
    pub(crate) fn clean(agents: usize, seed: u64) -> Self {
        SimConfig {
            seed,
            agents,
            rollouts: 3,
            install_failure_rate: 0.0,
            unhealthy_rate: 0.0,
            flapping_rate: 0.0,
            silent_rate: 0.0,
            disconnect_rate: 0.0,
            leave_rate: 0.0,
            late_joiners: 0,
            operator: false,
            store_failures: false,
            restarts: 0,
            forget_after: Duration::from_secs(6 * 3600),
        }
    }

    fn spec(&self, group: usize) -> RolloutSpec {
        let selector: LabelSelector = format!("group={group}").parse().expect("selector");
        RolloutSpec::new(PACKAGE, TARGET, selector, "ops")
            .bake_time(Duration::from_secs(10 * 60))
            .install_timeout(Duration::from_secs(5 * 60))
            .health_timeout(Duration::from_secs(2 * 60))
            .failure_budget(opamp_rollout::FailureBudget::Share(0.1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Good,
    InstallFails,
    TurnsUnhealthy,
    Flapping,
    Silent,
}

#[derive(Debug)]
struct SimAgent {
    uid: InstanceUid,
    labels: Labels,
    behaviour: Behaviour,
    running: String,
    connected: bool,
    /// Left for good: ignores everything.
    gone: bool,
    late: bool,
    registered_at: Option<u64>,
    /// The latest version offered: an install of an older offer is superseded.
    offered: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Join(usize),
    Connect(usize),
    Disconnect {
        agent: usize,
        back_after: Option<u64>,
    },
    Install {
        agent: usize,
        version: String,
    },
    Health {
        agent: usize,
        healthy: bool,
    },
    Operate,
    Resume(usize),
    StoreFails(bool),
    Restart,
}

/// What a run did, for assertions beyond the invariants.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) inputs: u64,
    pub(crate) offers: u64,
    pub(crate) final_statuses: Vec<RolloutStatus>,
    pub(crate) reverted: usize,
    pub(crate) failed: usize,
    pub(crate) caught_up: usize,
    pub(crate) paused: bool,
    pub(crate) aborted_by_operator: bool,
    pub(crate) restarts: usize,
    pub(crate) unsaved_seen: bool,
    pub(crate) forgotten: usize,
    /// Wall time spent inside the coordinator.
    pub(crate) coordinator_time: Duration,
    pub(crate) virtual_time: Duration,
}

struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Action)>>,
    agents: Vec<SimAgent>,
    index: HashMap<InstanceUid, usize>,
    fleet: Fleet,
    store: MemoryStore,
    /// The registry rows as the caller persisted them.
    registry: HashMap<InstanceUid, AgentRecord>,
    rollout_ids: Vec<RolloutId>,
    /// Rollout each planned agent belongs to.
    member_of: HashMap<InstanceUid, usize>,
    /// Rollouts that entered `Aborting` (or ended after it).
    aborted: HashSet<usize>,
    /// When rollout 0 completed (late joiners registered after it are caught up).
    group0_completed_at: Option<u64>,
    stats: Stats,
}

/// Runs a simulation to its end; panics on an invariant violation.
pub(crate) fn run(config: &SimConfig) -> Stats {
    let mut sim = Sim::new(config.clone());
    sim.start();
    sim.run_to_end();
    sim.check_end();
    sim.stats
}

impl Sim {
    /// `SIM_TRACE=<uid prefix>` prints what happens to matching agents (for debugging a seed).
    fn trace(&self, uid: InstanceUid, what: impl FnOnce() -> String) {
        if let Ok(prefix) = std::env::var("SIM_TRACE")
            && uid.to_string().starts_with(&prefix)
        {
            eprintln!("{:>10} {uid} {}", self.now - 1_764_000_000_000, what());
        }
    }

    fn new(config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let groups = config.rollouts + 1;
        let total = config.agents + config.late_joiners;
        let mut agents = Vec::with_capacity(total);
        for i in 0..total {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes[..]);
            bytes[12..].copy_from_slice(&(i as u32).to_be_bytes());
            let late = i >= config.agents;
            let group = if late { 0 } else { i % groups };
            let labels: Labels = [("group".to_owned(), group.to_string())]
                .into_iter()
                .collect();
            let roll: f64 = rng.r#gen();
            let mut edge = 0.0;
            let mut pick = |rate: f64| {
                edge += rate;
                roll < edge
            };
            let behaviour = if pick(config.install_failure_rate) {
                Behaviour::InstallFails
            } else if pick(config.unhealthy_rate) {
                Behaviour::TurnsUnhealthy
            } else if pick(config.flapping_rate) {
                Behaviour::Flapping
            } else if pick(config.silent_rate) {
                Behaviour::Silent
            } else {
                Behaviour::Good
            };
            agents.push(SimAgent {
                uid: InstanceUid::from(bytes),
                labels,
                behaviour,
                running: OLD.to_owned(),
                connected: false,
                gone: false,
                late,
                registered_at: None,
                offered: None,
            });
        }
        let index = agents.iter().enumerate().map(|(i, a)| (a.uid, i)).collect();
        Sim {
            rng,
            now: 1_764_000_000_000,
            seq: 0,
            queue: BinaryHeap::new(),
            agents,
            index,
            fleet: Fleet::new(FleetSettings::default().forget_after(config.forget_after)),
            store: MemoryStore::default(),
            registry: HashMap::new(),
            rollout_ids: Vec::new(),
            member_of: HashMap::new(),
            aborted: HashSet::new(),
            group0_completed_at: None,
            stats: Stats::default(),
            config,
        }
    }

    fn at(&self) -> Timestamp {
        Timestamp::from_millis(self.now)
    }

    fn schedule(&mut self, after: u64, action: Action) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + after, self.seq, action)));
    }

    /// Registers the initial fleet, plans and starts the rollouts, and schedules the chaos.
    fn start(&mut self) {
        for i in 0..self.config.agents {
            self.connect(i);
        }
        self.drain();
        let start = self.now;
        for group in 0..self.config.rollouts {
            let id = RolloutId::new(format!("r{group}"));
            let spec = self.config.spec(group);
            let rollout = self
                .timed(|sim| sim.fleet.plan_packages(id.clone(), spec, sim.at()))
                .expect("plan");
            for agent in rollout.agents() {
                assert!(
                    self.agents[self.index[&agent.uid]].labels["group"] == group.to_string(),
                    "planned an agent outside the selector"
                );
                assert!(
                    self.member_of.insert(agent.uid, group).is_none(),
                    "an agent is in two rollouts of one package"
                );
            }
            self.timed(|sim| sim.fleet.start(rollout, "ops", sim.at(), &mut sim.store))
                .expect("start");
            self.rollout_ids.push(id);
            self.drain();
        }
        for i in 0..self.config.agents {
            if self.rng.gen_bool(self.config.leave_rate) {
                let when = self.rng.gen_range(0..4 * HOUR);
                self.schedule(
                    when,
                    Action::Disconnect {
                        agent: i,
                        back_after: None,
                    },
                );
            } else if self.rng.gen_bool(self.config.disconnect_rate) {
                let when = self.rng.gen_range(0..4 * HOUR);
                let back = self.rng.gen_range(MINUTE..30 * MINUTE);
                self.schedule(
                    when,
                    Action::Disconnect {
                        agent: i,
                        back_after: Some(back),
                    },
                );
            }
        }
        for i in self.config.agents..self.agents.len() {
            let when = self.rng.gen_range(0..6 * HOUR);
            self.schedule(when, Action::Join(i));
        }
        if self.config.operator {
            for _ in 0..self.rng.gen_range(1..6) {
                let when = self.rng.gen_range(0..3 * HOUR);
                self.schedule(when, Action::Operate);
            }
        }
        if self.config.store_failures {
            for _ in 0..self.rng.gen_range(1..4) {
                let when = self.rng.gen_range(0..3 * HOUR);
                self.schedule(when, Action::StoreFails(true));
            }
        }
        for _ in 0..self.config.restarts {
            let when = self.rng.gen_range(0..4 * HOUR);
            self.schedule(when, Action::Restart);
        }
        assert_eq!(self.now, start);
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let result = f(self);
        self.stats.coordinator_time += started.elapsed();
        self.stats.inputs += 1;
        result
    }

    fn all_terminal(&self) -> bool {
        self.rollout_ids
            .iter()
            .all(|id| self.fleet.rollout(id).is_none())
    }

    fn run_to_end(&mut self) {
        let start = self.now;
        loop {
            let next_action = self.queue.peek().map(|Reverse((at, _, _))| *at);
            // Once every rollout ended, only the queued agent actions still matter.
            let deadline = if self.all_terminal() {
                None
            } else {
                self.fleet.poll_timeout().map(|t| t.as_millis())
            };
            let take_deadline = match (deadline, next_action) {
                (None, None) => break,
                (Some(d), Some(a)) => d <= a,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_deadline {
                let deadline = deadline.unwrap_or(self.now);
                self.now = self.now.max(deadline);
                self.timed(|sim| sim.fleet.handle_timeout(sim.at(), &mut sim.store));
            } else if let Some(Reverse((at, _, action))) = self.queue.pop() {
                self.now = self.now.max(at);
                self.act(action);
            }
            self.drain();
            assert!(
                self.now - start <= TIME_LIMIT,
                "seed {}: still running after {TIME_LIMIT} ms of virtual time: {:?}",
                self.config.seed,
                self.fleet
                    .rollouts()
                    .map(|r| r.status())
                    .collect::<Vec<_>>()
            );
        }
        self.stats.virtual_time = Duration::from_millis(self.now - start);
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Join(i) => {
                self.connect(i);
            }
            Action::Connect(i) => {
                if !self.agents[i].gone {
                    self.connect(i);
                }
            }
            Action::Disconnect { agent, back_after } => {
                if !self.agents[agent].connected {
                    return;
                }
                self.agents[agent].connected = false;
                let uid = self.agents[agent].uid;
                self.trace(uid, || format!("disconnects, back after {back_after:?}"));
                self.timed(|sim| sim.fleet.disconnected(uid, sim.at(), &mut sim.store));
                match back_after {
                    Some(after) => self.schedule(after, Action::Connect(agent)),
                    None => self.agents[agent].gone = true,
                }
            }
            Action::Install { agent, version } => self.install(agent, version),
            Action::Health { agent, healthy } => {
                if self.agents[agent].connected {
                    let uid = self.agents[agent].uid;
                    self.report(uid, AgentReport::Health(healthy));
                }
            }
            Action::Operate => self.operate(),
            Action::Resume(r) => {
                let id = self.rollout_ids[r].clone();
                let _ = self.timed(|sim| {
                    sim.fleet
                        .operate(&id, Operation::Resume, "ops", sim.at(), &mut sim.store)
                });
                // A resume the store refused is tried again: a pause must not last for ever.
                if self
                    .fleet
                    .rollout(&id)
                    .is_some_and(|r| r.status() == RolloutStatus::Paused)
                {
                    self.schedule(MINUTE, Action::Resume(r));
                }
            }
            Action::StoreFails(failing) => {
                self.store.fail_writes(failing);
                if failing {
                    let back = self.rng.gen_range(MINUTE..10 * MINUTE);
                    self.schedule(back, Action::StoreFails(false));
                }
            }
            Action::Restart => {
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!("{:>10} restart", self.now - 1_764_000_000_000);
                }
                self.restart();
            }
        }
    }

    fn report(&mut self, uid: InstanceUid, report: AgentReport) {
        self.trace(uid, || format!("reports {report:?}"));
        self.timed(|sim| sim.fleet.report(uid, report, sim.at(), &mut sim.store));
    }

    /// An agent (re)connects and reports its whole status, as OpAMP agents do.
    fn connect(&mut self, i: usize) {
        let uid = self.agents[i].uid;
        self.trace(uid, || "connects".to_owned());
        self.agents[i].connected = true;
        self.agents[i].registered_at.get_or_insert(self.now);
        self.timed(|sim| sim.fleet.connected(uid, sim.at(), &mut sim.store));
        let capabilities = (AgentCapabilities::ACCEPTS_PACKAGES
            | AgentCapabilities::REPORTS_HEALTH
            | AgentCapabilities::REPORTS_PACKAGE_STATUSES)
            .bits();
        self.report(uid, AgentReport::Capabilities(capabilities));
        self.report(uid, AgentReport::Labels(self.agents[i].labels.clone()));
        let running = vec![(
            PACKAGE.to_owned(),
            PackageReport::Installed(self.agents[i].running.clone()),
        )];
        self.report(uid, AgentReport::Packages(running));
    }

    fn install(&mut self, i: usize, version: String) {
        let agent = &self.agents[i];
        if !agent.connected || agent.behaviour == Behaviour::Silent {
            return; // The offer comes again when it reconnects.
        }
        if agent.offered.as_deref() != Some(version.as_str()) {
            return; // A later offer replaced this one, as a supervisor's would.
        }
        let uid = agent.uid;
        let behaviour = agent.behaviour;
        if behaviour == Behaviour::InstallFails && version == TARGET {
            let failed = vec![(PACKAGE.to_owned(), PackageReport::Failed("boom".into()))];
            self.report(uid, AgentReport::Packages(failed));
            return;
        }
        self.agents[i].running = version.clone();
        let installed = vec![(
            PACKAGE.to_owned(),
            PackageReport::Installed(version.clone()),
        )];
        let to_target = version == TARGET;
        match behaviour {
            Behaviour::TurnsUnhealthy if to_target => {
                self.report(uid, AgentReport::Health(false));
                self.report(uid, AgentReport::Packages(installed));
            }
            Behaviour::Flapping if to_target => {
                self.report(uid, AgentReport::Health(true));
                self.report(uid, AgentReport::Packages(installed));
                let after = self.rng.gen_range(SECOND..5 * MINUTE);
                self.schedule(
                    after,
                    Action::Health {
                        agent: i,
                        healthy: false,
                    },
                );
                let back = after + self.rng.gen_range(SECOND..MINUTE);
                self.schedule(
                    back,
                    Action::Health {
                        agent: i,
                        healthy: true,
                    },
                );
            }
            _ => {
                self.report(uid, AgentReport::Health(true));
                self.report(uid, AgentReport::Packages(installed));
            }
        }
    }

    fn operate(&mut self) {
        let active: Vec<usize> = (0..self.rollout_ids.len())
            .filter(|r| self.fleet.rollout(&self.rollout_ids[*r]).is_some())
            .collect();
        if active.is_empty() {
            return;
        }
        let r = active[self.rng.gen_range(0..active.len())];
        let id = self.rollout_ids[r].clone();
        let roll: f64 = self.rng.r#gen();
        let operation = if roll < 0.6 {
            Operation::Pause
        } else if roll < 0.8 {
            Operation::Resume
        } else {
            Operation::Abort {
                reason: "operator".into(),
            }
        };
        let is_pause = operation == Operation::Pause;
        let is_abort = matches!(operation, Operation::Abort { .. });
        let result = self.timed(|sim| {
            sim.fleet
                .operate(&id, operation, "ops", sim.at(), &mut sim.store)
        });
        match result {
            Ok(()) if is_pause => {
                self.stats.paused = true;
                let after = self.rng.gen_range(MINUTE..30 * MINUTE);
                self.schedule(after, Action::Resume(r));
            }
            Ok(()) if is_abort => self.stats.aborted_by_operator = true,
            Ok(()) => {}
            Err(opamp_rollout::RolloutError::Unsaved { .. }) => self.stats.unsaved_seen = true,
            Err(_) => {}
        }
    }

    /// The coordinator process dies and a new one is built from what was persisted. No
    /// decision may be lost: every active rollout comes back exactly as it was.
    fn restart(&mut self) {
        if self.store.rollout_ids().count() == 0 {
            return;
        }
        self.stats.restarts += 1;
        let before: BTreeMap<RolloutId, Rollout> = self
            .fleet
            .rollouts()
            .map(|r| (r.id().clone(), r.clone()))
            .collect();
        let settings = FleetSettings::default().forget_after(self.config.forget_after);
        let started = Instant::now();
        let recovered = Fleet::recover(
            &self.store,
            self.registry.values().cloned(),
            std::iter::empty(),
            settings,
            self.at(),
        )
        .expect("recover");
        self.stats.coordinator_time += started.elapsed();
        let after: BTreeMap<RolloutId, Rollout> = recovered
            .rollouts()
            .map(|r| (r.id().clone(), r.clone()))
            .collect();
        assert!(
            before == after,
            "seed {}: a restart changed the active rollouts",
            self.config.seed
        );
        self.fleet = recovered;
        // Every connection dropped with the process; agents reconnect within a minute.
        for i in 0..self.agents.len() {
            if self.agents[i].connected {
                self.agents[i].connected = false;
                let after = self.rng.gen_range(SECOND..MINUTE);
                self.schedule(after, Action::Connect(i));
            }
        }
    }

    /// Carries out the coordinator's outputs and checks each against the invariants.
    fn drain(&mut self) {
        while let Some(output) = self.fleet.poll_output() {
            match output {
                Output::OfferPackages { uid, versions } => self.offered(uid, &versions),
                Output::RolloutStepped(step) => {
                    let r = self
                        .rollout_ids
                        .iter()
                        .position(|id| *id == step.rollout)
                        .expect("a step of a rollout the sim started");
                    if matches!(
                        step.status,
                        RolloutStatus::Aborting | RolloutStatus::RolledBack
                    ) {
                        self.aborted.insert(r);
                    }
                    if r == 0 && step.status == RolloutStatus::Completed {
                        self.group0_completed_at.get_or_insert(self.now);
                    }
                }
                Output::Forgotten(uids) => {
                    self.stats.forgotten += uids.len();
                    for uid in uids {
                        let i = self.index[&uid];
                        assert!(!self.agents[i].connected, "forgot a connected agent");
                        assert!(
                            self.member_of.get(&uid).is_none_or(|r| self
                                .fleet
                                .rollout(&self.rollout_ids[*r])
                                .is_none()),
                            "forgot a member of an active rollout"
                        );
                        self.registry.remove(&uid);
                    }
                }
                Output::OfferConfig { .. } => panic!("no config rollout was started"),
                _ => {}
            }
        }
        let seen = self.fleet.take_seen_agents();
        for uid in seen.into_iter().chain(self.fleet.take_changed_agents()) {
            if let Some(record) = self.fleet.agent(&uid) {
                self.registry.insert(uid, record.clone());
            }
        }
    }

    fn offered(&mut self, uid: InstanceUid, versions: &BTreeMap<String, String>) {
        self.trace(uid, || format!("offered {versions:?}"));
        self.stats.offers += 1;
        let Some(version) = versions.get(PACKAGE) else {
            panic!("an offer without the rolled-out package");
        };
        let i = self.index[&uid];
        if let Some(&r) = self.member_of.get(&uid) {
            let id = &self.rollout_ids[r];
            if version == TARGET {
                assert!(
                    !self.aborted.contains(&r),
                    "seed {}: aborted rollout {id} offered the target again to {uid}",
                    self.config.seed
                );
                if let Some(rollout) = self.fleet.rollout(id) {
                    let agent = rollout.agent(&uid).expect("member");
                    if let Some(wave) = current_wave(rollout.state()) {
                        assert!(
                            agent.wave <= wave,
                            "seed {}: {uid} of wave {} offered while wave {wave} runs",
                            self.config.seed,
                            agent.wave
                        );
                    }
                }
            }
        } else if version == TARGET {
            // Not planned by any rollout: only a catch-up after rollout 0 completed.
            assert!(
                self.agents[i].late && self.group0_completed_at.is_some(),
                "seed {}: {uid} outside every rollout was offered the target",
                self.config.seed
            );
            self.stats.caught_up += 1;
        }
        self.agents[i].offered = Some(version.clone());
        if self.agents[i].connected {
            let after = self.rng.gen_range(SECOND..90 * SECOND);
            self.schedule(
                after,
                Action::Install {
                    agent: i,
                    version: version.clone(),
                },
            );
        }
    }

    /// At the end: every rollout ended, every agent moved is on the target and healthy or
    /// reverted, failures are in the audit log, and agents still answering run what their
    /// rollout wants.
    fn check_end(&mut self) {
        let seed = self.config.seed;
        let failed_in_audit: HashSet<(RolloutId, InstanceUid)> = self
            .store
            .audit()
            .iter()
            .filter_map(|record| match &record.action {
                AuditAction::AgentFailed { uid, .. } => Some((record.rollout_id.clone(), *uid)),
                _ => None,
            })
            .collect();
        for id in self.rollout_ids.clone() {
            assert!(
                self.fleet.rollout(&id).is_none(),
                "seed {seed}: {id} still active"
            );
            let rollout = self
                .store
                .load_rollout(&id)
                .expect("memory store")
                .expect("stored");
            assert!(
                rollout.is_terminal(),
                "seed {seed}: {id} is {}",
                rollout.status()
            );
            self.stats.final_statuses.push(rollout.status());
            for agent in rollout.agents() {
                if agent.reverted {
                    self.stats.reverted += 1;
                }
                if let AgentPhase::Failed { .. } = agent.phase {
                    self.stats.failed += 1;
                    assert!(
                        failed_in_audit.contains(&(id.clone(), agent.uid)),
                        "seed {seed}: {} failed in {id} without an audit record",
                        agent.uid
                    );
                }
                if !agent.was_offered() {
                    continue;
                }
                let healthy_on_target = matches!(agent.phase, AgentPhase::Healthy { .. })
                    && rollout.status() == RolloutStatus::Completed;
                assert!(
                    healthy_on_target || agent.reverted,
                    "seed {seed}: {} moved by {id} ({}) is neither healthy on the target nor \
                     reverted: {:?}",
                    agent.uid,
                    rollout.status(),
                    agent.phase
                );
                let sim = &self.agents[self.index[&agent.uid]];
                let answering = sim.connected && sim.behaviour != Behaviour::Silent;
                let wanted = rollout.desired_version(&agent.uid).unwrap_or(OLD);
                if answering {
                    assert_eq!(
                        sim.running, wanted,
                        "seed {seed}: {} runs {} but {id} wants {wanted}",
                        agent.uid, sim.running
                    );
                }
            }
        }
        // Late joiners of group 0 that registered after its rollout completed were brought
        // to the target.
        if let Some(completed) = self.group0_completed_at {
            for agent in self.agents.iter().filter(|a| a.late) {
                let after = agent.registered_at.is_some_and(|at| at > completed);
                if after && agent.connected && agent.behaviour == Behaviour::Good {
                    assert_eq!(
                        agent.running, TARGET,
                        "seed {seed}: late joiner {} was not caught up",
                        agent.uid
                    );
                }
            }
        }
    }
}

/// The wave a rollout may offer the target in now (`None`: none; aborting or ended).
fn current_wave(state: &RolloutState) -> Option<u32> {
    match state {
        RolloutState::Planned => None,
        RolloutState::Canary => Some(0),
        RolloutState::Batch { wave } | RolloutState::Baking { wave, .. } => Some(*wave),
        RolloutState::Paused { resume_to, .. } => current_wave(resume_to),
        _ => None,
    }
}
