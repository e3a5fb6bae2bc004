//! [`PostgresStore`]: the fleet store in a PostgreSQL database, which several server replicas
//! can share.
//!
//! # One connection, on a worker thread
//! The store holds one connection, owned by a dedicated OS thread. Every store method packs
//! its work into a job (a closure taking the connection), sends it over a channel and blocks
//! until the reply arrives, as a SQLite call blocks on its file. The detour is needed because
//! the server calls the store from inside tokio tasks, and `postgres::Client` runs its own
//! runtime and panics when used from a thread already inside one; the worker is a plain
//! thread, so the client is only ever used there. Arguments travel to the worker owned,
//! encoded (JSON, arrays of columns) on the calling thread; rows come back raw and are decoded
//! on the calling thread too. The thread ends, closing the connection, when the store is
//! dropped.
//!
//! One connection per server is enough: the server keeps its store behind a mutex, so its
//! calls are serialised anyway, and each is one transaction. Several replicas each hold their
//! own connection; they coordinate through row locks (`SELECT ... FOR UPDATE` on a rollout
//! before appending a step), primary keys (`ON CONFLICT`) and two advisory locks (migrations,
//! audit positions).
//!
//! # Reconnecting
//! When the connection breaks (PostgreSQL restarted, the session was terminated, the network
//! dropped), the call that finds out fails with [`StoreError::Postgres`]: its transaction was
//! rolled back, nothing was written. The next call reconnects first, so a restarted database
//! is survived without restarting the server; while the database stays down, each call fails
//! with [`StoreError::Postgres`] after at most [`PostgresOptions::connect_timeout`].
//!
//! # Schema
//! Versioned migrations of PostgreSQL's own (`migrations.rs`) in one transaction under a
//! fixed advisory lock, so replicas starting together migrate once. Values are encoded as in
//! SQLite (milliseconds and bit-cast `u64`s in `BIGINT`, JSON in `TEXT`, digests in `BYTEA`),
//! and every list has SQLite's order, text sorted bytewise.

mod agents;
mod audit;
mod catalog;
mod codec;
mod forwarded;
mod identity;
mod lease;
mod migrations;
mod relay;
mod rollouts;
#[cfg(all(test, feature = "postgres"))]
mod test_support;
mod worker;

use std::time::Duration;

use opamp_proto::InstanceUid;

#[cfg(feature = "server")]
pub(crate) use self::forwarded::{ForwardedAnswer, ForwardedRequest};
pub use self::lease::{CoordinatorLease, LeaseHolder, LeaseToken};
#[cfg(feature = "server")]
pub(crate) use self::relay::{AgentRelay, Heard, Presence, RelayListener, RelayMessage};

use self::catalog::OwnedConfigKey;
use self::codec::pg;
use self::worker::{ConnectSettings, Worker};
use super::{
    AgentDetails, AgentRecord, AuditQuery, ConfigEntry, EnrollmentOutcome, FleetStore,
    PackageEntry, RolloutSummary, StoreError, StoredAudit, StoredEvent,
};
use crate::audit::AuditRecord;
use crate::rollout::RolloutId;
use crate::time::Timestamp;

/// Tuning for [`PostgresStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// A full rollout snapshot is written after this many events without one (and on every
    /// status change); default 1000, as for SQLite. Bounds the replay work on load.
    pub snapshot_interval: u64,
    /// How long connecting (and reconnecting) may take before the call fails; default 5 s.
    /// A `connect_timeout` in the URL takes precedence.
    pub connect_timeout: Duration,
    /// The session's `statement_timeout`: a statement running longer is cancelled and its
    /// call fails; default 30 s, zero for none. Migrations run without it.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            snapshot_interval: 1_000,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresOptions {
    /// Sets [`PostgresOptions::snapshot_interval`] (at least 1).
    #[must_use]
    pub fn snapshot_interval(mut self, events: u64) -> Self {
        self.snapshot_interval = events.max(1);
        self
    }

    /// Sets [`PostgresOptions::connect_timeout`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::statement_timeout`] (zero for none).
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }
}

/// The fleet store in a PostgreSQL database: versioned migrations, and one connection, owned
/// by a worker thread of the store's own, which reconnects after a failure.
///
/// Every method may be called from inside a tokio runtime (it blocks until the database
/// answers, as [`SqliteStore`](crate::store::SqliteStore) blocks on its file). When the
/// connection breaks, the call that finds out fails with [`StoreError::Postgres`] and the next
/// one reconnects, so a restarted database is survived without restarting the server.
///
/// # Example
/// ```no_run
/// use opamp_fleet::store::{FleetStore, PostgresOptions, PostgresStore};
///
/// let store = PostgresStore::connect(
///     "postgres://opamp:secret@db.example/fleet",
///     PostgresOptions::default(),
/// )?;
/// store.check_integrity()?;
/// println!("{} rollouts", store.list_rollouts()?.len());
/// # Ok::<(), opamp_fleet::store::StoreError>(())
/// ```
pub struct PostgresStore {
    worker: Worker,
    options: PostgresOptions,
    /// When set, every write first checks that the coordinator lease still has this token.
    fence: Option<LeaseToken>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (and its password) stays on the worker thread.
        f.debug_struct("PostgresStore")
            .field("options", &self.options)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// the `key=value` form) and applies pending migrations. Connections are unencrypted
    /// (`sslmode=require` fails): reach the database over a trusted network or a tunnel.
    ///
    /// May be called from inside a tokio runtime: the connection lives on the store's own
    /// thread.
    ///
    /// # Errors
    /// [`StoreError::Postgres`] (a malformed URL, an unreachable or refusing database, a
    /// failed migration) and [`StoreError::SchemaTooNew`].
    pub fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let worker = Worker::start(connect_settings(url, &options)?)?;
        worker.call(migrations::migrate)?;
        Ok(PostgresStore {
            worker,
            options,
            fence: None,
        })
    }

    /// Fences every later write with the coordinator lease's `token`: each write transaction
    /// first checks that the lease still has this token and has not expired, and fails with
    /// [`StoreError::Fenced`] otherwise, so a replica that lost the lease (paused, cut off)
    /// cannot write after another one took over. See [`CoordinatorLease`].
    pub fn fence(&mut self, token: LeaseToken) {
        self.fence = Some(token);
    }

    /// The newest schema version applied.
    ///
    /// # Errors
    /// Database errors.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.worker.call(migrations::schema_version)
    }

    /// The options it was connected with.
    #[must_use]
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }
}

