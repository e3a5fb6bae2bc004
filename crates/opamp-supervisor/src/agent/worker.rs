//! The install worker: owns the collector and carries out what [`decide`] says about each
//! offer, one install at a time. Offers arrive on a watch channel; one that arrives during an
//! install is decided at once: the same offer changes nothing, a newer one abandons an install
//! that has not stopped the collector yet, and otherwise waits until the install ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opamp_proto::v1;
use opamp_verify::TrustPolicy;
use tokio::sync::{mpsc, watch};

use super::identity::Identity;
use super::uplink::Uplink;
use crate::decide::{
    CollectorDecision, Decision, Facts, InFlight, Offered, Running, StatusReport, decide,
};
use crate::install::{Collector, InstallEvent, Installer};
use crate::journal::InstallStep;
use crate::process::ManagedCollector;
use crate::report::ErrorReport;
use crate::storage;

/// Delay before an install whose download was cut is tried again (it resumes).
pub(super) const RETRY_DELAY: Duration = Duration::from_secs(10);

/// A package offer as the session surfaced it.
#[derive(Debug, Clone)]
pub(super) struct Offer {
    /// The offer as received.
    pub(super) offer: v1::PackagesAvailable,
}

/// The channels that feed a [`Worker`].
#[derive(Debug)]
pub(super) struct Inputs {
    /// The newest package offer.
    pub(super) offers: watch::Receiver<Option<Offer>>,
    /// Restart commands.
    pub(super) restarts: mpsc::Receiver<()>,
    /// The newest remote config offer.
    pub(super) configs: watch::Receiver<Option<v1::AgentRemoteConfig>>,
    /// Changes (or closes) when the supervisor shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

enum Job {
    Offer(Offer),
    Restart,
    Config(v1::AgentRemoteConfig),
}

/// Owns the collector between jobs.
#[derive(Debug)]
pub(super) struct Worker {
    /// The collector process.
    pub(super) collector: ManagedCollector,
    /// The installer.
    pub(super) installer: Installer,
    /// The trust policy for offers.
    pub(super) policy: TrustPolicy,
    /// Inputs of the description.
    pub(super) identity: Identity,
    /// `agent.package_name`.
    pub(super) configured_package: Option<String>,
    /// What runs now.
    pub(super) running: Running,
    /// Statuses, health, installed packages and description to the session.
    pub(super) uplink: Uplink,
    /// Fresh health readings after an install.
    pub(super) health: HealthSync,
    /// Remote configs (`None`: `remote_config.mode` is off).
    pub(super) remote: Option<super::remote::RemoteConfigs>,
    /// `capabilities.reports_available_components`: list them again after an install.
    pub(super) reports_components: bool,
}

/// Reads the collector's health right after an install, so its outcome is reported together
/// with the health of the collector that runs now.
///
/// The health monitor checks on an interval; right after a swap its last value is the
/// "stopped" health from the moment the old collector went down. The worker asks for a fresh
/// check and waits (bounded) until it reflects the running collector.
#[derive(Debug)]
pub(super) struct HealthSync {
    /// Wakes the monitor for an immediate check.
    pub(super) refresh: Arc<tokio::sync::Notify>,
    /// The monitor's output.
    pub(super) health: watch::Receiver<v1::ComponentHealth>,
    /// `capabilities.reports_health`.
    pub(super) reports_health: bool,
    /// How long to wait for a healthy reading.
    pub(super) settle_timeout: Duration,
}

impl HealthSync {
    /// A health reading taken after now (`None` when health is not reported).
    pub(super) async fn fresh(&mut self) -> Option<v1::ComponentHealth> {
        if !self.reports_health {
            return None;
        }
        self.refresh.notify_one();
        let became_healthy = matches!(
            tokio::time::timeout(
                self.settle_timeout,
                self.health.wait_for(|health| health.healthy),
            )
            .await,
            Ok(Ok(_))
        );
        if !became_healthy {
            tracing::warn!(
                "collector health did not read healthy after the install; reporting it as it is"
            );
        }
        Some(self.health.borrow().clone())
    }
}

/// How an install job ended.
enum InstallEnd {
    /// Done (installed or failed and reported); `Some` to try the offer again later.
    Finished(Option<Offer>),
    /// Abandoned for a newer offer, which is decided next.
    Preempted(Offer),
    /// The supervisor is stopping.
    Stopped,
}

impl Worker {
    /// Runs jobs until `inputs.stop` changes; returns the collector for the graceful stop.
    /// A shutdown during an install abandons it at its journaled step; the next start-up
    /// recovery finishes or undoes it.
    pub(super) async fn run(mut self, mut inputs: Inputs) -> ManagedCollector {
        // Before any offer is decided, so a downgrade below what runs needs an authorisation.
        self.seed_installed_state(&self.running.name.clone());
        let mut retry: Option<(tokio::time::Instant, Offer)> = None;
        let mut next: Option<Offer> = None;
        loop {
            let retry_at = retry.as_ref().map(|(at, _)| *at);
            let job = match next.take() {
                Some(offer) => Job::Offer(offer),
                None => tokio::select! {
                    _ = inputs.stop.changed() => break,
                    changed = inputs.offers.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        match inputs.offers.borrow_and_update().clone() {
                            Some(offer) => Job::Offer(offer),
                            None => continue,
                        }
                    }
                    Some(()) = inputs.restarts.recv() => Job::Restart,
                    changed = inputs.configs.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        match inputs.configs.borrow_and_update().clone() {
                            Some(config) => Job::Config(config),
                            None => continue,
                        }
                    }
                    () = sleep_until_opt(retry_at), if retry_at.is_some() => match retry.take() {
                        Some((_, offer)) => Job::Offer(offer),
                        None => continue,
                    },
                },
            };
            let offer = match job {
                Job::Restart => {
                    let stopped = tokio::select! {
                        _ = inputs.stop.changed() => true,
                        () = self.restart() => false,
                    };
                    if stopped {
                        break;
                    }
                    continue;
                }
                Job::Config(config) => {
                    let stopped = tokio::select! {
                        _ = inputs.stop.changed() => true,
                        () = self.handle_config(config) => false,
                    };
                    if stopped {
                        break;
                    }
                    continue;
                }
                Job::Offer(offer) => offer,
            };
            retry = None;
            match self.handle_offer(offer, &mut inputs).await {
                InstallEnd::Finished(again) => {
                    retry = again.map(|offer| (tokio::time::Instant::now() + RETRY_DELAY, offer));
                }
                InstallEnd::Preempted(newer) => next = Some(newer),
                InstallEnd::Stopped => {
                    tracing::warn!(
                        "shutdown during an install; it is finished or undone at the next start"
                    );
                    break;
                }
            }
        }
        self.collector
    }

    async fn restart(&mut self) {
        tracing::info!("restart command: restarting the collector");
        if let Err(err) = self.collector.stop().await {
            tracing::error!(error = %ErrorReport(&err), "restart: stopping the collector failed");
        }
        if let Err(err) = self.collector.start(&self.identity.executable).await {
            tracing::error!(error = %ErrorReport(&err), "restart: starting the collector failed");
        }
    }

    /// Decides on `offer` and carries the decision out.
    async fn handle_offer(&mut self, offer: Offer, inputs: &mut Inputs) -> InstallEnd {
        let decision = decide_now(
            &self.installer,
            &self.running,
            &self.policy,
            self.configured_package.as_deref(),
            &offer.offer,
            None,
        );
        tracing::info!(
            decision = decision.collector.kind(),
            others = decision.others.len(),
            "package offer decided"
        );
        if let Some(report) = StatusReport::for_decision(&decision, &self.running) {
            self.uplink.update(|r| *r = report, |_| {});
        }
        match decision.collector {
            CollectorDecision::AlreadyInstalled { offered } => {
                self.record_already_installed(&offered, &decision.all_packages_hash);
                InstallEnd::Finished(None)
            }
            CollectorDecision::Refused {
                offered,
                error,
                remember,
            } => {
                let _ = self.installer.refuse(
                    &offered.name,
                    &offered.available,
                    error,
                    remember,
                    &mut |_| {},
                );
                InstallEnd::Finished(None)
            }
            CollectorDecision::Install { offered, approved } => {
                self.install(
                    offer,
                    offered,
                    *approved,
                    decision.all_packages_hash,
                    inputs,
                )
                .await
            }
            CollectorDecision::NotOffered => {
                tracing::info!("the offer has no package for this collector; keeping it");
                InstallEnd::Finished(None)
            }
            CollectorDecision::PreviouslyFailed { offered, .. } => {
                tracing::info!(package = %offered.name, version = %offered.available.version, "offer failed before; not retrying it");
                InstallEnd::Finished(None)
            }
            CollectorDecision::InstallingAlready | CollectorDecision::AfterCurrentInstall => {
                InstallEnd::Finished(None)
            }
        }
    }

    /// The server offers what runs: remember its package hash, report it applied.
    fn record_already_installed(&mut self, offered: &Offered, all_packages_hash: &[u8]) {
        tracing::info!(package = %offered.name, version = %self.running.version, "offer already installed");
        self.running.name = offered.name.clone();
        self.running.server_hash = offered.available.hash.clone();
        self.installer.record_already_installed(
            &offered.name,
            &self.running.version,
            &offered.available.hash,
        );
        let installed = self.applied(all_packages_hash);
        self.uplink
            .update(|_| {}, |outbox| outbox.installed = Some(installed));
    }

    async fn install(
        &mut self,
        offer: Offer,
        offered: Offered,
        approved: opamp_verify::Verified<opamp_verify::ApprovedPackage>,
        all_packages_hash: Vec<u8>,
        inputs: &mut Inputs,
    ) -> InstallEnd {
        tracing::info!(package = %offered.name, from = %self.running.version, to = %offered.available.version, "installing offer");
        let step = Mutex::new(InstallStep::Idle);
        let outcome = {
            let uplink = &self.uplink;
            let step = &step;
            let mut report = move |event: InstallEvent| {
                if let InstallEvent::Step(now) = &event {
                    *step.lock().unwrap_or_else(PoisonError::into_inner) = *now;
                }
                uplink.progress(&event);
            };
            let work = self.installer.install_approved(
                &mut self.collector,
                &offered.name,
                &offered.available,
                approved,
                &mut report,
            );
            tokio::pin!(work);
            loop {
                tokio::select! {
                    _ = inputs.stop.changed() => return InstallEnd::Stopped,
                    result = &mut work => break result,
                    changed = inputs.offers.changed() => {
                        let Ok(()) = changed else { continue };
                        let Some(newer) = inputs.offers.borrow_and_update().clone() else {
                            continue;
                        };
                        let at = *step.lock().unwrap_or_else(PoisonError::into_inner);
                        let in_flight = InFlight::new(offered.available.hash.clone(), at);
                        let decision = decide_now(&self.installer, &self.running, &self.policy, self.configured_package.as_deref(), &newer.offer, Some(&in_flight));
                        match decision.collector {
                            CollectorDecision::InstallingAlready => {}
                            CollectorDecision::AfterCurrentInstall => {
                                // Decided again once this install ends.
                                inputs.offers.mark_changed();
                                tracing::info!("a newer offer waits for the install in progress");
                                let result = tokio::select! {
                                    _ = inputs.stop.changed() => return InstallEnd::Stopped,
                                    result = &mut work => result,
                                };
                                break result;
                            }
                            _ => {
                                tracing::info!(step = ?at, "a newer offer replaces the install in progress");
                                return InstallEnd::Preempted(newer);
                            }
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(installed) => {
                tracing::info!(package = %offered.name, version = %installed.version, "installed");
                let content_hash = self
                    .installer
                    .installed_state()
                    .packages
                    .get(&offered.name)
                    .and_then(|p| p.content_hash);
                self.running = Running::new(
                    &offered.name,
                    &installed.version,
                    installed.server_hash.clone(),
                    content_hash,
                );
                let health = self.health.fresh().await;
                let components = if self.reports_components {
                    crate::components::detect(&self.identity.executable).await
                } else {
                    None
                };
                let installed_packages = self.applied(&all_packages_hash);
                let description = self.identity.description(&self.running.version);
                let running = self.running.clone();
                self.uplink.update(
                    |r| r.installed(&running),
                    |outbox| {
                        if health.is_some() {
                            outbox.health = health;
                        }
                        outbox.installed = Some(installed_packages);
                        outbox.description = Some(description);
                        if components.is_some() {
                            outbox.available_components = components;
                        }
                    },
                );
                InstallEnd::Finished(None)
            }
            Err(failed) => {
                tracing::error!(package = %offered.name, version = %offered.available.version, error = %failed.error_message, "install failed");
                let health = self.health.fresh().await;
                let running = self.running.clone();
                self.uplink.update(
                    |r| r.failed(&running, &failed.error_message),
                    |outbox| {
                        if health.is_some() {
                            outbox.health = health;
                        }
                    },
                );
                InstallEnd::Finished(failed.error.is_retryable().then_some(offer))
            }
        }
    }

    /// What is installed, with `all_packages_hash` recorded as applied (only after the offer
    /// was fully carried out).
    fn applied(&self, all_packages_hash: &[u8]) -> opamp_packages::InstalledPackages {
        let installed = self.running.installed_packages();
        if all_packages_hash.is_empty() {
            installed
        } else {
            installed.with_last_applied_all_packages_hash(all_packages_hash)
        }
    }

    /// Before the first install through OpAMP the installed state does not know the running
    /// version; record it (at start-up) so the anti-rollback floor covers it.
    fn seed_installed_state(&self, name: &str) {
        if self.running.version.is_empty() {
            return;
        }
        let state = self.installer.installed_state();
        if state.packages.contains_key(name) {
            return;
        }
        let executable_sha256 = storage::sha256_file(&self.identity.executable).ok();
        let mut state = state;
        state.record_installed(
            name,
            &self.running.version,
            self.running.server_hash.clone(),
            None,
            executable_sha256,
        );
        if let Err(err) = self.installer.save_installed_state(&state) {
            tracing::warn!(error = %ErrorReport(&err), "cannot record the running version in the installed state");
        }
    }
}

/// [`decide`] with what the installer knows now.
fn decide_now(
    installer: &Installer,
    running: &Running,
    policy: &TrustPolicy,
    configured_package: Option<&str>,
    offer: &v1::PackagesAvailable,
    in_flight: Option<&InFlight>,
) -> Decision {
    let state = installer.installed_state();
    let floor = installer.rollback_floor();
    let facts = Facts::new(running, &state, &floor, policy, SystemTime::now())
        .collector_package(configured_package)
        .in_flight(in_flight);
    decide(offer, &facts)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
