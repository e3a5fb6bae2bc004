//! Turning what agents report into registry rows and engine events.

use opamp_proto::{InstanceUid, v1};

use crate::events::Event;
use crate::selector::Labels;
use crate::store::AgentRecord;

/// Labels from the identifying and non-identifying attributes, values flattened to text
/// (identifying attributes win on a clash).
pub(crate) fn labels(description: &v1::AgentDescription) -> Labels {
    let mut labels = Labels::new();
    for attribute in description
        .non_identifying_attributes
        .iter()
        .chain(&description.identifying_attributes)
    {
        if let Some(text) = attribute.value.as_ref().and_then(value_text) {
            labels.insert(attribute.key.clone(), text);
        }
    }
    labels
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

/// What one package status says, reduced to what the registry and the engine use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PackageReport {
    /// `Installed` with this version.
    Installed(String),
    /// `InstallFailed` with the agent's message.
    Failed(String),
    /// Pending, downloading or installing: nothing to act on yet.
    InProgress,
}

/// The statuses of `statuses` by package name (the map key; the unnamed top-level package
/// has the empty name).
pub(crate) fn package_reports(statuses: &v1::PackageStatuses) -> Vec<(String, PackageReport)> {
    let mut reports: Vec<(String, PackageReport)> = statuses
        .packages
        .iter()
        .map(|(name, status)| {
            let report = match v1::PackageStatusEnum::try_from(status.status) {
                Ok(v1::PackageStatusEnum::Installed) if !status.agent_has_version.is_empty() => {
                    PackageReport::Installed(status.agent_has_version.clone())
                }
                Ok(v1::PackageStatusEnum::InstallFailed) => {
                    let message = if status.error_message.is_empty() {
                        statuses.error_message.clone()
                    } else {
                        status.error_message.clone()
                    };
                    PackageReport::Failed(message)
                }
                _ => PackageReport::InProgress,
            };
            (name.clone(), report)
        })
        .collect();
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    reports
}

/// Records the installed versions in `record`.
pub(crate) fn apply_reports(record: &mut AgentRecord, reports: &[(String, PackageReport)]) {
    for (name, report) in reports {
        if let PackageReport::Installed(version) = report {
            record
                .package_versions
                .insert(name.clone(), version.clone());
        }
    }
}

/// The engine event a package report gives, if any.
pub(crate) fn report_event(uid: InstanceUid, report: &PackageReport) -> Option<Event> {
    match report {
        PackageReport::Installed(version) => Some(Event::AgentInstalled {
            uid,
            version: version.clone(),
        }),
        PackageReport::Failed(error) => Some(Event::AgentInstallFailed {
            uid,
            error: error.clone(),
        }),
        PackageReport::InProgress => None,
    }
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
        assert_eq!(labels["service.name"], "col");
        assert_eq!(labels["canary"], "true");
        assert_eq!(labels["zone"], "3");
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
                status: v1::PackageStatusEnum::Installed as i32,
                ..Default::default()
            },
        );
        statuses.packages.insert(
            "addon".into(),
            v1::PackageStatus {
                name: "addon".into(),
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
}
