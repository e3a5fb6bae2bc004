//! Mapping install progress to OpAMP `PackageStatus` messages.

use opamp_proto::v1::{PackageDownloadDetails, PackageStatus, PackageStatusEnum};

use super::InstallEvent;
use crate::journal::InstalledState;

/// What the agent has and what the server offered, the fixed part of every status of one
/// install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusContext {
    /// Package name.
    pub name: String,
    /// Version installed before this install (`agent_has_version`).
    pub agent_has_version: String,
    /// Server hash of what is installed (`agent_has_hash`).
    pub agent_has_hash: Vec<u8>,
    /// Offered version.
    pub server_offered_version: String,
    /// Offered package hash.
    pub server_offered_hash: Vec<u8>,
}

impl StatusContext {
    /// A context for one offer.
    pub fn new(
        name: impl Into<String>,
        agent_has_version: impl Into<String>,
        agent_has_hash: Vec<u8>,
        server_offered_version: impl Into<String>,
        server_offered_hash: Vec<u8>,
    ) -> Self {
        Self {
            name: name.into(),
            agent_has_version: agent_has_version.into(),
            agent_has_hash,
            server_offered_version: server_offered_version.into(),
            server_offered_hash,
        }
    }
}

/// The `PackageStatus` to report after `event`: `Downloading` with percent and rate, then
/// `Installing` for every step, `Installed` (the agent now has the offered version and hash) or
/// `InstallFailed` with the message (the agent still has what it had).
pub fn package_status(context: &StatusContext, event: &InstallEvent) -> PackageStatus {
    let mut status = PackageStatus {
        name: context.name.clone(),
        agent_has_version: context.agent_has_version.clone(),
        agent_has_hash: context.agent_has_hash.clone(),
        server_offered_version: context.server_offered_version.clone(),
        server_offered_hash: context.server_offered_hash.clone(),
        ..PackageStatus::default()
    };
    match event {
        InstallEvent::Downloading(progress) => {
            status.status = PackageStatusEnum::Downloading as i32;
            status.download_details = Some(PackageDownloadDetails {
                download_percent: progress.percent().unwrap_or(0.0),
                download_bytes_per_second: progress.bytes_per_second,
            });
        }
        InstallEvent::Step(_) => status.status = PackageStatusEnum::Installing as i32,
        InstallEvent::Installed { version } => {
            status.status = PackageStatusEnum::Installed as i32;
            status.agent_has_version = version.clone();
            status.agent_has_hash = context.server_offered_hash.clone();
        }
        InstallEvent::InstallFailed { error_message } => {
            status.status = PackageStatusEnum::InstallFailed as i32;
            status.error_message = error_message.clone();
        }
    }
    status
}

/// The status of `package` as persisted, for the full state report after a (re)start: the
/// last failed offer if one is pending (`InstallFailed` with its message), else `Installed`.
/// `None` when nothing is known about the package.
pub fn persisted_status(state: &InstalledState, package: &str) -> Option<PackageStatus> {
    let installed = state.packages.get(package);
    let failed = state.failed_offers.get(package);
    if installed.is_none() && failed.is_none() {
        return None;
    }
    let mut status = PackageStatus {
        name: package.to_owned(),
        ..PackageStatus::default()
    };
    if let Some(installed) = installed {
        status.agent_has_version = installed.version.clone();
        status.agent_has_hash = installed.server_hash.clone();
        status.server_offered_version = installed.version.clone();
        status.server_offered_hash = installed.server_hash.clone();
        status.status = PackageStatusEnum::Installed as i32;
    }
    if let Some(failed) = failed {
        status.server_offered_version = failed.version.clone();
        status.server_offered_hash = failed.offered_hash.clone();
        status.status = PackageStatusEnum::InstallFailed as i32;
        status.error_message = failed.error.clone();
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::DownloadProgress;

    #[test]
    fn persisted_status_reports_installed_then_pending_failure() {
        let mut state = InstalledState::default();
        assert_eq!(persisted_status(&state, "otelcol"), None);
        state.record_installed("otelcol", "1.0.0", vec![1], None, None);
        let installed = persisted_status(&state, "otelcol").unwrap();
        assert_eq!(installed.status, PackageStatusEnum::Installed as i32);
        assert_eq!(installed.agent_has_hash, vec![1]);
        state.record_failure("otelcol", "2.0.0", vec![2], "health gate failed");
        let failed = persisted_status(&state, "otelcol").unwrap();
        assert_eq!(failed.status, PackageStatusEnum::InstallFailed as i32);
        assert_eq!(failed.agent_has_version, "1.0.0");
        assert_eq!(failed.server_offered_version, "2.0.0");
        assert_eq!(failed.error_message, "health gate failed");
    }

    #[test]
    fn events_map_to_statuses() {
        let ctx = StatusContext::new("otelcol", "1.0.0", vec![1], "2.0.0", vec![2]);
        let downloading = package_status(
            &ctx,
            &InstallEvent::Downloading(DownloadProgress {
                bytes: 25,
                total: Some(100),
                bytes_per_second: 10.0,
            }),
        );
        assert_eq!(downloading.status, PackageStatusEnum::Downloading as i32);
        assert_eq!(downloading.download_details.unwrap().download_percent, 25.0);
        let installed = package_status(
            &ctx,
            &InstallEvent::Installed {
                version: "2.0.0".into(),
            },
        );
        assert_eq!(installed.agent_has_version, "2.0.0");
        assert_eq!(installed.agent_has_hash, vec![2]);
        let failed = package_status(
            &ctx,
            &InstallEvent::InstallFailed {
                error_message: "boom".into(),
            },
        );
        assert_eq!(failed.status, PackageStatusEnum::InstallFailed as i32);
        assert_eq!(failed.agent_has_version, "1.0.0");
        assert_eq!(failed.error_message, "boom");
    }
}
