//! A PostgreSQL database of a load run's own, created on a server the run is given and
//! dropped at the end, with what the measured fleet server did in it.

// Load-tool code: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used)]

/// A database of the run's own on a PostgreSQL server, dropped at the end.
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    /// The URL of the run's database, for the fleet server's `store.postgres_url`.
    pub url: String,
}

/// What the server did in the database so far.
#[derive(Clone, Copy, Debug)]
pub struct DatabaseStats {
    /// Transactions committed and rolled back (reads count too).
    pub transactions: i64,
    /// The database's size on disk, bytes.
    pub bytes: i64,
}

impl BenchDatabase {
    /// Creates `opamp_bench_<pid>` (dropping a leftover of that name) on the server of
    /// `admin_url`, a database URL there the run may create databases with.
    #[must_use]
    pub fn create(admin_url: &str) -> Self {
        let name = format!("opamp_bench_{}", std::process::id());
        // Two statements: several in one call would form a transaction, which these refuse.
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let create = format!("CREATE DATABASE {name}");
        off_runtime(admin_url, move |client| {
            client.batch_execute(&drop).unwrap();
            client.batch_execute(&create).unwrap();
        });
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        BenchDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The database's transactions so far and its size, from `pg_stat_database`.
    #[must_use]
    pub fn stats(&self) -> DatabaseStats {
        let name = self.name.clone();
        off_runtime(&self.admin_url, move |client| {
            client
                .batch_execute("SELECT pg_stat_clear_snapshot()")
                .unwrap();
            let row = client
                .query_one(
                    "SELECT xact_commit + xact_rollback, pg_database_size(datname)
                     FROM pg_stat_database WHERE datname = $1",
                    &[&name],
                )
                .unwrap();
            DatabaseStats {
                transactions: row.get(0),
                bytes: row.get(1),
            }
        })
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        off_runtime(&self.admin_url, move |client| {
            let _ = client.batch_execute(&sql);
        });
    }
}

/// Runs `f` with a connection to `url` on a plain thread: `postgres::Client` refuses to run
/// inside a tokio runtime.
fn off_runtime<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        f(&mut client)
    })
    .join()
    .unwrap()
}
