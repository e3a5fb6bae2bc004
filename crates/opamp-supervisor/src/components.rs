//! The collector's available components (`<executable> components`), as OpAMP
//! `AvailableComponents`.
//!
//! `otelcol` builds print YAML: `buildinfo`, then per kind (`receivers`, `processors`,
//! `exporters`, `extensions`, `connectors`) a list of components, each a mapping with `name`,
//! `module` and `stability` (recent builds) or a bare name (older ones). The report has one
//! entry per kind whose `sub_component_map` maps each component type to its details
//! (`code.namespace` = the Go module and version, when printed). The hash is the SHA-256 of
//! the printed text, so it changes whenever the list does.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use opamp_proto::v1;
use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::remote_config::policy::COMPONENT_KINDS;
use crate::report::ErrorReport;

/// Longest wait for `<executable> components`.
pub const COMPONENTS_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `components` output; `None` when it is not YAML with at least one known kind.
pub fn parse_components(text: &str) -> Option<v1::AvailableComponents> {
    let value: Value = serde_norway::from_str(text).ok()?;
    let mut components = HashMap::new();
    for kind in COMPONENT_KINDS {
        let Some(Value::Sequence(items)) = value.get(kind) else {
            continue;
        };
        let mut sub_component_map = HashMap::new();
        for item in items {
            let (name, module) = match item {
                Value::String(name) => (name.clone(), None),
                Value::Mapping(_) => match item.get("name").and_then(Value::as_str) {
                    Some(name) => (
                        name.to_owned(),
                        item.get("module")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    ),
                    None => continue,
                },
                _ => continue,
            };
            let metadata = module
                .map(|m| vec![v1::KeyValue::string("code.namespace", m)])
                .unwrap_or_default();
            sub_component_map.insert(
                name,
                v1::ComponentDetails {
                    metadata,
                    sub_component_map: HashMap::new(),
                },
            );
        }
        components.insert(
            kind.to_owned(),
            v1::ComponentDetails {
                metadata: Vec::new(),
                sub_component_map,
            },
        );
    }
    if components.is_empty() {
        return None;
    }
    Some(v1::AvailableComponents {
        components,
        hash: Sha256::digest(text.as_bytes()).to_vec(),
    })
}

/// Runs `<executable> components` (bounded by [`COMPONENTS_PROBE_TIMEOUT`]) and parses it;
/// `None` (logged) when the collector cannot list its components.
pub async fn detect(executable: &Path) -> Option<v1::AvailableComponents> {
    let run = tokio::process::Command::new(executable)
        .arg("components")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(COMPONENTS_PROBE_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            tracing::warn!(executable = %executable.display(), status = %output.status, "`components` failed; available components not reported");
            return None;
        }
        Ok(Err(error)) => {
            tracing::warn!(executable = %executable.display(), error = %ErrorReport(&error), "cannot run `components`; available components not reported");
            return None;
        }
        Err(_) => {
            tracing::warn!(executable = %executable.display(), "`components` timed out; available components not reported");
            return None;
        }
    };
    let parsed = parse_components(&String::from_utf8_lossy(&output.stdout));
    if parsed.is_none() {
        tracing::warn!(executable = %executable.display(), "`components` printed nothing usable; available components not reported");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_output_formats_are_read() {
        let recent = "buildinfo:\n  version: 0.135.0\nreceivers:\n  - name: otlp\n    module: go.opentelemetry.io/collector/receiver/otlpreceiver v0.135.0\n    stability:\n      logs: Beta\nexporters:\n  - name: debug\n";
        let parsed = parse_components(recent).unwrap();
        let otlp = &parsed.components["receivers"].sub_component_map["otlp"];
        assert_eq!(otlp.metadata[0].key, "code.namespace");
        assert!(
            parsed.components["exporters"]
                .sub_component_map
                .contains_key("debug")
        );
        assert_eq!(parsed.hash.len(), 32);

        let older = "receivers:\n- otlp\n- filelog\n";
        let parsed = parse_components(older).unwrap();
        assert_eq!(parsed.components["receivers"].sub_component_map.len(), 2);
        assert!(parse_components("usage: otelcol [command]").is_none());
    }
}
