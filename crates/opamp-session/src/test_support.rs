//! Fixtures shared by the unit tests.

use std::time::Instant;

use opamp_proto::{InstanceUid, v1};

pub(crate) const AGENT_UID: [u8; 16] = [0xA7; 16];
pub(crate) const OTHER_UID: [u8; 16] = [0x0B; 16];

pub(crate) fn agent_uid() -> InstanceUid {
    InstanceUid::from(AGENT_UID)
}

pub(crate) fn description(name: &str) -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![v1::KeyValue::string("service.name", name)],
        non_identifying_attributes: Vec::new(),
    }
}

pub(crate) fn health(healthy: bool) -> v1::ComponentHealth {
    v1::ComponentHealth {
        healthy,
        status: if healthy { "ok" } else { "down" }.into(),
        ..Default::default()
    }
}

pub(crate) fn package_statuses(all_hash: &[u8]) -> v1::PackageStatuses {
    v1::PackageStatuses {
        server_provided_all_packages_hash: all_hash.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn offer(all_hash: u8) -> v1::PackagesAvailable {
    let mut packages = std::collections::HashMap::new();
    packages.insert(
        String::new(),
        v1::PackageAvailable {
            r#type: v1::PackageType::TopLevel.into(),
            version: "0.110.0".into(),
            file: Some(v1::DownloadableFile {
                download_url: "https://downloads.example/otelcol".into(),
                content_hash: vec![0xC0; 32],
                ..Default::default()
            }),
            hash: vec![0x11; 32],
        },
    );
    v1::PackagesAvailable {
        packages,
        all_packages_hash: vec![all_hash; 32],
    }
}

/// A fixed origin for virtual time.
pub(crate) fn t0() -> Instant {
    // Tests only compare instants derived from this one; which instant it is does not matter.
    Instant::now()
}
