//! Unit tests of the engine rules on small fleets.

use std::time::Duration;

use opamp_proto::InstanceUid;

use super::*;
use crate::spec::{BatchPlan, FailureBudget};
use crate::{LabelSelector, RolloutConflicts, RolloutError};

const OLD: &str = "0.114.0";
const NEW: &str = "0.115.0";
const MINUTE: u64 = 60_000;

fn uid(i: u32) -> InstanceUid {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    InstanceUid::from(bytes)
}

fn fleet(n: u32) -> Vec<AgentSnapshot> {
    (0..n)
        .map(|i| {
            let labels = [(
                "env".to_owned(),
                if i % 2 == 0 { "prod" } else { "dev" }.to_owned(),
            )];
            AgentSnapshot::new(uid(i), labels.into_iter().collect(), Some(OLD.into()))
        })
        .collect()
}

fn spec() -> RolloutSpec {
    RolloutSpec::new("otelcol", NEW, LabelSelector::all(), "alice")
        .canary_share(0.1)
        .batches(BatchPlan::Share(0.5))
        .bake_time(Duration::from_secs(600))
        .install_timeout(Duration::from_secs(300))
        .health_timeout(Duration::from_secs(120))
}

fn at(minutes: u64) -> Timestamp {
    Timestamp::from_millis(minutes * MINUTE)
}

fn offers(commands: &[Command]) -> Vec<InstanceUid> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Offer { uid, version } if version == NEW => Some(*uid),
            _ => None,
        })
        .collect()
}

fn reverts(commands: &[Command]) -> Vec<InstanceUid> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Revert { uid, to_version } if to_version == OLD => Some(*uid),
            _ => None,
        })
        .collect()
}

/// Installs and reports healthy every agent in `uids`.
fn install_healthy(rollout: &mut Rollout, uids: &[InstanceUid], now: Timestamp) -> Vec<Command> {
    let mut out = Vec::new();
    for uid in uids {
        out.extend(
            rollout
                .handle(
                    Event::AgentInstalled {
                        uid: *uid,
                        version: NEW.into(),
                        healthy: None,
                    },
                    now,
                )
                .unwrap(),
        );
        out.extend(
            rollout
                .handle(
                    Event::AgentHealth {
                        uid: *uid,
                        healthy: true,
                    },
                    now,
                )
                .unwrap(),
        );
    }
    out
}

fn started(n: u32, spec: RolloutSpec) -> (Rollout, Vec<InstanceUid>) {
    let mut rollout = Rollout::plan(RolloutId::new("r1"), spec, &fleet(n), at(0)).unwrap();
    let commands = rollout
        .handle(Event::Start { by: "alice".into() }, at(0))
        .unwrap();
    let canaries = offers(&commands);
    (rollout, canaries)
}

#[test]
fn happy_path_runs_canary_then_batches_after_each_bake() {
    let (mut rollout, canaries) = started(20, spec());
    assert_eq!(canaries.len(), 2);
    assert_eq!(rollout.status(), RolloutStatus::Canary);
    install_healthy(&mut rollout, &canaries, at(1));
    assert_eq!(rollout.status(), RolloutStatus::Baking);
    assert_eq!(rollout.poll_timeout(), Some(at(11)));

    // Early timeouts do nothing.
    assert!(offers(&rollout.handle(Event::Timeout, at(10)).unwrap()).is_empty());
    let batch1 = offers(&rollout.handle(Event::Timeout, at(11)).unwrap());
    assert_eq!(batch1.len(), 9);
    assert!(batch1.iter().all(|u| !canaries.contains(u)));
    assert_eq!(rollout.status(), RolloutStatus::Batch);
    install_healthy(&mut rollout, &batch1, at(12));
    let batch2 = offers(&rollout.handle(Event::Timeout, at(22)).unwrap());
    assert_eq!(batch2.len(), 9);
    install_healthy(&mut rollout, &batch2, at(23));
    let commands = rollout.handle(Event::Timeout, at(33)).unwrap();
    assert!(commands.contains(&Command::StateChanged {
        from: RolloutStatus::Baking,
        to: RolloutStatus::Completed
    }));
    assert_eq!(rollout.progress().healthy, 20);
    assert_eq!(rollout.poll_timeout(), None);
}

