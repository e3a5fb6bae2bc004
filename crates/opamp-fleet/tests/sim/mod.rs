//! A seeded simulated fleet that drives one rollout and checks the engine's invariants.

#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use opamp_fleet::store::{RolloutStore, SqliteOptions, SqliteStore, Synchronous};
use opamp_fleet::{
    AuditAction, BatchPlan, Command, Event, FailureBudget, LabelSelector, Labels, Rollout,
    RolloutId, RolloutSpec, RolloutStatus, Timestamp,
};
use opamp_proto::InstanceUid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const OLD: &str = "0.114.0";
pub const NEW: &str = "0.115.0";
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;

/// What the fleet does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub agents: u32,
    pub seed: u64,
    /// Share of agents whose install fails.
    pub install_failure_rate: f64,
    /// Share of agents that turn unhealthy a while after installing.
    pub unhealthy_rate: f64,
    /// Share of agents that disconnect at a random time and never return.
    pub vanish_rate: f64,
    /// Share of agents that install only after their install timeout.
    pub slow_rate: f64,
    /// Every canary turns unhealthy.
    pub unhealthy_canaries: bool,
    /// Faults never hit canaries (to exercise batch budgets).
    pub protect_canaries: bool,
    /// Operators pause, resume and abort at random times.
    pub operator: bool,
}

impl SimConfig {
    pub fn clean(agents: u32, seed: u64) -> Self {
        SimConfig {
            agents,
            seed,
            install_failure_rate: 0.0,
            unhealthy_rate: 0.0,
            vanish_rate: 0.0,
            slow_rate: 0.0,
            unhealthy_canaries: false,
            protect_canaries: false,
            operator: false,
        }
    }

    /// Fault rates and operator behaviour drawn from the seed, from clean to harsh.
    pub fn chaotic(agents: u32, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let rates = [0.0, 0.0002, 0.001, 0.005, 0.02];
        let pick = |rng: &mut ChaCha8Rng| rates[rng.gen_range(0..rates.len())];
        SimConfig {
            agents,
            seed,
            install_failure_rate: pick(&mut rng),
            unhealthy_rate: pick(&mut rng),
            vanish_rate: pick(&mut rng),
            slow_rate: pick(&mut rng),
            unhealthy_canaries: rng.gen_bool(0.1),
            protect_canaries: rng.gen_bool(0.5),
            operator: rng.gen_bool(0.5),
        }
    }

    pub fn spec(&self) -> RolloutSpec {
        RolloutSpec::new("otelcol-contrib", NEW, self.selector(), "sim")
            .canary_share(0.05)
            .batches(BatchPlan::Share(0.2))
            .bake_time(Duration::from_secs(15 * 60))
            .install_timeout(Duration::from_secs(10 * 60))
            .health_timeout(Duration::from_secs(5 * 60))
            .failure_budget(FailureBudget::Share(0.02))
    }

    /// The clean configurations (performance, fixed scenarios) select everyone; chaotic ones
    /// select part of the fleet so that "outside the selector" is tested.
    fn selector(&self) -> LabelSelector {
        if self.is_clean_selection() {
            LabelSelector::all()
        } else {
            "env in (prod,staging)".parse().expect("valid selector")
        }
    }

    fn is_clean_selection(&self) -> bool {
        self.install_failure_rate == 0.0
            && self.unhealthy_rate == 0.0
            && self.vanish_rate == 0.0
            && self.slow_rate == 0.0
            && !self.operator
            && !self.unhealthy_canaries
    }
}

/// Where to interrupt the run with a save and reload.
#[derive(Debug, Clone, Copy)]
pub enum Restart {
    None,
    /// Serialise to JSON and back after this many engine steps.
    Json {
        at_step: usize,
    },
    /// Persist every step in a SQLite store in a temporary directory; after this many steps
    /// leak the connection (a crash) and continue from what reopening the file loads.
    Store {
        at_step: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Good,
    InstallFails,
    TurnsUnhealthy,
    Slow,
}

#[derive(Debug)]
struct SimAgent {
    uid: InstanceUid,
    labels: Labels,
    behaviour: Behaviour,
    /// When it disconnects for good.
    vanish_at: Option<Timestamp>,
    /// The version it runs.
    running: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Install { agent: u32, version: String },
    InstallFail { agent: u32 },
    Health { agent: u32, healthy: bool },
    Vanish { agent: u32 },
    Pause,
    Resume,
    Abort,
}

/// What happened, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub participants: usize,
    pub offered: usize,
    pub reverted: usize,
    pub failed: usize,
    pub aborted: bool,
    pub operator_abort: bool,
    pub paused: bool,
    pub max_wave_offered: u32,
}

