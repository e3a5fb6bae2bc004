//! The agent page's sections built from [`AgentDetails`]: connection, description
//! attributes, package statuses, remote config status, effective config and health tree.
//! Everything the agent sent is escaped: a config file or a component name is the agent's
//! text, not the server's markup.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{esc, time};
use crate::store::{AgentDetails, AgentRecord, HealthNode};

/// The sections, in page order.
pub(super) fn sections(agent: &AgentRecord, details: &AgentDetails) -> String {
    let mut out = String::new();
    out.push_str("<h2>Connection</h2>");
    match &details.connection {
        Some(connection) => {
            let _ = write!(
                out,
                "<dl class=\"facts\" data-testid=\"connection\"><dt>Transport</dt><dd>{transport}{tls}</dd>\
                 <dt>Peer</dt><dd><code>{peer}</code></dd><dt>{since_label}</dt><dd>{since}</dd></dl>",
                transport = esc(&connection.transport),
                tls = if connection.tls { " (TLS)" } else { "" },
                peer = esc(&connection.peer),
                since_label = if agent.connected {
                    "Connected since"
                } else {
                    "Last connected"
                },
                since = time(connection.connected_since),
            );
        }
        None => {
            out.push_str("<p class=\"empty\">Not connected since the server keeps details.</p>")
        }
    }
    out.push_str("<h2>Description</h2>");
    out.push_str(&attribute_table(
        &details.identifying_attributes,
        &details.non_identifying_attributes,
    ));
    out.push_str(
        "<h2>Packages</h2><table><thead><tr><th>Package</th><th>Installed version</th>\
         <th>Status</th><th>Offered version</th><th>Error</th></tr></thead><tbody>",
    );
    let mut names: Vec<&str> = agent.package_versions.keys().collect();
    names.extend(details.package_statuses.keys().map(String::as_str));
    names.sort();
    names.dedup();
    for name in &names {
        let status = details.package_statuses.get(*name);
        let installed = status
            .map(|s| s.agent_has_version.as_str())
            .filter(|v| !v.is_empty())
            .or_else(|| agent.package_versions.get(name))
            .unwrap_or("");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            esc(name),
            esc(installed),
            esc(status.map_or("", |s| s.status.as_str())),
            esc(status.map_or("", |s| s.server_offered_version.as_str())),
            esc(status.map_or("", |s| s.error_message.as_str())),
        );
    }
    if names.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"empty\">No package reported.</td></tr>");
    }
    out.push_str("</tbody></table><h2>Remote config status</h2>");
    match &details.remote_config_status {
        Some(status) => {
            let _ = write!(
                out,
                "<dl class=\"facts\"><dt>Status</dt><dd>{}</dd><dt>Config hash</dt>\
                 <dd><code class=\"hash\">{}</code></dd><dt>Error</dt><dd class=\"error\">{}</dd></dl>",
                esc(&status.status),
                hex::encode(&status.hash),
                esc(&status.error_message),
            );
        }
        None => out.push_str("<p class=\"empty\">Not reported.</p>"),
    }
    out.push_str("<h2>Effective configuration</h2>");
    match &details.effective_config {
        Some(config) => {
            let _ = write!(
                out,
                "<p>SHA-256 <code class=\"hash\" data-testid=\"config-hash\">{}</code>{}</p>",
                hex::encode(&config.hash),
                if config.truncated {
                    " <span class=\"badge\">truncated: the server keeps a bounded part</span>"
                } else {
                    ""
                },
            );
            for (name, file) in &config.files {
                let _ = write!(
                    out,
                    "<h3><code>{}</code> <span class=\"hint\">{} · {} bytes</span></h3>\
                     <pre class=\"config\" data-testid=\"config-file\">{}</pre>",
                    esc(name),
                    esc(&file.content_type),
                    file.size,
                    esc(&file.body),
                );
            }
            if config.files.is_empty() {
                out.push_str("<p class=\"empty\">The agent reported an empty configuration.</p>");
            }
        }
        None => out.push_str("<p class=\"empty\">Not reported.</p>"),
    }
    out.push_str("<h2>Health</h2>");
    match &details.health {
        Some(root) => {
            out.push_str("<ul class=\"health root\" data-testid=\"health-tree\">");
            health_item(&mut out, "agent", root);
            out.push_str("</ul>");
        }
        None => out.push_str("<p class=\"empty\">Not reported.</p>"),
    }
    out
}