#[test]
fn canary_install_failure_aborts_and_reverts_every_moved_agent() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries[..1], at(1));
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[1],
                error: "disk full".into(),
            },
            at(2),
        )
        .unwrap();
    let mut reverted = reverts(&commands);
    reverted.sort();
    let mut expected = canaries.clone();
    expected.sort();
    assert_eq!(reverted, expected);
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
    // The healthy canary must confirm; the failed one never installed the target.
    let commands = rollout
        .handle(
            Event::AgentInstalled {
                uid: canaries[0],
                version: OLD.into(),
                healthy: None,
            },
            at(3),
        )
        .unwrap();
    assert!(
        matches!(rollout.state(), RolloutState::RolledBack { reason } if reason.contains("canary"))
    );
    assert!(offers(&commands).is_empty());
    assert_eq!(
        rollout.progress().pending,
        18,
        "no batch agent was offered anything"
    );
}

#[test]
fn canary_turning_unhealthy_during_bake_aborts() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries, at(1));
    rollout
        .handle(
            Event::AgentHealth {
                uid: canaries[0],
                healthy: false,
            },
            at(5),
        )
        .unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
    // Nobody confirms: the abort gives up after the install timeout.
    assert_eq!(rollout.poll_timeout(), Some(at(10)));
    rollout.handle(Event::Timeout, at(10)).unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Failed);
}

#[test]
fn batch_failures_within_budget_continue_and_beyond_budget_abort() {
    let spec = spec().failure_budget(FailureBudget::Count(1));
    let (mut rollout, canaries) = started(20, spec);
    install_healthy(&mut rollout, &canaries, at(1));
    let batch1 = offers(&rollout.handle(Event::Timeout, at(11)).unwrap());
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: batch1[0],
                error: "boom".into(),
            },
            at(12),
        )
        .unwrap();
    assert_eq!(reverts(&commands), vec![batch1[0]]);
    assert_eq!(rollout.status(), RolloutStatus::Batch);
    install_healthy(&mut rollout, &batch1[1..], at(12));
    assert_eq!(rollout.status(), RolloutStatus::Baking);
    let batch2 = offers(&rollout.handle(Event::Timeout, at(22)).unwrap());
    rollout
        .handle(
            Event::AgentInstallFailed {
                uid: batch2[0],
                error: "a".into(),
            },
            at(23),
        )
        .unwrap();
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: batch2[1],
                error: "b".into(),
            },
            at(23),
        )
        .unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
    // Everyone offered so far (canaries, batch 1 and batch 2) except the already reverted.
    assert_eq!(reverts(&commands).len(), 2 + 8 + 9 - 1);
}

#[test]
fn disconnected_agent_that_never_returns_fails_at_its_install_timeout() {
    let (mut rollout, canaries) = started(20, spec());
    rollout
        .handle(Event::AgentDisconnected { uid: canaries[0] }, at(1))
        .unwrap();
    install_healthy(&mut rollout, &canaries[1..], at(1));
    assert_eq!(
        rollout.status(),
        RolloutStatus::Canary,
        "waits for the disconnected canary"
    );
    assert_eq!(rollout.poll_timeout(), Some(at(5)));
    let commands = rollout.handle(Event::Timeout, at(5)).unwrap();
    assert!(commands.iter().any(|c| matches!(c,
        Command::Audit(r) if matches!(&r.action, AuditAction::AgentFailed {
            reason: FailureReason::InstallTimedOut { connected: false }, .. }))));
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
}

#[test]
fn installed_agent_without_health_report_fails_at_health_timeout() {
    let (mut rollout, canaries) = started(20, spec());
    rollout
        .handle(
            Event::AgentInstalled {
                uid: canaries[0],
                version: NEW.into(),
                healthy: None,
            },
            at(1),
        )
        .unwrap();
    assert_eq!(rollout.poll_timeout(), Some(at(3)));
    rollout.handle(Event::Timeout, at(3)).unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
}

/// The health an agent reports together with `Installed` is the new version's first reading:
/// healthy settles the agent at once, unhealthy fails it at once; no separate health event is
/// needed (the fleet server used to send one after every install to make up for it).
#[test]
fn health_reported_with_the_install_settles_or_fails_the_agent() {
    let (mut rollout, canaries) = started(20, spec());
    for canary in &canaries {
        let commands = rollout
            .handle(
                Event::AgentInstalled {
                    uid: *canary,
                    version: NEW.into(),
                    healthy: Some(true),
                },
                at(1),
            )
            .unwrap();
        assert!(commands.iter().any(|c| matches!(c,
            Command::Audit(r) if matches!(r.action, AuditAction::AgentHealthy { .. }))));
    }
    assert_eq!(rollout.status(), RolloutStatus::Baking);

    let (mut rollout, canaries) = started(20, spec());
    rollout
        .handle(
            Event::AgentInstalled {
                uid: canaries[0],
                version: NEW.into(),
                healthy: Some(false),
            },
            at(1),
        )
        .unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
}

