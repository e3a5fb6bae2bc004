//! The agent relay between server replicas on one database. Every replica serves agents; one
//! of them (the coordinator lease's holder) decides. What an agent reports on another
//! replica reaches the coordinator through `agent_inbox`, and what the coordinator sends an
//! agent (an offer, a remote config, a command) reaches the replica holding its connection
//! through `agent_outbox`, addressed by replica name. Writers `NOTIFY` after each batch and
//! readers `LISTEN` ([`RelayListener`]), so a message is picked up within a round trip; the
//! readers also poll, which covers a notification lost while their listening connection was
//! reconnecting.
//!
//! Rows are deleted as they are read (`DELETE ... RETURNING`), so each is taken once. A
//! coordinator that dies with rows taken but not acted on loses them; the replicas then send
//! their agents' full state to the next coordinator, which makes that loss harmless.
//!
//! `agent_connections` records which replica holds each agent's connection, for the admin API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, NoTls};
use opamp_proto::InstanceUid;

use super::codec::{column, parse_uid, pg};
use super::worker::Worker;
use crate::store::StoreError;

/// `NOTIFY` channel written after rows were added to `agent_inbox`.
const INBOX_CHANNEL: &str = "opamp_agent_inbox";
/// `NOTIFY` channel written after rows were added to `agent_outbox`; the payload is the
/// addressed replica's name.
const OUTBOX_CHANNEL: &str = "opamp_agent_outbox";
/// `NOTIFY` channel written after a request was filed for the coordinator (`forwarded.rs`).
pub(super) const REQUESTS_CHANNEL: &str = "opamp_coordinator_requests";

/// One relayed message: to the coordinator from `replica`, or from the coordinator to
/// `replica`. `kind` and `payload` are the server's business (see `server::relay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelayMessage {
    /// The replica that sent it (inbox) or must deliver it (outbox).
    pub(crate) replica: String,
    /// The agent it is about.
    pub(crate) uid: InstanceUid,
    /// What it is.
    pub(crate) kind: i16,
    /// Its body.
    pub(crate) payload: Vec<u8>,
}

/// A change of which replica holds an agent's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// The agent connected to this replica.
    Here(InstanceUid),
    /// The agent's connection to this replica ended.
    Gone(InstanceUid),
}

/// The relay's tables, on a connection of their own (relaying must not wait behind the
/// coordinator's rollout writes).
#[derive(Debug)]
pub(crate) struct AgentRelay {
    worker: Worker,
    replica: String,
}

impl AgentRelay {
    /// Connects as `replica` (this server's replica name).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`](super::PostgresStore::connect).
    pub(crate) fn connect(
        url: &str,
        options: super::PostgresOptions,
        replica: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let worker = Worker::start(super::connect_settings(url, &options)?)?;
        worker.call(super::migrations::migrate)?;
        Ok(AgentRelay {
            worker,
            replica: replica.into(),
        })
    }

    /// This replica's name.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// The relay's connection.
    pub(super) fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Forgets every connection recorded for this replica (at start: a replica of the same
    /// name that died left its rows behind).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn clear_presence(&self) -> Result<(), StoreError> {
        let replica = self.replica.clone();
        self.worker.call(move |client: &mut Client| {
            client
                .execute(
                    "DELETE FROM agent_connections WHERE replica = $1",
                    &[&replica],
                )
                .map_err(pg("clearing this replica's agent connections"))?;
            Ok(())
        })
    }

