//! Agent details: turning what an agent reports (description, package statuses, effective
//! config, remote config status, health tree, connection) into bounded
//! [`AgentDetails`](crate::store::AgentDetails), kept between reports by the server's details
//! book and written to the store with the registry rows.

use std::collections::BTreeMap;

use opamp_proto::v1;
use opamp_session::TransportMode;
use opamp_transport::server::ConnectionInfo;

use crate::store::{
    ConfigFileView, ConnectionView, EffectiveConfigView, HealthNode, PackageStatusView,
    RemoteConfigStatusView,
};
use crate::time::Timestamp;

/// Most bytes of config file bodies kept per agent; the rest is cut (and marked truncated).
pub const MAX_EFFECTIVE_CONFIG_BYTES: usize = 128 * 1024;
/// Most config files kept per agent.
pub const MAX_CONFIG_FILES: usize = 64;
/// Deepest level of the health tree kept (the agent itself is level 1).
pub const MAX_HEALTH_DEPTH: usize = 6;
/// Most health tree nodes kept per agent.
pub const MAX_HEALTH_NODES: usize = 256;
/// Most packages, attributes, and characters per text field kept per agent.
const MAX_ENTRIES: usize = 256;
const MAX_TEXT: usize = 4096;

fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Attribute values as text (lists, maps and bytes as a short placeholder).
pub(crate) fn attributes(list: &[v1::KeyValue]) -> BTreeMap<String, String> {
    use v1::any_value::Value;
    list.iter()
        .take(MAX_ENTRIES)
        .map(|attribute| {
            let value = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(text)) => bounded(text),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(Value::BytesValue(bytes)) => format!("({} bytes)", bytes.len()),
                Some(Value::ArrayValue(_)) => "(list)".to_owned(),
                Some(Value::KvlistValue(_)) => "(map)".to_owned(),
                None => String::new(),
            };
            (bounded(&attribute.key), value)
        })
        .collect()
}

fn package_status_name(status: i32) -> String {
    match v1::PackageStatusEnum::try_from(status) {
        Ok(v1::PackageStatusEnum::Installed) => "installed".into(),
        Ok(v1::PackageStatusEnum::InstallPending) => "install_pending".into(),
        Ok(v1::PackageStatusEnum::Installing) => "installing".into(),
        Ok(v1::PackageStatusEnum::InstallFailed) => "install_failed".into(),
        Ok(v1::PackageStatusEnum::Downloading) => "downloading".into(),
        _ => format!("unknown({status})"),
    }
}

pub(crate) fn package_statuses(
    statuses: &v1::PackageStatuses,
) -> BTreeMap<String, PackageStatusView> {
    statuses
        .packages
        .iter()
        .take(MAX_ENTRIES)
        .map(|(name, status)| {
            (
                bounded(name),
                PackageStatusView {
                    status: package_status_name(status.status),
                    agent_has_version: bounded(&status.agent_has_version),
                    server_offered_version: bounded(&status.server_offered_version),
                    error_message: bounded(&status.error_message),
                },
            )
        })
        .collect()
}

/// The SHA-256 of a config map: for each file in byte order of its name, the name, the
/// content type and the body, each preceded by its length as 8 bytes big-endian. Independent
/// of map order, so equal configs have equal hashes whichever agent reports them.
pub(crate) fn config_hash(map: &v1::AgentConfigMap) -> Vec<u8> {
    let mut names: Vec<&String> = map.config_map.keys().collect();
    names.sort();
    let mut encoded = Vec::new();
    for name in names {
        let file = &map.config_map[name];
        for part in [
            name.as_bytes(),
            file.content_type.as_bytes(),
            file.body.as_slice(),
        ] {
            encoded.extend_from_slice(&(part.len() as u64).to_be_bytes());
            encoded.extend_from_slice(part);
        }
    }
    opamp_packages::ContentHash::of(&encoded)
        .as_bytes()
        .to_vec()
}

/// The effective config, bodies as text, at most [`MAX_EFFECTIVE_CONFIG_BYTES`] of them
/// in all and [`MAX_CONFIG_FILES`] files; the hash covers the whole report.
pub(crate) fn effective_config(config: &v1::EffectiveConfig) -> EffectiveConfigView {
    let empty = v1::AgentConfigMap::default();
    let map = config.config_map.as_ref().unwrap_or(&empty);
    let mut names: Vec<&String> = map.config_map.keys().collect();
    names.sort();
    let mut budget = MAX_EFFECTIVE_CONFIG_BYTES;
    let mut truncated = names.len() > MAX_CONFIG_FILES;
    let mut files = BTreeMap::new();
    for name in names.into_iter().take(MAX_CONFIG_FILES) {
        let file = &map.config_map[name];
        let mut end = file.body.len().min(budget);
        if end < file.body.len() {
            truncated = true;
        }
        let body = loop {
            // Cut at a character boundary; bytes that are not UTF-8 are replaced.
            match std::str::from_utf8(&file.body[..end]) {
                Ok(text) => break text.to_owned(),
                Err(error) if error.error_len().is_none() => end = error.valid_up_to(),
                Err(_) => break String::from_utf8_lossy(&file.body[..end]).into_owned(),
            }
        };
        budget -= end;
        files.insert(
            bounded(name),
            ConfigFileView {
                content_type: bounded(&file.content_type),
                body,
                size: file.body.len() as u64,
            },
        );
    }
    EffectiveConfigView {
        hash: config_hash(map),
        files,
        truncated,
    }
}

