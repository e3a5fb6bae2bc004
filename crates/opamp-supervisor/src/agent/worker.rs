//! The install worker: owns the collector and runs one job at a time (a package offer or a
//! restart command), so installs never overlap. Offers arrive on a watch channel: an offer
//! that arrives during an install replaces any older waiting one and runs right after.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opamp_packages::{
    ContentHash, InstalledPackage, InstalledPackages, PackageAction, PackageKey, PackageName,
    PlannedPackage, SyncPlan,
};
use opamp_proto::v1;
use opamp_transport::client::ClientHandle;
use opamp_verify::TrustPolicy;
use tokio::sync::{mpsc, watch};

use super::identity::Identity;
use super::statuses::StatusBoard;
use crate::install::status::{StatusContext, package_status};
use crate::install::{Collector, InstallEvent, Installer};
use crate::journal::{InstalledStateStore, Sha256Hash};
use crate::process::ManagedCollector;
use crate::storage;

/// Most offered packages, besides the collector's, that get an `InstallFailed` status each.
pub(super) const MAX_REFUSED_STATUSES: usize = 64;

/// Delay before an install whose download was cut is tried again (it resumes).
pub(super) const RETRY_DELAY: Duration = Duration::from_secs(10);

/// A package offer as the session surfaced it.
#[derive(Debug, Clone)]
pub(super) struct Offer {
    /// The offer as received.
    pub(super) offer: v1::PackagesAvailable,
    /// The session's plan for it.
    pub(super) plan: SyncPlan,
}

/// What runs now: the top-level package's name, version and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Current {
    /// Package name (the offer's key, `agent.package_name`, or the executable's name).
    pub(super) name: String,
    /// Version (`agent_has_version`).
    pub(super) version: String,
    /// The server's package hash of the installed offer (`agent_has_hash`); empty before the
    /// first install through OpAMP.
    pub(super) server_hash: Vec<u8>,
    /// SHA-256 of the package file (or of the executable before the first install).
    pub(super) content_hash: Option<[u8; 32]>,
}

impl Current {
    /// The `Installed` status of what runs.
    pub(super) fn installed_status(&self) -> v1::PackageStatus {
        let context = StatusContext::new(
            &self.name,
            &self.version,
            self.server_hash.clone(),
            &self.version,
            self.server_hash.clone(),
        );
        package_status(
            &context,
            &InstallEvent::Installed {
                version: self.version.clone(),
            },
        )
    }

    /// The session's view of what is installed, for planning the next offer.
    pub(super) fn installed_packages(
        &self,
        last_applied_all_packages_hash: &[u8],
    ) -> InstalledPackages {
        let mut installed = InstalledPackages::new();
        if let (Ok(key), Some(hash)) = (PackageKey::parse(&self.name), self.content_hash) {
            installed = installed.with_package(
                key,
                InstalledPackage::new(
                    &self.version,
                    self.server_hash.clone(),
                    ContentHash::from(hash),
                ),
            );
        }
        if !last_applied_all_packages_hash.is_empty() {
            installed =
                installed.with_last_applied_all_packages_hash(last_applied_all_packages_hash);
        }
        installed
    }
}

/// The channels that feed a [`Worker`].
#[derive(Debug)]
pub(super) struct Inputs {
    /// The newest package offer.
    pub(super) offers: watch::Receiver<Option<Offer>>,
    /// Restart commands.
    pub(super) restarts: mpsc::Receiver<()>,
    /// Changes (or closes) when the supervisor shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

enum Job {
    Offer(Offer),
    Restart,
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
    /// The OpAMP client.
    pub(super) client: Arc<ClientHandle>,
    /// Inputs of the description.
    pub(super) identity: Identity,
    /// `agent.package_name`.
    pub(super) configured_package: Option<String>,
    /// Package statuses.
    pub(super) statuses: StatusBoard,
    /// What runs now.
    pub(super) current: Current,
    /// Where the installed state lives (to seed the anti-rollback floor).
    pub(super) state_store: InstalledStateStore,
    /// Keeps reported health in step with install results.
    pub(super) health: HealthSync,
}

/// Makes the health the server sees current before an install result is reported.
///
/// The health monitor checks on an interval; right after a swap its last value is the
/// "stopped" health from the moment the old collector went down. Reporting `Installed`
/// beside that would make the server's rollout count a healthy install as unhealthy, so
/// the worker asks for a fresh check, waits (bounded) until it reflects the running
/// collector, and puts it into the session before the package status.
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
    /// Refreshes health after an install or rollback and pushes it into the session.
    async fn settle(&mut self, client: &ClientHandle) {
        if !self.reports_health {
            return;
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
        let latest = self.health.clone();
        let _ = client
            .update(move |session| session.set_health(latest.borrow().clone()))
            .await;
    }
}

impl Worker {
    /// Runs jobs until `inputs.stop` changes; returns the collector for the graceful stop.
    /// A shutdown during an install abandons it at its journaled step; the next start-up
    /// recovery finishes or undoes it.
    pub(super) async fn run(mut self, mut inputs: Inputs) -> ManagedCollector {
        let mut retry: Option<(tokio::time::Instant, Offer)> = None;
        loop {
            let retry_at = retry.as_ref().map(|(at, _)| *at);
            let job = tokio::select! {
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
                () = sleep_until_opt(retry_at), if retry_at.is_some() => match retry.take() {
                    Some((_, offer)) => Job::Offer(offer),
                    None => continue,
                },
            };
            let stopped = {
                let work = self.do_job(job);
                tokio::pin!(work);
                tokio::select! {
                    _ = inputs.stop.changed() => true,
                    again = &mut work => {
                        if let Some(offer) = again {
                            retry = Some((tokio::time::Instant::now() + RETRY_DELAY, offer));
                        }
                        false
                    }
                }
            };
            if stopped {
                tracing::warn!(
                    "shutdown during a job; an interrupted install is finished or undone at the next start"
                );
                break;
            }
        }
        self.collector
    }

