//! The connection worker: one OS thread that owns the `postgres::Client` and runs the store's
//! jobs on it, one at a time, reconnecting when the connection was lost.
//!
//! `postgres::Client` drives its connection on a runtime of its own and panics when it is used
//! from a thread that is already inside a tokio runtime, which is where the server calls the
//! store from. The worker thread is a plain thread, so the client is only ever used there; the
//! caller blocks on a std channel for the reply, as it would block on a SQLite call.

use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ::postgres::{Client, Config, NoTls};

use super::codec::pg;
use crate::store::StoreError;

/// A unit of work for the worker: it is handed the connection, or why there is none, and
/// tells whether it failed.
type Job = Box<dyn FnOnce(Result<&mut Client, StoreError>) -> Failed + Send>;

/// Whether a job failed (its connection is then checked before the next job).
type Failed = bool;

/// Lets a job ask its caller a question while it runs and wait for the answer: the caller
/// thread, which holds the borrowed data the job could not take along, computes it.
pub(super) type Ask<'a, Q, A> = &'a mut dyn FnMut(Q) -> Result<A, StoreError>;

/// What a running job sends its caller.
enum Message<Q, R> {
    /// The job needs an answer before it can go on.
    Ask(Q),
    /// The job is done.
    Done(Result<R, StoreError>),
}

/// The handle of the worker thread; dropping it ends the thread after the job in progress
/// and closes the connection.
#[derive(Debug)]
pub(super) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// How the worker connects (and reconnects).
#[derive(Debug)]
pub(super) struct ConnectSettings {
    /// The parsed URL, with the connect timeout and application name filled in.
    pub(super) config: Config,
    /// Applied to every new session (`SET statement_timeout`); zero disables it.
    pub(super) statement_timeout: Duration,
}