pub(crate) fn remote_config_status(status: &v1::RemoteConfigStatus) -> RemoteConfigStatusView {
    let name = match v1::RemoteConfigStatuses::try_from(status.status) {
        Ok(v1::RemoteConfigStatuses::Unset) => "unset".into(),
        Ok(v1::RemoteConfigStatuses::Applied) => "applied".into(),
        Ok(v1::RemoteConfigStatuses::Applying) => "applying".into(),
        Ok(v1::RemoteConfigStatuses::Failed) => "failed".into(),
        Err(_) => format!("unknown({})", status.status),
    };
    RemoteConfigStatusView {
        status: name,
        hash: status
            .last_remote_config_hash
            .iter()
            .take(64)
            .copied()
            .collect(),
        error_message: bounded(&status.error_message),
    }
}

/// The health tree, at most [`MAX_HEALTH_DEPTH`] levels and [`MAX_HEALTH_NODES`] nodes
/// (breadth first, children in name order); each node counts what was left out below it.
pub(crate) fn health_tree(health: &v1::ComponentHealth) -> HealthNode {
    let mut budget = MAX_HEALTH_NODES - 1;
    let mut root = health_node(health);
    // Breadth first, so a deep chain cannot use up the budget before the top levels.
    let mut level: Vec<(&v1::ComponentHealth, Vec<String>)> = vec![(health, Vec::new())];
    for _ in 1..MAX_HEALTH_DEPTH {
        let mut next = Vec::new();
        for (node, path) in level {
            let mut names: Vec<&String> = node.component_health_map.keys().collect();
            names.sort();
            let target = node_at(&mut root, &path);
            for name in names {
                if budget == 0 {
                    target.omitted += 1;
                    continue;
                }
                budget -= 1;
                let child = &node.component_health_map[name];
                target.components.insert(bounded(name), health_node(child));
                let mut child_path = path.clone();
                child_path.push(bounded(name));
                next.push((child, child_path));
            }
        }
        level = next;
    }
    // Whatever sits below the deepest kept level is counted, not kept.
    for (node, path) in level {
        let below = node.component_health_map.len();
        node_at(&mut root, &path).omitted += u32::try_from(below).unwrap_or(u32::MAX);
    }
    root
}

fn node_at<'a>(root: &'a mut HealthNode, path: &[String]) -> &'a mut HealthNode {
    let mut node = root;
    for name in path {
        node = node.components.entry(name.clone()).or_default();
    }
    node
}

fn health_node(health: &v1::ComponentHealth) -> HealthNode {
    HealthNode {
        healthy: health.healthy,
        status: bounded(&health.status),
        last_error: bounded(&health.last_error),
        started_at: Timestamp::from_millis(health.start_time_unix_nano / 1_000_000),
        components: BTreeMap::new(),
        omitted: 0,
    }
}