pub struct Outcome {
    pub final_status: RolloutStatus,
    pub final_rollout: Rollout,
    /// Every command with the time it was emitted.
    pub commands: Vec<(Timestamp, Command)>,
    pub steps: usize,
    pub engine_time: Duration,
    pub plan_time: Duration,
    pub virtual_time: Duration,
    pub stats: Stats,
}

/// Runs one rollout to its end, checking invariants as it goes (panics on a violation).
pub fn run(config: &SimConfig, restart: Restart) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let spec = config.spec();
    let start = Timestamp::from_millis(1_764_000_000_000);
    let envs = ["prod", "staging", "dev"];
    let mut agents: Vec<SimAgent> = (0..config.agents)
        .map(|i| {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes[..]);
            bytes[12..].copy_from_slice(&i.to_be_bytes()); // unique whatever the rng says
            let labels: Labels = [
                (
                    "env".to_owned(),
                    envs[rng.gen_range(0..envs.len())].to_owned(),
                ),
                ("region".to_owned(), format!("r{}", rng.gen_range(0..4))),
            ]
            .into_iter()
            .collect();
            let roll: f64 = rng.r#gen();
            let behaviour = if roll < config.install_failure_rate {
                Behaviour::InstallFails
            } else if roll < config.install_failure_rate + config.unhealthy_rate {
                Behaviour::TurnsUnhealthy
            } else if roll < config.install_failure_rate + config.unhealthy_rate + config.slow_rate
            {
                Behaviour::Slow
            } else {
                Behaviour::Good
            };
            let vanish_at = rng.gen_bool(config.vanish_rate).then(|| {
                Timestamp::from_millis(start.as_millis() + rng.gen_range(0..150 * MINUTE))
            });
            SimAgent {
                uid: InstanceUid::from(bytes),
                labels,
                behaviour,
                vanish_at,
                running: OLD.to_owned(),
            }
        })
        .collect();
    let index_of: HashMap<InstanceUid, u32> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.uid, i as u32))
        .collect();
    let snapshot: Vec<_> = agents
        .iter()
        .map(|a| opamp_fleet::AgentSnapshot::new(a.uid, a.labels.clone(), Some(a.running.clone())))
        .collect();

    let plan_started = Instant::now();
    let mut rollout = Rollout::plan(
        RolloutId::new(format!("sim-{}", config.seed)),
        spec.clone(),
        &snapshot,
        start,
    )
    .expect("plan");
    let plan_time = plan_started.elapsed();

    // Independent view of who may be touched, computed from the sim's own labels.
    let selected: HashSet<InstanceUid> = agents
        .iter()
        // Written out by hand rather than with `LabelSelector::matches`, so a selector bug
        // cannot hide itself.
        .filter(|a| config.is_clean_selection() || &a.labels["env"] != "dev")
        .map(|a| a.uid)
        .collect();
    let wave_of: HashMap<InstanceUid, u32> =
        rollout.agents().iter().map(|a| (a.uid, a.wave)).collect();
    let wave_count = rollout.waves().len() as u32;
    let mut wave_members: Vec<Vec<InstanceUid>> = vec![Vec::new(); wave_count as usize];
    for (uid, wave) in &wave_of {
        wave_members[*wave as usize].push(*uid);
    }
    assert!(
        wave_of.keys().all(|u| selected.contains(u)),
        "planned an agent outside the selector"
    );

    // Fault placement that depends on the plan.
    for agent in &mut agents {
        let canary = wave_of.get(&agent.uid) == Some(&0);
        if canary && config.protect_canaries {
            agent.behaviour = Behaviour::Good;
            agent.vanish_at = None;
        }
        if canary && config.unhealthy_canaries {
            agent.behaviour = Behaviour::TurnsUnhealthy;
        }
    }

    let mut queue: BinaryHeap<Reverse<(Timestamp, u64, Action)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |queue: &mut BinaryHeap<Reverse<(Timestamp, u64, Action)>>,
                        at: Timestamp,
                        action: Action| {
        seq += 1;
        queue.push(Reverse((at, seq, action)));
    };
    for (i, agent) in agents.iter().enumerate() {
        if let Some(at) = agent.vanish_at {
            schedule(&mut queue, at, Action::Vanish { agent: i as u32 });
        }
    }
    if config.operator {
        let pause_at = start.as_millis() + rng.gen_range(0..120 * MINUTE);
        schedule(&mut queue, Timestamp::from_millis(pause_at), Action::Pause);
        let resume_at = pause_at + rng.gen_range(0..60 * MINUTE);
        schedule(
            &mut queue,
            Timestamp::from_millis(resume_at),
            Action::Resume,
        );
        if rng.gen_bool(0.5) {
            let abort_at = start.as_millis() + rng.gen_range(0..180 * MINUTE);
            schedule(&mut queue, Timestamp::from_millis(abort_at), Action::Abort);
        }
    }

    // Observations for the invariants.
    let mut check = Checker::new(selected, wave_of.clone(), wave_members, spec.bake_time);
    let mut commands_log: Vec<(Timestamp, Command)> = Vec::new();
    let mut engine_time = Duration::ZERO;
    let mut steps = 0usize;
    let mut now = start;
    let step_limit = 20 * config.agents as usize + 10_000;

    let store_dir = tempfile::tempdir().expect("tempdir");
    let store_path = store_dir.path().join("fleet.db");
    let open_store = || {
        let options = SqliteOptions::default().synchronous(Synchronous::Normal);
        SqliteStore::open_with(&store_path, options).expect("open store")
    };
    let mut store = matches!(restart, Restart::Store { .. }).then(open_store);
    if let Some(store) = &mut store {
        store.create_rollout(&rollout).expect("create rollout");
    }

    let mut pending_events: Vec<Event> = vec![Event::Start { by: "sim".into() }];
    loop {
        match restart {
            Restart::Json { at_step } if steps == at_step => {
                let json = serde_json::to_string(&rollout).expect("serialise");
                rollout = serde_json::from_str(&json).expect("deserialise");
            }
            Restart::Store { at_step } if steps == at_step => {
                std::mem::forget(store.take());
                let reopened = open_store();
                let loaded = reopened
                    .load_rollout(rollout.id())
                    .expect("load")
                    .expect("stored");
                assert!(
                    loaded == rollout,
                    "reloaded rollout differs from the one in memory"
                );
                rollout = loaded;
                store = Some(reopened);
            }
            _ => {}
        }
        let event = if let Some(event) = pending_events.pop() {
            event
        } else {
            let next_action = queue.peek().map(|Reverse((at, _, _))| *at);
            let deadline = rollout.poll_timeout();
            match (next_action, deadline) {
                (None, None) => break,
                (Some(at), Some(d)) if d < at => {
                    now = d;
                    Event::Timeout
                }
                (None, Some(d)) => {
                    now = d;
                    Event::Timeout
                }
                (Some(_), _) => {
                    let Reverse((at, _, action)) = queue.pop().expect("peeked");
                    now = at;
                    match sim_event(&mut agents, action, now, &spec, &mut check) {
                        Some(event) => event,
                        None => continue,
                    }
                }
            }
        };
        steps += 1;
        assert!(steps < step_limit, "simulation does not terminate");
        let status_before = rollout.status();
        let is_resume = matches!(event, Event::Resume { .. });
        let operator_kind = match &event {
            Event::Pause { .. } => Some("pause"),
            Event::Abort { .. } => Some("abort"),
            _ => None,
        };
        let started = Instant::now();
        let logged_event = event.clone();
        let result = rollout.handle(event, now);
        engine_time += started.elapsed();
        let commands = match result {
            Ok(commands) => commands,
            Err(_) => continue, // an operator action that does not apply now
        };
        if let Some(store) = &mut store {
            store
                .record_step(&rollout, &logged_event, now, &commands)
                .expect("record step");
        }
        match operator_kind {
            Some("pause") if rollout.status() == RolloutStatus::Paused => check.stats.paused = true,
            Some("abort") => check.stats.operator_abort = true,
            _ => {}
        }
        for command in commands {
            check.observe(&command, now, status_before, is_resume);
            match &command {
                Command::Offer { uid, version } => {
                    let i = index_of[uid];
                    let delay = rng.gen_range(10 * SECOND..120 * SECOND);
                    let agent = &agents[i as usize];
                    let (at, action) = match agent.behaviour {
                        Behaviour::InstallFails => (delay, Action::InstallFail { agent: i }),
                        Behaviour::Slow => (
                            spec.install_timeout.as_millis() as u64 + delay,
                            Action::Install {
                                agent: i,
                                version: version.clone(),
                            },
                        ),
                        _ => (
                            delay,
                            Action::Install {
                                agent: i,
                                version: version.clone(),
                            },
                        ),
                    };
                    schedule(
                        &mut queue,
                        Timestamp::from_millis(now.as_millis() + at),
                        action,
                    );
                }
                Command::Revert { uid, to_version } => {
                    let i = index_of[uid];
                    let at = now.as_millis() + rng.gen_range(5 * SECOND..60 * SECOND);
                    schedule(
                        &mut queue,
                        Timestamp::from_millis(at),
                        Action::Install {
                            agent: i,
                            version: to_version.clone(),
                        },
                    );
                }
                _ => {}
            }
            commands_log.push((now, command));
        }
        // Agents react to what they installed (health reports follow installs).
        for (at, action) in check.take_followups(&agents, &mut rng) {
            schedule(&mut queue, at, action);
        }
        if rollout.is_terminal() && queue.is_empty() {
            break;
        }
    }
    check.finish(&rollout);
    Outcome {
        final_status: rollout.status(),
        stats: check.stats.clone(),
        final_rollout: rollout,
        commands: commands_log,
        steps,
        engine_time,
        plan_time,
        virtual_time: now.saturating_since(start),
    }
}

