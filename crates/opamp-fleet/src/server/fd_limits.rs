//! `max_connections` against the open-file limit: a cap above the limit never triggers,
//! and accept failures (EMFILE) then lock out agents and the admin API alike (issue 22).

use crate::config::FleetServerConfig;

/// File descriptors kept back for the store, package files, logs and the runtime.
const RESERVED: u64 = 128;

/// Raises the soft open-file limit to the hard one and returns the agent connections that
/// fit under it next to the admin connections, downloads (a socket and a file each) and
/// [`RESERVED`]: the configured `max_connections` or less. Logs the value in force.
pub(crate) fn agent_connections(config: &FleetServerConfig) -> usize {
    let limits = &config.limits;
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit; max_connections as configured");
            return config.max_connections;
        }
    };
    let others = u64::try_from(limits.admin_max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::try_from(limits.max_concurrent_downloads).unwrap_or(u64::MAX))
        .saturating_add(RESERVED);
    let fits = usize::try_from(soft.saturating_sub(others).max(1)).unwrap_or(usize::MAX);
    let effective = config.max_connections.min(fits);
    if effective < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            effective,
            open_file_limit = soft,
            "max_connections lowered to fit the open-file limit; raise LimitNOFILE to allow more"
        );
    } else {
        tracing::info!(
            max_connections = effective,
            open_file_limit = soft,
            "agent connection cap"
        );
    }
    effective
}
