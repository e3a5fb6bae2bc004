//! Rollout steps the store could not save (disk full, database locked), kept in order and
//! retried with back-off.
//!
//! A step that fails to persist is rolled back in memory (see [`crate::store::apply`]); the
//! event that caused it (an agent's "installed" report, say) is news the agent will not send
//! again, so dropping it would leave the rollout waiting for something that already happened.
//! While a rollout has unsaved steps, later events for it queue behind them, so the engine
//! still sees every event in arrival order.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::events::Event;
use crate::rollout::RolloutId;
use crate::time::Timestamp;

/// First retry delay after a failed save.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// Longest delay between two retries.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Unsaved events per rollout and when to try again.
#[derive(Debug)]
pub(crate) struct UnsavedSteps {
    queue: BTreeMap<RolloutId, VecDeque<(Event, Timestamp)>>,
    retry_at: Option<Timestamp>,
    delay: Duration,
}

impl Default for UnsavedSteps {
    fn default() -> Self {
        Self {
            queue: BTreeMap::new(),
            retry_at: None,
            delay: FIRST_DELAY,
        }
    }
}

impl UnsavedSteps {
    /// Whether `id` has events waiting (new ones must queue behind them).
    pub(crate) fn holds(&self, id: &RolloutId) -> bool {
        self.queue.contains_key(id)
    }

    /// Queues `event` (received at `at`) for `id` and schedules a retry if none is.
    pub(crate) fn push(&mut self, id: RolloutId, event: Event, at: Timestamp) {
        self.queue.entry(id).or_default().push_back((event, at));
        if self.retry_at.is_none() {
            self.retry_at = Some(at.saturating_add(self.delay));
        }
    }

    /// When the next retry is due.
    pub(crate) fn retry_at(&self) -> Option<Timestamp> {
        self.retry_at
    }

    /// Whether a retry is due at `now`.
    pub(crate) fn due(&self, now: Timestamp) -> bool {
        self.retry_at.is_some_and(|at| at <= now)
    }

    /// Rollouts with waiting events.
    pub(crate) fn rollouts(&self) -> Vec<RolloutId> {
        self.queue.keys().cloned().collect()
    }

    /// The oldest waiting event of `id`.
    pub(crate) fn front(&self, id: &RolloutId) -> Option<(Event, Timestamp)> {
        self.queue.get(id)?.front().cloned()
    }

    /// Drops the oldest waiting event of `id` (saved, or refused by the engine).
    pub(crate) fn pop(&mut self, id: &RolloutId) {
        if let Some(events) = self.queue.get_mut(id) {
            events.pop_front();
            if events.is_empty() {
                self.queue.remove(id);
            }
        }
    }

    /// A retry round ended: with everything saved the back-off resets; otherwise the next
    /// round waits twice as long (up to [`MAX_DELAY`]).
    pub(crate) fn round_done(&mut self, all_saved: bool, now: Timestamp) {
        if all_saved && self.queue.is_empty() {
            self.retry_at = None;
            self.delay = FIRST_DELAY;
        } else {
            self.delay = (self.delay * 2).min(MAX_DELAY);
            self.retry_at = Some(now.saturating_add(self.delay));
        }
    }

    /// Events waiting in all.
    pub(crate) fn len(&self) -> usize {
        self.queue.values().map(VecDeque::len).sum()
    }
}
