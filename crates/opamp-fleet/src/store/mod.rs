//! Persistence behind the [`FleetStore`] trait, with [`SqliteStore`] as the embedded default.
//!
//! # Rollouts: snapshot plus event log
//! A rollout of 10,000 agents serialises to about 2 MB, too much to rewrite on every agent
//! report. The store therefore keeps, per rollout, a full snapshot and the log of events applied
//! since (the engine is deterministic, so replaying them rebuilds the exact state). Each engine
//! step is persisted by [`RolloutStore::record_step`] in one transaction: the event, the audit
//! records the step produced and the rollout's status, plus a fresh snapshot when the status
//! changed or enough events accumulated. [`RolloutStore::load_rollout`] reads the snapshot and
//! replays the newer events.
//!
//! # Driving a rollout
//! Use [`apply`]: it runs [`Rollout::handle`](crate::Rollout::handle) and persists the step before returning the
//! commands, so nothing is carried out that a restart would forget.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod columns;
mod configs;
mod details;
#[cfg(feature = "sqlite")]
mod identity;
#[cfg(feature = "sqlite")]
mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod replay;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_configs;

use std::path::PathBuf;

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

#[cfg(all(feature = "postgres", feature = "server"))]
pub(crate) use self::postgres::{
    AgentRelay, ForwardedAnswer, ForwardedRequest, Heard, Presence, RelayListener, RelayMessage,
};
#[cfg(feature = "postgres")]
pub use self::postgres::{
    CoordinatorLease, LeaseHolder, LeaseToken, PostgresOptions, PostgresStore,
};
pub use configs::{ConfigEntry, ConfigFile};
pub use details::{
    AgentDetails, ConfigFileView, ConnectionView, EffectiveConfigView, HealthNode,
    PackageStatusView, RemoteConfigStatusView,
};
pub use opamp_rollout::AgentRecord;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use crate::audit::AuditRecord;
use crate::events::{Event, RolloutStatus};
use crate::rollout::RolloutId;
use crate::spec::TargetKind;
use crate::time::Timestamp;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("{context}")]
    #[cfg(feature = "sqlite")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The database error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL database failed, or could not be reached.
    #[error("{context}")]
    #[cfg(feature = "postgres")]
    Postgres {
        /// What the store was doing.
        context: &'static str,
        /// The database error.
        #[source]
        source: ::postgres::Error,
    },
    /// A stored JSON value could not be written or read.
    #[error("{context}")]
    Json {
        /// What the store was doing.
        context: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// This replica no longer holds the coordinator lease its writes are fenced with (see
    /// `PostgresStore::fence`): another replica took over, or the lease expired.
    #[error(
        "write refused: the coordinator lease is no longer held with token {token} (now {current:?})"
    )]
    Fenced {
        /// The token this store writes with.
        token: i64,
        /// The lease's token now, when it exists.
        current: Option<i64>,
    },
    /// The database was written by a newer version of this software.
    #[error("database schema version {found} is newer than the supported {supported}")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// Stored data contradicts itself.
    #[error("corrupt store: {what}")]
    Corrupt {
        /// What is wrong.
        what: String,
    },
    /// The record exists already (with different content).
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What.
        what: String,
    },
}

/// A package file in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PackageEntry {
    /// Package name (`otelcol-contrib`).
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the file (`DownloadableFile.content_hash`).
    pub content_hash: Vec<u8>,
    /// File size in bytes.
    pub size: u64,
    /// The signature relayed to agents (`DownloadableFile.signature`).
    pub signature: Vec<u8>,
    /// Where the server keeps the file.
    pub file_path: PathBuf,
    /// When it was added.
    pub added_at: Timestamp,
    /// The operator who added it through the admin API (`None` when added otherwise).
    #[serde(default)]
    pub added_by: Option<String>,
}

impl PackageEntry {
    /// Builds an entry.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        content_hash: Vec<u8>,
        size: u64,
        signature: Vec<u8>,
        file_path: PathBuf,
        added_at: Timestamp,
    ) -> Self {
        PackageEntry {
            name: name.into(),
            version: version.into(),
            content_hash,
            size,
            signature,
            file_path,
            added_at,
            added_by: None,
        }
    }

    /// Names the operator who added it.
    #[must_use]
    pub fn with_added_by(mut self, operator: impl Into<String>) -> Self {
        self.added_by = Some(operator.into());
        self
    }
}

