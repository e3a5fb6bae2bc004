//! Scratch databases for the PostgreSQL store's unit tests.
//!
//! `OPAMP_TEST_POSTGRES_URL` names an admin database on a throwaway server (trust auth is
//! fine); each test creates its own database there and drops it afterwards. Unset, the tests
//! are skipped with a note, unless `OPAMP_INTEROP_REQUIRED=1` (CI), which makes it a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use ::postgres::{Client, NoTls};

/// The admin database's URL.
pub(super) const POSTGRES_URL_ENV: &str = "OPAMP_TEST_POSTGRES_URL";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Drops its database (`WITH (FORCE)`, ending leftover sessions) when dropped.
#[derive(Debug)]
pub(super) struct DropGuard {
    admin_url: String,
    name: String,
}

impl DropGuard {
    /// The admin database's URL (for `pg_terminate_backend` and the like).
    pub(super) fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let result = off_runtime(|| {
            Client::connect(&self.admin_url, NoTls).and_then(|mut admin| admin.batch_execute(&sql))
        });
        if let Err(error) = result {
            eprintln!("dropping test database {}: {error}", self.name);
        }
    }
}

/// Runs `work` on a thread of its own: a `postgres::Client` panics when used on a thread that
/// drives a tokio runtime, and the guard may be dropped (and the database created) in one.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .expect("the admin connection thread panicked")
    })
}

/// A new, empty database (named after the pid, a counter and the clock) and its URL, or
/// `None` when no server is configured (see the module doc).
pub(super) fn scratch_database() -> Option<(String, DropGuard)> {
    let admin_url = match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) => url,
        Err(_) if std::env::var("OPAMP_INTEROP_REQUIRED").as_deref() == Ok("1") => {
            panic!("{POSTGRES_URL_ENV} is unset but OPAMP_INTEROP_REQUIRED=1")
        }
        Err(_) => {
            eprintln!("skipped: set {POSTGRES_URL_ENV} to a PostgreSQL admin database URL");
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "opamp_unit_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    off_runtime(|| {
        let mut admin =
            Client::connect(&admin_url, NoTls).expect("connecting to the admin database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
    });
    let url = replace_database(&admin_url, &name);
    Some((url, DropGuard { admin_url, name }))
}

/// `postgres://user@host:port/admin?x` with the database replaced by `name`.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
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

#[test]
fn the_database_is_replaced_in_any_url_shape() {
    assert_eq!(
        replace_database("postgres://u@h:1/admin", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(
        replace_database("postgres://u@h:1", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(
        replace_database("postgres://u@h/admin?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
