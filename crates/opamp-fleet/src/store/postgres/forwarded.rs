//! Rollout changes forwarded to the coordinator. Only the replica holding the coordinator
//! lease decides rollouts, but the admin API answers on every replica: a replica that does
//! not coordinate files the operator's request in `coordinator_requests` and waits for the
//! answer; the coordinator takes open requests (each once), carries them out and files the
//! answer. Requests are announced with `NOTIFY` ([`super::relay::RelayListener`] hears them)
//! and the coordinator also looks every second.

use ::postgres::Client;

use super::codec::{column, pg};
use super::relay::{AgentRelay, REQUESTS_CHANNEL};
use crate::store::StoreError;

/// A request filed for the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedRequest {
    /// Its number, to file the answer under.
    pub(crate) id: i64,
    /// What is asked (the server's business).
    pub(crate) kind: String,
    /// Its arguments (the server's business; JSON).
    pub(crate) body: String,
    /// The operator who asked.
    pub(crate) operator: String,
}

/// The coordinator's answer: an HTTP status and a body (the result's JSON, or the error's
/// message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedAnswer {
    /// HTTP status.
    pub(crate) status: u16,
    /// Result JSON (status 200) or error message.
    pub(crate) answer: String,
}

impl AgentRelay {
    /// Files a request for the coordinator; returns its number.
    ///
    /// # Errors
    /// Database errors: nothing was filed.
    pub(crate) fn forward_request(
        &self,
        kind: &str,
        body: String,
        operator: String,
    ) -> Result<i64, StoreError> {
        let replica = self.replica().to_owned();
        let kind = kind.to_owned();
        self.worker().call(move |client: &mut Client| {
            let mut tx = client
                .transaction()
                .map_err(pg("starting to file a request"))?;
            let row = tx
                .query_one(
                    "INSERT INTO coordinator_requests (replica, kind, body, operator, created_at)
                     VALUES ($1, $2, $3, $4, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT)
                     RETURNING id",
                    &[&replica, &kind, &body, &operator],
                )
                .map_err(pg("filing a request for the coordinator"))?;
            tx.execute("SELECT pg_notify($1, '')", &[&REQUESTS_CHANNEL])
                .map_err(pg("waking the coordinator"))?;
            tx.commit()
                .map_err(pg("filing a request for the coordinator"))?;
            column(&row, 0, "reading a request's number")
        })
    }

    /// The answer to request `id`, once the coordinator filed it.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn request_answer(&self, id: i64) -> Result<Option<ForwardedAnswer>, StoreError> {
        self.worker().call(move |client: &mut Client| {
            let row = client
                .query_opt(
                    "SELECT status, answer FROM coordinator_requests
                     WHERE id = $1 AND status IS NOT NULL",
                    &[&id],
                )
                .map_err(pg("reading a request's answer"))?;
            row.map(|row| {
                let status: i16 = column(&row, 0, "reading a request's answer")?;
                Ok(ForwardedAnswer {
                    status: u16::try_from(status).unwrap_or(500),
                    answer: column(&row, 1, "reading a request's answer")?,
                })
            })
            .transpose()
        })
    }

    /// Takes every open request, oldest first: each is taken by one coordinator only.
    ///
    /// # Errors
    /// Database errors: nothing was taken.
    pub(crate) fn take_requests(&self) -> Result<Vec<ForwardedRequest>, StoreError> {
        let replica = self.replica().to_owned();
        self.worker().call(move |client: &mut Client| {
            let rows = client
                .query(
                    "WITH taken AS (
                        UPDATE coordinator_requests SET taken_by = $1
                        WHERE id IN (SELECT id FROM coordinator_requests WHERE taken_by IS NULL
                                     ORDER BY id FOR UPDATE SKIP LOCKED)
                        RETURNING id, kind, body, operator)
                     SELECT id, kind, body, operator FROM taken ORDER BY id",
                    &[&replica],
                )
                .map_err(pg("taking forwarded requests"))?;
            rows.iter()
                .map(|row| {
                    Ok(ForwardedRequest {
                        id: column(row, 0, "reading a forwarded request")?,
                        kind: column(row, 1, "reading a forwarded request")?,
                        body: column(row, 2, "reading a forwarded request")?,
                        operator: column(row, 3, "reading a forwarded request")?,
                    })
                })
                .collect()
        })
    }

    /// Files the answer to request `id`.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn answer_request(
        &self,
        id: i64,
        answer: ForwardedAnswer,
    ) -> Result<(), StoreError> {
        let status = i16::try_from(answer.status).unwrap_or(500);
        self.worker().call(move |client: &mut Client| {
            client
                .execute(
                    "UPDATE coordinator_requests SET status = $2, answer = $3 WHERE id = $1",
                    &[&id, &status, &answer.answer],
                )
                .map_err(pg("filing a request's answer"))?;
            Ok(())
        })
    }

    /// Deletes requests older than `age_ms` milliseconds (answered or abandoned).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) fn purge_requests(&self, age_ms: i64) -> Result<u64, StoreError> {
        self.worker().call(move |client: &mut Client| {
            client
                .execute(
                    "DELETE FROM coordinator_requests
                     WHERE created_at < (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - $1",
                    &[&age_ms],
                )
                .map_err(pg("purging old forwarded requests"))
        })
    }
}