#[test]
fn pause_holds_the_next_wave_until_resume() {
    let (mut rollout, canaries) = started(20, spec());
    rollout
        .handle(Event::Pause { by: "bob".into() }, at(0))
        .unwrap();
    install_healthy(&mut rollout, &canaries, at(1));
    assert_eq!(rollout.status(), RolloutStatus::Paused);
    assert!(offers(&rollout.handle(Event::Timeout, at(30)).unwrap()).is_empty());
    let commands = rollout
        .handle(Event::Resume { by: "bob".into() }, at(31))
        .unwrap();
    // The canary wave settled while paused; baking starts on resume.
    assert!(offers(&commands).is_empty());
    assert_eq!(rollout.status(), RolloutStatus::Baking);
    assert_eq!(
        offers(&rollout.handle(Event::Timeout, at(41)).unwrap()).len(),
        9
    );
}

#[test]
fn failures_are_still_detected_while_paused() {
    let (mut rollout, canaries) = started(20, spec());
    rollout
        .handle(Event::Pause { by: "bob".into() }, at(0))
        .unwrap();
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[0],
                error: "x".into(),
            },
            at(1),
        )
        .unwrap();
    assert_eq!(reverts(&commands).len(), 2);
    // No canary had installed the target, so nothing needs confirming.
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
}

#[test]
fn operator_abort_reverts_only_agents_that_were_offered() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries, at(1));
    let batch1 = offers(&rollout.handle(Event::Timeout, at(11)).unwrap());
    let commands = rollout
        .handle(
            Event::Abort {
                by: "carol".into(),
                reason: "change freeze".into(),
            },
            at(12),
        )
        .unwrap();
    let reverted = reverts(&commands);
    assert_eq!(reverted.len(), canaries.len() + batch1.len());
    assert!(commands.iter().any(|c| matches!(c,
        Command::Audit(r) if r.actor == Actor::Operator("carol".into()))));
    // Only the canaries had installed the target; they confirm, then it is rolled back.
    for uid in &canaries {
        rollout
            .handle(
                Event::AgentInstalled {
                    uid: *uid,
                    version: OLD.into(),
                    healthy: None,
                },
                at(13),
            )
            .unwrap();
    }
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
    // A slow batch agent installing the target afterwards is told to go back again.
    let late = rollout
        .handle(
            Event::AgentInstalled {
                uid: batch1[0],
                version: NEW.into(),
                healthy: None,
            },
            at(14),
        )
        .unwrap();
    assert_eq!(reverts(&late), vec![batch1[0]]);
}

#[test]
fn rejected_operator_events_leave_the_rollout_unchanged() {
    let (mut rollout, _) = started(20, spec());
    let before = rollout.clone();
    for event in [
        Event::Start { by: "x".into() },
        Event::Resume { by: "x".into() },
    ] {
        let err = rollout.handle(event, at(1)).unwrap_err();
        assert!(matches!(
            err,
            RolloutError::InvalidTransition {
                status: RolloutStatus::Canary,
                ..
            }
        ));
    }
    assert_eq!(rollout, before);
}

#[test]
fn abort_before_start_rolls_back_without_commands_to_agents() {
    let mut rollout = Rollout::plan(RolloutId::new("r"), spec(), &fleet(5), at(0)).unwrap();
    let commands = rollout
        .handle(
            Event::Abort {
                by: "a".into(),
                reason: "no".into(),
            },
            at(0),
        )
        .unwrap();
    assert!(reverts(&commands).is_empty());
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
}

