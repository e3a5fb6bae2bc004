//! One active rollout per package per selector: [`RolloutConflicts`].

use std::collections::{BTreeMap, HashSet};

use opamp_proto::InstanceUid;

use crate::RolloutError;
use crate::rollout::{Rollout, RolloutId};
use crate::selector::LabelSelector;
use crate::spec::{RolloutSpec, TargetKind};

/// What two rollouts must not both offer one agent: a package by name, or any config (an
/// agent has one remote config, whatever the catalog names it).
fn conflict_key(spec: &RolloutSpec) -> (TargetKind, String) {
    match spec.target_kind {
        TargetKind::Config => (TargetKind::Config, String::new()),
        _ => (TargetKind::Package, spec.package_name.clone()),
    }
}

#[derive(Debug, Clone)]
struct ActiveRollout {
    package: (TargetKind, String),
    selector: LabelSelector,
    agents: HashSet<InstanceUid>,
}

/// The set of active (non-terminal) rollouts, refusing new ones that would fight over agents.
///
/// A candidate conflicts with an active rollout of the same package when their selectors are
/// equal, or when any agent would take part in both (two rollouts must never offer one agent
/// different versions of one package). Config rollouts count as one package, whatever the
/// config's name: an agent has a single remote config.
#[derive(Debug, Clone, Default)]
pub struct RolloutConflicts {
    active: BTreeMap<RolloutId, ActiveRollout>,
}

impl RolloutConflicts {
    /// No active rollout.
    #[must_use]
    pub fn new() -> Self {
        RolloutConflicts::default()
    }

    /// Rebuilds the set from stored rollouts after a restart (terminal ones are ignored).
    /// No conflict check: what was accepted before stays accepted.
    #[must_use]
    pub fn from_rollouts<'a>(rollouts: impl IntoIterator<Item = &'a Rollout>) -> Self {
        let mut conflicts = RolloutConflicts::new();
        for rollout in rollouts {
            conflicts.insert(rollout);
        }
        conflicts
    }

    fn insert(&mut self, rollout: &Rollout) {
        if !rollout.is_terminal() {
            self.active.insert(
                rollout.id().clone(),
                ActiveRollout {
                    package: conflict_key(rollout.spec()),
                    selector: rollout.spec().selector.clone(),
                    agents: rollout.agents().iter().map(|a| a.uid).collect(),
                },
            );
        }
    }

    /// Refuses `candidate` if it conflicts with an active rollout.
    ///
    /// # Errors
    /// [`RolloutError::Conflict`] naming the active rollout and the reason.
    pub fn check(&self, candidate: &Rollout) -> Result<(), RolloutError> {
        let key = conflict_key(candidate.spec());
        let package = &candidate.spec().package_name;
        for (id, active) in &self.active {
            if id == candidate.id() || active.package != key {
                continue;
            }
            let conflict = |reason: String| RolloutError::Conflict {
                active: id.clone(),
                package: package.clone(),
                reason,
            };
            if active.selector == candidate.spec().selector {
                return Err(conflict(format!("same selector `{}`", active.selector)));
            }
            let shared = candidate
                .agents()
                .iter()
                .filter(|a| active.agents.contains(&a.uid))
                .count();
            if shared > 0 {
                return Err(conflict(format!("{shared} agents would take part in both")));
            }
        }
        Ok(())
    }

    /// Checks and then records `rollout` as active (no-op for terminal rollouts).
    ///
    /// # Errors
    /// As [`RolloutConflicts::check`].
    pub fn register(&mut self, rollout: &Rollout) -> Result<(), RolloutError> {
        self.check(rollout)?;
        self.insert(rollout);
        Ok(())
    }

    /// Forgets `rollout` once it is terminal; call after each step.
    pub fn update(&mut self, rollout: &Rollout) {
        if rollout.is_terminal() {
            self.active.remove(rollout.id());
        }
    }

    /// Forgets a rollout.
    pub fn remove(&mut self, id: &RolloutId) {
        self.active.remove(id);
    }

    /// Ids of the active rollouts.
    pub fn active_ids(&self) -> impl Iterator<Item = &RolloutId> {
        self.active.keys()
    }
}
