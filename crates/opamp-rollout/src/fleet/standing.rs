//! Standing versions: what a completed rollout leaves behind for agents that join later.
//!
//! A completed rollout moved every agent its selector matched at planning time. A host that
//! registers afterwards (a new machine, or one whose labels changed) would otherwise keep
//! whatever version it was provisioned with. For such newcomers the newest completed rollout of
//! a package whose selector matches them is the fleet's decision, already proven by that
//! rollout's canaries and batches, so they are offered its version directly. Agents the rollout
//! planned (members, and agents it skipped) are its own business and are never touched here:
//! one that failed keeps its failure until an operator starts another rollout.

use std::collections::HashSet;

use opamp_proto::InstanceUid;

use crate::rollout::{Rollout, RolloutId, RolloutStatus};
use crate::selector::{LabelSelector, Labels};
use crate::time::Timestamp;

/// The version one completed rollout established.
#[derive(Debug, Clone)]
pub(crate) struct StandingVersion {
    pub(crate) rollout: RolloutId,
    pub(crate) package: String,
    pub(crate) version: String,
    selector: LabelSelector,
    planned: HashSet<InstanceUid>,
    finished_at: Timestamp,
}

impl StandingVersion {
    /// The standing version `rollout` leaves, if it completed.
    pub(crate) fn of(rollout: &Rollout, finished_at: Timestamp) -> Option<Self> {
        // Config rollouts leave nothing standing: a newcomer's remote config is not guessed.
        if rollout.status() != RolloutStatus::Completed || !rollout.spec().target_kind.is_package()
        {
            return None;
        }
        let spec = rollout.spec();
        let planned = rollout
            .agents()
            .iter()
            .map(|agent| agent.uid)
            .chain(rollout.skipped().iter().map(|skipped| skipped.uid))
            .collect();
        Some(StandingVersion {
            rollout: rollout.id().clone(),
            package: spec.package_name.clone(),
            version: spec.target_version.clone(),
            selector: spec.selector.clone(),
            planned,
            finished_at,
        })
    }
}

/// Every standing version, newest last.
#[derive(Debug, Default)]
pub(crate) struct StandingVersions {
    versions: Vec<StandingVersion>,
}

impl StandingVersions {
    /// Records a completed rollout's version (ignored for any other outcome). Only the newest
    /// per package and selector is kept: an older one with the same selector can never be the
    /// newest match again, and keeping it would grow memory with every rollout.
    pub(crate) fn record(&mut self, rollout: &Rollout, finished_at: Timestamp) {
        let Some(standing) = StandingVersion::of(rollout, finished_at) else {
            return;
        };
        let same_key = |known: &StandingVersion| {
            known.package == standing.package && known.selector == standing.selector
        };
        if let Some(index) = self.versions.iter().position(same_key) {
            if self.versions[index].finished_at > standing.finished_at {
                return;
            }
            self.versions.remove(index);
        }
        let at = self
            .versions
            .partition_point(|known| known.finished_at <= standing.finished_at);
        self.versions.insert(at, standing);
    }

    /// The version a newcomer with `labels` should have of `package`: the newest completed
    /// rollout of the package whose selector matches, unless that rollout planned the agent.
    pub(crate) fn for_newcomer(
        &self,
        uid: &InstanceUid,
        package: &str,
        labels: &Labels,
    ) -> Option<&StandingVersion> {
        let newest =
            self.versions.iter().rev().find(|standing| {
                standing.package == package && standing.selector.matches(labels)
            })?;
        (!newest.planned.contains(uid)).then_some(newest)
    }
}