#[test]
fn serde_round_trip_mid_run_continues_identically() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries[..1], at(1));
    rollout
        .handle(
            Event::AgentInstalled {
                uid: canaries[1],
                version: NEW.into(),
                healthy: None,
            },
            at(1),
        )
        .unwrap();
    let json = serde_json::to_string(&rollout).unwrap();
    let mut reloaded: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(reloaded, rollout);
    assert_eq!(reloaded.poll_timeout(), rollout.poll_timeout());
    for (event, now) in [
        (
            Event::AgentHealth {
                uid: canaries[1],
                healthy: true,
            },
            at(2),
        ),
        (Event::Timeout, at(12)),
    ] {
        assert_eq!(
            rollout.handle(event.clone(), now).unwrap(),
            reloaded.handle(event, now).unwrap()
        );
    }
}

#[test]
fn plan_skips_agents_it_cannot_judge_and_respects_the_selector() {
    let mut agents = fleet(10);
    agents[0].current_version = Some(NEW.into());
    agents[2].current_version = None;
    agents[4] = agents[4].clone().healthy(false);
    let spec = spec();
    let mut spec = spec;
    spec.selector = "env=prod".parse().unwrap();
    let rollout = Rollout::plan(RolloutId::new("r"), spec, &agents, at(0)).unwrap();
    let reasons: Vec<SkipReason> = rollout.skipped().iter().map(|s| s.reason).collect();
    assert_eq!(
        reasons,
        vec![
            SkipReason::AlreadyAtTarget,
            SkipReason::UnknownVersion,
            SkipReason::Unhealthy
        ]
    );
    assert_eq!(rollout.agents().len(), 2);
    assert!(
        rollout
            .agents()
            .iter()
            .all(|a| a.uid == uid(6) || a.uid == uid(8))
    );
}

#[test]
fn canaries_are_deterministic_per_rollout_and_prefer_connected_agents() {
    let agents: Vec<AgentSnapshot> = fleet(100)
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.connected(i >= 90))
        .collect();
    let plan = |id: &str| Rollout::plan(RolloutId::new(id), spec(), &agents, at(0)).unwrap();
    let canaries = |r: &Rollout| r.wave_agents(0).iter().map(|a| a.uid).collect::<Vec<_>>();
    assert_eq!(canaries(&plan("a")), canaries(&plan("a")));
    assert_ne!(canaries(&plan("a")), canaries(&plan("b")));
    assert!(plan("a").wave_agents(0).iter().all(|a| a.connected));
    assert_eq!(plan("a").wave_agents(0).len(), 10);
}

#[test]
fn plan_refuses_empty_selection_and_duplicates() {
    let mut spec = spec();
    spec.selector = "env=staging".parse().unwrap();
    assert!(matches!(
        Rollout::plan(RolloutId::new("r"), spec, &fleet(4), at(0)),
        Err(RolloutError::NoAgents { selected: 0, .. })
    ));
    let mut agents = fleet(3);
    agents.push(agents[0].clone());
    assert!(matches!(
        Rollout::plan(RolloutId::new("r"), self::spec(), &agents, at(0)),
        Err(RolloutError::DuplicateAgent { .. })
    ));
}

#[test]
fn downgrade_is_an_ordinary_rollout() {
    let agents: Vec<AgentSnapshot> = (0..4)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some(NEW.into())))
        .collect();
    let spec = RolloutSpec::new("otelcol", OLD, LabelSelector::all(), "alice").canary_share(1.0);
    let mut rollout = Rollout::plan(RolloutId::new("down"), spec, &agents, at(0)).unwrap();
    let commands = rollout
        .handle(Event::Start { by: "alice".into() }, at(0))
        .unwrap();
    assert_eq!(
        commands
            .iter()
            .filter(|c| matches!(c, Command::Offer { version, .. } if version == OLD))
            .count(),
        4
    );
}

#[test]
fn conflicts_refuses_overlapping_rollouts_of_one_package() {
    let first = Rollout::plan(RolloutId::new("first"), spec(), &fleet(10), at(0)).unwrap();
    let mut conflicts = RolloutConflicts::new();
    conflicts.register(&first).unwrap();

    let second = Rollout::plan(RolloutId::new("second"), spec(), &fleet(10), at(0)).unwrap();
    let err = conflicts.register(&second).unwrap_err();
    assert!(err.to_string().contains("first"), "{err}");

    let mut prod_spec = spec();
    prod_spec.selector = "env=prod".parse().unwrap();
    let overlapping = Rollout::plan(RolloutId::new("prod"), prod_spec, &fleet(10), at(0)).unwrap();
    assert!(
        matches!(conflicts.check(&overlapping), Err(RolloutError::Conflict { reason, .. }) if reason.contains("agents"))
    );

    let mut other_package = spec();
    other_package.package_name = "other".into();
    let other = Rollout::plan(RolloutId::new("other"), other_package, &fleet(10), at(0)).unwrap();
    conflicts.register(&other).unwrap();

    conflicts.remove(first.id());
    conflicts.register(&second).unwrap();
}

