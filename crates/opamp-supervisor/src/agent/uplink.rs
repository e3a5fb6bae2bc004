//! The one way from the supervisor to the agent session: package statuses, health, the
//! installed packages and the description travel together, in order.
//!
//! The worker and the health monitor write into one watch channel; a forwarder task applies
//! each newest value to the session in one update, so the statuses and the health the server
//! receives in a message were written together. The worker writes an install's outcome and the
//! health read after it in the same write, so the server never sees `Installed` beside the
//! health of the stopped old collector. A watch keeps only the newest value: a slow connection
//! never queues stale progress, and the final outcome is never lost.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opamp_packages::InstalledPackages;
use opamp_proto::v1;
use opamp_transport::client::ClientHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::decide::StatusReport;
use crate::install::InstallEvent;

/// Least time between two `Downloading` reports (at most four a second).
pub const DOWNLOAD_REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// Everything the supervisor reports about itself, as it should be now.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Outbox {
    /// Package statuses (`None`: the supervisor does not report packages).
    pub(super) statuses: Option<v1::PackageStatuses>,
    /// Health (`None`: not reported).
    pub(super) health: Option<v1::ComponentHealth>,
    /// What is installed, for the session's sync planning.
    pub(super) installed: Option<InstalledPackages>,
    /// The agent description.
    pub(super) description: Option<v1::AgentDescription>,
    /// The remote config status (`None`: remote configs are off or none arrived yet).
    pub(super) remote_config_status: Option<v1::RemoteConfigStatus>,
    /// The effective config, secrets redacted (`None`: not reported or unchanged).
    pub(super) effective_config: Option<v1::EffectiveConfig>,
    /// The collector's components (`None`: not reported or unknown).
    pub(super) available_components: Option<v1::AvailableComponents>,
}

/// Writes the [`Outbox`]; cheap to share between the worker and the main loop.
#[derive(Debug, Clone)]
pub(super) struct Uplink {
    tx: watch::Sender<Outbox>,
    /// The package statuses alone, for local observers (the metrics endpoint).
    statuses: watch::Sender<v1::PackageStatuses>,
    report: Arc<Mutex<Progress>>,
    reports_packages: bool,
}

#[derive(Debug, Default)]
struct Progress {
    report: StatusReport,
    last_download: Option<Instant>,
}

impl Uplink {
    /// An uplink starting from `initial`, and the receiver a forwarder reads.
    pub(super) fn new(
        initial: Outbox,
        report: StatusReport,
        reports_packages: bool,
    ) -> (Self, watch::Receiver<Outbox>) {
        let statuses = watch::Sender::new(initial.statuses.clone().unwrap_or_default());
        let (tx, rx) = watch::channel(initial);
        let uplink = Self {
            tx,
            statuses,
            report: Arc::new(Mutex::new(Progress {
                report,
                last_download: None,
            })),
            reports_packages,
        };
        (uplink, rx)
    }

    /// The outbox as it is now.
    pub(super) fn current(&self) -> Outbox {
        self.tx.borrow().clone()
    }

    /// The package statuses as they are reported, for local observers (the metrics endpoint).
    #[cfg(feature = "metrics")]
    pub(super) fn statuses(&self) -> watch::Receiver<v1::PackageStatuses> {
        self.statuses.subscribe()
    }

    /// Publishes a new health reading.
    pub(super) fn set_health(&self, health: v1::ComponentHealth) {
        self.tx.send_if_modified(|outbox| {
            let changed = outbox.health.as_ref() != Some(&health);
            outbox.health = Some(health);
            changed
        });
    }

    /// Publishes a remote config outcome with the effective config and the health read after
    /// it, in one write.
    pub(super) fn set_remote_config(
        &self,
        status: v1::RemoteConfigStatus,
        effective: Option<v1::EffectiveConfig>,
        health: Option<v1::ComponentHealth>,
    ) {
        self.publish(|outbox| {
            outbox.remote_config_status = Some(status);
            if effective.is_some() {
                outbox.effective_config = effective;
            }
            if health.is_some() {
                outbox.health = health;
            }
        });
    }

    /// Applies install progress (`Downloading` at most every [`DOWNLOAD_REPORT_INTERVAL`], the
    /// complete download always) and publishes it.
    pub(super) fn progress(&self, event: &InstallEvent) {
        let mut progress = self.lock();
        if let InstallEvent::Downloading(download) = event {
            let complete = download.total.is_some_and(|total| download.bytes >= total);
            let now = Instant::now();
            let recent = progress
                .last_download
                .is_some_and(|at| now.duration_since(at) < DOWNLOAD_REPORT_INTERVAL);
            if recent && !complete {
                return;
            }
            progress.last_download = Some(now);
        }
        tracing::debug!(?event, "install progress");
        progress.report.progress(event);
        let statuses = progress.report.to_proto();
        drop(progress);
        self.publish(|outbox| outbox.statuses = Some(statuses));
    }

    /// Changes the report with `change` and publishes it together with the other parts
    /// `also` sets, in one write.
    pub(super) fn update(
        &self,
        change: impl FnOnce(&mut StatusReport),
        also: impl FnOnce(&mut Outbox),
    ) {
        let mut progress = self.lock();
        change(&mut progress.report);
        progress.last_download = None;
        let statuses = progress.report.to_proto();
        drop(progress);
        self.publish(|outbox| {
            outbox.statuses = Some(statuses);
            also(outbox);
        });
    }