/// The connection an agent arrived on.
pub(crate) fn connection(
    transport: TransportMode,
    info: &ConnectionInfo,
    now: Timestamp,
) -> ConnectionView {
    let transport = match transport {
        TransportMode::WebSocket => "websocket",
        TransportMode::HttpPolling => "http",
        _ => "other",
    };
    ConnectionView::new(transport, info.remote_addr.to_string(), info.tls, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &[u8]) -> v1::AgentConfigFile {
        v1::AgentConfigFile {
            body: body.to_vec(),
            content_type: "text/yaml".into(),
        }
    }

    fn config(files: &[(&str, &[u8])]) -> v1::EffectiveConfig {
        let mut map = v1::AgentConfigMap::default();
        for (name, body) in files {
            map.config_map.insert((*name).into(), file(body));
        }
        v1::EffectiveConfig {
            config_map: Some(map),
        }
    }

    #[test]
    fn config_hash_ignores_map_order_and_sees_every_byte() {
        let a = config(&[("a.yaml", b"x: 1"), ("b.yaml", b"y: 2")]);
        let b = config(&[("b.yaml", b"y: 2"), ("a.yaml", b"x: 1")]);
        let c = config(&[("a.yaml", b"x: 1"), ("b.yaml", b"y: 3")]);
        // Moving a byte from one file to the next must not give the same hash.
        let d = config(&[("a.yaml", b"x: 1y"), ("b.yaml", b": 2")]);
        let hash = |c: &v1::EffectiveConfig| effective_config(c).hash;
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        assert_ne!(hash(&a), hash(&d));
        assert_eq!(hash(&a).len(), 32);
    }

    #[test]
    fn a_large_config_is_cut_to_the_bound_but_hashed_whole() {
        let big = vec![b'a'; MAX_EFFECTIVE_CONFIG_BYTES + 10];
        let mut other = big.clone();
        *other.last_mut().unwrap_or(&mut 0) = b'b';
        let view = effective_config(&config(&[("big.yaml", &big), ("z.yaml", b"z")]));
        assert!(view.truncated);
        let kept: usize = view.files.values().map(|f| f.body.len()).sum();
        assert_eq!(kept, MAX_EFFECTIVE_CONFIG_BYTES);
        assert_eq!(view.files["big.yaml"].size, big.len() as u64);
        assert_ne!(
            view.hash,
            effective_config(&config(&[("big.yaml", &other), ("z.yaml", b"z")])).hash
        );
        let small = effective_config(&config(&[("c.yaml", "é: ü".as_bytes())]));
        assert!(!small.truncated);
        assert_eq!(small.files["c.yaml"].body, "é: ü");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut body = vec![b'a'; MAX_EFFECTIVE_CONFIG_BYTES - 1];
        body.extend_from_slice("é".as_bytes());
        let view = effective_config(&config(&[("c.yaml", &body)]));
        assert!(view.truncated);
        assert_eq!(
            view.files["c.yaml"].body.len(),
            MAX_EFFECTIVE_CONFIG_BYTES - 1
        );
    }

    fn health(healthy: bool, children: Vec<(&str, v1::ComponentHealth)>) -> v1::ComponentHealth {
        v1::ComponentHealth {
            healthy,
            status: if healthy { "ok".into() } else { "down".into() },
            component_health_map: children
                .into_iter()
                .map(|(name, child)| (name.to_owned(), child))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_health_tree_keeps_its_shape_within_bounds() {
        let tree = health(
            false,
            vec![
                (
                    "pipeline:logs",
                    health(false, vec![("exporter:otlp", health(false, vec![]))]),
                ),
                ("pipeline:metrics", health(true, vec![])),
            ],
        );
        let node = health_tree(&tree);
        assert!(!node.healthy);
        assert_eq!(node.components.len(), 2);
        assert!(node.components["pipeline:metrics"].healthy);
        let exporter = &node.components["pipeline:logs"].components["exporter:otlp"];
        assert_eq!(exporter.status, "down");
        assert_eq!(node.omitted, 0);

        // A chain deeper than the bound is cut, and the cut counted.
        let mut deep = health(true, vec![]);
        for _ in 0..MAX_HEALTH_DEPTH + 3 {
            deep = health(true, vec![("c", deep)]);
        }
        let mut node = &health_tree(&deep);
        let mut depth = 1;
        while let Some(child) = node.components.get("c") {
            node = child;
            depth += 1;
        }
        assert_eq!(depth, MAX_HEALTH_DEPTH);
        assert_eq!(node.omitted, 1);

        // A wide tree keeps at most the node budget.
        let mut wide = health(true, vec![]);
        for i in 0..MAX_HEALTH_NODES + 50 {
            wide.component_health_map
                .insert(format!("c{i:04}"), health(true, vec![]));
        }
        let node = health_tree(&wide);
        assert_eq!(node.components.len(), MAX_HEALTH_NODES - 1);
        assert_eq!(node.omitted, 51);
    }

    #[test]
    fn description_and_statuses_become_text() {
        use v1::any_value::Value;
        let kv = |key: &str, value: Value| v1::KeyValue {
            key: key.into(),
            value: Some(v1::AnyValue { value: Some(value) }),
        };
        let shown = attributes(&[
            kv("service.name", Value::StringValue("otelcol".into())),
            kv("blob", Value::BytesValue(vec![1, 2])),
        ]);
        assert_eq!(shown["service.name"], "otelcol");
        assert_eq!(shown["blob"], "(2 bytes)");
        let mut statuses = v1::PackageStatuses::default();
        statuses.packages.insert(
            "otelcol".into(),
            v1::PackageStatus {
                name: "otelcol".into(),
                agent_has_version: "1.0.0".into(),
                server_offered_version: "1.1.0".into(),
                status: v1::PackageStatusEnum::InstallFailed as i32,
                error_message: "bad signature".into(),
                ..Default::default()
            },
        );
        let view = &package_statuses(&statuses)["otelcol"];
        assert_eq!(view.status, "install_failed");
        assert_eq!(view.error_message, "bad signature");
        let status = remote_config_status(&v1::RemoteConfigStatus {
            last_remote_config_hash: vec![0xab],
            status: v1::RemoteConfigStatuses::Failed as i32,
            error_message: "unknown exporter".into(),
        });
        assert_eq!(status.status, "failed");
        assert_eq!(status.hash, vec![0xab]);
    }
}
