//! Mapping install progress to OpAMP `PackageStatus` messages.

use opamp_proto::v1::{PackageDownloadDetails, PackageStatus, PackageStatusEnum};

use super::InstallEvent;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::DownloadProgress;

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
