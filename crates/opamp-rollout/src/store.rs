//! What the engine and the coordinator persist, behind [`RolloutStore`], and [`MemoryStore`],
//! an in-memory implementation for tests, simulations and embedders that keep state elsewhere.
//!
//! The rule the whole crate follows: a step is saved before any of its commands is carried
//! out ([`apply`]), so a restart never forgets an offer that was sent.

use std::collections::BTreeMap;

use crate::audit::AuditRecord;
use crate::error::RolloutError;
use crate::events::{Command, Event, RolloutStatus};
use crate::rollout::{Rollout, RolloutId};
use crate::time::Timestamp;

/// The rollout half of a fleet's persistence. Each method must be atomic: it writes all of
/// what it is given or nothing.
///
/// `opamp-fleet` implements it over SQLite; [`MemoryStore`] keeps it in memory.
pub trait RolloutStore {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores a newly planned rollout (its snapshot).
    ///
    /// # Errors
    /// When the id is taken or the backend fails.
    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), Self::Error>;

    /// Persists one engine step: `event` applied at `now` produced `commands` (among them the
    /// audit records to keep) and left `rollout` as it is now.
    ///
    /// # Errors
    /// When the backend fails; nothing is written then.
    fn record_step(
        &mut self,
        rollout: &Rollout,
        event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), Self::Error>;

    /// The rollout as last persisted.
    ///
    /// # Errors
    /// When the backend fails or the stored state is corrupt.
    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, Self::Error>;

    /// Every rollout that is not terminal (what a restarted coordinator resumes).
    ///
    /// # Errors
    /// As [`RolloutStore::load_rollout`].
    fn active_rollouts(&self) -> Result<Vec<Rollout>, Self::Error>;

    /// For each package and selector, the newest completed package rollout and when it
    /// finished: the versions agents that join later are brought to (older ones may be left
    /// out; the coordinator keeps only the newest).
    ///
    /// # Errors
    /// As [`RolloutStore::load_rollout`].
    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, Self::Error>;

    /// The rollouts that ended at or after `since`, with when they ended. A restarted
    /// coordinator offers again the reverts they left unconfirmed: an agent that was away when
    /// its rollout gave up waiting must still be sent back when it returns.
    ///
    /// # Errors
    /// As [`RolloutStore::load_rollout`].
    fn ended_since(&self, since: Timestamp) -> Result<Vec<(Rollout, Timestamp)>, Self::Error>;

    /// Appends audit records not tied to an engine step (catch-up offers, restarts).
    ///
    /// # Errors
    /// When the backend fails.
    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), Self::Error>;
}

/// Applies `event` to `rollout` and persists the step before returning the commands.
///
/// If persisting fails, `rollout` is reloaded from the store (so memory never runs ahead of
/// what a restart would see) and the error is returned; the caller must not carry out any
/// command then.
///
/// # Errors
/// [`RolloutError::InvalidTransition`] (nothing changed or written) or
/// [`RolloutError::Store`].
///
/// # Example
/// ```
/// use opamp_rollout::store::{apply, MemoryStore, RolloutStore};
/// use opamp_rollout::{AgentSnapshot, Event, LabelSelector, Rollout, RolloutId, RolloutSpec,
///     RolloutStatus, Timestamp};
/// use opamp_proto::InstanceUid;
///
/// let mut store = MemoryStore::default();
/// let fleet = vec![AgentSnapshot::new(InstanceUid::from([1; 16]), Default::default(),
///     Some("1.0.0".into()))];
/// let spec = RolloutSpec::new("otelcol", "1.1.0", LabelSelector::all(), "alice");
/// let now = Timestamp::from_millis(1);
/// let mut rollout = Rollout::plan(RolloutId::new("r1"), spec, &fleet, now)?;
/// store.create_rollout(&rollout)?;
/// apply(&mut store, &mut rollout, Event::Start { by: "alice".into() }, now)?;
///
/// let reloaded = store.load_rollout(&RolloutId::new("r1"))?.expect("stored");
/// assert_eq!(reloaded, rollout);
/// assert_eq!(reloaded.status(), RolloutStatus::Canary);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply<S: RolloutStore + ?Sized>(
    store: &mut S,
    rollout: &mut Rollout,
    event: Event,
    now: Timestamp,
) -> Result<Vec<Command>, RolloutError> {
    let commands = rollout.handle(event.clone(), now)?;
    if let Err(error) = store.record_step(rollout, &event, now, &commands) {
        tracing::error!(rollout = %rollout.id(), %error, "persisting a rollout step failed; reloading");
        if let Ok(Some(stored)) = store.load_rollout(rollout.id()) {
            *rollout = stored;
        }
        return Err(RolloutError::Store(Box::new(error)));
    }
    Ok(commands)
}

