//! The `[limits]` section of the server's configuration: what one agent, one address or one
//! admin client may make the server hold ([`FleetLimits`]).
//!
//! ```toml
//! [limits]
//! max_description_attributes = 256
//! max_attribute_bytes = 4096
//! max_description_bytes = 65536
//! max_package_statuses = 256
//! forget_agents_after = "24h"
//! first_message_timeout = "10s"
//! max_connections_per_address = 256
//! exempt_loopback = true
//! download_write_timeout = "30s"
//! max_concurrent_downloads = 256
//! admin_max_connections = 256
//! admin_header_timeout = "10s"
//! admin_body_timeout = "30s"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration_text;

/// Bounds against agents (or anyone reaching the agent port) and admin clients that try to
/// exhaust the server. Every field has a default suited to a real fleet; see
/// `docs/operations.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FleetLimits {
    /// Most attributes in an agent's description (each becomes a label). A message with
    /// more is refused whole and logged. Default 256.
    pub max_description_attributes: usize,
    /// Largest description attribute, key plus value, in bytes. Default 4096.
    pub max_attribute_bytes: usize,
    /// Largest description in total, in bytes. Default 65536.
    pub max_description_bytes: usize,
    /// Most package statuses in one report. Default 256.
    pub max_package_statuses: usize,
    /// Agents that are disconnected for this long are forgotten (memory and store), unless
    /// they take part in an active rollout. Default 24 h.
    #[serde(with = "duration_text")]
    pub forget_agents_after: Duration,
    /// A WebSocket must carry its first OpAMP message within this time. Default 10 s.
    #[serde(with = "duration_text")]
    pub first_message_timeout: Duration,
    /// Most agent connections from one source address; 0 sets no bound. Default 256.
    pub max_connections_per_address: usize,
    /// Loopback addresses are exempt from `max_connections_per_address`. Default true.
    pub exempt_loopback: bool,
    /// A connection whose peer accepts no bytes for this long (a stalled download
    /// reader) is dropped. Default 30 s.
    #[serde(with = "duration_text")]
    pub download_write_timeout: Duration,
    /// Most package downloads at once; more get 503 with `Retry-After`. Default 256.
    pub max_concurrent_downloads: usize,
    /// Most admin API connections at once; more get 503. Default 256.
    pub admin_max_connections: usize,
    /// Time an admin client has to send its request headers. Default 10 s.
    #[serde(with = "duration_text")]
    pub admin_header_timeout: Duration,
    /// Longest pause while an admin request body (a package upload) is read. Default 30 s.
    #[serde(with = "duration_text")]
    pub admin_body_timeout: Duration,
}

impl Default for FleetLimits {
    fn default() -> Self {
        Self {
            max_description_attributes: 256,
            max_attribute_bytes: 4 * 1024,
            max_description_bytes: 64 * 1024,
            max_package_statuses: 256,
            forget_agents_after: Duration::from_secs(24 * 3600),
            first_message_timeout: Duration::from_secs(10),
            max_connections_per_address: 256,
            exempt_loopback: true,
            download_write_timeout: Duration::from_secs(30),
            max_concurrent_downloads: 256,
            admin_max_connections: 256,
            admin_header_timeout: Duration::from_secs(10),
            admin_body_timeout: Duration::from_secs(30),
        }
    }
}

impl FleetLimits {
    /// The per-agent caps as session limits (the rest keeps `base`).
    pub(crate) fn session_limits(
        &self,
        mut base: opamp_session::SessionLimits,
    ) -> opamp_session::SessionLimits {
        base.max_description_attributes = self.max_description_attributes;
        base.max_attribute_bytes = self.max_attribute_bytes;
        base.max_description_bytes = self.max_description_bytes;
        base.max_package_statuses = self.max_package_statuses;
        base
    }

    /// The transport's admission bounds.
    pub(crate) fn admission(&self) -> opamp_transport::server::AdmissionLimits {
        let mut admission = opamp_transport::server::AdmissionLimits::default();
        admission.first_message_timeout = self.first_message_timeout;
        admission.max_connections_per_address =
            (self.max_connections_per_address > 0).then_some(self.max_connections_per_address);
        admission.exempt_loopback = self.exempt_loopback;
        admission.write_timeout = self.download_write_timeout;
        admission.max_concurrent_downloads = self.max_concurrent_downloads;
        admission
    }

    /// The admin listener's bounds.
    pub(crate) fn admin_listener(&self) -> opamp_transport::server::HttpServeLimits {
        let mut limits = opamp_transport::server::HttpServeLimits::default();
        limits.max_connections = self.admin_max_connections;
        limits.header_read_timeout = self.admin_header_timeout;
        limits.body_idle_timeout = self.admin_body_timeout;
        limits.admission = self.admission();
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_section_keeps_the_other_defaults() {
        let limits: FleetLimits =
            toml::from_str("forget_agents_after = \"1h\"\nmax_package_statuses = 8").unwrap();
        assert_eq!(limits.forget_agents_after, Duration::from_secs(3600));
        assert_eq!(limits.max_package_statuses, 8);
        assert_eq!(limits.max_description_attributes, 256);
        assert!(toml::from_str::<FleetLimits>("max_labels = 3").is_err());
        let admission = FleetLimits {
            max_connections_per_address: 0,
            ..FleetLimits::default()
        }
        .admission();
        assert_eq!(admission.max_connections_per_address, None);
    }
}
