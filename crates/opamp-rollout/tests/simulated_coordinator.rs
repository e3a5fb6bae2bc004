//! The fleet coordinator against deterministic, seeded simulated fleets: several rollouts at
//! once, agents failing, flapping, going silent, leaving and joining, an operator acting at
//! random moments, a store refusing writes and the coordinator restarting. The invariants are
//! checked inside the simulation (see `coordinator_sim`); here proptest draws the seeds.

mod coordinator_sim;

use std::time::Duration;

use coordinator_sim::{SimConfig, run};
use opamp_rollout::RolloutStatus;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn cases(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(cases(40))]
    #[test]
    fn invariants_hold_for_chaotic_fleets(seed in any::<u64>(), agents in 20usize..400) {
        let stats = run(&SimConfig::chaotic(agents, seed));
        prop_assert!(stats.final_statuses.iter().all(|s| s.is_terminal()));
    }

    #[test]
    fn restarts_at_any_moment_lose_no_decision(seed in any::<u64>(), restarts in 1usize..6) {
        let mut config = SimConfig::chaotic(200, seed);
        config.restarts = restarts;
        let stats = run(&config);
        prop_assert!(stats.final_statuses.iter().all(|s| s.is_terminal()));
    }
}

proptest! {
    #![proptest_config(cases(8))]
    /// Every agent stops answering: the rollouts still end (install timeouts fail the
    /// canaries, the abort gives up waiting for confirmations).
    #[test]
    fn rollouts_end_when_agents_stop_answering(seed in any::<u64>()) {
        let mut config = SimConfig::clean(100, seed);
        config.silent_rate = 1.0;
        let stats = run(&config);
        let ended_without_moving = |s: &RolloutStatus| {
            matches!(s, RolloutStatus::RolledBack | RolloutStatus::Failed)
        };
        prop_assert!(stats.final_statuses.iter().all(ended_without_moving), "{:?}", stats.final_statuses);
        prop_assert!(stats.failed > 0, "the silent canaries time out");
    }
}

/// Seeds proptest once found failing, kept as regressions.
#[test]
fn regressions() {
    for (seed, agents) in [
        (7_019_722_055_233_013_785, 282),
        (14_039_444_110_466_027_570, 300),
    ] {
        run(&SimConfig::chaotic(agents, seed));
    }
}

/// Fixed scenarios make sure each behaviour is actually exercised, whatever seeds proptest
/// draws.
#[test]
fn a_clean_fleet_completes_every_rollout() {
    let stats = run(&SimConfig::clean(2_000, 7));
    assert_eq!(stats.final_statuses, [RolloutStatus::Completed; 3]);
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.reverted, 0);
}

#[test]
fn chaos_exercises_every_path() {
    let mut seen = coordinator_sim::Stats::default();
    let mut statuses = Vec::new();
    for seed in 0..12 {
        let stats = run(&SimConfig::chaotic(300, seed));
        seen.paused |= stats.paused;
        seen.aborted_by_operator |= stats.aborted_by_operator;
        seen.unsaved_seen |= stats.unsaved_seen;
        seen.caught_up += stats.caught_up;
        seen.failed += stats.failed;
        seen.reverted += stats.reverted;
        seen.restarts += stats.restarts;
        statuses.extend(stats.final_statuses);
    }
    assert!(seen.paused && seen.aborted_by_operator, "{seen:?}");
    assert!(
        seen.caught_up > 0 && seen.failed > 0 && seen.reverted > 0,
        "{seen:?}"
    );
    assert!(seen.restarts > 0, "{seen:?}");
    assert!(statuses.contains(&RolloutStatus::Completed), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .any(|s| matches!(s, RolloutStatus::RolledBack | RolloutStatus::Failed)),
        "{statuses:?}"
    );
}

/// Agents disconnected for longer than `forget_after` and in no active rollout are forgotten.
#[test]
fn agents_that_left_are_forgotten() {
    let mut config = SimConfig::clean(400, 3);
    config.leave_rate = 0.2;
    config.forget_after = Duration::from_secs(30 * 60);
    let stats = run(&config);
    assert!(stats.forgotten > 0, "{stats:?}");
}

/// CPU time of the coordinator for 10,000 agents: three concurrent rollouts that complete
/// (every agent moved, late joiners caught up, the store failing for a while, two restarts),
/// and the chaotic fleet. Release numbers:
/// `cargo test --release -p opamp-rollout --test simulated_coordinator -- --nocapture ten_thousand`.
#[test]
fn ten_thousand_agents_cpu_time() {
    let mut complete = SimConfig::clean(10_000, 42);
    complete.late_joiners = 500;
    complete.store_failures = true;
    complete.restarts = 2;
    for (name, config) in [
        ("complete", complete),
        ("chaotic", SimConfig::chaotic(10_000, 42)),
    ] {
        let stats = run(&config);
        println!(
            "10,000 agents, 3 rollouts, {name}: coordinator {:?} over {} inputs ({} offers), \
             virtual time {:?}, statuses {:?}",
            stats.coordinator_time,
            stats.inputs,
            stats.offers,
            stats.virtual_time,
            stats.final_statuses
        );
        if name == "complete" {
            assert_eq!(stats.final_statuses, [RolloutStatus::Completed; 3]);
            assert!(stats.caught_up > 0 && stats.restarts == 2, "{stats:?}");
        }
        if !cfg!(debug_assertions) {
            assert!(
                stats.coordinator_time < Duration::from_secs(1),
                "{name}: {stats:?}"
            );
        }
    }
}
