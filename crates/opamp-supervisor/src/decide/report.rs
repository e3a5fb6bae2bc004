//! The package statuses the supervisor reports, computed from decisions and install progress
//! and written with `opamp_packages`' typed states, so no report can break the
//! specification's field rules.

use opamp_packages::{
    AgentHas, DownloadProgress, PackageKey, PackageState, PackageStatusesBuilder, ServerOffered,
};
use opamp_proto::v1;

use super::{CollectorDecision, Decision, Offered, Running};
use crate::install::{InstallEvent, untouched_message};
use crate::journal::InstalledState;

/// The statuses of every offered package and of the collector that runs.
///
/// The collector's status only moves forward within one offer: progress events change it only
/// while the install is pending or under way, so a late progress event can never turn
/// `Installed` or `InstallFailed` back into `Installing`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusReport {
    all_packages_hash: Vec<u8>,
    collector: Option<(PackageKey, PackageState)>,
    others: Vec<(PackageKey, PackageState)>,
}

impl StatusReport {
    /// The report at start-up: what runs, or the failure of the last offer if it is pending.
    pub fn at_start(running: &Running, installed: &InstalledState) -> Self {
        let mut report = Self::default();
        let Ok(key) = PackageKey::parse(&running.name) else {
            return report;
        };
        let has = agent_has(running, &running.has_hash());
        let failed = installed
            .failed_offers
            .get(&running.name)
            .and_then(|failed| {
                let offered =
                    ServerOffered::new(&failed.version, failed.offered_hash.clone()).ok()?;
                Some(PackageState::InstallFailed {
                    has: has.clone(),
                    offered,
                    error_message: failed.error.clone(),
                })
            });
        report.collector = match failed {
            Some(state) => Some((key, state)),
            None => installed_state(running, None).map(|state| (key, state)),
        };
        report
    }

    /// The report right after `decision`; `None` when the decision leaves the current report
    /// as it is.
    pub fn for_decision(decision: &Decision, running: &Running) -> Option<Self> {
        if decision.keeps_current_report() {
            return None;
        }
        let collector = match &decision.collector {
            CollectorDecision::NotOffered => PackageKey::parse(&running.name)
                .ok()
                .zip(installed_state(running, None)),
            CollectorDecision::AlreadyInstalled { offered } => {
                let state = installed_state(running, Some(offered));
                state.map(|state| (offered.key.clone(), state))
            }
            CollectorDecision::PreviouslyFailed {
                offered,
                error_message,
            } => failed_state(running, offered, error_message.clone()),
            CollectorDecision::Refused { offered, error, .. } => {
                failed_state(running, offered, untouched_message(error))
            }
            CollectorDecision::Install { offered, .. } => {
                server_offered(offered).map(|offered_state| {
                    let state = PackageState::InstallPending {
                        has: agent_has(running, &running.has_hash()),
                        offered: offered_state,
                    };
                    (offered.key.clone(), state)
                })
            }
            CollectorDecision::InstallingAlready | CollectorDecision::AfterCurrentInstall => None,
        };
        let others = decision
            .others
            .iter()
            .filter_map(|other| {
                let offered = ServerOffered::new(&other.version, other.hash.clone()).ok()?;
                let state = PackageState::InstallFailed {
                    has: None,
                    offered,
                    error_message: other.reason.clone(),
                };
                Some((other.key.clone(), state))
            })
            .collect();
        Some(Self {
            all_packages_hash: decision.all_packages_hash.clone(),
            collector,
            others,
        })
    }

    /// Applies install progress: `Downloading` with its percentage and rate, `Installing` for
    /// every later step. Outcomes go through [`StatusReport::installed`] and
    /// [`StatusReport::failed`]; progress after an outcome is ignored.
    pub fn progress(&mut self, event: &InstallEvent) {
        let Some((_, state)) = &mut self.collector else {
            return;
        };
        let (has, offered) = match state {
            PackageState::InstallPending { has, offered }
            | PackageState::Downloading { has, offered, .. }
            | PackageState::Installing { has, offered } => (has.clone(), offered.clone()),
            _ => return,
        };
        *state = match event {
            InstallEvent::Downloading(progress) => PackageState::Downloading {
                has,
                offered,
                progress: DownloadProgress::new(
                    progress.percent().unwrap_or(0.0).clamp(0.0, 100.0),
                    progress.bytes_per_second,
                )
                .ok(),
            },
            InstallEvent::Step(_) => PackageState::Installing { has, offered },
            _ => return,
        };
    }

    /// The install succeeded: `running` is what runs now.
    pub fn installed(&mut self, running: &Running) {
        let Some((_, state)) = &mut self.collector else {
            return;
        };
        if let Ok(has) = AgentHas::new(&running.version, running.has_hash()) {
            let offered = state.offered().cloned();
            *state = PackageState::Installed { has, offered };
        }
    }

    /// The install failed with `error_message`; `running` is what runs now.
    pub fn failed(&mut self, running: &Running, error_message: &str) {
        let Some((_, state)) = &mut self.collector else {
            return;
        };
        if let Some(offered) = state.offered().cloned() {
            *state = PackageState::InstallFailed {
                has: agent_has(running, &running.has_hash()),
                offered,
                error_message: error_message.to_owned(),
            };
        }
    }

    /// The collector's state, if it has one.
    pub fn collector(&self) -> Option<&PackageState> {
        self.collector.as_ref().map(|(_, state)| state)
    }

    /// The `PackageStatuses` message.
    pub fn to_proto(&self) -> v1::PackageStatuses {
        let mut builder = PackageStatusesBuilder::new(self.all_packages_hash.clone());
        for (key, state) in self.others.iter().chain(&self.collector) {
            builder = builder.package(key.clone(), state.clone());
        }
        builder.build()
    }
}

fn agent_has(running: &Running, hash: &[u8]) -> Option<AgentHas> {
    AgentHas::new(&running.version, hash.to_vec()).ok()
}

fn server_offered(offered: &Offered) -> Option<ServerOffered> {
    ServerOffered::new(&offered.available.version, offered.available.hash.clone()).ok()
}

/// `Installed` for what runs; with an offer, the offer's hash is what the agent has.
fn installed_state(running: &Running, offered: Option<&Offered>) -> Option<PackageState> {
    let hash = offered
        .map(|o| o.available.hash.clone())
        .filter(|hash| !hash.is_empty())
        .unwrap_or_else(|| running.has_hash());
    let has = agent_has(running, &hash)?;
    let offered = match offered {
        Some(offered) => server_offered(offered),
        None if !running.server_hash.is_empty() => {
            ServerOffered::new(&running.version, running.server_hash.clone()).ok()
        }
        None => None,
    };
    Some(PackageState::Installed { has, offered })
}

fn failed_state(
    running: &Running,
    offered: &Offered,
    error_message: String,
) -> Option<(PackageKey, PackageState)> {
    let state = PackageState::InstallFailed {
        has: agent_has(running, &running.has_hash()),
        offered: server_offered(offered)?,
        error_message,
    };
    Some((offered.key.clone(), state))
}