    async fn do_job(&mut self, job: Job) -> Option<Offer> {
        match job {
            Job::Restart => {
                self.restart().await;
                None
            }
            Job::Offer(offer) => self.handle_offer(offer).await,
        }
    }

    async fn restart(&mut self) {
        tracing::info!("restart command: restarting the collector");
        if let Err(err) = self.collector.stop().await {
            tracing::error!(%err, "restart: stopping the collector failed");
        }
        if let Err(err) = self.collector.start(&self.identity.executable).await {
            tracing::error!(%err, "restart: starting the collector failed");
        }
    }

    /// Acts on one offer; returns it when it should be tried again later (a cut download).
    async fn handle_offer(&mut self, offer: Offer) -> Option<Offer> {
        let all_hash = offer.offer.all_packages_hash.clone();
        let planned = self.top_level(&offer.plan).cloned();
        let wire_key = planned.as_ref().map(|p| p.key.wire_key().to_owned());
        let available = wire_key
            .as_ref()
            .and_then(|key| offer.offer.packages.get(key).cloned());
        let refused = self.refused_packages(&offer.offer, wire_key.as_deref());
        let (Some(planned), Some(wire_key), Some(available)) = (planned, wire_key, available)
        else {
            tracing::info!("package offer has no top-level package for this collector");
            self.statuses
                .begin_offer(&all_hash, &self.current.name, None, refused);
            return None;
        };
        let name = if wire_key.is_empty() {
            self.current.name.clone()
        } else {
            wire_key.clone()
        };
        // Received and being handled: the server need not send it again.
        let context = self.status_context(&name, &available);
        self.statuses
            .begin_offer(&all_hash, &self.current.name, Some(&context), refused);
        let again = match &planned.action {
            PackageAction::Remove { .. } => {
                tracing::warn!(package = %name, "the server no longer offers the collector; keeping it");
                None
            }
            PackageAction::NothingToDo { .. } => {
                tracing::info!(package = %name, version = %available.version, "offer already installed");
                self.current.name = name;
                self.current.server_hash = available.hash.clone();
                self.statuses.set(self.current.installed_status());
                None
            }
            _ => self.install(&name, &available, offer.clone()).await,
        };
        if again.is_none() {
            self.sync_session(&all_hash).await;
        }
        again
    }

