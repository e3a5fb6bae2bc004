//! The rollout engine against a deterministic, seeded simulated fleet.
//!
//! Agents install, fail, turn unhealthy, install too slowly or vanish; operators pause, resume
//! and abort at random times; a virtual clock jumps straight to the next event or engine
//! deadline, so hours of bake time cost nothing. Invariants are checked over many seeds.

mod sim;

use std::time::{Duration, Instant};

use opamp_fleet::{Rollout, RolloutStatus};
use proptest::prelude::*;
use proptest::test_runner::Config;

use sim::{Restart, SimConfig, run};

fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]
    #[test]
    fn invariants_hold_for_small_fleets(seed in any::<u64>()) {
        let outcome = run(&SimConfig::chaotic(200, seed), Restart::None);
        prop_assert!(outcome.final_status.is_terminal(), "ended {:?}", outcome.final_status);
    }

    #[test]
    fn json_reload_mid_run_continues_identically(seed in any::<u64>(), at in 0.0f64..1.0) {
        let config = SimConfig::chaotic(200, seed);
        let straight = run(&config, Restart::None);
        let at_step = (straight.steps as f64 * at) as usize;
        let reloaded = run(&config, Restart::Json { at_step });
        prop_assert_eq!(&straight.commands, &reloaded.commands);
        prop_assert_eq!(straight.final_status, reloaded.final_status);
    }
}

proptest! {
    #![proptest_config(proptest_config(8))]
    #[test]
    fn store_reload_after_a_crash_mid_run_continues_identically(seed in any::<u64>(), at in 0.0f64..1.0) {
        let config = SimConfig::chaotic(200, seed);
        let straight = run(&config, Restart::None);
        let at_step = (straight.steps as f64 * at) as usize;
        let reloaded = run(&config, Restart::Store { at_step });
        prop_assert_eq!(&straight.commands, &reloaded.commands);
        prop_assert_eq!(straight.final_status, reloaded.final_status);
    }
}

proptest! {
    #![proptest_config(proptest_config(3))]
    #[test]
    fn invariants_hold_for_ten_thousand_agents(seed in any::<u64>()) {
        let config = SimConfig::chaotic(10_000, seed);
        let straight = run(&config, Restart::None);
        prop_assert!(straight.final_status.is_terminal());
        let reloaded = run(&config, Restart::Json { at_step: straight.steps / 2 });
        prop_assert_eq!(straight.commands.len(), reloaded.commands.len());
        prop_assert!(straight.commands == reloaded.commands, "command streams differ after reload");
    }
}

/// Fixed scenarios make sure each failure mode is actually exercised, whatever seeds proptest
/// draws.
#[test]
fn a_clean_fleet_completes() {
    let outcome = run(&SimConfig::clean(2_000, 7), Restart::None);
    assert_eq!(outcome.final_status, RolloutStatus::Completed);
    assert_eq!(outcome.stats.offered, outcome.stats.participants);
    assert_eq!(outcome.stats.reverted, 0);
}

#[test]
fn an_unhealthy_canary_aborts_and_reverts() {
    let mut config = SimConfig::clean(2_000, 11);
    config.unhealthy_canaries = true;
    let outcome = run(&config, Restart::None);
    assert!(outcome.stats.aborted);
    assert!(matches!(
        outcome.final_status,
        RolloutStatus::RolledBack | RolloutStatus::Failed
    ));
    assert!(
        outcome.stats.max_wave_offered == 0,
        "no batch may start after a canary failed"
    );
}

#[test]
fn vanishing_and_slow_agents_become_failures_within_budget() {
    let mut config = SimConfig::clean(2_000, 3);
    config.vanish_rate = 0.002;
    config.slow_rate = 0.002;
    config.protect_canaries = true;
    let outcome = run(&config, Restart::None);
    assert_eq!(
        outcome.final_status,
        RolloutStatus::Completed,
        "{:?}",
        outcome.stats
    );
    assert!(outcome.stats.failed > 0);
    assert_eq!(outcome.stats.failed, outcome.stats.reverted);
}

#[test]
fn operator_pause_resume_and_abort_are_honoured() {
    let mut config = SimConfig::clean(1_000, 5);
    config.operator = true;
    let mut seen_abort = false;
    let mut seen_pause = false;
    for seed in 0..20 {
        config.seed = seed;
        let outcome = run(&config, Restart::None);
        seen_abort |= outcome.stats.operator_abort;
        seen_pause |= outcome.stats.paused;
    }
    assert!(seen_abort && seen_pause);
}

/// CPU time of the engine for a 10,000-agent rollout that runs to completion through all waves.
/// Release numbers: `cargo test --release -p opamp-fleet --test simulated_fleet -- --nocapture`.
#[test]
fn ten_thousand_agent_rollout_cpu_time() {
    let config = SimConfig::clean(10_000, 42);
    let started = Instant::now();
    let outcome = run(&config, Restart::None);
    let total = started.elapsed();
    assert_eq!(outcome.final_status, RolloutStatus::Completed);
    assert_eq!(outcome.stats.participants, 10_000);
    println!(
        "10,000-agent rollout: engine {:?} over {} events (plan {:?}), whole simulation {:?}, \
         virtual time {:?}",
        outcome.engine_time, outcome.steps, outcome.plan_time, total, outcome.virtual_time
    );
    let json = serde_json::to_vec(&outcome.final_rollout).unwrap();
    let started = Instant::now();
    let _: Rollout = serde_json::from_slice(&json).unwrap();
    println!(
        "state JSON: {} bytes, deserialised in {:?}",
        json.len(),
        started.elapsed()
    );
    if !cfg!(debug_assertions) {
        assert!(outcome.engine_time < Duration::from_secs(1));
    }
}
