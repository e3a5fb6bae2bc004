//! How the driver reaches an agent: through this server's own session of it, or, with
//! several replicas on one PostgreSQL database, through the replica that holds its
//! connection (see `server::relay`). The driver learns where each agent is from the
//! connections it is told about.

use std::collections::HashMap;
use std::sync::Arc;

use opamp_proto::{InstanceUid, v1};
use opamp_transport::server::AgentSessions;

/// Something the driver sends an agent.
#[derive(Debug)]
pub(crate) enum ToAgent {
    /// An offer of packages.
    Packages(v1::PackagesAvailable),
    /// A remote config.
    Config(v1::AgentRemoteConfig),
    /// A command.
    Command(v1::ServerToAgentCommand),
    /// Forget the agent's session.
    Forget,
}

/// Most messages kept for other replicas while the database refuses them.
#[cfg(feature = "postgres")]
const MAX_UNSENT: usize = 100_000;

pub(crate) struct AgentLink {
    sessions: AgentSessions,
    /// Agents whose connection another replica holds, and which.
    remote: HashMap<InstanceUid, Arc<str>>,
    #[cfg(feature = "postgres")]
    relay: Option<Arc<crate::store::AgentRelay>>,
    /// Messages for agents on other replicas, written at the next [`AgentLink::flush`].
    #[cfg(feature = "postgres")]
    outgoing: Vec<crate::store::RelayMessage>,
}

impl AgentLink {
    /// Agents connected to this server only.
    pub(crate) fn local(sessions: AgentSessions) -> Self {
        AgentLink {
            sessions,
            remote: HashMap::new(),
            #[cfg(feature = "postgres")]
            relay: None,
            #[cfg(feature = "postgres")]
            outgoing: Vec::new(),
        }
    }

    /// Agents connected here, and to other replicas through `relay`.
    #[cfg(feature = "postgres")]
    pub(crate) fn relayed(sessions: AgentSessions, relay: Arc<crate::store::AgentRelay>) -> Self {
        AgentLink {
            relay: Some(relay),
            ..AgentLink::local(sessions)
        }
    }

    /// The agent connected to this server: it is reached here from now on.
    pub(crate) fn connected_here(&mut self, uid: InstanceUid) {
        self.remote.remove(&uid);
    }

    /// Whether another replica holds the agent's connection (what this server's own session
    /// of it says is then stale).
    pub(crate) fn is_elsewhere(&self, uid: &InstanceUid) -> bool {
        self.remote.contains_key(uid)
    }

    /// The agent connected to `replica`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn connected_to(&mut self, uid: InstanceUid, replica: Arc<str>) {
        self.remote.insert(uid, replica);
    }

    /// Whether `replica` holds the agent's connection (as far as the driver was told).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn held_by(&self, uid: &InstanceUid, replica: &str) -> bool {
        self.remote.get(uid).is_some_and(|held| &**held == replica)
    }

    /// The agents whose connection `replica` holds.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn held_by_replica(&self, replica: &str) -> Vec<InstanceUid> {
        self.remote
            .iter()
            .filter(|(_, held)| &***held == replica)
            .map(|(uid, _)| *uid)
            .collect()
    }

    /// The agent's connection to another replica ended.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn disconnected_remote(&mut self, uid: &InstanceUid) {
        self.remote.remove(uid);
    }

    /// Sends `what` to the agent; `false` when it is connected nowhere the driver knows.
    pub(crate) fn send(&mut self, uid: InstanceUid, what: ToAgent) -> bool {
        if let Some(replica) = self.remote.get(&uid) {
            #[cfg(feature = "postgres")]
            if self.relay.is_some() {
                let message = super::relay::outbox_message(replica, uid, &what);
                self.outgoing.push(message);
                if matches!(what, ToAgent::Forget) {
                    self.remote.remove(&uid);
                }
                return true;
            }
            let _ = replica;
            return false;
        }
        match what {
            ToAgent::Packages(offer) => self
                .sessions
                .with_session(uid, |s| s.offer_packages(offer))
                .is_some(),
            ToAgent::Config(config) => self
                .sessions
                .with_session(uid, |s| s.offer_remote_config(config))
                .is_some(),
            ToAgent::Command(command) => self
                .sessions
                .with_session(uid, |s| s.send_command(command))
                .is_some(),
            ToAgent::Forget => self.sessions.forget(uid),
        }
    }

    /// Sends `command` to each of `uids`; returns to how many.
    pub(crate) fn command(
        &mut self,
        uids: &[InstanceUid],
        command: v1::ServerToAgentCommand,
    ) -> usize {
        let (elsewhere, here): (Vec<InstanceUid>, Vec<InstanceUid>) =
            uids.iter().partition(|uid| self.remote.contains_key(uid));
        let mut sent = self
            .sessions
            .with_sessions(&here, |_, session| session.send_command(command));
        for uid in elsewhere {
            sent += usize::from(self.send(uid, ToAgent::Command(command)));
        }
        sent
    }

    /// Writes the messages for agents on other replicas (no-op without any). A failed write
    /// is retried at the next flush.
    pub(crate) fn flush(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(relay) = &self.relay
            && !self.outgoing.is_empty()
        {
            let count = self.outgoing.len();
            match relay.to_replicas(self.outgoing.clone()) {
                Ok(()) => self.outgoing.clear(),
                // Kept for the next flush, within bounds: past them the agents get what the
                // coordinator wants them to have when they reconnect.
                Err(error) if count < MAX_UNSENT => {
                    tracing::warn!(%error, count, "relaying offers to other replicas failed; retried at the next write");
                }
                Err(error) => {
                    tracing::error!(%error, count, "relaying offers to other replicas failed; dropped");
                    self.outgoing.clear();
                }
            }
        }
    }
}
