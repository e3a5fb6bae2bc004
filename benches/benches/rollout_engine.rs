//! Engine CPU time for a 10,000-agent rollout: planning, and a full clean rollout (canary plus
//! five batches, every agent installs and reports healthy, bake times skipped by jumping the
//! clock to `poll_timeout`). About 20,000 events go through `Rollout::handle`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_main};
use opamp_fleet::{
    AgentSnapshot, BatchPlan, Command, Event, LabelSelector, Labels, Rollout, RolloutId,
    RolloutSpec, RolloutStatus, Timestamp,
};
use opamp_proto::InstanceUid;

const AGENTS: u32 = 10_000;

fn fleet() -> Vec<AgentSnapshot> {
    (0..AGENTS)
        .map(|i| {
            let mut bytes = [0x42u8; 16];
            bytes[12..].copy_from_slice(&i.to_be_bytes());
            let labels: Labels = [("env".to_owned(), "prod".to_owned())]
                .into_iter()
                .collect();
            AgentSnapshot::new(InstanceUid::from(bytes), labels, Some("0.114.0".to_owned()))
        })
        .collect()
}

fn spec() -> RolloutSpec {
    RolloutSpec::new("otelcol-contrib", "0.115.0", LabelSelector::all(), "bench")
        .batches(BatchPlan::Share(0.2))
        .bake_time(Duration::from_secs(900))
}

/// Drives the rollout to completion; every offered agent installs and turns healthy at once.
fn drive(mut rollout: Rollout) -> Rollout {
    let mut now = Timestamp::from_millis(1);
    let mut commands = rollout
        .handle(Event::Start { by: "bench".into() }, now)
        .expect("start");
    while rollout.status() != RolloutStatus::Completed {
        for command in std::mem::take(&mut commands) {
            if let Command::Offer { uid, version } = command {
                rollout
                    .handle(
                        Event::AgentInstalled {
                            uid,
                            version,
                            healthy: None,
                        },
                        now,
                    )
                    .expect("installed");
                rollout
                    .handle(Event::AgentHealth { uid, healthy: true }, now)
                    .expect("healthy");
            }
        }
        now = rollout.poll_timeout().expect("bake deadline");
        commands = rollout.handle(Event::Timeout, now).expect("timeout");
    }
    rollout
}

fn rollout_engine(c: &mut Criterion) {
    let fleet = fleet();
    let mut group = c.benchmark_group("rollout_engine_10k");
    group.sample_size(20);
    group.bench_function("plan", |b| {
        b.iter(|| {
            Rollout::plan(
                RolloutId::new("bench"),
                spec(),
                black_box(&fleet),
                Timestamp::EPOCH,
            )
            .expect("plan")
        });
    });
    group.bench_function("full_rollout_after_plan", |b| {
        b.iter_batched(
            || {
                Rollout::plan(RolloutId::new("bench"), spec(), &fleet, Timestamp::EPOCH)
                    .expect("plan")
            },
            |rollout| black_box(drive(rollout)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::rollout_engine);
}
criterion_main!(harness::benches);
