//! Server-Sent Events that keep the overview and rollout pages current.
//!
//! The fleet stream is computed once for every viewer, by one task, every
//! [`FLEET_INTERVAL`] while someone watches; the rollout stream follows the driver's rollout
//! updates (the same broadcast the admin API's `/api/v1/rollouts/{id}/events` serves) and
//! re-renders at most every [`ROLLOUT_THROTTLE`], so a 10,000-agent wave costs a few messages
//! a second, not one per agent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::IntoResponse as _;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Dashboard;
use super::pages::fleet_fragment_now;
use super::rollouts::{AuditTail, rollout_fragment};
use super::session::Session;
use crate::rollout::RolloutId;

/// How often the fleet overview is recomputed while someone watches it.
pub(super) const FLEET_INTERVAL: Duration = Duration::from_secs(2);
/// Least time between two renders of one rollout page.
pub(super) const ROLLOUT_THROTTLE: Duration = Duration::from_millis(500);

/// Recomputes the fleet overview while it has viewers, until `shutdown`.
pub(super) fn spawn_fleet_task(
    dashboard: Dashboard,
    fleet: Arc<watch::Sender<String>>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLEET_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if fleet.receiver_count() == 0 {
                continue;
            }
            match fleet_fragment_now(&dashboard).await {
                Ok(fragment) => {
                    fleet.send_if_modified(|current| {
                        let changed = *current != fragment;
                        if changed {
                            *current = fragment;
                        }
                        changed
                    });
                }
                Err(error) => tracing::warn!(%error, "fleet overview not refreshed"),
            }
        }
    });
}

/// An SSE answer.
type EventStream = axum::response::Response;

fn stream_of(receiver: mpsc::Receiver<Event>) -> EventStream {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (event, receiver))
    });
    Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /ui/live/fleet`: `fleet` events carrying the overview's HTML.
pub(super) async fn fleet(State(dashboard): State<Dashboard>) -> EventStream {
    let mut updates = dashboard.fleet.subscribe();
    let shutdown = dashboard.admin.shutdown.clone();
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        // The page was rendered a moment ago; the next change (or the first computation
        // after this viewer arrived) is what it lacks.
        updates.mark_unchanged();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
                changed = updates.changed() => if changed.is_err() { return },
            }
            let fragment = updates.borrow_and_update().clone();
            if sender
                .send(Event::default().event("fleet").data(fragment))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    stream_of(receiver)
}

/// `GET /ui/live/rollouts/{id}`: `rollout` events carrying the rollout page's HTML, then
/// `end` once the rollout is over (so the browser does not reconnect).
pub(super) async fn rollout(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> EventStream {
    let id = RolloutId::new(id);
    let mut updates = dashboard.admin.updates.subscribe();
    let shutdown = dashboard.admin.shutdown.clone();
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        // Render once straight away: a step may have happened since the page was rendered.
        let mut dirty = true;
        let mut tail = AuditTail::default();
        loop {
            if dirty {
                let Ok(Some((fragment, status))) =
                    rollout_fragment(&dashboard, &session, id.clone(), &mut tail).await
                else {
                    return;
                };
                if sender
                    .send(Event::default().event("rollout").data(fragment))
                    .await
                    .is_err()
                {
                    return;
                }
                if status.is_terminal() {
                    let _ = sender.send(Event::default().event("end").data("")).await;
                    return;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ROLLOUT_THROTTLE) => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
                received = updates.recv() => match received {
                    Ok(update) => dirty = update.rollout == id,
                    Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            // Collect whatever else arrived during the throttle: one render covers it all.
            while let Ok(update) = updates.try_recv() {
                dirty |= update.rollout == id;
            }
        }
    });
    stream_of(receiver)
}
