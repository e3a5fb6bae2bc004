//! Prometheus metrics of the fleet (text exposition via `prometheus-client`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `opamp_agents_connected` | gauge | |
//! | `opamp_agents_known` | gauge | |
//! | `opamp_agents_by_version` | gauge | `package`, `version` (only catalog entries; the rest as `other`) |
//! | `opamp_agents_by_health` | gauge | `healthy` (`true`/`false`) |
//! | `opamp_rollout_state` | gauge (1 for the current state) | `rollout`, `package`, `state` |
//! | `opamp_install_results_total` | counter | `result` (`installed`, `failed`, `reverted`) |
//! | `opamp_coordinating` | gauge (1 while this server runs the rollout driver) | |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::audit::AuditAction;
use crate::events::RolloutStatus;
use crate::store::AgentRecord;

type LabelPairs = Vec<(String, String)>;

const ALL_STATUSES: [RolloutStatus; 9] = [
    RolloutStatus::Planned,
    RolloutStatus::Canary,
    RolloutStatus::Baking,
    RolloutStatus::Batch,
    RolloutStatus::Paused,
    RolloutStatus::Aborting,
    RolloutStatus::Completed,
    RolloutStatus::RolledBack,
    RolloutStatus::Failed,
];

/// The fleet's metrics. Gauges describing the fleet are recomputed from the agent registry
/// with [`FleetMetrics::set_agents`]; counters grow with [`FleetMetrics::count_audit`].
#[derive(Debug)]
pub struct FleetMetrics {
    registry: Registry,
    connected: Gauge,
    known: Gauge,
    by_version: Family<LabelPairs, Gauge>,
    by_health: Family<LabelPairs, Gauge>,
    rollout_state: Family<LabelPairs, Gauge>,
    install_results: Family<LabelPairs, Counter>,
    coordinating: Gauge,
    /// The catalog's (package, version) pairs: the only ones that become series.
    catalog: RwLock<BTreeSet<(String, String)>>,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        FleetMetrics::new()
    }
}

impl FleetMetrics {
    /// Registers every metric, all at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = FleetMetrics {
            connected: Gauge::default(),
            known: Gauge::default(),
            by_version: Family::default(),
            by_health: Family::default(),
            rollout_state: Family::default(),
            install_results: Family::default(),
            coordinating: Gauge::default(),
            registry: Registry::default(),
            catalog: RwLock::default(),
        };
        registry.register(
            "opamp_agents_connected",
            "Agents with an open connection (or polling)",
            metrics.connected.clone(),
        );
        registry.register(
            "opamp_agents_known",
            "Agents in the registry, connected or not",
            metrics.known.clone(),
        );
        registry.register(
            "opamp_agents_by_version",
            "Agents by installed package version",
            metrics.by_version.clone(),
        );
        registry.register(
            "opamp_agents_by_health",
            "Agents by last reported health",
            metrics.by_health.clone(),
        );
        registry.register(
            "opamp_rollout_state",
            "1 for each rollout's current state",
            metrics.rollout_state.clone(),
        );
        registry.register(
            "opamp_install_results",
            "Install results reported by agents taking part in rollouts",
            metrics.install_results.clone(),
        );
        registry.register(
            "opamp_coordinating",
            "1 while this server runs the rollout driver (always, for a single server; the \
             holder of the coordinator lease among replicas on PostgreSQL)",
            metrics.coordinating.clone(),
        );
        FleetMetrics {
            registry,
            ..metrics
        }
    }

    /// Records that this server runs the rollout driver from now on.
    pub fn set_coordinating(&self) {
        self.coordinating.set(1);
    }

    /// Sets the catalog's (package, version) pairs. Only these become
    /// `opamp_agents_by_version` series; agents report any names they like, and a series per
    /// made-up name would let one agent grow `/metrics` without bound. Any other version of
    /// a catalog package is counted as `version="other"`, any other package as
    /// `package="other", version="other"`.
    pub fn set_catalog(&self, packages: impl IntoIterator<Item = (String, String)>) {
        let catalog = packages.into_iter().collect();
        *self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = catalog;
    }

    /// Recomputes the agent gauges from the registry (versions bounded by
    /// [`FleetMetrics::set_catalog`]).
    pub fn set_agents<'a>(&self, agents: impl IntoIterator<Item = &'a AgentRecord>) {
        let mut connected = 0i64;
        let mut known = 0i64;
        let mut versions: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut health = [0i64; 2];
        let catalog = self
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for agent in agents {
            known += 1;
            if agent.connected {
                connected += 1;
            }
            health[usize::from(agent.healthy)] += 1;
            for (package, version) in &agent.package_versions {
                *versions
                    .entry(bounded_labels(&catalog, package, version))
                    .or_default() += 1;
            }
        }
        self.connected.set(connected);
        self.known.set(known);
        self.by_version.clear();
        for ((package, version), count) in versions {
            self.by_version
                .get_or_create(&vec![
                    ("package".into(), package),
                    ("version".into(), version),
                ])
                .set(count);
        }
        for (healthy, count) in [("false", health[0]), ("true", health[1])] {
            self.by_health
                .get_or_create(&vec![("healthy".into(), healthy.into())])
                .set(count);
        }
    }

    /// Sets rollout `id`'s state gauge (the previous state's series is removed).
    pub fn set_rollout_state(&self, id: &str, package: &str, state: &str) {
        // A rollout has one state at a time: drop its other series.
        let stale: Vec<LabelPairs> = ALL_STATUSES
            .iter()
            .map(|s| rollout_labels(id, package, s.as_str()))
            .collect();
        for labels in &stale {
            self.rollout_state.remove(labels);
        }
        self.rollout_state
            .get_or_create(&rollout_labels(id, package, state))
            .set(1);
    }

    /// Counts install results among audit actions.
    pub fn count_audit(&self, action: &AuditAction) {
        let result = match action {
            AuditAction::AgentInstalled { .. } => "installed",
            AuditAction::AgentFailed { .. } => "failed",
            AuditAction::AgentReverted { .. } => "reverted",
            _ => return,
        };
        self.install_results
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }

    /// The text exposition format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