    /// Sends `messages` (kind, payload per agent) to the coordinator and records `presence`,
    /// in one transaction, then wakes the coordinator.
    ///
    /// # Errors
    /// Database errors: nothing was sent.
    pub(crate) fn to_coordinator(
        &self,
        messages: Vec<(InstanceUid, i16, Vec<u8>)>,
        presence: Vec<Presence>,
    ) -> Result<(), StoreError> {
        let replica = self.replica.clone();
        self.worker.call(move |client: &mut Client| {
            let mut tx = client.transaction().map_err(pg("starting a relay write"))?;
            let (mut here, mut gone) = (Vec::new(), Vec::new());
            for change in presence {
                match change {
                    Presence::Here(uid) => here.push(uid.to_string()),
                    Presence::Gone(uid) => gone.push(uid.to_string()),
                }
            }
            if !gone.is_empty() {
                tx.execute(
                    "DELETE FROM agent_connections WHERE uid = ANY($1) AND replica = $2",
                    &[&gone, &replica],
                )
                .map_err(pg("recording agents gone from this replica"))?;
            }
            if !here.is_empty() {
                tx.execute(
                    "INSERT INTO agent_connections (uid, replica) SELECT u, $2 FROM UNNEST($1::TEXT[]) AS u
                     ON CONFLICT (uid) DO UPDATE SET replica = EXCLUDED.replica",
                    &[&here, &replica],
                )
                .map_err(pg("recording agents connected to this replica"))?;
            }
            if !messages.is_empty() {
                let mut uids = Vec::with_capacity(messages.len());
                let mut kinds = Vec::with_capacity(messages.len());
                let mut payloads = Vec::with_capacity(messages.len());
                for (uid, kind, payload) in messages {
                    uids.push(uid.to_string());
                    kinds.push(kind);
                    payloads.push(payload);
                }
                // `WITH ORDINALITY` keeps the batch's order in `seq`.
                tx.execute(
                    "INSERT INTO agent_inbox (replica, uid, kind, payload)
                     SELECT $1, u, k, p FROM UNNEST($2::TEXT[], $3::SMALLINT[], $4::BYTEA[])
                        WITH ORDINALITY AS m(u, k, p, n) ORDER BY n",
                    &[&replica, &uids, &kinds, &payloads],
                )
                .map_err(pg("relaying agent reports"))?;
                tx.execute("SELECT pg_notify($1, '')", &[&INBOX_CHANNEL])
                    .map_err(pg("waking the coordinator"))?;
            }
            tx.commit().map_err(pg("committing a relay write"))
        })
    }

    /// Takes (deletes and returns) up to `limit` of the oldest messages to the coordinator.
    ///
    /// # Errors
    /// Database errors: nothing was taken.
    pub(crate) fn take_inbox(&self, limit: i64) -> Result<Vec<RelayMessage>, StoreError> {
        self.worker.call(move |client: &mut Client| {
            let rows = client
                .query(
                    "WITH taken AS (
                        DELETE FROM agent_inbox WHERE seq IN
                            (SELECT seq FROM agent_inbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
                        RETURNING seq, replica, uid, kind, payload)
                     SELECT replica, uid, kind, payload FROM taken ORDER BY seq",
                    &[&limit],
                )
                .map_err(pg("taking relayed agent reports"))?;
            messages(&rows)
        })
    }

