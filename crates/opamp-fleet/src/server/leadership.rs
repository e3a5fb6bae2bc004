//! Replicas on one PostgreSQL database: a replica serves only while it holds the coordinator
//! lease (see `store::postgres::lease`). [`acquire`] waits for the lease before anything is
//! served; [`keep`] renews it and, when it cannot, stops this replica before the lease can
//! expire in the database, so two replicas never decide at once.

// Without PostgreSQL only the lease-loss record is used (it never fires).
#![cfg_attr(not(feature = "postgres"), allow(unused_imports))]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::FleetError;
#[cfg(feature = "postgres")]
use crate::store::{CoordinatorLease, LeaseToken};

#[cfg(feature = "postgres")]
/// How often a replica waiting for the lease asks for it.
const ACQUIRE_POLL: Duration = Duration::from_millis(500);

#[cfg(feature = "postgres")]
/// When this replica must stop acting as the holder: the lease was taken or renewed in a call
/// sent at `sent`, and the database set its expiry no earlier than that plus its length. A
/// sixth of the length is kept as a margin for clock rate differences and scheduling.
fn safe_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - ttl / 6
}

#[cfg(feature = "postgres")]
/// Waits until this replica holds the lease; returns its fencing token and until when it may
/// act on it. Database errors are logged and retried (a database restarting while replicas
/// start is normal) until the database has not answered for the lease's length: then
/// [`FleetError::LeaseLost`]. Each time another holder (a new fencing token) is seen
/// meanwhile, `on_holder` is called with its token.
pub(crate) async fn acquire(
    lease: &Arc<CoordinatorLease>,
    mut on_holder: impl FnMut(LeaseToken),
) -> Result<(LeaseToken, Instant), FleetError> {
    let mut announced = false;
    let mut seen: Option<LeaseToken> = None;
    let mut last_answer = Instant::now();
    loop {
        let sent = Instant::now();
        let asking = lease.clone();
        let answer = tokio::task::spawn_blocking(move || asking.try_acquire()).await;
        if matches!(answer, Ok(Ok(_))) {
            last_answer = sent;
        }
        match answer {
            Ok(Ok(Some(token))) => {
                tracing::info!(
                    replica = lease.holder(),
                    token = token.0,
                    "took the coordinator lease"
                );
                return Ok((token, safe_until(sent, lease.ttl())));
            }
            Ok(Ok(None)) => {
                let holder = lease.clone();
                let current = tokio::task::spawn_blocking(move || holder.current())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                if let Some(current) = &current
                    && seen != Some(current.token)
                {
                    seen = Some(current.token);
                    on_holder(current.token);
                }
                if !announced {
                    tracing::info!(
                        replica = lease.holder(),
                        holder = current.as_ref().map(|c| c.holder.as_str()),
                        "another replica holds the coordinator lease; serving agents for it and waiting to take over"
                    );
                    announced = true;
                }
            }
            Ok(Err(error)) => {
                // A replica that cannot reach the database cannot relay its agents to the
                // coordinator either: past the lease's length it stops, so that its agents
                // reconnect (through the load balancer) to a replica that can.
                if sent.duration_since(last_answer) > lease.ttl() {
                    return Err(FleetError::LeaseLost {
                        reason: format!(
                            "cut off from the database for over {:?}: {error}",
                            lease.ttl()
                        ),
                    });
                }
                tracing::warn!(%error, "cannot ask for the coordinator lease; retrying");
            }
            Err(_) => return Err(FleetError::Stopped),
        }
        tokio::time::sleep(ACQUIRE_POLL).await;
    }
}

/// Why and whether this replica lost the lease; shared by [`keep`] and the running server.
#[derive(Debug, Default)]
pub(crate) struct LeaseLoss {
    reason: OnceLock<String>,
    happened: CancellationToken,
}

impl LeaseLoss {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn record(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.happened.cancel();
    }

    /// Waits until the lease is lost (for ever when it never is); returns why.
    pub(crate) async fn wait(&self) -> String {
        self.happened.cancelled().await;
        self.reason.get().cloned().unwrap_or_default()
    }
}

#[cfg(feature = "postgres")]
/// Renews the lease every third of its length until `shutdown`, then gives it up. When a
/// renewal fails and the lease may expire, or another replica took it, logs why, records it
/// in `lost` and cancels `shutdown` (which stops the driver and the admin API: nothing more is
/// decided or offered here).
pub(crate) fn keep(
    lease: Arc<CoordinatorLease>,
    token: LeaseToken,
    mut valid_until: Instant,
    lost: Arc<LeaseLoss>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ttl = lease.ttl();
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let releasing = lease.clone();
                    match tokio::task::spawn_blocking(move || releasing.release(token)).await {
                        Ok(Ok(())) => tracing::info!(token = token.0, "gave up the coordinator lease"),
                        _ => tracing::warn!("could not give up the coordinator lease; it expires by itself"),
                    }
                    return;
                }
                () = tokio::time::sleep(ttl / 3) => {}
                () = tokio::time::sleep_until(valid_until) => {
                    break "not renewed in time".to_owned();
                }
            }
            let sent = Instant::now();
            let renewing = lease.clone();
            let renewal = tokio::task::spawn_blocking(move || renewing.renew(token));
            tokio::select! {
                result = renewal => match result {
                    Ok(Ok(true)) => valid_until = safe_until(sent, ttl),
                    Ok(Ok(false)) => break "another replica holds it".to_owned(),
                    Ok(Err(error)) => tracing::warn!(%error, "cannot renew the coordinator lease; retrying"),
                    Err(_) => break "the renewal task failed".to_owned(),
                },
                () = tokio::time::sleep_until(valid_until) => {
                    break "not renewed in time".to_owned();
                }
                () = shutdown.cancelled() => {}
            }
        };
        tracing::error!(
            token = token.0,
            reason,
            "lost the coordinator lease: this replica stops serving"
        );
        lost.record(reason);
        shutdown.cancel();
    })
}

#[cfg(feature = "postgres")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_acting_a_sixth_of_the_lease_before_it_can_expire() {
        let sent = Instant::now();
        assert_eq!(
            safe_until(sent, Duration::from_secs(6)),
            sent + Duration::from_secs(5)
        );
    }
}
