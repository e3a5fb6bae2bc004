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

/// A [`MemoryStore`] write refused on purpose ([`MemoryStore::fail_writes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the memory store refuses writes (simulated failure)")]
#[non_exhaustive]
pub struct WriteRefused;

/// A [`RolloutStore`] in memory: rollouts as snapshots, the audit log as a list. Writes can
/// be made to fail ([`MemoryStore::fail_writes`]) to exercise the paths a full disk takes.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    rollouts: BTreeMap<RolloutId, (Rollout, Timestamp)>,
    audit: Vec<AuditRecord>,
    steps: u64,
    failing: bool,
}

impl MemoryStore {
    /// Makes every later write fail with [`WriteRefused`] (`true`) or succeed again.
    pub fn fail_writes(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The audit log, oldest first.
    #[must_use]
    pub fn audit(&self) -> &[AuditRecord] {
        &self.audit
    }

    /// Every stored rollout with when it was last written.
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values().map(|(rollout, _)| rollout)
    }

    /// Steps recorded so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn writable(&self) -> Result<(), WriteRefused> {
        if self.failing {
            Err(WriteRefused)
        } else {
            Ok(())
        }
    }
}

impl RolloutStore for MemoryStore {
    type Error = WriteRefused;

    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), WriteRefused> {
        self.writable()?;
        self.rollouts.insert(
            rollout.id().clone(),
            (rollout.clone(), rollout.created_at()),
        );
        Ok(())
    }

    fn record_step(
        &mut self,
        rollout: &Rollout,
        _event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), WriteRefused> {
        self.writable()?;
        self.rollouts
            .insert(rollout.id().clone(), (rollout.clone(), now));
        self.audit
            .extend(commands.iter().filter_map(|command| match command {
                Command::Audit(record) => Some(record.clone()),
                _ => None,
            }));
        self.steps += 1;
        Ok(())
    }

    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, WriteRefused> {
        Ok(self.rollouts.get(id).map(|(rollout, _)| rollout.clone()))
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, WriteRefused> {
        Ok(self
            .rollouts
            .values()
            .filter(|(rollout, _)| !rollout.is_terminal())
            .map(|(rollout, _)| rollout.clone())
            .collect())
    }

    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, WriteRefused> {
        Ok(self
            .rollouts
            .values()
            .filter(|(rollout, _)| {
                rollout.status() == RolloutStatus::Completed
                    && rollout.spec().target_kind.is_package()
            })
            .cloned()
            .collect())
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), WriteRefused> {
        self.writable()?;
        self.audit.extend_from_slice(records);
        Ok(())
    }
}
