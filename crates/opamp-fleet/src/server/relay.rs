//! Agents on every replica (PostgreSQL store): what crosses between a replica serving an
//! agent and the coordinator (the replica holding the coordinator lease), and the tasks that
//! carry it through the database's relay tables (`store::postgres::relay`).
//!
//! ```text
//!  agent ─▶ replica B ── agent_inbox (+NOTIFY) ──▶ coordinator A: driver
//!  agent ◀─ replica B ◀─ agent_outbox (+NOTIFY) ── coordinator A: offers, configs, commands
//! ```
//!
//! To the coordinator, a replica relays each agent's connection, its reports (one
//! `AgentToServer` per change, carrying only the changed field, so the coordinator reads them
//! with the decoders it uses for its own agents), heartbeats and disconnection. The
//! coordinator applies a relayed message only from the replica that last announced the
//! agent's connection, so a late goodbye from a replica the agent left does not mark it
//! disconnected. When the coordinator changes, every replica sends the full state of each
//! agent it holds, as after a reconnect ([`snapshot`]), which makes anything the old
//! coordinator took from the inbox and did not act on harmless.

use std::sync::Arc;
use std::time::Duration;

use opamp_proto::codec::{Limits, decode, encode};
use opamp_proto::{AgentCapabilities, InstanceUid, v1};
use opamp_session::ServerEvent;
use opamp_transport::server::{AgentSessions, ServerNotification};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::agent_link::ToAgent;
use super::details;
use crate::store::{AgentRelay, ConnectionView, Heard, Presence, RelayMessage};
use crate::time::Timestamp;

/// To the coordinator: the agent connected here (payload: its [`ConnectionView`] as JSON).
const CONNECTED: i16 = 1;
/// To the coordinator: the agent reported a change (payload: an `AgentToServer`).
const REPORT: i16 = 2;
/// To the coordinator: a message that changed nothing arrived.
const HEARTBEAT: i16 = 3;
/// To the coordinator: the agent's connection here ended.
const DISCONNECTED: i16 = 4;

/// To a replica: offer these packages (payload: `PackagesAvailable`).
const OFFER_PACKAGES: i16 = 1;
/// To a replica: offer this remote config (payload: `AgentRemoteConfig`).
const OFFER_CONFIG: i16 = 2;
/// To a replica: send this command (payload: `ServerToAgentCommand`).
const COMMAND: i16 = 3;
/// To a replica: forget the agent's session.
const FORGET: i16 = 4;

/// Most inbox rows taken per read.
const INBOX_BATCH: i64 = 4096;
/// How often relay readers look without a notification (one may be lost while the
/// listening connection reconnects).
const POLL: Duration = Duration::from_secs(1);
/// Undelivered messages to a replica (one that died) are deleted after this long.
const OUTBOX_MAX_AGE: Duration = Duration::from_secs(600);

/// What a replica relayed about one agent, as the coordinator's driver reads it.
#[derive(Debug)]
pub(crate) struct Relayed {
    /// The replica holding the agent's connection.
    pub(crate) replica: Arc<str>,
    /// The agent.
    pub(crate) uid: InstanceUid,
    /// What happened.
    pub(crate) what: RelayedKind,
}

/// What the coordinator's driver hears from the relay.
#[derive(Debug)]
pub(crate) enum RelayInput {
    /// A replica relayed something about one of its agents.
    Agent(Relayed),
    /// A replica stopped being seen (it died or lost the database): its agents are no longer
    /// connected through it.
    ReplicaGone(Arc<str>),
}

/// What happened to a relayed agent.
#[derive(Debug)]
pub(crate) enum RelayedKind {
    /// It connected to the replica.
    Connected(ConnectionView),
    /// It reported changes.
    Events(Vec<ServerEvent>),
    /// It is alive.
    Heartbeat,
    /// Its connection to the replica ended.
    Disconnected,
}

/// An inbox row: the agent, the kind of message, its payload.
type InboxRow = (InstanceUid, i16, Vec<u8>);