/// One row of the rollout list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutSummary {
    /// Id.
    pub id: RolloutId,
    /// A package or a config rollout (`package` is then the config's name).
    #[serde(default, skip_serializing_if = "TargetKind::is_package")]
    pub target_kind: TargetKind,
    /// Package.
    pub package: String,
    /// Target version.
    pub target_version: String,
    /// Selector, as text.
    pub selector: String,
    /// Status after the last persisted step.
    pub status: RolloutStatus,
    /// When planned.
    pub created_at: Timestamp,
    /// When last changed.
    pub updated_at: Timestamp,
}

/// An event applied to a rollout, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredEvent {
    /// The rollout's sequence number after applying it (1 for the first event).
    pub sequence: u64,
    /// The `now` it was applied at.
    pub at: Timestamp,
    /// The event.
    pub event: Event,
}

/// An audit record with its position in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredAudit {
    /// Position in the log (increasing, for paging and event streams).
    pub position: i64,
    /// The record.
    pub record: AuditRecord,
}

/// Which audit records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this rollout's records.
    pub rollout: Option<RolloutId>,
    /// Only records after this position.
    pub after: Option<i64>,
    /// At most this many (oldest first); `None` means all.
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// Every record.
    #[must_use]
    pub fn all() -> Self {
        AuditQuery::default()
    }

    /// Only `rollout`'s records.
    #[must_use]
    pub fn rollout(mut self, rollout: RolloutId) -> Self {
        self.rollout = Some(rollout);
        self
    }

    /// Only records after `position`.
    #[must_use]
    pub fn after(mut self, position: i64) -> Self {
        self.after = Some(position);
        self
    }

    /// At most `limit` records.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// What [`FleetStore::enroll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrollmentOutcome {
    /// The token was valid and is now spent; the agent's credential is stored.
    Enrolled,
    /// No unused, unexpired token has this digest.
    TokenInvalid,
    /// The uid already has a credential (it was enrolled before): nothing changed.
    AlreadyEnrolled,
}

/// Everything the server persists. Implementations must make each method atomic; SQLite is the
/// embedded default. The server holds its store as `dyn FleetStore`, so a backend added by an
/// embedder needs no change to the server.
pub trait FleetStore: RolloutStore<Error = StoreError> + std::fmt::Debug {
    /// Checks, at start, that the store is usable: an intact database file for SQLite
    /// (`PRAGMA quick_check`), a reachable database with a known schema for a server
    /// database. A damage found here is reported now instead of as a failed read later.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] with what is wrong, or a database error.
    fn check_integrity(&self) -> Result<(), StoreError>;

    /// All rollouts, newest first.
    ///
    /// # Errors
    /// Database errors.
    fn list_rollouts(&self) -> Result<Vec<RolloutSummary>, StoreError>;

    /// The events applied to `rollout` with a sequence above `after`, in order.
    ///
    /// # Errors
    /// Database errors.
    fn rollout_events(
        &self,
        rollout: &RolloutId,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Inserts or replaces an agent's registry row.
    ///
    /// # Errors
    /// Database errors.
    fn upsert_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError>;

    /// Inserts or replaces several registry rows together. Backends should make this one
    /// transaction: the server flushes a burst of agent reports at once, and one commit (one
    /// fsync) per row made registering 10,000 agents take minutes with `synchronous=FULL`.
    ///
    /// # Errors
    /// Database errors; a backend that batches writes none of the rows then.
    fn upsert_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        agents.iter().try_for_each(|agent| self.upsert_agent(agent))
    }

    /// Writes only the `last_seen` column of registry rows whose other columns are as last
    /// written: agents that sent nothing but heartbeats. At a large fleet's heartbeat rate
    /// these are most writes, and rewriting whole rows (labels, versions) made them most of
    /// an idle server's work. A row the store does not have may be left absent. The default
    /// writes the whole rows; backends should update the one column in one transaction.
    ///
    /// # Errors
    /// Database errors; a backend that batches writes none of the rows then.
    fn touch_agents(&mut self, agents: &[&AgentRecord]) -> Result<(), StoreError> {
        self.upsert_agents(agents)
    }

    /// Removes the registry rows of `uids` (agents the server forgets); returns how many
    /// existed. Rollout history and the audit log keep naming them.
    ///
    /// # Errors
    /// Database errors; a backend that batches removes none of the rows then.
    fn delete_agents(&mut self, uids: &[InstanceUid]) -> Result<usize, StoreError>;

    /// One agent.
    ///
    /// # Errors
    /// Database errors.
    fn agent(&self, uid: &InstanceUid) -> Result<Option<AgentRecord>, StoreError>;