/// Turns a due simulated action into the event the server would feed the engine.
fn sim_event(
    agents: &mut [SimAgent],
    action: Action,
    now: Timestamp,
    spec: &RolloutSpec,
    check: &mut Checker,
) -> Option<Event> {
    let gone = |agent: &SimAgent| agent.vanish_at.is_some_and(|t| t <= now);
    match action {
        Action::Pause => Some(Event::Pause { by: "op".into() }),
        Action::Resume => Some(Event::Resume { by: "op".into() }),
        Action::Abort => Some(Event::Abort {
            by: "op".into(),
            reason: "operator".into(),
        }),
        Action::Vanish { agent } => Some(Event::AgentDisconnected {
            uid: agents[agent as usize].uid,
        }),
        Action::Install { agent, version } => {
            let a = &mut agents[agent as usize];
            if gone(a) {
                return None;
            }
            a.running = version.clone();
            if version == spec.target_version && a.behaviour != Behaviour::InstallFails {
                check.followups.push((now, agent));
            }
            Some(Event::AgentInstalled {
                uid: a.uid,
                version,
                healthy: None,
            })
        }
        Action::InstallFail { agent } => {
            let a = &agents[agent as usize];
            (!gone(a)).then(|| Event::AgentInstallFailed {
                uid: a.uid,
                error: "exit status 1".into(),
            })
        }
        Action::Health { agent, healthy } => {
            let a = &agents[agent as usize];
            if gone(a) || (a.running != spec.target_version) {
                return None;
            }
            if healthy {
                check.healthy_at.entry(a.uid).or_insert(now);
            }
            Some(Event::AgentHealth {
                uid: a.uid,
                healthy,
            })
        }
    }
}