impl Worker {
    /// Starts the thread. It connects lazily, when the first job arrives.
    pub(super) fn start(settings: ConnectSettings) -> Result<Worker, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("opamp-fleet-postgres".into())
            .spawn(move || run(&settings, &queue))
            .map_err(|error| StoreError::Corrupt {
                what: format!("cannot start the PostgreSQL connection thread: {error}"),
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `job` on the worker's connection and returns its result.
    pub(super) fn call<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    {
        self.call_asking(
            move |client, _: Ask<'_, Infallible, Infallible>| job(client),
            |never| match never {},
        )
    }

    /// Runs `job` on the worker's connection; each question the job asks through its
    /// [`Ask`] is answered by `answer`, on the calling thread, while the job waits.
    pub(super) fn call_asking<Q, A, R, F, H>(&self, job: F, mut answer: H) -> Result<R, StoreError>
    where
        Q: Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&mut Client, Ask<'_, Q, A>) -> Result<R, StoreError> + Send + 'static,
        H: FnMut(Q) -> A,
    {
        let (to_caller, from_worker) = mpsc::channel::<Message<Q, R>>();
        let (to_worker, from_caller) = mpsc::channel::<A>();
        let boxed: Job = Box::new(move |client| {
            let result = client.and_then(|client| {
                let mut ask = |question: Q| -> Result<A, StoreError> {
                    to_caller
                        .send(Message::Ask(question))
                        .map_err(|_| caller_gone())?;
                    from_caller.recv().map_err(|_| caller_gone())
                };
                job(client, &mut ask)
            });
            let failed = result.is_err();
            // The caller waits for this unless it panicked meanwhile.
            let _ = to_caller.send(Message::Done(result));
            failed
        });
        self.jobs
            .as_ref()
            .ok_or_else(worker_stopped)?
            .send(boxed)
            .map_err(|_| worker_stopped())?;
        loop {
            match from_worker.recv() {
                Ok(Message::Ask(question)) => {
                    // A job that stopped waiting (it failed) leaves the answer unread.
                    let _ = to_worker.send(answer(question));
                }
                Ok(Message::Done(result)) => return result,
                // The job was dropped unfinished: it panicked on the worker thread.
                Err(_) => return Err(worker_stopped()),
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop, which drops (closes) the connection.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the PostgreSQL connection thread panicked");
        }
    }
}

fn worker_stopped() -> StoreError {
    StoreError::Corrupt {
        what: "the PostgreSQL connection thread stopped in the middle of a call".into(),
    }
}

fn caller_gone() -> StoreError {
    StoreError::Corrupt {
        what: "the caller of a PostgreSQL job went away".into(),
    }
}

/// The thread: one job at a time on one connection, (re)connecting before a job when there
/// is no usable connection.
///
/// A connection is known to be lost when the client says it is closed, which it does once it
/// has seen the socket fail. After a failed job it is also checked with an empty query: a
/// session ended while a statement ran (PostgreSQL restarting) can fail that statement before
/// the client has seen the end of the stream, and without the check the next job would fail
/// on it too.
fn run(settings: &ConnectSettings, queue: &mpsc::Receiver<Job>) {
    let check_timeout = settings
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let mut client: Option<Client> = None;
    let mut suspect = false;
    while let Ok(job) = queue.recv() {
        let usable = client.take().filter(|connection| !connection.is_closed());
        let usable = match usable {
            Some(mut connection) if suspect => connection
                .is_valid(check_timeout)
                .is_ok()
                .then_some(connection),
            other => other,
        };
        let mut connection = match usable {
            Some(connection) => connection,
            None => {
                if suspect {
                    tracing::warn!("the PostgreSQL connection was lost; reconnecting");
                }
                match connect(settings) {
                    Ok(connection) => connection,
                    Err(error) => {
                        suspect = job(Err(error));
                        continue;
                    }
                }
            }
        };
        // A panicking job must not take the thread (and every later call) with it. The
        // connection may be mid-transaction then: it is dropped and replaced.
        match catch_unwind(AssertUnwindSafe(|| job(Ok(&mut connection)))) {
            Ok(failed) => {
                suspect = failed;
                client = Some(connection);
            }
            Err(_) => {
                tracing::error!("a PostgreSQL store job panicked; reconnecting for the next one");
                suspect = false;
            }
        }
    }
}

/// A new session with the configured statement timeout.
fn connect(settings: &ConnectSettings) -> Result<Client, StoreError> {
    let mut client = settings
        .config
        .connect(NoTls)
        .map_err(pg("connecting to the database"))?;
    let millis = u32::try_from(settings.statement_timeout.as_millis())
        .unwrap_or(u32::MAX)
        .min(i32::MAX.unsigned_abs());
    client
        .batch_execute(&format!("SET statement_timeout = {millis}"))
        .map_err(pg("setting the statement timeout"))?;
    Ok(client)
}

#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)] // helpers of tests: a panic is a failed test
mod tests {
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::store::{AgentRecord, FleetStore};

    fn backend_pid(store: &PostgresStore) -> i32 {
        store
            .worker
            .call(|client| {
                client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .map_err(pg("reading the backend pid"))?
                    .try_get(0)
                    .map_err(pg("reading the backend pid"))
            })
            .unwrap()
    }

    fn terminate(admin_url: &str, pid: i32) {
        let mut admin = Client::connect(admin_url, NoTls).unwrap();
        let row = admin
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
            .unwrap();
        assert!(row.get::<_, bool>(0), "backend {pid} terminated");
    }

    #[test]
    fn a_terminated_connection_fails_one_call_and_the_next_reconnects() {
        let Some((url, guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let agent = AgentRecord::new(
            opamp_proto::InstanceUid::from([3; 16]),
            crate::Labels::new(),
            1,
            crate::Timestamp::from_millis(7),
        );
        store.upsert_agent(&agent).unwrap();
        let before = backend_pid(&store);
        terminate(guard.admin_url(), before);

        let failed = store.agents();
        assert!(
            matches!(failed, Err(StoreError::Postgres { .. })),
            "{failed:?}"
        );
        assert_eq!(store.agents().unwrap(), vec![agent.clone()]);
        assert_ne!(backend_pid(&store), before, "a new session");
        // Writes work on the new session too.
        store.upsert_agent(&agent).unwrap();
        store.check_integrity().unwrap();
    }

    /// PostgreSQL restarting ends sessions in the middle of a statement: that call fails, the
    /// next one runs on a new session.
    #[test]
    fn a_connection_terminated_mid_statement_fails_only_that_call() {
        let Some((url, guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let pid = backend_pid(&store);
        std::thread::scope(|scope| {
            let sleeping = scope.spawn(|| {
                store.worker.call(|client| {
                    client
                        .batch_execute("SELECT pg_sleep(20)")
                        .map_err(pg("sleeping"))
                })
            });
            let mut admin = Client::connect(guard.admin_url(), NoTls).unwrap();
            while admin
                .query(
                    "SELECT 1 FROM pg_stat_activity
                     WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                    &[&pid],
                )
                .unwrap()
                .is_empty()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            terminate(guard.admin_url(), pid);
            let result = sleeping.join().unwrap();
            assert!(
                matches!(result, Err(StoreError::Postgres { .. })),
                "{result:?}"
            );
        });
        assert!(store.agents().unwrap().is_empty());
        assert_ne!(backend_pid(&store), pid);
    }

    #[test]
    fn a_statement_over_the_timeout_is_cancelled_and_the_session_goes_on() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let options = PostgresOptions::default().statement_timeout(Duration::from_millis(200));
        let store = PostgresStore::connect(&url, options).unwrap();
        let pid = backend_pid(&store);
        let result = store.worker.call(|client| {
            client
                .batch_execute("SELECT pg_sleep(5)")
                .map_err(pg("sleeping"))
        });
        let Err(StoreError::Postgres { source, .. }) = result else {
            panic!("{result:?}");
        };
        assert_eq!(
            source.code(),
            Some(&::postgres::error::SqlState::QUERY_CANCELED)
        );
        assert_eq!(backend_pid(&store), pid, "the same session");
    }

    #[test]
    fn an_unreachable_database_is_a_postgres_error() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let options = PostgresOptions::default().connect_timeout(Duration::from_secs(2));
        let error = PostgresStore::connect("postgres://nobody@127.0.0.1:1/none", options)
            .expect_err("nothing listens on port 1");
        assert!(matches!(error, StoreError::Postgres { .. }), "{error:?}");
        let error = PostgresStore::connect("not a url ===", PostgresOptions::default())
            .expect_err("a malformed URL");
        assert!(matches!(error, StoreError::Postgres { .. }), "{error:?}");
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_worker_goes_on() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let result: Result<(), StoreError> = store.worker.call(|_| panic!("a job that panics"));
        assert!(matches!(result, Err(StoreError::Corrupt { .. })));
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::migrations::LATEST
        );
    }

    #[test]
    fn questions_are_answered_on_the_calling_thread() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let caller = std::thread::current().id();
        let sum = store
            .worker
            .call_asking(
                |client, ask: Ask<'_, i64, i64>| {
                    let row = client
                        .query_one("SELECT $1::BIGINT + $2::BIGINT", &[&ask(1)?, &ask(2)?])
                        .map_err(pg("adding"))?;
                    row.try_get::<_, i64>(0).map_err(pg("adding"))
                },
                |question| {
                    assert_eq!(std::thread::current().id(), caller);
                    question * 10
                },
            )
            .unwrap();
        assert_eq!(sum, 30);
    }

    /// The server calls the store from async tasks: connecting, every call and dropping the
    /// store must work there (a `postgres::Client` used directly would panic).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_works_inside_a_tokio_runtime() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let mut store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let agent = AgentRecord::new(
            opamp_proto::InstanceUid::from([4; 16]),
            crate::Labels::new(),
            1,
            crate::Timestamp::from_millis(7),
        );
        store.upsert_agent(&agent).unwrap();
        assert_eq!(store.agent(&agent.uid).unwrap(), Some(agent));
        store.check_integrity().unwrap();
        drop(store);
    }

    #[tokio::test]
    async fn the_store_works_inside_a_current_thread_runtime() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        assert!(store.agents().unwrap().is_empty());
    }
}
