//! Arbitrary event sequences (unknown agents, repeats, reordering, time running backwards)
//! never panic the engine and never break its bookkeeping.

use std::time::Duration;

use opamp_proto::InstanceUid;
use opamp_rollout::{
    AgentPhase, AgentSnapshot, BatchPlan, Event, FailureBudget, LabelSelector, Labels, Rollout,
    RolloutId, RolloutSpec, RolloutState, RolloutStatus, Timestamp,
};
use proptest::prelude::*;

const AGENTS: u32 = 24;

fn uid(i: u32) -> InstanceUid {
    let mut bytes = [3u8; 16];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    InstanceUid::from(bytes)
}

fn planned(budget: u32) -> Rollout {
    let fleet: Vec<AgentSnapshot> = (0..AGENTS)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some("1".into())))
        .collect();
    let spec = RolloutSpec::new("p", "2", LabelSelector::all(), "t")
        .canary_share(0.1)
        .batches(BatchPlan::Sizes(vec![4, 8]))
        .bake_time(Duration::from_secs(30))
        .install_timeout(Duration::from_secs(60))
        .health_timeout(Duration::from_secs(20))
        .failure_budget(FailureBudget::Count(budget));
    Rollout::plan(RolloutId::new("prop"), spec, &fleet, Timestamp::EPOCH).expect("plan")
}

/// A generated step; agent events are aimed at run time, mostly at agents the rollout is
/// waiting for, so sequences reach later batches and completion, not only early aborts.
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    pick: u32,
    focus: bool,
    version: &'static str,
    healthy: bool,
    advance: u64,
    backwards: bool,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        40 => Just(0u8), // installed
        40 => Just(1u8), // health
        1 => Just(2u8),  // install failed
        3 => Just(3u8),  // disconnected
        3 => Just(4u8),  // connected
        20 => Just(5u8), // timeout
        5 => Just(6u8),  // start
        2 => Just(7u8),  // pause
        8 => Just(8u8),  // resume
        1 => Just(9u8),  // abort
    ];
    let version = prop_oneof![8 => Just("2"), 1 => Just("1"), 1 => Just("3")];
    let healthy = prop_oneof![30 => Just(true), 1 => Just(false)];
    (
        kind,
        any::<u32>(),
        prop::bool::weighted(0.85),
        version,
        healthy,
        0u64..4_000,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(kind, pick, focus, version, healthy, advance, backwards)| Step {
                kind,
                pick,
                focus,
                version,
                healthy,
                advance,
                backwards,
            },
        )
}

fn event_for(step: &Step, rollout: &Rollout) -> Event {
    let waiting: Vec<InstanceUid> = rollout
        .agents()
        .iter()
        .filter(|a| {
            matches!(
                a.phase,
                AgentPhase::Offered { .. } | AgentPhase::Installed { .. }
            )
        })
        .map(|a| a.uid)
        .collect();
    // Indexes past AGENTS name agents outside the rollout.
    let uid = if step.focus && !waiting.is_empty() {
        waiting[step.pick as usize % waiting.len()]
    } else {
        uid(step.pick % (AGENTS + 3))
    };
    match step.kind {
        0 => Event::AgentInstalled {
            uid,
            version: step.version.to_owned(),
            healthy: None,
        },
        1 => Event::AgentHealth {
            uid,
            healthy: step.healthy,
        },
        2 => Event::AgentInstallFailed {
            uid,
            error: "e".into(),
        },
        3 => Event::AgentDisconnected { uid },
        4 => Event::AgentConnected { uid },
        5 => Event::Timeout,
        6 => Event::Start { by: "op".into() },
        7 => Event::Pause { by: "op".into() },
        8 => Event::Resume { by: "op".into() },
        _ => Event::Abort {
            by: "op".into(),
            reason: "r".into(),
        },
    }
}

fn check_bookkeeping(rollout: &Rollout) {
    let progress = rollout.progress();
    assert_eq!(
        progress.pending
            + progress.offered
            + progress.installed
            + progress.healthy
            + progress.failed,
        progress.total
    );
    let current_wave = match rollout.state() {
        RolloutState::Canary => Some(0),
        RolloutState::Batch { wave } | RolloutState::Baking { wave, .. } => Some(*wave),
        _ => None,
    };
    for (index, wave) in (0u32..).zip(rollout.waves()) {
        let agents = rollout.wave_agents(index);
        let settled = agents
            .iter()
            .filter(|a| {
                matches!(
                    a.phase,
                    AgentPhase::Healthy { .. } | AgentPhase::Failed { .. }
                )
            })
            .count() as u32;
        let failed = agents
            .iter()
            .filter(|a| matches!(a.phase, AgentPhase::Failed { .. }))
            .count() as u32;
        assert_eq!(wave.settled, settled, "wave {index} settled count");
        assert_eq!(wave.failed, failed, "wave {index} failed count");
        if let Some(current) = current_wave
            && index > current
        {
            assert!(
                agents.iter().all(|a| a.phase == AgentPhase::Pending),
                "wave {index} started early"
            );
        }
    }
    for agent in rollout.agents() {
        assert!(
            !agent.reverted || agent.was_offered(),
            "reverted an agent never offered"
        );
    }
    // Liveness: an installing wave always has a deadline that will move it on.
    if matches!(
        rollout.status(),
        RolloutStatus::Canary | RolloutStatus::Batch
    ) {
        assert!(
            rollout.poll_timeout().is_some(),
            "installing wave without a deadline"
        );
    }
    if rollout.status() == RolloutStatus::Completed {
        assert_eq!(progress.offered + progress.installed + progress.pending, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_event_sequences_keep_the_books_straight(
        budget in 0u32..3,
        steps in prop::collection::vec(step_strategy(), 1..250),
    ) {
        let mut rollout = planned(budget);
        let mut now = 0u64;
        for (index, step) in steps.iter().enumerate() {
            // Sometimes pass an older `now`: the engine must treat it as the latest it saw.
            let at = if step.backwards { now.saturating_sub(step.advance) } else { now + step.advance };
            now = now.max(at);
            let event = event_for(step, &rollout);
            let operator = matches!(event, Event::Start { .. } | Event::Pause { .. } | Event::Resume { .. } | Event::Abort { .. });
            let before = operator.then(|| rollout.clone());
            if rollout.handle(event, Timestamp::from_millis(at)).is_err() {
                prop_assert!(before.is_some_and(|b| b == rollout), "a rejected event changed the rollout");
            }
            check_bookkeeping(&rollout);
            if index % 16 == 0 || index + 1 == steps.len() {
                let json = serde_json::to_string(&rollout).expect("serialise");
                let reloaded: Rollout = serde_json::from_str(&json).expect("deserialise");
                prop_assert!(reloaded == rollout);
                prop_assert_eq!(reloaded.poll_timeout(), rollout.poll_timeout());
            }
        }
    }

    #[test]
    fn selector_text_round_trips(
        pairs in prop::collection::btree_map("[a-z][a-z0-9_.-]{0,8}", prop::collection::btree_set("[a-z0-9]{1,5}", 1..4), 0..4),
    ) {
        let mut selector = LabelSelector::all();
        for (key, values) in &pairs {
            selector = if values.len() == 1 {
                selector.with_equals(key.clone(), values.iter().next().expect("one").clone())
            } else {
                selector.with_in(key.clone(), values.iter().cloned())
            };
        }
        let text = selector.to_string();
        let parsed: LabelSelector = text.parse().expect("own output parses");
        prop_assert_eq!(parsed, selector);
    }
}
