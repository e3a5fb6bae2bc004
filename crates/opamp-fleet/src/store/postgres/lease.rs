//! The coordinator lease: several server replicas share one database, and exactly one of them
//! at a time (the holder of the lease) runs the server. The lease is one row with an expiry
//! set by the database's clock, so replicas' clocks never have to agree.
//!
//! - Taking it: a replica may take the lease when it expired; each take increments the
//!   *fencing token*.
//! - Keeping it: the holder renews it well before it expires (every third of its length).
//! - Fencing: a [`PostgresStore`](super::PostgresStore) given the token
//!   ([`PostgresStore::fence`](super::PostgresStore::fence)) checks, inside every write
//!   transaction, that the lease still has this token and has not expired, holding a share
//!   lock on the row until it commits. A holder that was paused (a stopped VM, a long GC, a
//!   partition) and lost the lease therefore cannot write one more step after another
//!   replica took over: the take waits for writes in flight, and every later write by the old
//!   holder sees a newer token and fails with [`StoreError::Fenced`].
//! - Giving it up: a clean shutdown expires the lease at once, so another replica takes over
//!   within its poll interval instead of a full lease length.

use std::time::Duration;

use ::postgres::Client;

use super::codec::pg;
use super::worker::Worker;
use crate::store::StoreError;

/// A fencing token: how many times the lease was taken, when this holder took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub i64);

/// Who holds the lease now, as the database sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The holder's name (its replica name).
    pub holder: String,
    /// Its fencing token.
    pub token: LeaseToken,
    /// Whether it has expired (by the database's clock).
    pub expired: bool,
}

/// The lease, on a connection of its own: renewing it must not wait behind a slow store write
/// on the server's main connection.
#[derive(Debug)]
pub struct CoordinatorLease {
    worker: Worker,
    holder: String,
    ttl: Duration,
}

/// `INTERVAL` text PostgreSQL parses, in milliseconds.
fn interval(ttl: Duration) -> String {
    format!("{} milliseconds", ttl.as_millis())
}

impl CoordinatorLease {
    /// Connects to the database at `url` on a connection of the lease's own, as `holder`
    /// (this replica's name), for leases of length `ttl`. Applies pending migrations, as
    /// [`PostgresStore::connect`](super::PostgresStore::connect) does.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`](super::PostgresStore::connect).
    pub fn connect(
        url: &str,
        options: super::PostgresOptions,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        // Statements on the lease must end well within its length, or a renewal stuck behind
        // a lock would outlive the lease it renews.
        let options = options.statement_timeout(ttl / 3);
        let worker = Worker::start(super::connect_settings(url, &options)?)?;
        worker.call(super::migrations::migrate)?;
        Ok(CoordinatorLease {
            worker,
            holder: holder.into(),
            ttl,
        })
    }

    /// This replica's name.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long the lease lasts without a renewal.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if nobody holds it (it never existed or has expired). `None`: another
    /// replica holds it.
    ///
    /// # Errors
    /// Database errors.
    pub fn try_acquire(&self) -> Result<Option<LeaseToken>, StoreError> {
        let holder = self.holder.clone();
        let ttl = interval(self.ttl);
        self.worker.call(move |client: &mut Client| {
            let row = client
                .query_opt(
                    "INSERT INTO coordinator_lease (id, holder, token, expires_at)
                     VALUES (1, $1, 1, now() + $2::TEXT::INTERVAL)
                     ON CONFLICT (id) DO UPDATE
                        SET holder = EXCLUDED.holder,
                            token = coordinator_lease.token + 1,
                            expires_at = EXCLUDED.expires_at
                        WHERE coordinator_lease.expires_at <= now()
                     RETURNING token",
                    &[&holder, &ttl],
                )
                .map_err(pg("taking the coordinator lease"))?;
            row.map(|row| row.try_get::<_, i64>(0).map(LeaseToken))
                .transpose()
                .map_err(pg("reading the coordinator lease"))
        })
    }

