//! Choosing agents and waves: [`Rollout::plan`].

use std::collections::{BTreeSet, HashMap, HashSet};

use opamp_proto::InstanceUid;

use super::{
    AgentPhase, AgentProgress, AgentSnapshot, Rollout, RolloutData, RolloutId, RolloutState,
    SkipReason, SkippedAgent, Wave,
};
use crate::RolloutError;
use crate::spec::{RolloutSpec, batch_sizes};
use crate::time::Timestamp;

impl Rollout {
    /// Plans a rollout over `fleet`: selects the agents matching the spec's selector, records
    /// each one's current version (what a revert goes back to) and splits them into the canary
    /// wave and batches.
    ///
    /// Selected agents are skipped (see [`Rollout::skipped`]) when they already run the target,
    /// reported no version, or are unhealthy. The order of agents is a hash of rollout id and
    /// instance uid, so it is deterministic yet differs between rollouts; canaries are taken from
    /// the front of that order, connected agents first.
    ///
    /// # Errors
    /// [`RolloutError::InvalidSpec`], [`RolloutError::DuplicateAgent`] if the snapshot lists an
    /// agent twice, and [`RolloutError::NoAgents`] if nothing is left to roll out to.
    pub fn plan(
        id: RolloutId,
        spec: RolloutSpec,
        fleet: &[AgentSnapshot],
        now: Timestamp,
    ) -> Result<Rollout, RolloutError> {
        spec.validate()?;
        let mut seen = HashSet::with_capacity(fleet.len());
        let mut eligible: Vec<(u64, &AgentSnapshot)> = Vec::new();
        let mut skipped = Vec::new();
        let mut selected = 0usize;
        for agent in fleet {
            if !seen.insert(agent.uid) {
                return Err(RolloutError::DuplicateAgent { uid: agent.uid });
            }
            if !spec.selector.matches(&agent.labels) {
                continue;
            }
            selected += 1;
            let reason = match &agent.current_version {
                None => Some(SkipReason::UnknownVersion),
                Some(version) if version == spec.target_key() => Some(SkipReason::AlreadyAtTarget),
                Some(_) if !agent.healthy => Some(SkipReason::Unhealthy),
                Some(_) => None,
            };
            match reason {
                Some(reason) => skipped.push(SkippedAgent {
                    uid: agent.uid,
                    reason,
                }),
                None => eligible.push((order_key(&id, &agent.uid), agent)),
            }
        }
        if eligible.is_empty() {
            return Err(RolloutError::NoAgents {
                selected,
                skipped: skipped.len(),
            });
        }
        eligible.sort_by_key(|(key, agent)| (*key, agent.uid));

        let total = eligible.len();
        // Share validated to lie in (0, 1]; at least one canary, never more than everyone.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let canary_count = ((spec.canary_share * total as f64).ceil() as usize).clamp(1, total);
        let mut canaries: Vec<&AgentSnapshot> = Vec::with_capacity(canary_count);
        let mut chosen = BTreeSet::new();
        for connected_pass in [true, false] {
            for (position, (_, agent)) in eligible.iter().enumerate() {
                if canaries.len() == canary_count {
                    break;
                }
                if agent.connected == connected_pass {
                    canaries.push(agent);
                    chosen.insert(position);
                }
            }
        }
        let rest = eligible
            .iter()
            .enumerate()
            .filter(|(position, _)| !chosen.contains(position))
            .map(|(_, (_, agent))| *agent);
        let ordered: Vec<&AgentSnapshot> = canaries.iter().copied().chain(rest).collect();

        let mut sizes = vec![canary_count];
        sizes.extend(batch_sizes(&spec.batches, total - canary_count));
        let mut waves = Vec::with_capacity(sizes.len());
        let mut start = 0u32;
        for (wave_index, size) in sizes.iter().enumerate() {
            let size32 =
                u32::try_from(*size).map_err(|_| RolloutError::TooManyAgents { count: total })?;
            let budget = if wave_index == 0 {
                0
            } else {
                spec.failure_budget.allowed(*size)
            };
            waves.push(Wave {
                start,
                end: start + size32,
                budget: u32::try_from(budget).unwrap_or(u32::MAX),
                settled: 0,
                failed: 0,
                started_at: None,
                settled_at: None,
            });
            start += size32;
        }

        let mut agents = Vec::with_capacity(total);
        let mut index = HashMap::with_capacity(total);
        for (wave_index, wave) in (0u32..).zip(&waves) {
            for position in wave.start..wave.end {
                let snapshot = ordered[position as usize];
                // Eligible agents always have a version (checked above).
                let version = snapshot.current_version.clone().unwrap_or_default();
                index.insert(snapshot.uid, position);
                agents.push(AgentProgress {
                    uid: snapshot.uid,
                    wave: wave_index,
                    previous_version: version.clone(),
                    reported_version: version,
                    connected: snapshot.connected,
                    phase: AgentPhase::Pending,
                    reverted: false,
                    revert_refusal: None,
                    health: None,
                    deadline: None,
                });
            }
        }
        tracing::debug!(rollout = %id, agents = total, waves = waves.len(), "rollout planned");
        Ok(Rollout {
            data: RolloutData {
                id,
                spec,
                created_at: now,
                clock: now,
                sequence: 0,
                state: RolloutState::Planned,
                agents,
                waves,
                skipped,
                pending_reverts: 0,
            },
            index,
            deadlines: BTreeSet::new(),
        })
    }
}

/// FNV-1a (64 bit) over the rollout id, a separator and the uid: stable across processes and
/// platforms, so a re-plan with the same id picks the same canaries.
fn order_key(id: &RolloutId, uid: &InstanceUid) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    id.as_str()
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(uid.as_bytes())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
}
