//! Agent reports reduced to what the coordinator acts on, and which of them tell a rollout
//! something new. Decoding the protobuf (and checking its field rules) is the caller's part.

use opamp_proto::InstanceUid;

use crate::events::Event;
use crate::rollout::{AgentPhase, Rollout};
use crate::selector::Labels;

/// What one package status says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackageReport {
    /// `Installed` with this version.
    Installed(String),
    /// `InstallFailed` with the agent's message.
    Failed(String),
    /// Pending, downloading or installing: nothing to act on yet.
    InProgress,
}

/// What one `RemoteConfigStatus` says. Hashes are lower-case hex, the form config rollouts
/// track versions in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigReport {
    /// `APPLIED` this config.
    Applied(String),
    /// `FAILED` to apply this config, with the agent's message.
    Failed {
        /// The config's hash (hex).
        hash: String,
        /// The agent's message.
        error: String,
    },
    /// `APPLYING` or unset: nothing to act on yet.
    InProgress,
}

/// One accepted report of an agent, as the coordinator takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentReport {
    /// Its `AgentCapabilities` bits.
    Capabilities(u64),
    /// Its description, as labels.
    Labels(Labels),
    /// Its health.
    Health(bool),
    /// Its package statuses, by package name (the unnamed top-level package has the empty
    /// name), sorted by name.
    Packages(Vec<(String, PackageReport)>),
    /// Its remote config status.
    RemoteConfig(ConfigReport),
    /// Anything else: it registers the agent and refreshes when it was last seen.
    Other,
}

/// The engine event a package report gives, if any; `healthy` is the health the agent
/// reported with (or before) the report.
pub(crate) fn report_event(
    uid: InstanceUid,
    report: &PackageReport,
    healthy: Option<bool>,
) -> Option<Event> {
    match report {
        PackageReport::Installed(version) => Some(Event::AgentInstalled {
            uid,
            version: version.clone(),
            healthy,
        }),
        PackageReport::Failed(error) => Some(Event::AgentInstallFailed {
            uid,
            error: error.clone(),
        }),
        PackageReport::InProgress => None,
    }
}

/// The engine event a config report gives; `healthy` is the health the agent reported with it.
pub(crate) fn config_event(
    uid: InstanceUid,
    report: &ConfigReport,
    healthy: Option<bool>,
) -> Option<Event> {
    match report {
        ConfigReport::Applied(hash) => Some(Event::AgentInstalled {
            uid,
            version: hash.clone(),
            healthy,
        }),
        ConfigReport::Failed { error, .. } => Some(Event::AgentInstallFailed {
            uid,
            error: if error.is_empty() {
                "the agent reported FAILED without a message".to_owned()
            } else {
                error.clone()
            },
        }),
        ConfigReport::InProgress => None,
    }
}

/// Whether `uid` was offered something by `rollout` (the target or a revert).
pub(crate) fn offered(rollout: &Rollout, uid: InstanceUid) -> bool {
    rollout.agent(&uid).is_some_and(|a| a.was_offered())
}

/// Whether a remote config status tells `rollout` something new about `uid`: a failure to
/// apply the rollout's config while it waits for it, or an applied config as for packages
/// (see [`report_matters`]).
pub(crate) fn config_report_matters(
    rollout: &Rollout,
    uid: InstanceUid,
    report: &ConfigReport,
) -> bool {
    match report {
        ConfigReport::Failed { hash, .. } => {
            *hash == rollout.spec().target_key()
                && report_matters(rollout, uid, &PackageReport::Failed(String::new()))
        }
        ConfigReport::Applied(hash) => {
            report_matters(rollout, uid, &PackageReport::Installed(hash.clone()))
        }
        ConfigReport::InProgress => false,
    }
}

/// Whether a package report tells `rollout` something new about `uid`: a failure, or an
/// install of a version other than the one last reported, or any install while the agent
/// has an offer outstanding. Repeats of the same version are not logged again.
pub(crate) fn report_matters(rollout: &Rollout, uid: InstanceUid, report: &PackageReport) -> bool {
    let Some(agent) = rollout.agent(&uid) else {
        return false;
    };
    match report {
        PackageReport::Failed(_) => matches!(
            agent.phase,
            AgentPhase::Offered { .. } | AgentPhase::Installed { .. }
        ),
        PackageReport::Installed(version) => {
            *version != agent.reported_version
                || agent.revert_pending()
                || matches!(agent.phase, AgentPhase::Offered { .. })
        }
        PackageReport::InProgress => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{AgentSnapshot, RolloutId};
    use crate::selector::LabelSelector;
    use crate::spec::RolloutSpec;
    use crate::time::Timestamp;

    fn rollout() -> (Rollout, InstanceUid, InstanceUid) {
        let (a, b) = (InstanceUid::from([1; 16]), InstanceUid::from([2; 16]));
        let fleet = [a, b].map(|uid| AgentSnapshot::new(uid, Labels::new(), Some("1.0.0".into())));
        let spec = RolloutSpec::new("otelcol", "2.0.0", LabelSelector::all(), "ops");
        let mut rollout =
            Rollout::plan(RolloutId::new("r"), spec, &fleet, Timestamp::EPOCH).unwrap();
        rollout
            .handle(Event::Start { by: "ops".into() }, Timestamp::EPOCH)
            .unwrap();
        let canary = rollout.wave_agents(0)[0].uid;
        let other = if canary == a { b } else { a };
        (rollout, canary, other)
    }

    #[test]
    fn only_news_about_offered_agents_is_fed_to_the_engine() {
        let (mut rollout, canary, waiting) = rollout();
        let installed = |v: &str| PackageReport::Installed(v.into());
        let failed = PackageReport::Failed("boom".into());
        // The waiting agent repeating its version, or failing, says nothing new.
        assert!(!report_matters(&rollout, waiting, &installed("1.0.0")));
        assert!(!report_matters(&rollout, waiting, &failed));
        // The canary's reports matter while its offer is outstanding.
        assert!(report_matters(&rollout, canary, &installed("1.0.0")));
        assert!(report_matters(&rollout, canary, &failed));
        rollout
            .handle(
                Event::AgentInstalled {
                    uid: canary,
                    version: "2.0.0".into(),
                    healthy: None,
                },
                Timestamp::EPOCH,
            )
            .unwrap();
        assert!(!report_matters(&rollout, canary, &installed("2.0.0")));
        assert!(report_matters(&rollout, canary, &installed("1.0.0")));
        assert!(!report_matters(
            &rollout,
            InstanceUid::from([9; 16]),
            &failed
        ));
        assert!(!report_matters(
            &rollout,
            canary,
            &PackageReport::InProgress
        ));
    }
}
