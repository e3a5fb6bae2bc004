//! The engine with a config target: versions are config hashes, the label is for people.

use std::time::Duration;

use opamp_proto::InstanceUid;

use super::*;
use crate::spec::{BatchPlan, TargetKind};
use crate::{LabelSelector, RolloutConflicts, RolloutError};

const TARGET_HASH: &str = "c0ffee";
/// What an agent without a remote config goes back to: an empty config map.
const EMPTY_HASH: &str = "e0e0";
const OLD_HASH: &str = "a1a1";
const SECOND: u64 = 1_000;

fn uid(i: u32) -> InstanceUid {
    let mut bytes = [7u8; 16];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    InstanceUid::from(bytes)
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(seconds * SECOND)
}

/// Agents alternate between an old catalog config and none at all.
fn previous_of(i: u32) -> &'static str {
    if i.is_multiple_of(2) {
        OLD_HASH
    } else {
        EMPTY_HASH
    }
}

fn fleet(n: u32) -> Vec<AgentSnapshot> {
    (0..n)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some(previous_of(i).into())))
        .collect()
}

fn spec() -> RolloutSpec {
    RolloutSpec::config(
        "collector",
        "v2",
        TARGET_HASH,
        LabelSelector::all(),
        "alice",
    )
    .canary_share(0.1)
    .batches(BatchPlan::Share(0.5))
    .bake_time(Duration::from_secs(30))
    .install_timeout(Duration::from_secs(20))
    .health_timeout(Duration::from_secs(10))
}

fn applied(rollout: &mut Rollout, uid: InstanceUid, hash: &str, now: Timestamp) -> Vec<Command> {
    let event = Event::AgentInstalled {
        uid,
        version: hash.into(),
        healthy: Some(true),
    };
    rollout.handle(event, now).unwrap()
}

fn offered(commands: &[Command]) -> Vec<(InstanceUid, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Offer { uid, version } => Some((*uid, version.clone())),
            _ => None,
        })
        .collect()
}

fn reverted(commands: &[Command]) -> Vec<(InstanceUid, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Revert { uid, to_version } => Some((*uid, to_version.clone())),
            _ => None,
        })
        .collect()
}

fn index_of(uid: InstanceUid) -> u32 {
    let bytes = uid.as_bytes();
    u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}

#[test]
fn a_config_rollout_offers_the_hash_and_completes_on_applied_reports() {
    let mut agents = fleet(10);
    // One agent already applied the target: nothing to do for it.
    agents[3].current_version = Some(TARGET_HASH.into());
    let mut rollout = Rollout::plan(RolloutId::new("c1"), spec(), &agents, at(0)).unwrap();
    assert_eq!(rollout.skipped().len(), 1);
    assert_eq!(rollout.skipped()[0].reason, SkipReason::AlreadyAtTarget);
    assert_eq!(
        rollout.planned_record().action,
        AuditAction::Planned {
            package: "collector".into(),
            version: "v2".into(),
            agents: 9,
            skipped: 1,
            canaries: 1,
            batches: 2,
        }
    );

    let mut commands = rollout
        .handle(Event::Start { by: "alice".into() }, at(0))
        .unwrap();
    let mut now = 0;
    while !rollout.is_terminal() {
        let offers = offered(&commands);
        assert!(
            offers.iter().all(|(_, hash)| hash == TARGET_HASH),
            "{offers:?}"
        );
        for (uid, _) in offers {
            assert_eq!(rollout.desired_version(&uid), Some(TARGET_HASH));
            applied(&mut rollout, uid, TARGET_HASH, at(now));
        }
        now = rollout.poll_timeout().expect("a bake deadline").as_millis() / SECOND;
        commands = rollout.handle(Event::Timeout, at(now)).unwrap();
    }
    assert_eq!(rollout.status(), RolloutStatus::Completed);
    assert_eq!(rollout.progress().healthy, 9);
    assert_eq!(rollout.spec().target_kind, TargetKind::Config);
}