    /// Sends `messages` to the replicas they name, then wakes each of them.
    ///
    /// # Errors
    /// Database errors: nothing was sent.
    pub(crate) fn to_replicas(&self, messages: Vec<RelayMessage>) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.worker.call(move |client: &mut Client| {
            let mut tx = client.transaction().map_err(pg("starting a relay write"))?;
            let mut replicas = Vec::with_capacity(messages.len());
            let mut uids = Vec::with_capacity(messages.len());
            let mut kinds = Vec::with_capacity(messages.len());
            let mut payloads = Vec::with_capacity(messages.len());
            for message in messages {
                replicas.push(message.replica);
                uids.push(message.uid.to_string());
                kinds.push(message.kind);
                payloads.push(message.payload);
            }
            tx.execute(
                "INSERT INTO agent_outbox (replica, uid, kind, payload, created_at)
                 SELECT r, u, k, p, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
                 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::SMALLINT[], $4::BYTEA[])
                    WITH ORDINALITY AS m(r, u, k, p, n) ORDER BY n",
                &[&replicas, &uids, &kinds, &payloads],
            )
            .map_err(pg("relaying offers to replicas"))?;
            replicas.sort_unstable();
            replicas.dedup();
            for replica in &replicas {
                tx.execute("SELECT pg_notify($1, $2)", &[&OUTBOX_CHANNEL, replica])
                    .map_err(pg("waking a replica"))?;
            }
            tx.commit().map_err(pg("committing a relay write"))
        })
    }

    /// Takes (deletes and returns) the messages addressed to this replica, oldest first.
    ///
    /// # Errors
    /// Database errors: nothing was taken.
    pub(crate) fn take_outbox(&self) -> Result<Vec<RelayMessage>, StoreError> {
        let replica = self.replica.clone();
        self.worker.call(move |client: &mut Client| {
            let rows = client
                .query(
                    "WITH taken AS (
                        DELETE FROM agent_outbox WHERE replica = $1
                        RETURNING seq, replica, uid, kind, payload)
                     SELECT replica, uid, kind, payload FROM taken ORDER BY seq",
                    &[&replica],
                )
                .map_err(pg("taking relayed offers"))?;
            messages(&rows)
        })
    }

    /// Records that this replica is alive. `true` when it had been declared gone (or is new):
    /// the coordinator then forgot where its agents are, and they must be announced again.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn beat(&self) -> Result<bool, StoreError> {
        let replica = self.replica.clone();
        self.worker.call(move |client: &mut Client| {
            let row = client
                .query_one(
                    "INSERT INTO replicas (name, seen_at) VALUES ($1, now())
                     ON CONFLICT (name) DO UPDATE SET seen_at = now()
                     RETURNING (xmax = 0)",
                    &[&replica],
                )
                .map_err(pg("recording that this replica is alive"))?;
            column(&row, 0, "recording that this replica is alive")
        })
    }

    /// Records that this replica stops (a clean shutdown): the coordinator declares it gone
    /// at its next look instead of after the lease's length.
    ///
    /// # Errors
    /// Database errors (it is then declared gone after the lease's length).
    pub(crate) fn leave(&self) -> Result<(), StoreError> {
        let replica = self.replica.clone();
        self.worker.call(move |client: &mut Client| {
            client
                .execute(
                    "UPDATE replicas SET seen_at = '-infinity' WHERE name = $1",
                    &[&replica],
                )
                .map_err(pg("recording that this replica stops"))?;
            Ok(())
        })
    }

    /// Declares gone every other replica not seen for `after` (it died or lost the
    /// database), forgetting the connections it held; returns their names.
    ///
    /// # Errors
    /// Database errors: nothing was declared.
    pub(crate) fn gone_replicas(&self, after: Duration) -> Result<Vec<String>, StoreError> {
        let replica = self.replica.clone();
        let after = format!("{} milliseconds", after.as_millis());
        self.worker.call(move |client: &mut Client| {
            let mut tx = client
                .transaction()
                .map_err(pg("declaring replicas gone"))?;
            let rows = tx
                .query(
                    "DELETE FROM replicas
                     WHERE seen_at < now() - $1::TEXT::INTERVAL AND name <> $2
                     RETURNING name",
                    &[&after, &replica],
                )
                .map_err(pg("declaring replicas gone"))?;
            let gone = rows
                .iter()
                .map(|row| column::<String>(row, 0, "declaring replicas gone"))
                .collect::<Result<Vec<_>, _>>()?;
            if !gone.is_empty() {
                tx.execute(
                    "DELETE FROM agent_connections WHERE replica = ANY($1)",
                    &[&gone],
                )
                .map_err(pg("forgetting a gone replica's agents"))?;
            }
            tx.commit().map_err(pg("declaring replicas gone"))?;
            Ok(gone)
        })
    }

    /// Deletes messages to replicas that never took them (a replica that died) once they are
    /// older than `age`; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn purge_outbox(&self, age: Duration) -> Result<u64, StoreError> {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.worker.call(move |client: &mut Client| {
            client
                .execute(
                    "DELETE FROM agent_outbox
                     WHERE created_at < (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - $1",
                    &[&age],
                )
                .map_err(pg("purging undelivered offers"))
        })
    }
}

/// Which replica holds each of `uids`' connections (those recorded).
pub(super) fn replicas_of(
    client: &mut Client,
    uids: &[InstanceUid],
) -> Result<BTreeMap<InstanceUid, String>, StoreError> {
    let keys: Vec<String> = uids.iter().map(ToString::to_string).collect();
    let rows = client
        .query(
            "SELECT uid, replica FROM agent_connections WHERE uid = ANY($1)",
            &[&keys],
        )
        .map_err(pg("reading which replica holds each agent"))?;
    rows.iter()
        .map(|row| {
            let uid: String = column(row, 0, "reading an agent connection")?;
            let replica: String = column(row, 1, "reading an agent connection")?;
            Ok((parse_uid(&uid)?, replica))
        })
        .collect()
}

fn messages(rows: &[::postgres::Row]) -> Result<Vec<RelayMessage>, StoreError> {
    rows.iter()
        .map(|row| {
            let uid: String = column(row, 1, "reading a relayed message")?;
            Ok(RelayMessage {
                replica: column(row, 0, "reading a relayed message")?,
                uid: parse_uid(&uid)?,
                kind: column(row, 2, "reading a relayed message")?,
                payload: column(row, 3, "reading a relayed message")?,
            })
        })
        .collect()
}

