//! `opamp agents show`'s text: one agent, section by section.

use std::fmt::Write as _;

use opamp_fleet::admin::AgentView;
use opamp_fleet::store::HealthNode;

use super::json::ago;
use super::table;

/// The agent as text for a terminal.
pub(crate) fn render(view: &AgentView) -> String {
    let agent = &view.record;
    let details = &view.details;
    let mut out = String::new();
    let _ = writeln!(out, "agent         {}", agent.uid);
    let _ = writeln!(
        out,
        "health        {}",
        if agent.healthy {
            "healthy"
        } else {
            "unhealthy"
        }
    );
    let connection = match &details.connection {
        Some(c) if agent.connected => format!(
            "yes, {}{} from {} since {}",
            c.transport,
            if c.tls { " (TLS)" } else { "" },
            c.peer,
            ago(c.connected_since)
        ),
        Some(c) => format!("no (last over {} from {})", c.transport, c.peer),
        None => if agent.connected { "yes" } else { "no" }.to_owned(),
    };
    let _ = writeln!(out, "connected     {connection}");
    let _ = writeln!(out, "last seen     {}", ago(agent.last_seen));
    let _ = writeln!(out, "capabilities  0x{:x}", agent.capabilities);
    let labels: Vec<String> = agent
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out, "labels        {}", labels.join(","));

    out.push_str("\nDescription\n");
    let mut rows = Vec::new();
    for (kind, attributes) in [
        ("identifying", &details.identifying_attributes),
        ("non-identifying", &details.non_identifying_attributes),
    ] {
        for (key, value) in attributes {
            rows.push(vec![key.clone(), value.clone(), kind.to_owned()]);
        }
    }
    let _ = writeln!(
        out,
        "{}",
        indent(&table::render(&["ATTRIBUTE", "VALUE", "KIND"], &rows))
    );

    out.push_str("\nPackages\n");
    let mut names: Vec<&str> = agent.package_versions.keys().collect();
    names.extend(details.package_statuses.keys().map(String::as_str));
    names.sort();
    names.dedup();
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            let status = details.package_statuses.get(*name);
            let installed = status
                .map(|s| s.agent_has_version.clone())
                .filter(|v| !v.is_empty())
                .or_else(|| agent.package_versions.get(name).map(str::to_owned))
                .unwrap_or_default();
            vec![
                (*name).to_owned(),
                installed,
                status.map(|s| s.status.clone()).unwrap_or_default(),
                status
                    .map(|s| s.server_offered_version.clone())
                    .unwrap_or_default(),
                status.map(|s| s.error_message.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "{}",
        indent(&table::render(
            &["PACKAGE", "INSTALLED", "STATUS", "OFFERED", "ERROR"],
            &rows
        ))
    );

    out.push_str("\nRemote config status\n");
    match &details.remote_config_status {
        Some(status) => {
            let _ = writeln!(out, "  {} (hash {})", status.status, hex(&status.hash));
            if !status.error_message.is_empty() {
                let _ = writeln!(out, "  error: {}", status.error_message);
            }
        }
        None => out.push_str("  not reported\n"),
    }

    out.push_str("\nEffective config\n");
    match &details.effective_config {
        Some(config) => {
            let _ = writeln!(
                out,
                "  sha256 {}{}",
                hex(&config.hash),
                if config.truncated {
                    " (truncated by the server's bound)"
                } else {
                    ""
                }
            );
            for (name, file) in &config.files {
                let _ = writeln!(
                    out,
                    "  --- {name} ({}, {} bytes)",
                    file.content_type, file.size
                );
                for line in file.body.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        None => out.push_str("  not reported\n"),
    }

    out.push_str("\nHealth\n");
    match &details.health {
        Some(root) => health(&mut out, "agent", root, 1),
        None => out.push_str("  not reported\n"),
    }
    out.trim_end().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn health(out: &mut String, name: &str, node: &HealthNode, depth: usize) {
    let _ = write!(
        out,
        "{}{name}: {}",
        "  ".repeat(depth),
        if node.healthy { "healthy" } else { "unhealthy" }
    );
    if !node.status.is_empty() {
        let _ = write!(out, " ({})", node.status);
    }
    if !node.last_error.is_empty() {
        let _ = write!(out, " error: {}", node.last_error);
    }
    out.push('\n');
    for (child_name, child) in &node.components {
        health(out, child_name, child, depth + 1);
    }
    if node.omitted > 0 {
        let _ = writeln!(
            out,
            "{}… {} more not kept by the server",
            "  ".repeat(depth + 1),
            node.omitted
        );
    }
}
