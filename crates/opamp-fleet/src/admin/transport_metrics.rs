//! The OpAMP listener's own counters, appended to `/metrics` (OpenMetrics text):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `opamp_transport_connections_accepted_total` | counter | |
//! | `opamp_transport_connections_open` | gauge | |
//! | `opamp_transport_connections_refused_total` | counter | `reason` (`capacity`, `tls_handshake`) |
//! | `opamp_transport_agent_connections_total` | counter | `transport` (`websocket`: upgrades, `http`: requests) |
//! | `opamp_transport_agent_connections_open` | gauge | `transport` |
//! | `opamp_transport_messages_received_total` | counter | `transport` |
//! | `opamp_transport_received_bytes_total` | counter | `transport` |
//! | `opamp_transport_messages_sent_total` | counter | `transport` |
//! | `opamp_transport_sent_bytes_total` | counter | `transport` |
//! | `opamp_transport_messages_refused_total` | counter | `transport`, `reason` (`too_large`, `malformed`, `unauthorized`, `other`) |

use std::fmt::Write as _;

use opamp_session::TransportMode;
use opamp_transport::server::{RefusalReason, TransportCounters, TransportStatsSnapshot};

const TRANSPORTS: [(TransportMode, &str); 2] = [
    (TransportMode::WebSocket, "websocket"),
    (TransportMode::HttpPolling, "http"),
];

/// The transport families, in OpenMetrics text, without `# EOF`.
pub(super) fn encode(stats: &TransportStatsSnapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "opamp_transport_connections_accepted",
        "counter",
        "TCP connections accepted on the OpAMP listener",
        None,
    );
    let _ = writeln!(
        out,
        "opamp_transport_connections_accepted_total {}",
        stats.connections_accepted
    );
    family(
        &mut out,
        "opamp_transport_connections_open",
        "gauge",
        "TCP connections open on the OpAMP listener",
        None,
    );
    let _ = writeln!(
        out,
        "opamp_transport_connections_open {}",
        stats.connections_open
    );
    family(
        &mut out,
        "opamp_transport_connections_refused",
        "counter",
        "Connections refused before any request: at max_connections, or a failed TLS handshake",
        None,
    );
    let _ = writeln!(
        out,
        "opamp_transport_connections_refused_total{{reason=\"capacity\"}} {}\n\
         opamp_transport_connections_refused_total{{reason=\"tls_handshake\"}} {}",
        stats.connections_refused_capacity, stats.tls_handshakes_failed
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_agent_connections",
        "counter",
        "WebSocket upgrades and HTTP requests on the OpAMP path",
        |c| c.opened,
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_agent_connections_open",
        "gauge",
        "WebSockets open and HTTP requests in progress",
        |c| c.open,
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_messages_received",
        "counter",
        "AgentToServer messages accepted",
        |c| c.messages_received,
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_received_bytes",
        "counter",
        "Bytes of accepted AgentToServer messages as received",
        |c| c.bytes_received,
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_messages_sent",
        "counter",
        "ServerToAgent messages sent",
        |c| c.messages_sent,
    );
    per_transport(
        &mut out,
        stats,
        "opamp_transport_sent_bytes",
        "counter",
        "Bytes of ServerToAgent messages as sent",
        |c| c.bytes_sent,
    );
    family(
        &mut out,
        "opamp_transport_messages_refused",
        "counter",
        "Messages or requests refused, by reason",
        None,
    );
    for (kind, transport) in TRANSPORTS {
        let counters = stats.transport(kind);
        for reason in RefusalReason::ALL {
            let _ = writeln!(
                out,
                "opamp_transport_messages_refused_total{{transport=\"{transport}\",reason=\"{}\"}} {}",
                reason.as_str(),
                counters.refused(reason)
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, unit: Option<&str>) {
    let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
    if let Some(unit) = unit {
        let _ = writeln!(out, "# UNIT {name} {unit}");
    }
}

fn per_transport(
    out: &mut String,
    stats: &TransportStatsSnapshot,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&TransportCounters) -> u64,
) {
    let unit = name.ends_with("_bytes").then_some("bytes");
    family(out, name, kind, help, unit);
    let suffix = if kind == "counter" { "_total" } else { "" };
    for (transport, label) in TRANSPORTS {
        let _ = writeln!(
            out,
            "{name}{suffix}{{transport=\"{label}\"}} {}",
            value(stats.transport(transport))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_present_at_zero() {
        let text = encode(&TransportStatsSnapshot::default());
        assert!(text.contains("opamp_transport_connections_open 0\n"));
        assert!(text.contains("opamp_transport_received_bytes_total{transport=\"http\"} 0\n"));
        assert!(text.contains("# UNIT opamp_transport_sent_bytes bytes\n"));
        assert!(text.contains(
            "opamp_transport_messages_refused_total{transport=\"websocket\",reason=\"too_large\"} 0\n"
        ));
        assert!(
            text.contains("opamp_transport_agent_connections_open{transport=\"websocket\"} 0\n")
        );
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 4 + 2 * 6 + 2 * 4);
    }
}