/// What a [`RelayListener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Rows were added to the inbox.
    Inbox,
    /// Rows were added to the outbox for this replica.
    Outbox,
    /// A request was filed for the coordinator.
    Requests,
    /// The listening connection was (re)established: notifications may have been missed.
    Resync,
}

/// A thread that `LISTEN`s for the relay's notifications on a connection of its own and
/// calls a function for each; it reconnects when the connection breaks. Stops when dropped.
#[derive(Debug)]
pub(crate) struct RelayListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the listening thread waits for a notification before it checks for a stop.
const LISTEN_TICK: Duration = Duration::from_millis(250);

impl RelayListener {
    /// Starts listening as `replica` (outbox notifications for other replicas are ignored).
    ///
    /// # Errors
    /// A malformed URL; the thread could not start.
    pub(crate) fn start(
        url: &str,
        options: super::PostgresOptions,
        replica: String,
        heard: impl Fn(Heard) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let settings = super::connect_settings(url, &options)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("opamp-fleet-relay-listener".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match listen(&settings.config, &replica, &stopping, &heard) {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::warn!(%error, "the relay's listening connection failed; reconnecting");
                            std::thread::sleep(LISTEN_TICK * 2);
                        }
                    }
                }
            })
            .map_err(|error| StoreError::Corrupt {
                what: format!("cannot start the relay listener thread: {error}"),
            })?;
        Ok(RelayListener {
            stop,
            thread: Some(thread),
        })
    }
}

/// Listens until `stop` (`Ok`) or the connection fails.
fn listen(
    config: &::postgres::Config,
    replica: &str,
    stop: &AtomicBool,
    heard: &impl Fn(Heard),
) -> Result<(), ::postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!(
        "LISTEN {INBOX_CHANNEL}; LISTEN {OUTBOX_CHANNEL}; LISTEN {REQUESTS_CHANNEL}"
    ))?;
    heard(Heard::Resync);
    while !stop.load(Ordering::Relaxed) {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(LISTEN_TICK);
            while let Some(notification) = waiting.next()? {
                if notification.channel() == INBOX_CHANNEL {
                    heard(Heard::Inbox);
                } else if notification.channel() == REQUESTS_CHANNEL {
                    heard(Heard::Requests);
                } else if notification.payload() == replica {
                    heard(Heard::Outbox);
                }
            }
        }
        if client.is_closed() {
            // Fails, with the reason the connection closed.
            client.simple_query("")?;
        }
    }
    Ok(())
}