#[test]
fn agent_that_installed_the_target_before_its_wave_counts_when_the_wave_starts() {
    let (mut rollout, canaries) = started(20, spec());
    let early = rollout.wave_agents(1)[0].uid;
    rollout
        .handle(
            Event::AgentInstalled {
                uid: early,
                version: NEW.into(),
                healthy: None,
            },
            at(0),
        )
        .unwrap();
    rollout
        .handle(
            Event::AgentHealth {
                uid: early,
                healthy: true,
            },
            at(0),
        )
        .unwrap();
    assert_eq!(rollout.agent(&early).unwrap().phase, AgentPhase::Pending);
    install_healthy(&mut rollout, &canaries, at(1));
    let batch1 = offers(&rollout.handle(Event::Timeout, at(11)).unwrap());
    assert!(
        batch1.contains(&early),
        "the desired version is still set for it"
    );
    assert!(matches!(
        rollout.agent(&early).unwrap().phase,
        AgentPhase::Healthy { .. }
    ));
    assert_eq!(rollout.waves()[1].settled, 1);
}

#[test]
fn conflicts_rebuilt_after_restart_still_refuses_conflicts_and_forgets_finished_rollouts() {
    let active = Rollout::plan(RolloutId::new("active"), spec(), &fleet(10), at(0)).unwrap();
    let mut finished = Rollout::plan(RolloutId::new("done"), spec(), &fleet(10), at(0)).unwrap();
    finished
        .handle(
            Event::Abort {
                by: "a".into(),
                reason: "x".into(),
            },
            at(0),
        )
        .unwrap();
    let conflicts = RolloutConflicts::from_rollouts([&active, &finished]);
    assert_eq!(
        conflicts.active_ids().collect::<Vec<_>>(),
        vec![active.id()]
    );
    let candidate = Rollout::plan(RolloutId::new("new"), spec(), &fleet(10), at(0)).unwrap();
    assert!(conflicts.check(&candidate).is_err());
}

#[test]
fn desired_version_follows_offers_and_reverts() {
    let (mut rollout, canaries) = started(20, spec());
    let waiting = rollout.wave_agents(1)[0].uid;
    assert_eq!(rollout.desired_version(&canaries[0]), Some(NEW));
    assert_eq!(rollout.desired_version(&waiting), None);
    assert_eq!(rollout.desired_version(&uid(999)), None);
    rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[0],
                error: "x".into(),
            },
            at(1),
        )
        .unwrap();
    assert_eq!(rollout.desired_version(&canaries[0]), Some(OLD));
    assert_eq!(rollout.desired_version(&canaries[1]), Some(OLD));
}

fn audited(commands: &[Command]) -> Vec<AuditAction> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Audit(record) => Some(record.action.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn adopted_versions_are_logged_and_never_offered_back() {
    let mut spec = spec().adopt_unknown_versions(true);
    spec.adopted_versions = vec![OLD.to_owned()];
    let mut rollout = Rollout::plan(RolloutId::new("r1"), spec, &fleet(20), at(0)).unwrap();
    let start = rollout
        .handle(Event::Start { by: "alice".into() }, at(0))
        .unwrap();
    assert!(audited(&start).contains(&AuditAction::AdoptedVersions {
        versions: vec![OLD.to_owned()]
    }));
    let canaries = offers(&start);
    assert_eq!(canaries.len(), 2);
    install_healthy(&mut rollout, &canaries[..1], at(1));
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[1],
                error: "health gate failed; rolled back locally".into(),
            },
            at(2),
        )
        .unwrap();
    assert!(reverts(&commands).is_empty(), "{commands:?}");
    let not_reverted: Vec<InstanceUid> = audited(&commands)
        .into_iter()
        .filter_map(|a| match a {
            AuditAction::AgentNotReverted { uid, version, .. } if version == OLD => Some(uid),
            _ => None,
        })
        .collect();
    let mut expected = canaries.clone();
    expected.sort();
    let mut got = not_reverted;
    got.sort();
    assert_eq!(got, expected, "both canaries, each logged once");
    // Nothing to wait for: the server cannot offer OLD back.
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
    assert_eq!(rollout.progress().pending, 18);
}

