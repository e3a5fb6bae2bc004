//! Reading what agents report (descriptions, package statuses) into the coordinator's terms.

use opamp_packages::{PackageState, parse_package_status};
use opamp_proto::v1;
pub(crate) use opamp_rollout::fleet::PackageReport;

use crate::selector::Labels;

/// Labels from the identifying and non-identifying attributes, values flattened to text
/// (identifying attributes win on a clash).
pub(crate) fn labels(description: &v1::AgentDescription) -> Labels {
    // Collected in one go (later entries win), not inserted one by one: each insert rebuilds
    // the compact map, which a description with many attributes would make quadratic.
    description
        .non_identifying_attributes
        .iter()
        .chain(&description.identifying_attributes)
        .filter_map(|attribute| {
            let text = attribute.value.as_ref().and_then(value_text)?;
            Some((attribute.key.as_str(), text))
        })
        .collect()
}

fn value_text(value: &v1::AnyValue) -> Option<String> {
    use v1::any_value::Value;
    match value.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        // Lists, maps and bytes make poor selector values; leave them out.
        _ => None,
    }
}

/// The statuses of `statuses` by package name (the map key; the unnamed top-level package
/// has the empty name), read with `opamp_packages`' typed parser. A status that breaks the
/// specification's field rules (for example `Installed` without the version the agent has)
/// is left out with a warning: acting on half a report could count an install that did not
/// happen.
pub(crate) fn package_reports(statuses: &v1::PackageStatuses) -> Vec<(String, PackageReport)> {
    let mut reports: Vec<(String, PackageReport)> = statuses
        .packages
        .iter()
        .filter_map(|(name, status)| {
            let parsed = if *name == status.name {
                parse_package_status(status).map_err(|err| err.to_string())
            } else {
                Err(format!("map key {name:?} differs from its name {:?}", status.name))
            };
            let (_, state) = match parsed {
                Ok(parsed) => parsed,
                Err(error) => {
                    let package: String = name.chars().take(64).collect();
                    tracing::warn!(package = %package.escape_debug(), %error, "package status ignored");
                    return None;
                }
            };
            let report = match state {
                PackageState::Installed { has, .. } => {
                    PackageReport::Installed(has.version().to_owned())
                }
                PackageState::InstallFailed { error_message, .. } => {
                    let message = if error_message.is_empty() {
                        statuses.error_message.clone()
                    } else {
                        error_message
                    };
                    PackageReport::Failed(message)
                }
                _ => PackageReport::InProgress,
            };
            Some((name.clone(), report))
        })
        .collect();
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: v1::any_value::Value) -> v1::KeyValue {
        v1::KeyValue {
            key: key.into(),
            value: Some(v1::AnyValue { value: Some(value) }),
        }
    }

    #[test]
    fn attributes_become_text_labels_identifying_first() {
        use v1::any_value::Value;
        let description = v1::AgentDescription {
            identifying_attributes: vec![kv("service.name", Value::StringValue("col".into()))],
            non_identifying_attributes: vec![
                kv("service.name", Value::StringValue("other".into())),
                kv("canary", Value::BoolValue(true)),
                kv("zone", Value::IntValue(3)),
                kv("blob", Value::BytesValue(vec![1])),
            ],
        };
        let labels = labels(&description);
        assert_eq!(labels.get("service.name"), Some("col"));
        assert_eq!(labels.get("canary"), Some("true"));
        assert_eq!(labels.get("zone"), Some("3"));
        assert!(!labels.contains_key("blob"));
    }

    #[test]
    fn statuses_give_installed_and_failed_reports() {
        let mut statuses = v1::PackageStatuses::default();
        statuses.packages.insert(
            "otelcol".into(),
            v1::PackageStatus {
                name: "otelcol".into(),
                agent_has_version: "1.0.0".into(),
                agent_has_hash: vec![1],
                status: v1::PackageStatusEnum::Installed as i32,
                ..Default::default()
            },
        );
        statuses.packages.insert(
            "addon".into(),
            v1::PackageStatus {
                name: "addon".into(),
                server_offered_version: "2.0.0".into(),
                server_offered_hash: vec![2],
                status: v1::PackageStatusEnum::InstallFailed as i32,
                error_message: "bad hash".into(),
                ..Default::default()
            },
        );
        let reports = package_reports(&statuses);
        assert_eq!(
            reports,
            vec![
                ("addon".into(), PackageReport::Failed("bad hash".into())),
                ("otelcol".into(), PackageReport::Installed("1.0.0".into())),
            ]
        );
    }

    /// A status that breaks the specification's rules is not acted on: `Installed` without the
    /// hash the agent has, or filed under another name.
    #[test]
    fn statuses_that_break_the_rules_are_ignored() {
        let mut statuses = v1::PackageStatuses::default();
        statuses.packages.insert(
            "otelcol".into(),
            v1::PackageStatus {
                name: "otelcol".into(),
                agent_has_version: "1.0.0".into(),
                status: v1::PackageStatusEnum::Installed as i32,
                ..Default::default()
            },
        );
        statuses.packages.insert(
            "other".into(),
            v1::PackageStatus {
                name: "otelcol".into(),
                agent_has_version: "1.0.0".into(),
                agent_has_hash: vec![1],
                status: v1::PackageStatusEnum::Installed as i32,
                ..Default::default()
            },
        );
        assert!(package_reports(&statuses).is_empty());
    }
}
