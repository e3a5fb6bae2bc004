//! Typical OpAMP messages, shaped like what a collector fleet sends.
//!
//! ```
//! use opamp_benches::messages;
//! let offer = messages::packages_available(20);
//! assert_eq!(offer.packages.len(), 20);
//! ```

use std::collections::HashMap;

use opamp_packages::{ContentHash, OfferedPackage, PackageName, PackageOffer};
use opamp_proto::{AgentCapabilities, InstanceUid, v1};

/// Nanoseconds since the epoch used for every timestamp, so messages are reproducible.
const TIMESTAMP_UNIX_NANO: u64 = 1_790_000_000_000_000_000;

fn capabilities() -> u64 {
    (AgentCapabilities::REPORTS_STATUS
        | AgentCapabilities::ACCEPTS_PACKAGES
        | AgentCapabilities::REPORTS_PACKAGE_STATUSES
        | AgentCapabilities::REPORTS_HEALTH
        | AgentCapabilities::REPORTS_HEARTBEAT)
        .bits()
}

/// A heartbeat: uid, sequence number and capabilities, nothing else changed.
#[must_use]
pub fn heartbeat() -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: InstanceUid::from([0x42; 16]).to_vec(),
        sequence_num: 1_234,
        capabilities: capabilities(),
        ..Default::default()
    }
}

/// A collector's description: the identifying and non-identifying attributes a contrib
/// collector reports.
#[must_use]
pub fn description() -> v1::AgentDescription {
    v1::AgentDescription {
        identifying_attributes: vec![
            v1::KeyValue::string("service.name", "otelcol-contrib"),
            v1::KeyValue::string("service.namespace", "observability"),
            v1::KeyValue::string("service.version", "0.110.0"),
            v1::KeyValue::string(
                "service.instance.id",
                "0193a2b4-9c1d-7e2f-8a3b-4c5d6e7f8091",
            ),
        ],
        non_identifying_attributes: vec![
            v1::KeyValue::string("os.type", "linux"),
            v1::KeyValue::string("os.description", "Debian GNU/Linux 12 (bookworm)"),
            v1::KeyValue::string("host.arch", "amd64"),
            v1::KeyValue::string("host.name", "node-0017.eu-west-1.example.internal"),
        ],
    }
}

/// A health tree with `components` leaf components (pipelines of receivers, processors and
/// exporters) under one root.
#[must_use]
pub fn health_tree(components: usize) -> v1::ComponentHealth {
    let leaf = |index: usize| v1::ComponentHealth {
        healthy: index % 17 != 5,
        start_time_unix_nano: TIMESTAMP_UNIX_NANO,
        last_error: if index % 17 == 5 {
            "connection refused: dial tcp 10.0.0.7:4317".to_owned()
        } else {
            String::new()
        },
        status: if index % 17 == 5 {
            "StatusRecoverableError"
        } else {
            "StatusOK"
        }
        .to_owned(),
        status_time_unix_nano: TIMESTAMP_UNIX_NANO + index as u64,
        component_health_map: HashMap::new(),
        attributes: Vec::new(),
    };
    let mut pipelines: HashMap<String, v1::ComponentHealth> = HashMap::new();
    for index in 0..components {
        let pipeline = format!("pipeline:traces/{}", index / 10);
        let kind = ["receiver", "processor", "exporter"][index % 3];
        pipelines
            .entry(pipeline)
            .or_insert_with(|| v1::ComponentHealth {
                healthy: true,
                start_time_unix_nano: TIMESTAMP_UNIX_NANO,
                status: "StatusOK".to_owned(),
                status_time_unix_nano: TIMESTAMP_UNIX_NANO,
                ..Default::default()
            })
            .component_health_map
            .insert(format!("{kind}:component-{index}"), leaf(index));
    }
    v1::ComponentHealth {
        healthy: true,
        start_time_unix_nano: TIMESTAMP_UNIX_NANO,
        status: "StatusOK".to_owned(),
        status_time_unix_nano: TIMESTAMP_UNIX_NANO,
        component_health_map: pipelines,
        ..Default::default()
    }
}