    async fn install(
        &mut self,
        name: &str,
        available: &v1::PackageAvailable,
        offer: Offer,
    ) -> Option<Offer> {
        let state = self.installer.installed_state();
        if !state.should_attempt(name, &available.hash) {
            if let Some(failed) = state
                .failed_offers
                .get(name)
                .filter(|f| f.offered_hash == available.hash)
            {
                tracing::info!(package = %name, version = %available.version, "offer failed before; not retrying it");
                let context = self.status_context(name, available);
                self.statuses.set(package_status(
                    &context,
                    &InstallEvent::InstallFailed {
                        error_message: failed.error.clone(),
                    },
                ));
            } else {
                self.current.name = name.to_owned();
                self.statuses.set(self.current.installed_status());
            }
            return None;
        }
        self.seed_installed_state(name);
        let context = self.status_context(name, available);
        tracing::info!(package = %name, from = %self.current.version, to = %available.version, "installing offer");
        let result = {
            let mut report = self.statuses.install_reporter(&context);
            self.installer
                .install_offer(
                    &mut self.collector,
                    name,
                    available,
                    &self.policy,
                    SystemTime::now(),
                    &mut report,
                )
                .await
        };
        match result {
            Ok(installed) => {
                tracing::info!(package = %name, version = %installed.version, "installed");
                let state = self.installer.installed_state();
                let content_hash = state
                    .packages
                    .get(name)
                    .and_then(|p| p.content_hash)
                    .map(|h| h.0);
                self.current = Current {
                    name: name.to_owned(),
                    version: installed.version.clone(),
                    server_hash: installed.server_hash.clone(),
                    content_hash,
                };
                self.health.settle(&self.client).await;
                self.statuses.set(package_status(
                    &context,
                    &InstallEvent::Installed {
                        version: installed.version,
                    },
                ));
                let description = self.identity.description(&self.current.version);
                let _ = self
                    .client
                    .update(move |session| session.set_description(description))
                    .await;
                None
            }
            Err(failed) => {
                tracing::error!(package = %name, version = %available.version, error = %failed.error_message, "install failed");
                self.health.settle(&self.client).await;
                self.statuses.set(package_status(
                    &context,
                    &InstallEvent::InstallFailed {
                        error_message: failed.error_message.clone(),
                    },
                ));
                failed.error.is_retryable().then_some(offer)
            }
        }
    }

    /// `InstallFailed` statuses for the offered packages other than the collector's: the
    /// server learns they were received and why nothing happens to them (add-ons, or
    /// packages meant for other agents), instead of waiting for an answer.
    ///
    /// At most [`MAX_REFUSED_STATUSES`] of them, with valid names and short versions: a server
    /// must not be able to make the agent echo an arbitrarily large report.
    fn refused_packages(
        &self,
        offer: &v1::PackagesAvailable,
        collector_key: Option<&str>,
    ) -> Vec<v1::PackageStatus> {
        let mut others: Vec<_> = offer
            .packages
            .iter()
            .filter(|(name, _)| !name.is_empty() && Some(name.as_str()) != collector_key)
            .collect();
        // The same packages are reported whatever the map's order.
        others.sort_unstable_by_key(|(name, _)| name.as_str());
        if others.len() > MAX_REFUSED_STATUSES {
            tracing::warn!(
                offered = others.len(),
                reported = MAX_REFUSED_STATUSES,
                "the offer has more packages than this supervisor reports on"
            );
        }
        others
            .into_iter()
            .filter(|(name, available)| {
                PackageName::new(name.as_str()).is_ok() && available.version.len() <= 256
            })
            .take(MAX_REFUSED_STATUSES)
            .map(|(name, available)| {
                let kind = if available.r#type == v1::PackageType::Addon as i32 {
                    "add-on packages are not supported"
                } else {
                    "it is not this collector's package"
                };
                let collector = collector_key
                    .filter(|key| !key.is_empty())
                    .unwrap_or(&self.current.name);
                let error_message = format!(
                    "not installed: this supervisor installs only the collector package \
                     {collector:?}; {kind}"
                );
                let context = StatusContext::new(
                    name,
                    "",
                    Vec::new(),
                    &available.version,
                    available.hash.clone(),
                );
                package_status(&context, &InstallEvent::InstallFailed { error_message })
            })
            .collect()
    }

    fn status_context(&self, name: &str, available: &v1::PackageAvailable) -> StatusContext {
        StatusContext::new(
            name,
            &self.current.version,
            self.current.server_hash.clone(),
            &available.version,
            available.hash.clone(),
        )
    }

    /// Before the first install through OpAMP the installed state does not know the running
    /// version; record it so the trust policy's anti-rollback floor covers it.
    fn seed_installed_state(&self, name: &str) {
        if self.current.version.is_empty() {
            return;
        }
        let mut state = self.installer.installed_state();
        if state.packages.contains_key(name) {
            return;
        }
        let executable_sha256 = storage::sha256_file(&self.identity.executable)
            .ok()
            .map(Sha256Hash);
        state.record_installed(
            name,
            &self.current.version,
            self.current.server_hash.clone(),
            None,
            executable_sha256,
        );
        if let Err(err) = self.state_store.save(&state) {
            tracing::warn!(%err, "cannot record the running version in the installed state");
        }
    }

    fn top_level<'p>(&self, plan: &'p SyncPlan) -> Option<&'p PlannedPackage> {
        plan.packages()
            .iter()
            .find(|p| match &self.configured_package {
                Some(name) => p.key.wire_key() == name,
                None => p
                    .action
                    .target()
                    .is_some_and(|t| t.package_type == v1::PackageType::TopLevel),
            })
    }

    async fn sync_session(&self, all_hash: &[u8]) {
        let installed = self.current.installed_packages(all_hash);
        let _ = self
            .client
            .update(move |session| session.set_installed_packages(installed))
            .await;
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