impl Drop for RelayListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the relay listener thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::super::forwarded::ForwardedAnswer;
    use super::super::test_support::scratch_database;
    use super::super::{PostgresOptions, PostgresStore};
    use super::*;
    use crate::store::FleetStore as _;

    fn relay(url: &str, replica: &str) -> AgentRelay {
        AgentRelay::connect(url, PostgresOptions::default(), replica).unwrap()
    }

    fn uid(i: u8) -> InstanceUid {
        InstanceUid::from([i; 16])
    }

    /// Messages reach the coordinator in the order each replica sent them, each taken once;
    /// the outbox hands each replica only what is addressed to it; presence follows the
    /// replica that last announced an agent, and a late goodbye from another changes nothing.
    #[test]
    fn messages_are_taken_once_in_order_and_addressed_by_replica() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let (a, b, coordinator) = (relay(&url, "a"), relay(&url, "b"), relay(&url, "c"));
        let batch = |i: u8| {
            (0..3)
                .map(|k| (uid(i), k, vec![i, k as u8]))
                .collect::<Vec<_>>()
        };
        a.to_coordinator(batch(1), vec![Presence::Here(uid(1))])
            .unwrap();
        b.to_coordinator(batch(2), vec![Presence::Here(uid(2))])
            .unwrap();
        a.to_coordinator(batch(3), vec![]).unwrap();
        let first = coordinator.take_inbox(4).unwrap();
        let rest = coordinator.take_inbox(100).unwrap();
        assert_eq!((first.len(), rest.len()), (4, 5));
        assert!(coordinator.take_inbox(100).unwrap().is_empty());
        let from_a: Vec<Vec<u8>> = first
            .iter()
            .chain(&rest)
            .filter(|m| m.replica == "a")
            .map(|m| m.payload.clone())
            .collect();
        let sent: Vec<Vec<u8>> = batch(1).into_iter().chain(batch(3)).map(|m| m.2).collect();
        assert_eq!(from_a, sent);

        coordinator
            .to_replicas(vec![
                RelayMessage {
                    replica: "a".into(),
                    uid: uid(1),
                    kind: 1,
                    payload: vec![1],
                },
                RelayMessage {
                    replica: "b".into(),
                    uid: uid(2),
                    kind: 2,
                    payload: vec![2],
                },
                RelayMessage {
                    replica: "a".into(),
                    uid: uid(3),
                    kind: 3,
                    payload: vec![3],
                },
            ])
            .unwrap();
        let to_a: Vec<u8> = a
            .take_outbox()
            .unwrap()
            .iter()
            .map(|m| m.kind as u8)
            .collect();
        assert_eq!(to_a, [1, 3]);
        assert!(a.take_outbox().unwrap().is_empty());
        assert_eq!(b.take_outbox().unwrap().len(), 1);

        // Agent 1 moves from a to b; a's goodbye arrives after b's hello.
        b.to_coordinator(vec![], vec![Presence::Here(uid(1))])
            .unwrap();
        a.to_coordinator(vec![], vec![Presence::Gone(uid(1))])
            .unwrap();
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        let held = store.agent_replicas(&[uid(1), uid(2), uid(9)]).unwrap();
        assert_eq!(
            held,
            BTreeMap::from([(uid(1), "b".to_owned()), (uid(2), "b".to_owned())])
        );
        b.clear_presence().unwrap();
        assert!(store.agent_replicas(&[uid(1), uid(2)]).unwrap().is_empty());
    }

    /// A replica not seen for the given time is declared gone once, with its connections; the
    /// asking replica never is; a replica declared gone learns it at its next beat.
    #[test]
    fn replicas_not_seen_are_declared_gone_once_and_learn_it() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let (a, coordinator) = (relay(&url, "a"), relay(&url, "c"));
        assert!(a.beat().unwrap(), "a new replica announces its agents");
        assert!(!a.beat().unwrap());
        coordinator.beat().unwrap();
        a.to_coordinator(vec![], vec![Presence::Here(uid(1))])
            .unwrap();
        assert!(
            coordinator
                .gone_replicas(Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            coordinator
                .gone_replicas(Duration::from_millis(10))
                .unwrap(),
            ["a"]
        );
        assert!(
            coordinator
                .gone_replicas(Duration::from_millis(10))
                .unwrap()
                .is_empty()
        );
        let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
        assert!(store.agent_replicas(&[uid(1)]).unwrap().is_empty());
        assert!(
            a.beat().unwrap(),
            "declared gone: announce the agents again"
        );
    }

    /// Requests filed by one replica are taken by one coordinator once, and the answer
    /// reaches the replica that filed them; the listener hears each kind of notification.
    #[test]
    fn forwarded_requests_are_taken_once_and_answered() {
        let Some((url, _guard)) = scratch_database() else {
            return;
        };
        let (heard_tx, heard) = mpsc::channel();
        let _listener =
            RelayListener::start(&url, PostgresOptions::default(), "a".into(), move |what| {
                let _ = heard_tx.send(what);
            })
            .unwrap();
        let wait_for = |wanted: Heard| loop {
            match heard.recv_timeout(Duration::from_secs(10)) {
                Ok(what) if what == wanted => break,
                Ok(_) => {}
                Err(error) => panic!("never heard {wanted:?}: {error}"),
            }
        };
        wait_for(Heard::Resync);
        let (a, c1, c2) = (relay(&url, "a"), relay(&url, "c1"), relay(&url, "c2"));
        let id = a
            .forward_request("create", "{}".into(), "alice".into())
            .unwrap();
        wait_for(Heard::Requests);
        let taken = c1.take_requests().unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].id, taken[0].operator.as_str()), (id, "alice"));
        assert!(c2.take_requests().unwrap().is_empty(), "taken twice");
        assert_eq!(a.request_answer(id).unwrap(), None);
        let answer = ForwardedAnswer {
            status: 409,
            answer: "conflict".into(),
        };
        c1.answer_request(id, answer.clone()).unwrap();
        assert_eq!(a.request_answer(id).unwrap(), Some(answer));

        c1.to_replicas(vec![RelayMessage {
            replica: "a".into(),
            uid: uid(1),
            kind: 1,
            payload: vec![],
        }])
        .unwrap();
        wait_for(Heard::Outbox);
        a.to_coordinator(vec![(uid(1), 1, vec![])], vec![]).unwrap();
        wait_for(Heard::Inbox);
    }
}