    fn publish(&self, change: impl FnOnce(&mut Outbox)) {
        let reports_packages = self.reports_packages;
        let mut reported = None;
        self.tx.send_modify(|outbox| {
            change(outbox);
            if !reports_packages {
                outbox.statuses = None;
                outbox.installed = None;
            }
            reported.clone_from(&outbox.statuses);
        });
        if let Some(statuses) = reported {
            self.statuses.send_if_modified(|current| {
                let changed = *current != statuses;
                *current = statuses;
                changed
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // The report is plain data: a panic elsewhere leaves it usable.
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands every new outbox to the session, all parts in one update, until either side goes away.
pub(super) fn spawn_forwarder(
    client: Arc<ClientHandle>,
    mut outbox: watch::Receiver<Outbox>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while outbox.changed().await.is_ok() {
            let current = outbox.borrow_and_update().clone();
            let applied = client
                .update(move |session| {
                    if let Some(description) = current.description {
                        session.set_description(description);
                    }
                    if let Some(health) = current.health {
                        session.set_health(health);
                    }
                    if let Some(installed) = current.installed {
                        session.set_installed_packages(installed);
                    }
                    if let Some(statuses) = current.statuses {
                        session.set_package_statuses(statuses);
                    }
                    if let Some(effective) = current.effective_config {
                        session.set_effective_config(effective);
                    }
                    if let Some(status) = current.remote_config_status {
                        session.set_remote_config_status(status);
                    }
                    if let Some(components) = current.available_components {
                        session.set_available_components(components);
                    }
                })
                .await;
            if applied.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Running;
    use crate::download::DownloadProgress;
    use opamp_packages::ContentHash;
    use opamp_proto::v1::PackageStatusEnum;

    fn downloading(bytes: u64) -> InstallEvent {
        InstallEvent::Downloading(DownloadProgress {
            bytes,
            total: Some(100),
            bytes_per_second: 1000.0,
        })
    }

    /// The report right after a decision to install 1.1.0 over 1.0.0.
    fn installing_report() -> StatusReport {
        let running = Running::new(
            "otelcol",
            "1.0.0",
            vec![1],
            Some(ContentHash::from_bytes([0; 32])),
        );
        let decision = crate::decide::tests::install_decision(&running);
        StatusReport::for_decision(&decision, &running).unwrap_or_default()
    }

    fn percent(rx: &watch::Receiver<Outbox>) -> f64 {
        rx.borrow()
            .statuses
            .as_ref()
            .and_then(|s| s.packages.get("otelcol"))
            .and_then(|p| p.download_details.as_ref())
            .map_or(-1.0, |d| d.download_percent)
    }

    #[test]
    fn downloading_is_throttled_and_the_complete_download_always_passes() {
        let (uplink, rx) = Uplink::new(Outbox::default(), installing_report(), true);
        uplink.progress(&downloading(10));
        assert_eq!(percent(&rx), 10.0);
        uplink.progress(&downloading(20));
        assert_eq!(
            percent(&rx),
            10.0,
            "a second report within 250 ms is dropped"
        );
        uplink.progress(&downloading(100));
        assert_eq!(
            percent(&rx),
            100.0,
            "the complete download is always reported"
        );
        uplink.progress(&InstallEvent::Step(crate::journal::InstallStep::Swapping));
        let status = rx.borrow().statuses.clone().unwrap().packages["otelcol"].clone();
        assert_eq!(status.status, PackageStatusEnum::Installing as i32);
    }

    #[test]
    fn an_outcome_and_its_health_are_one_write() {
        let (uplink, mut rx) = Uplink::new(Outbox::default(), installing_report(), true);
        rx.borrow_and_update();
        let healthy = v1::ComponentHealth {
            healthy: true,
            ..Default::default()
        };
        let after = Running::new(
            "otelcol",
            "1.1.0",
            vec![2; 32],
            Some(ContentHash::from_bytes([3; 32])),
        );
        uplink.update(
            |r| r.installed(&after),
            |o| o.health = Some(healthy.clone()),
        );
        assert!(rx.has_changed().unwrap_or(false));
        let outbox = rx.borrow_and_update().clone();
        assert_eq!(outbox.health, Some(healthy));
        let status = &outbox.statuses.unwrap().packages["otelcol"];
        assert_eq!(status.status, PackageStatusEnum::Installed as i32);
        assert_eq!(status.agent_has_version, "1.1.0");
        // Progress after the outcome changes nothing.
        uplink.progress(&InstallEvent::Step(crate::journal::InstallStep::Starting));
        let status = &rx.borrow().statuses.clone().unwrap().packages["otelcol"];
        assert_eq!(status.status, PackageStatusEnum::Installed as i32);
    }

    #[test]
    fn a_supervisor_that_reports_no_packages_sends_no_statuses() {
        let (uplink, rx) = Uplink::new(Outbox::default(), installing_report(), false);
        uplink.progress(&InstallEvent::Step(crate::journal::InstallStep::Swapping));
        assert!(rx.borrow().statuses.is_none());
    }
}