/// An agent notification as a row for the inbox, and the presence change it makes; `None`
/// for what the coordinator does not use.
pub(crate) fn encode_notification(
    notification: ServerNotification,
    replica: &str,
    now: Timestamp,
) -> Option<(InboxRow, Option<Presence>)> {
    let presence = presence_of(&notification);
    let row = match notification {
        ServerNotification::Connected {
            uid,
            transport,
            connection,
        } => {
            let view = details::connection(transport, &connection, now).on_replica(replica);
            let json = serde_json::to_vec(&view).ok()?;
            (uid, CONNECTED, json)
        }
        ServerNotification::Event {
            uid,
            event: ServerEvent::Disconnected { .. },
        }
        | ServerNotification::Disconnected { uid } => (uid, DISCONNECTED, Vec::new()),
        ServerNotification::Event { uid, event } => {
            let report = report_of(event)?;
            (uid, REPORT, encode(&report))
        }
        ServerNotification::Heartbeat { uid } => (uid, HEARTBEAT, Vec::new()),
        _ => return None,
    };
    Some((row, presence))
}

/// The change of where the agent is connected that `notification` makes, if any.
fn presence_of(notification: &ServerNotification) -> Option<Presence> {
    match notification {
        ServerNotification::Connected { uid, .. } => Some(Presence::Here(*uid)),
        ServerNotification::Event {
            uid,
            event: ServerEvent::Disconnected { .. },
        }
        | ServerNotification::Disconnected { uid } => Some(Presence::Gone(*uid)),
        _ => None,
    }
}

/// The `AgentToServer` carrying what `event` changed; `None` for events the coordinator
/// does not read.
fn report_of(event: ServerEvent) -> Option<v1::AgentToServer> {
    let mut report = v1::AgentToServer::default();
    match event {
        ServerEvent::CapabilitiesChanged(capabilities) => {
            report.capabilities = capabilities.bits();
        }
        ServerEvent::DescriptionChanged(description) => {
            report.agent_description = Some(description);
        }
        ServerEvent::HealthChanged(health) => report.health = Some(health),
        ServerEvent::EffectiveConfigChanged(config) => report.effective_config = Some(config),
        ServerEvent::RemoteConfigStatusChanged(status) => {
            report.remote_config_status = Some(status);
        }
        ServerEvent::PackageStatusesChanged(statuses) => {
            report.package_statuses = Some(statuses);
        }
        ServerEvent::AvailableComponentsChanged(components) => {
            report.available_components = Some(components);
        }
        _ => return None,
    }
    Some(report)
}

/// The events a relayed report carries, in a fixed order.
fn events_of(report: v1::AgentToServer) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    if report.capabilities != 0 {
        events.push(ServerEvent::CapabilitiesChanged(
            AgentCapabilities::from_wire(report.capabilities),
        ));
    }
    if let Some(description) = report.agent_description {
        events.push(ServerEvent::DescriptionChanged(description));
    }
    if let Some(health) = report.health {
        events.push(ServerEvent::HealthChanged(health));
    }
    if let Some(config) = report.effective_config {
        events.push(ServerEvent::EffectiveConfigChanged(config));
    }
    if let Some(status) = report.remote_config_status {
        events.push(ServerEvent::RemoteConfigStatusChanged(status));
    }
    if let Some(statuses) = report.package_statuses {
        events.push(ServerEvent::PackageStatusesChanged(statuses));
    }
    if let Some(components) = report.available_components {
        events.push(ServerEvent::AvailableComponentsChanged(components));
    }
    events
}

/// An inbox row as the driver reads it; `None` (logged) for a row it cannot read.
pub(crate) fn decode_relayed(message: RelayMessage, limits: &Limits) -> Option<Relayed> {
    let what = match message.kind {
        CONNECTED => match serde_json::from_slice::<ConnectionView>(&message.payload) {
            Ok(view) => RelayedKind::Connected(view),
            Err(error) => {
                tracing::warn!(uid = %message.uid, %error, "unreadable relayed connection; skipped");
                return None;
            }
        },
        REPORT => match decode::<v1::AgentToServer>(&message.payload, limits) {
            Ok(report) => RelayedKind::Events(events_of(report)),
            Err(error) => {
                tracing::warn!(uid = %message.uid, %error, "unreadable relayed report; skipped");
                return None;
            }
        },
        HEARTBEAT => RelayedKind::Heartbeat,
        DISCONNECTED => RelayedKind::Disconnected,
        kind => {
            tracing::warn!(uid = %message.uid, kind, "relayed message of an unknown kind (a newer replica?); skipped");
            return None;
        }
    };
    Some(Relayed {
        replica: message.replica.into(),
        uid: message.uid,
        what,
    })
}

