//! The rollout the fleet load tools time (`fleet_rollout`, `fleet_replicas`): the request
//! that starts it and the following of its progress events until it ends.

// Load-tool code: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used)]

use std::fmt;
use std::time::{Duration, Instant};

use opamp_fleet::admin::{AdminClient, RolloutRequest};
use opamp_fleet::{BatchPlan, FleetError, RolloutStatus};

use crate::sim_agent::PACKAGE;

/// The rollout of [`PACKAGE`] from 1.0.0 to 2.0.0: a canary of `canary_share`, then batches
/// of `batch_share` of the fleet, no bake time, install and health timeouts of `timeout`.
#[must_use]
pub fn rollout_request(canary_share: f64, batch_share: f64, timeout: Duration) -> RolloutRequest {
    let mut request = RolloutRequest::new(PACKAGE, "2.0.0");
    request.canary_share = Some(canary_share);
    request.batches = Some(BatchPlan::Share(batch_share));
    request.bake_time = Some(Duration::ZERO);
    request.install_timeout = Some(timeout);
    request.health_timeout = Some(timeout);
    request
}

/// Why [`follow_progress`] stopped before the rollout ended; shown as the run's `FAIL:`
/// reason.
#[derive(Debug)]
pub enum Unfinished {
    /// The event stream failed.
    StreamError(FleetError),
    /// The event stream ended.
    StreamEnded,
    /// The deadline came first; the rollout's status then, as the admin API answered.
    TimedOut(Result<RolloutStatus, FleetError>),
}

impl fmt::Display for Unfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfinished::StreamError(error) => write!(f, "event stream error {error}"),
            Unfinished::StreamEnded => f.write_str("event stream ended"),
            Unfinished::TimedOut(status) => write!(f, "timed out; {status:?}"),
        }
    }
}

/// Follows rollout `id` through `admin`'s progress events until it reaches a terminal status
/// (returned) or `deadline`. Prints the status and progress (with the time since `started`)
/// at most once per `report_every`, the first once `report_every` has passed since
/// `last_report`.
///
/// # Errors
/// [`Unfinished`] when the stream fails or ends, or the deadline comes, first.
///
/// # Panics
/// When the event stream cannot be opened.
pub async fn follow_progress(
    admin: &AdminClient,
    id: &str,
    deadline: tokio::time::Instant,
    started: Instant,
    report_every: Duration,
    mut last_report: Instant,
) -> Result<RolloutStatus, Unfinished> {
    let mut events = admin.rollout_events(id).await.unwrap();
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(update))) => {
                if update.status.is_terminal() {
                    return Ok(update.status);
                }
                if last_report.elapsed() >= report_every {
                    last_report = Instant::now();
                    println!(
                        "{:.1?}: {:?} {:?}",
                        started.elapsed(),
                        update.status,
                        update.progress
                    );
                }
            }
            Ok(Some(Err(error))) => return Err(Unfinished::StreamError(error)),
            Ok(None) => return Err(Unfinished::StreamEnded),
            Err(_) => {
                let status = admin.rollout(id).await.map(|view| view.status);
                return Err(Unfinished::TimedOut(status));
            }
        }
    }
}