    /// All agents, ordered by uid.
    ///
    /// # Errors
    /// Database errors.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// At most `limit` agents whose uid comes after `after` (from the first without it), in
    /// the order of [`FleetStore::agents`]: a page, continued from its last uid. The default
    /// reads every agent; the bundled backends ask the database for the page only.
    ///
    /// # Errors
    /// Database errors.
    fn agents_page(
        &self,
        after: Option<&InstanceUid>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let after = after.map(ToString::to_string);
        Ok(self
            .agents()?
            .into_iter()
            .filter(|agent| {
                after
                    .as_deref()
                    .is_none_or(|after| agent.uid.to_string().as_str() > after)
            })
            .take(limit)
            .collect())
    }

    /// Which replica holds each of `uids`' connections, for those a replica recorded (several
    /// server replicas on one PostgreSQL database). Stores without replicas record none.
    ///
    /// # Errors
    /// Database errors.
    fn agent_replicas(
        &self,
        uids: &[InstanceUid],
    ) -> Result<std::collections::BTreeMap<InstanceUid, String>, StoreError> {
        let _ = uids;
        Ok(std::collections::BTreeMap::new())
    }

    /// Inserts or replaces the details of several agents together (one transaction where the
    /// backend can).
    ///
    /// # Errors
    /// Database errors; a backend that batches writes none of the rows then.
    fn upsert_agent_details(
        &mut self,
        details: &[(InstanceUid, &AgentDetails)],
    ) -> Result<(), StoreError>;

    /// One agent's details, when it ever reported any.
    ///
    /// # Errors
    /// Database errors.
    fn agent_details(&self, uid: &InstanceUid) -> Result<Option<AgentDetails>, StoreError>;

    /// Adds a catalog entry. Adding the same name and version again with identical content is a
    /// no-op; with different content it is refused (a version's bytes never change).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`], or a database error.
    fn add_package(&mut self, entry: &PackageEntry) -> Result<(), StoreError>;

    /// One catalog entry.
    ///
    /// # Errors
    /// Database errors.
    fn package(&self, name: &str, version: &str) -> Result<Option<PackageEntry>, StoreError>;

    /// All catalog entries, by name then insertion.
    ///
    /// # Errors
    /// Database errors.
    fn packages(&self) -> Result<Vec<PackageEntry>, StoreError>;

    /// Adds a config version to the config catalog. The same name and version again with
    /// identical content is a no-op; with different content it is refused.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`], or a database error.
    fn add_config(&mut self, entry: &ConfigEntry) -> Result<(), StoreError>;

    /// One config version.
    ///
    /// # Errors
    /// Database errors.
    fn config(&self, name: &str, version: &str) -> Result<Option<ConfigEntry>, StoreError>;

    /// A config version whose hash is `hash` (the oldest, when several share it).
    ///
    /// # Errors
    /// Database errors.
    fn config_by_hash(&self, hash: &[u8]) -> Result<Option<ConfigEntry>, StoreError>;

    /// Every config version, by name then insertion.
    ///
    /// # Errors
    /// Database errors.
    fn configs(&self) -> Result<Vec<ConfigEntry>, StoreError>;

    /// Reads the audit log, oldest first.
    ///
    /// # Errors
    /// Database errors.
    fn audit_log(&self, query: &AuditQuery) -> Result<Vec<StoredAudit>, StoreError>;

    /// Stores a new enrollment token (only its SHA-256 digest), valid until `expires_at`.
    ///
    /// # Errors
    /// Database errors.
    fn add_enrollment_token(
        &mut self,
        token_sha256: &[u8; 32],
        created_by: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Spends the token with digest `token_sha256` (unused and not expired at `now`) and
    /// binds `uid` to the credential with digest `credential_sha256`, with `audit`, in one
    /// transaction: a token is spent exactly once even when two agents race for it.
    ///
    /// # Errors
    /// Database errors (nothing is changed then).
    fn enroll(
        &mut self,
        token_sha256: &[u8; 32],
        uid: InstanceUid,
        credential_sha256: &[u8; 32],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<EnrollmentOutcome, StoreError>;

    /// Every enrolled agent with the digest of its credential.
    ///
    /// # Errors
    /// Database errors; [`StoreError::Corrupt`] for a malformed row.
    fn agent_credentials(&self) -> Result<Vec<(InstanceUid, [u8; 32])>, StoreError>;
}

pub use opamp_rollout::store::{RolloutStore, apply};