/// Collects observations and asserts the invariants.
struct Checker {
    selected: HashSet<InstanceUid>,
    wave_of: HashMap<InstanceUid, u32>,
    wave_members: Vec<Vec<InstanceUid>>,
    bake_time: Duration,
    offered_at: HashMap<InstanceUid, Timestamp>,
    reverted: HashSet<InstanceUid>,
    failed_at: HashMap<InstanceUid, Timestamp>,
    healthy_at: HashMap<InstanceUid, Timestamp>,
    waves_started: HashSet<u32>,
    earliest_canary_failure: Option<Timestamp>,
    /// Agents that just installed the target: (when, agent index).
    followups: Vec<(Timestamp, u32)>,
    stats: Stats,
}

impl Checker {
    fn new(
        selected: HashSet<InstanceUid>,
        wave_of: HashMap<InstanceUid, u32>,
        wave_members: Vec<Vec<InstanceUid>>,
        bake_time: Duration,
    ) -> Self {
        let participants = wave_of.len();
        Checker {
            selected,
            wave_of,
            wave_members,
            bake_time,
            offered_at: HashMap::new(),
            reverted: HashSet::new(),
            failed_at: HashMap::new(),
            healthy_at: HashMap::new(),
            waves_started: HashSet::new(),
            earliest_canary_failure: None,
            followups: Vec::new(),
            stats: Stats {
                participants,
                ..Stats::default()
            },
        }
    }