/// How a worker connects to `url`: the options' connect timeout unless the URL sets one, and
/// `application_name` `opamp-fleet` unless the URL names one.
fn connect_settings(url: &str, options: &PostgresOptions) -> Result<ConnectSettings, StoreError> {
    let mut config: ::postgres::Config = url.parse().map_err(pg("parsing the database URL"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("opamp-fleet");
    }
    Ok(ConnectSettings {
        config,
        statement_timeout: options.statement_timeout,
    })
}

impl FleetStore for PostgresStore {
    fn check_integrity(&self) -> Result<(), StoreError> {
        self.worker.call(migrations::check)
    }

    fn list_rollouts(&self) -> Result<Vec<RolloutSummary>, StoreError> {
        self.list()
    }

    fn rollout_events(
        &self,
        rollout: &RolloutId,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(rollout, after)
    }

    fn upsert_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.write_agents(&[agent])
    }

    fn upsert_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        self.write_agents(agents)
    }

    fn touch_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        self.write_last_seen(agents)
    }

    fn delete_agents(&mut self, uids: &[InstanceUid]) -> Result<usize, StoreError> {
        self.remove_agents(uids)
    }

    fn agent(&self, uid: &InstanceUid) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self.read_agents(Some(uid))?.pop())
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read_agents(None)
    }

    fn agents_page(
        &self,
        after: Option<&InstanceUid>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.read_agents_page(after, limit)
    }

    fn agent_replicas(
        &self,
        uids: &[InstanceUid],
    ) -> Result<std::collections::BTreeMap<InstanceUid, String>, StoreError> {
        let uids = uids.to_vec();
        self.worker
            .call(move |client: &mut ::postgres::Client| relay::replicas_of(client, &uids))
    }

    fn upsert_agent_details(
        &mut self,
        details: &[(InstanceUid, &AgentDetails)],
    ) -> Result<(), StoreError> {
        self.write_details(details)
    }

    fn agent_details(&self, uid: &InstanceUid) -> Result<Option<AgentDetails>, StoreError> {
        self.read_details(uid)
    }

    fn add_package(&mut self, entry: &PackageEntry) -> Result<(), StoreError> {
        self.insert_package(entry)
    }

    fn package(&self, name: &str, version: &str) -> Result<Option<PackageEntry>, StoreError> {
        Ok(self.read_packages(Some((name, version)))?.pop())
    }

    fn packages(&self) -> Result<Vec<PackageEntry>, StoreError> {
        self.read_packages(None)
    }

    fn add_config(&mut self, entry: &ConfigEntry) -> Result<(), StoreError> {
        self.insert_config(entry)
    }

    fn config(&self, name: &str, version: &str) -> Result<Option<ConfigEntry>, StoreError> {
        let key = OwnedConfigKey::Version(name.to_owned(), version.to_owned());
        Ok(self.read_configs(key)?.pop())
    }

    fn config_by_hash(&self, hash: &[u8]) -> Result<Option<ConfigEntry>, StoreError> {
        Ok(self
            .read_configs(OwnedConfigKey::Hash(hash.to_vec()))?
            .pop())
    }

    fn configs(&self) -> Result<Vec<ConfigEntry>, StoreError> {
        self.read_configs(OwnedConfigKey::All)
    }

    fn audit_log(&self, query: &AuditQuery) -> Result<Vec<StoredAudit>, StoreError> {
        let query = query.clone();
        let rows = self
            .worker
            .call(move |client| audit::read(client, &query))?;
        audit::decode(rows)
    }

    fn add_enrollment_token(
        &mut self,
        token_sha256: &[u8; 32],
        created_by: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.insert_enrollment_token(token_sha256, created_by, created_at, expires_at)
    }

    fn enroll(
        &mut self,
        token_sha256: &[u8; 32],
        uid: InstanceUid,
        credential_sha256: &[u8; 32],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<EnrollmentOutcome, StoreError> {
        self.spend_enrollment_token(token_sha256, uid, credential_sha256, now, audit)
    }

    fn agent_credentials(&self) -> Result<Vec<(InstanceUid, [u8; 32])>, StoreError> {
        self.read_credentials()
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_clamp() {
        let options = PostgresOptions::default();
        assert_eq!(options.snapshot_interval, 1_000);
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.statement_timeout, Duration::from_secs(30));
        let options = options
            .snapshot_interval(0)
            .connect_timeout(Duration::from_secs(1))
            .statement_timeout(Duration::ZERO);
        assert_eq!(options.snapshot_interval, 1);
        assert_eq!(options.connect_timeout, Duration::from_secs(1));
        assert_eq!(options.statement_timeout, Duration::ZERO);
    }

    #[test]
    fn debug_output_never_shows_the_url() {
        let Some((url, _guard)) = test_support::scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains(&url) && printed.contains("snapshot_interval"));
    }
}
