//! The OpAMP client settings and agent capabilities from the config.

use opamp_proto::AgentCapabilities;
use opamp_transport::client::ClientConfig;
use opamp_transport::tls::ClientTls;

use super::Error;
use crate::config::SupervisorConfig;

/// Client settings for `server`: endpoint, TLS files (CA, client certificate for mutual TLS)
/// and extra headers.
///
/// # Errors
/// [`Error::Transport`] for an unusable endpoint or unreadable TLS files, [`Error::Header`]
/// for an invalid header.
pub fn client_config(config: &SupervisorConfig) -> Result<ClientConfig, Error> {
    let server = &config.server;
    let mut client = ClientConfig::new(server.endpoint.url())?;
    if let Some(tls) = &server.tls {
        let identity = tls.cert_file.as_deref().zip(tls.key_file.as_deref());
        client = client.tls(ClientTls::from_files(tls.ca_file.as_deref(), identity)?);
    }
    for (name, value) in &server.headers {
        let invalid = |reason: String| Error::Header {
            name: name.clone(),
            reason,
        };
        let header_name =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let header_value =
            http::HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        client = client.header(header_name, header_value);
    }
    Ok(client)
}

/// The capabilities announced for `config.capabilities`: status and heartbeats always,
/// packages (with package statuses), health, effective config, remote config (accepted and
/// reported) and restart commands as configured.
pub fn capabilities(config: &SupervisorConfig) -> AgentCapabilities {
    let wanted = &config.capabilities;
    let mut caps = AgentCapabilities::REPORTS_STATUS | AgentCapabilities::REPORTS_HEARTBEAT;
    if wanted.accepts_packages {
        caps |= AgentCapabilities::ACCEPTS_PACKAGES | AgentCapabilities::REPORTS_PACKAGE_STATUSES;
    }
    if wanted.reports_health {
        caps |= AgentCapabilities::REPORTS_HEALTH;
    }
    if wanted.reports_effective_config {
        caps |= AgentCapabilities::REPORTS_EFFECTIVE_CONFIG;
    }
    if wanted.reports_available_components {
        caps |= AgentCapabilities::REPORTS_AVAILABLE_COMPONENTS;
    }
    if config.remote_config.mode.is_on() {
        caps |= AgentCapabilities::ACCEPTS_REMOTE_CONFIG | AgentCapabilities::REPORTS_REMOTE_CONFIG;
    }
    if wanted.accepts_restart_command {
        caps |= AgentCapabilities::ACCEPTS_RESTART_COMMAND;
    }
    caps
}