/// Package statuses for `count` installed packages, as reported after an offer.
#[must_use]
pub fn package_statuses(count: usize) -> v1::PackageStatuses {
    let packages = (0..count)
        .map(|index| {
            let name = format!("package-{index:05}");
            let hash = ContentHash::of(name.as_bytes());
            let status = v1::PackageStatus {
                name: name.clone(),
                agent_has_version: "1.2.3".to_owned(),
                agent_has_hash: hash.as_bytes().to_vec(),
                server_offered_version: "1.2.3".to_owned(),
                server_offered_hash: hash.as_bytes().to_vec(),
                status: v1::PackageStatusEnum::Installed.into(),
                ..Default::default()
            };
            (name, status)
        })
        .collect();
    v1::PackageStatuses {
        packages,
        server_provided_all_packages_hash: vec![0x7e; 32],
        error_message: String::new(),
    }
}

/// A full status report: description, a health tree of `components` components and the
/// statuses of `packages` packages.
#[must_use]
pub fn full_status_report(components: usize, packages: usize) -> v1::AgentToServer {
    v1::AgentToServer {
        agent_description: Some(description()),
        health: Some(health_tree(components)),
        package_statuses: Some(package_statuses(packages)),
        ..heartbeat()
    }
}

/// An offer shaped like a real one: one top-level collector and `count - 1` addons, each with
/// a URL, a content hash, a 64-byte signature and one download header.
#[must_use]
pub fn package_offer(count: usize) -> PackageOffer {
    let mut offer = PackageOffer::new();
    for index in 0..count {
        let Ok(name) = PackageName::new(format!("package-{index:05}")) else {
            continue; // every generated name is valid; nothing to offer otherwise
        };
        let url = format!("https://downloads.example/packages/{name}/1.2.3/{name}.tar.gz");
        let content = ContentHash::of(name.as_str().as_bytes());
        let package = if index == 0 {
            OfferedPackage::top_level(name, "1.2.3", url, content)
        } else {
            OfferedPackage::addon(name, "1.2.3", url, content)
        };
        // Names are unique by construction, so adding cannot fail.
        let _ = offer.add(
            package
                .with_signature(vec![0x5a; 64])
                .with_header("Authorization", "Bearer token"),
        );
    }
    offer
}

/// `PackagesAvailable` with `count` packages, built by `opamp-packages`.
#[must_use]
pub fn packages_available(count: usize) -> v1::PackagesAvailable {
    package_offer(count).build()
}

/// The server's message carrying an offer of `count` packages.
#[must_use]
pub fn offer_message(count: usize) -> v1::ServerToAgent {
    v1::ServerToAgent {
        instance_uid: InstanceUid::from([0x42; 16]).to_vec(),
        packages_available: Some(packages_available(count)),
        capabilities: 0x3f,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn leaves(health: &v1::ComponentHealth) -> usize {
        if health.component_health_map.is_empty() {
            1
        } else {
            health.component_health_map.values().map(leaves).sum()
        }
    }

    #[test]
    fn messages_have_the_advertised_shape() {
        let report = full_status_report(50, 20);
        assert_eq!(leaves(report.health.as_ref().unwrap()), 50);
        assert_eq!(report.package_statuses.as_ref().unwrap().packages.len(), 20);
        for count in [1, 20, 1_000] {
            let offer = offer_message(count);
            let packages = &offer.packages_available.as_ref().unwrap().packages;
            assert_eq!(packages.len(), count);
            assert!(packages.values().all(|p| p.file.is_some()));
        }
        for (name, size) in [
            ("heartbeat", heartbeat().encoded_len()),
            ("full_status", report.encoded_len()),
            ("packages_available_1", offer_message(1).encoded_len()),
            ("packages_available_20", offer_message(20).encoded_len()),
            (
                "packages_available_1000",
                offer_message(1_000).encoded_len(),
            ),
        ] {
            println!("encoded size {name} {size}");
            assert!(size > 0);
        }
    }
}
