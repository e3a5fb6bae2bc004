//! Composes the collector config: the local base files and the offered config map, deep-merged.

use opamp_proto::v1::AgentConfigMap;
use opamp_verify::CONFIG_SIGNATURE_ENTRY;
use serde_norway::{Mapping, Value};

use super::RemoteConfigError;
use crate::config::RemoteConfigMode;

/// One local base file: its name (for errors) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFile {
    /// Where it came from (a path, for errors).
    pub name: String,
    /// Its YAML text.
    pub body: Vec<u8>,
}

/// The config the collector should run: `base` files in order, then (for
/// [`RemoteConfigMode::RemoteOnTop`]) the remote entries sorted by name, each deep-merged on top
/// of what came before; for [`RemoteConfigMode::RemoteOnly`] the remote entries alone. The
/// `opamp.signature` entry is never part of the config.
///
/// Deep merge: two mappings merge key by key, recursively; anything else (a scalar, a list)
/// from the later document replaces the earlier value. An empty remote config (no entries
/// besides the signature) is refused: it would leave the collector without pipelines.
///
/// # Errors
/// [`RemoteConfigError::NotYaml`] for an entry or file that is not a YAML mapping,
/// [`RemoteConfigError::Empty`] for a remote config without entries.
pub fn compose(
    base: &[BaseFile],
    remote: &AgentConfigMap,
    mode: RemoteConfigMode,
) -> Result<Value, RemoteConfigError> {
    let mut entries: Vec<(&String, &Vec<u8>)> = remote
        .config_map
        .iter()
        .filter(|(name, _)| name.as_str() != CONFIG_SIGNATURE_ENTRY)
        .map(|(name, file)| (name, &file.body))
        .collect();
    if entries.is_empty() {
        return Err(RemoteConfigError::Empty);
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut merged = Value::Mapping(Mapping::new());
    if mode == RemoteConfigMode::RemoteOnTop {
        for file in base {
            merge(&mut merged, parse(&file.name, &file.body)?);
        }
    }
    for (name, body) in entries {
        let label = if name.is_empty() { "(unnamed)" } else { name };
        merge(&mut merged, parse(label, body)?);
    }
    Ok(merged)
}

/// The local base files alone, merged in order (the config before any remote one arrives).
///
/// # Errors
/// [`RemoteConfigError::NotYaml`] for a file that is not a YAML mapping.
pub fn compose_base(base: &[BaseFile]) -> Result<Value, RemoteConfigError> {
    let mut merged = Value::Mapping(Mapping::new());
    for file in base {
        merge(&mut merged, parse(&file.name, &file.body)?);
    }
    Ok(merged)
}

/// YAML text of a composed config.
///
/// # Errors
/// [`RemoteConfigError::NotYaml`] if it cannot be written (not expected for parsed values).
pub fn to_yaml(config: &Value) -> Result<String, RemoteConfigError> {
    serde_norway::to_string(config).map_err(|e| RemoteConfigError::NotYaml {
        entry: "composed config".to_owned(),
        reason: e.to_string(),
    })
}

fn parse(name: &str, body: &[u8]) -> Result<Value, RemoteConfigError> {
    let not_yaml = |reason: String| RemoteConfigError::NotYaml {
        entry: name.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| not_yaml("not UTF-8".to_owned()))?;
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Mapping::new()));
    }
    match serde_norway::from_str::<Value>(text).map_err(|e| not_yaml(e.to_string()))? {
        Value::Mapping(map) => Ok(Value::Mapping(map)),
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        _ => Err(not_yaml("the top level is not a mapping".to_owned())),
    }
}

/// Deep-merges `top` into `into`: mappings key by key, anything else replaced.
pub fn merge(into: &mut Value, top: Value) {
    match (into, top) {
        (Value::Mapping(base), Value::Mapping(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opamp_proto::v1::AgentConfigFile;
    use proptest::prelude::*;

    use super::*;

    fn remote(entries: &[(&str, &str)]) -> AgentConfigMap {
        AgentConfigMap {
            config_map: entries
                .iter()
                .map(|(n, b)| {
                    (
                        (*n).to_owned(),
                        AgentConfigFile {
                            body: b.as_bytes().to_vec(),
                            content_type: "text/yaml".to_owned(),
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
        }
    }

    fn base(text: &str) -> Vec<BaseFile> {
        vec![BaseFile {
            name: "local.yaml".to_owned(),
            body: text.as_bytes().to_vec(),
        }]
    }

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn remote_on_top_merges_mappings_and_replaces_the_rest() {
        let local = base(
            "receivers:\n  otlp: {}\nservice:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n",
        );
        let offer = remote(&[(
            "",
            "exporters:\n  otlphttp:\n    endpoint: http://x\nservice:\n  pipelines:\n    logs:\n      exporters: [otlphttp]\n",
        )]);
        let merged = compose(&local, &offer, RemoteConfigMode::RemoteOnTop).unwrap();
        assert_eq!(
            merged,
            yaml(
                "receivers:\n  otlp: {}\nservice:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [otlphttp]\nexporters:\n  otlphttp:\n    endpoint: http://x\n"
            )
        );
        let only = compose(&local, &offer, RemoteConfigMode::RemoteOnly).unwrap();
        assert!(only.get("receivers").is_none());
    }

    #[test]
    fn entries_apply_in_name_order_and_the_signature_is_left_out() {
        let offer = remote(&[
            ("b", "x: 2"),
            ("a", "x: 1"),
            (CONFIG_SIGNATURE_ENTRY, "!!binary"),
        ]);
        let merged = compose(&[], &offer, RemoteConfigMode::RemoteOnly).unwrap();
        assert_eq!(merged, yaml("x: 2"));
    }

    #[test]
    fn bad_input_is_refused_with_the_entry_name() {
        let err = compose(
            &[],
            &remote(&[("c.yaml", "- a list")]),
            RemoteConfigMode::RemoteOnly,
        )
        .unwrap_err();
        assert!(err.to_string().contains("c.yaml"), "{err}");
        assert!(matches!(
            compose(&[], &remote(&[]), RemoteConfigMode::RemoteOnly),
            Err(RemoteConfigError::Empty)
        ));
    }

    fn small_yaml() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| {
                Value::Mapping(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            })
        })
    }

    proptest! {
        /// Every leaf of the top document wins, and merging the same document twice changes
        /// nothing more (idempotent).
        #[test]
        fn merge_puts_the_top_document_on_top(base in small_yaml(), top in small_yaml()) {
            let mut once = base.clone();
            merge(&mut once, top.clone());
            let mut twice = once.clone();
            merge(&mut twice, top.clone());
            prop_assert_eq!(&once, &twice);
            let mut on_top = once.clone();
            merge(&mut on_top, top.clone());
            prop_assert_eq!(on_top, once.clone());
            if !matches!(top, Value::Mapping(_)) || !matches!(base, Value::Mapping(_)) {
                prop_assert_eq!(once, top);
            }
        }
    }
}