#[test]
fn a_failed_config_on_the_canary_reverts_it_to_its_own_previous_config() {
    let spec = spec().canary_share(0.2);
    let mut rollout = Rollout::plan(RolloutId::new("c2"), spec, &fleet(10), at(0)).unwrap();
    let canaries = offered(
        &rollout
            .handle(Event::Start { by: "alice".into() }, at(0))
            .unwrap(),
    );
    assert_eq!(canaries.len(), 2);
    // The first canary applies it, the second refuses it with the collector's error.
    applied(&mut rollout, canaries[0].0, TARGET_HASH, at(1));
    let failed = Event::AgentInstallFailed {
        uid: canaries[1].0,
        error: "collector exited: unknown exporter".into(),
    };
    let commands = rollout.handle(failed, at(2)).unwrap();
    let mut reverts = reverted(&commands);
    reverts.sort();
    let mut expected: Vec<(InstanceUid, String)> = canaries
        .iter()
        .map(|(uid, _)| (*uid, previous_of(index_of(*uid)).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(reverts, expected, "each canary goes back to what it had");
    let failure = rollout.agent(&canaries[1].0).unwrap();
    assert!(matches!(
        &failure.phase,
        AgentPhase::Failed { reason: FailureReason::InstallFailed { error }, .. }
            if error.contains("unknown exporter")
    ));
    assert_eq!(rollout.status(), RolloutStatus::Aborting);

    // The canary that applied the target confirms its old config: rolled back, and no
    // batch agent was ever offered anything.
    let back = previous_of(index_of(canaries[0].0));
    applied(&mut rollout, canaries[0].0, back, at(3));
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
    assert_eq!(rollout.progress().pending, 8);
}

/// A small deterministic generator, so a failing seed can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random fleets and outcomes: whatever happens, offers carry only the target hash, reverts
/// only the agent's own previous hash, and every rollout ends completed or rolled back.
#[test]
fn seeded_config_rollouts_only_ever_offer_the_target_or_each_agents_previous_hash() {
    for seed in 1..=200u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let n = 1 + u32::try_from(rng.below(30)).unwrap();
        let agents: Vec<AgentSnapshot> = (0..n)
            .map(|i| {
                let previous = match rng.below(3) {
                    0 => EMPTY_HASH.to_owned(),
                    1 => OLD_HASH.to_owned(),
                    _ => format!("h{i}"),
                };
                AgentSnapshot::new(uid(i), Labels::new(), Some(previous))
            })
            .collect();
        let previous: HashMap<InstanceUid, String> = agents
            .iter()
            .map(|a| (a.uid, a.current_version.clone().unwrap()))
            .collect();
        let spec = spec().failure_budget(crate::spec::FailureBudget::Count(1));
        let mut rollout =
            Rollout::plan(RolloutId::new(format!("s{seed}")), spec, &agents, at(0)).unwrap();
        let mut commands = rollout
            .handle(Event::Start { by: "t".into() }, at(0))
            .unwrap();
        let mut now = 0u64;
        for _ in 0..500 {
            for (uid, hash) in offered(&commands) {
                assert_eq!(hash, TARGET_HASH, "seed {seed}");
                let _ = uid;
            }
            let mut next = Vec::new();
            for (uid, hash) in reverted(&commands) {
                assert_eq!(hash, previous[&uid], "seed {seed}");
                // Most agents confirm their old config; some never answer.
                if rng.below(4) != 0 {
                    next.extend(applied(&mut rollout, uid, &hash, at(now)));
                }
            }
            for (uid, _) in offered(&commands) {
                let outcome = match rng.below(10) {
                    0 => Event::AgentInstallFailed {
                        uid,
                        error: "bad config".into(),
                    },
                    1 => Event::AgentHealth {
                        uid,
                        healthy: false,
                    },
                    _ => Event::AgentInstalled {
                        uid,
                        version: TARGET_HASH.into(),
                        healthy: Some(rng.below(20) != 0),
                    },
                };
                next.extend(rollout.handle(outcome, at(now)).unwrap());
            }
            if rollout.is_terminal() {
                break;
            }
            if next
                .iter()
                .all(|c| matches!(c, Command::Audit(_) | Command::StateChanged { .. }))
            {
                now = rollout.poll_timeout().expect("a deadline").as_millis() / SECOND;
                next.extend(rollout.handle(Event::Timeout, at(now)).unwrap());
            }
            commands = next;
        }
        assert!(rollout.is_terminal(), "seed {seed}: {:?}", rollout.status());
        for agent in rollout.agents() {
            let desired = rollout.desired_version(&agent.uid);
            if agent.reverted {
                assert_eq!(desired, Some(previous[&agent.uid].as_str()), "seed {seed}");
            }
        }
    }
}

#[test]
fn config_rollouts_conflict_with_each_other_whatever_their_names_but_not_with_packages() {
    let mut conflicts = RolloutConflicts::new();
    let first = Rollout::plan(RolloutId::new("a"), spec(), &fleet(4), at(0)).unwrap();
    conflicts.register(&first).unwrap();

    let mut other_name = spec();
    other_name.package_name = "gateway".into();
    other_name.selector = "env=prod".parse().unwrap();
    let labelled: Vec<AgentSnapshot> = fleet(4)
        .into_iter()
        .map(|mut agent| {
            agent.labels.insert("env", "prod");
            agent
        })
        .collect();
    let second = Rollout::plan(RolloutId::new("b"), other_name, &labelled, at(0)).unwrap();
    assert!(matches!(
        conflicts.check(&second),
        Err(RolloutError::Conflict { reason, .. }) if reason.contains("agents")
    ));

    let package_fleet: Vec<AgentSnapshot> = (0..4)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some("1.0.0".into())))
        .collect();
    let package = RolloutSpec::new("collector", "2.0.0", LabelSelector::all(), "alice");
    let package = Rollout::plan(RolloutId::new("p"), package, &package_fleet, at(0)).unwrap();
    conflicts.register(&package).unwrap();
}

#[test]
fn a_config_spec_without_its_hash_is_refused() {
    let mut spec = spec();
    spec.target_ref = None;
    assert!(matches!(
        spec.validate(),
        Err(RolloutError::InvalidSpec {
            field: "target_ref",
            ..
        })
    ));
}
