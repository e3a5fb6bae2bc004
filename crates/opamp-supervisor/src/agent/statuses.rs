//! The package statuses the agent reports, and their way to the session.
//!
//! The installer reports progress through a synchronous callback; it writes into a watch
//! channel, and a forwarder task hands the newest value to the session. A watch keeps only
//! the newest statuses, so a slow connection never queues stale progress, and the final
//! `Installed` or `InstallFailed` is never lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opamp_proto::v1::{PackageStatus, PackageStatusEnum, PackageStatuses};
use opamp_transport::client::ClientHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::install::InstallEvent;
use crate::install::status::{StatusContext, package_status};

/// Least time between two `Downloading` reports (at most four a second).
pub const DOWNLOAD_REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// Publishes package statuses for the session.
#[derive(Debug)]
pub(super) struct StatusBoard {
    tx: watch::Sender<PackageStatuses>,
}

impl StatusBoard {
    /// An empty board and the receiver a forwarder reads.
    pub(super) fn new() -> (Self, watch::Receiver<PackageStatuses>) {
        let (tx, rx) = watch::channel(PackageStatuses::default());
        (StatusBoard { tx }, rx)
    }

    /// Replaces the status of `status.name`.
    pub(super) fn set(&self, status: PackageStatus) {
        self.tx.send_modify(|all| {
            all.packages.insert(status.name.clone(), status);
        });
    }

    /// Starts handling an offer: records its `all_packages_hash`, marks the collector's
    /// package `InstallPending` (when the offer has one) and replaces every other package's
    /// status with `refused` (the offered packages this supervisor does not install), all in
    /// one update, so no status of an earlier offer is ever reported with this offer's hash.
    /// The status of `running` (the collector package that runs now) stays until replaced.
    pub(super) fn begin_offer(
        &self,
        all_packages_hash: &[u8],
        running: &str,
        collector: Option<&StatusContext>,
        refused: Vec<PackageStatus>,
    ) {
        let pending = collector.map(|context| PackageStatus {
            name: context.name.clone(),
            agent_has_version: context.agent_has_version.clone(),
            agent_has_hash: context.agent_has_hash.clone(),
            server_offered_version: context.server_offered_version.clone(),
            server_offered_hash: context.server_offered_hash.clone(),
            status: PackageStatusEnum::InstallPending as i32,
            ..PackageStatus::default()
        });
        self.tx.send_modify(|all| {
            all.server_provided_all_packages_hash = all_packages_hash.to_vec();
            // Statuses of packages an earlier offer had and this one does not are stale.
            let pending_name = pending.as_ref().map(|p| p.name.as_str());
            all.packages
                .retain(|name, _| name == running || Some(name.as_str()) == pending_name);
            for status in refused {
                all.packages.insert(status.name.clone(), status);
            }
            if let Some(pending) = pending {
                all.packages.insert(pending.name.clone(), pending);
            }
        });
    }

    /// The current statuses.
    pub(super) fn current(&self) -> PackageStatuses {
        self.tx.borrow().clone()
    }

    /// A callback for [`Installer::install_offer`](crate::install::Installer::install_offer)
    /// that publishes each event's status, `Downloading` at most every
    /// [`DOWNLOAD_REPORT_INTERVAL`] (the last chunk always).
    pub(super) fn install_reporter<'a>(
        &'a self,
        context: &'a StatusContext,
    ) -> impl FnMut(InstallEvent) + Send + 'a {
        let mut last_download: Option<Instant> = None;
        move |event| {
            // The outcome is reported by the worker once health has been refreshed, so
            // the server never sees it beside the health read during the swap.
            if matches!(
                event,
                InstallEvent::Installed { .. } | InstallEvent::InstallFailed { .. }
            ) {
                return;
            }
            if let InstallEvent::Downloading(progress) = &event {
                let complete = progress.total.is_some_and(|total| progress.bytes >= total);
                let now = Instant::now();
                if !complete
                    && last_download
                        .is_some_and(|at| now.duration_since(at) < DOWNLOAD_REPORT_INTERVAL)
                {
                    return;
                }
                last_download = Some(now);
            }
            tracing::debug!(?event, "install progress");
            self.set(package_status(context, &event));
        }
    }
}