    /// Extends the lease held with `token` by its length from now. `false`: it is no longer
    /// this holder's (it expired, and possibly another replica took it).
    ///
    /// # Errors
    /// Database errors: the caller cannot know whether it still holds the lease, and must
    /// stop acting as the holder once the lease would have expired.
    pub fn renew(&self, token: LeaseToken) -> Result<bool, StoreError> {
        let holder = self.holder.clone();
        let ttl = interval(self.ttl);
        self.worker.call(move |client: &mut Client| {
            let renewed = client
                .execute(
                    "UPDATE coordinator_lease SET expires_at = now() + $3::TEXT::INTERVAL
                     WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > now()",
                    &[&holder, &token.0, &ttl],
                )
                .map_err(pg("renewing the coordinator lease"))?;
            Ok(renewed == 1)
        })
    }

    /// Gives the lease up at once (a clean shutdown), if this holder still has it.
    ///
    /// # Errors
    /// Database errors (the lease then simply expires).
    pub fn release(&self, token: LeaseToken) -> Result<(), StoreError> {
        let holder = self.holder.clone();
        self.worker.call(move |client: &mut Client| {
            client
                .execute(
                    "UPDATE coordinator_lease SET expires_at = now()
                     WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > now()",
                    &[&holder, &token.0],
                )
                .map_err(pg("giving up the coordinator lease"))?;
            Ok(())
        })
    }

    /// Who holds the lease, if it was ever taken.
    ///
    /// # Errors
    /// Database errors.
    pub fn current(&self) -> Result<Option<LeaseHolder>, StoreError> {
        self.worker.call(|client: &mut Client| {
            let row = client
                .query_opt(
                    "SELECT holder, token, expires_at <= now() FROM coordinator_lease WHERE id = 1",
                    &[],
                )
                .map_err(pg("reading the coordinator lease"))?;
            row.map(|row| {
                Ok(LeaseHolder {
                    holder: row.try_get(0)?,
                    token: LeaseToken(row.try_get(1)?),
                    expired: row.try_get(2)?,
                })
            })
            .transpose()
            .map_err(pg("reading the coordinator lease"))
        })
    }
}

/// Starts a write transaction; with a `fence`, first checks that this replica still holds the
/// lease with that token (see [`check_fence`]).
pub(super) fn begin_write(
    client: &mut Client,
    fence: Option<LeaseToken>,
) -> Result<::postgres::Transaction<'_>, StoreError> {
    let mut transaction = client.transaction().map_err(pg("starting a transaction"))?;
    if let Some(token) = fence {
        check_fence(&mut transaction, token)?;
    }
    Ok(transaction)
}