fn attribute_table(
    identifying: &BTreeMap<String, String>,
    non_identifying: &BTreeMap<String, String>,
) -> String {
    let mut out = String::from(
        "<table><thead><tr><th>Attribute</th><th>Value</th><th>Kind</th></tr></thead><tbody>",
    );
    for (kind, attributes) in [
        ("identifying", identifying),
        ("non-identifying", non_identifying),
    ] {
        for (key, value) in attributes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{kind}</td></tr>",
                esc(key),
                esc(value)
            );
        }
    }
    if identifying.is_empty() && non_identifying.is_empty() {
        out.push_str("<tr><td colspan=\"3\" class=\"empty\">Not reported.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// One node as a list item, its components as a nested list.
fn health_item(out: &mut String, name: &str, node: &HealthNode) {
    let badge = if node.healthy {
        "<span class=\"status healthy\">healthy</span>"
    } else {
        "<span class=\"status unhealthy\">unhealthy</span>"
    };
    let _ = write!(out, "<li><code>{}</code> {badge}", esc(name));
    if !node.status.is_empty() {
        let _ = write!(out, " {}", esc(&node.status));
    }
    if !node.last_error.is_empty() {
        let _ = write!(
            out,
            " <span class=\"error\">{}</span>",
            esc(&node.last_error)
        );
    }
    if node.started_at.as_millis() > 0 {
        let _ = write!(
            out,
            " <span class=\"hint\">since {}</span>",
            time(node.started_at)
        );
    }
    if !node.components.is_empty() || node.omitted > 0 {
        out.push_str("<ul class=\"health\">");
        for (child_name, child) in &node.components {
            health_item(out, child_name, child);
        }
        if node.omitted > 0 {
            let _ = write!(
                out,
                "<li class=\"hint\">{} more not kept by the server</li>",
                node.omitted
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConfigFileView, EffectiveConfigView};
    use crate::time::Timestamp;
    use opamp_proto::InstanceUid;

    /// The page shows the config inside a `<pre>` with the agent's markup escaped, and the
    /// health tree with every component.
    #[test]
    fn config_is_escaped_in_a_pre_and_the_health_tree_is_nested() {
        let agent = AgentRecord::new(
            InstanceUid::from([7; 16]),
            Default::default(),
            0,
            Timestamp::EPOCH,
        );
        let mut details = AgentDetails::default();
        let file = ConfigFileView {
            content_type: "text/yaml".into(),
            body: "receivers: <script>alert(1)</script> & more".into(),
            size: 44,
        };
        let config = EffectiveConfigView {
            hash: vec![0xab, 0xcd],
            files: [("collector.yaml".to_owned(), file)].into_iter().collect(),
            truncated: false,
        };
        details.effective_config = Some(config);
        let pipeline = HealthNode {
            status: "StatusPermanentError".into(),
            last_error: "exporter <failed>".into(),
            ..HealthNode::default()
        };
        let mut root = HealthNode {
            omitted: 3,
            ..HealthNode::default()
        };
        root.components.insert("pipeline:logs".into(), pipeline);
        details.health = Some(root);

        let html = sections(&agent, &details);
        assert!(html.contains(
            "<pre class=\"config\" data-testid=\"config-file\">receivers: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</pre>"
        ), "{html}");
        assert!(!html.contains("<script>"));
        assert!(html.contains("<code class=\"hash\" data-testid=\"config-hash\">abcd</code>"));
        assert!(
            html.contains("<code>pipeline:logs</code> <span class=\"status unhealthy\">"),
            "{html}"
        );
        assert!(html.contains("exporter &lt;failed&gt;"));
        assert!(html.contains("3 more not kept by the server"));
    }
}