/// `what` for `uid`, addressed to `replica`, as an outbox row.
pub(crate) fn outbox_message(replica: &str, uid: InstanceUid, what: &ToAgent) -> RelayMessage {
    let (kind, payload) = match what {
        ToAgent::Packages(offer) => (OFFER_PACKAGES, encode(offer)),
        ToAgent::Config(config) => (OFFER_CONFIG, encode(config)),
        ToAgent::Command(command) => (COMMAND, encode(command)),
        ToAgent::Forget => (FORGET, Vec::new()),
    };
    RelayMessage {
        replica: replica.to_owned(),
        uid,
        kind,
        payload,
    }
}

/// Carries out an outbox row on this replica's session of the agent (if it still has one).
fn deliver(sessions: &AgentSessions, message: &RelayMessage, limits: &Limits) {
    let uid = message.uid;
    let delivered = match message.kind {
        OFFER_PACKAGES => decode::<v1::PackagesAvailable>(&message.payload, limits)
            .map(|offer| sessions.with_session(uid, |s| s.offer_packages(offer))),
        OFFER_CONFIG => decode::<v1::AgentRemoteConfig>(&message.payload, limits)
            .map(|config| sessions.with_session(uid, |s| s.offer_remote_config(config))),
        COMMAND => decode::<v1::ServerToAgentCommand>(&message.payload, limits)
            .map(|command| sessions.with_session(uid, |s| s.send_command(command))),
        FORGET => Ok(sessions.forget(uid).then_some(())),
        kind => {
            tracing::warn!(%uid, kind, "relayed message of an unknown kind (a newer coordinator?); skipped");
            return;
        }
    };
    match delivered {
        Ok(Some(())) => {}
        // The agent left this replica; it gets the offer where it reconnects.
        Ok(None) => tracing::debug!(%uid, "relayed message for an agent no longer here"),
        Err(error) => tracing::warn!(%uid, %error, "unreadable relayed message; skipped"),
    }
}

/// Every connected agent's connection and full reported state, as the notifications a
/// fresh connection would have produced.
pub(crate) fn snapshot(sessions: &AgentSessions) -> Vec<ServerNotification> {
    let mut notifications = Vec::new();
    for uid in sessions.connected() {
        let Some(connection) = sessions.connection_info(uid) else {
            continue;
        };
        let Some((transport, state)) =
            sessions.with_session(uid, |s| (s.config().mode, s.agent_state().clone()))
        else {
            continue;
        };
        notifications.push(ServerNotification::Connected {
            uid,
            transport,
            connection,
        });
        let status = state.status;
        let report = v1::AgentToServer {
            capabilities: state.capabilities.bits(),
            agent_description: status.description,
            health: status.health,
            effective_config: status.effective_config,
            remote_config_status: status.remote_config_status,
            package_statuses: status.package_statuses,
            available_components: status.available_components,
            ..Default::default()
        };
        notifications.extend(
            events_of(report)
                .into_iter()
                .map(|event| ServerNotification::Event { uid, event }),
        );
    }
    notifications
}

/// Tells the relay's tasks that the listener heard something.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    pub(crate) inbox: Notify,
    pub(crate) outbox: Notify,
    pub(crate) requests: Notify,
}

impl Wakers {
    pub(crate) fn heard(&self, heard: Heard) {
        match heard {
            Heard::Inbox => self.inbox.notify_one(),
            Heard::Outbox => self.outbox.notify_one(),
            Heard::Requests => self.requests.notify_one(),
            _ => {
                self.inbox.notify_one();
                self.outbox.notify_one();
                self.requests.notify_one();
            }
        }
    }
}

/// Runs `call` on the blocking pool (relay calls block on their connection's thread).
async fn blocking<R: Send + 'static>(
    relay: &Arc<AgentRelay>,
    call: impl FnOnce(&AgentRelay) -> R + Send + 'static,
) -> Option<R> {
    let relay = relay.clone();
    tokio::task::spawn_blocking(move || call(&relay)).await.ok()
}