/// Hands every new value of `statuses` to the session until either side goes away.
pub(super) fn spawn_forwarder(
    client: Arc<ClientHandle>,
    mut statuses: watch::Receiver<PackageStatuses>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while statuses.changed().await.is_ok() {
            let current = statuses.borrow_and_update().clone();
            if client
                .update(move |session| {
                    session.set_package_statuses(current);
                })
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::DownloadProgress;

    fn downloading(bytes: u64) -> InstallEvent {
        InstallEvent::Downloading(DownloadProgress {
            bytes,
            total: Some(100),
            bytes_per_second: 1000.0,
        })
    }

    fn percent(rx: &watch::Receiver<PackageStatuses>) -> f64 {
        rx.borrow().packages["otelcol"]
            .download_details
            .as_ref()
            .map_or(-1.0, |d| d.download_percent)
    }

    #[test]
    fn downloading_is_throttled_steps_pass_and_outcomes_are_left_to_the_worker() {
        let (board, rx) = StatusBoard::new();
        let context = StatusContext::new("otelcol", "1.0.0", vec![1], "1.1.0", vec![2]);
        let mut report = board.install_reporter(&context);
        report(downloading(10));
        assert_eq!(percent(&rx), 10.0);
        report(downloading(20));
        assert_eq!(
            percent(&rx),
            10.0,
            "a second report within 250 ms is dropped"
        );
        report(downloading(100));
        assert_eq!(
            percent(&rx),
            100.0,
            "the complete download is always reported"
        );
        let rate = rx.borrow().packages["otelcol"]
            .download_details
            .as_ref()
            .map(|d| d.download_bytes_per_second);
        assert_eq!(rate, Some(1000.0));
        report(InstallEvent::Step(crate::journal::InstallStep::Swapping));
        let status = rx.borrow().packages["otelcol"].clone();
        assert_eq!(status.status, PackageStatusEnum::Installing as i32);
        // Outcomes are left to the worker, which refreshes health first.
        report(InstallEvent::InstallFailed {
            error_message: "boom".into(),
        });
        report(InstallEvent::Installed {
            version: "1.1.0".into(),
        });
        let status = rx.borrow().packages["otelcol"].clone();
        assert_eq!(status.status, PackageStatusEnum::Installing as i32);
    }

    #[test]
    fn a_new_offer_replaces_the_old_status_together_with_the_hash() {
        let (board, rx) = StatusBoard::new();
        let old = StatusContext::new("otelcol", "1.0.0", vec![1], "1.1.0", vec![2]);
        board.set(package_status(
            &old,
            &InstallEvent::InstallFailed {
                error_message: "old".into(),
            },
        ));
        board.set(package_status(
            &StatusContext::new("gone-addon", "", vec![], "1", vec![4]),
            &InstallEvent::InstallFailed {
                error_message: "not installed".into(),
            },
        ));
        let new = StatusContext::new("otelcol", "1.0.0", vec![1], "1.2.0", vec![3]);
        let refused = package_status(
            &StatusContext::new("plugin", "", vec![], "0.3.0", vec![5]),
            &InstallEvent::InstallFailed {
                error_message: "not supported".into(),
            },
        );
        board.begin_offer(&[9; 32], "otelcol", Some(&new), vec![refused]);
        let all = rx.borrow().clone();
        assert_eq!(all.server_provided_all_packages_hash, vec![9; 32]);
        let status = &all.packages["otelcol"];
        assert_eq!(status.status, PackageStatusEnum::InstallPending as i32);
        assert_eq!(status.server_offered_version, "1.2.0");
        assert!(status.error_message.is_empty());
        assert!(
            !all.packages.contains_key("gone-addon"),
            "a package the new offer lacks has no status any more"
        );
        let plugin = &all.packages["plugin"];
        assert_eq!(plugin.status, PackageStatusEnum::InstallFailed as i32);
        assert_eq!(plugin.server_offered_version, "0.3.0");
        assert_eq!(plugin.error_message, "not supported");
    }
}