/// Inside a write transaction: fails with [`StoreError::Fenced`] unless the lease still has
/// `token` and has not expired, and holds a share lock on the lease row until the transaction
/// ends, so the lease cannot change hands while the write is in flight.
pub(super) fn check_fence(
    transaction: &mut ::postgres::Transaction<'_>,
    token: LeaseToken,
) -> Result<(), StoreError> {
    let row = transaction
        .query_opt(
            "SELECT token, expires_at > now() FROM coordinator_lease WHERE id = 1 FOR SHARE",
            &[],
        )
        .map_err(pg("checking the coordinator lease"))?;
    let current = row
        .map(|row| -> Result<(i64, bool), ::postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
        .transpose()
        .map_err(pg("checking the coordinator lease"))?;
    match current {
        Some((current, true)) if current == token.0 => Ok(()),
        other => Err(StoreError::Fenced {
            token: token.0,
            current: other.map(|(current, _)| current),
        }),
    }
}

#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)] // test code: a panic is a failed test
mod tests {
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::Labels;
    use crate::store::{AgentRecord, FleetStore};
    use crate::time::Timestamp;

    fn agent(i: u8) -> AgentRecord {
        AgentRecord::new(
            opamp_proto::InstanceUid::from([i; 16]),
            Labels::new(),
            1,
            Timestamp::from_millis(1),
        )
    }

    fn lease(url: &str, holder: &str, ttl: Duration) -> CoordinatorLease {
        CoordinatorLease::connect(url, PostgresOptions::default(), holder, ttl).unwrap()
    }

    /// One holder at a time; the next takes over only once the lease expired, with a newer
    /// token, and from then on the old holder can neither renew nor write.
    #[test]
    fn a_lease_has_one_holder_and_a_fenced_old_holder_cannot_write() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let ttl = Duration::from_millis(800);
        let mut old_store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let mut new_store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let (a, b) = (lease(&url, "a", ttl), lease(&url, "b", ttl));

        let first = a.try_acquire().unwrap().expect("a free lease is taken");
        assert_eq!(b.try_acquire().unwrap(), None, "held by a");
        assert!(a.renew(first).unwrap());
        old_store.fence(first);
        old_store.upsert_agent(&agent(1)).unwrap();
        let current = b.current().unwrap().unwrap();
        assert_eq!((current.holder.as_str(), current.token), ("a", first));
        assert!(!current.expired);

        // `a` stops renewing (paused, cut off): `b` takes over once the lease expired.
        let started = std::time::Instant::now();
        let second = loop {
            if let Some(token) = b.try_acquire().unwrap() {
                break token;
            }
            assert!(started.elapsed() < ttl * 5, "b never took the lease");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(started.elapsed() >= ttl / 2, "not before it expired");
        assert_eq!(second, LeaseToken(first.0 + 1));
        assert!(!a.renew(first).unwrap(), "the old holder cannot renew");
        new_store.fence(second);
        new_store.upsert_agent(&agent(2)).unwrap();

        // Every kind of write by the old holder is refused, and changes nothing.
        let refused = old_store.upsert_agent(&agent(3));
        assert!(
            matches!(refused, Err(StoreError::Fenced { token, current: Some(now) }) if token == first.0 && now == second.0),
            "{refused:?}"
        );
        assert!(matches!(
            old_store.delete_agents(&[agent(1).uid]),
            Err(StoreError::Fenced { .. })
        ));
        let uids: Vec<_> = new_store
            .agents()
            .unwrap()
            .into_iter()
            .map(|a| a.uid)
            .collect();
        assert_eq!(uids, [agent(1).uid, agent(2).uid]);
        // An unfenced store (a tool, a test) still writes.
        PostgresStore::connect(&url, PostgresOptions::default())
            .unwrap()
            .upsert_agent(&agent(4))
            .unwrap();
    }

    /// A clean shutdown gives the lease up: the next replica takes it at once, and the
    /// holder's fenced store can no longer write.
    #[test]
    fn a_released_lease_is_taken_at_once() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let ttl = Duration::from_secs(60);
        let (a, b) = (lease(&url, "a", ttl), lease(&url, "b", ttl));
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let first = a.try_acquire().unwrap().unwrap();
        store.fence(first);
        store.upsert_agent(&agent(1)).unwrap();
        a.release(first).unwrap();
        assert!(matches!(
            store.upsert_agent(&agent(1)),
            Err(StoreError::Fenced { .. })
        ));
        assert_eq!(b.try_acquire().unwrap(), Some(LeaseToken(first.0 + 1)));
        // Releasing a lease one no longer holds changes nothing.
        a.release(first).unwrap();
        assert!(!b.current().unwrap().unwrap().expired);
    }

    /// Replicas racing for a free lease: exactly one wins.
    #[test]
    fn racing_replicas_take_a_free_lease_once() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let leases: Vec<_> = (0..6)
            .map(|i| lease(&url, &format!("r{i}"), Duration::from_secs(60)))
            .collect();
        let barrier = std::sync::Barrier::new(leases.len());
        let winners = std::thread::scope(|scope| {
            let racers: Vec<_> = leases
                .iter()
                .map(|lease| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        lease.try_acquire().unwrap()
                    })
                })
                .collect();
            racers
                .into_iter()
                .filter_map(|racer| racer.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(winners, [LeaseToken(1)]);
    }
}
