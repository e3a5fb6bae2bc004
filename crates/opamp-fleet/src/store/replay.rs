//! What every backend does the same way with the rollouts it reads back: rebuild one from its
//! snapshot and the events logged after it, and pick the rollouts a restarted coordinator
//! needs from the list of summaries.

use std::collections::HashSet;

use super::{RolloutSummary, StoreError, StoredEvent};
use crate::events::RolloutStatus;
use crate::rollout::{Rollout, RolloutId};
use crate::time::Timestamp;

/// Rebuilds rollout `id` from its snapshot (JSON, taken at `snapshot_sequence`) by replaying
/// `events` (those logged after it, in order), checking that the result is at `sequence`,
/// the step the store recorded last. The engine is deterministic, so this is the exact state.
///
/// # Errors
/// [`StoreError::Json`] for an unreadable snapshot; [`StoreError::Corrupt`] when the snapshot,
/// the events and the recorded step disagree.
pub(super) fn rebuild(
    id: &RolloutId,
    snapshot: &str,
    snapshot_sequence: u64,
    events: impl IntoIterator<Item = StoredEvent>,
    sequence: u64,
) -> Result<Rollout, StoreError> {
    let mut rollout: Rollout =
        serde_json::from_str(snapshot).map_err(|source| StoreError::Json {
            context: "decoding a rollout snapshot",
            source,
        })?;
    if rollout.sequence() != snapshot_sequence {
        return Err(StoreError::Corrupt {
            what: format!(
                "rollout {id} snapshot is at step {} not {snapshot_sequence}",
                rollout.sequence()
            ),
        });
    }
    for stored in events {
        rollout
            .handle(stored.event, stored.at)
            .map_err(|error| StoreError::Corrupt {
                what: format!(
                    "rollout {id} replay of step {} failed: {error}",
                    stored.sequence
                ),
            })?;
        if rollout.sequence() != stored.sequence {
            return Err(StoreError::Corrupt {
                what: format!(
                    "rollout {id} replay reached step {} at logged step {}",
                    rollout.sequence(),
                    stored.sequence
                ),
            });
        }
    }
    if rollout.sequence() != sequence {
        return Err(StoreError::Corrupt {
            what: format!(
                "rollout {id} replay ended at step {} but {sequence} were recorded",
                rollout.sequence()
            ),
        });
    }
    Ok(rollout)
}

/// The rollouts of `summaries` that are not terminal, loaded with `load`.
pub(super) fn active(
    summaries: Vec<RolloutSummary>,
    mut load: impl FnMut(&RolloutId) -> Result<Option<Rollout>, StoreError>,
) -> Result<Vec<Rollout>, StoreError> {
    let mut active = Vec::new();
    for summary in summaries {
        if !summary.status.is_terminal()
            && let Some(rollout) = load(&summary.id)?
        {
            active.push(rollout);
        }
    }
    Ok(active)
}

/// The newest completed package rollout per package and selector, with when it finished.
pub(super) fn standing(
    summaries: Vec<RolloutSummary>,
    mut load: impl FnMut(&RolloutId) -> Result<Option<Rollout>, StoreError>,
) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
    // Only the newest completed package rollout per package and selector stands: skipping
    // the others by their summary keeps start-up from loading the whole history.
    let mut seen = HashSet::new();
    let mut completed: Vec<_> = summaries
        .into_iter()
        .filter(|summary| summary.status == RolloutStatus::Completed)
        // Config rollouts leave nothing standing (and may share a package's name).
        .filter(|summary| summary.target_kind.is_package())
        .collect();
    completed.sort_by_key(|summary| std::cmp::Reverse(summary.updated_at));
    let mut standing = Vec::new();
    for summary in completed {
        if !seen.insert((summary.package.clone(), summary.selector.clone())) {
            continue;
        }
        if let Some(rollout) = load(&summary.id)? {
            standing.push((rollout, summary.updated_at));
        }
    }
    Ok(standing)
}

/// The terminal rollouts of `summaries` updated at or after `since`, with when.
pub(super) fn ended_since(
    summaries: Vec<RolloutSummary>,
    since: Timestamp,
    mut load: impl FnMut(&RolloutId) -> Result<Option<Rollout>, StoreError>,
) -> Result<Vec<(Rollout, Timestamp)>, StoreError> {
    let mut ended = Vec::new();
    for summary in summaries {
        if summary.status.is_terminal()
            && summary.updated_at >= since
            && let Some(rollout) = load(&summary.id)?
        {
            ended.push((rollout, summary.updated_at));
        }
    }
    Ok(ended)
}