/// This replica's side: delivers what the coordinator sent to agents connected here, until
/// `shutdown`.
pub(crate) async fn deliver_outbox(
    relay: Arc<AgentRelay>,
    sessions: AgentSessions,
    wakers: Arc<Wakers>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    loop {
        match blocking(&relay, AgentRelay::take_outbox).await {
            Some(Ok(messages)) => {
                for message in &messages {
                    deliver(&sessions, message, &limits);
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "cannot read relayed offers; retrying"),
            None => return,
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wakers.outbox.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The coordinator's side: hands what other replicas relayed to the driver, until `shutdown`
/// or the driver stops. Rows this replica wrote before it became the coordinator are
/// skipped: its own agents reach the driver directly, with a snapshot.
pub(crate) async fn read_inbox(
    relay: Arc<AgentRelay>,
    driver: mpsc::Sender<RelayInput>,
    wakers: Arc<Wakers>,
    limits: Limits,
    gone_after: Duration,
    shutdown: CancellationToken,
) {
    let mut purged = tokio::time::Instant::now();
    loop {
        loop {
            let messages = match blocking(&relay, |relay| relay.take_inbox(INBOX_BATCH)).await {
                Some(Ok(messages)) => messages,
                Some(Err(error)) => {
                    tracing::warn!(%error, "cannot read relayed agent reports; retrying");
                    break;
                }
                None => return,
            };
            let full = messages.len() as i64 >= INBOX_BATCH;
            for message in messages {
                if message.replica == relay.replica() {
                    continue;
                }
                if let Some(relayed) = decode_relayed(message, &limits)
                    && driver.send(RelayInput::Agent(relayed)).await.is_err()
                {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        // After the inbox: what a replica wrote before it went is applied first.
        match blocking(&relay, move |r| r.gone_replicas(gone_after)).await {
            Some(Ok(gone)) => {
                for replica in gone {
                    tracing::warn!(
                        replica,
                        "a replica was not seen for {gone_after:?}: its agents count as disconnected until they reconnect"
                    );
                    if driver
                        .send(RelayInput::ReplicaGone(replica.into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "cannot check which replicas are alive"),
            None => return,
        }
        if purged.elapsed() > OUTBOX_MAX_AGE / 10 {
            purged = tokio::time::Instant::now();
            if let Some(Ok(count)) = blocking(&relay, |r| r.purge_outbox(OUTBOX_MAX_AGE)).await
                && count > 0
            {
                tracing::info!(
                    count,
                    "deleted relayed offers no replica took (a replica that stopped)"
                );
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wakers.inbox.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Records every `every` that this replica is alive; when it had been declared gone (the
/// coordinator then counts its agents as disconnected), asks for its agents to be announced
/// again. Runs until `shutdown`.
pub(crate) async fn beat(
    relay: Arc<AgentRelay>,
    routes: mpsc::Sender<Route>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match blocking(&relay, AgentRelay::beat).await {
            Some(Ok(true)) => {
                let _ = routes.try_send(Route::Resend);
            }
            Some(Ok(false)) => {}
            Some(Err(error)) => tracing::warn!(%error, "cannot record that this replica is alive"),
            None => return,
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Where this replica's agent notifications go: to the coordinator through the inbox until
/// this replica becomes the coordinator, then straight to its own driver.
pub(crate) enum Route {
    /// Become the coordinator: send to this driver from now on, starting with a snapshot.
    Coordinate(mpsc::Sender<ServerNotification>),
    /// The coordinator changed: send it a snapshot of every agent here.
    Resend,
}

/// Routes this replica's agent notifications (see [`Route`]) until `shutdown`. Relayed
/// writes are batched: everything queued when one write ends goes in the next.
pub(crate) async fn route_notifications(
    relay: Arc<AgentRelay>,
    sessions: AgentSessions,
    mut notifications: mpsc::Receiver<ServerNotification>,
    mut routes: mpsc::Receiver<Route>,
    shutdown: CancellationToken,
) {
    const BATCH: usize = 2048;
    let mut coordinator: Option<mpsc::Sender<ServerNotification>> = None;
    let mut pending: Vec<ServerNotification> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(route) = routes.recv() => match route {
                    Route::Coordinate(driver) => {
                        for notification in snapshot(&sessions) {
                            if driver.send(notification).await.is_err() {
                                return;
                            }
                        }
                        coordinator = Some(driver);
                    }
                    Route::Resend => {
                        if coordinator.is_none() {
                            pending.extend(snapshot(&sessions));
                        }
                    }
                },
                received = notifications.recv() => match received {
                    Some(notification) => pending.push(notification),
                    None => return,
                },
            }
        }
        while pending.len() < BATCH {
            match notifications.try_recv() {
                Ok(notification) => pending.push(notification),
                Err(_) => break,
            }
        }
        let mut rows = Vec::with_capacity(pending.len());
        let mut presence = Vec::new();
        if let Some(driver) = &coordinator {
            // The driver hears its own agents directly; only where they are is written.
            for notification in pending.drain(..) {
                presence.extend(presence_of(&notification));
                if driver.send(notification).await.is_err() {
                    return;
                }
            }
            if presence.is_empty() {
                continue;
            }
        }
        let now = super::driver::now();
        let replica = relay.replica().to_owned();
        let mut beating = std::collections::HashSet::new();
        for notification in pending.drain(..) {
            if let ServerNotification::Heartbeat { uid } = &notification
                && !beating.insert(*uid)
            {
                continue; // one heartbeat per agent and batch says as much
            }
            if let Some((row, change)) = encode_notification(notification, &replica, now) {
                rows.push(row);
                presence.extend(change);
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let (sending, changes) = (rows.clone(), presence.clone());
            match blocking(&relay, move |r| r.to_coordinator(sending, changes)).await {
                Some(Ok(())) => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, rows = rows.len(), "cannot relay agent reports; retrying");
                }
                None => return,
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(notification: ServerNotification) -> Option<(RelayedKind, Option<Presence>)> {
        let now = Timestamp::from_millis(5);
        let ((agent, kind, payload), presence) = encode_notification(notification, "r1", now)?;
        let message = RelayMessage {
            replica: "r1".into(),
            uid: agent,
            kind,
            payload,
        };
        let relayed = decode_relayed(message, &Limits::default())?;
        assert_eq!((relayed.uid, &*relayed.replica), (uid(), "r1"));
        Some((relayed.what, presence))
    }

    fn uid() -> InstanceUid {
        InstanceUid::from([7; 16])
    }

    #[test]
    fn reports_cross_the_relay_as_the_events_they_were() {
        let health = v1::ComponentHealth {
            healthy: true,
            status: "ok".into(),
            ..Default::default()
        };
        let statuses = v1::PackageStatuses {
            server_provided_all_packages_hash: vec![1, 2],
            ..Default::default()
        };
        for event in [
            ServerEvent::CapabilitiesChanged(AgentCapabilities::from_wire(0x1 | 0x2)),
            ServerEvent::HealthChanged(health),
            ServerEvent::PackageStatusesChanged(statuses),
        ] {
            let expected = format!("{event:?}");
            let (what, presence) =
                relayed(ServerNotification::Event { uid: uid(), event }).unwrap();
            assert_eq!(presence, None);
            let RelayedKind::Events(events) = what else {
                panic!("{what:?}")
            };
            assert_eq!(format!("{:?}", events.as_slice()), format!("[{expected}]"));
        }
        // What the coordinator does not read is not relayed.
        let custom = ServerEvent::CustomMessage(v1::CustomMessage::default());
        assert!(
            relayed(ServerNotification::Event {
                uid: uid(),
                event: custom
            })
            .is_none()
        );
    }

    #[test]
    fn connections_carry_presence_and_a_late_goodbye_is_a_disconnection() {
        let (what, presence) = relayed(ServerNotification::Heartbeat { uid: uid() }).unwrap();
        assert!(matches!(what, RelayedKind::Heartbeat) && presence.is_none());
        let (what, presence) = relayed(ServerNotification::Disconnected { uid: uid() }).unwrap();
        assert!(matches!(what, RelayedKind::Disconnected));
        assert_eq!(presence, Some(Presence::Gone(uid())));
    }

    #[test]
    fn unreadable_rows_are_skipped_not_fatal() {
        for (kind, payload) in [
            (REPORT, vec![0xff, 0xff]),
            (CONNECTED, b"{".to_vec()),
            (99, vec![]),
        ] {
            let message = RelayMessage {
                replica: "r1".into(),
                uid: uid(),
                kind,
                payload,
            };
            assert!(
                decode_relayed(message, &Limits::default()).is_none(),
                "kind {kind}"
            );
        }
    }
}