/// Why a [`MemoryStore`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryStoreError {
    /// Writes are refused on purpose ([`MemoryStore::fail_writes`]).
    #[error("the memory store refuses writes (simulated failure)")]
    WriteRefused,
    /// Replaying a rollout's logged events did not reproduce it.
    #[error("replaying rollout {rollout} failed: {reason}")]
    Replay {
        /// The rollout.
        rollout: RolloutId,
        /// What the engine said.
        reason: String,
    },
}

/// Steps logged after a snapshot before the next snapshot is taken.
const SNAPSHOT_EVERY: usize = 256;

/// One rollout as stored: a snapshot and the events applied since, like a database would keep
/// it (a 10,000-agent rollout is too large to copy on every step).
#[derive(Debug, Clone)]
struct StoredRollout {
    snapshot: Rollout,
    log: Vec<(Event, Timestamp)>,
    updated_at: Timestamp,
}

impl StoredRollout {
    fn load(&self) -> Result<Rollout, MemoryStoreError> {
        let mut rollout = self.snapshot.clone();
        for (event, at) in &self.log {
            rollout
                .handle(event.clone(), *at)
                .map_err(|error| MemoryStoreError::Replay {
                    rollout: rollout.id().clone(),
                    reason: error.to_string(),
                })?;
        }
        Ok(rollout)
    }
}

/// A [`RolloutStore`] in memory: each rollout as a snapshot plus the events applied since
/// (replayed on load), the audit log as a list. Writes can be made to fail
/// ([`MemoryStore::fail_writes`]) to exercise the paths a full disk takes.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    rollouts: BTreeMap<RolloutId, StoredRollout>,
    audit: Vec<AuditRecord>,
    steps: u64,
    failing: bool,
}

impl MemoryStore {
    /// Makes every later write fail with [`MemoryStoreError::WriteRefused`] (`true`) or
    /// succeed again.
    pub fn fail_writes(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The audit log, oldest first.
    #[must_use]
    pub fn audit(&self) -> &[AuditRecord] {
        &self.audit
    }

    /// Ids of every stored rollout.
    pub fn rollout_ids(&self) -> impl Iterator<Item = &RolloutId> {
        self.rollouts.keys()
    }

    /// Steps recorded so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn writable(&self) -> Result<(), MemoryStoreError> {
        if self.failing {
            Err(MemoryStoreError::WriteRefused)
        } else {
            Ok(())
        }
    }

    fn loaded(
        &self,
        keep: impl Fn(&Rollout, Timestamp) -> bool,
    ) -> Result<Vec<(Rollout, Timestamp)>, MemoryStoreError> {
        let mut found = Vec::new();
        for stored in self.rollouts.values() {
            let rollout = stored.load()?;
            if keep(&rollout, stored.updated_at) {
                found.push((rollout, stored.updated_at));
            }
        }
        Ok(found)
    }
}

impl RolloutStore for MemoryStore {
    type Error = MemoryStoreError;

    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), MemoryStoreError> {
        self.writable()?;
        self.rollouts.insert(
            rollout.id().clone(),
            StoredRollout {
                snapshot: rollout.clone(),
                log: Vec::new(),
                updated_at: rollout.created_at(),
            },
        );
        Ok(())
    }

    fn record_step(
        &mut self,
        rollout: &Rollout,
        event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), MemoryStoreError> {
        self.writable()?;
        let status_changed = commands
            .iter()
            .any(|command| matches!(command, Command::StateChanged { .. }));
        match self.rollouts.get_mut(rollout.id()) {
            Some(stored) if !status_changed && stored.log.len() < SNAPSHOT_EVERY => {
                stored.log.push((event.clone(), now));
                stored.updated_at = now;
            }
            _ => {
                self.rollouts.insert(
                    rollout.id().clone(),
                    StoredRollout {
                        snapshot: rollout.clone(),
                        log: Vec::new(),
                        updated_at: now,
                    },
                );
            }
        }
        self.audit
            .extend(commands.iter().filter_map(|command| match command {
                Command::Audit(record) => Some(record.clone()),
                _ => None,
            }));
        self.steps += 1;
        Ok(())
    }

    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, MemoryStoreError> {
        self.rollouts.get(id).map(StoredRollout::load).transpose()
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, MemoryStoreError> {
        let active = self.loaded(|rollout, _| !rollout.is_terminal())?;
        Ok(active.into_iter().map(|(rollout, _)| rollout).collect())
    }

    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, MemoryStoreError> {
        self.loaded(|rollout, _| {
            rollout.status() == RolloutStatus::Completed && rollout.spec().target_kind.is_package()
        })
    }

    fn ended_since(&self, since: Timestamp) -> Result<Vec<(Rollout, Timestamp)>, MemoryStoreError> {
        self.loaded(|rollout, at| rollout.is_terminal() && at >= since)
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), MemoryStoreError> {
        self.writable()?;
        self.audit.extend_from_slice(records);
        Ok(())
    }
}