    fn take_followups(
        &mut self,
        agents: &[SimAgent],
        rng: &mut ChaCha8Rng,
    ) -> Vec<(Timestamp, Action)> {
        let mut out = Vec::new();
        for (at, agent) in self.followups.drain(..) {
            let healthy_at = at.as_millis() + rng.gen_range(SECOND..30 * SECOND);
            out.push((
                Timestamp::from_millis(healthy_at),
                Action::Health {
                    agent,
                    healthy: true,
                },
            ));
            if agents[agent as usize].behaviour == Behaviour::TurnsUnhealthy {
                let sick_at = healthy_at + rng.gen_range(MINUTE..20 * MINUTE);
                out.push((
                    Timestamp::from_millis(sick_at),
                    Action::Health {
                        agent,
                        healthy: false,
                    },
                ));
            }
        }
        out
    }

    fn observe(
        &mut self,
        command: &Command,
        now: Timestamp,
        status_before: RolloutStatus,
        is_resume: bool,
    ) {
        match command {
            Command::Offer { uid, version } => {
                assert!(
                    self.selected.contains(uid),
                    "offer to {uid}, outside the selector"
                );
                assert_eq!(version, NEW);
                assert!(
                    status_before != RolloutStatus::Paused || is_resume,
                    "offer to {uid} while paused"
                );
                assert!(
                    self.offered_at.insert(*uid, now).is_none(),
                    "{uid} offered twice"
                );
                self.stats.offered += 1;
                let wave = self.wave_of[uid];
                self.stats.max_wave_offered = self.stats.max_wave_offered.max(wave);
                if wave > 0 {
                    if let Some(failure) = self.earliest_canary_failure {
                        panic!(
                            "batch agent {uid} offered at {now} after a canary failed at {failure}"
                        );
                    }
                    if self.waves_started.insert(wave) {
                        self.check_previous_wave_baked(wave, now);
                    }
                }
            }
            Command::Revert { uid, to_version } => {
                assert!(
                    self.selected.contains(uid),
                    "revert of {uid}, outside the selector"
                );
                assert!(
                    self.offered_at.contains_key(uid),
                    "revert of {uid}, which was never offered"
                );
                assert_eq!(to_version, OLD);
                if self.reverted.insert(*uid) {
                    self.stats.reverted += 1;
                }
            }
            Command::Audit(record) => {
                if let AuditAction::AgentFailed { uid, .. } = &record.action {
                    self.failed_at.entry(*uid).or_insert(record.at);
                    self.stats.failed += 1;
                    if self.wave_of[uid] == 0 && self.earliest_canary_failure.is_none() {
                        self.earliest_canary_failure = Some(record.at);
                    }
                }
            }
            Command::StateChanged {
                to: RolloutStatus::Aborting,
                ..
            } => self.stats.aborted = true,
            _ => {}
        }
    }

    /// No batch starts before the previous wave is installed, healthy (or failed within budget)
    /// and baked.
    fn check_previous_wave_baked(&self, wave: u32, now: Timestamp) {
        let previous = &self.wave_members[wave as usize - 1];
        let mut last_settled = Timestamp::EPOCH;
        for uid in previous {
            // An agent settles when it first turns healthy or fails; a later failure within
            // budget during the bake does not restart the bake.
            let settled = match (self.healthy_at.get(uid), self.failed_at.get(uid)) {
                (Some(healthy), Some(failed)) => *healthy.min(failed),
                (Some(at), None) | (None, Some(at)) => *at,
                (None, None) => panic!("wave {wave} started at {now} before {uid} settled"),
            };
            last_settled = last_settled.max(settled);
        }
        assert!(
            now >= last_settled.saturating_add(self.bake_time),
            "wave {wave} started at {now}, before wave {} baked (settled {last_settled})",
            wave - 1
        );
    }

    fn finish(&self, rollout: &Rollout) {
        if self.stats.aborted {
            for uid in self.offered_at.keys() {
                assert!(
                    self.reverted.contains(uid),
                    "aborted, but {uid} was never reverted"
                );
            }
        } else {
            assert_eq!(
                self.reverted.len(),
                self.failed_at.len(),
                "only failed agents are reverted"
            );
        }
        if rollout.status() == RolloutStatus::Completed {
            assert_eq!(
                self.offered_at.len(),
                self.wave_of.len(),
                "completed without offering everyone"
            );
            let progress = rollout.progress();
            assert_eq!(
                progress.healthy + progress.failed,
                progress.total,
                "completed with agents neither healthy nor failed"
            );
        }
    }
}
