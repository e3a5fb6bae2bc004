//! The host's policy on remote configs: which component types and exporter endpoints the
//! server may use, whatever it sends.

use serde_norway::Value;

use super::RemoteConfigError;
use crate::config::RemoteConfigSettings;

/// Top-level sections whose keys are component ids (`type` or `type/name`).
pub const COMPONENT_KINDS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
];

/// Checks `config` against `settings`: no denied component, only allowed components (when the
/// allow list is not empty), every exporter `endpoint` (at any depth under `exporters`) equal
/// to an allowed endpoint or under it (the allowed text followed by `/`).
///
/// # Errors
/// [`RemoteConfigError::Refused`] naming the component or endpoint and the rule.
pub fn check(config: &Value, settings: &RemoteConfigSettings) -> Result<(), RemoteConfigError> {
    for kind in COMPONENT_KINDS {
        let Some(Value::Mapping(section)) = config.get(kind) else {
            continue;
        };
        for id in section.keys() {
            let id = id.as_str().unwrap_or_default();
            let component_type = id.split('/').next().unwrap_or(id);
            let matches = |rule: &String| rule_matches(rule, kind, component_type);
            if let Some(rule) = settings.deny_components.iter().find(|r| matches(r)) {
                return Err(RemoteConfigError::Refused(format!(
                    "component {kind}/{id} is denied by remote_config.deny_components ({rule})"
                )));
            }
            if !settings.allow_components.is_empty()
                && !settings.allow_components.iter().any(matches)
            {
                return Err(RemoteConfigError::Refused(format!(
                    "component {kind}/{id} is not in remote_config.allow_components"
                )));
            }
        }
    }
    if !settings.allowed_endpoints.is_empty()
        && let Some(exporters) = config.get("exporters")
    {
        let mut endpoints = Vec::new();
        collect_endpoints(exporters, &mut endpoints);
        if let Some(endpoint) = endpoints.into_iter().find(|e| {
            !settings
                .allowed_endpoints
                .iter()
                .any(|a| endpoint_allowed(a, e))
        }) {
            return Err(RemoteConfigError::Refused(format!(
                "exporter endpoint {endpoint} is not in remote_config.allowed_endpoints"
            )));
        }
    }
    Ok(())
}

fn rule_matches(rule: &str, kind: &str, component_type: &str) -> bool {
    match rule.split_once('/') {
        Some((rule_kind, rule_type)) => rule_kind == kind && rule_type == component_type,
        None => rule == component_type,
    }
}

fn endpoint_allowed(allowed: &str, endpoint: &str) -> bool {
    match endpoint.strip_prefix(allowed) {
        Some(rest) => rest.is_empty() || allowed.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn collect_endpoints(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    (Some("endpoint"), Value::String(endpoint)) => out.push(endpoint.clone()),
                    _ => collect_endpoints(value, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_endpoints(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(deny: &[&str], allow: &[&str], endpoints: &[&str]) -> RemoteConfigSettings {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        RemoteConfigSettings {
            deny_components: strings(deny),
            allow_components: strings(allow),
            allowed_endpoints: strings(endpoints),
            ..RemoteConfigSettings::default()
        }
    }

    fn config() -> Value {
        serde_norway::from_str(
            "receivers:\n  otlp: {}\nexporters:\n  file/audit:\n    path: /tmp/x\n  otlphttp:\n    endpoint: http://127.0.0.1:4318\n",
        )
        .unwrap()
    }

    #[test]
    fn denied_components_are_refused_by_kind_and_type_or_type_alone() {
        for rule in ["exporters/file", "file"] {
            let err = check(&config(), &settings(&[rule], &[], &[])).unwrap_err();
            assert!(err.to_string().contains("exporters/file/audit"), "{err}");
        }
        assert!(check(&config(), &settings(&["receivers/file"], &[], &[])).is_ok());
    }

    #[test]
    fn the_allow_list_is_exhaustive() {
        let allow = settings(&[], &["otlp", "exporters/otlphttp"], &[]);
        let err = check(&config(), &allow).unwrap_err();
        assert!(err.to_string().contains("file/audit"), "{err}");
        let all = settings(&[], &["otlp", "otlphttp", "file"], &[]);
        assert!(check(&config(), &all).is_ok());
    }

    #[test]
    fn exporter_endpoints_must_be_allowed_at_a_path_boundary() {
        assert!(check(&config(), &settings(&[], &[], &["http://127.0.0.1:4318"])).is_ok());
        let err = check(&config(), &settings(&[], &[], &["http://127.0.0.1:431"])).unwrap_err();
        assert!(err.to_string().contains("http://127.0.0.1:4318"), "{err}");
        assert!(endpoint_allowed("https://a/", "https://a/v1/logs"));
        assert!(endpoint_allowed("https://a", "https://a/v1/logs"));
        assert!(!endpoint_allowed("https://a", "https://a.evil"));
    }
}
