//! What the store tests share: a fresh database of either backend, and a scripted rollout.

#![allow(dead_code)] // each test binary uses part of it
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::path::PathBuf;
use std::time::Duration;

use opamp_fleet::store::{FleetStore, SqliteOptions, SqliteStore, apply};
use opamp_fleet::{
    AgentSnapshot, BatchPlan, Command, Event, LabelSelector, Labels, Rollout, RolloutId,
    RolloutSpec, Timestamp,
};
use opamp_proto::InstanceUid;

pub(crate) const OLD: &str = "1.0.0";
pub(crate) const NEW: &str = "1.1.0";

/// The admin database of a throwaway PostgreSQL server (`.ci/postgres.sh` starts one).
pub(crate) const POSTGRES_URL_ENV: &str = "OPAMP_TEST_POSTGRES_URL";

pub(crate) fn uid(i: u32) -> InstanceUid {
    let mut bytes = [7u8; 16];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    InstanceUid::from(bytes)
}

pub(crate) fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(1_764_000_000_000 + seconds * 1_000)
}

pub(crate) fn planned(id: &str, agents: u32) -> Rollout {
    let fleet: Vec<AgentSnapshot> = (0..agents)
        .map(|i| AgentSnapshot::new(uid(i), Labels::new(), Some(OLD.into())))
        .collect();
    let spec = RolloutSpec::new("otelcol", NEW, LabelSelector::all(), "alice")
        .canary_share(0.1)
        .batches(BatchPlan::Share(0.5))
        .bake_time(Duration::from_secs(60));
    Rollout::plan(RolloutId::new(id), spec, &fleet, at(0)).expect("plan")
}

/// A fixed script of events: start, every offered agent installs and turns healthy, bakes pass.
/// Returns the events so a second copy can be driven identically.
pub(crate) fn script(rollout: &Rollout) -> Vec<(Event, Timestamp)> {
    let mut events = vec![(Event::Start { by: "alice".into() }, at(0))];
    for (wave_index, wave) in rollout.waves().iter().enumerate() {
        // Each wave installs one second after it starts and bakes for 60 s.
        let start = 1 + 62 * wave_index as u64;
        for agent in &rollout.agents()[wave.start as usize..wave.end as usize] {
            events.push((
                Event::AgentInstalled {
                    uid: agent.uid,
                    version: NEW.into(),
                    healthy: None,
                },
                at(start),
            ));
            events.push((
                Event::AgentHealth {
                    uid: agent.uid,
                    healthy: true,
                },
                at(start),
            ));
        }
        events.push((Event::Timeout, at(start + 60)));
    }
    events
}

pub(crate) fn run_script(
    store: &mut dyn FleetStore,
    rollout: &mut Rollout,
    events: &[(Event, Timestamp)],
) -> Vec<Command> {
    let mut out = Vec::new();
    for (event, now) in events {
        out.extend(apply(store, rollout, event.clone(), *now).expect("apply"));
    }
    out
}

/// One fresh, empty database of one backend. [`TestDb::open`] connects anew each time: a
/// reopen after dropping the last store, or a second writer beside the first.
pub(crate) enum TestDb {
    Sqlite(tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres(postgres_scratch::Scratch),
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// A new database on the server `OPAMP_TEST_POSTGRES_URL` names, or `None` (the test is
    /// skipped with a note) when it is unset, unless `OPAMP_INTEROP_REQUIRED=1` (CI), which
    /// makes a missing server a failure.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres() -> Option<TestDb> {
        match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) => Some(TestDb::Postgres(postgres_scratch::Scratch::create(&url))),
            Err(_) if std::env::var("OPAMP_INTEROP_REQUIRED").as_deref() == Ok("1") => {
                panic!("{POSTGRES_URL_ENV} is unset but OPAMP_INTEROP_REQUIRED=1")
            }
            Err(_) => {
                eprintln!("skipped: set {POSTGRES_URL_ENV} (bash .ci/postgres.sh start DIR)");
                None
            }
        }
    }

    pub(crate) fn open(&self) -> Box<dyn FleetStore + Send> {
        self.open_with_snapshot_interval(1_000)
    }

    pub(crate) fn open_with_snapshot_interval(&self, events: u64) -> Box<dyn FleetStore + Send> {
        match self {
            TestDb::Sqlite(dir) => {
                let options = SqliteOptions::default().snapshot_interval(events);
                Box::new(SqliteStore::open_with(self.sqlite_path(dir), options).expect("open"))
            }
            #[cfg(feature = "postgres")]
            TestDb::Postgres(scratch) => {
                let options =
                    opamp_fleet::store::PostgresOptions::default().snapshot_interval(events);
                Box::new(
                    opamp_fleet::store::PostgresStore::connect(&scratch.url, options)
                        .expect("connect"),
                )
            }
        }
    }

    fn sqlite_path(&self, dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("fleet.db")
    }

    /// Runs `sql` behind the store's back; `Err` with the database's message when refused.
    pub(crate) fn raw_execute(&self, sql: &str) -> Result<(), String> {
        match self {
            TestDb::Sqlite(dir) => rusqlite::Connection::open(self.sqlite_path(dir))
                .and_then(|raw| raw.execute_batch(sql))
                .map_err(|e| e.to_string()),
            #[cfg(feature = "postgres")]
            TestDb::Postgres(scratch) => postgres::Client::connect(&scratch.url, postgres::NoTls)
                .and_then(|mut raw| raw.batch_execute(sql))
                .map_err(|e| e.to_string()),
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres_scratch {
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A database created for one test and dropped after it.
    pub(crate) struct Scratch {
        admin_url: String,
        name: String,
        pub(crate) url: String,
    }

    impl Scratch {
        pub(crate) fn create(admin_url: &str) -> Scratch {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "opamp_test_{}_{}_{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut admin =
                postgres::Client::connect(admin_url, postgres::NoTls).expect("admin connection");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create database");
            let url = replace_database(admin_url, &name);
            Scratch {
                admin_url: admin_url.to_owned(),
                name,
                url,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    /// `postgres://user@host:port/admin?x` with the database replaced by `name`.
    fn replace_database(url: &str, name: &str) -> String {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority_start..].find('/') {
            Some(slash) => &base[..authority_start + slash],
            None => base,
        };
        match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        }
    }
}

/// Runs each named test (a `fn(&TestDb)`) against a fresh SQLite file and, where a server is
/// configured, a fresh PostgreSQL database.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::store_support::TestDb::sqlite());
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = super::store_support::TestDb::postgres() {
                        super::$name(&db);
                    }
                }
            )*
        }
    };
}