/// The series an agent's installed version counts in.
fn bounded_labels(
    catalog: &BTreeSet<(String, String)>,
    package: &str,
    version: &str,
) -> (String, String) {
    const OTHER: &str = "other";
    let key = (package.to_owned(), version.to_owned());
    if catalog.contains(&key) {
        key
    } else if catalog.iter().any(|(name, _)| name == package) {
        (key.0, OTHER.to_owned())
    } else {
        (OTHER.to_owned(), OTHER.to_owned())
    }
}

fn rollout_labels(id: &str, package: &str, state: &str) -> LabelPairs {
    vec![
        ("rollout".into(), id.into()),
        ("package".into(), package.into()),
        ("state".into(), state.into()),
    ]
}

#[cfg(test)]
mod tests {
    use opamp_proto::InstanceUid;

    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn gauges_follow_the_registry() {
        let metrics = FleetMetrics::new();
        let mut a = AgentRecord::new(
            InstanceUid::from([1; 16]),
            Default::default(),
            0,
            Timestamp::EPOCH,
        );
        a.package_versions.insert("otelcol", "1.0.0");
        let mut b = a.clone();
        b.uid = InstanceUid::from([2; 16]);
        b.connected = false;
        b.healthy = false;
        // Issue 22: made-up names and versions never become series of their own.
        let mut c = a.clone();
        c.uid = InstanceUid::from([3; 16]);
        c.package_versions.insert("otelcol", "9.9.9");
        for i in 0..100 {
            c.package_versions
                .insert(format!("../../etc/passwd{i}"), "1.0.0");
        }
        metrics.set_catalog([("otelcol".to_owned(), "1.0.0".to_owned())]);
        metrics.set_agents([&a, &b, &c]);
        metrics.set_rollout_state("r1", "otelcol", "canary");
        metrics.set_rollout_state("r1", "otelcol", "completed");
        metrics.count_audit(&AuditAction::AgentInstalled {
            uid: a.uid,
            version: "1".into(),
        });
        let text = metrics.encode();
        assert!(text.contains("opamp_agents_connected 2\n"), "{text}");
        assert!(
            text.contains("opamp_agents_by_version{package=\"otelcol\",version=\"other\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("opamp_agents_by_version{package=\"other\",version=\"other\"} 100"),
            "{text}"
        );
        assert!(!text.contains("passwd"), "{text}");
        assert!(
            text.contains("opamp_agents_by_version{package=\"otelcol\",version=\"1.0.0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("opamp_agents_by_health{healthy=\"false\"} 1"),
            "{text}"
        );
        assert!(text.contains("state=\"completed\"} 1"), "{text}");
        assert!(!text.contains("state=\"canary\""), "{text}");
        assert!(
            text.contains("opamp_install_results_total{result=\"installed\"} 1"),
            "{text}"
        );
    }
}
