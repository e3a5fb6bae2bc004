//! Offers the driver could not build because the store failed for a moment (a database
//! restarting, a lost connection). The coordinator has already counted such an offer as
//! sent and waits for the agent to act on it, so dropping it would let the agent time out
//! of its wave and fail the rollout; it is built and sent again shortly instead.

use std::collections::BTreeMap;
use std::time::Duration;

use opamp_proto::InstanceUid;
use tokio::time::Instant;

use crate::FleetError;

/// How long after a failure the offers are tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Most offers kept; past it the oldest are dropped (the agent gets what the rollouts want
/// for it again when it reconnects).
const MAX_UNSENT: usize = 100_000;

/// An offer to build again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsent {
    /// Packages: name to version.
    Packages(BTreeMap<String, String>),
    /// A remote config, by hash (hex).
    Config(String),
}

/// The offers waiting to be built again, and when.
#[derive(Debug, Default)]
pub(crate) struct UnsentOffers {
    offers: Vec<(InstanceUid, Unsent)>,
    next_try: Option<Instant>,
}

impl UnsentOffers {
    /// Keeps `offer` for `uid`, to be tried again after [`RETRY_AFTER`].
    pub(crate) fn push(&mut self, uid: InstanceUid, offer: Unsent) {
        if self.offers.len() >= MAX_UNSENT {
            self.offers.remove(0);
        }
        // A newer offer for the agent replaces an older one of the same kind.
        self.offers.retain(|(held, kept)| {
            *held != uid || std::mem::discriminant(kept) != std::mem::discriminant(&offer)
        });
        self.offers.push((uid, offer));
        self.next_try
            .get_or_insert_with(|| Instant::now() + RETRY_AFTER);
    }

    /// When to try again, if anything waits.
    pub(crate) fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// The offers to try now (all of them once their time came; none before).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(InstanceUid, Unsent)> {
        match self.next_try {
            Some(at) if at <= now => {
                self.next_try = None;
                std::mem::take(&mut self.offers)
            }
            _ => Vec::new(),
        }
    }
}

/// Whether building an offer failed for a reason that may pass (the store), rather than
/// for good (the version is not in the catalog, the entry cannot be offered).
pub(crate) fn is_transient(error: &FleetError) -> bool {
    matches!(error, FleetError::Store(_) | FleetError::Io { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_wait_their_turn_and_the_newest_per_agent_and_kind_wins() {
        let mut unsent = UnsentOffers::default();
        let agent = InstanceUid::from([1; 16]);
        let old = Unsent::Packages(BTreeMap::from([("otelcol".into(), "1.0.0".into())]));
        let new = Unsent::Packages(BTreeMap::from([("otelcol".into(), "2.0.0".into())]));
        unsent.push(agent, old);
        unsent.push(agent, Unsent::Config("ab".into()));
        unsent.push(agent, new.clone());
        let at = unsent.next_try().unwrap();
        assert!(unsent.take_due(at - Duration::from_millis(1)).is_empty());
        assert_eq!(
            unsent.take_due(at),
            [(agent, Unsent::Config("ab".into())), (agent, new)]
        );
        assert_eq!(unsent.next_try(), None);
        assert!(!is_transient(&FleetError::NotFound { what: "x".into() }));
    }
}