#[test]
fn without_adoption_the_same_failure_reverts_both_canaries() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries[..1], at(1));
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[1],
                error: "disk full".into(),
            },
            at(2),
        )
        .unwrap();
    assert_eq!(reverts(&commands).len(), 2);
    assert!(
        !audited(&commands)
            .iter()
            .any(|a| matches!(a, AuditAction::AgentNotReverted { .. }))
    );
}

/// The documented rule (docs/operations.md, "Agents without a package status"): a
/// `service.version` attribute is a label, never the version a rollout reverts to; an agent
/// that reports no package status for the package is skipped as `unknown_version`.
#[test]
fn service_version_without_a_package_status_is_skipped_as_unknown() {
    let labels: crate::selector::Labels = [
        ("env".to_owned(), "prod".to_owned()),
        ("service.version".to_owned(), OLD.to_owned()),
    ]
    .into_iter()
    .collect();
    let unmanaged = crate::AgentRecord::new(uid(1), labels.clone(), 0, at(0));
    let mut managed = crate::AgentRecord::new(uid(2), labels, 0, at(0));
    managed.package_versions.insert("otelcol", OLD);
    let fleet = [
        unmanaged.snapshot_for("otelcol"),
        managed.snapshot_for("otelcol"),
    ];
    let rollout = Rollout::plan(RolloutId::new("r"), spec(), &fleet, at(0)).unwrap();
    assert_eq!(rollout.skipped().len(), 1);
    assert_eq!(rollout.skipped()[0].uid, uid(1));
    assert_eq!(rollout.skipped()[0].reason, SkipReason::UnknownVersion);
    assert_eq!(rollout.agents().len(), 1);
    assert_eq!(rollout.agents()[0].previous_version, OLD);
}

/// Issue 23 item 8: an abort whose previous version the agents would refuse (its signature
/// authorises no downgrade from the target) names those agents at once and ends promptly,
/// instead of sitting in `aborting` for the install timeout and ending `failed` while
/// showing them reverted.
#[test]
fn an_abort_names_agents_that_would_refuse_their_previous_version_and_ends_at_once() {
    let why = "its signature does not authorise a downgrade";
    let mut spec = spec();
    spec.unrevertible_versions = [(OLD.to_owned(), why.to_owned())].into();
    let mut rollout = Rollout::plan(RolloutId::new("r1"), spec, &fleet(20), at(0)).unwrap();
    let canaries = offers(
        &rollout
            .handle(Event::Start { by: "alice".into() }, at(0))
            .unwrap(),
    );
    // The first canary runs the target; the second fails its install and keeps OLD.
    install_healthy(&mut rollout, &canaries[..1], at(1));
    let commands = rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[1],
                error: "health gate failed; rolled back locally".into(),
            },
            at(2),
        )
        .unwrap();
    // Both are offered OLD; the one on the target is named with the reason and not waited
    // for (the one still on OLD has nothing to confirm).
    let mut offered_back = reverts(&commands);
    offered_back.sort();
    let mut both = canaries.clone();
    both.sort();
    assert_eq!(offered_back, both);
    let named: Vec<(InstanceUid, String)> = audited(&commands)
        .into_iter()
        .filter_map(|a| match a {
            AuditAction::AgentNotReverted { uid, reason, .. } => Some((uid, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(named, vec![(canaries[0], why.to_owned())]);
    assert_eq!(rollout.status(), RolloutStatus::RolledBack);
    let RolloutState::RolledBack { reason } = rollout.state() else {
        panic!("{:?}", rollout.state());
    };
    assert!(
        reason.contains(&format!("not waiting for 1 agents on {NEW}")),
        "{reason}"
    );
    assert!(reason.contains(why), "{reason}");
}

/// Without the knowledge, the same abort waits for a revert that never comes.
#[test]
fn without_it_the_abort_waits_for_the_revert() {
    let (mut rollout, canaries) = started(20, spec());
    install_healthy(&mut rollout, &canaries[..1], at(1));
    rollout
        .handle(
            Event::AgentInstallFailed {
                uid: canaries[1],
                error: "boom".into(),
            },
            at(2),
        )
        .unwrap();
    assert_eq!(rollout.status(), RolloutStatus::Aborting);
}
